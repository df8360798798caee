//! `eddy consume`: print records of a topic.
//!
//! Without `--follow` it reads up to the end each partition had when it
//! started and exits; with `--follow` it keeps long-polling for new records.

use std::collections::BTreeMap;
use std::io::Write;

use argh::FromArgs;
use base64::Engine;

use super::CliError;
use crate::client::{records_from, ConsumedRecord};
use crate::wire::{ErrorCode, FetchPartition, Response};

/// Bytes a fetch may return.
const FETCH_BYTES_MAX: u32 = 1 << 20;
/// Long-poll wait per fetch with `--follow`, in ms.
const FOLLOW_WAIT_MS: u32 = 1_000;

crate::client_args! {
/// Print records of a topic: one value per line, or JSON objects.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "consume")]
pub struct ConsumeArgs {
    /// topic to read
    #[argh(option, short = 't')]
    pub topic: String,
    /// read only this partition (default: all)
    #[argh(option, short = 'p')]
    pub partition: Option<u32>,
    /// start at the earliest stored offset: the default of a plain consume
    /// unless --follow; with --group it applies to partitions the group has
    /// no committed offset for, which otherwise start at the end (Kafka's
    /// auto.offset.reset=latest)
    #[argh(switch, short = 'b')]
    pub from_beginning: bool,
    /// start at this offset (in every partition read)
    #[argh(option, short = 'o')]
    pub offset: Option<u64>,
    /// stop after this many records
    #[argh(option, short = 'n')]
    pub max: Option<u64>,
    /// keep waiting for new records (alone: start at the end, like tail -f)
    #[argh(switch, short = 'f')]
    pub follow: bool,
    /// consume as a member of this consumer group: the group's coordinator
    /// assigns partitions, offsets are committed after output (at-least-once);
    /// a new group starts at the end unless --from-beginning; assignments
    /// are reported on stderr
    #[argh(option, short = 'g')]
    pub group: Option<String>,
    /// with --group: wait for a missing topic to be created instead of
    /// failing at once
    #[argh(switch)]
    pub wait_for_topic: bool,
    /// with --group: commit once this many records were output since the
    /// last commit (default 1: after every fetched chunk)
    #[argh(option, default = "1")]
    pub commit_every: u64,
    /// with --group: the member is removed if the server hears nothing from
    /// it for this long, in ms (default: the server's, 45000)
    #[argh(option, default = "0")]
    pub session_timeout_ms: u32,
    /// output format: value (one value per line) or json (one object per line)
    #[argh(option, default = "Format::Value", from_str_fn(parse_format))]
    pub format: Format,
}
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Value,
    Json,
}

fn parse_format(value: &str) -> Result<Format, String> {
    match value {
        "value" => Ok(Format::Value),
        "json" => Ok(Format::Json),
        other => Err(format!("unknown format {other:?}: use value or json")),
    }
}

pub fn run(args: ConsumeArgs) -> Result<(), CliError> {
    super::serve::init_logging(None, "warn");
    if let Some(group) = args.group.clone() {
        return super::group_consume::run(&args, &group);
    }
    if args.commit_every != 1 || args.session_timeout_ms != 0 || args.wait_for_topic {
        return Err(CliError::usage(
            "--commit-every, --session-timeout-ms and --wait-for-topic need --group",
        ));
    }
    if args.from_beginning && args.offset.is_some() {
        return Err(CliError::usage(
            "--from-beginning and --offset exclude each other",
        ));
    }
    let connection = args.connection();
    smol::block_on(async {
        let client = connection.connect("eddy-consume").await?;
        let topic = client.describe_topic(&args.topic).await?;
        let partitions: Vec<u32> = match args.partition {
            Some(p) if p < topic.partitions => vec![p],
            Some(p) => {
                return Err(CliError::new(format!(
                    "topic {} has partitions 0..{}, not {p}",
                    args.topic, topic.partitions
                )))
            }
            None => (0..topic.partitions).collect(),
        };
        // Per partition: next offset, and (without --follow) where to stop.
        let mut cursors: BTreeMap<u32, (u64, Option<u64>)> = BTreeMap::new();
        for marks in topic
            .watermarks
            .iter()
            .filter(|m| partitions.contains(&m.partition))
        {
            let start = match (args.offset, args.from_beginning, args.follow) {
                (Some(offset), _, _) => offset,
                (None, true, _) | (None, false, false) => marks.log_start,
                (None, false, true) => marks.durable,
            };
            let end = if args.follow {
                None
            } else {
                Some(marks.durable)
            };
            if end.is_none_or(|end| start < end) {
                cursors.insert(marks.partition, (start, end));
            }
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut printed = 0u64;
        let limit = args.max.unwrap_or(u64::MAX);
        while !cursors.is_empty() && printed < limit {
            let wants: Vec<FetchPartition> = cursors
                .iter()
                .map(|(&partition, &(offset, _))| FetchPartition { partition, offset })
                .collect();
            let wait = if args.follow { FOLLOW_WAIT_MS } else { 0 };
            let body = client
                .fetch(&args.topic, &wants, FETCH_BYTES_MAX, wait)
                .await?;
            let Response::Fetched(fetched) = body.decode()? else {
                return Err(CliError::new("unexpected response to fetch"));
            };
            for part in &fetched.partitions {
                let Some(&(offset, end)) = cursors.get(&part.partition) else {
                    continue;
                };
                if let Some(code) = part.error {
                    if code == ErrorCode::OffsetOutOfRange && offset < part.log_start {
                        eprintln!(
                            "partition {}: offsets {offset}..{} were removed by retention; continuing at {}",
                            part.partition, part.log_start, part.log_start
                        );
                        cursors.insert(part.partition, (part.log_start, end));
                        continue;
                    }
                    return Err(CliError::new(format!(
                        "partition {} at offset {offset}: {code}",
                        part.partition
                    )));
                }
                let (records, next) = records_from(part.batches, part.partition, offset)
                    .map_err(|e| CliError::new(format!("partition {}: {e}", part.partition)))?;
                let mut next_offset = next.unwrap_or(offset).max(offset);
                for record in &records {
                    if end.is_some_and(|end| record.offset >= end) || printed >= limit {
                        next_offset = record.offset;
                        break;
                    }
                    if write_record(&mut out, &args.topic, record, args.format).is_err() {
                        return Ok(()); // stdout closed (e.g. piped into head)
                    }
                    printed += 1;
                }
                if end.is_some_and(|end| next_offset >= end) {
                    cursors.remove(&part.partition);
                } else {
                    cursors.insert(part.partition, (next_offset, end));
                }
            }
            if out.flush().is_err() {
                return Ok(());
            }
        }
        Ok(())
    })
}

pub(super) fn write_record(
    out: &mut impl Write,
    topic: &str,
    r: &ConsumedRecord,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Value => {
            out.write_all(&r.value)?;
            out.write_all(b"\n")
        }
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), bytes_json(value)))
                .collect();
            let object = serde_json::json!({
                "topic": topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp_ms": r.timestamp_ms,
                "key": r.key.as_deref().map(bytes_json),
                "value": bytes_json(&r.value),
                "headers": headers,
            });
            serde_json::to_writer(&mut *out, &object)?;
            out.write_all(b"\n")
        }
    }
}

/// Text as a JSON string when it is UTF-8, else `{"base64": "…"}`.
pub fn bytes_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::String(text.to_string()),
        Err(_) => {
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
    }
}
