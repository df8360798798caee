//! `eddy consume --group G`: one member of a consumer group.
//!
//! Joins, prints the records of the partitions the coordinator assigns,
//! commits after they are written and flushed (at-least-once), follows new
//! data until `--max` records or SIGINT/SIGTERM, then commits and leaves the
//! group so its partitions move at once. A lost connection is retried with
//! capped backoff ([`RECONNECT_ATTEMPTS_MAX`]); the member then rejoins and
//! resumes from the committed offsets.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::consume::{write_record, ConsumeArgs};
use super::{CliError, Connection};
use crate::client::{
    ClientError, ConsumedRecord, GroupConsumer, GroupConsumerOptions, OffsetReset,
};

/// Connection attempts in a row before giving up.
pub const RECONNECT_ATTEMPTS_MAX: u32 = 60;
/// First pause between attempts, in ms; doubles up to the cap.
pub const RECONNECT_BACKOFF_MS_MIN: u64 = 100;
/// Longest pause between attempts, in ms.
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 5_000;

enum Outcome {
    /// Stop (signal or --max): leave the group.
    Done,
}

pub fn run(args: &ConsumeArgs, group: &str) -> Result<(), CliError> {
    if args.partition.is_some() || args.offset.is_some() {
        return Err(CliError::usage(
            "with --group the coordinator assigns partitions and offsets come from the group's commits: \
             drop --partition/--offset (reset a group with `eddy groups reset`)",
        ));
    }
    if args.commit_every == 0 {
        return Err(CliError::usage("--commit-every must be at least 1"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(event_listener::Event::new());
    {
        let (stop, wake) = (stop.clone(), wake.clone());
        super::on_stop_signals(move |_signal| {
            stop.store(true, Ordering::SeqCst);
            wake.notify(usize::MAX);
        })?;
    }
    let connection = Connection {
        server: args.server.clone(),
        ca: args.ca.clone(),
        plaintext: args.plaintext,
        tls_server_name: args.tls_server_name.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
    };
    let mut options = GroupConsumerOptions::new(group, &[&args.topic]);
    options.client_id = format!("eddy-consume-{}", std::process::id());
    options.session_timeout_ms = args.session_timeout_ms;
    options.reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let mut printed = 0u64;
    smol::block_on(async {
        let mut failures = 0u32;
        loop {
            let client = match connection.connect(&options.client_id).await {
                Ok(c) => c,
                Err(e) if failures > 0 && failures < RECONNECT_ATTEMPTS_MAX => {
                    failures += 1;
                    eprintln!("reconnecting: {}", e.message);
                    backoff(failures).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut consumer = GroupConsumer::new(client, options.clone());
            let result =
                smol::future::or(consume(&mut consumer, args, &mut printed, &stop), async {
                    loop {
                        let listener = wake.listen();
                        if stop.load(Ordering::SeqCst) {
                            return Ok(Outcome::Done);
                        }
                        listener.await;
                    }
                })
                .await;
            match result {
                Ok(Outcome::Done) => {
                    // Commit what was printed and leave, so the partitions
                    // move to the other members at once.
                    return consumer.leave().await.map_err(CliError::from);
                }
                Err(e) if is_connection_error(&e) && failures < RECONNECT_ATTEMPTS_MAX => {
                    failures += 1;
                    eprintln!("connection lost ({e}); reconnecting");
                    backoff(failures).await;
                }
                Err(e) => return Err(CliError::from(e)),
            }
        }
    })
}

fn is_connection_error(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Closed(_) | ClientError::Connect { .. } | ClientError::ConnectTimeout { .. }
    ) || e.code() == Some(crate::wire::ErrorCode::ShuttingDown)
}

async fn backoff(attempt: u32) {
    let ms = RECONNECT_BACKOFF_MS_MIN
        .saturating_mul(1u64 << attempt.min(16))
        .min(RECONNECT_BACKOFF_MS_MAX);
    smol::Timer::after(Duration::from_millis(ms)).await;
}

/// Polls, prints, commits until stopped or `--max` records were printed.
async fn consume(
    consumer: &mut GroupConsumer,
    args: &ConsumeArgs,
    printed: &mut u64,
    stop: &AtomicBool,
) -> Result<Outcome, ClientError> {
    let limit = args.max.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    let mut since_commit = 0u64;
    loop {
        if stop.load(Ordering::SeqCst) || *printed >= limit {
            return Ok(Outcome::Done);
        }
        let Some(polled) = consumer.poll().await? else {
            if since_commit > 0 {
                consumer.commit().await?;
                since_commit = 0;
            }
            continue;
        };
        // Per partition: the first offset not printed (when --max cut in).
        let mut rewind: BTreeMap<u32, u64> = BTreeMap::new();
        let mut first_seen: BTreeMap<u32, u64> = BTreeMap::new();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut write_error = None;
        polled.for_each(|partition, offset, timestamp_ms, r| {
            first_seen.entry(partition).or_insert(offset);
            if *printed >= limit || write_error.is_some() {
                rewind.entry(partition).or_insert(offset);
                return;
            }
            let record = ConsumedRecord {
                partition,
                offset,
                timestamp_ms,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.to_vec(),
                headers: r
                    .headers
                    .iter()
                    .filter_map(Result::ok)
                    .map(|(n, v)| (n.to_string(), v.to_vec()))
                    .collect(),
            };
            if let Err(e) = write_record(&mut out, &polled.topic, &record, args.format) {
                write_error = Some(e);
                rewind.entry(partition).or_insert(offset);
                return;
            }
            *printed += 1;
            since_commit += 1;
        })?;
        let flushed = out.flush();
        drop(out);
        if flushed.is_err() {
            // Nothing of this chunk is known to be out: commit none of it.
            rewind = first_seen;
        }
        for (partition, offset) in rewind {
            consumer.seek(&polled.topic, partition, offset);
        }
        if write_error.is_some() || flushed.is_err() {
            // stdout closed (e.g. piped into head): what was written counts.
            return Ok(Outcome::Done);
        }
        if since_commit >= args.commit_every {
            consumer.commit().await?;
            since_commit = 0;
        }
    }
}
