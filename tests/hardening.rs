//! The adversarial suite of issue 16: each test plays a hostile or buggy
//! client as it would really behave (raw frames where the client library
//! would refuse) and asserts the bound or the refusal that closes it.
//! Memory and rate goals (RSS of 2,000 such connections, produce rate
//! under 32,000 parked long-polls) are measured by `benches/hardening.rs`,
//! not here.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{values, wait_until, RawConn, TestServer};
use eddy::config::ANSWER_BYTES_PENDING_MAX;
use eddy::wire::batch::{rewrite_header, BatchHeader};
use eddy::wire::{self, Acks, ErrorCode, FetchPartition, Request, Response};

/// Connections that announce a frame of the largest size and send one byte
/// of it make the hub hold what arrived (a read step each), never the
/// announced size.
#[test]
fn announced_frames_are_not_allocated_up_front() {
    const CONNECTIONS: usize = 100;
    /// What one connection may hold for a frame of which one byte came:
    /// one read step (`net::conn::FRAME_READ_CHUNK_BYTES`, 16 KiB), with
    /// room for the Hello buffer it had before.
    const HELD_PER_CONNECTION_MAX: usize = 17 << 10;
    let server = TestServer::start();
    let net = server.running().net().clone();
    let frame_bytes_max = server.config.limits.frame_bytes_max;
    smol::block_on(async {
        let mut conns = Vec::new();
        for _ in 0..CONNECTIONS {
            let mut conn = RawConn::connect(server.addr(), &server.ca()).await;
            conn.hello().await;
            let mut announce = frame_bytes_max.to_be_bytes().to_vec();
            announce.push(0);
            conn.send_raw(&announce).await.unwrap();
            conns.push(conn);
        }
        // Every connection has begun its frame: each holds a read step.
        wait_until(Duration::from_secs(30), "every frame begun", || {
            net.stats.frame_buffer_bytes.load(Ordering::Relaxed) >= CONNECTIONS * (16 << 10)
        });
        let held = net.stats.frame_buffer_bytes.load(Ordering::Relaxed);
        assert!(
            held <= CONNECTIONS * HELD_PER_CONNECTION_MAX,
            "{CONNECTIONS} connections that sent one byte of a {frame_bytes_max}-byte frame hold {held} bytes"
        );
        // Others are served meanwhile.
        let client = server.client().await;
        client
            .produce("t", None, Acks::Durable, 10_000, &values(&[b"v"]))
            .await
            .unwrap();
        drop(conns);
        wait_until(Duration::from_secs(30), "buffers freed", || {
            net.stats.frame_buffer_bytes.load(Ordering::Relaxed) < HELD_PER_CONNECTION_MAX
        });
    });
}

/// A connection parks 64 long-polls and never reads; one large produce
/// completes them all. The hub holds at most the connection's pending-answer
/// budget (plus one answer), not 64 answers; once the client reads, every
/// answer arrives.
#[test]
fn slow_readers_hold_at_most_their_answer_budget() {
    const READERS: usize = 3;
    const LONG_POLLS: u32 = 64;
    const VALUE_BYTES: usize = 900_000;
    let server = TestServer::start();
    let net = server.running().net().clone();
    let broker = server.running().broker().clone();
    let frame_bytes_max = server.config.limits.frame_bytes_max as usize;
    let bound = READERS * (ANSWER_BYTES_PENDING_MAX + frame_bytes_max);
    smol::block_on(async {
        let client = server.client().await;
        client.create_topic("slow", 1).await.unwrap();
        let mut readers = Vec::new();
        for _ in 0..READERS {
            let mut conn = RawConn::connect(server.addr(), &server.ca()).await;
            conn.hello().await;
            for id in 1..=LONG_POLLS {
                conn.send(id, fetch_at_end("slow")).await;
            }
            readers.push(conn);
        }
        let parked = (READERS as u64) * u64::from(LONG_POLLS);
        wait_until(Duration::from_secs(30), "every long-poll parked", || {
            broker.stats.fetches_waiting.load(Ordering::Relaxed) == parked
        });
        client
            .produce(
                "slow",
                None,
                Acks::Durable,
                30_000,
                &values(&[&vec![7u8; VALUE_BYTES]]),
            )
            .await
            .unwrap();
        wait_until(Duration::from_secs(30), "every long-poll woken", || {
            broker.stats.fetches_waiting.load(Ordering::Relaxed) == 0
        });
        // Each reader holds its first answer; the others wait for room.
        wait_until(Duration::from_secs(30), "first answers held", || {
            net.stats.answer_bytes.load(Ordering::Relaxed) >= READERS * VALUE_BYTES
        });
        let held = net.stats.answer_bytes.load(Ordering::Relaxed);
        assert!(held <= bound, "{held} bytes of answers pending > {bound}");
        // Reading, one reader gets all its answers; the bound holds all along.
        let reader = &mut readers[0];
        for _ in 0..LONG_POLLS {
            let body = reader.read_frame().await.expect("an answer");
            let Response::Fetched(fetched) = wire::decode_response(&body).unwrap().response else {
                panic!("not a fetch answer");
            };
            assert!(fetched.partitions[0].batches.len() >= VALUE_BYTES);
            let held = net.stats.answer_bytes.load(Ordering::Relaxed);
            assert!(held <= bound, "{held} bytes of answers pending > {bound}");
        }
    });
}

/// A long-poll at the end of partition 0 of `topic`, for 30 s, up to a frame.
fn fetch_at_end(topic: &str) -> Request<'_> {
    Request::Fetch(wire::Fetch {
        topic,
        partitions: vec![FetchPartition {
            partition: 0,
            offset: 0,
        }],
        max_bytes: u32::MAX,
        max_wait_ms: 30_000,
    })
}

/// Issue 16, item 8: a batch whose header lies about its records — an
/// offset span far past them, a max timestamp none of them has — is refused
/// with `CorruptBatch` saying what is wrong, and the log end stays put.
#[test]
fn batches_whose_header_lies_about_their_records_are_refused() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        client.create_topic("lies", 1).await.unwrap();
        let honest = common::batch(&[(None, b"one")], 1_700_000_000_000);
        type Lie = fn(&mut BatchHeader);
        let lies: [(Lie, &str); 2] = [
            (|h| h.last_offset_delta = 1_000_000_000, "last_offset_delta"),
            (|h| h.max_timestamp_ms = i64::MAX / 2, "max_timestamp_ms"),
        ];
        for (lie, named) in lies {
            let mut bytes = honest.clone();
            let mut header = BatchHeader::read(&bytes).unwrap();
            lie(&mut header);
            rewrite_header(&mut bytes, &header);
            let refused = client
                .produce("lies", None, Acks::Durable, 10_000, &bytes)
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Some(ErrorCode::CorruptBatch), "{refused}");
            assert!(refused.to_string().contains(named), "{refused}");
        }
        let marks = client.watermarks("lies").await.unwrap();
        assert_eq!(marks[0].log_end, 0);
        // The honest batch goes in at offset 0 and moves the end by one.
        let acks = client
            .produce("lies", None, Acks::Durable, 10_000, &honest)
            .await
            .unwrap();
        assert_eq!(acks[0].base_offset, 0);
        assert_eq!(client.watermarks("lies").await.unwrap()[0].log_end, 1);
    });
}

/// Issue 16, item 3: long-polls parked on an idle topic are not woken by
/// the flush rounds of another topic's durable produces, only by their own
/// partition's durable end moving.
#[test]
fn parked_long_polls_are_woken_only_by_their_own_partition() {
    const LONG_POLLS: u32 = 60;
    const PRODUCES: usize = 20;
    let server = TestServer::start();
    let broker = server.running().broker().clone();
    smol::block_on(async {
        let client = server.client().await;
        client.create_topic("idle", 1).await.unwrap();
        client.create_topic("busy", 1).await.unwrap();
        let mut conn = RawConn::connect(server.addr(), &server.ca()).await;
        conn.hello().await;
        for id in 1..=LONG_POLLS {
            conn.send(id, fetch_at_end("idle")).await;
        }
        wait_until(Duration::from_secs(30), "every long-poll parked", || {
            broker.stats.fetches_waiting.load(Ordering::Relaxed) == u64::from(LONG_POLLS)
        });
        let before = broker.stats.fetch_wakeups.load(Ordering::Relaxed);
        for i in 0..PRODUCES {
            client
                .produce(
                    "busy",
                    None,
                    Acks::Durable,
                    10_000,
                    &values(&[format!("{i}").as_bytes()]),
                )
                .await
                .unwrap();
        }
        let woken = broker.stats.fetch_wakeups.load(Ordering::Relaxed) - before;
        assert_eq!(
            woken, 0,
            "{PRODUCES} durable produces to another topic woke parked long-polls"
        );
        // A produce to their own partition wakes and answers them all.
        client
            .produce("idle", None, Acks::Durable, 10_000, &values(&[b"data"]))
            .await
            .unwrap();
        for _ in 0..LONG_POLLS {
            let body = conn.read_frame().await.expect("an answer");
            let Response::Fetched(fetched) = wire::decode_response(&body).unwrap().response else {
                panic!("not a fetch answer");
            };
            assert!(!fetched.partitions[0].batches.is_empty());
        }
    });
}

/// Issue 16, item 6: topics and partitions have a limit in all; a create
/// beyond it (explicit or automatic) is refused and says which setting.
#[test]
fn topics_and_partitions_are_limited_in_all() {
    let server = TestServer::start_with(|c| {
        c.limits.topics_max = 3;
        c.limits.partitions_total_max = 10;
    });
    smol::block_on(async {
        let client = server.client().await;
        client.create_topic("a", 8).await.unwrap();
        let e = client.create_topic("b", 3).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidRequest), "{e}");
        assert!(e.to_string().contains("limits.partitions_total_max"), "{e}");
        client.create_topic("b", 2).await.unwrap();
        client
            .produce("c", None, Acks::Durable, 10_000, &values(&[b"auto"]))
            .await
            .unwrap_err();
        client.delete_topic("b").await.unwrap();
        client.create_topic("b", 1).await.unwrap();
        // Auto-creation counts as well: the third topic, then no more.
        client
            .produce("c", None, Acks::Durable, 10_000, &values(&[b"auto"]))
            .await
            .unwrap();
        let e = client.create_topic("d", 1).await.unwrap_err();
        assert!(e.to_string().contains("limits.topics_max"), "{e}");
        let e = client
            .produce("e", None, Acks::Durable, 10_000, &values(&[b"auto"]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("limits.topics_max"), "{e}");
        assert_eq!(client.metadata(&[]).await.unwrap().len(), 3);
    });
}

/// Issue 16, item 11: half-open TLS handshakes fill their own cap, not the
/// established connections': with the handshake slots taken, a new
/// connection is refused at once, and a device already connected works.
#[test]
fn half_open_handshakes_cannot_take_the_established_slots() {
    const HANDSHAKES_MAX: usize = 20;
    let server = TestServer::start_with(|c| {
        c.limits.handshakes_max = HANDSHAKES_MAX;
        c.limits.connections_max = 100;
    });
    let net = server.running().net().clone();
    smol::block_on(async {
        let device = server.client().await;
        let mut half_open = Vec::new();
        for _ in 0..HANDSHAKES_MAX + 5 {
            let mut tcp = async_net::TcpStream::connect(server.addr()).await.unwrap();
            // Half a ClientHello, then silence.
            smol::io::AsyncWriteExt::write_all(&mut tcp, &[0x16, 0x03, 0x01, 0x02, 0x00])
                .await
                .unwrap();
            half_open.push(tcp);
        }
        wait_until(Duration::from_secs(30), "the extra ones refused", || {
            net.stats.rejected_handshakes.load(Ordering::Relaxed) == 5
        });
        assert_eq!(
            net.stats.handshaking.load(Ordering::Relaxed),
            HANDSHAKES_MAX
        );
        device
            .produce("t", None, Acks::Durable, 10_000, &values(&[b"still works"]))
            .await
            .unwrap();
        drop(half_open);
        wait_until(Duration::from_secs(30), "handshake slots free", || {
            net.stats.handshaking.load(Ordering::Relaxed) == 0
        });
        let again = server.client().await;
        again.metadata(&[]).await.unwrap();
    });
}
