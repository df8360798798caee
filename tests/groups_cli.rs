//! The consumer group and topic-setting commands as a user runs them:
//! `eddy consume --group` (`--max`, `--commit-every`, `--format json`,
//! SIGINT, SIGTERM while reconnecting, at-least-once through a `kill -9`
//! of the consumer),
//! `eddy groups reset` in every mode (dry run and `--execute`), and
//! `eddy topics create --config` / `alter --delete-config` across a
//! restart of the hub.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{batch, wait_until, ChildServer};
use eddy::client::Client;
use eddy::wire::Acks;

/// `(partition, offset, value)` of a printed JSON record.
type Printed = (u32, u64, String);

/// Runs `eddy ARGS --server … --ca …` against `server` to completion.
fn eddy(server: &ChildServer, args: &[&str]) -> Output {
    eddy_command(server, args).output().unwrap()
}

fn eddy_command(server: &ChildServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
    command
        .args(args)
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--ca")
        .arg(server.data_dir.join("tls").join("ca.pem"));
    command
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Produces `n` records of `value_bytes` to each of `partitions`
/// partitions, value `p{p}-{i}` padded, in batches of 100.
fn fill(client: &Client, topic: &str, partitions: u32, n: u64, value_bytes: usize) {
    for p in 0..partitions {
        let mut i = 0;
        while i < n {
            let values: Vec<String> = (i..(i + 100).min(n))
                .map(|i| {
                    let v = format!("p{p}-{i}-");
                    format!("{v}{}", "x".repeat(value_bytes.saturating_sub(v.len())))
                })
                .collect();
            let records: Vec<(Option<&[u8]>, &[u8])> =
                values.iter().map(|v| (None, v.as_bytes())).collect();
            smol::block_on(client.produce(
                topic,
                Some(p),
                Acks::Durable,
                30_000,
                &batch(&records, eddy::time::now_ms_i64()),
            ))
            .unwrap();
            i += values.len() as u64;
        }
    }
}

/// A printed JSON line as (partition, offset, value); checks the fields a
/// JSON consumer relies on.
fn parse_json(line: &str, topic: &str) -> Printed {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["topic"], topic, "{line}");
    assert!(v["timestamp_ms"].is_i64(), "{line}");
    assert!(v["key"].is_null(), "{line}");
    (
        u32::try_from(v["partition"].as_u64().unwrap()).unwrap(),
        v["offset"].as_u64().unwrap(),
        v["value"].as_str().unwrap().to_string(),
    )
}

/// Committed offsets of a group by partition (topic `t`).
fn committed(client: &Client, group: &str) -> BTreeMap<u32, u64> {
    smol::block_on(client.fetch_offsets(group, &["t"]))
        .unwrap()
        .into_iter()
        .map(|(_, p, o)| (p, o))
        .collect()
}

fn members(client: &Client, group: &str) -> usize {
    smol::block_on(client.describe_group(group)).map_or(0, |g| g.members.len())
}

/// A spawned `eddy consume --group` whose stdout lines arrive on a channel
/// (read on a thread, so the test can wait with a deadline).
struct Consumer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Consumer {
    fn spawn(server: &ChildServer, args: &[&str]) -> Consumer {
        Consumer::from_command(eddy_command(server, args))
    }

    /// `command` with its stdout piped to the line channel (stderr as the
    /// command says).
    fn from_command(mut command: Command) -> Consumer {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || forward_lines(stdout, tx));
        Consumer { child, lines }
    }

    /// The next line, within a generous bound.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the consumer printed nothing more")
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends every complete line (ending in a newline) of `stdout`; a last
/// line cut short by a kill is not a printed record.
fn forward_lines(stdout: ChildStdout, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.last() != Some(&b'\n') => return,
            Ok(_) => {
                line.pop();
                if tx.send(String::from_utf8(line).unwrap()).is_err() {
                    return;
                }
            }
        }
    }
}

fn start(partitions: u32, n: u64, value_bytes: usize) -> (tempfile::TempDir, ChildServer, Client) {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let client = smol::block_on(Client::connect(&server.options())).unwrap();
    smol::block_on(client.create_topic("t", partitions)).unwrap();
    fill(&client, "t", partitions, n, value_bytes);
    (dir, server, client)
}

/// `--max N` prints exactly N records, commits exactly those (the offsets
/// after the last printed record of each partition), leaves the group, and
/// the next run continues right after them; `--format json` in group mode.
#[test]
fn consume_group_max_prints_and_commits_exactly_n() {
    let (_dir, server, client) = start(2, 50, 20);
    let run = |max: &str| -> Vec<Printed> {
        let out = eddy(
            &server,
            &[
                "consume",
                "--group",
                "g",
                "--topic",
                "t",
                "--from-beginning",
                "--max",
                max,
                "--format",
                "json",
            ],
        );
        succeeded(&out)
            .lines()
            .map(|l| parse_json(l, "t"))
            .collect()
    };
    let first = run("30");
    assert_eq!(first.len(), 30, "exactly --max records");
    assert_eq!(members(&client, "g"), 0, "left the group");
    let after_first = committed(&client, "g");
    for p in 0..2u32 {
        let printed: BTreeSet<u64> = first.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
        let c = after_first.get(&p).copied().unwrap_or(0);
        assert_eq!(
            printed,
            (0..c).collect::<BTreeSet<u64>>(),
            "partition {p}: committed {c} = exactly what was printed"
        );
    }
    for (p, offset, value) in &first {
        assert!(value.starts_with(&format!("p{p}-{offset}-")), "{value}");
    }
    let second = run("70");
    assert_eq!(second.len(), 70);
    for p in 0..2u32 {
        let c = after_first.get(&p).copied().unwrap_or(0);
        let printed: BTreeSet<u64> = second.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
        assert_eq!(
            printed,
            (c..50).collect::<BTreeSet<u64>>(),
            "partition {p}: the second run continues at {c}"
        );
    }
    assert_eq!(committed(&client, "g"), BTreeMap::from([(0, 50), (1, 50)]));
}

/// `--commit-every N`: while data keeps coming no commit happens before N
/// records were printed (the output pipe bounds how far ahead of the
/// reader the consumer can be), then the rest is committed once it is
/// idle; SIGINT leaves the group at once (a 60 s session could not have
/// expired) and exits 0.
#[test]
fn consume_group_commit_every_and_sigint() {
    // ~1 KB records: a 1 MB fetch is ~1000 of them; the pipe holds ~64.
    let (_dir, server, client) = start(1, 3_000, 1_000);
    let consumer = Consumer::spawn(
        &server,
        &[
            "consume",
            "--group",
            "g",
            "--topic",
            "t",
            "--from-beginning",
            "--commit-every",
            "2500",
            "--session-timeout-ms",
            "60000",
        ],
    );
    for _ in 0..2_000 {
        consumer.line();
    }
    assert_eq!(members(&client, "g"), 1);
    assert!(
        committed(&client, "g").is_empty(),
        "committed before 2500 records were printed"
    );
    for _ in 2_000..3_000 {
        consumer.line();
    }
    wait_until(
        Duration::from_secs(30),
        "the rest committed when idle",
        || committed(&client, "g") == BTreeMap::from([(0, 3_000)]),
    );
    consumer.signal("INT");
    let mut consumer = consumer;
    assert!(
        consumer.child.wait().unwrap().success(),
        "exits 0 on SIGINT"
    );
    assert_eq!(members(&client, "g"), 0, "left the group at once");
}

/// A member whose hub went away obeys SIGTERM while it is reconnecting
/// (between attempts and during one): it exits 0 within the backoff pause
/// at most, saying that the uncommitted records will be delivered again,
/// instead of retrying until its attempts run out.
#[test]
fn consume_group_sigterm_while_reconnecting_exits() {
    let (_dir, server, _client) = start(1, 10, 10);
    let mut command = eddy_command(
        &server,
        &[
            "consume",
            "--group",
            "g",
            "--topic",
            "t",
            "--from-beginning",
        ],
    );
    command.stderr(Stdio::piped());
    let mut consumer = Consumer::from_command(command);
    let stderr = consumer.child.stderr.take().unwrap();
    let (err_tx, err_lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if err_tx.send(line).is_err() {
                return;
            }
        }
    });
    for _ in 0..10 {
        consumer.line();
    }
    server.kill9();
    // Reconnecting: the loss was seen and at least one attempt failed.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("reconnecting:")) {
        seen.push(
            err_lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no reconnect attempt reported: {seen:?}")),
        );
    }
    consumer.signal("TERM");
    // Within one backoff pause (at most 5 s) plus a wide margin; before the
    // fix it retried for its 60 attempts (minutes).
    let mut exit = None;
    wait_until(
        Duration::from_secs(20),
        "the consumer exits on SIGTERM",
        || {
            exit = consumer.child.try_wait().unwrap();
            exit.is_some()
        },
    );
    assert!(exit.unwrap().success(), "exit 0 on SIGTERM");
    let rest: Vec<String> = err_lines.iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("stopped while reconnecting")),
        "says what happens to uncommitted records: {rest:?}"
    );
}

/// At-least-once: the consumer is killed with -9 while it prints (it
/// blocks on a full pipe). Its commits never cover a record it did not
/// print; a new run re-delivers exactly the uncommitted tail of each
/// partition and then everything after it, never skipping an offset.
#[test]
fn consume_group_kill_9_redelivers_only_the_uncommitted_tail() {
    let (_dir, server, client) = start(2, 1_000, 1_000);
    let args = [
        "consume",
        "--group",
        "g",
        "--topic",
        "t",
        "--from-beginning",
        "--format",
        "json",
        "--session-timeout-ms",
        "1000",
    ];
    let mut first = Consumer::spawn(&server, &args);
    let mut printed: Vec<Printed> = (0..1_500).map(|_| parse_json(&first.line(), "t")).collect();
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // What it printed before it died (the reader stops at EOF).
    printed.extend(first.lines.iter().map(|l| parse_json(&l, "t")));
    let c = committed(&client, "g");
    assert!(
        !c.is_empty(),
        "a chunk of ≤1000 records was committed before the next printed"
    );
    let mut first_end: BTreeMap<u32, u64> = BTreeMap::new();
    for (p, offset, _) in &printed {
        let e = first_end.entry(*p).or_default();
        *e = (*e).max(offset + 1);
    }
    for (p, offset) in &c {
        assert!(
            *offset <= first_end.get(p).copied().unwrap_or(0),
            "partition {p}: committed {offset} beyond what was printed ({first_end:?})"
        );
    }
    // The killed member's session (1 s) expires; a new run takes over.
    let second = Consumer::spawn(&server, &args);
    let mut again: Vec<Printed> = Vec::new();
    let total_left: u64 = (0..2u32)
        .map(|p| 1_000 - c.get(&p).copied().unwrap_or(0))
        .sum();
    while (again.len() as u64) < total_left {
        again.push(parse_json(&second.line(), "t"));
    }
    second.signal("TERM");
    for p in 0..2u32 {
        let from = c.get(&p).copied().unwrap_or(0);
        let offsets: Vec<u64> = again.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
        assert_eq!(
            offsets,
            (from..1_000).collect::<Vec<u64>>(),
            "partition {p}: resumes at the commit, in order, nothing skipped or repeated"
        );
        let redelivered = offsets
            .iter()
            .filter(|o| **o < first_end.get(&p).copied().unwrap_or(0))
            .count() as u64;
        assert_eq!(
            redelivered,
            first_end.get(&p).copied().unwrap_or(0).saturating_sub(from),
            "partition {p}: exactly the uncommitted tail again"
        );
    }
    let mut all: BTreeSet<(u32, u64)> = printed.iter().map(|r| (r.0, r.1)).collect();
    all.extend(again.iter().map(|r| (r.0, r.1)));
    assert_eq!(all.len(), 2_000, "every record printed at least once");
}

/// A reset to check: mode flags, scope flags, new offset per partition.
type ResetCase<'a> = (&'a [&'a str], &'a [&'a str], &'a [(u32, u64)]);

/// The plan lines of `groups reset` (topic, partition, committed, new).
fn plan(stdout: &str) -> Vec<(u32, Option<u64>, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0] == "t").then(|| {
                (
                    f[1].parse().unwrap(),
                    f[2].parse().ok(),
                    f[3].parse().unwrap(),
                )
            })
        })
        .collect()
}

/// `eddy groups reset` in every mode: `--to-latest`, `--to-offset N`
/// (clamped to what is stored), `--to-timestamp MS` (per partition, for a
/// subset of partitions and for all topics, past the end), each first as a
/// dry run that changes nothing, then with `--execute`; refused while the
/// group has a member.
#[test]
fn groups_reset_modes_dry_run_and_execute() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let client = smol::block_on(Client::connect(&server.options())).unwrap();
    smol::block_on(client.create_topic("t", 2)).unwrap();
    // p0: ts 1000 (0..10), 2000 (10..20), 3000 (20..30); p1: ts 1000
    // (0..5), 5000 (5..10).
    for (p, n, ts) in [
        (0, 10, 1_000),
        (0, 10, 2_000),
        (0, 10, 3_000),
        (1, 5, 1_000),
        (1, 5, 5_000),
    ] {
        let records: Vec<(Option<&[u8]>, &[u8])> = vec![(None, b"v"); n];
        smol::block_on(client.produce("t", Some(p), Acks::Durable, 30_000, &batch(&records, ts)))
            .unwrap();
    }
    smol::block_on(client.commit_offsets("g", "", -1, &[("t".into(), 0, 5), ("t".into(), 1, 2)]))
        .unwrap();
    let reset = |mode: &[&str], scope: &[&str], execute: bool| -> Vec<(u32, Option<u64>, u64)> {
        let mut args = vec!["groups", "reset", "g"];
        args.extend(scope);
        args.extend(mode);
        if execute {
            args.push("--execute");
        }
        let before = committed(&client, "g");
        let out = succeeded(&eddy(&server, &args));
        if execute {
            assert!(!out.contains("dry run"), "{out}");
        } else {
            assert!(out.contains("dry run"), "{out}");
            assert_eq!(
                committed(&client, "g"),
                before,
                "{args:?}: a dry run changes nothing"
            );
        }
        plan(&out)
    };
    let all = ["--topic", "t"];
    let cases: [ResetCase; 6] = [
        (&["--to-latest"], &all, &[(0, 30), (1, 10)]),
        (&["--to-offset", "12"], &all, &[(0, 12), (1, 10)]),
        (&["--to-timestamp", "2000"], &["--topic", "t:1"], &[(1, 5)]),
        (
            &["--to-timestamp", "2500"],
            &["--all-topics"],
            &[(0, 20), (1, 5)],
        ),
        (&["--to-timestamp", "0"], &all, &[(0, 0), (1, 0)]),
        (&["--to-timestamp", "9999"], &all, &[(0, 30), (1, 10)]),
    ];
    for (mode, scope, want) in cases {
        let before = committed(&client, "g");
        let dry = reset(mode, scope, false);
        let expected: Vec<(u32, Option<u64>, u64)> = want
            .iter()
            .map(|&(p, o)| (p, before.get(&p).copied(), o))
            .collect();
        assert_eq!(dry, expected, "{mode:?} {scope:?}: the plan");
        assert_eq!(reset(mode, scope, true), expected, "{mode:?} {scope:?}");
        let mut now = before.clone();
        now.extend(want.iter().copied());
        assert_eq!(committed(&client, "g"), now, "{mode:?} {scope:?}: executed");
    }
    // Not while the group has a member.
    let _member = smol::block_on(eddy::client::GroupConsumer::join(
        smol::block_on(Client::connect(&server.options())).unwrap(),
        eddy::client::GroupConsumerOptions::new("g", &["t"]),
    ))
    .unwrap();
    let refused = eddy(
        &server,
        &[
            "groups",
            "reset",
            "g",
            "--topic",
            "t",
            "--to-latest",
            "--execute",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("active member"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `topics create --config` and `topics alter --config/--delete-config`
/// from the CLI, shown by describe, and still in force after the hub is
/// killed with -9 and restarted; bad settings are refused with the setting
/// named.
#[test]
fn topic_settings_from_the_cli_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    succeeded(&eddy(
        &server,
        &[
            "topics",
            "create",
            "x",
            "--partitions",
            "2",
            "--config",
            "retention.ms=60000",
            "--config",
            "priority=3",
        ],
    ));
    let describe = |server: &ChildServer| succeeded(&eddy(server, &["topics", "describe", "x"]));
    let text = describe(&server);
    assert!(text.contains("retention.ms = 60000\n"), "{text}");
    assert!(text.contains("priority = 3\n"), "{text}");
    assert!(text.contains("cleanup.policy = delete (default)"), "{text}");
    let bad = eddy(
        &server,
        &["topics", "create", "y", "--config", "priority=300"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("priority"));
    succeeded(&eddy(
        &server,
        &[
            "topics",
            "alter",
            "x",
            "--config",
            "cleanup.policy=compact",
            "--delete-config",
            "retention.ms",
        ],
    ));
    let altered = describe(&server);
    assert!(altered.contains("cleanup.policy = compact\n"), "{altered}");
    assert!(altered.contains("retention.ms = -1 (default)"), "{altered}");
    assert!(altered.contains("priority = 3\n"), "{altered}");
    server.kill9();
    let server = ChildServer::start(dir.path(), &[]);
    assert_eq!(describe(&server), altered, "the same after kill -9");
    // And the JSON form agrees.
    let json: serde_json::Value = serde_json::from_str(&succeeded(&eddy(
        &server,
        &["topics", "describe", "x", "--json"],
    )))
    .unwrap();
    let configs = &json["configs"];
    assert_eq!(configs["cleanup.policy"], "compact", "{json}");
    assert_eq!(configs["retention.ms"], "-1", "{json}");
    assert_eq!(configs["priority"], "3", "{json}");
}
