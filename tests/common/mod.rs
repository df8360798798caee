//! Shared test helpers: an in-process server on port 0 with a temp data
//! dir, a child `eddy serve` process, raw frame I/O and batch builders.
#![allow(dead_code)]

pub mod crash_cycle;
pub mod kafka_broker;
pub mod kafka_clients;
pub mod mirror;
pub mod mqtt;
pub mod powercut_fs;
pub mod powercut_undo;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eddy::client::{Client, ClientOptions};
use eddy::config::{ServerConfig, TlsSetup};
use eddy::server::{self, RunningServer};
use eddy::wire::batch::{BatchBuilder, Headers};
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// An in-process server with its own temp data dir.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub config: ServerConfig,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    /// Starts with a config adjusted by `tweak` (port 0, temp dir, dev TLS).
    pub fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            tls: TlsSetup::DevGenerated,
            threads: 2,
            // Never the fixed default port: tests run in parallel.
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            kafka: eddy::config::KafkaConfig {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                advertised: None,
            },
            ..ServerConfig::default()
        };
        // Never the fixed MQTT port either.
        config.mqtt.listen = Some("127.0.0.1:0".parse().unwrap());
        tweak(&mut config);
        let server = server::start(config.clone()).unwrap();
        TestServer {
            server: Some(server),
            dir,
            config,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr()
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.pem")
    }

    pub fn options(&self) -> ClientOptions {
        if self.config.tls == TlsSetup::InsecurePlaintext {
            ClientOptions::plaintext(self.addr().to_string())
        } else {
            ClientOptions::tls(self.addr().to_string(), self.ca())
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.options()).await.unwrap()
    }

    /// Graceful stop, then start again on the same data dir (new port).
    ///
    /// In one process the new server may find the data directory still
    /// locked for a moment: the stopped server's storage is closed and
    /// fsynced, but sled releases its file lock only when its I/O threads
    /// drop their last reference. So a start refused for that lock is
    /// tried again (bounded); any other error fails at once.
    pub fn restart(&mut self) {
        self.server.take().unwrap().stop().unwrap();
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(RESTART_LOCK_WAIT_S);
        loop {
            match server::start(config.clone()) {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(e) if e.to_string().contains("locked by another running eddy") => {
                    assert!(
                        Instant::now() < deadline,
                        "the data directory stayed locked {RESTART_LOCK_WAIT_S} s after the server stopped: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("restart failed: {e}"),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop();
        }
    }
}

/// A batch of `(key, value)` records stamped with `timestamp_ms`.
pub fn batch(records: &[(Option<&[u8]>, &[u8])], timestamp_ms: i64) -> Vec<u8> {
    let size: usize = records
        .iter()
        .map(|(k, v)| k.map_or(0, |k| k.len()) + v.len() + 64)
        .sum::<usize>()
        + 64;
    let mut b = BatchBuilder::with_capacity(size, timestamp_ms).unwrap();
    for (k, v) in records {
        b.push(timestamp_ms, *k, v, Headers::EMPTY).unwrap();
    }
    b.finish_vec()
}

/// A batch of keyless values.
pub fn values(values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, *v)).collect();
    batch(&records, 1_000)
}

/// How long a restart in the same process waits for sled's file lock.
const RESTART_LOCK_WAIT_S: u64 = 10;

/// Waits until `condition` holds, checking as it changes; panics after
/// `limit` (a bound on a wait for an event, not a stand-in for one).
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `GET path` from an HTTP server; returns the status line and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample `series` (name with labels, as exposed) in a
/// metrics text; `None` if absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes `/metrics`.
pub fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    body
}

/// A raw TLS connection for sending hand-made frames.
pub struct RawConn {
    stream: Box<dyn RawIo>,
}

pub trait RawIo: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send {}
impl<T: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send> RawIo for T {}

impl RawConn {
    pub async fn connect(addr: SocketAddr, ca: &Path) -> RawConn {
        let tcp = async_net::TcpStream::connect(addr).await.unwrap();
        let config = eddy::tls::client_config(ca).unwrap();
        let tls = futures_rustls::TlsConnector::from(config)
            .connect(eddy::tls::server_name("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        RawConn {
            stream: Box::new(tls),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    pub async fn send(&mut self, correlation_id: u32, request: eddy::wire::Request<'_>) {
        let mut out = Vec::new();
        eddy::wire::encode_request(
            &eddy::wire::RequestFrame {
                correlation_id,
                request,
            },
            &mut out,
        );
        self.send_raw(&out).await.unwrap();
    }

    pub async fn hello(&mut self) {
        self.send(
            0,
            eddy::wire::Request::Hello(eddy::wire::Hello {
                protocol_version: eddy::wire::PROTOCOL_VERSION,
                client_id: "raw",
            }),
        )
        .await;
        let body = self.read_frame().await.expect("hello answer");
        assert!(matches!(
            eddy::wire::decode_response(&body).unwrap().response,
            eddy::wire::Response::Hello(_)
        ));
    }

    /// Reads one response frame body; `None` when the server closed.
    pub async fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).await.ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(body)
    }

    /// Shuts down the writing side (TLS close_notify, then TCP FIN); the
    /// connection can still be read.
    pub async fn close_write(&mut self) {
        self.stream.close().await.unwrap();
    }

    /// Whether the server has closed the connection (reads until EOF).
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    }
}

/// A child `eddy serve` process.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// Where `/metrics` is served (`None` with `--no-metrics`).
    pub metrics_addr: Option<SocketAddr>,
    /// Where Kafka clients connect (`None` with `--no-kafka`).
    pub kafka_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The address after `marker` on a log line, if the line has it.
fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = line.split(marker).nth(1)?;
    rest.split(|c: char| c.is_whitespace() || c == '/')
        .next()?
        .parse()
        .ok()
}

impl ChildServer {
    /// Starts `eddy serve --listen 127.0.0.1:0 --data-dir DIR` (and
    /// `--metrics-listen 127.0.0.1:0` unless `extra` sets metrics) and waits
    /// for its "listening on" and metrics log lines.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ChildServer {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir"];
        let data_dir_arg = data_dir.to_str().unwrap();
        args.push(data_dir_arg);
        if !extra
            .iter()
            .any(|a| *a == "--no-metrics" || *a == "--metrics-listen")
        {
            args.extend(["--metrics-listen", "127.0.0.1:0"]);
        }
        if !extra
            .iter()
            .any(|a| *a == "--no-mqtt" || *a == "--mqtt-listen")
        {
            args.extend(["--mqtt-listen", "127.0.0.1:0"]);
        }
        ChildServer::spawn(&args, extra)
    }

    /// Starts `eddy serve` with exactly `args` then `extra` (e.g. with
    /// `--config`), and waits for its "listening on" and metrics lines.
    /// The Kafka listener gets port 0 unless the arguments say otherwise
    /// (its default port is fixed; tests run in parallel).
    pub fn spawn(args: &[&str], extra: &[&str]) -> ChildServer {
        let kafka_set = args
            .iter()
            .chain(extra)
            .any(|a| *a == "--no-kafka" || *a == "--kafka-listen");
        let kafka_default: &[&str] = if kafka_set {
            &[]
        } else {
            &["--kafka-listen", "127.0.0.1:0"]
        };
        let data_dir = args
            .iter()
            .position(|a| *a == "--data-dir")
            .map(|i| PathBuf::from(args[i + 1]))
            .unwrap_or_default();
        let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(args)
            .args(extra)
            .args(kafka_default)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            let mut addr = None;
            let mut kafka = None;
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = addr_after(&line, "listening on ") {
                    addr = Some(a);
                }
                if let Some(a) = addr_after(&line, "Kafka clients on ") {
                    kafka = Some(a);
                }
                // The metrics line follows the listening line.
                let metrics = if line.contains("metrics endpoint off") {
                    Some(None)
                } else {
                    addr_after(&line, "metrics on http://").map(Some)
                };
                if let (Some(addr), Some(metrics)) = (addr, metrics) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((addr, metrics, kafka));
                    }
                }
                log_writer.lock().unwrap().push(line);
            }
        });
        let (addr, metrics_addr, kafka_addr) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("eddy serve did not start listening");
        ChildServer {
            child,
            addr,
            metrics_addr,
            kafka_addr,
            data_dir,
            log,
        }
    }

    /// Sends `signal` (e.g. "HUP", "TERM") to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn options(&self) -> ClientOptions {
        ClientOptions::tls(
            self.addr.to_string(),
            self.data_dir.join("tls").join("ca.pem"),
        )
    }

    /// SIGKILL.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub mod pki;

/// Every record of every partition of `topic`, by partition then offset
/// (read with eddy's own client).
pub fn stored_records(
    options: &eddy::client::ClientOptions,
    topic: &str,
) -> Vec<eddy::client::ConsumedRecord> {
    smol::block_on(async {
        let client = Client::connect(options).await.unwrap();
        let partitions = client.describe_topic(topic).await.unwrap().partitions;
        let mut out = Vec::new();
        for partition in 0..partitions {
            let mut offset = 0;
            loop {
                let body = client
                    .fetch(
                        topic,
                        &[eddy::wire::FetchPartition { partition, offset }],
                        1 << 20,
                        0,
                    )
                    .await
                    .unwrap();
                let eddy::wire::Response::Fetched(f) = body.decode().unwrap() else {
                    panic!("not a fetch answer")
                };
                let (records, next) =
                    eddy::client::records_from(f.partitions[0].batches, partition, offset).unwrap();
                out.extend(records);
                match next {
                    Some(next) if next > offset => offset = next,
                    _ => break,
                }
            }
        }
        out
    })
}
