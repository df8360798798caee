//! The `/metrics` endpoint of a running server: counters move with traffic,
//! the exposition is well formed, and the endpoint keeps its bounds.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{http_get, metric, scrape, values, wait_until, TestServer};
use eddy::metrics::http::{METRICS_CONNECTIONS_MAX, METRICS_REQUEST_BYTES_MAX};
use eddy::wire::{Acks, ErrorCode, FetchPartition};

fn sample(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[test]
fn counters_move_with_traffic() {
    let server = TestServer::start();
    let addr = server.running().metrics_addr().expect("metrics are on");
    let before = scrape(addr);
    assert!(
        before.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    assert_eq!(
        sample(&before, "eddy_build_info{version=\"0.1.0\"}"),
        1.0,
        "{before}"
    );
    assert_eq!(metric(&before, "eddy_records_in_total{topic=\"m\"}"), None);
    let accepted_before = sample(&before, "eddy_connections_accepted_total");
    let rounds_before = sample(&before, "eddy_fsync_duration_seconds_count");

    smol::block_on(async {
        let client = server.client().await;
        let batch = values(&[b"one", b"two", b"three"]);
        client
            .produce("m", None, Acks::Durable, 10_000, &batch)
            .await
            .unwrap();
        client
            .produce("m", None, Acks::Durable, 10_000, &values(&[b"four"]))
            .await
            .unwrap();
        client
            .fetch(
                "m",
                &[FetchPartition {
                    partition: 0,
                    offset: 0,
                }],
                1 << 20,
                0,
            )
            .await
            .unwrap();
        let err = client
            .produce("m", Some(7), Acks::Durable, 10_000, &batch)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownPartition));

        // An administrative commit (no members): group g has consumed one
        // of the four records.
        client
            .commit_offsets("g", "", -1, &[("m".to_string(), 0, 1)])
            .await
            .unwrap();
        let after = scrape(addr);
        assert_eq!(sample(&after, "eddy_records_in_total{topic=\"m\"}"), 4.0);
        let bytes_in = sample(&after, "eddy_bytes_in_total{topic=\"m\"}");
        assert!(
            bytes_in > 2.0 * 56.0,
            "two batches with headers: {bytes_in}"
        );
        assert_eq!(sample(&after, "eddy_records_out_total{topic=\"m\"}"), 4.0);
        assert!(sample(&after, "eddy_bytes_out_total{topic=\"m\"}") >= bytes_in);
        assert_eq!(
            sample(&after, "eddy_errors_total{code=\"UnknownPartition\"}"),
            1.0
        );
        assert_eq!(sample(&after, "eddy_connections_active"), 1.0);
        assert!(sample(&after, "eddy_connections_accepted_total") >= accepted_before + 1.0);
        let rounds = sample(&after, "eddy_fsync_duration_seconds_count");
        assert!(rounds >= rounds_before + 1.0, "durable produces fsynced");
        assert_eq!(
            sample(&after, "eddy_fsync_duration_seconds_bucket{le=\"+Inf\"}"),
            rounds,
            "the +Inf bucket counts every round"
        );
        assert!(sample(&after, "eddy_fsync_duration_seconds_sum") > 0.0);
        assert!(sample(&after, "eddy_stored_bytes{topic=\"m\"}") > 0.0);
        assert_eq!(sample(&after, "eddy_topic_partitions{topic=\"m\"}"), 1.0);
        assert!(sample(&after, "eddy_disk_used_bytes") > 0.0);
        assert_eq!(
            sample(&after, "eddy_group_lag_records{group=\"g\",topic=\"m\"}"),
            3.0
        );
        assert_eq!(
            sample(&after, "eddy_disk_budget_used_bytes"),
            sample(&after, "eddy_stored_bytes{topic=\"m\"}")
        );
        for reason in ["retention", "compaction", "budget_dropped"] {
            let series = format!("eddy_removed_records_total{{topic=\"m\",reason=\"{reason}\"}}");
            assert_eq!(sample(&after, &series), 0.0);
        }
        assert_eq!(sample(&after, "eddy_storage_failed"), 0.0);
        assert_eq!(
            sample(
                &after,
                "eddy_dropped_batches_total{reason=\"unreadable_at_recovery\"}"
            ),
            0.0
        );
        assert_eq!(
            sample(&after, "eddy_reloads_total{what=\"tls\",result=\"ok\"}"),
            0.0
        );
        assert!(sample(&after, "process_resident_memory_bytes") > 1e6);
        assert!(sample(&after, "process_open_fds") > 3.0);
        assert!(sample(&after, "process_max_fds") > 0.0);
        drop(client);
        wait_until(Duration::from_secs(10), "connection closed", || {
            sample(&scrape(addr), "eddy_connections_active") == 0.0
        });
    });
}

/// A TCP connection to `server` from the loopback address `from`.
fn tcp_from(from: &str, server: std::net::SocketAddr) -> std::net::TcpStream {
    let from: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&server.into()).unwrap();
    let stream = std::net::TcpStream::from(socket);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Reads until the server closes `stream`; panics if it answers anything.
fn closed_unanswered(stream: &mut std::net::TcpStream) {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "nothing but a TLS alert: {answer:?}"
    );
}

#[test]
fn refusals_failed_handshakes_and_the_disk_budget_show_in_their_metrics() {
    const BUDGET_BYTES: u64 = 64 << 20;
    let server = TestServer::start_with(|c| {
        c.limits.connections_max = 3;
        c.limits.connections_per_ip_max = 2;
        // The held connections never start TLS: keep them until the end.
        c.limits.tls_handshake_timeout_ms = 120_000;
        c.storage.disk_budget_bytes = Some(BUDGET_BYTES);
    });
    let (addr, metrics) = (server.addr(), server.running().metrics_addr().unwrap());
    let refused = |text: &str, reason: &str| {
        sample(
            text,
            &format!("eddy_connections_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    let before = scrape(metrics);
    assert_eq!(refused(&before, "limit"), 0.0);
    assert_eq!(refused(&before, "per_ip"), 0.0);
    assert_eq!(sample(&before, "eddy_tls_handshake_failures_total"), 0.0);
    assert_eq!(
        sample(&before, "eddy_disk_budget_bytes"),
        BUDGET_BYTES as f64,
        "the budget set"
    );
    let active = |n: f64| {
        wait_until(Duration::from_secs(30), "connections admitted", || {
            sample(&scrape(metrics), "eddy_connections_active") == n
        })
    };

    // Two from one source fill its share; the third from it is refused.
    let _held: Vec<_> = (0..2).map(|_| tcp_from("127.0.0.1", addr)).collect();
    active(2.0);
    closed_unanswered(&mut tcp_from("127.0.0.1", addr));
    let text = scrape(metrics);
    assert_eq!(refused(&text, "per_ip"), 1.0);
    assert_eq!(refused(&text, "limit"), 0.0);

    // A third source takes the last slot; a fourth finds the hub full.
    let mut third = tcp_from("127.0.0.2", addr);
    active(3.0);
    closed_unanswered(&mut tcp_from("127.0.0.3", addr));
    let text = scrape(metrics);
    assert_eq!(refused(&text, "limit"), 1.0);
    assert_eq!(refused(&text, "per_ip"), 1.0);
    assert_eq!(sample(&text, "eddy_tls_handshake_failures_total"), 0.0);

    // Plain HTTP where a TLS ClientHello belongs: the handshake fails.
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    closed_unanswered(&mut third);
    let text = scrape(metrics);
    assert_eq!(sample(&text, "eddy_tls_handshake_failures_total"), 1.0);
    assert_eq!(
        sample(&text, "eddy_connections_accepted_total"),
        3.0,
        "refused connections are not accepted"
    );
    assert_eq!(sample(&text, "eddy_disk_budget_bytes"), BUDGET_BYTES as f64);
}

#[test]
fn every_family_is_declared_once_with_help_and_type() {
    let server = TestServer::start();
    smol::block_on(async {
        let client = server.client().await;
        client
            .produce("a", None, Acks::Durable, 10_000, &values(&[b"x"]))
            .await
            .unwrap();
    });
    let text = scrape(server.running().metrics_addr().unwrap());
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(!families.contains(&name), "{name} declared twice");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            families.push(name);
        } else if !line.starts_with('#') {
            assert!(
                families.iter().any(|f| line.starts_with(f.as_str())),
                "sample outside its family: {line}"
            );
        }
    }
    for expected in [
        "eddy_records_in",
        "eddy_bytes_in",
        "eddy_records_out",
        "eddy_bytes_out",
        "eddy_connections_active",
        "eddy_connections_accepted",
        "eddy_connections_refused",
        "eddy_tls_handshake_failures",
        "eddy_errors",
        "eddy_fsync_duration_seconds",
        "eddy_disk_used_bytes",
        "eddy_stored_bytes",
        "eddy_dropped_batches",
        "eddy_removed_records",
        "eddy_group_lag_records",
        "eddy_disk_budget_used_bytes",
        "eddy_storage_failed",
        "eddy_reloads",
    ] {
        assert!(families.iter().any(|f| f == expected), "no {expected}");
    }
}

#[test]
fn the_endpoint_answers_only_what_it_serves_within_its_bounds() {
    let server = TestServer::start();
    let addr = server.running().metrics_addr().unwrap();
    assert_eq!(http_get(addr, "/").0, "HTTP/1.1 200 OK");
    assert_eq!(http_get(addr, "/nope").0, "HTTP/1.1 404 Not Found");

    let raw = |request: &[u8]| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // The server may answer (and close) before it has read everything.
        let _ = s.write_all(request);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(raw(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    let head = raw(b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', METRICS_REQUEST_BYTES_MAX + 10));
    assert!(raw(&huge).starts_with("HTTP/1.1 431"));
}

#[test]
fn slow_clients_cannot_starve_the_scraper() {
    let server = TestServer::start();
    let addr = server.running().metrics_addr().unwrap();
    // More silent connections than there are slots, each holding its slot
    // for as long as the server lets it.
    let mut idle: Vec<_> = (0..METRICS_CONNECTIONS_MAX + 6)
        .map(|_| {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s
        })
        .collect();
    for i in 0..20 {
        let text = scrape(addr);
        assert!(text.contains("eddy_build_info"), "scrape {i}");
        // Slow clients keep coming back between scrapes.
        idle.push(std::net::TcpStream::connect(addr).unwrap());
    }
    // The oldest silent connection was closed unanswered.
    closed_unanswered(&mut idle[0]);
}

#[test]
fn metrics_can_be_turned_off() {
    let server = TestServer::start_with(|c| c.metrics_listen = None);
    assert_eq!(server.running().metrics_addr(), None);
}

/// Produces `n` three-record batches to `topic` (durable).
fn produce_batches(server: &TestServer, topic: &str, n: usize) {
    smol::block_on(async {
        let client = server.client().await;
        for _ in 0..n {
            let batch = values(&[b"a", b"b", b"c"]);
            client
                .produce(topic, None, Acks::Durable, 10_000, &batch)
                .await
                .unwrap();
        }
    });
}

#[test]
fn status_json_describes_the_hub() {
    let server = TestServer::start();
    let addr = server.running().metrics_addr().unwrap();
    produce_batches(&server, "sensors", 2);
    let (status, body) = http_get(addr, "/status.json");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["hub_id"], server.running().hub_id());
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptime_s"].as_u64().is_some());
    assert!(s["storage"]["disk_free_bytes"].as_u64().unwrap() > 0);
    assert!(s["storage"]["stored_bytes"].as_u64().unwrap() > 0);
    let topic = &s["topics"][0];
    assert_eq!(topic["topic"], "sensors");
    assert_eq!(topic["records"], 6);
    assert_eq!(topic["partitions"][0]["log_end"], 6);
    assert_eq!(topic["partitions"][0]["durable"], 6);
    assert_eq!(s["listeners"][0]["listener"], "devices");
    assert_eq!(s["mirror"], serde_json::json!([]));
    assert_eq!(s["groups"], serde_json::json!([]));
    // A rate between two samples: records appended in between count.
    produce_batches(&server, "sensors", 2);
    let mut rate = 0.0;
    wait_until(Duration::from_secs(20), "a rate over two samples", || {
        let (_, body) = http_get(addr, "/status.json");
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        rate = s["topics"][0]["records_per_s"].as_f64().unwrap();
        s["topics"][0]["records"] == 12 && rate >= 0.0
    });
    // The page is one self-contained file: no external assets.
    let (status, page) = http_get(addr, "/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        page.contains("/status.json") && page.contains("<canvas"),
        "the page"
    );
    for external in ["src=\"http", "href=\"http", "<link ", "@import"] {
        assert!(!page.contains(external), "external asset: {external}");
    }
}

/// The status page in a real browser (Debian's chromium, which `.ci/run`
/// installs): it loads, shows the hub's topics, and draws the chart from
/// the samples it polled. Needs chromium: run with `--ignored`.
#[test]
#[ignore]
fn status_page_renders_in_a_headless_browser() {
    let server = TestServer::start();
    let addr = server.running().metrics_addr().unwrap();
    produce_batches(&server, "sensors", 3);
    let profile = tempfile::tempdir().unwrap();
    let shot = std::env::var("EDDY_STATUS_SCREENSHOT").ok();
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", profile.path().display()),
        // Virtual time: the page's 2 s poll runs several times at once.
        "--virtual-time-budget=7000".into(),
        "--window-size=900,1000".into(),
    ];
    match &shot {
        Some(path) => args.push(format!("--screenshot={path}")),
        None => args.push("--dump-dom".into()),
    }
    args.push(format!("http://{addr}/"));
    let out = std::process::Command::new("chromium")
        .args(&args)
        .output()
        .expect("chromium (apt-get install chromium)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if shot.is_some() {
        return;
    }
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<td>sensors</td>"),
        "the topic in the table: {dom}"
    );
    let rendered: u64 = dom
        .split("data-rendered=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data-rendered in {dom}"));
    assert!(
        rendered >= 4,
        "two series of two or more points: {rendered}"
    );
    assert!(dom.contains(server.running().hub_id()), "the hub id");
}
