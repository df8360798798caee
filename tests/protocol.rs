//! The native protocol against a real TLS listener on port 0 with a temp
//! data dir: produce/fetch, partitioning, pipelining, long polls, bad frames,
//! limits and restarts.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{batch, values, wait_until, RawConn, TestServer};
use eddy::client::{records_from, Client, ClientOptions, ConsumedRecord};
use eddy::wire::batch::{BatchBuilder, Headers, NO_TIMESTAMP};
use eddy::wire::partitioner::partition_for_key;
use eddy::wire::{self, Acks, ErrorCode, FetchPartition, Request, Response};

/// Every record of partition `p` from `offset` to the high watermark.
async fn fetch_all(
    client: &Client,
    topic: &str,
    partition: u32,
    mut offset: u64,
) -> Vec<ConsumedRecord> {
    let mut out = Vec::new();
    loop {
        let body = client
            .fetch(topic, &[FetchPartition { partition, offset }], 1 << 20, 0)
            .await
            .unwrap();
        let Response::Fetched(f) = body.decode().unwrap() else {
            panic!("not a fetch answer")
        };
        let part = &f.partitions[0];
        assert_eq!(part.error, None, "partition {partition} offset {offset}");
        let (records, next) = records_from(part.batches, partition, offset).unwrap();
        out.extend(records);
        match next {
            Some(next) if next > offset => offset = next,
            _ => return out,
        }
    }
}

#[test]
fn produce_then_fetch_round_trips_every_field() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        assert_eq!(
            client.server_info().protocol_version,
            wire::PROTOCOL_VERSION
        );
        let headers =
            Headers::encode_vec(&[("content-type", b"application/json"), ("device", b"t-17")]);
        let mut b = BatchBuilder::with_capacity(4096, 1_700_000_000_000).unwrap();
        b.push(
            1_700_000_000_000,
            Some(b"k1"),
            b"{\"t\":21.5}",
            Headers(&headers),
        )
        .unwrap();
        b.push(1_700_000_000_005, None, b"", Headers::EMPTY)
            .unwrap();
        b.push(1_699_999_999_990, Some(b""), &[0xff, 0, 1], Headers::EMPTY)
            .unwrap();
        let acks = client
            .produce("sensors", Some(0), Acks::Durable, 10_000, &b.finish_vec())
            .await
            .unwrap();
        assert_eq!(acks.len(), 1);
        assert_eq!(
            (acks[0].partition, acks[0].base_offset, acks[0].record_count),
            (0, 0, 3)
        );

        let got = fetch_all(&client, "sensors", 0, 0).await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].offset, 0);
        assert_eq!(got[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(got[0].value, b"{\"t\":21.5}");
        assert_eq!(got[0].timestamp_ms, 1_700_000_000_000);
        assert_eq!(
            got[0].headers,
            vec![
                ("content-type".to_string(), b"application/json".to_vec()),
                ("device".to_string(), b"t-17".to_vec())
            ]
        );
        assert_eq!(
            (got[1].offset, got[1].key.as_deref(), got[1].value.len()),
            (1, None, 0)
        );
        assert_eq!(got[1].timestamp_ms, 1_700_000_000_005);
        assert_eq!(
            (got[2].key.as_deref(), got[2].value.as_slice()),
            (Some(&b""[..]), &[0xff, 0, 1][..])
        );
        assert_eq!(got[2].timestamp_ms, 1_699_999_999_990);

        // A fetch from the middle returns the records from there on.
        let tail = fetch_all(&client, "sensors", 0, 2).await;
        assert_eq!(tail.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![2]);

        let marks = client.watermarks("sensors").await.unwrap();
        assert_eq!(
            (marks[0].log_start, marks[0].log_end, marks[0].durable),
            (0, 3, 3)
        );
    });
}

#[test]
fn devices_without_a_clock_get_the_arrival_time() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        let mut b = BatchBuilder::with_capacity(256, NO_TIMESTAMP).unwrap();
        b.push(NO_TIMESTAMP, None, b"reading", Headers::EMPTY)
            .unwrap();
        let before = eddy::time::now_ms_i64();
        client
            .produce("t", None, Acks::Received, 1000, &b.finish_vec())
            .await
            .unwrap();
        let after = eddy::time::now_ms_i64();
        wait_until(Duration::from_secs(10), "durable", || {
            smol::block_on(client.watermarks("t")).unwrap()[0].durable == 1
        });
        let got = fetch_all(&client, "t", 0, 0).await;
        assert!(
            (before..=after).contains(&got[0].timestamp_ms),
            "{} not in {before}..={after}",
            got[0].timestamp_ms
        );
    });
}

#[test]
fn keyed_records_keep_per_key_order_across_eight_partitions() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        client.create_topic("orders", 8).await.unwrap();
        let keys: Vec<String> = (0..50).map(|k| format!("device-{k}")).collect();
        let mut sent_per_key: HashMap<String, u32> = HashMap::new();
        for round in 0..40 {
            let mut records = Vec::new();
            for i in 0..50 {
                let key = &keys[(round * 7 + i * 3) % keys.len()];
                let seq = sent_per_key.entry(key.clone()).or_insert(0);
                records.push((key.clone(), format!("{key}:{seq}")));
                *seq += 1;
            }
            let refs: Vec<(Option<&[u8]>, &[u8])> = records
                .iter()
                .map(|(k, v)| (Some(k.as_bytes()), v.as_bytes()))
                .collect();
            let acks = client
                .produce("orders", None, Acks::Durable, 10_000, &batch(&refs, 5))
                .await
                .unwrap();
            assert_eq!(acks.iter().map(|a| a.record_count).sum::<u32>(), 50);
        }
        let mut seen: BTreeMap<String, (u32, u32)> = BTreeMap::new(); // key → (partition, next seq)
        let mut total = 0;
        for p in 0..8 {
            for r in fetch_all(&client, "orders", p, 0).await {
                let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
                assert_eq!(
                    p,
                    partition_for_key(key.as_bytes(), 8),
                    "{key} is in Kafka's partition"
                );
                let (partition, next) = seen.entry(key.clone()).or_insert((p, 0));
                assert_eq!(*partition, p, "{key} stays in one partition");
                assert_eq!(
                    String::from_utf8(r.value).unwrap(),
                    format!("{key}:{next}"),
                    "{key} in order"
                );
                *next += 1;
                total += 1;
            }
        }
        assert_eq!(total, 2000);
        assert!(
            seen.values()
                .map(|(p, _)| p)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 4
        );
    });
}

#[test]
fn keyless_batches_rotate_over_partitions() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        client.create_topic("rr", 4).await.unwrap();
        let mut partitions = Vec::new();
        for i in 0..8u8 {
            let acks = client
                .produce("rr", None, Acks::Received, 1000, &values(&[&[i], &[i]]))
                .await
                .unwrap();
            assert_eq!(acks.len(), 1, "a keyless batch stays together");
            assert_eq!(acks[0].record_count, 2);
            partitions.push(acks[0].partition);
        }
        let distinct: std::collections::BTreeSet<_> = partitions.iter().collect();
        assert_eq!(
            distinct.len(),
            4,
            "round robin over all partitions: {partitions:?}"
        );
    });
}

/// The round robin is per topic: produced alternately, two topics of two
/// partitions each still spread over both of their partitions, and keyed or
/// explicitly placed batches in between do not move it on.
#[test]
fn keyless_round_robin_is_per_topic() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        client.create_topic("rr-a", 2).await.unwrap();
        client.create_topic("rr-b", 2).await.unwrap();
        let mut seen: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for i in 0..6u8 {
            for topic in ["rr-a", "rr-b"] {
                let acks = client
                    .produce(topic, None, Acks::Received, 1000, &values(&[&[i], &[i]]))
                    .await
                    .unwrap();
                assert_eq!(acks.len(), 1, "a keyless batch stays together");
                seen.entry(topic).or_default().push(acks[0].partition);
                // Neither a keyed nor an explicitly placed batch advances it.
                client
                    .produce(
                        topic,
                        None,
                        Acks::Received,
                        1000,
                        &batch(&[(Some(b"k"), b"v")], 1_000),
                    )
                    .await
                    .unwrap();
                client
                    .produce(topic, Some(1), Acks::Received, 1000, &values(&[b"x"]))
                    .await
                    .unwrap();
            }
        }
        for (topic, partitions) in &seen {
            let first = partitions[0];
            let expected: Vec<u32> = (0..6u32).map(|i| (first + i) % 2).collect();
            assert_eq!(
                partitions, &expected,
                "{topic}: keyless batches alternate over both partitions"
            );
        }
    });
}

#[test]
fn pipelined_requests_are_answered_by_correlation_id_and_appended_in_order() {
    let server = TestServer::start();
    smol::block_on(async {
        let mut raw = RawConn::connect(server.addr(), &server.ca()).await;
        raw.hello().await;
        // 64 produce frames in one write, before reading any answer.
        let mut frames = Vec::new();
        for i in 0..64u32 {
            let value = i.to_be_bytes();
            let encoded = values(&[&value]);
            wire::encode_request(
                &wire::RequestFrame {
                    correlation_id: 1000 + i,
                    request: Request::Produce(wire::Produce {
                        topic: "pipe",
                        partition: Some(0),
                        acks: Acks::Durable,
                        timeout_ms: 10_000,
                        batch: &encoded,
                    }),
                },
                &mut frames,
            );
        }
        raw.send_raw(&frames).await.unwrap();
        let mut offsets = BTreeMap::new();
        for _ in 0..64 {
            let body = raw.read_frame().await.expect("answer");
            let frame = wire::decode_response(&body).unwrap();
            let Response::Produced(p) = frame.response else {
                panic!("{:?}", frame.response)
            };
            offsets.insert(frame.correlation_id, p.partitions[0].base_offset);
        }
        assert_eq!(offsets.len(), 64, "every correlation id answered once");
        for i in 0..64u32 {
            assert_eq!(
                offsets[&(1000 + i)],
                u64::from(i),
                "request {i} appended in send order"
            );
        }
        // The log holds them in that order too.
        let client = server.client().await;
        let got = fetch_all(&client, "pipe", 0, 0).await;
        let order: Vec<u32> = got
            .iter()
            .map(|r| u32::from_be_bytes(r.value[..4].try_into().unwrap()))
            .collect();
        assert_eq!(order, (0..64).collect::<Vec<_>>());
    });
}

#[test]
fn concurrent_calls_on_one_client_are_pipelined() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = Arc::new(server.client().await);
        let tasks: Vec<_> = (0..100u32)
            .map(|i| {
                let client = client.clone();
                smol::spawn(async move {
                    client
                        .produce(
                            "many",
                            Some(0),
                            Acks::Durable,
                            10_000,
                            &values(&[&i.to_be_bytes()]),
                        )
                        .await
                })
            })
            .collect();
        let mut offsets = Vec::new();
        for t in tasks {
            offsets.push(t.await.unwrap()[0].base_offset);
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..100).collect::<Vec<u64>>());
    });
}

#[test]
fn long_poll_wakes_up_when_data_arrives() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = Arc::new(server.client().await);
        client
            .produce("lp", Some(0), Acks::Durable, 10_000, &values(&[b"first"]))
            .await
            .unwrap();
        let fetcher = client.clone();
        let started = Instant::now();
        let pending = smol::spawn(async move {
            fetcher
                .fetch(
                    "lp",
                    &[FetchPartition {
                        partition: 0,
                        offset: 1,
                    }],
                    1 << 20,
                    20_000,
                )
                .await
                .unwrap()
        });
        let stats = &server.running().broker().stats;
        wait_until(Duration::from_secs(10), "fetch is waiting", || {
            stats.fetches_waiting.load(Ordering::Relaxed) == 1
        });
        let producer = server.client().await;
        producer
            .produce("lp", Some(0), Acks::Durable, 10_000, &values(&[b"second"]))
            .await
            .unwrap();
        let body = pending.await;
        let Response::Fetched(f) = body.decode().unwrap() else {
            panic!()
        };
        let (records, _) = records_from(f.partitions[0].batches, 0, 1).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].value, b"second");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "woken by the data, not by the 20 s timeout"
        );

        // Without new data the poll ends at its max wait, empty.
        let started = Instant::now();
        let body = client
            .fetch(
                "lp",
                &[FetchPartition {
                    partition: 0,
                    offset: 2,
                }],
                1 << 20,
                300,
            )
            .await
            .unwrap();
        let Response::Fetched(f) = body.decode().unwrap() else {
            panic!()
        };
        assert!(f.partitions[0].batches.is_empty());
        assert_eq!(f.partitions[0].high_watermark, 2);
        assert!(started.elapsed() >= Duration::from_millis(300));
    });
}

/// Waits (at most `limit`) until `counter` exceeds `floor` by `by`: the
/// well-behaved producer has made progress.
async fn progressed(counter: &AtomicU64, floor: u64, by: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.load(Ordering::Acquire) < floor + by {
        assert!(
            Instant::now() < deadline,
            "the well-behaved producer stalled {what}"
        );
        smol::Timer::after(Duration::from_millis(1)).await;
    }
}

/// The error a server sent before closing (correlation id, code, message),
/// and that it then closed.
async fn error_then_closed(raw: &mut RawConn) -> (u32, ErrorCode, String) {
    let body = raw
        .read_frame()
        .await
        .expect("an error reply before closing");
    let frame = wire::decode_response(&body).unwrap();
    let Response::Error(e) = frame.response else {
        panic!("not an error: {:?}", frame.response)
    };
    let error = (frame.correlation_id, e.code, e.message.to_string());
    assert!(raw.closed().await, "closed after the error");
    error
}

#[test]
fn bad_frames_close_only_the_offending_connection() {
    // Short, so that the truncated frames end their connections quickly.
    const FRAME_TIMEOUT_MS: u64 = 500;
    let server = TestServer::start_with(|c| c.limits.frame_timeout_ms = FRAME_TIMEOUT_MS);
    smol::block_on(async {
        let good = Arc::new(server.client().await);
        // Produces until every bad client is done, counting its acks.
        let acked = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let producer = {
            let (good, acked, done) = (good.clone(), acked.clone(), done.clone());
            smol::spawn(async move {
                let mut i = 0u64;
                while !done.load(Ordering::Acquire) {
                    good.produce(
                        "steady",
                        Some(0),
                        Acks::Durable,
                        10_000,
                        &values(&[&i.to_be_bytes()]),
                    )
                    .await
                    .expect("the well-behaved producer was affected");
                    i += 1;
                    acked.store(i, Ordering::Release);
                }
                i
            })
        };
        progressed(&acked, 0, 3, "before the first bad frame").await;
        let errors_before = server
            .running()
            .net()
            .stats
            .protocol_errors
            .load(Ordering::Relaxed);

        // Garbage body with a valid length: InvalidFrame, then closed.
        let mut raw = RawConn::connect(server.addr(), &server.ca()).await;
        raw.hello().await;
        let mut garbage = 16u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[
            0x07, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 9, 9, 9, 9, 9,
        ]);
        let floor = acked.load(Ordering::Acquire);
        raw.send_raw(&garbage).await.unwrap();
        let (correlation_id, code, _) = error_then_closed(&mut raw).await;
        assert_eq!(
            correlation_id, 7,
            "the correlation id is echoed when readable"
        );
        assert_eq!(code, ErrorCode::InvalidFrame);
        progressed(&acked, floor, 3, "after a garbage frame").await;

        // Oversized length prefix: FrameTooLarge before any allocation, closed.
        let mut raw = RawConn::connect(server.addr(), &server.ca()).await;
        raw.hello().await;
        let floor = acked.load(Ordering::Acquire);
        raw.send_raw(&(64u32 << 20).to_be_bytes()).await.unwrap();
        let (_, code, message) = error_then_closed(&mut raw).await;
        assert_eq!(code, ErrorCode::FrameTooLarge);
        assert!(message.contains("exceeds the maximum"), "{message}");
        progressed(&acked, floor, 3, "after an oversized frame").await;

        // Truncated: the prefix promises more than arrives, and nothing
        // more comes. The producer goes on meanwhile; after the frame
        // timeout the connection gets InvalidFrame and is closed.
        let mut raw = RawConn::connect(server.addr(), &server.ca()).await;
        raw.hello().await;
        let floor = acked.load(Ordering::Acquire);
        let sent = Instant::now();
        raw.send_raw(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
        progressed(&acked, floor, 3, "while a frame was incomplete").await;
        let (_, code, message) = error_then_closed(&mut raw).await;
        assert!(
            sent.elapsed() >= Duration::from_millis(FRAME_TIMEOUT_MS),
            "cut off only after the frame timeout ({:?})",
            sent.elapsed()
        );
        assert_eq!(code, ErrorCode::InvalidFrame);
        assert!(message.contains("frame_timeout_ms"), "{message}");

        // Truncated, then the client shuts down its writing side (TLS
        // close_notify): InvalidFrame at once, no frame timeout to wait.
        let mut raw = RawConn::connect(server.addr(), &server.ca()).await;
        raw.hello().await;
        let floor = acked.load(Ordering::Acquire);
        raw.send_raw(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
        raw.close_write().await;
        let (_, code, message) = error_then_closed(&mut raw).await;
        assert_eq!(code, ErrorCode::InvalidFrame);
        assert!(message.contains("in the middle of a frame"), "{message}");
        progressed(&acked, floor, 3, "after a frame cut short").await;

        // A request before Hello: HelloRequired.
        let mut raw = RawConn::connect(server.addr(), &server.ca()).await;
        let floor = acked.load(Ordering::Acquire);
        raw.send(5, Request::Ping(wire::Ping { nonce: 1 })).await;
        let (_, code, message) = error_then_closed(&mut raw).await;
        assert_eq!(code, ErrorCode::HelloRequired);
        assert!(message.contains("must be Hello"), "{message}");
        progressed(&acked, floor, 3, "after a request before Hello").await;

        // A version this server does not speak: UnsupportedVersion.
        let mut raw = RawConn::connect(server.addr(), &server.ca()).await;
        let floor = acked.load(Ordering::Acquire);
        raw.send(
            1,
            Request::Hello(wire::Hello {
                protocol_version: 999,
                client_id: "future",
            }),
        )
        .await;
        let (_, code, message) = error_then_closed(&mut raw).await;
        assert_eq!(code, ErrorCode::UnsupportedVersion);
        assert!(message.contains("999"));
        progressed(&acked, floor, 3, "after an unsupported version").await;

        // Not TLS at all: the handshake fails, nothing else happens.
        let floor = acked.load(Ordering::Acquire);
        let mut plain = async_net::TcpStream::connect(server.addr()).await.unwrap();
        smol::io::AsyncWriteExt::write_all(&mut plain, b"GET / HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = smol::io::AsyncReadExt::read_to_end(&mut plain, &mut buf).await;
        progressed(&acked, floor, 3, "after a non-TLS client").await;

        // The well-behaved client produced throughout, never refused.
        done.store(true, Ordering::Release);
        let produced = producer.await;
        assert_eq!(
            fetch_all(&good, "steady", 0, 0).await.len() as u64,
            produced
        );
        let net = server.running().net();
        assert_eq!(
            net.stats.protocol_errors.load(Ordering::Relaxed) - errors_before,
            6,
            "garbage, oversized, two truncated, no Hello, bad version"
        );
        assert!(net.stats.handshake_failures.load(Ordering::Relaxed) >= 1);
    });
}

/// A raw long poll (or read, with `max_wait_ms` 0) of partition 0 of `topic`.
fn fetch_request(topic: &str, offset: u64, max_wait_ms: u32) -> Request<'_> {
    Request::Fetch(wire::Fetch {
        topic,
        partitions: vec![FetchPartition {
            partition: 0,
            offset,
        }],
        max_bytes: 1 << 20,
        max_wait_ms,
    })
}

/// With `inflight_max` requests waiting, a connection is not read: pings
/// pipelined behind two long polls are answered only after a long poll
/// ended, although a ping is answered at once when read. Other connections
/// are served meanwhile, and every request is answered in the end.
#[test]
fn at_inflight_max_a_connection_is_read_only_when_a_request_finishes() {
    const INFLIGHT_MAX: u32 = 2;
    let server = TestServer::start_with(|c| c.limits.inflight_max = INFLIGHT_MAX);
    smol::block_on(async {
        let other = server.client().await;
        other.create_topic("quiet", 1).await.unwrap();
        let mut raw = RawConn::connect(server.addr(), &server.ca()).await;
        raw.hello().await;
        // Two long polls at the log end (up to 30 s: they end when data
        // arrives), then three pings behind them.
        raw.send(1, fetch_request("quiet", 0, 30_000)).await;
        raw.send(2, fetch_request("quiet", 0, 30_000)).await;
        for id in 3..=5 {
            raw.send(id, Request::Ping(wire::Ping { nonce: id.into() }))
                .await;
        }
        // Another connection is answered while this one is at its bound.
        other.ping().await.unwrap();
        wait_until(Duration::from_secs(30), "both long polls waiting", || {
            server
                .running()
                .broker()
                .stats
                .fetches_waiting
                .load(Ordering::Relaxed)
                == 2
        });
        // Data ends the long polls; only then are the pings read.
        other
            .produce("quiet", Some(0), Acks::Durable, 10_000, &values(&[b"wake"]))
            .await
            .unwrap();
        let mut answers = Vec::new();
        for _ in 0..5 {
            let body = raw.read_frame().await.expect("every request is answered");
            let frame = wire::decode_response(&body).unwrap();
            match frame.response {
                Response::Fetched(f) => {
                    assert!(!f.partitions[0].batches.is_empty(), "woken by the data");
                    answers.push((frame.correlation_id, "fetched"));
                }
                Response::Pong(p) => {
                    assert_eq!(p.nonce, u64::from(frame.correlation_id));
                    answers.push((frame.correlation_id, "pong"));
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
        assert!(
            matches!(answers[0], (1 | 2, "fetched")),
            "a long poll ends before anything behind it is read: {answers:?}"
        );
        let mut ids: Vec<u32> = answers.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        // The connection carries on normally.
        raw.send(6, Request::Ping(wire::Ping { nonce: 6 })).await;
        let body = raw.read_frame().await.unwrap();
        assert_eq!(wire::decode_response(&body).unwrap().correlation_id, 6);
    });
}

/// A client that pipelines requests and never reads the answers: once
/// `WRITE_BUFFER_BYTES` of answers wait, the server stops reading its
/// requests (so it handles only a few of them and buffers a bounded
/// amount), and it closes the connection when a write does not complete
/// within `frame_timeout_ms`. Another client keeps working throughout.
#[test]
fn a_client_that_never_reads_is_not_read_either_and_is_cut_off() {
    // Long enough that a server that went on reading would handle many of
    // the requests before the cut (measured without the bound, debug build
    // on 2 busy cores: ~35 fetches of 1 MiB a second, 177 by a 5 s cut),
    // while one that stops reading handles only what the socket buffers
    // take, plus the answer being written and one waiting (measured: 5; the
    // sender's buffer grows to at most tcp_wmem's 4 MiB, the receiver's
    // stays small since the client never reads).
    const FRAME_TIMEOUT_MS: u64 = 2_000;
    const REQUESTS: u32 = 200;
    const HANDLED_MAX: u64 = 30;
    let server = TestServer::start_with(|c| c.limits.frame_timeout_ms = FRAME_TIMEOUT_MS);
    smol::block_on(async {
        let other = server.client().await;
        other.create_topic("big", 1).await.unwrap();
        // About 1.8 MB in the partition: each fetch answer is ~1 MiB.
        let value = vec![7u8; 1_000];
        for _ in 0..2 {
            let records: Vec<&[u8]> = (0..900).map(|_| value.as_slice()).collect();
            other
                .produce("big", Some(0), Acks::Durable, 10_000, &values(&records))
                .await
                .unwrap();
        }
        let stats = &server.running().broker().stats;
        let net = server.running().net();
        let out_before = stats.bytes_out.load(Ordering::Relaxed);
        let mut raw = RawConn::connect(server.addr(), &server.ca()).await;
        raw.hello().await;
        assert_eq!(net.stats.active.load(Ordering::Relaxed), 2);
        let sent = Instant::now();
        for id in 1..=REQUESTS {
            raw.send(id, fetch_request("big", 0, 0)).await;
        }
        // Served meanwhile.
        other
            .produce(
                "big",
                Some(0),
                Acks::Durable,
                10_000,
                &values(&[b"meanwhile"]),
            )
            .await
            .unwrap();
        wait_until(Duration::from_secs(30), "the silent reader cut off", || {
            net.stats.active.load(Ordering::Relaxed) == 1
        });
        assert!(
            sent.elapsed() >= Duration::from_millis(FRAME_TIMEOUT_MS),
            "cut off only after a write waited frame_timeout_ms ({:?})",
            sent.elapsed()
        );
        let answer_bytes = 900_000u64;
        let handled = (stats.bytes_out.load(Ordering::Relaxed) - out_before) / answer_bytes;
        eprintln!(
            "{handled} of {REQUESTS} fetches handled, cut off after {:?}",
            sent.elapsed()
        );
        assert!(
            handled <= HANDLED_MAX,
            "the server stopped reading: {handled} of {REQUESTS} fetches handled"
        );
        // What reached the socket before the cut can still be read, then EOF.
        let mut answered = 0u32;
        while raw.read_frame().await.is_some() {
            answered += 1;
        }
        assert!(answered < REQUESTS, "{answered} answers");
        // And the other client carries on.
        let marks = other.watermarks("big").await.unwrap();
        assert_eq!(marks[0].log_end, 1_801);
        other.ping().await.unwrap();
    });
}

#[test]
fn request_errors_are_clear_and_keep_the_connection() {
    let server = TestServer::start_with(|c| {
        c.auto_create_topics = false;
        c.limits.batch_bytes_max = 10_000;
    });
    smol::block_on(async {
        let client = server.client().await;
        let err = client
            .produce("nope", None, Acks::Durable, 1000, &values(&[b"x"]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
        assert!(err.to_string().contains("eddy topics create nope"), "{err}");

        client.create_topic("t", 2).await.unwrap();
        let err = client.create_topic("t", 2).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TopicExists));
        let err = client.create_topic("bad/name", 1).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidTopicName));
        let err = client
            .produce("t", Some(2), Acks::Durable, 1000, &values(&[b"x"]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownPartition));
        let big = vec![0u8; 20_000];
        let err = client
            .produce("t", None, Acks::Durable, 1000, &values(&[&big]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::RecordTooLarge));
        let mut corrupt = values(&[b"abc"]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let err = client
            .produce("t", None, Acks::Durable, 1000, &corrupt)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::CorruptBatch));
        let err = client
            .produce("t", None, Acks::Mirrored, 1000, &values(&[b"x"]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NotSupported));
        let body = client
            .fetch(
                "t",
                &[FetchPartition {
                    partition: 0,
                    offset: 5,
                }],
                1000,
                0,
            )
            .await
            .unwrap();
        let Response::Fetched(f) = body.decode().unwrap() else {
            panic!()
        };
        assert_eq!(f.partitions[0].error, Some(ErrorCode::OffsetOutOfRange));

        // After all that the same connection still works.
        client.ping().await.unwrap();
        client
            .produce("t", Some(1), Acks::Durable, 1000, &values(&[b"ok"]))
            .await
            .unwrap();
        let info = client.describe_topic("t").await.unwrap();
        assert_eq!(info.partitions, 2);
        assert_eq!(info.watermarks[1].log_end, 1);
        assert_eq!(
            client.metadata(&[]).await.unwrap(),
            vec![("t".to_string(), 2)]
        );
        client.delete_topic("t").await.unwrap();
        assert!(client.metadata(&[]).await.unwrap().is_empty());
        assert_eq!(
            client.describe_topic("t").await.unwrap_err().code(),
            Some(ErrorCode::UnknownTopic)
        );
    });
}

#[test]
fn connection_limit_refuses_extra_connections_only() {
    let server = TestServer::start_with(|c| c.limits.connections_max = 2);
    smol::block_on(async {
        let a = server.client().await;
        let b = server.client().await;
        let third = Client::connect(&server.options()).await;
        assert!(third.is_err(), "a third connection is refused");
        a.ping().await.unwrap();
        b.ping().await.unwrap();
        assert!(
            server
                .running()
                .net()
                .stats
                .rejected_limit
                .load(Ordering::Relaxed)
                >= 1
        );
        drop(a);
        wait_until(Duration::from_secs(10), "a slot frees up", || {
            server.running().net().stats.active.load(Ordering::Acquire) < 2
        });
        server.client().await.ping().await.unwrap();
    });
}

#[test]
fn idle_connections_are_closed_and_a_wrong_ca_is_refused() {
    let server = TestServer::start_with(|c| c.limits.idle_timeout_ms = 200);
    smol::block_on(async {
        let client = server.client().await;
        client.ping().await.unwrap();
        wait_until(Duration::from_secs(10), "idle connection closed", || {
            server.running().net().stats.active.load(Ordering::Acquire) == 0
        });
        assert!(client.ping().await.is_err());

        // A CA that did not sign the server's certificate.
        let other = tempfile::tempdir().unwrap();
        let (paths, _) = eddy::tls::ensure_dev_certs(other.path(), &["localhost".into()]).unwrap();
        let err = Client::connect(&ClientOptions::tls(
            server.addr().to_string(),
            &paths.ca_cert,
        ))
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("TLS handshake"), "{err}");
    });
}

#[test]
fn restart_keeps_every_record_and_offsets_continue() {
    let mut server = TestServer::start();
    let mut expected: BTreeMap<(String, u32), Vec<Vec<u8>>> = BTreeMap::new();
    smol::block_on(async {
        let client = server.client().await;
        client.create_topic("a", 3).await.unwrap();
        for i in 0..30u32 {
            let topic = if i % 3 == 0 { "b" } else { "a" };
            let value = format!("{topic}-{i}").into_bytes();
            let acks = client
                .produce(topic, None, Acks::Durable, 10_000, &values(&[&value]))
                .await
                .unwrap();
            expected
                .entry((topic.to_string(), acks[0].partition))
                .or_default()
                .push(value);
        }
    });
    server.restart();
    smol::block_on(async {
        let client = server.client().await;
        for ((topic, p), values_expected) in &expected {
            let got: Vec<Vec<u8>> = fetch_all(&client, topic, *p, 0)
                .await
                .into_iter()
                .map(|r| r.value)
                .collect();
            assert_eq!(&got, values_expected, "{topic}/{p}");
        }
        let n = expected[&("b".to_string(), 0)].len() as u64;
        let acks = client
            .produce("b", Some(0), Acks::Durable, 1000, &values(&[b"after"]))
            .await
            .unwrap();
        assert_eq!(
            acks[0].base_offset, n,
            "offsets continue densely after restart"
        );
    });
}
