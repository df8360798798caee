//! `eddy produce`: one record per line of standard input.
//!
//! Lines are batched (whatever is already read, up to `--batch` records),
//! and up to `--window` batches are in flight on the connection at once;
//! the server appends them in order. The exit code is 0 only when every
//! record was acknowledged at the requested level.

use std::collections::VecDeque;
use std::io::BufRead;

use argh::FromArgs;

use super::{default_acks, parse_acks, CliError};
use crate::client::Client;
use crate::time::now_ms_i64;
use crate::wire::batch::{record_len_max, BatchBuilder, BatchError, Headers, BATCH_HEADER_BYTES};
use crate::wire::{Acks, PartitionAck};

/// Lines read ahead of the sender, at most.
const LINES_QUEUE_MAX: usize = 10_000;
/// Batch buffer size the producer aims for, in bytes (capped by the
/// server's batch limit).
const BATCH_BYTES_TARGET: usize = 256 << 10;

crate::client_args! {
/// Produce one record per line of standard input.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "produce")]
pub struct ProduceArgs {
    /// topic to write to (created on first produce unless the server forbids it)
    #[argh(option, short = 't')]
    pub topic: String,
    /// split each line at the first occurrence of this string into key and value
    #[argh(option, short = 'K')]
    pub key_separator: Option<String>,
    /// write every record to this partition (default: by key, keyless round robin)
    #[argh(option, short = 'p')]
    pub partition: Option<u32>,
    /// acknowledgement to wait for: received, durable or mirrored (the
    /// upstream of a mirror link has it; default durable)
    #[argh(option, short = 'a', default = "default_acks()", from_str_fn(parse_acks))]
    pub acks: Acks,
    /// header NAME=VALUE added to every record (repeatable)
    #[argh(option, short = 'H')]
    pub header: Vec<String>,
    /// most records per batch (default 1000)
    #[argh(option, default = "1000")]
    pub batch: usize,
    /// batches in flight at once (default 8)
    #[argh(option, default = "8")]
    pub window: usize,
    /// how long the server may take to acknowledge, in ms (default 30000)
    #[argh(option, default = "30_000")]
    pub timeout_ms: u32,
}
}

pub fn run(args: ProduceArgs) -> Result<(), CliError> {
    super::serve::init_logging(None, "warn");
    if args.batch == 0 || args.window == 0 {
        return Err(CliError::usage("--batch and --window must be at least 1"));
    }
    let headers = parse_headers(&args.header)?;
    let connection = args.connection();
    // stdin is read on its own thread so batching can see what is ready.
    // A read error is passed on (and ends the input): it must not look like
    // the end of the input, or a truncated input would exit 0.
    let (tx, rx) = smol::channel::bounded::<Line>(LINES_QUEUE_MAX);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = Vec::new();
            match lock.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = smol::block_on(tx.send(Err(e)));
                    return;
                }
                Ok(_) => {
                    if line.ends_with(b"\n") {
                        line.pop();
                        if line.ends_with(b"\r") {
                            line.pop();
                        }
                    }
                    if smol::block_on(tx.send(Ok(line))).is_err() {
                        return;
                    }
                }
            }
        }
    });
    smol::block_on(async {
        let client = std::sync::Arc::new(connection.connect("eddy-produce").await?);
        let summary = produce_lines(&client, &args, &headers, rx).await;
        match summary {
            Ok(count) => {
                log::info!("{count} records acknowledged");
                Ok(())
            }
            Err((acked, e)) => Err(CliError::new(format!(
                "{} ({acked} records were acknowledged before the error)",
                e.message
            ))),
        }
    })
}

fn parse_headers(specs: &[String]) -> Result<Vec<u8>, CliError> {
    let mut pairs: Vec<(&str, &[u8])> = Vec::new();
    for spec in specs {
        let Some((name, value)) = spec.split_once('=') else {
            return Err(CliError::usage(format!(
                "--header {spec:?}: expected NAME=VALUE"
            )));
        };
        pairs.push((name, value.as_bytes()));
    }
    Ok(Headers::encode_vec(&pairs))
}

type InFlight = smol::Task<Result<Vec<PartitionAck>, crate::client::ClientError>>;

/// A line of standard input (without its line ending), or why reading failed.
type Line = std::io::Result<Vec<u8>>;

async fn produce_lines(
    client: &std::sync::Arc<Client>,
    args: &ProduceArgs,
    headers: &[u8],
    lines: smol::channel::Receiver<Line>,
) -> Result<u64, (u64, CliError)> {
    let batch_limit = usize::try_from(client.server_info().batch_bytes_max).unwrap_or(usize::MAX);
    let capacity = BATCH_BYTES_TARGET.min(batch_limit);
    let mut in_flight: VecDeque<(u32, InFlight)> = VecDeque::new();
    let mut acked = 0u64;
    let mut carry: Option<Vec<u8>> = None;
    let mut read_error: Option<std::io::Error> = None;
    while read_error.is_none() {
        let first = match carry.take() {
            Some(line) => line,
            None => match lines.recv().await {
                Ok(Ok(line)) => line,
                Ok(Err(e)) => {
                    read_error = Some(e);
                    break;
                }
                Err(_) => break,
            },
        };
        let timestamp = now_ms_i64();
        let (key, value) = split_line(&first, args.key_separator.as_deref());
        let needed = BATCH_HEADER_BYTES + record_len_max(key, value, Headers(headers));
        if needed > batch_limit {
            return Err((
                acked,
                CliError::new(format!(
                    "a line of {} bytes is larger than the server's batch limit ({batch_limit} bytes)",
                    first.len()
                )),
            ));
        }
        let mut builder = BatchBuilder::with_capacity(capacity.max(needed), timestamp)
            .expect("buffer fits a header");
        builder
            .push(timestamp, key, value, Headers(headers))
            .expect("sized for the first record");
        while builder.record_count() < u32::try_from(args.batch).unwrap_or(u32::MAX) {
            let line = match lines.try_recv() {
                Ok(Ok(line)) => line,
                Ok(Err(e)) => {
                    // Send what was read before it, then stop.
                    read_error = Some(e);
                    break;
                }
                Err(_) => break,
            };
            let (key, value) = split_line(&line, args.key_separator.as_deref());
            match builder.push(timestamp, key, value, Headers(headers)) {
                Ok(()) => {}
                Err(BatchError::Full) => {
                    carry = Some(line);
                    break;
                }
                Err(e) => return Err((acked, CliError::new(e.to_string()))),
            }
        }
        let count = builder.record_count();
        let batch = builder.finish_vec();
        let task_client = client.clone();
        let topic = args.topic.clone();
        let (partition, acks, timeout_ms) = (args.partition, args.acks, args.timeout_ms);
        in_flight.push_back((
            count,
            smol::spawn(async move {
                task_client
                    .produce(&topic, partition, acks, timeout_ms, &batch)
                    .await
            }),
        ));
        while in_flight.len() >= args.window {
            acked += settle(in_flight.pop_front().expect("non-empty"), acked).await?;
        }
    }
    while let Some(next) = in_flight.pop_front() {
        acked += settle(next, acked).await?;
    }
    if let Some(e) = read_error {
        return Err((
            acked,
            CliError::new(format!(
                "reading standard input failed: {e}; the lines after the error were not sent"
            )),
        ));
    }
    Ok(acked)
}

async fn settle((count, task): (u32, InFlight), acked: u64) -> Result<u64, (u64, CliError)> {
    match task.await {
        Ok(acks) => {
            let total: u64 = acks.iter().map(|a| u64::from(a.record_count)).sum();
            debug_assert_eq!(total, u64::from(count));
            Ok(u64::from(count))
        }
        Err(e) => Err((acked, CliError::new(format!("produce failed: {e}")))),
    }
}

fn split_line<'a>(line: &'a [u8], separator: Option<&str>) -> (Option<&'a [u8]>, &'a [u8]) {
    let Some(sep) = separator.map(str::as_bytes).filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(at) => (Some(&line[..at]), &line[at + sep.len()..]),
        None => (None, line),
    }
}

#[cfg(test)]
mod tests {
    use super::split_line;

    #[test]
    fn key_is_before_the_first_separator() {
        assert_eq!(
            split_line(b"k1:v:1", Some(":")),
            (Some(&b"k1"[..]), &b"v:1"[..])
        );
        assert_eq!(split_line(b"novalue", Some(":")), (None, &b"novalue"[..]));
        assert_eq!(
            split_line(b"a::b", Some("::")),
            (Some(&b"a"[..]), &b"b"[..])
        );
        assert_eq!(split_line(b":v", Some(":")), (Some(&b""[..]), &b"v"[..]));
        assert_eq!(split_line(b"x:y", None), (None, &b"x:y"[..]));
    }
}
