//! Mirror test helpers: a numbered, keyed data set with headers, readers
//! for an eddy topic, and the exactly-once / per-partition-order check.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use eddy::client::{records_from, Client, MirrorLinkInfo};
use eddy::wire::batch::{BatchBuilder, Headers};
use eddy::wire::{Acks, FetchPartition, Response};

/// Partitions of the mirrored topics in these tests.
pub const PARTITIONS: u32 = 4;
/// Distinct keys of the data set.
pub const KEYS: u64 = 997;

/// Header name and value pairs.
pub type HeaderList = Vec<(String, Vec<u8>)>;

/// Record `i` of the data set: key, value, headers.
pub fn record(i: u64) -> (Vec<u8>, Vec<u8>, HeaderList) {
    (
        format!("key-{}", i % KEYS).into_bytes(),
        format!("value-{i:08}-{}", "x".repeat(64)).into_bytes(),
        vec![
            ("seq".to_string(), i.to_string().into_bytes()),
            ("device".to_string(), format!("dev-{}", i % 13).into_bytes()),
        ],
    )
}

/// The number in a data-set value.
pub fn index_of(value: &[u8]) -> u64 {
    std::str::from_utf8(&value[6..14]).unwrap().parse().unwrap()
}

/// One batch of records `range`.
pub fn batch_of(range: Range<u64>) -> Vec<u8> {
    let mut b =
        BatchBuilder::with_capacity(range.clone().count() * 200 + 256, 1_700_000_000_000).unwrap();
    for i in range {
        let (key, value, headers) = record(i);
        let pairs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let encoded = Headers::encode_vec(&pairs);
        let ts = 1_700_000_000_000 + i64::try_from(i).unwrap();
        b.push(ts, Some(&key), &value, Headers(&encoded)).unwrap();
    }
    b.finish_vec()
}

/// Produces records `range` to `topic` (keys spread them over its
/// partitions) in batches of `batch`, at ack level `acks`.
pub async fn produce_range(
    client: &Client,
    topic: &str,
    range: Range<u64>,
    batch: u64,
    acks: Acks,
) {
    let mut start = range.start;
    while start < range.end {
        let end = (start + batch).min(range.end);
        client
            .produce(topic, None, acks, 60_000, &batch_of(start..end))
            .await
            .unwrap_or_else(|e| panic!("produce {start}..{end} to {topic}: {e}"));
        start = end;
    }
}

/// A record as read back: partition, offset, key, value, headers, time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub partition: u32,
    pub offset: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: HeaderList,
    pub timestamp_ms: i64,
}

/// Every durable record of `topic`, partition by partition.
pub async fn read_all(client: &Client, topic: &str) -> Vec<Seen> {
    let partitions = client.describe_topic(topic).await.unwrap().partitions;
    let mut out = Vec::new();
    for p in 0..partitions {
        let mut offset = 0;
        loop {
            let body = client
                .fetch(
                    topic,
                    &[FetchPartition {
                        partition: p,
                        offset,
                    }],
                    4 << 20,
                    0,
                )
                .await
                .unwrap();
            let Response::Fetched(f) = body.decode().unwrap() else {
                unreachable!()
            };
            let part = &f.partitions[0];
            if let Some(e) = part.error {
                // Below the log start (removed): continue from there.
                assert_eq!(e, eddy::wire::ErrorCode::OffsetOutOfRange);
                offset = part.log_start;
                continue;
            }
            if part.batches.is_empty() {
                break;
            }
            let (records, next) = records_from(part.batches, p, offset).unwrap();
            for r in records {
                out.push(Seen {
                    partition: p,
                    offset: r.offset,
                    key: r.key.unwrap_or_default(),
                    value: r.value,
                    headers: r.headers,
                    timestamp_ms: r.timestamp_ms,
                });
            }
            offset = next.unwrap();
        }
    }
    out
}

/// Checks that `seen` holds each record of `expected` exactly once, with
/// its key, headers and timestamp, all of a key in one partition, and in
/// production order within each partition. `extra_header` (name) may be
/// present on every record (the Kafka source position) and is ignored.
pub fn check_exactly_once(seen: &[Seen], expected: &[u64], extra_header: Option<&str>) {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last_in_partition: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for s in seen {
        let i = index_of(&s.value);
        *count.entry(i).or_default() += 1;
        let (key, value, headers) = record(i);
        assert_eq!(s.key, key, "record {i}: key");
        assert_eq!(s.value, value, "record {i}: value");
        let got: Vec<_> = s
            .headers
            .iter()
            .filter(|(n, _)| Some(n.as_str()) != extra_header)
            .cloned()
            .collect();
        assert_eq!(got, headers, "record {i}: headers");
        assert_eq!(
            s.timestamp_ms,
            1_700_000_000_000 + i64::try_from(i).unwrap(),
            "record {i}: timestamp"
        );
        let p = *partition_of_key.entry(key).or_insert(s.partition);
        assert_eq!(p, s.partition, "record {i}: its key is in two partitions");
        if let Some((offset, before)) = last_in_partition.get(&s.partition) {
            assert!(
                s.offset > *offset && i > *before,
                "partition {}: record {i} at {} follows record {before} at {offset}",
                s.partition,
                s.offset
            );
        }
        last_in_partition.insert(s.partition, (s.offset, i));
    }
    let doubled: Vec<_> = count.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        doubled.is_empty(),
        "records seen more than once: {doubled:?}"
    );
    let missing: Vec<_> = expected
        .iter()
        .filter(|i| !count.contains_key(i))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} records missing, e.g. {missing:?}",
        expected.iter().filter(|i| !count.contains_key(i)).count()
    );
    assert_eq!(seen.len(), expected.len(), "unexpected extra records");
}

/// The status of link `name`.
pub async fn link_status(client: &Client, name: &str) -> MirrorLinkInfo {
    client
        .mirror_status()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.link == name)
        .unwrap_or_else(|| panic!("no mirror link {name}"))
}

/// Records link `name` has forwarded of `topic` (sum of its partitions'
/// `mirrored` watermarks) and their log ends.
pub async fn mirrored_and_end(client: &Client, name: &str, topic: &str) -> (u64, u64) {
    let link = link_status(client, name).await;
    link.partitions
        .iter()
        .filter(|p| p.topic == topic)
        .fold((0, 0), |(m, e), p| (m + p.mirrored, e + p.log_end))
}

/// Polls (every 20 ms, the mirror's status is a counter, not an event the
/// test can wait on) until link `name` has forwarded all of `topic`;
/// panics after `limit` with the link's status.
pub async fn wait_mirrored(client: &Client, name: &str, topic: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let link = link_status(client, name).await;
        let parts: Vec<_> = link
            .partitions
            .iter()
            .filter(|p| p.topic == topic)
            .collect();
        if !parts.is_empty() && parts.iter().all(|p| p.lag_records == 0 && p.log_end > 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "link {name} did not mirror {topic} within {limit:?}: {link:#?}"
        );
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// Waits (polling the status) until link "dc" has forwarded at least
/// `share` of `topic`'s offsets.
pub async fn wait_share(client: &Client, topic: &str, share: f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (mirrored, end) = mirrored_and_end(client, "dc", topic).await;
        if end > 0 && mirrored as f64 >= share * end as f64 {
            return;
        }
        assert!(Instant::now() < deadline, "stuck at {mirrored} of {end}");
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

/// Waits until link "dc" has failed `more` times more than `before`;
/// returns the count.
pub async fn wait_reconnects(client: &Client, before: u64, more: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = link_status(client, "dc").await.reconnects;
        if now >= before + more {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the link never noticed the outage: {:#?}",
            link_status(client, "dc").await
        );
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

/// Waits until link "dc" is up and has forwarded at least `more` records
/// of `topic` beyond `before`; returns how far it got.
pub async fn wait_progress(client: &Client, topic: &str, before: u64, more: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = link_status(client, "dc").await;
        let (now, _) = mirrored_and_end(client, "dc", topic).await;
        if status.state == "up" && now >= before + more {
            return now;
        }
        assert!(Instant::now() < deadline, "no progress: {status:?}");
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

/// Waits until link "dc"'s last error mentions `needle`; returns it.
pub async fn wait_error(client: &Client, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = link_status(client, "dc").await;
        let error = status.last_error.clone().unwrap_or_default();
        if error.contains(needle) {
            return error;
        }
        assert!(
            Instant::now() < deadline,
            "no error about {needle}: {status:?}"
        );
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

/// Link `name`'s bytes sent before and after compression (its metrics
/// `eddy_mirror_sent_raw_bytes_total`, `..._compressed_bytes_total`).
pub fn sent_bytes(server: &super::TestServer, name: &str) -> (f64, f64) {
    let metrics = super::scrape(server.running().metrics_addr().unwrap());
    let value = |metric: &str| {
        super::metric(&metrics, &format!("{metric}{{link=\"{name}\"}}"))
            .unwrap_or_else(|| panic!("{metric} missing:\n{metrics}"))
    };
    (
        value("eddy_mirror_sent_raw_bytes_total"),
        value("eddy_mirror_sent_compressed_bytes_total"),
    )
}
