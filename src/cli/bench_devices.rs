//! `eddy bench devices`: a fleet of simulated devices against a running hub.
//!
//! Each simulated device opens its own TLS connection, says `Hello`, calls
//! `InitProducer` with its device id and then sends one small reading every
//! interval, waiting for each acknowledgement before the next (as the
//! firmware client does with a window of one). Frames are encoded by
//! [`crate::wire::device`], the code the `no_std` firmware client uses, so
//! the hub sees byte for byte what a fleet of real devices would send.
//!
//! Reports: connection set-up rate (TCP + TLS + Hello + InitProducer, with
//! at most `--connect-concurrency` in progress), ack latency p50/p99/max
//! over the measured window (after every device is connected), errors, and
//! the hub's RSS when given its pid (the largest reading while every device
//! is connected, and the peak since the hub started). Raises the open-file
//! limit it needs.
//!
//! This is a load generator: it does not check what was stored (the tests
//! do) and does not reconnect a device whose connection failed (it counts
//! the failure).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argh::FromArgs;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::Executor;

use super::bench::Percentiles;
use super::bench_progress::Progress;
use super::{default_acks, parse_acks, CliError};
use crate::outln;
use crate::tls;
use crate::wire::batch::{ProducerStamp, NO_TIMESTAMP};
use crate::wire::device::{
    batch_bytes_for, encode_hello, encode_init_producer, encode_reading, frame_bytes_for,
    ProduceTarget, Reading,
};
use crate::wire::producer::sequence_after;
use crate::wire::{self, Acks, ErrorCode, Response, FRAME_PREFIX_BYTES};

/// Largest response a simulated device accepts, in bytes (errors carry a
/// message; nothing a device is sent is larger).
const DEVICE_RESPONSE_BYTES_MAX: u32 = 4 << 10;
/// Default connections being set up at once.
const CONNECT_CONCURRENCY_DEFAULT: usize = 64;
/// Time a device has to connect (TCP, TLS, Hello, InitProducer), in ms.
const DEVICE_CONNECT_TIMEOUT_MS: u64 = 30_000;
/// Time a device waits for one acknowledgement before it counts a timeout
/// and stops, in ms.
const DEVICE_ACK_TIMEOUT_MS: u64 = 30_000;
/// How often the server's RSS is read during the measured window, in ms.
const RSS_SAMPLE_MS: u64 = 1_000;
/// The last RSS reading is taken this long before the window ends, while
/// every device is still connected, in ms.
const RSS_LAST_SAMPLE_BEFORE_END_MS: u64 = 50;

crate::client_args! {
/// Simulate N devices, each sending one small reading per interval over its
/// own TLS connection; report ack latency, errors, set-up rate, and readings
/// sent late: more than one interval behind the device's schedule, because
/// its previous ack or the client machine's CPU held it back.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "devices")]
pub struct DevicesBench {
    /// simulated devices, one connection each (default 1000)
    #[argh(option, default = "1000")]
    pub connections: usize,
    /// ms between two readings of one device (default 1000)
    #[argh(option, default = "1000")]
    pub interval_ms: u64,
    /// seconds to measure once every device is connected (default 30)
    #[argh(option, default = "30")]
    pub duration_s: u64,
    /// bytes per reading value (default 64)
    #[argh(option, default = "64")]
    pub value_bytes: usize,
    /// acknowledgement level: received or durable (default durable)
    #[argh(option, short = 'a', default = "default_acks()", from_str_fn(parse_acks))]
    pub acks: Acks,
    /// topic (default devices; created with --partitions when missing)
    #[argh(option, short = 't', default = "String::from(\"devices\")")]
    pub topic: String,
    /// partitions when the topic is created (default 8)
    #[argh(option, default = "8")]
    pub partitions: u32,
    /// connections set up at once (default 64)
    #[argh(option, default = "CONNECT_CONCURRENCY_DEFAULT")]
    pub connect_concurrency: usize,
    /// client threads (default: one per CPU)
    #[argh(option, default = "0")]
    pub threads: usize,
    /// no InitProducer and no producer stamp on readings (no dedupe), to
    /// measure what idempotence costs
    #[argh(switch)]
    pub no_idempotence: bool,
    /// pid of the eddy server, to report its RSS
    #[argh(option)]
    pub server_pid: Option<u32>,
    /// print one JSON object as the last line
    #[argh(switch, short = 'j')]
    pub json: bool,
    /// print no progress on stderr (default: a live line on a terminal, a
    /// line every 10 s otherwise)
    #[argh(switch, short = 'q')]
    pub quiet: bool,
    /// keep the topic after the run (default: delete it if this run created it)
    #[argh(switch)]
    pub keep_topics: bool,
}
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What every device shares.
struct Fleet {
    server: String,
    tls: Option<(
        futures_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    topic: String,
    acks: Acks,
    interval: Duration,
    value_bytes: usize,
    idempotent: bool,
    connect_slots: smol::lock::Semaphore,
    /// Readings acknowledged, for the progress line.
    acked: Arc<AtomicU64>,
    /// Devices connected (or failed to) so far, and when the last did.
    setup_done: AtomicU64,
    setup_failed: AtomicU64,
    last_setup_us: AtomicU64,
    started: Instant,
    /// Set when every device has finished setting up: measurement begins.
    go: event_listener::Event,
    going: AtomicBool,
    window: Mutex<Option<(Instant, Instant)>>,
    errors: Mutex<Vec<String>>,
}

#[derive(Default)]
struct DeviceResult {
    latencies_us: Vec<u64>,
    sent: u64,
    late: u64,
    failed: Option<String>,
}

pub fn run(args: DevicesBench) -> Result<(), CliError> {
    if args.connections == 0 || args.interval_ms == 0 || args.duration_s == 0 {
        return Err(CliError::usage(
            "--connections, --interval-ms and --duration-s must be at least 1",
        ));
    }
    match super::fd_limit::ensure_for_connections(args.connections, "bench devices") {
        Ok(Some((before, after))) => eprintln!(
            "raised the open-file limit from {before} to {after} for {} connections",
            args.connections
        ),
        Ok(None) => {}
        Err(e) => return Err(CliError::new(e)),
    }
    let connection = args.connection();
    let options = connection.options("eddy-bench-devices")?;
    let tls = match &options.tls {
        None => None,
        Some(t) => {
            let host = t.server_name.clone().unwrap_or_else(|| {
                let host = args
                    .server
                    .rsplit_once(':')
                    .map_or(&*args.server, |(h, _)| h);
                host.trim_matches(['[', ']']).to_string()
            });
            Some((
                futures_rustls::TlsConnector::from(tls::client_config(&t.ca)?),
                tls::server_name(&host)?,
            ))
        }
    };
    // The topic first, so devices do not race to auto-create it.
    let cleanup = smol::block_on(async {
        let client = Arc::new(connection.connect("eddy-bench-devices").await?);
        let created = match client.create_topic(&args.topic, args.partitions).await {
            Ok(_) => true,
            Err(e) if e.code() == Some(ErrorCode::TopicExists) => false,
            Err(e) => return Err(CliError::from(e)),
        };
        Ok::<_, CliError>(super::bench::TopicCleanup {
            client,
            topic: args.topic.clone(),
            delete: created && !args.keep_topics,
        })
    })?;
    let progress = Progress::start("bench devices", "readings", None, args.quiet);

    let fleet = Arc::new(Fleet {
        server: args.server.clone(),
        tls,
        topic: args.topic.clone(),
        acks: args.acks,
        interval: Duration::from_millis(args.interval_ms),
        value_bytes: args.value_bytes,
        idempotent: !args.no_idempotence,
        connect_slots: smol::lock::Semaphore::new(args.connect_concurrency.max(1)),
        acked: progress.counter(),
        setup_done: AtomicU64::new(0),
        setup_failed: AtomicU64::new(0),
        last_setup_us: AtomicU64::new(0),
        started: Instant::now(),
        go: event_listener::Event::new(),
        going: AtomicBool::new(false),
        window: Mutex::new(None),
        errors: Mutex::new(Vec::new()),
    });
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let executor = Arc::new(Executor::new());
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let workers: Vec<_> = (1..threads)
        .map(|_| {
            let executor = executor.clone();
            let stop_rx = stop_rx.clone();
            std::thread::spawn(move || smol::block_on(executor.run(stop_rx.recv())))
        })
        .collect();

    let n = args.connections;
    let duration = Duration::from_secs(args.duration_s);
    let (results, rss_in_window): (Vec<DeviceResult>, Option<u64>) =
        smol::block_on(executor.run(async {
            let tasks: Vec<_> = (0..n)
                .map(|i| executor.spawn(device(fleet.clone(), i, n)))
                .collect();
            // Wait for every device to finish setting up, then start the clock.
            loop {
                let listener = fleet.go.listen();
                let done = fleet.setup_done.load(Ordering::Acquire)
                    + fleet.setup_failed.load(Ordering::Acquire);
                if done == n as u64 {
                    break;
                }
                smol::future::or(listener, async {
                    smol::Timer::after(Duration::from_millis(50)).await;
                })
                .await;
            }
            let start = Instant::now() + Duration::from_millis(100);
            let end = start + duration;
            *fleet.window.lock().expect("window") = Some((start, end));
            fleet.going.store(true, Ordering::Release);
            fleet.go.notify(usize::MAX);
            // The server's memory while every device is connected and sending
            // (devices disconnect once the window is over).
            let sampler = executor.spawn(sample_rss(args.server_pid, start, end));
            let mut results = Vec::with_capacity(n);
            for task in tasks {
                results.push(task.await);
            }
            (results, sampler.await)
        }));
    drop(stop_tx);
    for worker in workers {
        let _ = worker.join();
    }
    drop(progress);
    let rss_peak = args.server_pid.and_then(|pid| proc_status_kb(pid, "VmHWM"));
    report(&args, &fleet, results, rss_in_window, rss_peak)?;
    smol::block_on(cleanup.run())
}

/// Largest RSS of process `pid` over the window from `start` to `end`, in
/// kB, read every [`RSS_SAMPLE_MS`] and once more just before `end`.
async fn sample_rss(pid: Option<u32>, start: Instant, end: Instant) -> Option<u64> {
    let pid = pid?;
    smol::Timer::at(start).await;
    let mut max = proc_status_kb(pid, "VmRSS");
    loop {
        let now = Instant::now();
        let last = end.saturating_duration_since(now) <= Duration::from_millis(RSS_SAMPLE_MS);
        let next = if last {
            end.checked_sub(Duration::from_millis(RSS_LAST_SAMPLE_BEFORE_END_MS))
                .filter(|t| *t > now)
                .unwrap_or(now)
        } else {
            now + Duration::from_millis(RSS_SAMPLE_MS)
        };
        smol::Timer::at(next).await;
        max = max.max(proc_status_kb(pid, "VmRSS"));
        if last {
            return max;
        }
    }
}

/// One simulated device: set up, wait for the start, send until the end.
async fn device(fleet: Arc<Fleet>, index: usize, total: usize) -> DeviceResult {
    let mut result = DeviceResult::default();
    let device_id = format!("bench-device-{index}");
    let set_up = {
        let _slot = fleet.connect_slots.acquire().await;
        timeout(
            Duration::from_millis(DEVICE_CONNECT_TIMEOUT_MS),
            set_up(&fleet, &device_id),
        )
        .await
        .unwrap_or_else(|| Err("connect timed out".to_string()))
    };
    let since_start = u64::try_from(fleet.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    fleet.last_setup_us.fetch_max(since_start, Ordering::AcqRel);
    let (mut stream, init) = match set_up {
        Ok(ok) => {
            fleet.setup_done.fetch_add(1, Ordering::AcqRel);
            fleet.go.notify(1);
            ok
        }
        Err(e) => {
            fleet.setup_failed.fetch_add(1, Ordering::AcqRel);
            fleet.go.notify(1);
            record_error(&fleet, format!("set-up: {e}"));
            result.failed = Some(e);
            return result;
        }
    };
    loop {
        let listener = fleet.go.listen();
        if fleet.going.load(Ordering::Acquire) {
            break;
        }
        listener.await;
    }
    let (start, end) = fleet.window.lock().expect("window").expect("set before go");
    // Spread the devices evenly over one interval.
    let offset_us = u64::try_from(fleet.interval.as_micros()).unwrap_or(u64::MAX)
        * u64::try_from(index).unwrap_or(0)
        / u64::try_from(total).unwrap_or(1).max(1);
    let mut next = start + Duration::from_micros(offset_us);

    let key = device_id.as_bytes();
    let target = ProduceTarget {
        topic: &fleet.topic,
        partition: None,
        acks: fleet.acks,
        timeout_ms: 10_000,
    };
    let mut frame = vec![0u8; frame_bytes_for(fleet.topic.len(), key.len(), fleet.value_bytes)];
    let mut batch = vec![0u8; batch_bytes_for(key.len(), fleet.value_bytes)];
    let mut value = vec![b'0'; fleet.value_bytes];
    let mut body = Vec::new();
    let mut sequence = init.next_sequence;
    let mut correlation_id = 3u32;
    while next < end {
        let now = Instant::now();
        if now < next {
            smol::Timer::at(next).await;
        } else if now > next + fleet.interval {
            result.late += 1;
        }
        next += fleet.interval;
        let text = format!("{{\"d\":{index},\"n\":{},\"t\":21.5}}", result.sent);
        let len = text.len().min(value.len());
        value[..len].copy_from_slice(&text.as_bytes()[..len]);
        let reading = Reading {
            key: Some(key),
            value: &value,
            timestamp_ms: NO_TIMESTAMP,
        };
        let stamp = if fleet.idempotent {
            ProducerStamp {
                producer_id: init.producer_id,
                producer_epoch: init.producer_epoch,
                base_sequence: sequence,
            }
        } else {
            ProducerStamp::NONE
        };
        let frame_len = match encode_reading(
            &mut frame,
            &mut batch,
            correlation_id,
            &target,
            stamp,
            &reading,
        ) {
            Ok(len) => len,
            Err(e) => {
                result.failed = Some(e.to_string());
                break;
            }
        };
        let sent_at = Instant::now();
        let answer = timeout(Duration::from_millis(DEVICE_ACK_TIMEOUT_MS), async {
            stream
                .write_all(&frame[..frame_len])
                .await
                .map_err(|e| format!("write: {e}"))?;
            stream.flush().await.map_err(|e| format!("flush: {e}"))?;
            read_answer(&mut stream, &mut body, correlation_id).await
        })
        .await
        .unwrap_or_else(|| Err("ack timed out".to_string()));
        result.sent += 1;
        match answer {
            Ok(None) => {
                fleet.acked.fetch_add(1, Ordering::Relaxed);
                result
                    .latencies_us
                    .push(u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX));
                sequence = sequence_after(sequence, 1);
            }
            Ok(Some(code)) => {
                record_error(&fleet, format!("eddy answered {code}"));
                result.failed = Some(code.to_string());
                break;
            }
            Err(e) => {
                record_error(&fleet, e.clone());
                result.failed = Some(e);
                break;
            }
        }
        correlation_id = correlation_id.wrapping_add(1);
    }
    result
}

/// TCP, TLS, `Hello`, `InitProducer`.
async fn set_up(
    fleet: &Fleet,
    device_id: &str,
) -> Result<(Box<dyn Io>, wire::ProducerInit), String> {
    let tcp = async_net::TcpStream::connect(fleet.server.as_str())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Io> = match &fleet.tls {
        None => Box::new(tcp),
        Some((connector, name)) => Box::new(
            connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?,
        ),
    };
    let mut frame = [0u8; 512];
    let mut body = Vec::new();
    let len = encode_hello(&mut frame, 1, device_id).map_err(|e| e.to_string())?;
    stream
        .write_all(&frame[..len])
        .await
        .map_err(|e| format!("write: {e}"))?;
    if let Some(code) = read_answer(&mut stream, &mut body, 1).await? {
        return Err(format!("Hello refused: {code}"));
    }
    if !fleet.idempotent {
        let plain = wire::ProducerInit {
            producer_id: -1,
            producer_epoch: -1,
            next_sequence: -1,
        };
        return Ok((stream, plain));
    }
    let len = encode_init_producer(&mut frame, 2, device_id).map_err(|e| e.to_string())?;
    stream
        .write_all(&frame[..len])
        .await
        .map_err(|e| format!("write: {e}"))?;
    if let Some(code) = read_answer(&mut stream, &mut body, 2).await? {
        return Err(format!("InitProducer refused: {code}"));
    }
    match wire::decode_response(&body).map(|f| f.response) {
        Ok(Response::ProducerInit(init)) => Ok((stream, init)),
        _ => Err("unexpected answer to InitProducer".into()),
    }
}

/// Reads one response into `body`: `Ok(None)` for a success answer to
/// `correlation_id`, `Ok(Some(code))` for an error answer.
async fn read_answer(
    stream: &mut Box<dyn Io>,
    body: &mut Vec<u8>,
    correlation_id: u32,
) -> Result<Option<ErrorCode>, String> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let len =
        wire::decode_frame_len(prefix, DEVICE_RESPONSE_BYTES_MAX).map_err(|e| e.to_string())?;
    body.clear();
    body.resize(len, 0);
    stream
        .read_exact(body)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let frame = wire::decode_response(body).map_err(|e| e.to_string())?;
    if frame.correlation_id != correlation_id {
        return Err(format!(
            "answer for request {} while waiting for {correlation_id}",
            frame.correlation_id
        ));
    }
    match frame.response {
        Response::Error(e) => Ok(Some(e.code)),
        _ => Ok(None),
    }
}

fn record_error(fleet: &Fleet, error: String) {
    let mut errors = fleet.errors.lock().expect("errors");
    // Keep a few examples; the count is in the results.
    if errors.len() < 10 {
        errors.push(error);
    }
}

fn report(
    args: &DevicesBench,
    fleet: &Fleet,
    results: Vec<DeviceResult>,
    rss_kb: Option<u64>,
    rss_peak_kb: Option<u64>,
) -> Result<(), CliError> {
    let connected = fleet.setup_done.load(Ordering::Acquire);
    let setup_failed = fleet.setup_failed.load(Ordering::Acquire);
    let setup_s = fleet.last_setup_us.load(Ordering::Acquire) as f64 / 1e6;
    let setup_rate = if setup_s > 0.0 {
        connected as f64 / setup_s
    } else {
        0.0
    };
    let mut latencies: Vec<u64> = Vec::new();
    let (mut sent, mut late, mut failed) = (0u64, 0u64, 0u64);
    for r in results {
        latencies.extend(r.latencies_us);
        sent += r.sent;
        late += r.late;
        failed += u64::from(r.failed.is_some());
    }
    let acked = latencies.len() as u64;
    let errors = sent - acked + setup_failed;
    let p = Percentiles::of(&mut latencies);
    let acked_per_s = acked as f64 / args.duration_s as f64;
    let acks = match args.acks {
        Acks::Received => "received",
        Acks::Durable => "durable",
        Acks::Mirrored => "mirrored",
    };
    outln!(
        "{connected} of {} devices connected in {setup_s:.2} s ({setup_rate:.0} connections/s); \
         over {} s: {acked} readings acknowledged ({acked_per_s:.0}/s, acks {acks}), {errors} errors, \
         {late} sent late (over one interval behind schedule: a slow ack or a busy client CPU held the device back); ack latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        args.connections, args.duration_s, p.p50_ms, p.p99_ms, p.max_ms
    );
    if let (Some(rss), Some(peak)) = (rss_kb, rss_peak_kb) {
        outln!(
            "server RSS {:.1} MB with every device connected (largest reading in the window), \
             {:.1} MB peak since start (connection set-up included)",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    for e in fleet.errors.lock().expect("errors").iter() {
        outln!("error example: {e}");
    }
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "bench": "devices",
                "connections": args.connections,
                "connected": connected,
                "devices_failed": failed,
                "setup_s": setup_s,
                "setup_per_s": setup_rate,
                "interval_ms": args.interval_ms,
                "duration_s": args.duration_s,
                "value_bytes": args.value_bytes,
                "acks": acks,
                "acked": acked,
                "acked_per_s": acked_per_s,
                "errors": errors,
                "late": late,
                "p50_ms": p.p50_ms,
                "p99_ms": p.p99_ms,
                "max_ms": p.max_ms,
                "server_rss_kb": rss_kb,
                "server_rss_peak_kb": rss_peak_kb,
            })
        );
    }
    Ok(())
}

/// A field of `/proc/<pid>/status`, in kB.
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn timeout<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}
