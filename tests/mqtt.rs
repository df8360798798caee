//! The MQTT listener against real clients: Eclipse Mosquitto's
//! `mosquitto_pub` / `mosquitto_sub` (Debian `mosquitto-clients`), MQTT
//! 3.1.1 and 5, against an `eddy serve` process on port 0 with a temp data
//! dir; raw packets where a client cannot be made to misbehave (a QoS 2
//! resend, a malformed packet).
//!
//! A missing client fails these tests: `.ci/run` installs them.
//! What is stored is read back with eddy's own client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::mqtt::{
    header, publish_qos2, raw_connect, read_exact_packet, stored, topic_names, Hub, WAIT,
};
use common::wait_until;

#[test]
fn qos_0_1_2_from_mosquitto_are_stored_and_delivered_live_in_both_versions() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(data.path(), &[]);
    let v311 = hub.subscribe(&["-t", "sensors/#", "-q", "1"]);
    let v5 = hub.subscribe(&[
        "-t",
        "sensors/+/temp",
        "-q",
        "1",
        "-V",
        "mqttv5",
        "-F",
        "%t %p %P",
    ]);
    for (qos, version) in [
        ("0", "mqttv311"),
        ("1", "mqttv311"),
        ("2", "mqttv311"),
        ("0", "mqttv5"),
        ("1", "mqttv5"),
        ("2", "mqttv5"),
    ] {
        let topic = format!("sensors/dev-{qos}/temp");
        let payload = format!("{version}-q{qos}");
        hub.publish_ok(&["-t", &topic, "-m", &payload, "-q", qos, "-V", version]);
    }
    hub.publish_ok(&[
        "-t",
        "sensors/dev-9/temp",
        "-m",
        "props",
        "-q",
        "1",
        "-V",
        "mqttv5",
        "-D",
        "publish",
        "user-property",
        "site",
        "north",
        "-D",
        "publish",
        "content-type",
        "text/plain",
    ]);
    let got = v311.wait_messages(7);
    assert_eq!(got.len(), 7, "{got:?}");
    for (qos, version) in [
        ("0", "mqttv311"),
        ("1", "mqttv311"),
        ("2", "mqttv311"),
        ("0", "mqttv5"),
        ("1", "mqttv5"),
        ("2", "mqttv5"),
    ] {
        let line = format!("sensors/dev-{qos}/temp {version}-q{qos}");
        assert!(got.contains(&line), "{line} missing from {got:?}");
    }
    // MQTT 5 properties travel as headers and back.
    let got5 = v5.wait_messages(7);
    assert!(
        got5.contains(&"sensors/dev-9/temp props site:north".to_string()),
        "{got5:?}"
    );

    let records = stored(&hub.options(), "sensors");
    assert_eq!(records.len(), 7, "each publish stored once");
    let props = records
        .iter()
        .find(|r| r.value == b"props")
        .expect("the v5 record");
    assert_eq!(props.key.as_deref(), Some(&b"dev-9/temp"[..]));
    assert_eq!(header(props, "mqtt.topic"), Some("sensors/dev-9/temp"));
    assert_eq!(header(props, "mqtt.content_type"), Some("text/plain"));
    assert_eq!(header(props, "site"), Some("north"));
}

#[test]
fn routes_pick_the_eddy_topic_key_and_partition() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("eddy.toml");
    std::fs::write(
        &config,
        "default_partitions = 4\n\n[[mqtt.route]]\nfilter = \"plant/+/+/temp\"\n\
         topic = \"temperature\"\nkey = \"{1}/{2}\"\n",
    )
    .unwrap();
    let hub = Hub::start(
        &data.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    for line in ["1", "2", "3", "4", "5", "6"] {
        let topic = format!("plant/hall-{line}/m{line}/temp");
        hub.publish_ok(&["-t", &topic, "-m", line, "-q", "1"]);
    }
    // No route: the first level is the topic, the rest the key.
    hub.publish_ok(&["-t", "other/dev-1", "-m", "x", "-q", "1"]);
    let records = stored(&hub.options(), "temperature");
    assert_eq!(records.len(), 6);
    for r in &records {
        let key = r.key.as_deref().unwrap();
        let n = std::str::from_utf8(&r.value).unwrap();
        assert_eq!(key, format!("hall-{n}/m{n}").as_bytes());
        assert_eq!(
            r.partition,
            eddy::wire::partitioner::partition_for_key(key, 4),
            "murmur2 of the key, as every producer"
        );
        assert_eq!(
            header(r, "mqtt.topic"),
            Some(format!("plant/hall-{n}/m{n}/temp").as_str())
        );
    }
    let other = stored(&hub.options(), "other");
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].key.as_deref(), Some(&b"dev-1"[..]));
}

#[test]
fn a_persistent_session_gets_what_it_missed_across_a_disconnect_and_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(data.path(), &[]);
    // Subscribe with a persistent session, then go away.
    let sub = hub.subscribe(&["-c", "-i", "offline-1", "-t", "meters/#", "-q", "1", "-E"]);
    assert!(sub.wait_exit());
    for i in 0..20 {
        let payload = format!("m{i}");
        hub.publish_ok(&["-t", "meters/a", "-m", &payload, "-q", "1"]);
    }
    // Each PUBACK above was durable: a kill -9 loses none of them.
    let Hub { server, .. } = hub;
    server.kill9();
    let hub = Hub::start(data.path(), &[]);
    for i in 20..25 {
        let payload = format!("m{i}");
        hub.publish_ok(&["-t", "meters/a", "-m", &payload, "-q", "2"]);
    }
    let sub = hub.subscribe(&[
        "-c",
        "-i",
        "offline-1",
        "-t",
        "meters/#",
        "-q",
        "1",
        "-C",
        "25",
    ]);
    let got = sub.wait_messages(25);
    let expected: Vec<String> = (0..25).map(|i| format!("meters/a m{i}")).collect();
    assert_eq!(got, expected, "in order, none lost, none twice");
    assert!(sub.wait_exit());
    // Acknowledged deliveries are not sent again to the next connection.
    hub.publish_ok(&["-t", "meters/a", "-m", "after", "-q", "1"]);
    let sub = hub.subscribe(&[
        "-c",
        "-i",
        "offline-1",
        "-t",
        "meters/#",
        "-q",
        "1",
        "-C",
        "1",
    ]);
    assert_eq!(sub.wait_messages(1), vec!["meters/a after".to_string()]);
    assert_eq!(
        stored(&hub.options(), "meters").len(),
        26,
        "QoS 2 stored once each"
    );
}

#[test]
fn retained_messages_and_wills_reach_subscribers() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(data.path(), &[]);
    hub.publish_ok(&["-t", "lights/hall", "-m", "on", "-q", "1", "-r"]);
    hub.publish_ok(&["-t", "lights/hall", "-m", "off", "-q", "1", "-r"]);
    hub.publish_ok(&[
        "-t",
        "lights/porch",
        "-m",
        "on",
        "-q",
        "1",
        "-r",
        "-V",
        "mqttv5",
    ]);
    let sub = hub.subscribe(&["-t", "lights/#", "-q", "1", "-C", "2"]);
    let mut got = sub.wait_messages(2);
    got.sort();
    assert_eq!(
        got,
        vec!["lights/hall off", "lights/porch on"],
        "the latest per topic"
    );

    // A client that dies without DISCONNECT: its will is published.
    let watcher = hub.subscribe(&["-t", "status/#", "-q", "1"]);
    let doomed = hub.subscribe(&[
        "-t",
        "nothing/here",
        "-i",
        "doomed",
        "--will-topic",
        "status/doomed",
        "--will-payload",
        "offline",
        "--will-qos",
        "1",
    ]);
    drop(doomed); // SIGKILL: no DISCONNECT
    assert_eq!(
        watcher.wait_messages(1),
        vec!["status/doomed offline".to_string()]
    );
}

#[test]
fn acl_denials_are_reason_codes_in_v5_and_closed_connections_in_v311() {
    let data = tempfile::tempdir().unwrap();
    let acl = data.path().join("acl.toml");
    std::fs::write(
        &acl,
        "[[allow]]\nidentities = [\"anonymous\"]\noperations = [\"produce\", \"consume\"]\n\
         topics = [\"open\"]\n",
    )
    .unwrap();
    let hub = Hub::start(&data.path().join("data"), &["--acl", acl.to_str().unwrap()]);
    hub.publish_ok(&["-t", "open/a", "-m", "fine", "-q", "1"]);
    let (ok, text) = hub.publish(&["-t", "secret/a", "-m", "no", "-q", "1", "-V", "mqttv5"]);
    assert!(text.contains("Not authorized") || !ok, "v5: {ok} {text}");
    let (ok, text) = hub.publish(&["-t", "secret/a", "-m", "no", "-q", "1"]);
    assert!(!ok, "v3.1.1: the connection is closed: {text}");
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &hub.port(),
            "-t",
            "secret/#",
            "-V",
            "mqttv5",
            "-C",
            "1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&sub.stdout).to_string() + &String::from_utf8_lossy(&sub.stderr);
    assert!(text.contains("denied"), "SUBACK 0x87: {text}");
    wait_until(WAIT, "a denial log line", || {
        hub.server
            .log_text()
            .contains("anonymous may not publish to \"secret/a\"")
    });
    assert_eq!(stored(&hub.options(), "open").len(), 1);
    let topics = topic_names(&hub.options());
    assert!(
        !topics.iter().any(|t| t == "secret"),
        "a denial writes nothing: {topics:?}"
    );
}

#[test]
fn a_qos_2_resend_after_a_reconnect_is_stored_once() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(data.path(), &[]);
    let mut first = raw_connect(&hub, "exactly-once", false);
    first
        .write_all(&publish_qos2("once/a", 7, b"v", false))
        .unwrap();
    assert_eq!(
        read_exact_packet(&mut first, 4),
        vec![0x50, 2, 0, 7],
        "PUBREC"
    );
    // The connection drops before PUBREL; the client resends with DUP.
    drop(first);
    let mut second = raw_connect(&hub, "exactly-once", false);
    second
        .write_all(&publish_qos2("once/a", 7, b"v", true))
        .unwrap();
    assert_eq!(
        read_exact_packet(&mut second, 4),
        vec![0x50, 2, 0, 7],
        "PUBREC again"
    );
    second.write_all(&[0x62, 2, 0, 7]).unwrap();
    assert_eq!(
        read_exact_packet(&mut second, 4),
        vec![0x70, 2, 0, 7],
        "PUBCOMP"
    );
    assert_eq!(stored(&hub.options(), "once").len(), 1);
}

#[test]
fn a_qos_2_resend_after_a_hub_kill_9_between_pubrec_and_pubrel_is_stored_once() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(data.path(), &[]);
    let mut first = raw_connect(&hub, "exactly-once", false);
    first
        .write_all(&publish_qos2("once/a", 7, b"v1", false))
        .unwrap();
    assert_eq!(
        read_exact_packet(&mut first, 4),
        vec![0x50, 2, 0, 7],
        "PUBREC"
    );
    // The hub dies before the PUBREL: its memory of packet 7 is gone.
    drop(first);
    let Hub { server, .. } = hub;
    server.kill9();
    let hub = Hub::start(data.path(), &[]);
    let mut second = raw_connect(&hub, "exactly-once", false);
    second
        .write_all(&publish_qos2("once/a", 7, b"v1", true))
        .unwrap();
    assert_eq!(
        read_exact_packet(&mut second, 4),
        vec![0x50, 2, 0, 7],
        "PUBREC for the resend"
    );
    second.write_all(&[0x62, 2, 0, 7]).unwrap();
    assert_eq!(
        read_exact_packet(&mut second, 4),
        vec![0x70, 2, 0, 7],
        "PUBCOMP"
    );
    assert_eq!(stored(&hub.options(), "once").len(), 1, "stored once");
    // After PUBCOMP the packet id is free: a new message with it is stored.
    second
        .write_all(&publish_qos2("once/a", 7, b"v2", false))
        .unwrap();
    assert_eq!(read_exact_packet(&mut second, 4), vec![0x50, 2, 0, 7]);
    second.write_all(&[0x62, 2, 0, 7]).unwrap();
    assert_eq!(read_exact_packet(&mut second, 4), vec![0x70, 2, 0, 7]);
    let values: Vec<Vec<u8>> = stored(&hub.options(), "once")
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values, vec![b"v1".to_vec(), b"v2".to_vec()]);
}

#[test]
fn a_malformed_or_oversized_packet_closes_only_that_connection() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(data.path(), &[]);
    let sub = hub.subscribe(&["-t", "ok/#", "-q", "1"]);
    for bad in [
        // A SUBSCRIBE with a filter length past the packet's end.
        vec![0x82, 5, 0, 1, 0, 9, b'a'],
        // A packet announcing 200 MB.
        vec![0x30, 0x80, 0x80, 0x80, 0x64],
        // A reserved packet type.
        vec![0xF0, 0],
    ] {
        let mut s = raw_connect(&hub, "", true);
        s.write_all(&bad).unwrap();
        let mut rest = Vec::new();
        let n = s.read_to_end(&mut rest).unwrap();
        assert_eq!(n, 0, "closed without an answer: {bad:02x?} -> {rest:02x?}");
    }
    // A first packet that is not CONNECT, and garbage (whose announced
    // length the hub would wait for until the CONNECT deadline: the
    // client stops sending instead).
    for bad in [&[0x30u8, 2, 0, 0][..], b"GET / HTTP/1.1\r\n\r\n"] {
        let mut s = TcpStream::connect(hub.mqtt).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(bad).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "{bad:02x?}");
    }
    hub.publish_ok(&["-t", "ok/still", "-m", "alive", "-q", "1"]);
    assert_eq!(sub.wait_messages(1), vec!["ok/still alive".to_string()]);
}
