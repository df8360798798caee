//! `eddy consume --group G`: one member of a consumer group.
//!
//! Joins, prints the records of the partitions the coordinator assigns,
//! commits after they are written and flushed (at-least-once), follows new
//! data until `--max` records or SIGINT/SIGTERM, then commits and leaves the
//! group so its partitions move at once. A lost connection is retried with
//! capped backoff ([`RECONNECT_ATTEMPTS_MAX`] attempts per outage); the
//! member then rejoins and resumes from the committed offsets. A stop
//! signal is obeyed while reconnecting too.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::consume::{write_record, ConsumeArgs};
use super::CliError;
use crate::client::{
    Client, ClientError, ConsumedRecord, GroupConsumer, GroupConsumerOptions, OffsetReset,
    RebalanceEvent,
};
use crate::wire::ErrorCode;

/// Failed connection attempts in a row (one outage) before giving up.
pub const RECONNECT_ATTEMPTS_MAX: u32 = 60;
/// First pause between attempts, in ms; doubles up to the cap.
pub const RECONNECT_BACKOFF_MS_MIN: u64 = 100;
/// Longest pause between attempts, in ms.
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 5_000;
/// With `--wait-for-topic`: pause between looks for the topic, in ms.
pub const TOPIC_WAIT_POLL_MS: u64 = 1_000;

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
    let connection = args.connection();
    let mut options = GroupConsumerOptions::new(group, &[&args.topic]);
    options.client_id = format!("eddy-consume-{}", std::process::id());
    options.session_timeout_ms = args.session_timeout_ms;
    options.reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let mut printed = 0u64;
    // Resolves once SIGINT/SIGTERM (or nothing, never) asked to stop: raced
    // against every wait below, so a signal is obeyed while connected,
    // while reconnecting and during the backoff pause alike.
    let stopped = || async {
        loop {
            let listener = wake.listen();
            if stop.load(Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    };
    smol::block_on(async {
        // Failed attempts in a row: reset once a connection has served a
        // poll, so a long-running member survives any number of separate
        // outages, each given RECONNECT_ATTEMPTS_MAX attempts.
        let mut failures = 0u32;
        loop {
            let Some(connected) =
                unless_stopped(connection.connect(&options.client_id), stopped()).await
            else {
                return stopped_while_disconnected();
            };
            let client = match connected {
                Ok(c) => c,
                Err(e) if failures > 0 && failures < RECONNECT_ATTEMPTS_MAX => {
                    failures += 1;
                    eprintln!("reconnecting: {}", e.message);
                    if unless_stopped(backoff(failures), stopped()).await.is_none() {
                        return stopped_while_disconnected();
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if unless_stopped(topic_ready(&client, args), stopped())
                .await
                .transpose()?
                .is_none()
            {
                return Ok(());
            }
            let mut consumer = GroupConsumer::new(client, options.clone());
            consumer.set_listener(announce(group));
            let mut served = false;
            let consuming = consume(&mut consumer, args, &mut printed, &stop, &mut served);
            let result = unless_stopped(consuming, stopped())
                .await
                .unwrap_or(Ok(Outcome::Done));
            match result {
                Ok(Outcome::Done) => {
                    // Commit what was printed and leave, so the partitions
                    // move to the other members at once.
                    return consumer.leave().await.map_err(CliError::from);
                }
                Err(e) if is_connection_error(&e) => {
                    if served {
                        failures = 0;
                    }
                    if failures >= RECONNECT_ATTEMPTS_MAX {
                        return Err(CliError::from(e));
                    }
                    failures += 1;
                    eprintln!("connection lost ({e}); reconnecting");
                    if unless_stopped(backoff(failures), stopped()).await.is_none() {
                        return stopped_while_disconnected();
                    }
                }
                Err(e) => return Err(CliError::from(e)),
            }
        }
    })
}

/// Ok once `args.topic` exists. A missing topic fails at once (a member
/// of a group on a missing topic would wait in silence), or with
/// `--wait-for-topic` is looked for again every [`TOPIC_WAIT_POLL_MS`].
async fn topic_ready(client: &Client, args: &ConsumeArgs) -> Result<(), CliError> {
    let mut said = false;
    loop {
        let exists = match client.metadata(&[&args.topic]).await {
            Ok(topics) => topics.iter().any(|(name, _)| *name == args.topic),
            Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => false,
            Err(e) => return Err(e.into()),
        };
        if exists {
            return Ok(());
        }
        if !args.wait_for_topic {
            return Err(CliError::new(format!(
                "UnknownTopic: topic {:?} does not exist: create it (eddy topics create {} \
                 --partitions N) or produce to it, or pass --wait-for-topic",
                args.topic, args.topic
            )));
        }
        if !said {
            eprintln!(
                "waiting for topic {:?} to exist (--wait-for-topic)",
                args.topic
            );
            said = true;
        }
        smol::Timer::after(Duration::from_millis(TOPIC_WAIT_POLL_MS)).await;
    }
}

/// The rebalance listener of `eddy consume --group`: says on stderr which
/// partitions the member got, gives up or lost.
fn announce(group: &str) -> impl FnMut(RebalanceEvent<'_>) + Send + 'static {
    let group = group.to_string();
    move |event| {
        let (what, tps) = match event {
            RebalanceEvent::Assigned(tps) => ("assigned", tps),
            RebalanceEvent::Revoked(tps) => ("giving up", tps),
            RebalanceEvent::Lost(tps) => ("lost (fenced, not committed)", tps),
        };
        if tps.is_empty() {
            return;
        }
        let list: Vec<String> = tps.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        eprintln!("group {group}: {what} {}", list.join(", "));
    }
}

/// A stop signal while no connection was up: nothing can be committed, so
/// the records printed since the last commit go to the group again (at
/// least once). Exits 0: stopping was asked for.
fn stopped_while_disconnected() -> Result<(), CliError> {
    eprintln!(
        "stopped while reconnecting: offsets printed since the last commit were not committed \
         and will be delivered again"
    );
    Ok(())
}

/// `work`'s output, or `None` when `stopped` resolves first (the one race
/// every wait of the member runs against the stop signal).
async fn unless_stopped<T>(
    work: impl std::future::Future<Output = T>,
    stopped: impl std::future::Future<Output = ()>,
) -> Option<T> {
    smol::future::or(async { Some(work.await) }, async {
        stopped.await;
        None
    })
    .await
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

/// Polls, prints, commits until stopped or `--max` records were printed;
/// sets `served` once a poll was answered (the connection works).
async fn consume(
    consumer: &mut GroupConsumer,
    args: &ConsumeArgs,
    printed: &mut u64,
    stop: &AtomicBool,
    served: &mut bool,
) -> Result<Outcome, ClientError> {
    let limit = args.max.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    let mut since_commit = 0u64;
    loop {
        if stop.load(Ordering::SeqCst) || *printed >= limit {
            return Ok(Outcome::Done);
        }
        let polled = consumer.poll().await?;
        *served = true;
        let Some(polled) = polled else {
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
