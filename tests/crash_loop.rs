//! Crash loop: `kill -9` at a random moment during durable ingest by
//! several producers, then restart, many times over one data directory.
//! After every restart: every acknowledged record is there with its offset
//! and value, offsets are dense from 0 in every partition, every batch
//! passes its CRC and structure checks, and the server started within
//! [`START_MS_MAX`].
//!
//! Every cycle must make progress: the kill comes at a random moment
//! within [`KILL_AFTER_MS`] of the cycle's first acknowledgement (so it
//! still lands on batches in flight, this producer's next one and the
//! others'), and a restarted server that acknowledges nothing within
//! [`FIRST_ACK_MS_MAX`] fails the test. A producer may only fail (to
//! connect, or a produce) once the kill was sent.
//!
//! `EDDY_CRASH_CYCLES` sets the number of cycles (default 50, as in CI);
//! `benches/crash_loop.sh` runs 200 with a release build. The seed is
//! printed; `EDDY_TEST_SEED` replays a run. The last line printed is the
//! result (`crash loop result: …`).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ChildServer;
use eddy::client::Client;
use eddy::wire::batch::{BatchBuilder, Batches, Headers};
use eddy::wire::{Acks, FetchPartition, Response};

/// Cycles when `EDDY_CRASH_CYCLES` is not set.
const CYCLES_DEFAULT: usize = 50;
/// Producers writing at once.
const PRODUCERS: usize = 4;
/// Partitions of the topic (producer `p` writes to partition `p % 4`).
const PARTITIONS: u32 = 4;
/// Longest a restart (recovery included) may take before the listener is up.
const START_MS_MAX: u128 = 30_000;
/// The kill comes this long after the cycle's first acknowledgement, at
/// random, in ms.
const KILL_AFTER_MS: std::ops::Range<u64> = 0..250;
/// Longest a restarted server may take to acknowledge its first batch.
const FIRST_ACK_MS_MAX: u64 = 30_000;

/// What the test knows was acknowledged: (partition, offset) → value.
type Acked = Arc<Mutex<HashMap<(u32, u64), Vec<u8>>>>;

fn batch_of(values: &[Vec<u8>]) -> Vec<u8> {
    let size = values.iter().map(|v| v.len() + 32).sum::<usize>() + 64;
    let mut b = BatchBuilder::new(vec![0u8; size], 1_000).unwrap();
    for v in values {
        b.push(1_000, None, v, Headers::EMPTY).unwrap();
    }
    let (buf, len) = b.finish();
    buf[..len].to_vec()
}

/// Reads a whole partition and checks it: dense offsets from 0, every
/// batch intact. Returns offset → value.
async fn read_partition(client: &Client, partition: u32) -> HashMap<u64, Vec<u8>> {
    let mut records = HashMap::new();
    let mut offset = 0u64;
    loop {
        let body = client
            .fetch("crash", &[FetchPartition { partition, offset }], 1 << 20, 0)
            .await
            .unwrap();
        let Response::Fetched(fetched) = body.decode().unwrap() else {
            panic!("not a fetch answer");
        };
        let p = &fetched.partitions[0];
        assert_eq!(p.error, None, "partition {partition} at {offset}");
        assert_eq!(p.log_start, 0, "nothing is ever removed here");
        if p.batches.is_empty() {
            assert_eq!(
                offset, p.high_watermark,
                "partition {partition} ends at its watermark"
            );
            return records;
        }
        for batch in Batches::new(p.batches) {
            let batch = batch.unwrap_or_else(|e| panic!("partition {partition} at {offset}: {e}"));
            batch.validate().unwrap();
            assert_eq!(
                batch.base_offset(),
                offset,
                "partition {partition}: offsets are dense"
            );
            for (i, record) in batch.records().enumerate() {
                let record = record.unwrap();
                records.insert(offset + i as u64, record.value.to_vec());
            }
            offset = batch.end_offset();
        }
    }
}

/// One producer's cycle: durable batches to its partition until the
/// connection fails. Returns the records acknowledged, or what went wrong
/// when it failed before the kill was sent.
async fn produce_until_killed(
    options: eddy::client::ClientOptions,
    producer: usize,
    cycle: usize,
    mut rng: fastrand::Rng,
    acked: Acked,
    killed: Arc<AtomicBool>,
    first_ack: smol::channel::Sender<()>,
) -> Result<usize, String> {
    let failed = |what: String| {
        if killed.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(format!(
                "cycle {cycle}, producer {producer}: {what} before the kill"
            ))
        }
    };
    let client = match Client::connect(&options).await {
        Ok(client) => client,
        Err(e) => return failed(format!("connect failed: {e}")).map(|()| 0),
    };
    let partition = producer as u32 % PARTITIONS;
    let mut records = 0usize;
    for b in 0.. {
        let values: Vec<Vec<u8>> = (0..rng.usize(1..20))
            .map(|r| format!("c{cycle}-p{producer}-b{b}-r{r}").into_bytes())
            .collect();
        let acks = match client
            .produce(
                "crash",
                Some(partition),
                Acks::Durable,
                30_000,
                &batch_of(&values),
            )
            .await
        {
            Ok(acks) => acks,
            Err(e) => return failed(format!("produce failed: {e}")).map(|()| records),
        };
        {
            let mut acked = acked.lock().unwrap();
            for ack in acks {
                assert_eq!(ack.record_count as usize, values.len());
                for (i, v) in values.iter().enumerate() {
                    acked.insert((ack.partition, ack.base_offset + i as u64), v.clone());
                }
            }
        }
        records += values.len();
        let _ = first_ack.try_send(());
    }
    unreachable!("the loop ends with the connection")
}

#[test]
fn kill_9_during_durable_ingest_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("EDDY_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CYCLES_DEFAULT);
    let seed = std::env::var("EDDY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("{cycles} cycles, seed {seed} (EDDY_TEST_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let acked: Acked = Arc::default();
    let (mut start_ms_max, mut acked_total, mut unacked_kept) = (0u128, 0usize, 0usize);
    // Records acknowledged in each cycle.
    let mut per_cycle: Vec<usize> = Vec::with_capacity(cycles);
    // One more start than kills: the last one only checks.
    for cycle in 0..=cycles {
        let started = Instant::now();
        let server = ChildServer::start(dir.path(), &[]);
        let start_ms = started.elapsed().as_millis();
        assert!(
            start_ms <= START_MS_MAX,
            "cycle {cycle}: the server took {start_ms} ms to start"
        );
        start_ms_max = start_ms_max.max(start_ms);
        let options = server.options();
        let kill_after = Duration::from_millis(rng.u64(KILL_AFTER_MS));
        smol::block_on(async {
            let client = Client::connect(&options).await.unwrap();
            if cycle == 0 {
                client.create_topic("crash", PARTITIONS).await.unwrap();
            }
            // Everything acknowledged before is there, at its offset.
            let mut stored = 0usize;
            for partition in 0..PARTITIONS {
                let records = read_partition(&client, partition).await;
                stored += records.len();
                for ((p, offset), value) in acked.lock().unwrap().iter() {
                    if *p == partition {
                        assert_eq!(
                            records.get(offset),
                            Some(value),
                            "cycle {cycle}: acknowledged record {p}/{offset} lost or changed"
                        );
                    }
                }
            }
            acked_total = acked.lock().unwrap().len();
            unacked_kept = stored - acked_total;
            if cycle == cycles {
                drop(client);
                assert!(server.terminate().success());
                return;
            }

            // Producers write durable batches until the kill, which comes
            // `kill_after` after the first acknowledgement of this cycle.
            let killed = Arc::new(AtomicBool::new(false));
            let (first_ack, first_acked) = smol::channel::bounded::<()>(1);
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    smol::spawn(produce_until_killed(
                        options.clone(),
                        p,
                        cycle,
                        fastrand::Rng::with_seed(rng.u64(..)),
                        acked.clone(),
                        killed.clone(),
                        first_ack.clone(),
                    ))
                })
                .collect();
            drop(first_ack);
            let progress = smol::future::or(async { first_acked.recv().await.is_ok() }, async {
                smol::Timer::after(Duration::from_millis(FIRST_ACK_MS_MAX)).await;
                false
            })
            .await;
            if !progress {
                // Every producer ended (failed) or the wait ran out.
                killed.store(true, Ordering::SeqCst);
                server.kill9();
                let mut results = Vec::new();
                for p in producers {
                    results.push(p.await);
                }
                panic!(
                    "cycle {cycle}: no batch acknowledged within {FIRST_ACK_MS_MAX} ms of the \
                     restart; producers: {results:?}"
                );
            }
            smol::Timer::after(kill_after).await;
            killed.store(true, Ordering::SeqCst);
            server.kill9();
            let mut records = 0usize;
            for p in producers {
                records += p.await.unwrap_or_else(|e| panic!("{e}"));
            }
            assert!(records > 0, "cycle {cycle}: nothing acknowledged");
            per_cycle.push(records);
        });
    }
    assert_eq!(per_cycle.len(), cycles);
    let mut sorted = per_cycle.clone();
    sorted.sort_unstable();
    println!(
        "{cycles} kill -9 cycles: {acked_total} acknowledged records checked after the last restart \
         ({unacked_kept} more were fsynced but their ack was lost in the kill); \
         records acknowledged per cycle: min {}, median {}, max {}; slowest start {start_ms_max} ms",
        sorted.first().copied().unwrap_or(0),
        sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        sorted.last().copied().unwrap_or(0),
    );
    println!(
        "crash loop result: cycles={cycles} acked_verified={acked_total} \
         unacked_kept={unacked_kept} cycles_with_progress={} min_acked_per_cycle={} \
         slowest_start_ms={start_ms_max} seed={seed}",
        per_cycle.iter().filter(|&&n| n > 0).count(),
        sorted.first().copied().unwrap_or(0),
    );
}
