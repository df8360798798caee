//! The pull a datacenter does (MirrorMaker 2's source consumer): a
//! confluent-kafka consumer with `assign()` + `seek()` to the beginning and
//! no group reads every topic while devices keep producing over the native
//! protocol, and the hub is killed with SIGKILL and restarted in between.
//! Every acknowledged (durable) record arrives exactly once, in offset
//! order per partition, with no gap.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_until, ChildServer};

/// Assigns every partition of every topic from the beginning (no group,
/// no commits) and prints `topic partition offset value` until its stdin
/// closes.
const PULL: &str = r#"
import sys, threading
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
stop = threading.Event()
def wait_stdin():
    sys.stdin.read()
    stop.set()
threading.Thread(target=wait_stdin, daemon=True).start()
c = Consumer({'bootstrap.servers': sys.argv[1], 'group.id': 'unused', 'enable.auto.commit': False,
              'reconnect.backoff.max.ms': 200})
topics = c.list_topics(timeout=10).topics
parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in sorted(topics) for p in topics[t].partitions]
c.assign(parts)
for tp in parts:
    c.seek(tp)
print('assigned', len(parts), flush=True)
while not stop.is_set():
    m = c.poll(0.2)
    if m is None or m.error(): continue
    print(m.topic(), m.partition(), m.offset(), m.value().decode(), flush=True)
c.close()
"#;

/// Produces `values` natively (key = value) with acks=durable; whether
/// they were acknowledged.
fn produce(addr: &str, ca: &Path, topic: &str, values: &[String]) -> bool {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "produce",
            "--topic",
            topic,
            "--key-separator",
            "=",
            "--acks",
        ])
        .args(["durable", "--timeout-ms", "5000", "--server", addr, "--ca"])
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: String = values.iter().map(|v| format!("{v}={v}\n")).collect();
    let _ = child.stdin.take().unwrap().write_all(lines.as_bytes());
    child.wait().unwrap().success()
}

/// Devices: produce rounds of 50 records to each topic until `stop`;
/// counts acknowledged values and failed rounds.
struct Devices {
    acked: Arc<Mutex<BTreeSet<String>>>,
    failures: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Devices {
    fn start(addr: String, ca: PathBuf) -> Devices {
        let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let failures = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, f, s) = (acked.clone(), failures.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut attempt = 0u64;
            while !s.load(Ordering::SeqCst) {
                for topic in ["dc.a", "dc.b"] {
                    attempt += 1;
                    let values: Vec<String> =
                        (0..50).map(|i| format!("{topic}-{attempt}-{i}")).collect();
                    if produce(&addr, &ca, topic, &values) {
                        a.lock().unwrap().extend(values);
                    } else {
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        Devices {
            acked,
            failures,
            stop,
            thread,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

#[test]
fn an_assign_and_seek_consumer_reads_every_durable_record_once_across_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ChildServer::start(&data, &[]);
    let (addr, kafka) = (
        server.addr.to_string(),
        server.kafka_addr.unwrap().to_string(),
    );
    let ca = data.join("tls").join("ca.pem");
    for (topic, partitions) in [("dc.a", "2"), ("dc.b", "1")] {
        let status = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["topics", "create", topic, "--partitions", partitions])
            .args(["--server", &addr, "--ca", ca.to_str().unwrap()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut consumer = Command::new("python3")
        .args(["-c", PULL, &kafka])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with confluent-kafka (.ci/run installs it)");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = seen.clone();
    let out = consumer.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    wait_until(Duration::from_secs(30), "the consumer assigned", || {
        seen.lock().unwrap().iter().any(|l| l == "assigned 3")
    });

    // Devices keep producing; the hub is killed, and restarted on the same
    // ports once a device has seen it gone.
    let devices = Devices::start(addr.clone(), ca.clone());
    wait_until(Duration::from_secs(60), "300 records acknowledged", || {
        devices.acked() >= 300
    });
    server.kill9();
    wait_until(Duration::from_secs(60), "a device saw the hub gone", || {
        devices.failures.load(Ordering::SeqCst) > 0
    });
    let before = devices.acked();
    let data_arg = data.to_str().unwrap();
    let _server = ChildServer::spawn(
        &[
            "serve",
            "--listen",
            &addr,
            "--data-dir",
            data_arg,
            "--kafka-listen",
            &kafka,
            "--metrics-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    wait_until(Duration::from_secs(60), "300 more acknowledged", || {
        devices.acked() >= before + 300
    });
    devices.stop.store(true, Ordering::SeqCst);
    devices.thread.join().unwrap();
    let acked = devices.acked.lock().unwrap().clone();

    let values_seen = || -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.split(' ').nth(3).map(str::to_string))
            .collect()
    };
    wait_until(
        Duration::from_secs(60),
        "every acknowledged record read",
        || {
            let got: BTreeSet<String> = values_seen().into_iter().collect();
            acked.is_subset(&got)
        },
    );
    drop(consumer.stdin.take());
    assert!(consumer.wait().unwrap().success());
    reader.join().unwrap();

    // Exactly once, in order, no gap: each partition's offsets are 0, 1, 2, …
    let lines = seen.lock().unwrap().clone();
    let mut next: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut count: BTreeMap<String, u32> = BTreeMap::new();
    for line in lines.iter().filter(|l| !l.starts_with("assigned")) {
        let words: Vec<&str> = line.split(' ').collect();
        let key = (words[0].to_string(), words[1].parse().unwrap());
        let offset: u64 = words[2].parse().unwrap();
        let expected = next.entry(key.clone()).or_default();
        assert_eq!(offset, *expected, "{key:?}: {line}");
        *expected += 1;
        *count.entry(words[3].to_string()).or_default() += 1;
    }
    for value in &acked {
        assert_eq!(count.get(value), Some(&1), "{value}");
    }
    assert_eq!(next.len(), 3, "every partition was read: {next:?}");
}
