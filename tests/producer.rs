//! The client's batching producer and write coalescing against a real TLS
//! listener: per-record acks that match what is stored, per-partition
//! order with several batches in flight, lingering and flush, errors per
//! record, records handed over before a drop still delivered; many
//! concurrent calls through one connection's outbox.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::TestServer;
use eddy::client::{records_from, Client, ClientError, Producer, ProducerOptions, RecordAck};
use eddy::wire::batch::Headers;
use eddy::wire::partitioner::partition_for_key;
use eddy::wire::{Acks, ErrorCode, FetchPartition, Response};

/// Every record of `partition`, in offset order: (offset, key, value).
async fn partition_records(
    client: &Client,
    topic: &str,
    partition: u32,
) -> Vec<(u64, Option<Vec<u8>>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let body = client
            .fetch(topic, &[FetchPartition { partition, offset }], 1 << 20, 0)
            .await
            .unwrap();
        let Response::Fetched(f) = body.decode().unwrap() else {
            panic!("not a fetch answer")
        };
        assert_eq!(f.partitions[0].error, None);
        let (records, next) = records_from(f.partitions[0].batches, partition, offset).unwrap();
        out.extend(records.into_iter().map(|r| (r.offset, r.key, r.value)));
        match next {
            Some(next) if next > offset => offset = next,
            _ => return out,
        }
    }
}

/// Batches stored in `partition` (each fetch answer is whole batches).
async fn batch_count(client: &Client, topic: &str, partition: u32) -> usize {
    let body = client
        .fetch(
            topic,
            &[FetchPartition {
                partition,
                offset: 0,
            }],
            1 << 20,
            0,
        )
        .await
        .unwrap();
    let Response::Fetched(f) = body.decode().unwrap() else {
        panic!("not a fetch answer")
    };
    eddy::wire::batch::Batches::new(f.partitions[0].batches).count()
}

#[test]
fn acks_per_record_match_storage_and_keep_key_order() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = Arc::new(server.client().await);
        client.create_topic("keyed", 8).await.unwrap();
        let options = ProducerOptions {
            acks: Acks::Durable,
            // Small batches: many of them, several in flight at once.
            batch_bytes_max: 1_024,
            linger_ms: 0,
            inflight_batches_max: 4,
            ..ProducerOptions::default()
        };
        let producer = Producer::new(client.clone(), "keyed", options)
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..2_000u32 {
            let key = format!("device-{}", i % 37);
            let value = format!("reading-{i}");
            let delivery = producer
                .send(Some(key.as_bytes()), value.as_bytes(), Headers::EMPTY)
                .await
                .unwrap();
            assert_eq!(delivery.partition(), partition_for_key(key.as_bytes(), 8));
            deliveries.push((key, value, delivery));
        }
        let mut acked: HashMap<(u32, u64), (String, String)> = HashMap::new();
        let mut last_per_key: HashMap<String, u64> = HashMap::new();
        for (key, value, delivery) in &deliveries {
            let RecordAck { partition, offset } = delivery.wait().await.unwrap();
            assert_eq!(partition, partition_for_key(key.as_bytes(), 8));
            if let Some(previous) = last_per_key.insert(key.clone(), offset) {
                assert!(offset > previous, "{key}: {offset} after {previous}");
            }
            assert!(
                acked
                    .insert((partition, offset), (key.clone(), value.clone()))
                    .is_none(),
                "two records acknowledged at {partition}/{offset}"
            );
        }
        let mut stored = 0;
        let mut batches = 0;
        for partition in 0..8 {
            let records = partition_records(&client, "keyed", partition).await;
            for (offset, key, value) in records {
                let (k, v) = acked
                    .get(&(partition, offset))
                    .unwrap_or_else(|| panic!("{partition}/{offset} stored but never acked"));
                assert_eq!(key.as_deref(), Some(k.as_bytes()));
                assert_eq!(value, v.as_bytes());
                stored += 1;
            }
            batches += batch_count(&client, "keyed", partition).await;
        }
        assert_eq!(stored, 2_000);
        // 2,000 records of ≈ 30 bytes in batches of at most 1 KiB.
        assert!(
            batches > 8,
            "only {batches} batches: records were not split"
        );
    });
}

#[test]
fn keyless_records_stick_to_a_partition_per_batch_and_offsets_are_dense() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = Arc::new(server.client().await);
        client.create_topic("keyless", 3).await.unwrap();
        let options = ProducerOptions {
            // Durable: fetches below read only what is fsynced.
            acks: Acks::Durable,
            batch_bytes_max: 512,
            linger_ms: 0,
            inflight_batches_max: 2,
            ..ProducerOptions::default()
        };
        let producer = Producer::new(client.clone(), "keyless", options)
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..600u32 {
            let value = format!("v{i}");
            deliveries.push(
                producer
                    .send(None, value.as_bytes(), Headers::EMPTY)
                    .await
                    .unwrap(),
            );
        }
        producer.flush().await;
        let mut per_partition: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut stored = HashMap::new();
        for partition in 0..3 {
            for (offset, _, value) in partition_records(&client, "keyless", partition).await {
                stored.insert((partition, offset), value);
            }
        }
        assert_eq!(stored.len(), 600);
        for (i, delivery) in deliveries.iter().enumerate() {
            // Everything sent before flush is answered when it returns.
            let ack = delivery.try_get().expect("answered by flush").unwrap();
            per_partition
                .entry(ack.partition)
                .or_default()
                .push(ack.offset);
            assert_eq!(
                stored[&(ack.partition, ack.offset)],
                format!("v{i}").as_bytes()
            );
        }
        assert_eq!(per_partition.len(), 3, "batches did not rotate partitions");
        for (partition, offsets) in per_partition {
            let dense: Vec<u64> = (0..offsets.len() as u64).collect();
            assert_eq!(offsets, dense, "partition {partition}: acks in send order");
        }
    });
}

#[test]
fn linger_holds_a_partial_batch_until_flush() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = Arc::new(server.client().await);
        client.create_topic("linger", 1).await.unwrap();
        let options = ProducerOptions {
            // Far longer than the test: only flush can send the batch.
            linger_ms: 600_000,
            ..ProducerOptions::default()
        };
        let producer = Producer::new(client.clone(), "linger", options)
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..10u32 {
            deliveries.push(
                producer
                    .send(None, format!("r{i}").as_bytes(), Headers::EMPTY)
                    .await
                    .unwrap(),
            );
        }
        // A round trip on the same connection: had the batch been sent, it
        // would be stored before this answer.
        client.ping().await.unwrap();
        assert!(deliveries.iter().all(|d| d.try_get().is_none()));
        assert_eq!(client.watermarks("linger").await.unwrap()[0].log_end, 0);
        producer.flush().await;
        for (i, delivery) in deliveries.iter().enumerate() {
            let ack = delivery.try_get().unwrap().unwrap();
            assert_eq!(ack.offset, i as u64);
        }
        // One batch of 10 records.
        assert_eq!(batch_count(&client, "linger", 0).await, 1);
        assert_eq!(client.watermarks("linger").await.unwrap()[0].durable, 10);
    });
}

#[test]
fn records_handed_over_before_drop_are_delivered() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = Arc::new(server.client().await);
        client.create_topic("dropped", 1).await.unwrap();
        let options = ProducerOptions {
            linger_ms: 600_000,
            ..ProducerOptions::default()
        };
        let producer = Producer::new(client.clone(), "dropped", options)
            .await
            .unwrap();
        let delivery = producer
            .send(Some(b"k"), b"last words", Headers::EMPTY)
            .await
            .unwrap();
        drop(producer);
        let ack = delivery.wait().await.unwrap();
        assert_eq!(
            ack,
            RecordAck {
                partition: 0,
                offset: 0
            }
        );
        let stored = partition_records(&client, "dropped", 0).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].2, b"last words");
    });
}

#[test]
fn errors_reach_every_record_of_the_batch() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = Arc::new(server.client().await);
        client.create_topic("errors", 1).await.unwrap();

        // A record that can never fit is refused at send, naming the fix.
        let small = ProducerOptions {
            batch_bytes_max: 256,
            ..ProducerOptions::default()
        };
        let producer = Producer::new(client.clone(), "errors", small)
            .await
            .unwrap();
        let err = producer
            .send(None, &[0u8; 300], Headers::EMPTY)
            .await
            .err()
            .expect("a 300-byte record in a 256-byte batch");
        assert!(matches!(err, ClientError::RecordTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("batch_bytes_max"), "{err}");

        // The server refuses the batch: every record in it gets the error.
        let mirrored = ProducerOptions {
            acks: Acks::Mirrored,
            linger_ms: 600_000,
            ..ProducerOptions::default()
        };
        let producer = Producer::new(client.clone(), "errors", mirrored)
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        for _ in 0..5 {
            deliveries.push(producer.send(None, b"x", Headers::EMPTY).await.unwrap());
        }
        producer.flush().await;
        for delivery in &deliveries {
            let err = delivery.wait().await.unwrap_err();
            assert_eq!(err.code(), Some(ErrorCode::NotSupported), "{err}");
        }

        // A missing topic is reported when the producer is made.
        let err = Producer::new(client.clone(), "missing", ProducerOptions::default())
            .await
            .err()
            .expect("no such topic");
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic), "{err}");
    });
}

#[test]
fn a_lost_connection_fails_unsent_and_unanswered_records() {
    let mut server = TestServer::start();
    let client = smol::block_on(async {
        let client = Arc::new(server.client().await);
        client.create_topic("lost", 1).await.unwrap();
        client
    });
    let options = ProducerOptions {
        linger_ms: 600_000,
        ..ProducerOptions::default()
    };
    let producer = smol::block_on(Producer::new(client.clone(), "lost", options)).unwrap();
    let delivery = smol::block_on(producer.send(None, b"never stored", Headers::EMPTY)).unwrap();
    // The hub goes away with the record still lingering in the producer.
    server.server.take().unwrap().stop().unwrap();
    smol::block_on(async {
        producer.flush().await;
        let err = delivery.wait().await.unwrap_err();
        assert!(matches!(err, ClientError::Closed(_)), "{err}");
    });
}

#[test]
fn concurrent_calls_share_the_outbox_and_all_get_their_answers() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = Arc::new(server.client().await);
        client.create_topic("outbox", 1).await.unwrap();
        // More than the outbox holds (4 MiB): some callers wait for the
        // writer, none is lost, every answer goes to its caller.
        let value = vec![7u8; 900_000];
        let batch = common::batch(&[(None, &value)], 1_000);
        let produces: Vec<_> = (0..8)
            .map(|_| {
                let client = client.clone();
                let batch = batch.clone();
                smol::spawn(async move {
                    client
                        .produce("outbox", Some(0), Acks::Received, 10_000, &batch)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let pings: Vec<_> = (0..200)
            .map(|_| {
                let client = client.clone();
                smol::spawn(async move { client.ping().await.unwrap() })
            })
            .collect();
        let mut offsets = Vec::new();
        for p in produces {
            let acks = p.await;
            assert_eq!(acks.len(), 1);
            offsets.push(acks[0].base_offset);
        }
        for p in pings {
            p.await;
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..8).collect::<Vec<u64>>());
    });
}
