//! `eddy bench group-consume`: a consumer group of N members reads a topic
//! from the beginning; reports records/s and checks, while it runs, that the
//! lag the server reports is right.
//!
//! Each member runs on its own thread with its own connection, decodes every
//! record (CRC checked) and commits its positions every `--commit-ms`. A
//! sampler describes the group every `--lag-every-ms` and checks, per
//! partition, the high watermark the server reports against the one the
//! topic had at start (nothing is produced meanwhile), and the lag it
//! reports against the members' own positions: at most the high watermark
//! minus what the members had acknowledged as committed before the sample,
//! at least the high watermark minus what they had sent by after it. (The
//! server reports the committed offset and the high watermark; the lag is
//! their difference, so this checks both against what the members know.)
//! The clock starts once the group is stable with every member.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argh::FromArgs;

use super::bench_progress::Progress;
use super::CliError;
use crate::client::{GroupConsumer, GroupConsumerOptions, OffsetReset};
use crate::outln;
use crate::wire::GroupState;

crate::client_args! {
/// Consume a topic from the beginning with a group of N members; report
/// records/s and check the reported lag while running.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "group-consume")]
pub struct GroupConsumeBench {
    /// topic (default bench)
    #[argh(option, short = 't', default = "String::from(\"bench\")")]
    pub topic: String,
    /// group id (default bench-group-<pid>: a fresh group)
    #[argh(option, short = 'g')]
    pub group: Option<String>,
    /// members (default 4)
    #[argh(option, default = "4")]
    pub members: usize,
    /// stop after this many records (default: everything stored at start)
    #[argh(option)]
    pub records: Option<u64>,
    /// commit every this many ms per member (default 500)
    #[argh(option, default = "500")]
    pub commit_ms: u64,
    /// describe the group and check the lag every this many ms (default 250)
    #[argh(option, default = "250")]
    pub lag_every_ms: u64,
    /// print one JSON object as the last line
    #[argh(switch, short = 'j')]
    pub json: bool,
    /// print no progress on stderr (default: a live line on a terminal, a
    /// line every 10 s otherwise)
    #[argh(switch, short = 'q')]
    pub quiet: bool,
}
}

/// Per partition: highest offset acknowledged as committed, highest sent.
#[derive(Default)]
struct Commits {
    acked: BTreeMap<u32, u64>,
    sent: BTreeMap<u32, u64>,
}

pub fn run(args: GroupConsumeBench) -> Result<(), CliError> {
    if args.members == 0 {
        return Err(CliError::usage("--members must be at least 1"));
    }
    // Each member's connection reader runs on smol's global executor.
    if std::env::var_os("SMOL_THREADS").is_none() {
        std::env::set_var("SMOL_THREADS", args.members.to_string());
    }
    let connection = args.connection();
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("bench-group-{}", std::process::id()));
    let admin = smol::block_on(connection.connect("eddy-bench-admin"))?;
    let topic = smol::block_on(admin.describe_topic(&args.topic))?;
    let high_watermarks: BTreeMap<u32, u64> = topic
        .watermarks
        .iter()
        .map(|m| (m.partition, m.durable))
        .collect();
    let stored: u64 = topic
        .watermarks
        .iter()
        .map(|m| m.durable - m.log_start)
        .sum();
    let target = args.records.unwrap_or(stored).min(stored);
    // The members count into the progress line's counter.
    let progress = Progress::start("bench group-consume", "records", Some(target), args.quiet);
    let consumed = progress.counter();
    let bytes = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(Mutex::new(Commits::default()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let joined = Instant::now();
    let mut threads = Vec::new();
    for i in 0..args.members {
        let (connection, group, topic_name) =
            (connection.clone(), group.clone(), args.topic.clone());
        let (consumed, bytes, go, done, commits, errors) = (
            consumed.clone(),
            bytes.clone(),
            go.clone(),
            done.clone(),
            commits.clone(),
            errors.clone(),
        );
        let commit_every = Duration::from_millis(args.commit_ms);
        threads.push(std::thread::spawn(move || {
            let result: Result<(), String> = smol::block_on(async {
                let client = connection
                    .connect(&format!("bench-member-{i}"))
                    .await
                    .map_err(|e| e.message)?;
                let mut options = GroupConsumerOptions::new(&group, &[&topic_name]);
                options.client_id = format!("bench-member-{i}");
                options.reset = OffsetReset::Earliest;
                options.fetch_wait_ms_max = 100;
                let mut consumer = GroupConsumer::new(client, options);
                while !go.load(Ordering::Acquire) {
                    consumer.heartbeat_now().await.map_err(|e| e.to_string())?;
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
                let mut last_commit = Instant::now();
                let commit = |consumer: &mut GroupConsumer| {
                    let offsets = consumer.uncommitted();
                    let mut c = commits.lock().expect("commits lock");
                    for (_, p, o) in &offsets {
                        let e = c.sent.entry(*p).or_default();
                        *e = (*e).max(*o);
                    }
                    offsets
                };
                while !done.load(Ordering::Acquire) {
                    if let Some(polled) = consumer.poll().await.map_err(|e| e.to_string())? {
                        let (mut n, mut b) = (0u64, 0u64);
                        polled
                            .for_each(|_, _, _, r| {
                                n += 1;
                                b += r.value.len() as u64;
                            })
                            .map_err(|e| e.to_string())?;
                        bytes.fetch_add(b, Ordering::Relaxed);
                        if consumed.fetch_add(n, Ordering::AcqRel) + n >= target {
                            done.store(true, Ordering::Release);
                        }
                    }
                    if last_commit.elapsed() >= commit_every || done.load(Ordering::Acquire) {
                        let offsets = commit(&mut consumer);
                        consumer.commit().await.map_err(|e| e.to_string())?;
                        let mut c = commits.lock().expect("commits lock");
                        for (_, p, o) in offsets {
                            let e = c.acked.entry(p).or_default();
                            *e = (*e).max(o);
                        }
                        last_commit = Instant::now();
                    }
                }
                let offsets = commit(&mut consumer);
                consumer.leave().await.map_err(|e| e.to_string())?;
                let mut c = commits.lock().expect("commits lock");
                for (_, p, o) in offsets {
                    let e = c.acked.entry(p).or_default();
                    *e = (*e).max(o);
                }
                Ok(())
            });
            if let Err(e) = result {
                errors.lock().expect("errors lock").push(e);
            }
        }));
    }
    // Wait for a stable group with every member, then go.
    let stable_after = smol::block_on(async {
        loop {
            if let Ok(info) = admin.describe_group(&group).await {
                if info.state == GroupState::Stable && info.members.len() == args.members {
                    return Ok(joined.elapsed());
                }
            }
            if !errors.lock().expect("errors lock").is_empty() {
                return Err(CliError::new(
                    errors.lock().expect("errors lock").join("; "),
                ));
            }
            if joined.elapsed() > Duration::from_secs(60) {
                return Err(CliError::new("the group did not become stable within 60 s"));
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    })?;
    let started = Instant::now();
    go.store(true, Ordering::Release);
    // Sample the lag while the members consume.
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut violations: Vec<String> = Vec::new();
    smol::block_on(async {
        while !done.load(Ordering::Acquire) && errors.lock().expect("errors lock").is_empty() {
            smol::Timer::after(Duration::from_millis(args.lag_every_ms)).await;
            let before: BTreeMap<u32, u64> = commits.lock().expect("commits lock").acked.clone();
            let Ok(info) = admin.describe_group(&group).await else {
                continue;
            };
            let after: BTreeMap<u32, u64> = commits.lock().expect("commits lock").sent.clone();
            let mut total_lag = 0u64;
            for p in info.partitions.iter().filter(|p| p.topic == args.topic) {
                let hw = high_watermarks.get(&p.partition).copied().unwrap_or(0);
                if p.high_watermark != hw {
                    violations.push(format!(
                        "p{}: high watermark {} != {hw}",
                        p.partition, p.high_watermark
                    ));
                }
                // The members' own view of this partition's lag.
                let acked_before = before.get(&p.partition).copied();
                let sent_after = after.get(&p.partition).copied();
                match (p.lag(), acked_before) {
                    (None, Some(acked)) => violations.push(format!(
                        "p{}: no committed offset, though the members had {acked} acknowledged",
                        p.partition
                    )),
                    (None, None) => {}
                    (Some(lag), _) => {
                        let lo = acked_before.unwrap_or(0);
                        let hi = sent_after.unwrap_or(0).max(lo);
                        let (lag_min, lag_max) = (hw.saturating_sub(hi), hw.saturating_sub(lo));
                        if lag < lag_min || lag > lag_max {
                            violations.push(format!(
                                "p{}: lag {lag} outside [{lag_min}, {lag_max}] (the members had \
                                 {lo} acknowledged before the sample, {hi} sent after it, of {hw})",
                                p.partition
                            ));
                        }
                    }
                }
                total_lag += p.lag().unwrap_or(hw);
            }
            samples.push((started.elapsed().as_secs_f64(), total_lag));
        }
    });
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(progress);
    if let Some(e) = errors.lock().expect("errors lock").first() {
        return Err(CliError::new(format!("a member failed: {e}")));
    }
    let final_info = smol::block_on(admin.describe_group(&group))?;
    let final_lag: u64 = final_info.partitions.iter().filter_map(|p| p.lag()).sum();
    let records = consumed.load(Ordering::Acquire);
    let records_per_s = records as f64 / elapsed;
    let mb_per_s = bytes.load(Ordering::Relaxed) as f64 / elapsed / 1e6;
    let lag_trace: Vec<String> = samples
        .iter()
        .step_by((samples.len() / 8).max(1))
        .map(|(t, l)| format!("{t:.1}s:{l}"))
        .collect();
    outln!(
        "group of {} consumed {records} records in {elapsed:.2} s: {records_per_s:.0} records/s, {mb_per_s:.1} MB/s \
         (stable after {:.2} s); lag checked {} times, {} wrong; total lag {}; final lag {final_lag}",
        args.members,
        stable_after.as_secs_f64(),
        samples.len(),
        violations.len(),
        lag_trace.join(" "),
    );
    for v in violations.iter().take(5) {
        eprintln!("lag check failed: {v}");
    }
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "bench": "group-consume",
                "members": args.members,
                "records": records,
                "seconds": elapsed,
                "records_per_s": records_per_s,
                "mb_per_s": mb_per_s,
                "stable_after_s": stable_after.as_secs_f64(),
                "lag_samples": samples.len(),
                "lag_violations": violations.len(),
                "final_lag": final_lag,
            })
        );
    }
    if !violations.is_empty() || final_lag != 0 {
        return Err(CliError::new("the reported lag was wrong"));
    }
    Ok(())
}
