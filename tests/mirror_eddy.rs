//! Mirroring into another eddy (`eddy://`), exactly once: 100k keyed
//! records over 4 partitions with headers, through an upstream that is down
//! at first, killed and restarted, a link that is refused, cut, stalled,
//! delayed and slowed by a proxy (liveness never waits behind bulk data),
//! a source hub killed with -9, a disk budget reached while the uplink is
//! down, an upstream whose durable end lags its log end, two links at once,
//! a client certificate, partition counts and a changed hub id.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mirror::{
    check_exactly_once, link_status, mirrored_and_end, produce_range, read_all, sent_bytes,
    wait_mirrored, wait_progress, wait_reconnects, wait_share, PARTITIONS,
};
use common::proxy::{Direction, Mode, Proxy};
use common::{ChildServer, TestServer};
use eddy::client::Client;
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
        // The same through the CLI, and in the metrics.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["mirror", "status", "--json", "--server"])
            .arg(source.addr().to_string())
            .arg("--ca")
            .arg(source.ca())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json[0]["link"], "dc");
        assert_eq!(json[0]["state"], "up");
        assert_eq!(
            json[0]["partitions"].as_array().unwrap().len(),
            PARTITIONS as usize
        );
        assert!(json[0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["lag_records"] == 0));
        let metrics = common::scrape(source.running().metrics_addr().unwrap());
        let metric = |series: &str| common::metric(&metrics, series);
        assert_eq!(
            metric("eddy_mirror_link_state{link=\"dc\",state=\"up\"}"),
            Some(1.0)
        );
        assert_eq!(
            metric("eddy_mirror_lag_records{link=\"dc\",topic=\"sensors\"}"),
            Some(0.0)
        );
        assert_eq!(
            metric("eddy_mirror_records_total{link=\"dc\"}"),
            Some(RECORDS as f64)
        );
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

/// A link through `proxy` to whatever it forwards to, slowed to 1 MB/s so
/// the faults below land mid-stream.
fn slow_link(proxy: &Proxy, ca: std::path::PathBuf) -> MirrorLinkConfig {
    let mut link = link_to(proxy.addr, ca);
    link.bandwidth_bytes_per_s = 1_000_000;
    link.request_bytes_max = 64 << 10;
    link
}

#[test]
fn upstream_killed_and_restarted_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let up_data = dir.path().join("upstream");
    let upstream = ChildServer::start(&up_data, &[]);
    let ca = up_data.join("tls").join("ca.pem");
    let proxy = Proxy::start(Some(upstream.addr), Mode::Forward);
    let source = source_with(slow_link(&proxy, ca), |_| {});
    let upstream = smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        wait_share(&client, "sensors", 0.3).await;
        let before = link_status(&client, "dc").await.reconnects;
        // kill -9: whatever it had not fsynced is gone, and the mirror must
        // notice and resend exactly that.
        upstream.kill9();
        let after = wait_reconnects(&client, before, 1).await;
        let upstream = ChildServer::start(&up_data, &[]);
        proxy.set_target(upstream.addr);
        wait_share(&client, "sensors", 0.6).await;
        // A graceful restart too.
        assert!(upstream.terminate().success());
        wait_reconnects(&client, after, 1).await;
        let upstream = ChildServer::start(&up_data, &[]);
        proxy.set_target(upstream.addr);
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(180)).await;
        upstream
    });
    smol::block_on(async {
        let up = Client::connect(&upstream.options()).await.unwrap();
        let expected: Vec<u64> = (0..RECORDS).collect();
        check_exactly_once(&read_all(&up, "gw-1.sensors").await, &expected, None);
    });
}

#[test]
fn link_cut_stalled_and_delayed_repeatedly() {
    let upstream = TestServer::start();
    // Down until the backlog is there, so every fault lands mid-stream.
    let proxy = Proxy::start(Some(upstream.addr()), Mode::Refuse);
    let link = slow_link(&proxy, upstream.ca());
    let (ping_interval_ms, ping_timeout_ms, request_timeout_ms) = (
        link.ping_interval_ms,
        link.ping_timeout_ms,
        link.request_timeout_ms,
    );
    let source = source_with(link, |_| {});
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        proxy.set_mode(Mode::Forward);
        let mut mirrored = wait_progress(&client, "sensors", 0, 4_000).await;
        for round in 0..2 {
            // Drop: every connection is closed under the link. It notices
            // at once, and one new session carries on.
            let reconnects = link_status(&client, "dc").await.reconnects;
            proxy.cut();
            wait_reconnects(&client, reconnects, 1).await;
            mirrored = wait_progress(&client, "sensors", mirrored, 4_000).await;
            assert_eq!(
                link_status(&client, "dc").await.reconnects,
                reconnects + 1,
                "cut {round}"
            );

            // Stall: the session's connections stay open but move nothing
            // (new ones work: the radio came back). Only the ping, on its
            // own connection, can tell; it does within its interval and
            // timeout, long before a request would time out.
            let reconnects = link_status(&client, "dc").await.reconnects;
            let stalled_at = Instant::now();
            assert_eq!(proxy.hold(Direction::Both), 2, "bulk and control");
            wait_reconnects(&client, reconnects, 1).await;
            let noticed = stalled_at.elapsed();
            let bound = Duration::from_millis(ping_interval_ms + ping_timeout_ms + 1_500);
            assert!(
                noticed <= bound && bound < Duration::from_millis(request_timeout_ms),
                "stall {round} noticed after {noticed:?}"
            );
            let status = link_status(&client, "dc").await;
            assert!(
                status.last_error.as_deref().unwrap_or("").contains("ping"),
                "stall {round}: {status:?}"
            );
            mirrored = wait_progress(&client, "sensors", mirrored, 4_000).await;
            assert_eq!(
                link_status(&client, "dc").await.reconnects,
                reconnects + 1,
                "stall {round}"
            );
            // What the stalled connections held arrives late (the link
            // closed them: they end then), and the upstream skips it as a
            // replay.
            proxy.release();
        }
        // Delay: a slow, long link; the link stays up and forwards.
        let reconnects = link_status(&client, "dc").await.reconnects;
        proxy.set_mode(Mode::Delay(40));
        mirrored = wait_progress(&client, "sensors", mirrored, 4_000).await;
        let status = link_status(&client, "dc").await;
        assert_eq!(status.reconnects, reconnects, "{status:?}");
        proxy.set_mode(Mode::Forward);
        assert!(mirrored < RECORDS, "the faults came too late");
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(180)).await;
        let status = link_status(&client, "dc").await;
        assert_eq!(status.reconnects, reconnects, "{status:?}");
        let up = upstream.client().await;
        let expected: Vec<u64> = (0..RECORDS).collect();
        check_exactly_once(&read_all(&up, "gw-1.sensors").await, &expected, None);
    });
}

/// Pings and liveness never wait behind bulk data: the bulk connection of
/// a slow uplink holds several seconds of requests, yet the link stays up
/// for as long as its pings (on a connection of their own) are answered.
#[test]
fn liveness_never_waits_behind_bulk_data() {
    let upstream = TestServer::start();
    // Each connection carries at most 200 kB/s each way.
    let rate = 200_000u64;
    let proxy = Proxy::start(Some(upstream.addr()), Mode::Rate(rate));
    let mut link = link_to(proxy.addr, upstream.ca());
    link.request_bytes_max = 256 << 10;
    link.inflight_max = 4;
    link.request_timeout_ms = 30_000;
    // The requests' full size on the wire (compressed, the data set would
    // pass the slow link too quickly to queue up).
    link.compression = eddy::config::mirror::UplinkCompression::None;
    // A ping queued behind the requests in flight would wait this long.
    let queued_ms = u64::from(link.inflight_max) * u64::from(link.request_bytes_max) * 1_000 / rate;
    assert!(queued_ms > 4 * link.ping_timeout_ms);
    let source = source_with(link, |_| {});
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        let started = Instant::now();
        // Long enough for the backlog of several queues of requests.
        let mirrored = wait_progress(&client, "sensors", 0, 40_000).await;
        assert!(
            started.elapsed() > Duration::from_millis(queued_ms),
            "the link was not slow: {mirrored} records in {:?}",
            started.elapsed()
        );
        let status = link_status(&client, "dc").await;
        assert_eq!(status.reconnects, 0, "{status:?}");
        assert_eq!(status.state, "up");
        assert_eq!(proxy.accepted(), 2, "one bulk and one control connection");
        // The bulk connection carried the data, the control one a trickle.
        let (up_bytes, _) = proxy.bytes();
        assert!(
            up_bytes > mirrored * 100,
            "{up_bytes} bytes for {mirrored} records"
        );
    });
}

#[test]
fn source_killed_with_kill_9_mid_mirror_and_restarted() {
    let upstream = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("source");
    let config = dir.path().join("eddy.toml");
    // Capped at 1 MB/s so that the kill lands while the link has a
    // backlog; only topics matching the pattern are mirrored.
    std::fs::write(
        &config,
        format!(
            "hub_id = \"{HUB}\"\n\n[[mirror]]\nname = \"dc\"\nurl = \"eddy://{}\"\n\
             ca = \"{}\"\nserver_name = \"localhost\"\npattern = \"sens.*\"\n\
             bandwidth_bytes_per_s = 1000000\nrequest_bytes_max = 65536\nbackoff_min_ms = 50\n\
             backoff_max_ms = 500\nping_interval_ms = 200\nping_timeout_ms = 1000\n",
            upstream.addr(),
            upstream.ca().display()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let server = ChildServer::start(&data, &args);
    let acked = Arc::new(AtomicU64::new(0));
    smol::block_on(async {
        let client = Client::connect(&server.options()).await.unwrap();
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        client.create_topic("other", 1).await.unwrap();
        produce_range(&client, "other", 0..10, 10, Acks::Durable).await;
        // Producing and mirroring when the hub dies.
        let acked = acked.clone();
        let producer = smol::spawn(async move {
            for start in (0..RECORDS).step_by(200) {
                let batch = common::mirror::batch_of(start..start + 200);
                if client
                    .produce("sensors", None, Acks::Durable, 30_000, &batch)
                    .await
                    .is_err()
                {
                    break;
                }
                acked.store(start + 200, Ordering::SeqCst);
            }
        });
        let watcher = Client::connect(&server.options()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let lag = loop {
            let (mirrored, end) = mirrored_and_end(&watcher, "dc", "sensors").await;
            if mirrored >= 10_000 {
                break end - mirrored;
            }
            assert!(
                Instant::now() < deadline,
                "the link forwarded only {mirrored} of {end}"
            );
            smol::Timer::after(Duration::from_millis(5)).await;
        };
        assert!(lag > 0, "the link had caught up before the kill");
        server.kill9();
        producer.await;
    });
    let acked = acked.load(Ordering::SeqCst);
    assert!(acked < RECORDS, "the hub died after the producer finished");
    let server = ChildServer::start(&data, &args);
    smol::block_on(async {
        let client = Client::connect(&server.options()).await.unwrap();
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(180)).await;
        let status = link_status(&client, "dc").await;
        assert!(
            status.partitions.iter().all(|p| p.topic == "sensors"),
            "the pattern selects: {status:?}"
        );
        // Everything acknowledged survived; the upstream has exactly what
        // the hub has, once.
        let stored: Vec<u64> = read_all(&client, "sensors")
            .await
            .iter()
            .map(|s| common::mirror::index_of(&s.value))
            .collect();
        let kept: std::collections::BTreeSet<u64> = stored.iter().copied().collect();
        let lost: Vec<u64> = (0..acked).filter(|i| !kept.contains(i)).take(5).collect();
        assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
        let up = upstream.client().await;
        check_exactly_once(&read_all(&up, "gw-1.sensors").await, &stored, None);
    });
}

#[test]
fn disk_budget_reached_while_the_uplink_is_down_follows_the_topic_policy() {
    let upstream = TestServer::start();
    let proxy = Proxy::start(Some(upstream.addr()), Mode::Refuse);
    let source = source_with(link_to(proxy.addr, upstream.ca()), |c| {
        c.storage.disk_budget_bytes = Some(1 << 20);
    });
    smol::block_on(async {
        let client = source.client().await;
        let settings = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // Telemetry may be shed even before it is mirrored; readings may
        // make room by shedding it but never lose their own unmirrored
        // data; alarms are refused rather than dropping anything.
        client
            .create_topic_with(
                "telemetry",
                PARTITIONS,
                &settings(&[("on_full", "drop_oldest"), ("on_full.unmirrored", "drop")]),
            )
            .await
            .unwrap();
        client
            .create_topic_with(
                "readings",
                PARTITIONS,
                &settings(&[("on_full", "drop_oldest")]),
            )
            .await
            .unwrap();
        client
            .create_topic_with("alarms", 1, &settings(&[("on_full", "reject")]))
            .await
            .unwrap();
        let dropped = |stats: Vec<eddy::client::PartitionCounters>| -> u64 {
            stats.iter().map(|p| p.dropped_records).sum()
        };
        produce_range(&client, "telemetry", 0..4_000, 100, Acks::Durable).await;
        // Readings until the budget has shed some telemetry for them.
        let mut next = 4_000;
        while dropped(client.topic_stats("telemetry").await.unwrap()) == 0 {
            produce_range(&client, "readings", next..next + 100, 100, Acks::Durable).await;
            next += 100;
            assert!(next < 20_000, "the budget never shed telemetry");
        }
        assert_eq!(dropped(client.topic_stats("readings").await.unwrap()), 0);
        let err = client
            .produce(
                "alarms",
                None,
                Acks::Durable,
                5_000,
                &common::mirror::batch_of(8_000..8_100),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(eddy::wire::ErrorCode::DiskFull), "{err}");
        let shed = dropped(client.topic_stats("telemetry").await.unwrap());
        // Now the rest of the telemetry must stay until mirrored, and
        // readings never shed their own unmirrored records: refused too.
        client
            .alter_topic(
                "telemetry",
                &settings(&[("on_full.unmirrored", "keep")]),
                &[],
            )
            .await
            .unwrap();
        let refused = loop {
            match client
                .produce(
                    "readings",
                    None,
                    Acks::Durable,
                    5_000,
                    &common::mirror::batch_of(next..next + 100),
                )
                .await
            {
                Ok(_) => next += 100,
                Err(e) => break e,
            }
            assert!(next < 40_000, "the budget never filled");
        };
        assert_eq!(
            refused.code(),
            Some(eddy::wire::ErrorCode::DiskFull),
            "{refused}"
        );
        assert_eq!(dropped(client.topic_stats("readings").await.unwrap()), 0);
        assert_eq!(
            dropped(client.topic_stats("telemetry").await.unwrap()),
            shed
        );
        let telemetry_left = read_all(&client, "telemetry").await;

        // Uplink back: what is stored goes up exactly once; the shed
        // records are counted as dropped before mirroring.
        proxy.set_mode(Mode::Forward);
        wait_mirrored(&client, "dc", "readings", Duration::from_secs(120)).await;
        wait_mirrored(&client, "dc", "telemetry", Duration::from_secs(120)).await;
        let up = upstream.client().await;
        // Every acknowledged reading is stored (a refused batch spread over
        // several partitions may have left part of itself, see the report).
        let readings: Vec<u64> = read_all(&client, "readings")
            .await
            .iter()
            .map(|s| common::mirror::index_of(&s.value))
            .collect();
        let stored: std::collections::BTreeSet<u64> = readings.iter().copied().collect();
        assert!((4_000..next).all(|i| stored.contains(&i)));
        check_exactly_once(&read_all(&up, "gw-1.readings").await, &readings, None);
        let left: Vec<u64> = telemetry_left
            .iter()
            .map(|s| common::mirror::index_of(&s.value))
            .collect();
        check_exactly_once(&read_all(&up, "gw-1.telemetry").await, &left, None);
        assert_eq!(left.len() as u64 + shed, 4_000);
        assert!(!left.is_empty());
        let status = link_status(&client, "dc").await;
        assert_eq!(status.dropped_records, shed, "{status:?}");
    });
}

#[test]
fn a_conflicting_upstream_topic_is_reported_and_the_others_flow() {
    let upstream = TestServer::start();
    let source = source_with(link_to(upstream.addr(), upstream.ca()), |_| {});
    smol::block_on(async {
        let up = upstream.client().await;
        // Someone else's topic, with the name the link would use.
        up.create_topic("gw-1.taken", 1).await.unwrap();
        let client = source.client().await;
        client.create_topic("taken", 1).await.unwrap();
        client.create_topic("free", 1).await.unwrap();
        produce_range(&client, "taken", 0..10, 10, Acks::Durable).await;
        produce_range(&client, "free", 0..10, 10, Acks::Durable).await;
        wait_mirrored(&client, "dc", "free", Duration::from_secs(60)).await;
        let error = common::mirror::wait_error(&client, "gw-1.taken").await;
        assert!(
            error.contains("gw-1.taken") && error.contains("not a mirror of gw-1/taken"),
            "{error}"
        );
        let (mirrored, end) = mirrored_and_end(&client, "dc", "taken").await;
        assert_eq!((mirrored, end), (0, 10));
        assert!(read_all(&up, "gw-1.taken").await.is_empty());
    });
}

#[test]
fn a_backlog_drains_by_topic_priority() {
    let upstream = TestServer::start();
    let proxy = Proxy::start(Some(upstream.addr()), Mode::Refuse);
    let mut link = slow_link(&proxy, upstream.ca());
    link.inflight_max = 2;
    link.bandwidth_bytes_per_s = 200_000;
    let source = source_with(link, |_| {});
    smol::block_on(async {
        let client = source.client().await;
        let priority = |p: &str| vec![("priority".to_string(), p.to_string())];
        client
            .create_topic_with("telemetry", PARTITIONS, &priority("0"))
            .await
            .unwrap();
        client
            .create_topic_with("alarms", PARTITIONS, &priority("9"))
            .await
            .unwrap();
        // The low-priority backlog is older: order of arrival does not count.
        produce_range(&client, "telemetry", 0..20_000, 1_000, Acks::Durable).await;
        produce_range(&client, "alarms", 20_000..40_000, 1_000, Acks::Durable).await;
        proxy.set_mode(Mode::Forward);
        wait_mirrored(&client, "dc", "alarms", Duration::from_secs(120)).await;
        // Telemetry got at most what was in flight behind the last alarms
        // (2 requests of 64 KiB, about 1,000 records) and what 200 kB/s
        // carry while this test looks (about 1,500 records a second);
        // shared fairly it would have had half of its 20,000.
        let (telemetry, _) = mirrored_and_end(&client, "dc", "telemetry").await;
        assert!(
            telemetry <= 3_000,
            "{telemetry} telemetry records went first"
        );
        wait_mirrored(&client, "dc", "telemetry", Duration::from_secs(180)).await;
        let up = upstream.client().await;
        let expected: Vec<u64> = (20_000..40_000).collect();
        check_exactly_once(&read_all(&up, "gw-1.alarms").await, &expected, None);
    });
}

/// A proxy in front of a plaintext upstream that, while `frozen` holds a
/// durable end per partition, reports no more than that as durable in
/// Watermarks answers (an upstream whose fsync lags its appends); counts
/// the Watermarks answers it passed.
fn durable_lagging_proxy(
    upstream: std::net::SocketAddr,
    frozen: Arc<Mutex<Option<BTreeMap<u32, u64>>>>,
    answers: Arc<AtomicU64>,
) -> Proxy {
    use eddy::wire::{decode_response, encode_response, Response, ResponseFrame};
    Proxy::start_rewriting(
        upstream,
        Arc::new(move |frame: Vec<u8>| {
            let Ok(decoded) = decode_response(&frame[4..]) else {
                return frame;
            };
            let ResponseFrame {
                correlation_id,
                response: Response::Watermarks(mut marks),
            } = decoded
            else {
                return frame;
            };
            answers.fetch_add(1, Ordering::SeqCst);
            if let Some(frozen) = frozen.lock().unwrap().as_ref() {
                for m in &mut marks {
                    if let Some(&durable) = frozen.get(&m.partition) {
                        m.durable = m.durable.min(durable);
                    }
                }
            }
            let mut out = Vec::new();
            encode_response(
                &ResponseFrame {
                    correlation_id,
                    response: Response::Watermarks(marks),
                },
                &mut out,
            );
            out
        }),
    )
}

#[test]
fn mirrored_never_passes_the_upstreams_durable_end() {
    let upstream = TestServer::start_with(|c| c.tls = eddy::config::TlsSetup::InsecurePlaintext);
    let frozen = Arc::new(Mutex::new(None));
    let answers = Arc::new(AtomicU64::new(0));
    let proxy = durable_lagging_proxy(upstream.addr(), frozen.clone(), answers.clone());
    let mut link = link_to(proxy.addr, upstream.ca());
    link.ca = None;
    link.insecure_plaintext = true;
    let source = source_with(link, |_| {});
    smol::block_on(async {
        let client = source.client().await;
        let up = upstream.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..2_000, 500, Acks::Durable).await;
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(60)).await;
        // From now on the upstream says its fsyncs stopped here...
        let at_freeze: BTreeMap<u32, u64> = up
            .watermarks("gw-1.sensors")
            .await
            .unwrap()
            .iter()
            .map(|m| (m.partition, m.durable))
            .collect();
        *frozen.lock().unwrap() = Some(at_freeze.clone());
        // ...while it goes on appending (what MirrorProduce answers need
        // is not affected: they come after the upstream's own fsync).
        produce_range(&client, "sensors", 2_000..4_000, 500, Acks::Durable).await;
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(60)).await;
        let ends = client.watermarks("sensors").await.unwrap();
        assert!(ends.iter().all(|m| m.log_end > at_freeze[&m.partition]));
        // A new session: it must not count the upstream's log end as
        // acknowledged, only its durable end.
        let reconnects = link_status(&client, "dc").await.reconnects;
        let answered = answers.load(Ordering::SeqCst);
        proxy.cut();
        wait_reconnects(&client, reconnects, 1).await;
        // Checked once the new session is set up (its first Watermarks
        // answer), and again after its next look at the durable ends.
        for looks in 1..=2 {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let status = link_status(&client, "dc").await;
                if answers.load(Ordering::SeqCst) >= answered + looks && status.state == "up" {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the new session asked for the upstream's watermarks {} times: {status:?}",
                    answers.load(Ordering::SeqCst) - answered
                );
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            let status = link_status(&client, "dc").await;
            for p in &status.partitions {
                assert!(
                    p.mirrored <= at_freeze[&p.partition],
                    "partition {}: mirrored {} but the upstream has only {} durably: {status:?}",
                    p.partition,
                    p.mirrored,
                    at_freeze[&p.partition]
                );
            }
            let marks = client.mirrored_watermarks("sensors").await.unwrap();
            for (p, links) in &marks {
                assert!(links[0].1 <= at_freeze[p], "partition {p}: {links:?}");
            }
        }
        // Its fsyncs caught up: so does the watermark, with nothing to send.
        *frozen.lock().unwrap() = None;
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(30)).await;
        assert_eq!(
            link_status(&client, "dc").await.reconnects,
            reconnects + 1,
            "the catch-up cost a session"
        );
        let expected: Vec<u64> = (0..4_000).collect();
        check_exactly_once(&read_all(&up, "gw-1.sensors").await, &expected, None);
    });
}

/// Runs the `eddy` binary with `args` (and `stdin`), against `server`.
fn eddy_cli(server: &TestServer, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .arg("--server")
        .arg(server.addr().to_string())
        .arg("--ca")
        .arg(server.ca())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Two links forward the same topic: what is kept for them (`keep_from`)
/// and what `acks=mirrored` waits for follow the slower one; the status
/// (JSON and human) and the CLI producer show it.
#[test]
fn two_links_keep_and_acknowledge_by_the_slower_one() {
    let dc_upstream = TestServer::start();
    let dr_upstream = TestServer::start();
    let proxy = Proxy::start(Some(dr_upstream.addr()), Mode::Refuse);
    let dc = link_to(dc_upstream.addr(), dc_upstream.ca());
    let mut dr = link_to(proxy.addr, dr_upstream.ca());
    dr.name = "dr".into();
    let source = TestServer::start_with(|c| {
        c.hub_id = Some(HUB.into());
        c.mirror = vec![dc, dr];
    });
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        client.create_topic("alarms", 1).await.unwrap();
        produce_range(&client, "sensors", 0..2_000, 500, Acks::Durable).await;
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(60)).await;
        // dr is down: each partition keeps everything for it.
        let ends = client.watermarks("sensors").await.unwrap();
        let marks = client.mirrored_watermarks("sensors").await.unwrap();
        for ((p, links), end) in marks.iter().zip(&ends) {
            assert_eq!(
                links,
                &vec![("dc".to_string(), end.log_end), ("dr".to_string(), 0)],
                "partition {p}"
            );
        }
        let stats = client.topic_stats("sensors").await.unwrap();
        assert!(stats.iter().all(|s| s.keep_from == Some(0)), "{stats:?}");
        // Lag in records and bytes: dr lags by all that is stored, dc by
        // nothing; dc forwarded every stored byte once.
        let dr_status = link_status(&client, "dr").await;
        for p in dr_status.partitions.iter().filter(|p| p.topic == "sensors") {
            let stored = stats[p.partition as usize].stored_bytes;
            assert!(stored > 0);
            assert_eq!((p.lag_records, p.lag_bytes), (p.log_end, stored), "{p:?}");
        }
        let dc_status = link_status(&client, "dc").await;
        assert!(dc_status.partitions.iter().all(|p| p.lag_bytes == 0));
        let stored: u64 = stats.iter().map(|s| s.stored_bytes).sum();
        assert_eq!(dc_status.bytes_mirrored, stored, "{dc_status:?}");
        assert_eq!(dc_status.records_mirrored, 2_000);
        // acks=mirrored waits for both links.
        let err = client
            .produce(
                "sensors",
                None,
                Acks::Mirrored,
                500,
                &common::mirror::batch_of(2_000..2_010),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(eddy::wire::ErrorCode::Timeout), "{err}");
        // Appended all the same, and forwarded by dc.
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(60)).await;

        // The CLI: the status for people, and a producer waiting for the
        // upstreams.
        let out = eddy_cli(&source, &["mirror", "status"], "");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let dc_url = format!("link dc → eddy://{}: up for ", dc_upstream.addr());
        let dr_url = format!("link dr → eddy://{}: ", proxy.addr);
        assert!(text.contains(&dc_url), "{text}");
        assert!(
            text.contains(&dr_url) && !text.contains(&format!("{dr_url}up")),
            "{text}"
        );
        assert!(text.contains("2010 records ("), "{text}");
        assert!(text.contains("  last error ("), "{text}");
        let header = "TOPIC                     PART UPSTREAM                         MIRRORED      LOG-END          LAG      LAG-BYTES";
        assert_eq!(text.matches(header).count(), 2, "{text}");
        let row = |s: &eddy::client::MirrorPartitionInfo| {
            format!(
                "  {:<24} {:>5} {:<28} {:>12} {:>12} {:>12} {:>14}",
                s.topic,
                s.partition,
                s.upstream_topic,
                s.mirrored,
                s.log_end,
                s.lag_records,
                s.lag_bytes
            )
        };
        let dr_status = link_status(&client, "dr").await;
        for p in &dr_status.partitions {
            assert!(text.contains(&row(p)), "{text}\nmissing {}", row(p));
        }
        let out = eddy_cli(
            &source,
            &[
                "produce",
                "--topic",
                "alarms",
                "--acks",
                "mirrored",
                "--timeout-ms",
                "500",
            ],
            "fire\n",
        );
        assert!(!out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("not acknowledged upstream"), "{stderr}");

        proxy.set_mode(Mode::Forward);
        let out = eddy_cli(
            &source,
            &[
                "produce",
                "--topic",
                "alarms",
                "--acks",
                "mirrored",
                "--timeout-ms",
                "30000",
            ],
            "smoke\nfire\n",
        );
        assert!(out.status.success(), "{out:?}");
        // Answered once both upstreams have them.
        for upstream in [&dc_upstream, &dr_upstream] {
            let up = upstream.client().await;
            let marks = up.watermarks("gw-1.alarms").await.unwrap();
            assert!(marks[0].durable >= 3, "{marks:?}");
        }
        wait_mirrored(&client, "dr", "sensors", Duration::from_secs(60)).await;
        let ends = client.watermarks("sensors").await.unwrap();
        let stats = client.topic_stats("sensors").await.unwrap();
        for (s, end) in stats.iter().zip(&ends) {
            assert!(s.keep_from.unwrap_or(u64::MAX) >= end.log_end, "{stats:?}");
        }
        let expected: Vec<u64> = (0..2_010).collect();
        for upstream in [&dc_upstream, &dr_upstream] {
            let up = upstream.client().await;
            check_exactly_once(&read_all(&up, "gw-1.sensors").await, &expected, None);
        }
    });
}

/// A link with a client certificate is let in by an upstream that asks
/// for one; a link without is not, and says why.
#[test]
fn an_eddy_link_presents_its_client_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new(pki.path(), "gateways");
    let gateway = ca.device("gw-1");
    let upstream = TestServer::start_with(|c| c.client_ca = Some(ca.cert.clone()));
    let mut with_cert = link_to(upstream.addr(), upstream.ca());
    with_cert.cert = Some(gateway.cert.clone());
    with_cert.key = Some(gateway.key.clone());
    let mut without = link_to(upstream.addr(), upstream.ca());
    without.name = "bare".into();
    without.topic_name = "{hub_id}.bare.{topic}".into();
    let source = TestServer::start_with(|c| {
        c.hub_id = Some(HUB.into());
        c.mirror = vec![with_cert, without];
    });
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..1_000, 500, Acks::Durable).await;
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(60)).await;
        let bare = wait_reconnects_of(&client, "bare").await;
        assert_ne!(bare.state, "up", "{bare:?}");
        assert!(bare.partitions.iter().all(|p| p.mirrored == 0), "{bare:?}");
        let up = Client::connect(&common::pki::options(
            &upstream.addr().to_string(),
            &upstream.ca(),
            Some(&gateway),
        ))
        .await
        .unwrap();
        let expected: Vec<u64> = (0..1_000).collect();
        check_exactly_once(&read_all(&up, "gw-1.sensors").await, &expected, None);
        assert!(up.describe_topic("gw-1.bare.sensors").await.is_err());
    });
}

/// Waits until link `name` has failed at least once; returns its status.
async fn wait_reconnects_of(client: &Client, name: &str) -> eddy::client::MirrorLinkInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = link_status(client, name).await;
        if status.reconnects > 0 && status.last_error.is_some() {
            return status;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

/// Mirrored topics are named after the hub, so a data directory refuses
/// to start under another hub id.
#[test]
fn a_changed_hub_id_is_refused() {
    let source = TestServer::start_with(|c| c.hub_id = Some(HUB.into()));
    let mut config = source.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = None;
    config.hub_id = Some("gw-2".into());
    let dir = config.data_dir.clone();
    let mut source = source;
    source.server.take().unwrap().stop().unwrap();
    let err = eddy::server::start(config.clone())
        .err()
        .expect("started under another hub id");
    let text = err.to_string();
    assert!(
        text.contains("--hub-id gw-2 differs") && text.contains("(gw-1"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hub-id")).unwrap(),
        "gw-1\n"
    );
    // Without a configured id it keeps the stored one.
    config.hub_id = None;
    let server = eddy::server::start(config).unwrap();
    assert_eq!(server.hub_id(), HUB);
    server.stop().unwrap();
}

/// Partition i goes to upstream partition i: an existing upstream topic
/// with more partitions is used (the extra ones stay empty), one with fewer
/// is refused with an error naming both counts.
#[test]
fn an_existing_upstream_topic_needs_at_least_as_many_partitions() {
    let upstream = TestServer::start();
    let source = source_with(link_to(upstream.addr(), upstream.ca()), |_| {});
    smol::block_on(async {
        let up = upstream.client().await;
        let mirror_of = |topic: &str| vec![("mirror.source".to_string(), format!("{HUB}/{topic}"))];
        up.create_topic_with("gw-1.wide", 6, &mirror_of("wide"))
            .await
            .unwrap();
        up.create_topic_with("gw-1.narrow", 2, &mirror_of("narrow"))
            .await
            .unwrap();
        let client = source.client().await;
        client.create_topic("wide", PARTITIONS).await.unwrap();
        client.create_topic("narrow", PARTITIONS).await.unwrap();
        produce_range(&client, "wide", 0..1_000, 500, Acks::Durable).await;
        produce_range(&client, "narrow", 0..1_000, 500, Acks::Durable).await;
        wait_mirrored(&client, "dc", "wide", Duration::from_secs(60)).await;
        let expected: Vec<u64> = (0..1_000).collect();
        let copied = read_all(&up, "gw-1.wide").await;
        check_exactly_once(&copied, &expected, None);
        assert!(copied.iter().all(|s| s.partition < PARTITIONS));
        let error = common::mirror::wait_error(&client, "gw-1.narrow").await;
        assert!(
            error.contains("gw-1.narrow") && error.contains("has 2 partitions upstream but 4 here"),
            "{error}"
        );
        assert_eq!(mirrored_and_end(&client, "dc", "narrow").await.0, 0);
        assert!(read_all(&up, "gw-1.narrow").await.is_empty());
    });
}

/// The receiving side of `MirrorProduce`: a replay is answered with what
/// it skipped and stores nothing; another source is refused.
#[test]
fn a_receiving_hub_skips_replays_and_refuses_other_sources() {
    use eddy::wire::{decode_response, ErrorCode, MirrorProduce, Request, Response};
    let upstream = TestServer::start();
    smol::block_on(async {
        let up = upstream.client().await;
        let source = vec![("mirror.source".to_string(), format!("{HUB}/sensors"))];
        up.create_topic_with("gw-1.sensors", 1, &source)
            .await
            .unwrap();
        let mut raw = common::RawConn::connect(upstream.addr(), &upstream.ca()).await;
        raw.hello().await;
        let batches = common::mirror::batch_of(0..10);
        let produce = |source_hub| {
            Request::MirrorProduce(MirrorProduce {
                source_hub,
                source_topic: "sensors",
                topic: "gw-1.sensors",
                partition: 0,
                timeout_ms: 10_000,
                batches: &batches,
            })
        };
        let mut answers = Vec::new();
        for (id, hub) in [(1, HUB), (2, HUB), (3, "gw-9")] {
            raw.send(id, produce(hub)).await;
            answers.push(raw.read_frame().await.unwrap());
        }
        let decoded: Vec<Response> = answers
            .iter()
            .map(|a| decode_response(a).unwrap().response)
            .collect();
        match &decoded[..] {
            [Response::MirrorProduced(first), Response::MirrorProduced(replay), Response::Error(other)] =>
            {
                assert_eq!((first.log_end, first.skipped_records), (10, 0));
                assert_eq!((replay.log_end, replay.skipped_records), (10, 10));
                assert_eq!(other.code, ErrorCode::MirrorConflict, "{other:?}");
                assert!(
                    other.message.contains("not a mirror of gw-9/sensors"),
                    "{other:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let expected: Vec<u64> = (0..10).collect();
        check_exactly_once(&read_all(&up, "gw-1.sensors").await, &expected, None);
    });
}

#[test]
fn every_codec_mirrors_exactly_once_and_compresses() {
    use eddy::config::mirror::UplinkCompression;
    for compression in [
        UplinkCompression::None,
        UplinkCompression::Lz4,
        UplinkCompression::Zstd,
    ] {
        let upstream = TestServer::start();
        let mut link = link_to(upstream.addr(), upstream.ca());
        link.compression = compression;
        let source = source_with(link, |_| {});
        smol::block_on(async {
            let client = source.client().await;
            client.create_topic("sensors", PARTITIONS).await.unwrap();
            produce_range(&client, "sensors", 0..20_000, 100, Acks::Durable).await;
            wait_mirrored(&client, "dc", "sensors", Duration::from_secs(60)).await;
            let up = upstream.client().await;
            let expected: Vec<u64> = (0..20_000).collect();
            check_exactly_once(&read_all(&up, "gw-1.sensors").await, &expected, None);
        });
        let (raw, sent) = sent_bytes(&source, "dc");
        assert!(raw > 0.0, "{compression:?}");
        if compression == UplinkCompression::None {
            assert_eq!(raw, sent, "uncompressed: the batches as stored");
        } else {
            // The data set repeats itself a lot (keys, headers, padding).
            assert!(sent * 4.0 < raw, "{compression:?}: {sent} of {raw} bytes");
        }
    }
}

/// A proxy in front of a plaintext upstream that answers a `Hello` of the
/// compressed-mirror version as an eddy from before it does: with
/// `UnsupportedVersion`. Counts the refusals.
fn old_upstream_proxy(upstream: std::net::SocketAddr, refused: Arc<AtomicU64>) -> Proxy {
    use eddy::wire::{
        decode_response, encode_response, ErrorCode, ErrorReply, Response, ResponseFrame,
        PROTOCOL_VERSION_COMPRESSED_MIRROR,
    };
    Proxy::start_rewriting(
        upstream,
        Arc::new(move |frame: Vec<u8>| {
            let Ok(ResponseFrame {
                correlation_id,
                response: Response::Hello(ok),
            }) = decode_response(&frame[4..])
            else {
                return frame;
            };
            if ok.protocol_version != PROTOCOL_VERSION_COMPRESSED_MIRROR {
                return frame;
            }
            refused.fetch_add(1, Ordering::SeqCst);
            let mut out = Vec::new();
            encode_response(
                &ResponseFrame {
                    correlation_id,
                    response: Response::Error(ErrorReply {
                        code: ErrorCode::UnsupportedVersion,
                        message: "protocol version 2 is not supported; this server speaks 1",
                    }),
                },
                &mut out,
            );
            out
        }),
    )
}

#[test]
fn an_older_upstream_without_compression_still_gets_everything() {
    let upstream = TestServer::start_with(|c| c.tls = eddy::config::TlsSetup::InsecurePlaintext);
    let refused = Arc::new(AtomicU64::new(0));
    let proxy = old_upstream_proxy(upstream.addr(), refused.clone());
    let mut link = link_to(proxy.addr, upstream.ca());
    link.ca = None;
    link.insecure_plaintext = true;
    assert_eq!(
        link.compression,
        eddy::config::mirror::UplinkCompression::Zstd,
        "the default offers compression"
    );
    let source = source_with(link, |_| {});
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", PARTITIONS).await.unwrap();
        produce_range(&client, "sensors", 0..5_000, 100, Acks::Durable).await;
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(60)).await;
        let up = upstream.client().await;
        let expected: Vec<u64> = (0..5_000).collect();
        check_exactly_once(&read_all(&up, "gw-1.sensors").await, &expected, None);
        assert_eq!(link_status(&client, "dc").await.reconnects, 0);
    });
    assert!(
        refused.load(Ordering::SeqCst) >= 1,
        "compression was offered"
    );
    let (raw, sent) = sent_bytes(&source, "dc");
    assert!(raw > 0.0);
    assert_eq!(raw, sent, "sent uncompressed to the older upstream");
}
