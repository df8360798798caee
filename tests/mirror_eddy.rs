//! Mirroring into another eddy (`eddy://`), exactly once: 100k keyed
//! records over 4 partitions with headers, through an upstream that is down
//! at first, killed and restarted, a link that is cut, stalled and slowed,
//! a source hub killed with -9, and a disk budget reached while the uplink
//! is down.

mod common;

use std::time::Duration;

use common::mirror::{
    check_exactly_once, link_status, mirrored_and_end, produce_range, read_all, wait_mirrored,
    PARTITIONS,
};
use common::proxy::{Mode, Proxy};
use common::TestServer;
use eddy::config::MirrorLinkConfig;
use eddy::wire::Acks;

const HUB: &str = "gw-1";
const RECORDS: u64 = 100_000;

/// A link named "dc" to `addr`, trusting `ca`, with quick liveness checks.
fn link_to(addr: std::net::SocketAddr, ca: std::path::PathBuf) -> MirrorLinkConfig {
    let mut link = MirrorLinkConfig::parse(&format!("dc=eddy://{addr}")).unwrap();
    link.ca = Some(ca);
    link.server_name = Some("localhost".into());
    link.backoff_min_ms = 50;
    link.backoff_max_ms = 500;
    link.ping_interval_ms = 200;
    link.ping_timeout_ms = 1_000;
    link.request_timeout_ms = 5_000;
    link
}

fn source_with(
    link: MirrorLinkConfig,
    tweak: impl FnOnce(&mut eddy::config::ServerConfig),
) -> TestServer {
    TestServer::start_with(|c| {
        c.hub_id = Some(HUB.into());
        c.mirror = vec![link];
        tweak(c);
    })
}

#[test]
fn mirrors_100k_keyed_records_exactly_once_in_order_with_headers() {
    let upstream = TestServer::start();
    let source = source_with(link_to(upstream.addr(), upstream.ca()), |_| {});
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(120)).await;

        let up = upstream.client().await;
        let mirrored = read_all(&up, "gw-1.sensors").await;
        let expected: Vec<u64> = (0..RECORDS).collect();
        check_exactly_once(&mirrored, &expected, None);
        // Offsets and partitions are those of the source.
        let local = read_all(&client, "sensors").await;
        let place = |s: &common::mirror::Seen| (s.partition, s.offset, s.value.clone());
        assert_eq!(
            mirrored.iter().map(place).collect::<Vec<_>>(),
            local.iter().map(place).collect::<Vec<_>>()
        );
        // The watermark per link in Watermarks replies, and the status.
        let marks = client.mirrored_watermarks("sensors").await.unwrap();
        let ends = client.watermarks("sensors").await.unwrap();
        for ((p, links), end) in marks.iter().zip(&ends) {
            assert_eq!(
                links,
                &vec![("dc".to_string(), end.log_end)],
                "partition {p}"
            );
        }
        let status = link_status(&client, "dc").await;
        assert_eq!(status.state, "up");
        assert_eq!(status.records_mirrored, RECORDS);
        assert_eq!(status.partitions.len(), PARTITIONS as usize);
        assert!(status
            .partitions
            .iter()
            .all(|p| p.upstream_topic == "gw-1.sensors"));
        // The upstream topic is the mirror's alone.
        let err = up
            .produce(
                "gw-1.sensors",
                None,
                Acks::Durable,
                1_000,
                &common::values(&[b"x"]),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(eddy::wire::ErrorCode::MirrorConflict),
            "{err}"
        );
    });
}

#[test]
fn acks_mirrored_waits_for_the_upstream() {
    let upstream = TestServer::start();
    let proxy = Proxy::start(Some(upstream.addr()), Mode::Refuse);
    let source = source_with(link_to(proxy.addr, upstream.ca()), |_| {});
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("alarms", 2).await.unwrap();
        // Uplink down: appended and durable, but not acknowledged upstream.
        let err = client
            .produce(
                "alarms",
                None,
                Acks::Mirrored,
                300,
                &common::mirror::batch_of(0..10),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(eddy::wire::ErrorCode::Timeout), "{err}");
        let status = link_status(&client, "dc").await;
        assert_ne!(status.state, "up");
        assert!(status.last_error.is_some(), "{status:?}");
        // Uplink up: the next mirrored produce returns once it is upstream.
        proxy.set_mode(Mode::Forward);
        let acks = client
            .produce(
                "alarms",
                None,
                Acks::Mirrored,
                30_000,
                &common::mirror::batch_of(10..20),
            )
            .await
            .unwrap();
        let marks = client.mirrored_watermarks("alarms").await.unwrap();
        for ack in acks {
            let (_, links) = &marks[ack.partition as usize];
            assert!(links[0].1 >= ack.base_offset + u64::from(ack.record_count));
        }
        let up = upstream.client().await;
        let expected: Vec<u64> = (0..20).collect();
        check_exactly_once(&read_all(&up, "gw-1.alarms").await, &expected, None);
    });
}

#[test]
fn upstream_down_at_start_then_up() {
    let upstream = TestServer::start();
    let proxy = Proxy::start(None, Mode::Refuse);
    let source = source_with(link_to(proxy.addr, upstream.ca()), |_| {});
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        let status = link_status(&client, "dc").await;
        assert!(
            status.reconnects > 0 && status.last_error.is_some(),
            "{status:?}"
        );
        let (mirrored, end) = mirrored_and_end(&client, "dc", "sensors").await;
        assert_eq!((mirrored, end), (0, RECORDS));
        proxy.set_target(upstream.addr());
        proxy.set_mode(Mode::Forward);
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(120)).await;
        let up = upstream.client().await;
        let expected: Vec<u64> = (0..RECORDS).collect();
        check_exactly_once(&read_all(&up, "gw-1.sensors").await, &expected, None);
    });
}
