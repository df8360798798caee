use std::path::{Path, PathBuf};

use super::*;
use crate::config::{MirrorLinkConfig, ServerConfig};

/// The file the .deb installs as /etc/eddy/eddy.toml.
const EXAMPLE: &str = include_str!("../../../packaging/eddy.toml");

fn load_text(text: &str) -> Result<ServerConfig, FileError> {
    let loaded = Loaded {
        path: PathBuf::from("eddy.toml"),
        text: text.to_string(),
        file: parse(Path::new("eddy.toml"), text)?,
    };
    let mut config = ServerConfig::default();
    loaded.apply(&mut config)?;
    Ok(config)
}

fn error(text: &str) -> FileError {
    load_text(text).expect_err("the file must be refused")
}

/// Every `# key = value` line of the example, uncommented (and the
/// `# [[mirror]]` header of the example link).
fn uncommented(example: &str) -> String {
    example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if is_assignment(rest) || rest == "[[mirror]]" || rest == "[[mqtt.route]]" =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_assignment(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

#[test]
fn the_example_config_is_valid_and_sets_only_the_data_dir() {
    let config = load_text(EXAMPLE).unwrap();
    let expected = ServerConfig {
        data_dir: PathBuf::from("/var/lib/eddy"),
        ..ServerConfig::default()
    };
    assert_eq!(format!("{config:?}"), format!("{expected:?}"));
}

#[test]
fn the_example_states_the_true_defaults() {
    // Uncommenting every documented default must change nothing but the
    // keys that have no default (hub_id, cert, key, disk_budget_mb,
    // client_ca, the ACL file, kafka.advertised, mqtt.password_file).
    let text = uncommented(EXAMPLE);
    let file = parse(Path::new("eddy.toml"), &text).unwrap();
    assert_eq!(file.hub_id.as_deref(), Some("gateway-17"));
    assert!(file.tls.cert.is_some() && file.tls.key.is_some());
    let mut config = ServerConfig::default();
    let mut without_optional = file.clone();
    without_optional.hub_id = None;
    without_optional.tls.cert = None;
    without_optional.tls.key = None;
    assert!(without_optional.storage.disk_budget_mb.is_some());
    without_optional.storage.disk_budget_mb = None;
    assert!(without_optional.tls.client_ca.is_some() && without_optional.acl.file.is_some());
    without_optional.tls.client_ca = None;
    without_optional.acl.file = None;
    assert!(without_optional.kafka.advertised.is_some());
    without_optional.kafka.advertised = None;
    assert!(without_optional.mqtt.password_file.is_some());
    without_optional.mqtt.password_file = None;
    // The example mirror link documents every key at its default.
    assert_eq!(file.mirror.len(), 1);
    let link = file.mirror[0].to_link().unwrap();
    let defaults = MirrorLinkConfig::parse(file.mirror[0].url.as_deref().unwrap()).unwrap();
    assert_eq!(
        MirrorLinkConfig {
            name: defaults.name.clone(),
            ca: None,
            cert: None,
            key: None,
            server_name: None,
            pattern: None,
            ..link
        },
        defaults
    );
    without_optional.mirror.clear();
    // The example route shows the syntax; there are none by default.
    assert_eq!(file.mqtt.route.len(), 1);
    without_optional.mqtt.route.clear();
    without_optional.apply(&mut config).unwrap();
    config.validate().unwrap();
    let expected = ServerConfig {
        data_dir: PathBuf::from("/var/lib/eddy"),
        ..ServerConfig::default()
    };
    assert_eq!(format!("{config:?}"), format!("{expected:?}"));
}

#[test]
fn the_example_documents_every_key() {
    let mut all = FileConfig::from_config(&ServerConfig::default());
    all.hub_id = Some("x".into());
    all.tls.cert = Some("x".into());
    all.tls.key = Some("x".into());
    all.storage.disk_budget_mb = Some(1);
    all.tls.client_ca = Some("x".into());
    all.acl.file = Some("x".into());
    all.kafka.advertised = Some("x:1".into());
    all.mqtt.password_file = Some("x".into());
    let mut link = MirrorLinkConfig::parse("kafka://k:9092").unwrap();
    link.pattern = Some("x".into());
    link.ca = Some("x".into());
    link.cert = Some("x".into());
    link.key = Some("x".into());
    link.server_name = Some("x".into());
    all.mirror = vec![link.to_section()];
    all.mqtt.route = vec![crate::config::mqtt::MqttRoute {
        filter: "a/+".into(),
        topic: "a".into(),
        key: Some("{1}".into()),
        acks: Some(crate::config::mqtt::MqttAcks::Durable),
    }];
    let table: toml::Table = toml::from_str(&toml::to_string(&all).unwrap()).unwrap();
    let assigned: Vec<(String, String)> = {
        // (section, key) of every assignment in the uncommented example.
        let mut section = String::new();
        let mut out = Vec::new();
        for line in uncommented(EXAMPLE).lines() {
            if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
                section = name.to_string();
            } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
            } else if is_assignment(line) {
                let key = line.split_once(" = ").unwrap().0;
                out.push((section.clone(), key.to_string()));
            }
        }
        out
    };
    let mut keys = 0;
    for (name, value) in &table {
        let mut check = |section: &str, key: &str| {
            keys += 1;
            assert!(
                assigned.contains(&(section.to_string(), key.to_string())),
                "packaging/eddy.toml does not document [{section}] {key}"
            );
        };
        match value {
            toml::Value::Table(inner) => {
                for (k, v) in inner {
                    // Arrays of tables inside a section ([[mqtt.route]]).
                    match v
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(|t| t.as_table())
                    {
                        Some(t) => t.keys().for_each(|sub| check(&format!("{name}.{k}"), sub)),
                        None => check(name, k),
                    }
                }
            }
            toml::Value::Array(tables) => {
                for t in tables {
                    t.as_table().unwrap().keys().for_each(|k| check(name, k));
                }
            }
            _ => check("", name),
        }
    }
    assert_eq!(keys, assigned.len(), "the example documents unknown keys");
}

#[test]
fn unknown_keys_are_errors_with_line_and_field() {
    let e = error("[limits]\ninflight_max = 8\nconections_max = 5\n");
    assert_eq!(e.position, Some((3, 1)), "{e}");
    assert_eq!(e.field.as_deref(), Some("limits.conections_max"), "{e}");
    assert!(e.message.contains("unknown field `conections_max`"), "{e}");
    assert!(
        e.message.contains("connections_max"),
        "lists the valid keys: {e}"
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with("eddy.toml:3:1: limits.conections_max: "),
        "{shown}"
    );

    let e = error("listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n");
    assert_eq!(e.position, Some((2, 1)));
    assert_eq!(e.field.as_deref(), Some("listen_addr"));

    let e = error("[metric]\nenabled = false\n");
    assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");
    assert!(e.message.contains("unknown field `metric`"), "{e}");
}

#[test]
fn wrong_types_name_the_field_and_line() {
    let e = error("\n[limits]\ninflight_max = \"many\"\n");
    assert_eq!(e.field.as_deref(), Some("limits.inflight_max"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");

    let e = error("listen = \"localhost\"\n");
    assert_eq!(e.field.as_deref(), Some("listen"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");

    let e = error("[limits]\ninflight_max = -1\n");
    assert_eq!(e.field.as_deref(), Some("limits.inflight_max"), "{e}");
}

#[test]
fn syntax_errors_have_a_line() {
    let e = error("listen = \"127.0.0.1:7654\n[tls]\n");
    assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");
    let e = error("[limits]\ninflight_max = 8\ninflight_max = 9\n");
    assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
}

#[test]
fn out_of_range_values_point_at_their_key() {
    let e = error("threads = 2\n\n[limits]\n  inflight_max = 0\n");
    assert_eq!(e.field.as_deref(), Some("limits.inflight_max"));
    assert_eq!(e.position, Some((4, 3)));
    assert!(e.message.contains("1 to 4096"), "{e}");

    let e = error("[limits]\nidle_timeout_ms = 10\n");
    assert_eq!(e.field.as_deref(), Some("limits.idle_timeout_ms"));
    assert!(e.message.contains("100 ms to 86400000 ms"), "{e}");

    let e = error("[storage]\ncache_mb = 0\n");
    assert_eq!(e.field.as_deref(), Some("storage.cache_mb"));

    let e = error("[tls]\nreload_check_ms = 5\n");
    assert_eq!(e.field.as_deref(), Some("tls.reload_check_ms"));
    assert!(load_text("[tls]\nreload_check_ms = 0\n").is_ok());

    let e = error("log_level = \"verbose\"\n");
    assert_eq!(e.field.as_deref(), Some("log_level"));
    assert_eq!(e.position, Some((1, 1)));
}

#[test]
fn contradictions_point_at_the_key_the_file_sets() {
    // The default batch_bytes_max no longer fits once frame_bytes_max is
    // lowered: the error points at the key that is in the file.
    let e = error("[limits]\nframe_bytes_max = 65536\n");
    assert_eq!(e.field.as_deref(), Some("limits.frame_bytes_max"), "{e}");
    assert_eq!(e.position, Some((2, 1)));
    assert!(e.message.contains("batch_bytes_max"), "{e}");

    let e = error("[tls]\ncert = \"/etc/eddy/server.pem\"\n");
    assert_eq!(e.field.as_deref(), Some("tls.cert"), "{e}");
    assert_eq!(e.position, Some((2, 1)));

    let e = error("[tls]\ninsecure_plaintext = true\nkey = \"k\"\ncert = \"c\"\n");
    assert_eq!(e.field.as_deref(), Some("tls.insecure_plaintext"), "{e}");

    let e = error("listen = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.1:9000\"\n");
    assert_eq!(e.field.as_deref(), Some("metrics.listen"), "{e}");
    assert_eq!(e.position, Some((3, 1)));
}

#[test]
fn the_file_overrides_defaults() {
    let config = load_text(
        r#"
listen = "0.0.0.0:8000"
data_dir = "/srv/eddy"
hub_id = "plant-3"
auto_create_topics = false
default_partitions = 4
threads = 3
[tls]
cert = "/etc/eddy/tls/server.pem"
key = "/etc/eddy/tls/server.key"
reload_check_ms = 250
[storage]
cache_mb = 32
[limits]
connections_max = 20000
tls_handshake_timeout_ms = 5000
idle_timeout_ms = 60000
frame_timeout_ms = 20000
inflight_max = 16
frame_bytes_max = 2097152
batch_bytes_max = 2000000
[metrics]
listen = "127.0.0.1:9100"
"#,
    )
    .unwrap();
    assert_eq!(config.listen, "0.0.0.0:8000".parse().unwrap());
    assert_eq!(config.data_dir, PathBuf::from("/srv/eddy"));
    assert_eq!(config.hub_id.as_deref(), Some("plant-3"));
    assert!(!config.auto_create_topics);
    assert_eq!(config.default_partitions, 4);
    assert_eq!(config.threads, 3);
    assert_eq!(
        config.tls,
        TlsSetup::Files {
            cert: "/etc/eddy/tls/server.pem".into(),
            key: "/etc/eddy/tls/server.key".into()
        }
    );
    assert_eq!(config.tls_reload_check_ms, 250);
    assert_eq!(config.storage.cache_bytes, 32 << 20);
    let l = &config.limits;
    assert_eq!(
        (
            l.connections_max,
            l.tls_handshake_timeout_ms,
            l.idle_timeout_ms,
            l.frame_timeout_ms
        ),
        (20_000, 5_000, 60_000, 20_000)
    );
    assert_eq!(
        (l.inflight_max, l.frame_bytes_max, l.batch_bytes_max),
        (16, 2 << 20, 2_000_000)
    );
    assert_eq!(
        config.metrics_listen,
        Some("127.0.0.1:9100".parse().unwrap())
    );
}

#[test]
fn metrics_can_be_turned_off_and_plaintext_on() {
    let config =
        load_text("[metrics]\nenabled = false\n[tls]\ninsecure_plaintext = true\n").unwrap();
    assert_eq!(config.metrics_listen, None);
    assert_eq!(config.tls, TlsSetup::InsecurePlaintext);
    let config = load_text("").unwrap();
    assert_eq!(
        format!("{config:?}"),
        format!("{:?}", ServerConfig::default())
    );
}

#[test]
fn oversized_and_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = load(&missing).unwrap_err();
    assert!(e.to_string().contains("nope.toml: cannot read"), "{e}");
    let big = dir.path().join("big.toml");
    let size = usize::try_from(FILE_BYTES_MAX).unwrap() + 1;
    std::fs::write(&big, "#".repeat(size)).unwrap();
    assert!(load(&big).unwrap_err().message.contains("at most"));
}

#[test]
fn mirror_links_come_from_tables() {
    let config = load_text(
        "hub_id = \"gw-1\"\n\
         [[mirror]]\nname = \"dc\"\nurl = \"kafka://k1:9092,k2:9092\"\npattern = \"sensors\\\\..*\"\n\
         compression = \"snappy\"\nbandwidth_bytes_per_s = 100000\n\
         [[mirror]]\nurl = \"eddy://central:7654\"\nca = \"/etc/eddy/ca.pem\"\ntopics = [\"alarms\"]\n",
    )
    .unwrap();
    assert_eq!(config.mirror.len(), 2);
    let kafka = &config.mirror[0];
    assert_eq!(kafka.name, "dc");
    assert_eq!(kafka.addrs, vec!["k1:9092", "k2:9092"]);
    assert_eq!(kafka.pattern.as_deref(), Some("sensors\\..*"));
    assert_eq!(
        kafka.compression,
        crate::config::mirror::UplinkCompression::Snappy
    );
    assert_eq!(kafka.bandwidth_bytes_per_s, 100_000);
    let eddy = &config.mirror[1];
    assert_eq!(eddy.name, "central-7654");
    assert_eq!(eddy.topics, vec!["alarms"]);
    let e = error("[[mirror]]\nname = \"dc\"\n");
    assert_eq!(e.field.as_deref(), Some("mirror.url"), "{e}");
    let e = error("[[mirror]]\nurl = \"kafka://k:1\"\ncompresion = \"none\"\n");
    assert_eq!(e.position, Some((3, 1)), "{e}");
    let e = error("[[mirror]]\nurl = \"kafka://k:1\"\ncompression = \"gzip\"\n");
    assert!(e.message.contains("none or snappy"), "{e}");
    let e = error("[[mirror]]\nurl = \"eddy://k:1\"\n");
    assert!(e.message.contains("--mirror-ca"), "{e}");
}
