//! The `eddy` binary as a process: kill -9 mid-ingest, SIGTERM, and the CLI.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{values, ChildServer, RawConn};
use eddy::client::{records_from, Client};
use eddy::wire::{self, Acks, FetchPartition, Request, Response};

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

/// A durable produce of `value` to partition 0 of `topic`, as one frame.
fn produce_frame(correlation_id: u32, topic: &str, value: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    wire::encode_request(
        &wire::RequestFrame {
            correlation_id,
            request: Request::Produce(wire::Produce {
                topic,
                partition: Some(0),
                acks: Acks::Durable,
                timeout_ms: 30_000,
                batch: &values(&[value]),
            }),
        },
        &mut frame,
    );
    frame
}

/// The correlation id of the pings between produces.
const PING_ID: u32 = u32::MAX;

/// The next answer on `raw`: `None` when the server closed, `Some(None)` for
/// the pong to [`PING_ID`], else a produce's correlation id and base offset
/// (anything else fails the test).
async fn next_produced(raw: &mut RawConn) -> Option<Option<(u32, u64)>> {
    let body = raw.read_frame().await?;
    let frame = wire::decode_response(&body).unwrap();
    match frame.response {
        Response::Pong(_) if frame.correlation_id == PING_ID => Some(None),
        Response::Produced(p) => Some(Some((frame.correlation_id, p.partitions[0].base_offset))),
        other => panic!("a durable produce got {other:?}"),
    }
}

/// SIGTERM while durable produces and a long poll are in flight: the
/// server stops reading, answers every request it has (the produces
/// acknowledged, the long poll with what it has: nothing), closes the
/// connections, exits 0, and every acknowledged record is there after a
/// restart, at its offset, with nothing else.
#[test]
fn sigterm_answers_the_requests_in_flight_then_exits_zero() {
    /// Produces kept unanswered on the connection at every moment.
    const WINDOW: u32 = 32;
    /// Acknowledged in a round before its ping (the producer in full flow).
    const ACKED_PER_ROUND: usize = 100;
    /// Rounds to get produces unanswered at the pong (the first nearly
    /// always has: the pong is answered at once, produces after an fsync).
    const ROUNDS_MAX: usize = 20;
    /// Bound on the whole stop: the drain is at most 10 s.
    const STOP_WAIT_MAX: Duration = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let mut server = ChildServer::start(dir.path(), &[]);
    let ca = dir.path().join("tls").join("ca.pem");
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    smol::block_on(async {
        let client = Client::connect(&server.options()).await.unwrap();
        client.create_topic("drain", 1).await.unwrap();
        client.create_topic("idle", 1).await.unwrap();

        // A long poll of an empty partition (up to 30 s). The ping behind
        // it is answered once the fetch was read and found nothing: it is
        // waiting from then on.
        let mut poll = RawConn::connect(server.addr, &ca).await;
        poll.hello().await;
        let fetch = Request::Fetch(wire::Fetch {
            topic: "idle",
            partitions: vec![FetchPartition {
                partition: 0,
                offset: 0,
            }],
            max_bytes: 1 << 20,
            max_wait_ms: 30_000,
        });
        poll.send(1, fetch).await;
        poll.send(2, Request::Ping(wire::Ping { nonce: 2 })).await;
        let pong = poll.read_frame().await.unwrap();
        assert_eq!(wire::decode_response(&pong).unwrap().correlation_id, 2);

        // Durable produces, WINDOW of them unanswered at any time (a new
        // one is sent for every answer), then a ping: the server reads in
        // order, so once the pong is back it has read every produce before
        // it. Written to the socket is not yet arrived (Nagle, delayed
        // ACKs), and a request that has not arrived at the signal is not
        // in flight: the server stops reading then. If every produce was
        // answered by the time of the pong, another round.
        let mut producer = RawConn::connect(server.addr, &ca).await;
        producer.hello().await;
        let mut unanswered: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut next_id = 1u32;
        let mut in_flight_at_signal = 0;
        for round in 0..ROUNDS_MAX {
            let round_acked = acked.len();
            loop {
                let value = format!("drain-{next_id}").into_bytes();
                producer
                    .send_raw(&produce_frame(next_id, "drain", &value))
                    .await
                    .unwrap();
                unanswered.insert(next_id, value);
                next_id += 1;
                if unanswered.len() < WINDOW as usize {
                    continue;
                }
                if acked.len() >= round_acked + ACKED_PER_ROUND {
                    break;
                }
                let (id, offset) = next_produced(&mut producer).await.unwrap().unwrap();
                acked.push((offset, unanswered.remove(&id).unwrap()));
            }
            producer
                .send(PING_ID, Request::Ping(wire::Ping { nonce: 0 }))
                .await;
            while let Some(answer) = next_produced(&mut producer).await.unwrap() {
                let (id, offset) = answer;
                acked.push((offset, unanswered.remove(&id).unwrap()));
            }
            if !unanswered.is_empty() {
                in_flight_at_signal = unanswered.len();
                eprintln!("round {round}: {in_flight_at_signal} produces unanswered at the signal");
                break;
            }
        }
        assert!(
            in_flight_at_signal > 0,
            "no round had a produce unanswered at its pong"
        );

        // Each of them must be acknowledged, then the connection closed.
        server.signal("TERM");
        let signalled = Instant::now();
        while !unanswered.is_empty() {
            let (id, offset) = next_produced(&mut producer)
                .await
                .unwrap_or_else(|| panic!("closed with {:?} unanswered", unanswered.keys()))
                .expect("a produce answer");
            acked.push((offset, unanswered.remove(&id).unwrap()));
        }
        assert!(
            producer.closed().await,
            "closed once its requests are answered"
        );

        // The long poll is answered at the signal, long before its 30 s.
        let body = poll.read_frame().await.expect("the long poll is answered");
        let frame = wire::decode_response(&body).unwrap();
        assert_eq!(frame.correlation_id, 1);
        let Response::Fetched(f) = frame.response else {
            panic!("not a fetch answer: {:?}", frame.response)
        };
        assert_eq!(f.partitions[0].error, None);
        assert!(f.partitions[0].batches.is_empty());
        assert!(
            signalled.elapsed() < STOP_WAIT_MAX,
            "answered {:?} after the signal",
            signalled.elapsed()
        );
        assert!(poll.closed().await);
    });
    let deadline = Instant::now() + STOP_WAIT_MAX;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "eddy serve did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(server.log_text().contains("stopped cleanly"));
    drop(server);

    let restarted = ChildServer::start(dir.path(), &[]);
    smol::block_on(async {
        let client = Client::connect(&restarted.options()).await.unwrap();
        let stored = read_partition(&client, "drain", 0).await;
        acked.sort();
        assert!(acked.len() > ACKED_PER_ROUND);
        assert_eq!(stored, acked, "every acknowledged record, nothing else");
        for (i, (offset, _)) in stored.iter().enumerate() {
            assert_eq!(*offset, i as u64, "dense offsets");
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
