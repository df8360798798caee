//! The `eddy` binary as a process: kill -9 mid-ingest, SIGTERM, and the CLI.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{values, ChildServer};
use eddy::client::{records_from, Client};
use eddy::wire::{Acks, FetchPartition, Response};

/// Every record of a partition, as (offset, value).
async fn read_partition(client: &Client, topic: &str, partition: u32) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let body = client
            .fetch(topic, &[FetchPartition { partition, offset }], 1 << 20, 0)
            .await
            .unwrap();
        let Response::Fetched(f) = body.decode().unwrap() else {
            panic!()
        };
        assert_eq!(f.partitions[0].error, None);
        let (records, next) = records_from(f.partitions[0].batches, partition, offset).unwrap();
        out.extend(records.into_iter().map(|r| (r.offset, r.value)));
        match next {
            Some(next) if next > offset => offset = next,
            _ => return out,
        }
    }
}

/// An acknowledged batch: where it landed and what it held.
type Acked = Arc<Mutex<Vec<(u32, u64, Vec<Vec<u8>>)>>>;

#[test]
fn kill_9_mid_ingest_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    const PARTITIONS: u32 = 4;
    for cycle in 0..3 {
        let server = ChildServer::start(dir.path(), &[]);
        if cycle == 0 {
            // Before any producer, or one of them auto-creates the topic
            // with a single partition.
            let options = server.options();
            smol::block_on(async {
                let client = Client::connect(&options).await.unwrap();
                client.create_topic("crash", PARTITIONS).await.unwrap();
            });
        }
        let acked: Acked = Arc::new(Mutex::new(Vec::new()));
        let (enough_tx, enough_rx) = std::sync::mpsc::channel::<()>();
        let producers: Vec<_> = (0..PARTITIONS)
            .map(|p| {
                let options = server.options();
                let acked = acked.clone();
                let enough_tx = enough_tx.clone();
                std::thread::spawn(move || {
                    smol::block_on(async {
                        let client = Client::connect(&options).await.unwrap();
                        for seq in 0u64.. {
                            let batch: Vec<Vec<u8>> = (0..20)
                                .map(|i| format!("c{cycle}-p{p}-s{seq}-r{i}").into_bytes())
                                .collect();
                            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                            match client
                                .produce("crash", Some(p), Acks::Durable, 10_000, &values(&refs))
                                .await
                            {
                                Ok(acks) => {
                                    let mut all = acked.lock().unwrap();
                                    all.push((p, acks[0].base_offset, batch));
                                    if all.len() == 200 {
                                        let _ = enough_tx.send(());
                                    }
                                }
                                // The server was killed: stop.
                                Err(_) => return,
                            }
                        }
                    })
                })
            })
            .collect();
        drop(enough_tx);
        // Kill while all four producers are still writing.
        enough_rx
            .recv()
            .expect("producers acknowledged 200 batches");
        server.kill9();
        for producer in producers {
            producer.join().unwrap();
        }

        let restarted = ChildServer::start(dir.path(), &[]);
        smol::block_on(async {
            let client = Client::connect(&restarted.options()).await.unwrap();
            let mut logs = BTreeMap::new();
            for p in 0..PARTITIONS {
                let records = read_partition(&client, "crash", p).await;
                for (i, (offset, _)) in records.iter().enumerate() {
                    assert_eq!(
                        *offset, i as u64,
                        "cycle {cycle}: partition {p} offsets are dense"
                    );
                }
                logs.insert(p, records);
            }
            let acked = acked.lock().unwrap().clone();
            assert!(acked.len() >= 200);
            for (p, base, batch) in acked.iter() {
                for (i, value) in batch.iter().enumerate() {
                    let offset = base + i as u64;
                    let stored = logs[p].get(offset as usize).map(|(_, v)| v);
                    assert_eq!(
                        stored,
                        Some(value),
                        "cycle {cycle}: acknowledged record {p}/{offset} survived"
                    );
                }
            }
            // New appends continue right after what survived.
            let end = logs[&0].len() as u64;
            let acks = client
                .produce(
                    "crash",
                    Some(0),
                    Acks::Durable,
                    10_000,
                    &values(&[b"after"]),
                )
                .await
                .unwrap();
            assert_eq!(acks[0].base_offset, end);
        });
        restarted.kill9();
    }
}

#[test]
fn sigterm_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let mut acked = Vec::new();
    smol::block_on(async {
        let client = Client::connect(&server.options()).await.unwrap();
        for i in 0..200u32 {
            // `received`: acknowledged before any fsync; the final flush on
            // SIGTERM must still make every one of them durable.
            let value = format!("v{i}").into_bytes();
            let acks = client
                .produce("term", Some(0), Acks::Received, 10_000, &values(&[&value]))
                .await
                .unwrap();
            acked.push((acks[0].base_offset, value));
        }
    });
    let log = server.log.clone();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("stopped cleanly")));

    let restarted = ChildServer::start(dir.path(), &[]);
    smol::block_on(async {
        let client = Client::connect(&restarted.options()).await.unwrap();
        let stored = read_partition(&client, "term", 0).await;
        assert_eq!(stored.len(), acked.len());
        for ((offset, value), (stored_offset, stored_value)) in acked.iter().zip(&stored) {
            assert_eq!((offset, value), (stored_offset, stored_value));
        }
    });
}

fn eddy(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn cli_produce_consume_and_topics() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &["--no-auto-create"]);
    let addr = server.addr.to_string();
    let ca = dir.path().join("tls").join("ca.pem");
    let conn = ["--server", addr.as_str(), "--ca", ca.to_str().unwrap()];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(conn.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: &[&str], stdin: Option<&str>| {
        let owned = with(args);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        eddy(&refs, stdin)
    };

    // Unknown topic with auto-create off: non-zero exit, a clear message.
    let out = run(&["produce", "--topic", "cli"], Some("x\n"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UnknownTopic") && stderr.contains("eddy topics create cli"),
        "{stderr}"
    );

    let out = run(&["topics", "create", "cli", "--partitions", "3"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let lines: String = (0..500)
        .map(|i| format!("k{}:value {i}\n", i % 7))
        .collect();
    let out = run(
        &[
            "produce",
            "--topic",
            "cli",
            "--key-separator",
            ":",
            "--header",
            "src=cli",
        ],
        Some(&lines),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&["consume", "--topic", "cli", "--format", "json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 500);
    let mut next_per_key: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        assert_eq!(row["topic"], "cli");
        assert_eq!(row["headers"]["src"], "cli");
        let key = row["key"].as_str().unwrap().to_string();
        let value = row["value"].as_str().unwrap();
        let i: usize = value.strip_prefix("value ").unwrap().parse().unwrap();
        assert_eq!(format!("k{}", i % 7), key);
        let next = next_per_key.entry(key).or_insert(0);
        assert!(i >= *next, "per-key order");
        *next = i;
        assert!(
            row["offset"].is_u64() && row["partition"].is_u64() && row["timestamp_ms"].is_i64()
        );
    }

    let out = run(
        &[
            "consume",
            "--topic",
            "cli",
            "--partition",
            "1",
            "--max",
            "3",
        ],
        None,
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);

    let out = run(&["topics", "list"], None);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "cli\t3");
    let out = run(&["topics", "describe", "cli", "--json"], None);
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total: u64 = described["watermarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["log_end"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 500);

    // A wrong CA path is a clear error, not a hang.
    let out = eddy(
        &[
            "topics",
            "list",
            "--server",
            &addr,
            "--ca",
            "/nonexistent/ca.pem",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));

    let out = run(&["topics", "delete", "cli"], None);
    assert!(out.status.success());
    let out = run(&["topics", "list"], None);
    assert!(String::from_utf8(out.stdout).unwrap().trim().is_empty());
}
