//! The crash loop shared by `tests/crash_loop.rs` (kill -9) and
//! `tests/power_cut.rs` (kill -9, then a power cut under FUSE): a child
//! `eddy serve` takes durable batches from several producers, is killed
//! at a random moment, and restarted on the same data directory, many
//! times; what a crash does beyond the kill is a [`Crash`].
//!
//! After every restart: every acknowledged record is there with its
//! offset and value; every record read after an earlier restart is still
//! there unchanged (consumers saw it: its offset must never be reused);
//! offsets are dense from 0 in every partition; every batch passes its CRC
//! and structure checks; the server started within [`START_MS_MAX`].
//!
//! Every cycle must make progress: the kill comes at a random moment
//! within [`KILL_AFTER_MS`] of the cycle's first acknowledgement (so it
//! still lands on batches in flight, this producer's next one and the
//! others'), and a restarted server that acknowledges nothing within
//! [`FIRST_ACK_MS_MAX`] fails the test. A producer may only fail (to
//! connect, or a produce) once the kill was sent.
//!
//! Not here: what the crash is (kill -9 only, or a power cut too) and the
//! result line each test prints.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ChildServer;
use eddy::client::Client;
use eddy::wire::batch::{BatchBuilder, Batches, Headers, ProducerStamp};
use eddy::wire::producer::ProducerInit;
use eddy::wire::{Acks, FetchPartition, Response};

/// Producers writing at once.
const PRODUCERS: usize = 4;
/// Partitions of the topic (producer `p` writes to partition `p % 4`).
const PARTITIONS: u32 = 4;
/// The topic.
const TOPIC: &str = "crash";
/// Longest a restart (recovery included) may take before the listener is up.
pub const START_MS_MAX: u128 = 30_000;
/// The kill comes this long after the cycle's first acknowledgement, at
/// random, in ms.
const KILL_AFTER_MS: std::ops::Range<u64> = 0..250;
/// Longest a restarted server may take to acknowledge its first batch.
const FIRST_ACK_MS_MAX: u64 = 30_000;
/// Longest one durable produce may wait for its fsync, in ms.
const PRODUCE_TIMEOUT_MS: u32 = 30_000;
/// Producer 0 is idempotent under this name (its partition has no other
/// writer): after every restart the sequence eddy expects from it must be
/// exactly the count of its records the log kept (its state neither lost
/// nor ahead of the log).
const IDEMPOTENT_NAME: &str = "crash-idempotent";

/// What happens to the machine around `kill -9`.
pub trait Crash {
    /// The data directory for this cycle's start (a power cut mounts here).
    fn data_dir(&mut self, cycle: usize) -> PathBuf;
    /// Called once the killed server is gone (a power cut happens here).
    fn after_kill(&mut self, cycle: usize, rng: &mut fastrand::Rng);
}

/// What a whole loop checked.
#[derive(Debug)]
pub struct Outcome {
    pub cycles: usize,
    pub seed: u64,
    /// Acknowledged records verified after the last restart.
    pub acked_verified: usize,
    /// Records stored without an acknowledgement (fsynced, ack lost).
    pub unacked_kept: usize,
    /// Records acknowledged in each cycle.
    pub per_cycle: Vec<usize>,
    /// Every start's time to listening, in ms.
    pub start_ms: Vec<u128>,
}

impl Outcome {
    pub fn start_ms_max(&self) -> u128 {
        self.start_ms.iter().copied().max().unwrap_or(0)
    }

    /// (min, median, max) of the records acknowledged per cycle.
    pub fn per_cycle_spread(&self) -> (usize, usize, usize) {
        let mut sorted = self.per_cycle.clone();
        sorted.sort_unstable();
        (
            sorted.first().copied().unwrap_or(0),
            sorted.get(sorted.len() / 2).copied().unwrap_or(0),
            sorted.last().copied().unwrap_or(0),
        )
    }
}

/// `var` as a number, or `default`.
pub fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `EDDY_TEST_SEED`, or a random seed.
pub fn seed() -> u64 {
    env_or("EDDY_TEST_SEED", fastrand::u64(..))
}

/// Records by (partition, offset): acknowledged, or read back.
type Records = HashMap<(u32, u64), Vec<u8>>;
/// What the producers know was acknowledged.
type Acked = Arc<Mutex<Records>>;

/// Reads a whole partition and checks it: dense offsets from 0, every
/// batch intact. Returns offset → value.
async fn read_partition(client: &Client, partition: u32) -> HashMap<u64, Vec<u8>> {
    let mut records = HashMap::new();
    let mut offset = 0u64;
    loop {
        let body = client
            .fetch(TOPIC, &[FetchPartition { partition, offset }], 1 << 20, 0)
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

/// Reads every partition after a restart and checks it against what was
/// acknowledged and what earlier restarts read; returns what it read.
async fn verify(client: &Client, cycle: usize, acked: &Records, seen: &Records) -> Records {
    let mut stored = Records::new();
    for partition in 0..PARTITIONS {
        for (offset, value) in read_partition(client, partition).await {
            stored.insert((partition, offset), value);
        }
    }
    for ((p, offset), value) in acked {
        assert_eq!(
            stored.get(&(*p, *offset)),
            Some(value),
            "cycle {cycle}: acknowledged record {p}/{offset} lost or changed"
        );
    }
    for ((p, offset), value) in seen {
        assert_eq!(
            stored.get(&(*p, *offset)),
            Some(value),
            "cycle {cycle}: record {p}/{offset}, read after an earlier restart, is gone or \
             changed (an offset a consumer saw was reused)"
        );
    }
    stored
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
    let mut idempotent = None;
    if producer == 0 {
        match client.init_producer(IDEMPOTENT_NAME).await {
            Ok(init) => idempotent = Some(init),
            Err(e) => return failed(format!("init producer failed: {e}")).map(|()| 0),
        }
    }
    let mut records = 0usize;
    for b in 0.. {
        let values: Vec<Vec<u8>> = (0..rng.usize(1..20))
            .map(|r| format!("c{cycle}-p{producer}-b{b}-r{r}").into_bytes())
            .collect();
        let batch = stamped_batch(&values, idempotent.as_mut());
        let produced = client
            .produce(
                TOPIC,
                Some(partition),
                Acks::Durable,
                PRODUCE_TIMEOUT_MS,
                &batch,
            )
            .await;
        let acks = match produced {
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

/// A batch of `values`, stamped for `producer` (whose next sequence it
/// advances) when there is one.
fn stamped_batch(values: &[Vec<u8>], producer: Option<&mut ProducerInit>) -> Vec<u8> {
    let mut b =
        BatchBuilder::with_capacity(values.iter().map(|v| v.len() + 64).sum(), 1_000).unwrap();
    if let Some(init) = producer {
        b.set_producer(ProducerStamp {
            producer_id: init.producer_id,
            producer_epoch: init.producer_epoch,
            base_sequence: init.next_sequence,
        });
        init.next_sequence += values.len() as i32;
    }
    for v in values {
        b.push(1_000, None, v, Headers::EMPTY).unwrap();
    }
    b.finish_vec()
}

/// Producers write durable batches until the kill, which comes
/// `kill_after` after the cycle's first acknowledgement. Returns the
/// records acknowledged in the cycle.
async fn produce_and_kill(
    server: ChildServer,
    cycle: usize,
    rng: &mut fastrand::Rng,
    acked: &Acked,
) -> usize {
    let options = server.options();
    let kill_after = Duration::from_millis(rng.u64(KILL_AFTER_MS));
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
        let log = server.log_text();
        server.kill9();
        let mut results = Vec::new();
        for p in producers {
            results.push(p.await);
        }
        panic!(
            "cycle {cycle}: no batch acknowledged within {FIRST_ACK_MS_MAX} ms of the \
             restart; producers: {results:?}; server log:\n{log}"
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
    records
}

/// Runs `cycles` crashes (and one more start that only checks), the
/// randomness drawn from `seed`.
pub fn run(cycles: usize, seed: u64, crash: &mut dyn Crash) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(seed);
    let acked: Acked = Arc::default();
    let mut seen = Records::new();
    let mut outcome = Outcome {
        cycles,
        seed,
        acked_verified: 0,
        unacked_kept: 0,
        per_cycle: Vec::with_capacity(cycles),
        start_ms: Vec::with_capacity(cycles + 1),
    };
    for cycle in 0..=cycles {
        let data_dir = crash.data_dir(cycle);
        let started = Instant::now();
        let server = ChildServer::start(&data_dir, &[]);
        let start_ms = started.elapsed().as_millis();
        assert!(
            start_ms <= START_MS_MAX,
            "cycle {cycle}: the server took {start_ms} ms to start"
        );
        outcome.start_ms.push(start_ms);
        smol::block_on(async {
            let client = Client::connect(&server.options()).await.unwrap();
            if cycle == 0 {
                client.create_topic(TOPIC, PARTITIONS).await.unwrap();
            }
            let acked_now = acked.lock().unwrap().clone();
            seen = verify(&client, cycle, &acked_now, &seen).await;
            let init = client.init_producer(IDEMPOTENT_NAME).await.unwrap();
            let kept = seen.keys().filter(|(p, _)| *p == 0).count();
            assert_eq!(
                init.next_sequence as usize, kept,
                "cycle {cycle}: the idempotent producer's next sequence is not the count \
                 of its records in the log"
            );
            outcome.acked_verified = acked_now.len();
            outcome.unacked_kept = seen.len() - acked_now.len();
        });
        if cycle == cycles {
            assert!(server.terminate().success());
            break;
        }
        let records = smol::block_on(produce_and_kill(server, cycle, &mut rng, &acked));
        outcome.per_cycle.push(records);
        crash.after_kill(cycle, &mut rng);
    }
    assert_eq!(outcome.per_cycle.len(), cycles);
    outcome
}
