//! Idempotent producers against a real TLS listener: stable producer ids,
//! resends answered with their original offsets, sequence gaps and fencing,
//! and state that survives a restart and a `kill -9`.

mod common;

use common::{ChildServer, TestServer};
use eddy::client::{records_from, Client};
use eddy::storage::producers::PRODUCER_WINDOW_BATCHES_MAX;
use eddy::wire::batch::{BatchBuilder, Headers, ProducerStamp, NO_TIMESTAMP};
use eddy::wire::{Acks, ErrorCode, FetchPartition, PartitionAck, ProducerInit, Response};

/// A batch of `values` stamped as producer `init` starting at `sequence`.
fn stamped(init: &ProducerInit, sequence: i32, values: &[&str]) -> Vec<u8> {
    let size: usize = values.iter().map(|v| v.len() + 32).sum();
    let mut b = BatchBuilder::with_capacity(size + 64, NO_TIMESTAMP).unwrap();
    b.set_producer(ProducerStamp {
        producer_id: init.producer_id,
        producer_epoch: init.producer_epoch,
        base_sequence: sequence,
    });
    for v in values {
        b.push(NO_TIMESTAMP, None, v.as_bytes(), Headers::EMPTY)
            .unwrap();
    }
    b.finish_vec()
}

/// Every value of partition 0 of `topic`, in offset order.
async fn all_values(client: &Client, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let body = client
            .fetch(
                topic,
                &[FetchPartition {
                    partition: 0,
                    offset,
                }],
                1 << 20,
                0,
            )
            .await
            .unwrap();
        let Response::Fetched(f) = body.decode().unwrap() else {
            panic!("not a fetch answer")
        };
        assert_eq!(f.partitions[0].error, None);
        let (records, next) = records_from(f.partitions[0].batches, 0, offset).unwrap();
        out.extend(
            records
                .into_iter()
                .map(|r| String::from_utf8(r.value).unwrap()),
        );
        match next {
            Some(next) if next > offset => offset = next,
            _ => return out,
        }
    }
}

async fn produce(client: &Client, batch: &[u8]) -> Result<Vec<PartitionAck>, ErrorCode> {
    client
        .produce("dev", None, Acks::Durable, 10_000, batch)
        .await
        .map_err(|e| e.code().expect("a server error"))
}

#[test]
fn resends_are_answered_with_the_original_offsets() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        let init = client.init_producer("sensor-1").await.unwrap();
        assert_eq!(init.next_sequence, 0);
        assert_eq!(init.producer_epoch, 0);

        let first = stamped(&init, 0, &["a", "b"]);
        let acked = produce(&client, &first).await.unwrap();
        assert_eq!(acked[0].base_offset, 0);
        // The same batch again (a resend after a lost ack): same answer,
        // nothing appended.
        assert_eq!(produce(&client, &first).await.unwrap(), acked);
        let second = stamped(&init, 2, &["c"]);
        let acked2 = produce(&client, &second).await.unwrap();
        assert_eq!(acked2[0].base_offset, 2);
        assert_eq!(produce(&client, &first).await.unwrap(), acked);
        assert_eq!(produce(&client, &second).await.unwrap(), acked2);
        assert_eq!(all_values(&client, "dev").await, ["a", "b", "c"]);
        assert_eq!(
            server
                .running()
                .broker()
                .stats
                .duplicates
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );

        // A gap is refused with a clear error and writes nothing.
        assert_eq!(
            produce(&client, &stamped(&init, 7, &["x"])).await,
            Err(ErrorCode::OutOfOrderSequence)
        );
        // An id the hub never issued.
        let stranger = ProducerInit {
            producer_id: init.producer_id + 1_000,
            ..init
        };
        assert_eq!(
            produce(&client, &stamped(&stranger, 0, &["x"])).await,
            Err(ErrorCode::UnknownProducer)
        );
        // Non-idempotent batches are unaffected.
        assert_eq!(
            produce(&client, &common::values(&[b"plain"]))
                .await
                .unwrap()[0]
                .base_offset,
            3
        );

        // A new session of the same name: same id, new epoch, continues at
        // the next sequence; the old epoch is fenced.
        let again = client.init_producer("sensor-1").await.unwrap();
        assert_eq!(again.producer_id, init.producer_id);
        assert_eq!(again.producer_epoch, init.producer_epoch + 1);
        assert_eq!(again.next_sequence, 3);
        assert_eq!(
            produce(&client, &stamped(&init, 3, &["zombie"])).await,
            Err(ErrorCode::ProducerFenced)
        );
        // The new session may resend what the old one sent (same sequence).
        assert_eq!(
            produce(&client, &stamped(&again, 2, &["c"])).await.unwrap(),
            acked2
        );
        produce(&client, &stamped(&again, 3, &["d"])).await.unwrap();

        // Another device gets another id.
        let other = client.init_producer("sensor-2").await.unwrap();
        assert_ne!(other.producer_id, init.producer_id);
        assert_eq!(
            all_values(&client, "dev").await,
            ["a", "b", "c", "plain", "d"]
        );
    });
}

#[test]
fn resends_older_than_the_window_are_reported_not_appended() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        let init = client.init_producer("sensor-w").await.unwrap();
        let total = PRODUCER_WINDOW_BATCHES_MAX + 2;
        let mut acks = Vec::new();
        for i in 0..total {
            let v = format!("r{i}");
            let seq = i32::try_from(i).unwrap();
            acks.push(produce(&client, &stamped(&init, seq, &[&v])).await.unwrap());
        }
        // The last WINDOW batches are answered with their offsets...
        for (i, ack) in acks
            .iter()
            .enumerate()
            .skip(total - PRODUCER_WINDOW_BATCHES_MAX)
        {
            let v = format!("r{i}");
            let seq = i32::try_from(i).unwrap();
            assert_eq!(
                &produce(&client, &stamped(&init, seq, &[&v])).await.unwrap(),
                ack
            );
        }
        // ...older ones with DuplicateSequence, and never appended again.
        assert_eq!(
            produce(&client, &stamped(&init, 0, &["r0"])).await,
            Err(ErrorCode::DuplicateSequence)
        );
        assert_eq!(all_values(&client, "dev").await.len(), total);
    });
}

#[test]
fn producer_state_survives_a_restart() {
    let mut server = TestServer::start();
    let init = smol::block_on(async {
        let client = server.client().await;
        let init = client.init_producer("truck-9").await.unwrap();
        produce(&client, &stamped(&init, 0, &["a"])).await.unwrap();
        produce(&client, &stamped(&init, 1, &["b", "c"]))
            .await
            .unwrap();
        init
    });
    server.restart();
    smol::block_on(async {
        let client = server.client().await;
        // The device still has its epoch: its resend is recognised.
        assert_eq!(
            produce(&client, &stamped(&init, 1, &["b", "c"]))
                .await
                .unwrap()[0]
                .base_offset,
            1
        );
        let again = client.init_producer("truck-9").await.unwrap();
        assert_eq!(again.producer_id, init.producer_id);
        assert_eq!(again.next_sequence, 3);
        assert_eq!(all_values(&client, "dev").await, ["a", "b", "c"]);
    });
}

/// A device streams readings with `received` acks (appended, not yet
/// fsynced), the hub is killed with SIGKILL, and the device — rebooted,
/// with its outbox kept — resends everything it had not seen durably
/// acknowledged. Every reading must be stored exactly once, in order.
#[test]
fn kill_9_then_resend_stores_every_reading_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    const READINGS: i32 = 400;
    let server = ChildServer::start(dir.path(), &[]);
    let options = server.options();
    let durable_upto = smol::block_on(async {
        let client = Client::connect(&options).await.unwrap();
        let init = client.init_producer("crash-device").await.unwrap();
        // The first half is acknowledged durable.
        for seq in 0..READINGS / 2 {
            let v = format!("reading-{seq}");
            client
                .produce(
                    "dev",
                    None,
                    Acks::Durable,
                    10_000,
                    &stamped(&init, seq, &[&v]),
                )
                .await
                .unwrap();
        }
        // The rest only as received: in memory when the hub dies.
        for seq in READINGS / 2..READINGS {
            let v = format!("reading-{seq}");
            client
                .produce(
                    "dev",
                    None,
                    Acks::Received,
                    10_000,
                    &stamped(&init, seq, &[&v]),
                )
                .await
                .unwrap();
        }
        READINGS / 2
    });
    server.kill9();

    let server = ChildServer::start(dir.path(), &[]);
    smol::block_on(async {
        let client = Client::connect(&server.options()).await.unwrap();
        let init = client.init_producer("crash-device").await.unwrap();
        // The hub kept at least everything acknowledged durable.
        assert!(
            init.next_sequence >= durable_upto && init.next_sequence <= READINGS,
            "next sequence {} after the crash",
            init.next_sequence
        );
        // The device resends its whole outbox from the oldest reading not
        // durably acknowledged.
        for seq in durable_upto..READINGS {
            let v = format!("reading-{seq}");
            match client
                .produce(
                    "dev",
                    None,
                    Acks::Durable,
                    10_000,
                    &stamped(&init, seq, &[&v]),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some(ErrorCode::DuplicateSequence) => {}
                Err(e) => panic!("resend of {seq}: {e}"),
            }
        }
        let stored = all_values(&client, "dev").await;
        let expected: Vec<String> = (0..READINGS).map(|s| format!("reading-{s}")).collect();
        assert_eq!(stored, expected, "every reading exactly once, in order");
    });
}

#[test]
fn large_batches_are_deduped_and_spread_batches_refused() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        let init = client.init_producer("logger").await.unwrap();
        // 200 records of 100 bytes: stored as several chunks, each stamped.
        let values: Vec<String> = (0..200).map(|i| format!("{i:0>100}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let big = stamped(&init, 0, &refs);
        assert!(big.len() > 4096);
        let acked = produce(&client, &big).await.unwrap();
        assert_eq!(acked[0].record_count, 200);
        assert_eq!(produce(&client, &big).await.unwrap(), acked);
        assert_eq!(all_values(&client, "dev").await.len(), 200);

        // Keys that land in different partitions cannot be one idempotent batch.
        client.create_topic("spread", 8).await.unwrap();
        let mut b = BatchBuilder::with_capacity(1024, NO_TIMESTAMP).unwrap();
        b.set_producer(ProducerStamp {
            producer_id: init.producer_id,
            producer_epoch: init.producer_epoch,
            base_sequence: 200,
        });
        for key in ["a", "b", "c", "d", "e", "f"] {
            b.push(NO_TIMESTAMP, Some(key.as_bytes()), b"v", Headers::EMPTY)
                .unwrap();
        }
        let err = client
            .produce("spread", None, Acks::Durable, 10_000, &b.finish_vec())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
        assert!(err.to_string().contains("one partition"), "{err}");
    });
}
