//! Backlog catch-up of a mirror link (issue 4): N records (100-byte
//! values, 10,000 keys, 4 partitions) queued while the uplink was down,
//! then drained into (a) another eddy and (b) a Kafka-protocol broker
//! (librdkafka's mock cluster, in this process), compared in the same run
//! with a librdkafka producer (the `rdkafka` crate: acks=all, idempotent,
//! murmur2 partitioner) writing the same records straight into the same
//! broker.
//!
//! ```text
//! cargo build --release
//! cargo bench --bench mirror_catchup -- [--records N] [--runs R] [--only eddy|kafka] [--port P]
//! ```
//!
//! Servers are `target/release/eddy` (or `EDDY_BIN`) on 127.0.0.1 ports
//! P..P+1 (default 17410), each with a temp data dir. The backlog is loaded
//! with `eddy bench produce` (durable acks) while the upstream is down; the
//! clock starts when the upstream comes up and stops when the link's lag is
//! 0. Reports each run and the medians as JSON lines on stdout; the
//! servers' logs go to `<data dir>.log` in the temp dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eddy::client::{Client, ClientOptions};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

struct Args {
    records: u64,
    runs: usize,
    only: Option<String>,
    port: u16,
}

fn args() -> Args {
    let mut args = Args {
        records: 10_000_000,
        runs: 3,
        only: None,
        port: 17410,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--records" => args.records = it.next().unwrap().parse().unwrap(),
            "--runs" => args.runs = it.next().unwrap().parse().unwrap(),
            "--only" => args.only = it.next(),
            "--port" => args.port = it.next().unwrap().parse().unwrap(),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    args
}

fn bin() -> PathBuf {
    std::env::var_os("EDDY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/eddy"))
}

/// A child `eddy serve`, killed when dropped.
struct Server(Child);

impl Server {
    fn start(port: u16, data: &Path, extra: &[&str]) -> Server {
        std::fs::create_dir_all(data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let child = Command::new(bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data)
            .args(["--no-metrics", "--log-level", "warn"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "eddy on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn options(port: u16, data: &Path) -> ClientOptions {
    ClientOptions::tls(format!("127.0.0.1:{port}"), data.join("tls/ca.pem"))
}

/// Loads the backlog with `eddy bench produce` (durable acks).
fn load(port: u16, data: &Path, records: u64) {
    let status = Command::new(bin())
        .args([
            "bench",
            "produce",
            "--keep-topics",
            "--server",
            &format!("127.0.0.1:{port}"),
            "--ca",
        ])
        .arg(data.join("tls/ca.pem"))
        .args([
            "--connections",
            "4",
            "--window",
            "4",
            "--batch",
            "1000",
            "--record-bytes",
            "100",
            "--keys",
            "10000",
            "--topic",
            "backlog",
            "--partitions",
            "4",
            "--records",
            &records.to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "loading the backlog failed");
}

/// Offsets the link has not forwarded yet, summed over partitions.
async fn lag(client: &Client) -> (u64, String) {
    let links = client.mirror_status().await.unwrap();
    let link = &links[0];
    (
        link.partitions.iter().map(|p| p.lag_records).sum(),
        link.state.clone(),
    )
}

/// Waits until the link is idle with nothing left; returns the drain
/// time from `start` and from the moment the link was seen up.
fn drain(client: &Client, start: Instant) -> (Duration, Duration) {
    smol::block_on(async {
        let mut up_at = None;
        loop {
            let (left, state) = lag(client).await;
            if up_at.is_none() && state == "up" {
                up_at = Some(Instant::now());
            }
            if left == 0 {
                let end = Instant::now();
                return (end - start, end - up_at.unwrap_or(start));
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    })
}

fn config_file(dir: &Path, url: &str, ca: Option<&Path>) -> PathBuf {
    let path = dir.join("eddy.toml");
    let mut text = format!(
        "hub_id = \"gw\"\n[[mirror]]\nname = \"up\"\nurl = \"{url}\"\nbackoff_min_ms = 50\nbackoff_max_ms = 100\n"
    );
    if let Some(ca) = ca {
        text.push_str(&format!("ca = \"{}\"\n", ca.display()));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// (a) into another eddy: records/s from upstream start and from link up.
fn eddy_run(args: &Args) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (src, up) = (dir.path().join("src"), dir.path().join("up"));
    let (src_port, up_port) = (args.port, args.port + 1);
    // The upstream's dev CA exists once it has started.
    Server::start(up_port, &up, &[]).stop();
    let config = config_file(
        dir.path(),
        &format!("eddy://127.0.0.1:{up_port}"),
        Some(&up.join("tls/ca.pem")),
    );
    let source = Server::start(src_port, &src, &["--config", config.to_str().unwrap()]);
    load(src_port, &src, args.records);
    let client = smol::block_on(Client::connect(&options(src_port, &src))).unwrap();
    assert_eq!(smol::block_on(lag(&client)).0, args.records);
    let start = Instant::now();
    let upstream = Server::start(up_port, &up, &[]);
    let (wall, from_up) = drain(&client, start);
    drop(client);
    source.stop();
    upstream.stop();
    let n = args.records as f64;
    (n / wall.as_secs_f64(), n / from_up.as_secs_f64())
}

/// (b) into the mock broker, and a librdkafka producer into the same one:
/// records/s of each.
fn kafka_run(args: &Args, run: usize) -> (f64, f64) {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let mut mirror_rate = 0.0;
    let mut direct_rate = 0.0;
    // Alternate which goes first, so neither always meets a fuller broker.
    for step in 0..2 {
        if (step + run) % 2 == 0 {
            mirror_rate = kafka_mirror(args, &cluster, &bootstrap);
        } else {
            direct_rate = kafka_direct(args, &bootstrap, run);
        }
    }
    (mirror_rate, direct_rate)
}

fn kafka_mirror(
    args: &Args,
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    bootstrap: &str,
) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    cluster.broker_down(1).unwrap();
    let config = config_file(dir.path(), &format!("kafka://{bootstrap}"), None);
    let source = Server::start(args.port, &src, &["--config", config.to_str().unwrap()]);
    load(args.port, &src, args.records);
    let client = smol::block_on(Client::connect(&options(args.port, &src))).unwrap();
    assert_eq!(smol::block_on(lag(&client)).0, args.records);
    let start = Instant::now();
    cluster.broker_up(1).unwrap();
    let (wall, _) = drain(&client, start);
    drop(client);
    source.stop();
    args.records as f64 / wall.as_secs_f64()
}

fn kafka_direct(args: &Args, bootstrap: &str, run: usize) -> f64 {
    // Tuned for throughput: a deep local queue so the loop never waits on
    // it, librdkafka's default 5 ms linger and 1 MB batches.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("batch.num.messages", "100000")
        .set("batch.size", "1000000")
        .create()
        .unwrap();
    let topic = format!("direct-{run}");
    let value = vec![b'v'; 100];
    let start = Instant::now();
    for n in 0..args.records {
        let key = format!("key-{}", n % 10_000);
        let mut record = BaseRecord::to(&topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("librdkafka send: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(600)).unwrap();
    args.records as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args = args();
    assert!(
        bin().exists(),
        "{} is missing: cargo build --release (or set EDDY_BIN)",
        bin().display()
    );
    let want = |what: &str| args.only.as_deref().is_none_or(|o| o == what);
    let (mut eddy_wall, mut eddy_up, mut into_kafka, mut direct, mut ratios) =
        (vec![], vec![], vec![], vec![], vec![]);
    for run in 0..args.runs {
        if want("eddy") {
            let (wall, up) = eddy_run(&args);
            println!(
                "{{\"run\":{run},\"target\":\"eddy\",\"records\":{},\"records_per_s\":{wall:.0},\"records_per_s_from_link_up\":{up:.0}}}",
                args.records
            );
            eddy_wall.push(wall);
            eddy_up.push(up);
        }
        if want("kafka") {
            let (mirror, librdkafka) = kafka_run(&args, run);
            println!(
                "{{\"run\":{run},\"target\":\"kafka-mock\",\"records\":{},\"mirror_records_per_s\":{mirror:.0},\"librdkafka_records_per_s\":{librdkafka:.0},\"ratio\":{:.3}}}",
                args.records,
                mirror / librdkafka
            );
            into_kafka.push(mirror);
            direct.push(librdkafka);
            ratios.push(mirror / librdkafka);
        }
    }
    if !eddy_wall.is_empty() {
        println!(
            "{{\"median\":\"eddy\",\"runs\":{},\"records_per_s\":{:.0},\"records_per_s_from_link_up\":{:.0}}}",
            eddy_wall.len(),
            median(eddy_wall),
            median(eddy_up)
        );
    }
    if !into_kafka.is_empty() {
        println!(
            "{{\"median\":\"kafka-mock\",\"runs\":{},\"mirror_records_per_s\":{:.0},\"librdkafka_records_per_s\":{:.0},\"ratio\":{:.3}}}",
            into_kafka.len(),
            median(into_kafka),
            median(direct),
            median(ratios)
        );
    }
}
