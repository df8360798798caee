//! Kafka consumer groups (the classic protocol, client-side assignment)
//! against real clients run as processes: confluent-kafka consumers (one
//! killed with SIGKILL mid-run) and `kcat -G`. Committed offsets are eddy's:
//! `eddy groups describe` shows them and their lag.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kafka_clients::{eddy, kafka, kcat};
use common::{wait_until, TestServer};

/// A group member: polls, prints each record (`rec P O V`) and then
/// commits it synchronously; prints its assignments. Stops (closing the
/// consumer, which leaves the group) when its stdin closes.
const MEMBER: &str = r#"
import sys, threading
from confluent_kafka import Consumer
b, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]
stop = threading.Event()
def wait_stdin():
    sys.stdin.read()
    stop.set()
threading.Thread(target=wait_stdin, daemon=True).start()
def assigned(c, parts):
    print('assigned', ' '.join(str(p.partition) for p in parts), flush=True)
c = Consumer({'bootstrap.servers': b, 'group.id': group, 'enable.auto.commit': False,
              'auto.offset.reset': 'earliest', 'session.timeout.ms': 6000,
              'heartbeat.interval.ms': 500, 'partition.assignment.strategy': 'range'})
c.subscribe([topic], on_assign=assigned)
while not stop.is_set():
    m = c.poll(0.2)
    if m is None: continue
    if m.error():
        print('error', m.error(), flush=True)
        continue
    print('rec', m.partition(), m.offset(), m.value().decode(), flush=True)
    c.commit(message=m, asynchronous=False)
c.close()
print('closed', flush=True)
"#;

struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(server: &TestServer, group: &str, topic: &str) -> Member {
        let broker = kafka(server).to_string();
        let mut child = Command::new("python3")
            .args(["-c", MEMBER, &broker, group, topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with confluent-kafka (.ci/run installs it)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Member { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// (partition, offset) of every record it printed.
    fn records(&self) -> Vec<(u32, u64)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let mut words = l.strip_prefix("rec ")?.split(' ');
                Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
            })
            .collect()
    }

    /// Its latest assignment.
    fn assignment(&self) -> Option<BTreeSet<u32>> {
        self.lines().iter().rev().find_map(|l| {
            let rest = l.strip_prefix("assigned")?;
            Some(
                rest.split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect(),
            )
        })
    }

    /// Closes its stdin and waits for it to leave the group.
    fn stop(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "member failed: {:?}", self.lines());
        let lines = self.lines();
        assert_eq!(lines.last().map(String::as_str), Some("closed"));
        lines
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn produce(server: &TestServer, topic: &str, from: u32, to: u32) {
    let lines: String = (from..to).map(|i| format!("k{i}=v{i}\n")).collect();
    eddy(
        server,
        &["produce", "--topic", topic, "--key-separator", "="],
        &lines,
    );
}

fn describe(server: &TestServer, group: &str) -> serde_json::Value {
    let out = eddy(server, &["groups", "describe", group, "--json"], "");
    serde_json::from_str(&out).unwrap()
}

/// Every (partition, offset) stored in `topic`.
fn stored(server: &TestServer, topic: &str) -> BTreeSet<(u32, u64)> {
    common::stored_records(&server.options(), topic)
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect()
}

#[test]
fn a_group_of_three_loses_a_member_and_its_partitions_move_with_nothing_lost() {
    let server = TestServer::start();
    eddy(&server, &["topics", "create", "g", "--partitions", "6"], "");
    produce(&server, "g", 0, 300);
    let members: Vec<Member> = (0..3)
        .map(|_| Member::start(&server, "three", "g"))
        .collect();
    let all = |members: &[Member]| -> BTreeSet<u32> {
        members
            .iter()
            .filter_map(Member::assignment)
            .flatten()
            .collect()
    };
    wait_until(
        Duration::from_secs(60),
        "three members with two partitions each",
        || {
            members
                .iter()
                .all(|m| m.assignment().is_some_and(|a| a.len() == 2))
                && all(&members).len() == 6
        },
    );
    let first: BTreeSet<(u32, u64)> = stored(&server, "g");
    assert_eq!(first.len(), 300);
    wait_until(
        Duration::from_secs(60),
        "the first 300 records consumed",
        || {
            let seen: BTreeSet<_> = members.iter().flat_map(Member::records).collect();
            seen == first
        },
    );

    // SIGKILL one member: no LeaveGroup; its session (6 s) expires and its
    // partitions move to the two others.
    let mut members = members;
    let killed = members.remove(0);
    let killed_records = killed.records();
    drop(killed);
    produce(&server, "g", 300, 600);
    let everything = stored(&server, "g");
    assert_eq!(everything.len(), 600);
    wait_until(
        Duration::from_secs(60),
        "the survivors own all six partitions",
        || all(&members).len() == 6 && members.iter().all(|m| m.assignment().unwrap().len() == 3),
    );
    wait_until(Duration::from_secs(60), "all 600 records consumed", || {
        let seen: BTreeSet<_> = members
            .iter()
            .flat_map(Member::records)
            .chain(killed_records.iter().copied())
            .collect();
        seen == everything
    });
    // The survivors never read a record twice (commits were synchronous),
    // and nothing another survivor read.
    let mut counts: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    for m in &members {
        for r in m.records() {
            *counts.entry(r).or_default() += 1;
        }
    }
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");

    // While members are in it, the group is described with its owners.
    let described = describe(&server, "three");
    assert_eq!(
        described["members"].as_array().unwrap().len(),
        2,
        "{described}"
    );
    for p in described["partitions"].as_array().unwrap() {
        assert!(p["owner"].is_string(), "{described}");
    }
    for m in members {
        m.stop();
    }
    // Committed offsets are eddy's: every partition at its end, lag 0.
    let described = describe(&server, "three");
    assert_eq!(described["state"], "Empty", "{described}");
    let partitions = described["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 6, "{described}");
    for p in partitions {
        assert_eq!(p["committed"], p["high_watermark"], "{described}");
        assert_eq!(p["lag"], 0, "{described}");
    }
}

#[test]
fn kcat_balanced_consumer_commits_into_eddys_group_store_and_reset_moves_it() {
    let server = TestServer::start();
    produce(&server, "kg", 0, 10);
    let read = kcat(
        &server,
        &[
            "-G",
            "kgroup",
            "-X",
            "auto.offset.reset=earliest",
            "-e",
            "-f",
            "%o %s\\n",
            "kg",
        ],
        "",
    );
    let values: Vec<&str> = read.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected, "{read}");
    let described = describe(&server, "kgroup");
    assert_eq!(described["partitions"][0]["committed"], 10, "{described}");
    assert_eq!(described["partitions"][0]["lag"], 0, "{described}");

    // `eddy groups reset` moves a Kafka group; kcat then reads again.
    eddy(
        &server,
        &[
            "groups",
            "reset",
            "kgroup",
            "--topic",
            "kg",
            "--to-offset",
            "7",
            "--execute",
        ],
        "",
    );
    let read = kcat(&server, &["-G", "kgroup", "-e", "-f", "%o %s\\n", "kg"], "");
    assert_eq!(read, "7 v7\n8 v8\n9 v9\n");
}
