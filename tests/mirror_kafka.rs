//! Mirroring into a Kafka-protocol cluster (`kafka://`), exactly once,
//! against librdkafka's mock cluster, verified by a real Kafka consumer
//! (librdkafka through the `rdkafka` crate): 100k keyed records over 4
//! partitions with headers, every codec on the uplink, brokers down at start
//! and taken down and up mid-stream, slow brokers, the source hub killed
//! with -9 mid-mirror, and a proxy on every connection that refuses, cuts,
//! stalls (answers lost, or everything) and delays. Against a test broker
//! with Kafka's idempotent-producer checks (which the mock cluster makes
//! only for transactional producers): requests that land after their
//! resend, across a session and across a kill -9, an unknown producer, and
//! partition counts.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::kafka_broker::KafkaBroker;
use common::mirror::{
    check_exactly_once, link_status, mirrored_and_end, produce_range, read_all, wait_mirrored,
    wait_progress, wait_reconnects, wait_share, Seen, PARTITIONS,
};
use common::proxy::{Direction, Mode, Proxy};
use common::{ChildServer, TestServer};
use eddy::client::Client;
use eddy::config::mirror::UplinkCompression;
use eddy::config::MirrorLinkConfig;
use eddy::mirror::records::{parse_source, SOURCE_HEADER};
use eddy::wire::Acks;
use kafka_protocol::messages::ApiKey;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

const HUB: &str = "gw-1";
const RECORDS: u64 = 100_000;

fn link_to(bootstrap: &str) -> MirrorLinkConfig {
    let mut link = MirrorLinkConfig::parse(&format!("dc=kafka://{bootstrap}")).unwrap();
    link.backoff_min_ms = 50;
    link.backoff_max_ms = 500;
    link.ping_interval_ms = 200;
    link.ping_timeout_ms = 1_000;
    link.request_timeout_ms = 5_000;
    link
}

fn source_with(link: MirrorLinkConfig) -> TestServer {
    TestServer::start_with(|c| {
        c.hub_id = Some(HUB.into());
        c.mirror = vec![link];
    })
}

/// Every record of `topic` in the cluster, read by a Kafka consumer from
/// the beginning of each partition to its high watermark.
fn consume_all(bootstrap: &str, topic: &str, partitions: u32) -> Vec<Seen> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "eddy-mirror-test")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p as i32, Duration::from_secs(10))
            .unwrap();
        ends.insert(p, high);
        assignment
            .add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let total: i64 = ends.values().sum();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (out.len() as i64) < total {
        assert!(
            Instant::now() < deadline,
            "consumer read {} of {total} records",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = message.unwrap();
        let mut headers = Vec::new();
        if let Some(h) = m.headers() {
            for header in h.iter() {
                headers.push((
                    header.key.to_string(),
                    header.value.unwrap_or_default().to_vec(),
                ));
            }
        }
        out.push(Seen {
            partition: m.partition() as u32,
            offset: m.offset() as u64,
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp_ms: m.timestamp().to_millis().unwrap(),
        });
    }
    out
}

/// The Kafka copy holds each source record once, in order, with headers,
/// and its `eddy.source` header names the record's place at the source.
async fn check_against_source(client: &Client, bootstrap: &str, expected: &[u64]) {
    let copied = consume_all(bootstrap, "gw-1.sensors", PARTITIONS);
    check_exactly_once(&copied, expected, Some(SOURCE_HEADER));
    check_sources(client, &copied).await;
}

/// Every copied record's `eddy.source` header names its place at the
/// source, in the same partition number.
async fn check_sources(client: &Client, copied: &[Seen]) {
    let local = read_all(client, "sensors").await;
    let place: BTreeMap<Vec<u8>, (u32, u64)> = local
        .iter()
        .map(|s| (s.value.clone(), (s.partition, s.offset)))
        .collect();
    for s in copied {
        let header = s
            .headers
            .iter()
            .find(|(n, _)| n == SOURCE_HEADER)
            .expect("every mirrored record has its source position");
        let source = parse_source(&header.1).unwrap();
        assert_eq!(
            (source.hub.as_str(), source.topic.as_str()),
            (HUB, "sensors")
        );
        assert_eq!(place[&s.value], (source.partition, source.offset));
        assert_eq!(
            s.partition, source.partition,
            "partition i goes to partition i"
        );
    }
}

#[test]
fn mirrors_100k_keyed_records_into_kafka_exactly_once() {
    let cluster = MockCluster::new(3).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let source = source_with(link_to(&bootstrap));
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(180)).await;
        let status = link_status(&client, "dc").await;
        assert_eq!(status.records_mirrored, RECORDS, "{status:?}");
        let expected: Vec<u64> = (0..RECORDS).collect();
        check_against_source(&client, &bootstrap, &expected).await;
    });
}

#[test]
fn every_codec_on_the_uplink_is_readable_by_kafka_consumers() {
    for compression in [
        UplinkCompression::None,
        UplinkCompression::Snappy,
        UplinkCompression::Lz4,
        UplinkCompression::Zstd,
    ] {
        let cluster = MockCluster::new(1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let mut link = link_to(&bootstrap);
        link.compression = compression;
        let source = source_with(link);
        smol::block_on(async {
            let client = source.client().await;
            client.create_topic("sensors", PARTITIONS).await.unwrap();
            // Small local batches (10 records): packed into Kafka batches
            // of up to request_bytes_max before they are compressed.
            produce_range(&client, "sensors", 0..10_000, 10, Acks::Durable).await;
            wait_mirrored(&client, "dc", "sensors", Duration::from_secs(120)).await;
            let expected: Vec<u64> = (0..10_000).collect();
            check_against_source(&client, &bootstrap, &expected).await;
        });
        let (raw, sent) = common::mirror::sent_bytes(&source, "dc");
        assert!(raw > 0.0, "{compression:?}");
        // Kafka batches carry an `eddy.source` header per record. How much
        // a codec saves depends on how many local batches a request packs,
        // which a live link reads as they become durable (measured here:
        // 0.4× to 0.6× of the stored bytes); the ratios on a backlog are
        // measured in benches/compression.rs. Here: every codec compresses.
        eprintln!("{compression:?}: {sent} bytes sent for {raw} stored");
        if compression != UplinkCompression::None {
            assert!(sent < raw * 0.8, "{compression:?}: {sent} of {raw} bytes");
        }
    }
}

/// The broker that leads each partition of `topic`.
fn leaders(bootstrap: &str, topic: &str) -> Vec<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let t = &metadata.topics()[0];
    let mut leaders: Vec<(i32, i32)> = t
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect();
    leaders.sort();
    leaders.into_iter().map(|(_, l)| l).collect()
}

#[test]
fn kafka_down_at_start_then_brokers_restarted_and_slow_mid_stream() {
    let cluster = MockCluster::new(3).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    for broker in 1..=3 {
        cluster.broker_down(broker).unwrap();
    }
    let mut link = link_to(&bootstrap);
    // Slow enough that the outages below land mid-stream.
    link.bandwidth_bytes_per_s = 1_000_000;
    link.request_bytes_max = 64 << 10;
    let source = source_with(link);
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        let down = wait_reconnects(&client, 0, 1).await;
        assert_eq!(mirrored_and_end(&client, "dc", "sensors").await.0, 0);
        for broker in 1..=3 {
            cluster.broker_up(broker).unwrap();
        }
        let mut reconnects = down;
        wait_share(&client, "sensors", 0.05).await;
        let leaders = leaders(&bootstrap, "gw-1.sensors");
        eprintln!("partition leaders: {leaders:?}");
        for (share, partition) in [(0.2, 0), (0.4, 1), (0.6, 2)] {
            wait_share(&client, "sensors", share).await;
            let broker = leaders[partition];
            // A broker dies (connections dropped, new ones refused) and
            // comes back once the link noticed.
            cluster.broker_down(broker).unwrap();
            reconnects = wait_reconnects(&client, reconnects, 1).await;
            cluster.broker_up(broker).unwrap();
        }
        wait_share(&client, "sensors", 0.8).await;
        for broker in 1..=3 {
            cluster
                .broker_round_trip_time(broker, Duration::from_millis(150))
                .unwrap();
        }
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(180)).await;
        let expected: Vec<u64> = (0..RECORDS).collect();
        check_against_source(&client, &bootstrap, &expected).await;
    });
}

#[test]
fn source_killed_with_kill_9_mid_mirror_into_kafka() {
    let cluster = MockCluster::new(3).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            "hub_id = \"{HUB}\"\n\n[[mirror]]\nname = \"dc\"\nurl = \"kafka://{bootstrap}\"\n\
             bandwidth_bytes_per_s = 3000000\nrequest_bytes_max = 65536\nbackoff_min_ms = 50\n\
             backoff_max_ms = 500\nping_interval_ms = 200\nping_timeout_ms = 1000\n"
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let server = ChildServer::start(&data, &args);
    let expected: Vec<u64> = (0..RECORDS).collect();
    smol::block_on(async {
        let client = Client::connect(&server.options()).await.unwrap();
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        wait_share(&client, "sensors", 0.3).await;
    });
    server.kill9();
    let server = ChildServer::start(&data, &args);
    smol::block_on(async {
        let client = Client::connect(&server.options()).await.unwrap();
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(180)).await;
        check_against_source(&client, &bootstrap, &expected).await;
    });
}

/// The exactly-once hole of per-session producers: a Produce the broker
/// gets only after the next session read the partition's tail and sent
/// the same records again. Against a broker with Kafka's idempotence
/// checks (librdkafka's mock cluster has them only for transactional
/// producers), through a proxy on every connection.
#[test]
fn a_request_that_lands_after_the_next_session_resent_it_is_not_appended() {
    let broker = KafkaBroker::start();
    let proxy = Proxy::start(Some(broker.addr), Mode::Forward);
    broker.advertise(proxy.addr);
    let mut link = link_to(&proxy.addr.to_string());
    // Requests keep flowing when the uplink stalls.
    link.bandwidth_bytes_per_s = 1_000_000;
    link.request_bytes_max = 16 << 10;
    // Requests of their full size, so that a few fill the proxy's hold.
    link.compression = UplinkCompression::None;
    let source = source_with(link);
    let records = 50_000;
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..records, 1_000, Acks::Durable).await;
        wait_share(&client, "sensors", 0.1).await;
        // Requests on the connections open now stop short of the broker
        // (the radio died with them in flight), Produce requests among them.
        let reconnects = link_status(&client, "dc").await.reconnects;
        let closed = broker.connections_closed();
        let held = proxy.hold(Direction::Up);
        assert_eq!(held, 3, "control, ping and the broker's connection");
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.held_bytes() < 8 << 10 {
            assert!(Instant::now() < deadline, "no request held");
            smol::Timer::after(Duration::from_millis(5)).await;
        }
        // The link gives up on them and a new session (new connections
        // pass) resends those records, and more.
        wait_reconnects(&client, reconnects, 1).await;
        let (at_hold, _) = mirrored_and_end(&client, "dc", "sensors").await;
        wait_share(
            &client,
            "sensors",
            (at_hold + 5_000) as f64 / records as f64,
        )
        .await;
        // Now the held requests arrive, long after their resend; the broker
        // has handled them once those connections ended (an idle one ended
        // already: its close passes a hold).
        proxy.release();
        let deadline = Instant::now() + Duration::from_secs(30);
        while broker.connections_closed() < closed + held as u64 {
            assert!(
                Instant::now() < deadline,
                "held connections never ended: {} closed, {closed} before, proxy holds {} bytes, {:?}",
                broker.connections_closed(),
                proxy.held_bytes(),
                proxy.bytes()
            );
            smol::Timer::after(Duration::from_millis(5)).await;
        }
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(120)).await;
        let expected: Vec<u64> = (0..records).collect();
        let copied = broker.records("gw-1.sensors");
        check_exactly_once(&copied, &expected, Some(SOURCE_HEADER));
        check_sources(&client, &copied).await;
        // And the late requests did reach it: answered as duplicates or
        // refused as out of order, never appended.
        let stats = broker.stats();
        assert!(stats.duplicates + stats.out_of_order >= 1, "{stats:?}");
        assert_eq!(stats.fenced, 0, "{stats:?}");
    });
}

/// A hub killed with -9 while its first Produce requests (into empty
/// partitions) are on their way: restarted, it writes with the same
/// producer id (durable before its first use), so those requests, landing
/// after the restarted hub resent their records, are duplicates.
#[test]
fn first_requests_that_land_after_a_restart_are_not_appended() {
    let broker = KafkaBroker::start();
    let proxy = Proxy::start(Some(broker.addr), Mode::Forward);
    broker.advertise(proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            "hub_id = \"{HUB}\"\n\n[[mirror]]\nname = \"dc\"\nurl = \"kafka://{}\"\n\
             backoff_min_ms = 50\nbackoff_max_ms = 500\nping_interval_ms = 200\n\
             ping_timeout_ms = 1000\ncompression = \"none\"\n",
            proxy.addr
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let server = ChildServer::start(&data, &args);
    let records = 2_000;
    let closed = smol::block_on(async {
        let client = Client::connect(&server.options()).await.unwrap();
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        // Set up upstream (empty partitions: ListOffsets latest and
        // earliest, no tail to fetch) before anything is sent.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = link_status(&client, "dc").await;
            if status.state == "up" && broker.handled(ApiKey::ListOffsets) >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "{status:?}");
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        let closed = broker.connections_closed();
        assert_eq!(proxy.hold(Direction::Up), 3);
        produce_range(&client, "sensors", 0..records, 500, Acks::Durable).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.held_bytes() < 16 << 10 {
            assert!(Instant::now() < deadline, "no request held");
            smol::Timer::after(Duration::from_millis(5)).await;
        }
        closed
    });
    server.kill9();
    let server = ChildServer::start(&data, &args);
    smol::block_on(async {
        let client = Client::connect(&server.options()).await.unwrap();
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(60)).await;
        // What the killed hub sent arrives now.
        proxy.release();
        let deadline = Instant::now() + Duration::from_secs(30);
        while broker.connections_closed() < closed + 3 {
            assert!(Instant::now() < deadline, "held connections never ended");
            smol::Timer::after(Duration::from_millis(5)).await;
        }
        let expected: Vec<u64> = (0..records).collect();
        let copied = broker.records("gw-1.sensors");
        check_exactly_once(&copied, &expected, Some(SOURCE_HEADER));
        check_sources(&client, &copied).await;
        let stats = broker.stats();
        assert!(stats.duplicates + stats.out_of_order >= 1, "{stats:?}");
    });
}

/// A broker that forgot the link's producer and, as before Kafka 2.5,
/// refuses it (`UNKNOWN_PRODUCER_ID`): the partition starts a fresh chain
/// and the mirror goes on, exactly once.
#[test]
fn an_unknown_producer_starts_a_fresh_chain() {
    let broker = KafkaBroker::start();
    let mut link = link_to(&broker.addr.to_string());
    link.bandwidth_bytes_per_s = 1_000_000;
    link.request_bytes_max = 16 << 10;
    let source = source_with(link);
    let records = 20_000;
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..records, 1_000, Acks::Durable).await;
        wait_share(&client, "sensors", 0.2).await;
        broker.forget_producers_as_an_old_broker();
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(120)).await;
        let status = link_status(&client, "dc").await;
        assert!(status.reconnects >= 1, "{status:?}");
        let stats = broker.stats();
        assert!(stats.unknown_producer >= 1, "{stats:?}");
        let expected: Vec<u64> = (0..records).collect();
        let copied = broker.records("gw-1.sensors");
        check_exactly_once(&copied, &expected, Some(SOURCE_HEADER));
    });
}

/// librdkafka's mock cluster (one broker) behind a proxy: Metadata names
/// the proxy as the broker's address, so every connection of the mirror,
/// and of the consumer that checks what arrived, goes through it.
struct ProxiedMock {
    /// Owns the mock cluster (destroyed with it).
    _client: BaseProducer,
    proxy: Proxy,
}

fn proxied_mock(mode: Mode) -> ProxiedMock {
    let client: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .unwrap();
    let real: std::net::SocketAddr = client
        .client()
        .mock_cluster()
        .expect("a mock cluster")
        .bootstrap_servers()
        .parse()
        .unwrap();
    let proxy = Proxy::start(Some(real), mode);
    let host = std::ffi::CString::new("127.0.0.1").unwrap();
    // SAFETY: the rdkafka crate has no safe call for a mock broker's
    // advertised address. The handle comes from a live client that owns
    // its mock cluster (so the cluster pointer is valid while `client`
    // lives, and `client` outlives this call), the host is a valid C string
    // that librdkafka copies, and broker 1 exists in a 1-broker cluster.
    unsafe {
        let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(client.client().native_ptr());
        assert!(!cluster.is_null());
        rdkafka::bindings::rd_kafka_mock_broker_set_host_port(
            cluster,
            1,
            host.as_ptr(),
            i32::from(proxy.addr.port()),
        );
    }
    ProxiedMock {
        _client: client,
        proxy,
    }
}

/// Refused, cut, answers lost, stalled and delayed, on every connection to
/// librdkafka's mock cluster, checked by a Kafka consumer. (Requests that
/// arrive only after their resend are the test above's: the mock cluster
/// does not check an idempotent producer's sequences.)
#[test]
fn kafka_link_refused_cut_stalled_and_delayed_through_a_proxy() {
    let mock = proxied_mock(Mode::Refuse);
    let proxy = &mock.proxy;
    let bootstrap = proxy.addr.to_string();
    let mut link = link_to(&bootstrap);
    link.bandwidth_bytes_per_s = 1_000_000;
    link.request_bytes_max = 64 << 10;
    let (ping_interval_ms, ping_timeout_ms) = (link.ping_interval_ms, link.ping_timeout_ms);
    let source = source_with(link);
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        // Down at start: nothing forwarded, and the link says why.
        wait_reconnects(&client, 0, 1).await;
        assert_eq!(mirrored_and_end(&client, "dc", "sensors").await.0, 0);
        assert!(link_status(&client, "dc").await.last_error.is_some());
        proxy.set_mode(Mode::Forward);
        let mut mirrored = wait_progress(&client, "sensors", 0, 4_000).await;

        // Cut: one new session, which resumes from the tails.
        let reconnects = link_status(&client, "dc").await.reconnects;
        proxy.cut();
        wait_reconnects(&client, reconnects, 1).await;
        mirrored = wait_progress(&client, "sensors", mirrored, 4_000).await;
        assert_eq!(link_status(&client, "dc").await.reconnects, reconnects + 1);

        // Answers lost: requests reach the broker and are appended, their
        // answers (and the pings') never come back. The next session finds
        // them in the tails and does not send them again.
        let reconnects = link_status(&client, "dc").await.reconnects;
        assert!(proxy.hold(Direction::Down) >= 3);
        wait_reconnects(&client, reconnects, 1).await;
        mirrored = wait_progress(&client, "sensors", mirrored, 4_000).await;
        assert_eq!(link_status(&client, "dc").await.reconnects, reconnects + 1);
        proxy.release();

        // Stall: nothing moves on the open connections; the ping notices
        // within its interval and timeout. What they held never arrives.
        let reconnects = link_status(&client, "dc").await.reconnects;
        let stalled_at = Instant::now();
        assert!(proxy.hold(Direction::Both) >= 3);
        wait_reconnects(&client, reconnects, 1).await;
        let noticed = stalled_at.elapsed();
        assert!(
            noticed <= Duration::from_millis(ping_interval_ms + ping_timeout_ms + 1_500),
            "stall noticed after {noticed:?}"
        );
        mirrored = wait_progress(&client, "sensors", mirrored, 4_000).await;
        assert_eq!(link_status(&client, "dc").await.reconnects, reconnects + 1);
        proxy.cut_held();

        // Delay: slow, but up.
        let reconnects = link_status(&client, "dc").await.reconnects;
        proxy.set_mode(Mode::Delay(40));
        mirrored = wait_progress(&client, "sensors", mirrored, 4_000).await;
        assert_eq!(link_status(&client, "dc").await.reconnects, reconnects);
        proxy.set_mode(Mode::Forward);
        assert!(mirrored < RECORDS, "the faults came too late");
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(180)).await;
        assert_eq!(link_status(&client, "dc").await.reconnects, reconnects);
        let expected: Vec<u64> = (0..RECORDS).collect();
        check_against_source(&client, &bootstrap, &expected).await;
    });
}

/// Partition i goes to upstream partition i: a Kafka topic with more
/// partitions is used (the extra ones stay empty), one with fewer is
/// refused with an error naming the fix. (The test broker auto-creates
/// topics with 4 partitions.)
#[test]
fn an_upstream_topic_needs_at_least_as_many_partitions() {
    let broker = KafkaBroker::start();
    let source = source_with(link_to(&broker.addr.to_string()));
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("narrow", 2).await.unwrap();
        client.create_topic("wide", 6).await.unwrap();
        let batch = common::mirror::batch_of(0..500);
        client
            .produce("narrow", None, Acks::Durable, 10_000, &batch)
            .await
            .unwrap();
        client
            .produce("wide", None, Acks::Durable, 10_000, &batch)
            .await
            .unwrap();
        wait_mirrored(&client, "dc", "narrow", Duration::from_secs(60)).await;
        let copied = broker.records("gw-1.narrow");
        let expected: Vec<u64> = (0..500).collect();
        check_exactly_once(&copied, &expected, Some(SOURCE_HEADER));
        assert!(copied.iter().all(|s| s.partition < 2));
        let error = common::mirror::wait_error(&client, "gw-1.wide").await;
        assert!(
            error.contains("gw-1.wide")
                && error.contains("has 4 partitions upstream but 6 here")
                && error.contains("--alter --partitions 6"),
            "{error}"
        );
        assert_eq!(mirrored_and_end(&client, "dc", "wide").await.0, 0);
        assert!(broker.records("gw-1.wide").is_empty());
    });
}
