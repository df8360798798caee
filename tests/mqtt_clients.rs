//! The MQTT listener against two more clients nobody here wrote: Eclipse
//! paho-mqtt (PyPI) and MQTT.js (npm, pinned in
//! `tests/mqtt_clients/package-lock.json`), each in MQTT 3.1.1 and 5,
//! driven through the small command-line wrappers in `tests/mqtt_clients/`
//! (same commands for both). One scenario per client and version: publish
//! at QoS 0, 1 and 2, a route, a retained message, a will, an ACL denial,
//! and a persistent session across a disconnect and a hub `kill -9`
//! (nothing acknowledged lost, QoS 2 never stored twice).
//!
//! A missing client fails these tests: `.ci/run` installs paho-mqtt with
//! pip and MQTT.js with `npm ci`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::mqtt::{stored, topic_names, Hub, WAIT};
use common::wait_until;

#[derive(Clone, Copy)]
enum Client {
    Paho,
    MqttJs,
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mqtt_clients")
}

/// Runs the client's wrapper with `args` against `hub`; its success and
/// standard output lines.
fn run(client: Client, hub: &Hub, version: &str, args: &[&str]) -> (bool, Vec<String>) {
    let dir = clients_dir();
    let mut command = match client {
        Client::Paho => {
            let mut c = Command::new("python3");
            c.arg(dir.join("paho_client.py"));
            c
        }
        Client::MqttJs => {
            assert!(
                dir.join("node_modules/mqtt").exists(),
                "MQTT.js is not installed: npm ci --prefix tests/mqtt_clients"
            );
            let mut c = Command::new("node");
            c.arg(dir.join("mqttjs_client.js"));
            c
        }
    };
    let out = command
        .arg(hub.port())
        .arg(version)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 (with paho-mqtt) and node must be installed");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if !out.status.success() {
        eprintln!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), lines)
}

fn start_hub(data: &Path) -> Hub {
    let config = data.join("eddy.toml");
    std::fs::write(
        &config,
        "[[mqtt.route]]\nfilter = \"plant/+/+/temp\"\ntopic = \"temperature\"\nkey = \"{1}/{2}\"\n",
    )
    .unwrap();
    let acl = data.join("acl.toml");
    std::fs::write(
        &acl,
        "[[allow]]\nidentities = [\"anonymous\"]\noperations = [\"produce\", \"consume\", \"admin\"]\n\
         topics = [\"*\"]\ngroups = [\"*\"]\n\n[[deny]]\nidentities = [\"anonymous\"]\n\
         operations = [\"produce\"]\ntopics = [\"secret\"]\n",
    )
    .unwrap();
    Hub::start(
        &data.join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--acl",
            acl.to_str().unwrap(),
        ],
    )
}

fn scenario(client: Client, version: &str) {
    let data = tempfile::tempdir().unwrap();
    let mut hub = start_hub(data.path());
    let publish = |hub: &Hub, topic: &str, qos: &str, retain: &str, payloads: &[&str]| {
        let args = [&["publish", "pub", topic, qos, retain][..], payloads].concat();
        run(client, hub, version, &args)
    };
    // A persistent session subscribes, then goes away.
    let (ok, _) = run(
        client,
        &hub,
        version,
        &["subscribe", "keeper", "1", "meters/#", "1", "0"],
    );
    assert!(ok, "persistent subscribe");
    let mut acked = Vec::new();
    for qos in ["0", "1", "2"] {
        let payloads = [format!("q{qos}-a"), format!("q{qos}-b")];
        let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let (ok, lines) = publish(&hub, "meters/dev-1", qos, "0", &payloads);
        assert!(ok, "QoS {qos}: {lines:?}");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.starts_with("acked ")), "{lines:?}");
        acked.extend(payloads.iter().map(|p| format!("meters/dev-1 {p}")));
    }
    // A route: MQTT topic → eddy topic and key.
    let (ok, _) = publish(&hub, "plant/hall-1/m2/temp", "1", "0", &["21.5"]);
    assert!(ok);
    let temperature = stored(&hub.options(), "temperature");
    assert_eq!(temperature.len(), 1);
    assert_eq!(temperature[0].key.as_deref(), Some(&b"hall-1/m2"[..]));
    // Retained: a later subscriber gets the latest.
    publish(&hub, "lights/hall", "1", "1", &["on"]);
    publish(&hub, "lights/hall", "1", "1", &["off"]);
    let (ok, lines) = run(
        client,
        &hub,
        version,
        &["subscribe", "viewer", "0", "lights/#", "1", "1"],
    );
    assert!(ok);
    assert_eq!(lines, vec!["lights/hall off".to_string()]);
    // A will: the client dies without DISCONNECT.
    let (ok, _) = run(
        client,
        &hub,
        version,
        &["will", "doomed", "status/doomed", "gone"],
    );
    assert!(ok);
    wait_until(WAIT, "the will stored", || {
        topic_names(&hub.options()).contains(&"status".to_string())
            && stored(&hub.options(), "status").len() == 1
    });
    assert_eq!(stored(&hub.options(), "status")[0].value, b"gone");
    // An ACL denial: a reason code (MQTT 5) or a closed connection (3.1.1).
    let (_, lines) = publish(&hub, "secret/x", "1", "0", &["no"]);
    assert_eq!(lines, vec!["refused no".to_string()]);
    assert!(!topic_names(&hub.options()).contains(&"secret".to_string()));

    // Every PUBACK/PUBREC above was durable: a kill -9 loses none.
    let Hub { server, .. } = hub;
    server.kill9();
    hub = start_hub(data.path());
    let (ok, _) = publish(&hub, "meters/dev-1", "2", "0", &["after"]);
    assert!(ok);
    acked.push("meters/dev-1 after".to_string());
    let want = acked.len().to_string();
    let (ok, got) = run(
        client,
        &hub,
        version,
        &["subscribe", "keeper", "1", "meters/#", "1", &want],
    );
    assert!(ok, "{got:?}");
    assert_eq!(got, acked, "in order, none lost, none twice");
    let values: Vec<Vec<u8>> = stored(&hub.options(), "meters")
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values.len(), acked.len(), "each stored once");
}

#[test]
fn paho_mqtt_v311() {
    scenario(Client::Paho, "3");
}

#[test]
fn paho_mqtt_v5() {
    scenario(Client::Paho, "5");
}

#[test]
fn mqtt_js_v311() {
    scenario(Client::MqttJs, "3");
}

#[test]
fn mqtt_js_v5() {
    scenario(Client::MqttJs, "5");
}
