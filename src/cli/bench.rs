//! `eddy bench produce|consume`: load generators against a running hub.
//!
//! Throughput and ack latency as a client sees them (TLS included). The
//! server's RSS and disk writes are read from `/proc/<pid>` by the scripts
//! in `benches/`. With `--json`, the last line of output is one JSON object.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;

use super::bench_progress::Progress;
use super::{default_acks, parse_acks, CliError};
use crate::client::{for_each_record, Client, Delivery, Producer, ProducerOptions};
use crate::outln;
use crate::wire::batch::{BatchBuilder, Headers, BATCH_HEADER_BYTES, RECORD_OVERHEAD_BYTES_MAX};
use crate::wire::{Acks, ErrorCode, FetchPartition, Response};

/// Run a benchmark against a running server.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "bench")]
pub struct BenchArgs {
    #[argh(subcommand)]
    pub kind: BenchKind,
}

/// Which benchmark.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand)]
pub enum BenchKind {
    Produce(ProduceBench),
    Consume(ConsumeBench),
    GroupConsume(super::bench_group::GroupConsumeBench),
    Devices(super::bench_devices::DevicesBench),
}

crate::client_args! {
/// Produce as fast as acknowledgements allow; report records/s and ack latency.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "produce")]
pub struct ProduceBench {
    /// concurrent connections (default 8)
    #[argh(option, default = "8")]
    pub connections: usize,
    /// records per batch (default 1000)
    #[argh(option, default = "1000")]
    pub batch: usize,
    /// bytes per record value (default 100)
    #[argh(option, default = "100")]
    pub record_bytes: usize,
    /// total records to produce
    #[argh(option)]
    pub records: Option<u64>,
    /// produce for this many seconds instead of a record count
    #[argh(option)]
    pub duration_s: Option<u64>,
    /// acknowledgement level: received or durable (default durable)
    #[argh(option, short = 'a', default = "default_acks()", from_str_fn(parse_acks))]
    pub acks: Acks,
    /// topic (default bench; created with --partitions when missing)
    #[argh(option, short = 't', default = "String::from(\"bench\")")]
    pub topic: String,
    /// partitions when the topic is created (default 8)
    #[argh(option, default = "8")]
    pub partitions: u32,
    /// batches in flight per connection (default 1: wait for each ack);
    /// with --producer: records sent and not yet acknowledged per connection
    #[argh(option, default = "1")]
    pub window: usize,
    /// at most this many records/s over all connections, paced batch by
    /// batch (default 0: as fast as acknowledgements allow)
    #[argh(option, default = "0")]
    pub rate: u64,
    /// send records one at a time through the client's batching producer
    /// (Kafka's model: batches per partition, --linger-ms, several in
    /// flight), keeping --window records unacknowledged per connection, as
    /// an async publisher does; --batch is then ignored
    #[argh(switch)]
    pub producer: bool,
    /// keep the topic after the run (default: delete it if this run created it)
    #[argh(switch)]
    pub keep_topics: bool,
    /// with --producer: how long a partial batch waits for more records,
    /// in ms (default 0: send as soon as a batch slot is free)
    #[argh(option, default = "0")]
    pub linger_ms: u64,
    /// with --producer: largest batch in bytes (default 131072)
    #[argh(
        option,
        default = "crate::client::producer::PRODUCER_BATCH_BYTES_MAX_DEFAULT"
    )]
    pub batch_bytes: usize,
    /// with --producer: batches in flight per connection (default 4)
    #[argh(
        option,
        default = "crate::client::producer::PRODUCER_INFLIGHT_BATCHES_MAX_DEFAULT"
    )]
    pub inflight_batches: usize,
    /// use this many distinct keys (default 0: keyless, round robin)
    #[argh(option, default = "0")]
    pub keys: u64,
    /// write one line per acknowledgement to this file: unix ms when it
    /// arrived, latency in µs (to compute percentiles over a time window)
    #[argh(option)]
    pub latency_out: Option<PathBuf>,
    /// print one JSON object as the last line
    #[argh(switch, short = 'j')]
    pub json: bool,
    /// print no progress on stderr (default: a live line on a terminal, a
    /// line every 10 s otherwise)
    #[argh(switch, short = 'q')]
    pub quiet: bool,
}
}

crate::client_args! {
/// Read a topic from the beginning as fast as possible; report records/s.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "consume")]
pub struct ConsumeBench {
    /// topic (default bench)
    #[argh(option, short = 't', default = "String::from(\"bench\")")]
    pub topic: String,
    /// stop after this many records (default: everything stored at start)
    #[argh(option)]
    pub records: Option<u64>,
    /// bytes per fetch (default 1048576 minus overhead)
    #[argh(option, default = "1_000_000")]
    pub fetch_bytes: u32,
    /// print one JSON object as the last line
    #[argh(switch, short = 'j')]
    pub json: bool,
    /// print no progress on stderr (default: a live line on a terminal, a
    /// line every 10 s otherwise)
    #[argh(switch, short = 'q')]
    pub quiet: bool,
}
}

pub fn run(args: BenchArgs) -> Result<(), CliError> {
    super::serve::init_logging(None, "warn");
    match args.kind {
        BenchKind::Produce(p) => produce(p),
        BenchKind::Consume(c) => consume(c),
        BenchKind::GroupConsume(g) => super::bench_group::run(g),
        BenchKind::Devices(d) => super::bench_devices::run(d),
    }
}

/// Latency percentiles over a set of samples in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples_us` (sorted in place).
    pub fn of(samples_us: &mut [u64]) -> Percentiles {
        if samples_us.is_empty() {
            return Percentiles::default();
        }
        samples_us.sort_unstable();
        let rank = |q: f64| {
            let idx =
                ((q * samples_us.len() as f64).ceil() as usize).clamp(1, samples_us.len()) - 1;
            samples_us[idx] as f64 / 1000.0
        };
        Percentiles {
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: samples_us[samples_us.len() - 1] as f64 / 1000.0,
        }
    }
}

struct ProduceState {
    /// Records still to hand out (count mode).
    remaining: Option<u64>,
    deadline: Option<Instant>,
    sent_records: u64,
    latencies_us: Vec<u64>,
    /// Records acknowledged, for the progress line (taken at the report).
    progress: Option<Progress>,
    /// (unix ms at the ack, latency µs), with --latency-out.
    timeline: Option<Vec<(u64, u64)>>,
    error: Option<String>,
    next_key: u64,
}

fn produce(args: ProduceBench) -> Result<(), CliError> {
    if args.records.is_some() == args.duration_s.is_some() {
        return Err(CliError::usage(
            "give exactly one of --records N or --duration-s D",
        ));
    }
    if args.connections == 0 || args.batch == 0 || args.window == 0 {
        return Err(CliError::usage(
            "--connections, --batch and --window must be at least 1",
        ));
    }
    let connection = args.connection();
    let executor = Rc::new(smol::LocalExecutor::new());
    smol::block_on(executor.run(async {
        let mut clients = Vec::with_capacity(args.connections);
        for i in 0..args.connections {
            clients.push(Arc::new(
                connection.connect(&format!("eddy-bench-{i}")).await?,
            ));
        }
        let created = match clients[0].create_topic(&args.topic, args.partitions).await {
            Ok(_) => true,
            Err(e) if e.code() == Some(ErrorCode::TopicExists) => false,
            Err(e) => return Err(CliError::from(e)),
        };
        let cleanup = TopicCleanup {
            client: clients[0].clone(),
            topic: args.topic.clone(),
            delete: created && !args.keep_topics,
        };
        let state = Rc::new(RefCell::new(ProduceState {
            remaining: args.records,
            deadline: None,
            sent_records: 0,
            latencies_us: Vec::new(),
            timeline: args.latency_out.as_ref().map(|_| Vec::new()),
            error: None,
            next_key: 0,
            progress: Some(Progress::start(
                "bench produce",
                "records",
                args.records,
                args.quiet,
            )),
        }));
        let started = Instant::now();
        state.borrow_mut().deadline = args.duration_s.map(|d| started + Duration::from_secs(d));
        if args.producer {
            let options = ProducerOptions {
                acks: args.acks,
                batch_bytes_max: args.batch_bytes,
                linger_ms: args.linger_ms,
                inflight_batches_max: args.inflight_batches,
                ..ProducerOptions::default()
            };
            let mut workers = Vec::new();
            for client in &clients {
                let producer = Producer::new(client.clone(), &args.topic, options.clone()).await?;
                workers.push(executor.spawn(produce_records(
                    producer,
                    state.clone(),
                    args.window,
                    args.record_bytes,
                    args.keys,
                )));
            }
            for worker in workers {
                worker.await;
            }
            let reported = report(&args, started, &state);
            cleanup.run().await?;
            return reported;
        }
        let value_capacity = args.record_bytes + 24 + RECORD_OVERHEAD_BYTES_MAX;
        let mut workers = Vec::new();
        for client in &clients {
            for _ in 0..args.window {
                let client = client.clone();
                let state = state.clone();
                let topic = args.topic.clone();
                let (batch, record_bytes, acks, keys) =
                    (args.batch, args.record_bytes, args.acks, args.keys);
                let rate = args.rate;
                workers.push(executor.spawn(async move {
                    let mut value = vec![b'x'; record_bytes];
                    loop {
                        let (count, first_key) = {
                            let mut s = state.borrow_mut();
                            if s.error.is_some() || s.deadline.is_some_and(|d| Instant::now() >= d)
                            {
                                return;
                            }
                            let count = match s.remaining.as_mut() {
                                Some(0) => return,
                                Some(left) => {
                                    let take = (*left).min(batch as u64);
                                    *left -= take;
                                    take
                                }
                                None => batch as u64,
                            };
                            let first_key = s.next_key;
                            s.next_key += count;
                            (count, first_key)
                        };
                        if rate > 0 {
                            // Record n is due n/rate seconds after the start.
                            let due =
                                started + Duration::from_secs_f64(first_key as f64 / rate as f64);
                            if due > Instant::now() {
                                smol::Timer::at(due).await;
                            }
                        }
                        let mut builder = BatchBuilder::with_capacity(
                            BATCH_HEADER_BYTES + value_capacity * count as usize,
                            crate::time::now_ms_i64(),
                        )
                        .expect("sized");
                        let ts = crate::time::now_ms_i64();
                        for i in 0..count {
                            let n = first_key + i;
                            let stamp = n.to_be_bytes();
                            let len = stamp.len().min(value.len());
                            value[..len].copy_from_slice(&stamp[..len]);
                            let key_text;
                            let key = if keys > 0 {
                                key_text = format!("key-{}", n % keys);
                                Some(key_text.as_bytes())
                            } else {
                                None
                            };
                            builder
                                .push(ts, key, &value, Headers::EMPTY)
                                .expect("sized");
                        }
                        let bytes = builder.finish_vec();
                        let sent = Instant::now();
                        match client.produce(&topic, None, acks, 30_000, &bytes).await {
                            Ok(_) => {
                                let mut s = state.borrow_mut();
                                s.sent_records += count;
                                if let Some(p) = &s.progress {
                                    p.add(count);
                                }
                                let us =
                                    u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                                s.latencies_us.push(us);
                                if let Some(t) = s.timeline.as_mut() {
                                    t.push((crate::time::now_ms(), us));
                                }
                            }
                            Err(e) => {
                                state.borrow_mut().error = Some(e.to_string());
                                return;
                            }
                        }
                    }
                }));
            }
        }
        for worker in workers {
            worker.await;
        }
        let reported = report(&args, started, &state);
        cleanup.run().await?;
        reported
    }))
}

/// One connection's records through a [`Producer`], at most `window`
/// unacknowledged: the oldest ack is awaited before the next send.
async fn produce_records(
    producer: Producer,
    state: Rc<RefCell<ProduceState>>,
    window: usize,
    record_bytes: usize,
    keys: u64,
) {
    let mut value = vec![b'x'; record_bytes];
    let mut outstanding: VecDeque<(Delivery, Instant)> = VecDeque::with_capacity(window);
    let mut key_text = String::new();
    loop {
        if outstanding.len() >= window {
            let (delivery, sent) = outstanding.pop_front().expect("window is at least 1");
            if !acked(&state, &delivery, sent).await {
                return;
            }
        }
        // One clock read per record: the deadline check and the send time.
        let now = Instant::now();
        let n = {
            let mut s = state.borrow_mut();
            if s.error.is_some() || s.deadline.is_some_and(|d| now >= d) {
                break;
            }
            match s.remaining.as_mut() {
                Some(0) => break,
                Some(left) => *left -= 1,
                None => {}
            }
            s.next_key += 1;
            s.next_key - 1
        };
        let stamp = n.to_be_bytes();
        let len = stamp.len().min(value.len());
        value[..len].copy_from_slice(&stamp[..len]);
        let key = if keys > 0 {
            use std::fmt::Write;
            key_text.clear();
            let _ = write!(key_text, "key-{}", n % keys);
            Some(key_text.as_bytes())
        } else {
            None
        };
        match producer.send(key, &value, Headers::EMPTY).await {
            Ok(delivery) => outstanding.push_back((delivery, now)),
            Err(e) => {
                state.borrow_mut().error = Some(e.to_string());
                return;
            }
        }
    }
    // Deliver what is outstanding: flush, then count the acks.
    producer.flush().await;
    while let Some((delivery, sent)) = outstanding.pop_front() {
        if !acked(&state, &delivery, sent).await {
            return;
        }
    }
}

/// Waits for one record's ack and counts it; false (and the error kept) if
/// it failed.
async fn acked(state: &Rc<RefCell<ProduceState>>, delivery: &Delivery, sent: Instant) -> bool {
    match delivery.wait().await {
        Ok(_) => {
            let mut s = state.borrow_mut();
            s.sent_records += 1;
            if let Some(p) = &s.progress {
                p.add(1);
            }
            let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            s.latencies_us.push(us);
            if let Some(t) = s.timeline.as_mut() {
                t.push((crate::time::now_ms(), us));
            }
            true
        }
        Err(e) => {
            state.borrow_mut().error = Some(e.to_string());
            false
        }
    }
}

/// Deletes the benchmark's topic after the run when the run created it and
/// `--keep-topics` was not given, so benchmarks leave no topics behind.
pub struct TopicCleanup {
    pub client: Arc<crate::client::Client>,
    pub topic: String,
    pub delete: bool,
}

impl TopicCleanup {
    pub async fn run(self) -> Result<(), CliError> {
        if self.delete {
            self.client.delete_topic(&self.topic).await?;
            eprintln!(
                "deleted topic {} (created by this run; --keep-topics keeps it)",
                self.topic
            );
        }
        Ok(())
    }
}

fn report(
    args: &ProduceBench,
    started: Instant,
    state: &Rc<RefCell<ProduceState>>,
) -> Result<(), CliError> {
    {
        let elapsed = started.elapsed().as_secs_f64();
        let mut s = state.borrow_mut();
        // Stop the progress line before the results.
        drop(s.progress.take());
        if let Some(e) = s.error.take() {
            return Err(CliError::new(format!(
                "produce failed after {} records: {e}",
                s.sent_records
            )));
        }
        let records = s.sent_records;
        if let (Some(path), Some(timeline)) = (&args.latency_out, s.timeline.take()) {
            let text: String = timeline
                .iter()
                .map(|(at, us)| format!("{at} {us}\n"))
                .collect();
            std::fs::write(path, text)
                .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
        }
        let p = Percentiles::of(&mut s.latencies_us);
        let records_per_s = records as f64 / elapsed;
        let mb_per_s = records_per_s * args.record_bytes as f64 / 1e6;
        let acks = match args.acks {
            Acks::Received => "received",
            Acks::Durable => "durable",
            Acks::Mirrored => "mirrored",
        };
        let shape = if args.producer {
            format!("producer, linger {} ms", args.linger_ms)
        } else {
            format!("batch {}", args.batch)
        };
        outln!(
            "produced {records} records of {} B over {} connections ({shape}, window {}, acks {acks}) in {elapsed:.2} s: \
             {records_per_s:.0} records/s, {mb_per_s:.1} MB/s; ack latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            args.record_bytes, args.connections, args.window, p.p50_ms, p.p99_ms, p.max_ms
        );
        if args.json {
            outln!(
                "{}",
                serde_json::json!({
                    "bench": "produce",
                    "records": records,
                    "seconds": elapsed,
                    "records_per_s": records_per_s,
                    "mb_per_s": mb_per_s,
                    "p50_ms": p.p50_ms,
                    "p99_ms": p.p99_ms,
                    "max_ms": p.max_ms,
                    "connections": args.connections,
                    "batch": args.batch,
                    "window": args.window,
                    "producer": args.producer,
                    "linger_ms": args.linger_ms,
                    "record_bytes": args.record_bytes,
                    "acks": acks,
                })
            );
        }
        Ok(())
    }
}

fn consume(args: ConsumeBench) -> Result<(), CliError> {
    let connection = args.connection();
    smol::block_on(async {
        let client: Client = connection.connect("eddy-bench-consume").await?;
        let topic = client.describe_topic(&args.topic).await?;
        let mut cursors: Vec<(u32, u64, u64)> = topic
            .watermarks
            .iter()
            .filter(|m| m.durable > m.log_start)
            .map(|m| (m.partition, m.log_start, m.durable))
            .collect();
        let target = args
            .records
            .unwrap_or_else(|| cursors.iter().map(|(_, start, end)| end - start).sum());
        let progress = Progress::start("bench consume", "records", None, args.quiet);
        let started = Instant::now();
        let mut records = 0u64;
        let mut bytes = 0u64;
        let mut latencies_us = Vec::new();
        while records < target && !cursors.is_empty() {
            let wants: Vec<FetchPartition> = cursors
                .iter()
                .map(|&(partition, offset, _)| FetchPartition { partition, offset })
                .collect();
            let sent = Instant::now();
            let body = client
                .fetch(&args.topic, &wants, args.fetch_bytes, 0)
                .await?;
            latencies_us.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
            let Response::Fetched(fetched) = body.decode()? else {
                return Err(CliError::new("unexpected response to fetch"));
            };
            for part in &fetched.partitions {
                let Some(cursor) = cursors.iter_mut().find(|c| c.0 == part.partition) else {
                    continue;
                };
                if let Some(code) = part.error {
                    return Err(CliError::new(format!(
                        "partition {}: {code}",
                        part.partition
                    )));
                }
                let before = records;
                let next = for_each_record(part.batches, cursor.1, |_, _, r| {
                    records += 1;
                    bytes += r.value.len() as u64;
                })
                .map_err(|e| CliError::new(format!("partition {}: {e}", part.partition)))?;
                progress.add(records - before);
                if let Some(next) = next {
                    cursor.1 = next.max(cursor.1);
                }
            }
            cursors.retain(|&(_, offset, end)| offset < end);
        }
        drop(progress);
        let elapsed = started.elapsed().as_secs_f64();
        let records_per_s = records as f64 / elapsed;
        let mb_per_s = bytes as f64 / elapsed / 1e6;
        let p = Percentiles::of(&mut latencies_us);
        outln!(
            "consumed {records} records ({bytes} value bytes) in {elapsed:.2} s: {records_per_s:.0} records/s, \
             {mb_per_s:.1} MB/s; fetch latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            p.p50_ms, p.p99_ms, p.max_ms
        );
        if args.json {
            outln!(
                "{}",
                serde_json::json!({
                    "bench": "consume",
                    "records": records,
                    "seconds": elapsed,
                    "records_per_s": records_per_s,
                    "mb_per_s": mb_per_s,
                    "p50_ms": p.p50_ms,
                    "p99_ms": p.p99_ms,
                    "max_ms": p.max_ms,
                })
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::Percentiles;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert_eq!(Percentiles::of(&mut []).max_ms, 0.0);
    }
}
