//! Issue 16's memory and rate goals, against the hub as a separate process
//! (`target/release/eddy`, or `EDDY_BIN`), each scenario on a fresh hub
//! with a temp data dir, RSS read from `/proc/PID/status`:
//!
//! - `frames`: 2,000 connections each announce a 1 MiB frame and send one
//!   byte of it (goal: peak RSS ≤ 200 MB; was 2,027 MB).
//! - `slow`: 100 connections park 64 long-polls each and never read; one
//!   ~960 KB produce completes them all (goal: peak RSS ≤ 200 MB; was
//!   8.8 GB).
//! - `longpolls`: durable produce rate on one topic, alone and then with
//!   32,000 long-polls (500 connections × 64) parked on an idle topic
//!   (goal: ≥ 0.8× the undisturbed rate of the same run; was 0.02×).
//!
//! ```text
//! cargo build --release --bin eddy
//! cargo bench --bench hardening -- [--runs R] [--only frames|slow|longpolls] [--port P]
//! ```
//!
//! (`cargo test --release --bench hardening -- …` runs the same driver.)
//! The hub runs with `--max-connections-per-ip 100000`, so one source
//! address is enough; the client needs about 2,100 file descriptors
//! (`ulimit -n`). Prints one JSON line per run and the medians; every hub
//! is stopped (SIGKILL, then waited for) before the next starts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eddy::client::{Client, ClientOptions};
use eddy::wire::batch::{BatchBuilder, Headers};
use eddy::wire::{self, Acks, FetchPartition, Hello, Request, RequestFrame, PROTOCOL_VERSION};
use futures_rustls::client::TlsStream;
use smol::io::{AsyncReadExt, AsyncWriteExt};

type Tls = TlsStream<async_net::TcpStream>;

fn bin() -> PathBuf {
    std::env::var_os("EDDY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/eddy"))
}

/// A hub process, killed and reaped when dropped.
struct Hub {
    child: Child,
    port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Hub {
    fn start(port: u16) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .args(["--no-metrics", "--max-connections-per-ip", "100000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run target/release/eddy (cargo build --release --bin eddy)");
        let ca = dir.path().join("tls").join("ca.pem");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(ca.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            assert!(Instant::now() < deadline, "the hub did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Hub {
            child,
            port,
            ca,
            _dir: dir,
        }
    }

    /// (peak RSS, RSS now) in MB.
    fn rss_mb(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = |field: &str| -> f64 {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        (kb("VmHWM:") / 1024.0, kb("VmRSS:") / 1024.0)
    }

    fn options(&self) -> ClientOptions {
        ClientOptions::tls(format!("127.0.0.1:{}", self.port), &self.ca)
    }

    async fn raw(&self) -> Tls {
        let tcp = async_net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let config = eddy::tls::client_config(&self.ca).unwrap();
        let mut tls = futures_rustls::TlsConnector::from(config)
            .connect(eddy::tls::server_name("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        send(
            &mut tls,
            0,
            Request::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_id: "hardening-bench",
            }),
        )
        .await;
        let mut prefix = [0u8; 4];
        tls.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0; u32::from_be_bytes(prefix) as usize];
        tls.read_exact(&mut body).await.unwrap();
        tls
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(tls: &mut Tls, correlation_id: u32, request: Request<'_>) {
    let mut out = Vec::new();
    wire::encode_request(
        &RequestFrame {
            correlation_id,
            request,
        },
        &mut out,
    );
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();
}

/// `n` raw connections that said Hello, opened 50 at a time.
async fn connections(hub: &Hub, n: usize) -> Vec<Tls> {
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let batch = (n - all.len()).min(50);
        let tasks: Vec<_> = (0..batch).map(|_| hub.raw()).collect();
        for t in tasks {
            all.push(t.await);
        }
    }
    all
}

async fn park_long_polls(conns: &mut [Tls], topic: &str, per_connection: u32) {
    for conn in conns.iter_mut() {
        for id in 1..=per_connection {
            let fetch = Request::Fetch(wire::Fetch {
                topic,
                partitions: vec![FetchPartition {
                    partition: 0,
                    offset: 0,
                }],
                max_bytes: u32::MAX,
                max_wait_ms: 30_000,
            });
            send(conn, id, fetch).await;
        }
    }
}

fn one_value(bytes: usize) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(bytes + 256, 1).unwrap();
    b.push(1, None, &vec![7u8; bytes], Headers::EMPTY).unwrap();
    b.finish_vec()
}

/// A run's JSON line and its key figure (peak RSS in MB, or the ratio).
type Run = (String, f64);
/// A scenario by name.
type Scenario = (&'static str, fn(u16) -> Run);

fn frames(port: u16) -> Run {
    let hub = Hub::start(port);
    smol::block_on(async {
        let mut conns = connections(&hub, 2_000).await;
        let mut announce = (1u32 << 20).to_be_bytes().to_vec();
        announce.push(0);
        for c in &mut conns {
            c.write_all(&announce).await.unwrap();
            c.flush().await.unwrap();
        }
        smol::Timer::after(Duration::from_secs(3)).await;
        let (peak, now) = hub.rss_mb();
        let line = format!(
            r#"{{"scenario":"frames","connections":2000,"rss_peak_mb":{peak:.1},"rss_mb":{now:.1}}}"#
        );
        (line, peak)
    })
}

fn slow(port: u16) -> Run {
    let hub = Hub::start(port);
    smol::block_on(async {
        let client = Client::connect(&hub.options()).await.unwrap();
        client.create_topic("slow", 1).await.unwrap();
        let mut conns = connections(&hub, 100).await;
        park_long_polls(&mut conns, "slow", 64).await;
        smol::Timer::after(Duration::from_secs(1)).await;
        client
            .produce("slow", None, Acks::Durable, 30_000, &one_value(960_000))
            .await
            .unwrap();
        smol::Timer::after(Duration::from_secs(5)).await;
        let (peak, now) = hub.rss_mb();
        let line = format!(
            r#"{{"scenario":"slow","connections":100,"long_polls":6400,"rss_peak_mb":{peak:.1},"rss_mb":{now:.1}}}"#
        );
        (line, peak)
    })
}

/// Durable produces (one record each, 4 producers) for `secs`: records/s.
async fn produce_rate(hub: &Hub, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let options = hub.options();
            smol::spawn(async move {
                let client = Client::connect(&options).await.unwrap();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    client
                        .produce("busy", None, Acks::Durable, 30_000, &one_value(100))
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await;
    }
    total as f64 / secs as f64
}

fn longpolls(port: u16) -> Run {
    let hub = Hub::start(port);
    smol::block_on(async {
        let client = Client::connect(&hub.options()).await.unwrap();
        client.create_topic("idle", 1).await.unwrap();
        client.create_topic("busy", 1).await.unwrap();
        let alone = produce_rate(&hub, 5).await;
        let mut conns = connections(&hub, 500).await;
        park_long_polls(&mut conns, "idle", 64).await;
        smol::Timer::after(Duration::from_secs(2)).await;
        let disturbed = produce_rate(&hub, 5).await;
        let ratio = disturbed / alone;
        let line = format!(
            r#"{{"scenario":"longpolls","long_polls":32000,"alone_per_s":{alone:.0},"with_long_polls_per_s":{disturbed:.0},"ratio":{ratio:.2}}}"#
        );
        (line, ratio)
    })
}

fn main() {
    let mut runs = 3;
    let mut only: Option<String> = None;
    let mut port = 17510u16;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().unwrap().parse().unwrap(),
            "--only" => only = it.next(),
            "--port" => port = it.next().unwrap().parse().unwrap(),
            _ => {}
        }
    }
    let scenarios: [Scenario; 3] = [("frames", frames), ("slow", slow), ("longpolls", longpolls)];
    for (name, run) in scenarios {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let mut figures = Vec::new();
        for r in 0..runs {
            // A fresh port per run: the previous hub's socket may linger.
            let (line, figure) = run(port + u16::try_from(r).unwrap());
            println!("{line}");
            figures.push(figure);
        }
        port += 10;
        figures.sort_by(f64::total_cmp);
        let median = figures.get(figures.len() / 2).copied().unwrap_or(f64::NAN);
        let what = if name == "longpolls" {
            "ratio"
        } else {
            "rss_peak_mb"
        };
        println!(r#"{{"scenario":"{name}","runs":{runs},"median_{what}":{median:.2}}}"#);
    }
}
