//! Device identity and ACLs against a real `eddy serve` process: mTLS with
//! a client CA (wrong CA, expired and missing certificates refused and
//! logged), ACL denials for produce, consume and admin (refused, logged,
//! nothing written), reloads of the ACL file and the client CA without a
//! restart, rate-bounded denial logs, and `eddy acl check`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::{options, Ca, Device};
use common::{values, wait_until, ChildServer};
use eddy::client::{Client, ClientError};
use eddy::wire::{Acks, ErrorCode, FetchPartition, GroupHeartbeat};

const ACL: &str = r#"
[[allow]]
identities = ["ops"]
operations = ["produce", "consume", "admin"]
topics = ["*"]
groups = ["*"]

[[allow]]
identities = ["sensor-*"]
operations = ["produce"]
topics = ["telemetry", "devices.{identity}"]

[[allow]]
identities = ["dashboard"]
operations = ["consume"]
topics = ["telemetry"]
groups = ["dashboard"]

[[deny]]
identities = ["sensor-13"]
operations = ["produce"]
topics = ["*"]
"#;

/// A hub requiring device certificates from `ca`, with the ACL above.
struct Hub {
    server: ChildServer,
    ca: Ca,
    _data: tempfile::TempDir,
    pki: tempfile::TempDir,
}

impl Hub {
    fn start() -> Hub {
        let pki = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let ca = Ca::new(pki.path(), "devices-ca");
        let acl = pki.path().join("acl.toml");
        std::fs::write(&acl, ACL).unwrap();
        let server = ChildServer::start(
            data.path(),
            &[
                "--client-ca",
                ca.cert.to_str().unwrap(),
                "--acl",
                acl.to_str().unwrap(),
            ],
        );
        Hub {
            server,
            ca,
            _data: data,
            pki,
        }
    }

    fn server_ca(&self) -> std::path::PathBuf {
        self.server.data_dir.join("tls").join("ca.pem")
    }

    async fn connect(&self, device: Option<&Device>) -> Result<Client, ClientError> {
        let options = options(&self.server.addr.to_string(), &self.server_ca(), device);
        Client::connect(&options).await
    }

    async fn as_identity(&self, cn: &str) -> Client {
        self.connect(Some(&self.ca.device(cn))).await.unwrap()
    }

    fn acl_path(&self) -> std::path::PathBuf {
        self.pki.path().join("acl.toml")
    }

    /// Waits for a log line containing `text` (the child's stderr is read
    /// by a thread as it comes).
    fn wait_log(&self, text: &str) {
        wait_until(Duration::from_secs(30), text, || {
            self.server.log_text().contains(text)
        });
    }

    /// Waits until the server's log has been read up to now: a topic
    /// created as `ops` logs a line after everything logged before it.
    async fn sync_log(&self, ops: &Client, marker: &str) {
        ops.create_topic(marker, 1).await.unwrap();
        self.wait_log(&format!("created topic {marker} "));
    }

    /// Sends SIGHUP and waits for one more log line containing `text`
    /// than before it: every reload logs a line per reloadable item, so an
    /// older line of the same text (an earlier SIGHUP) does not count.
    fn reload_and_wait(&self, text: &str) {
        let before = self.log_lines(text);
        self.server.signal("HUP");
        wait_until(Duration::from_secs(30), text, || {
            self.log_lines(text) > before
        });
    }

    fn log_lines(&self, text: &str) -> usize {
        self.server
            .log_text()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn log_end(client: &Client, topic: &str) -> u64 {
    client
        .watermarks(topic)
        .await
        .unwrap()
        .iter()
        .map(|m| m.log_end)
        .sum()
}

fn code<T>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("expected a server error, got {e}")),
        Ok(_) => panic!("expected a refusal, the request went through"),
    }
}

#[test]
fn devices_need_a_valid_certificate_from_the_client_ca() {
    let hub = Hub::start();
    smol::block_on(async {
        let ops = hub.as_identity("ops").await;
        ops.create_topic("telemetry", 1).await.unwrap();
        let sensor = hub.as_identity("sensor-1").await;
        sensor
            .produce("telemetry", None, Acks::Durable, 10_000, &values(&[b"ok"]))
            .await
            .unwrap();

        let other_ca = Ca::new(hub.pki.path(), "other-ca");
        let refused: [(&str, Option<Device>); 3] = [
            ("wrong CA", Some(other_ca.device("sensor-2"))),
            ("expired", Some(hub.ca.expired_device("sensor-3"))),
            ("no certificate", None),
        ];
        for (what, device) in &refused {
            let before = hub.log_lines("TLS handshake with");
            match hub.connect(device.as_ref()).await {
                Ok(client) => {
                    // TLS 1.3: the client may finish before the server has
                    // checked its certificate; the first request then fails.
                    let produced = client
                        .produce(
                            "telemetry",
                            None,
                            Acks::Durable,
                            10_000,
                            &values(&[what.as_bytes()]),
                        )
                        .await;
                    assert!(produced.is_err(), "{what}: a produce went through");
                }
                Err(e) => assert!(
                    e.code().is_none(),
                    "{what}: refused in TLS, not by a request: {e}"
                ),
            }
            wait_until(Duration::from_secs(30), "the refusal is logged", || {
                hub.log_lines("TLS handshake with") > before
            });
        }
        let log = hub.server.log_text();
        assert!(log.contains("UnknownIssuer"), "wrong CA logged:\n{log}");
        assert!(
            log.contains("certificate expired"),
            "expired certificate logged:\n{log}"
        );
        assert!(
            log.contains("NoCertificatesPresented") || log.contains("peer sent no certificates"),
            "missing certificate logged:\n{log}"
        );
        assert_eq!(
            log_end(&ops, "telemetry").await,
            1,
            "only the valid device wrote"
        );
    });
}

#[test]
fn acl_denials_are_refused_logged_and_write_nothing() {
    let hub = Hub::start();
    smol::block_on(async {
        let ops = hub.as_identity("ops").await;
        ops.create_topic("telemetry", 2).await.unwrap();
        ops.create_topic("alarms", 1).await.unwrap();
        let sensor = hub.as_identity("sensor-1").await;
        let record = values(&[b"reading"]);
        sensor
            .produce("telemetry", None, Acks::Durable, 10_000, &record)
            .await
            .unwrap();
        // {identity}: its own topic (auto-created), not another's.
        sensor
            .produce("devices.sensor-1", None, Acks::Durable, 10_000, &record)
            .await
            .unwrap();

        // Produce: to a topic not allowed, to another device's topic, and
        // by a denied identity.
        assert_eq!(
            code(
                sensor
                    .produce("alarms", None, Acks::Durable, 10_000, &record)
                    .await
            ),
            ErrorCode::NotAuthorized
        );
        assert_eq!(
            code(
                sensor
                    .produce("devices.sensor-2", None, Acks::Durable, 10_000, &record)
                    .await
            ),
            ErrorCode::NotAuthorized
        );
        let banned = hub.as_identity("sensor-13").await;
        assert_eq!(
            code(
                banned
                    .produce("telemetry", None, Acks::Durable, 10_000, &record)
                    .await
            ),
            ErrorCode::NotAuthorized
        );
        // Consume: the sensor may not read, and the dashboard may not
        // join another group.
        let fetch = [FetchPartition {
            partition: 0,
            offset: 0,
        }];
        assert_eq!(
            code(sensor.fetch("telemetry", &fetch, 1 << 20, 0).await),
            ErrorCode::NotAuthorized
        );
        let dashboard = hub.as_identity("dashboard").await;
        dashboard
            .fetch("telemetry", &fetch, 1 << 20, 0)
            .await
            .unwrap();
        let join = |group: &'static str| GroupHeartbeat {
            group,
            member_id: "",
            member_epoch: 0,
            client_id: "dash",
            topics: vec!["telemetry"],
            pattern: None,
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            owned: Vec::new(),
        };
        assert_eq!(
            code(dashboard.group_heartbeat(join("other")).await),
            ErrorCode::NotAuthorized
        );
        dashboard.group_heartbeat(join("dashboard")).await.unwrap();
        // Admin: create, delete, alter.
        assert_eq!(
            code(sensor.create_topic("new", 1).await),
            ErrorCode::NotAuthorized
        );
        assert_eq!(
            code(dashboard.delete_topic("telemetry").await),
            ErrorCode::NotAuthorized
        );
        assert_eq!(
            code(
                dashboard
                    .alter_topic("telemetry", &[("retention.ms".into(), "1".into())], &[])
                    .await
            ),
            ErrorCode::NotAuthorized
        );
        // The mirror status is an operator's view.
        assert_eq!(code(sensor.mirror_status().await), ErrorCode::NotAuthorized);
        ops.mirror_status().await.unwrap();

        // Nothing was written or created by the refused requests.
        assert_eq!(log_end(&ops, "telemetry").await, 1);
        assert_eq!(log_end(&ops, "alarms").await, 0);
        let topics: Vec<String> = ops
            .metadata(&[])
            .await
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(topics, ["alarms", "devices.sensor-1", "telemetry"]);
        let config = ops.describe_topic("telemetry").await.unwrap().configs;
        assert!(config.is_empty(), "alter was refused: {config:?}");
        // A listing shows only what the caller may see.
        let visible: Vec<String> = sensor
            .metadata(&[])
            .await
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(visible, ["devices.sensor-1", "telemetry"]);

        // One log line per denial, naming who, what and the rule.
        hub.sync_log(&ops, "marker").await;
        let log = hub.server.log_text();
        for line in [
            "(sensor-1): produce topic alarms: denied: sensor-1 may not produce topic alarms",
            "(sensor-1): produce topic devices.sensor-2",
            "(sensor-13): produce topic telemetry: denied: sensor-13 may not produce topic telemetry, by",
            "(sensor-1): consume topic telemetry",
            "(dashboard): consume group other",
            "(dashboard): admin topic telemetry",
            "(sensor-1): admin the mirror status: denied: no rule gives sensor-1 admin on any topic",
        ] {
            assert!(log.contains(line), "missing {line:?} in:\n{log}");
        }
        assert_eq!(
            hub.log_lines("denied 127.0.0.1"),
            9,
            "one line per denial:\n{log}"
        );
    });
}

#[test]
fn a_flood_of_denials_is_answered_but_logged_at_a_bounded_rate() {
    let hub = Hub::start();
    smol::block_on(async {
        let sensor = hub.as_identity("sensor-1").await;
        let record = values(&[b"x"]);
        for _ in 0..300 {
            assert_eq!(
                code(
                    sensor
                        .produce("alarms", None, Acks::Durable, 10_000, &record)
                        .await
                ),
                ErrorCode::NotAuthorized
            );
        }
        // Still answered normally afterwards.
        sensor.ping().await.unwrap();
        let ops = hub.as_identity("ops").await;
        hub.sync_log(&ops, "marker").await;
    });
    let lines = hub.log_lines("denied 127.0.0.1");
    let bound = eddy::log_limit::LOG_LINES_BURST_MAX as usize + 60;
    assert!(
        lines >= eddy::log_limit::LOG_LINES_BURST_MAX as usize && lines <= bound,
        "{lines} denial lines for 300 denials (burst {}, then {} a second)",
        eddy::log_limit::LOG_LINES_BURST_MAX,
        eddy::log_limit::LOG_LINES_PER_S
    );
}

#[test]
fn the_acl_file_and_the_client_ca_reload_without_a_restart() {
    let hub = Hub::start();
    smol::block_on(async {
        let ops = hub.as_identity("ops").await;
        ops.create_topic("telemetry", 1).await.unwrap();
        let sensor = hub.as_identity("sensor-1").await;
        let fetch = [FetchPartition {
            partition: 0,
            offset: 0,
        }];
        assert_eq!(
            code(sensor.fetch("telemetry", &fetch, 1 << 20, 0).await),
            ErrorCode::NotAuthorized
        );

        // A broken file is refused and the rules in force stay.
        replace(
            &hub.acl_path(),
            "[[allow]]\nidentities = [\"sensor-*\"]\noperations = [\"read\"]\n",
        );
        hub.reload_and_wait("acl reload (requested) refused, still using the previous version");
        assert!(hub.server.log_text().contains("unknown operation \"read\""));
        sensor
            .produce("telemetry", None, Acks::Durable, 10_000, &values(&[b"a"]))
            .await
            .unwrap();

        // A good file applies to the very next request, on open connections.
        let more = format!(
            "{ACL}\n[[allow]]\nidentities = [\"sensor-1\"]\noperations = [\"consume\"]\ntopics = [\"telemetry\"]\n"
        );
        replace(&hub.acl_path(), &more);
        hub.reload_and_wait("acl reloaded (requested)");
        sensor.fetch("telemetry", &fetch, 1 << 20, 0).await.unwrap();

        // A new client CA: devices of the new CA get in, the old CA's are
        // refused; open connections keep working.
        let new_ca = Ca::new(hub.pki.path(), "new-ca");
        let broken = hub.pki.path().join("broken.pem");
        std::fs::write(&broken, "not a certificate").unwrap();
        std::fs::rename(&broken, &hub.ca.cert).unwrap();
        hub.reload_and_wait("client_ca reload (requested) refused");
        hub.as_identity("sensor-1").await; // the old CA still holds
        std::fs::copy(&new_ca.cert, hub.pki.path().join("next.pem")).unwrap();
        std::fs::rename(hub.pki.path().join("next.pem"), &hub.ca.cert).unwrap();
        hub.reload_and_wait("client_ca reloaded (requested)");
        let newcomer = hub.connect(Some(&new_ca.device("sensor-7"))).await.unwrap();
        newcomer
            .produce("telemetry", None, Acks::Durable, 10_000, &values(&[b"b"]))
            .await
            .unwrap();
        let old = hub.connect(Some(&hub.ca.device("sensor-8"))).await;
        if let Ok(client) = old {
            assert!(
                client.ping().await.is_err(),
                "a device of the old CA got in"
            );
        }
        sensor.ping().await.unwrap();
        assert_eq!(log_end(&ops, "telemetry").await, 2);
    });
}

#[test]
fn the_identity_is_the_dns_name_then_the_uri_then_the_common_name() {
    let hub = Hub::start();
    let acl = r#"
[[allow]]
identities = ["pump-1.devices.example", "spiffe://fleet/pump-2"]
operations = ["produce"]
topics = ["telemetry"]
"#;
    replace(&hub.acl_path(), acl);
    hub.reload_and_wait("acl reloaded (requested)");
    smol::block_on(async {
        let dns = hub.ca.device_with_sans(
            "cn-1",
            vec![rcgen::SanType::DnsName(
                "pump-1.devices.example".try_into().unwrap(),
            )],
        );
        let uri = hub.ca.device_with_sans(
            "cn-2",
            vec![rcgen::SanType::URI(
                "spiffe://fleet/pump-2".try_into().unwrap(),
            )],
        );
        let record = values(&[b"r"]);
        for device in [&dns, &uri] {
            let client = hub.connect(Some(device)).await.unwrap();
            client
                .produce("telemetry", None, Acks::Durable, 10_000, &record)
                .await
                .unwrap();
        }
        // The same CN without the SAN is someone else.
        let cn_only = hub.as_identity("pump-1.devices.example").await;
        cn_only
            .produce("telemetry", None, Acks::Durable, 10_000, &record)
            .await
            .unwrap();
        let cn_other = hub.as_identity("cn-1").await;
        assert_eq!(
            code(
                cn_other
                    .produce("telemetry", None, Acks::Durable, 10_000, &record)
                    .await
            ),
            ErrorCode::NotAuthorized
        );
    });
}

fn eddy(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn acl_check_explains_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(&acl, ACL).unwrap();
    let acl = acl.to_str().unwrap();

    let (status, out, _) = eddy(&[
        "acl",
        "check",
        "sensor-4",
        "produce",
        "telemetry",
        "--acl",
        acl,
    ]);
    assert_eq!(status, 0, "{out}");
    assert!(
        out.starts_with("allowed: sensor-4 may produce topic telemetry, by "),
        "{out}"
    );
    assert!(out.contains("[[allow]] #2 (line 8)"), "{out}");

    let (status, out, _) = eddy(&[
        "acl",
        "check",
        "sensor-13",
        "produce",
        "telemetry",
        "--acl",
        acl,
    ]);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("[[deny]] #1 (line 19)"), "{out}");

    let (status, out, _) = eddy(&[
        "acl",
        "check",
        "dashboard",
        "consume",
        "dashboard",
        "--group",
        "--acl",
        acl,
    ]);
    assert_eq!(status, 0, "{out}");

    let (status, out, _) = eddy(&[
        "acl",
        "check",
        "sensor-4",
        "consume",
        "telemetry",
        "--acl",
        acl,
    ]);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("no rule in"), "{out}");
    assert!(out.contains("default deny"), "{out}");

    // Through the config file's [acl] file.
    let config = dir.path().join("eddy.toml");
    std::fs::write(&config, format!("[acl]\nfile = {acl:?}\n")).unwrap();
    let (status, out, _) = eddy(&[
        "acl",
        "check",
        "ops",
        "admin",
        "x",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(status, 0, "{out}");

    let (status, _, err) = eddy(&["acl", "check", "ops", "write", "x", "--acl", acl]);
    assert_eq!(status, 2);
    assert!(err.contains("unknown operation \"write\""), "{err}");

    // config check loads the ACL file the config names.
    std::fs::write(dir.path().join("acl.toml"), "[[allow]]\nidentity = 1\n").unwrap();
    let (status, _, err) = eddy(&["config", "check", config.to_str().unwrap()]);
    assert_eq!(status, 2);
    assert!(
        err.contains("acl.file:") && err.contains("unknown field"),
        "{err}"
    );
}

/// A batch of `producer` at `sequence` with one record `value`.
fn stamped(producer_id: i64, epoch: i16, sequence: i32, value: &[u8]) -> Vec<u8> {
    use eddy::wire::batch::{BatchBuilder, Headers, ProducerStamp, NO_TIMESTAMP};
    let mut b = BatchBuilder::with_capacity(1024, NO_TIMESTAMP).unwrap();
    b.set_producer(ProducerStamp {
        producer_id,
        producer_epoch: epoch,
        base_sequence: sequence,
    });
    b.push(NO_TIMESTAMP, None, value, Headers::EMPTY).unwrap();
    b.finish_vec()
}

/// Issue 16, item 4: a device that guesses another device's producer id
/// learns nothing about that producer and cannot advance its sequence, and
/// registering the other device's producer name does not fence it.
#[test]
fn producer_ids_and_names_belong_to_the_identity_that_registered_them() {
    let hub = Hub::start();
    smol::block_on(async {
        let ops = hub.as_identity("ops").await;
        ops.create_topic("telemetry", 1).await.unwrap();
        ops.create_topic("devices.sensor-2", 1).await.unwrap();
        let victim = hub.as_identity("sensor-1").await;
        let init = victim.init_producer("sensor-1").await.unwrap();
        let (id, epoch) = (init.producer_id, init.producer_epoch);
        victim
            .produce(
                "telemetry",
                None,
                Acks::Durable,
                10_000,
                &stamped(id, epoch, 0, b"r0"),
            )
            .await
            .unwrap();

        let thief = hub.as_identity("sensor-2").await;
        // Forged into its own topic, with the right epoch, a wrong one, the
        // next sequence and a far one: every answer is the one an id never
        // issued gets, naming nothing of the victim's producer.
        for (e, seq) in [(epoch, 1), (epoch + 3, 1), (epoch, 50), (epoch, 0)] {
            let forged = thief
                .produce(
                    "devices.sensor-2",
                    None,
                    Acks::Durable,
                    10_000,
                    &stamped(id, e, seq, b"forged"),
                )
                .await
                .unwrap_err();
            assert_eq!(forged.code(), Some(ErrorCode::UnknownProducer), "{forged}");
            let text = forged.to_string();
            for secret in ["sensor-1", "epoch", "expected", "sequence"] {
                assert!(!text.contains(secret), "{secret:?} leaked: {text}");
            }
        }
        assert_eq!(log_end(&ops, "devices.sensor-2").await, 0);
        // An id that was never issued gets the very same answer.
        let never = thief
            .produce(
                "devices.sensor-2",
                None,
                Acks::Durable,
                10_000,
                &stamped(id + 1000, 0, 0, b"x"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            never.to_string().replace(&(id + 1000).to_string(), "ID"),
            thief
                .produce(
                    "devices.sensor-2",
                    None,
                    Acks::Durable,
                    10_000,
                    &stamped(id, epoch, 1, b"x")
                )
                .await
                .unwrap_err()
                .to_string()
                .replace(&id.to_string(), "ID")
        );
        // The thief registering the victim's name gets a producer of its own.
        let own = thief.init_producer("sensor-1").await.unwrap();
        assert_ne!(own.producer_id, id);
        // The victim was neither fenced nor moved on: its next reading lands.
        let acks = victim
            .produce(
                "telemetry",
                None,
                Acks::Durable,
                10_000,
                &stamped(id, epoch, 1, b"r1"),
            )
            .await
            .unwrap();
        assert_eq!(acks[0].base_offset, 1);
        // Errors about one's own producer keep their detail.
        let gap = victim
            .produce(
                "telemetry",
                None,
                Acks::Durable,
                10_000,
                &stamped(id, epoch, 9, b"r9"),
            )
            .await
            .unwrap_err();
        assert_eq!(gap.code(), Some(ErrorCode::OutOfOrderSequence));
        assert!(gap.to_string().contains("\"sensor-1\""), "{gap}");
    });
}

/// Issue 16, item 10: two certificates whose URI SANs differ only past the
/// identity limit are refused at the handshake (and logged why), instead of
/// both becoming the same, cut identity.
#[test]
fn identities_over_the_limit_are_refused_at_the_handshake() {
    let hub = Hub::start();
    smol::block_on(async {
        let base = format!(
            "spiffe://fleet/{}",
            "a".repeat(eddy::tls::IDENTITY_BYTES_MAX)
        );
        for tail in ["ops", "thief"] {
            let uri = format!("{base}{tail}");
            let device = hub.ca.device_with_sans(
                &format!("long-{tail}"),
                vec![rcgen::SanType::URI(uri.as_str().try_into().unwrap())],
            );
            if let Ok(client) = hub.connect(Some(&device)).await {
                // TLS 1.3: the client may finish before the server has
                // checked the certificate; its first request then fails.
                assert!(client.metadata(&[]).await.is_err(), "{tail} got in");
            }
        }
        hub.wait_log("over the limit of 255");
    });
}

/// Issue 16, item 9: an identity that may use a group but not read a topic
/// can neither commit offsets of that topic (refused alike whether the
/// topic or partition exists or not) nor see them, or the topic's
/// watermarks, through the group.
#[test]
fn groups_do_not_leak_topics_the_caller_may_not_read() {
    let hub = Hub::start();
    smol::block_on(async {
        let ops = hub.as_identity("ops").await;
        ops.create_topic("telemetry", 1).await.unwrap();
        ops.create_topic("secret", 2).await.unwrap();
        ops.produce(
            "secret",
            Some(0),
            Acks::Durable,
            10_000,
            &values(&[b"s", b"s", b"s"]),
        )
        .await
        .unwrap();
        // An operator positions the group on both topics.
        let both = [
            ("telemetry".to_string(), 0, 0),
            ("secret".to_string(), 0, 2),
        ];
        ops.commit_offsets("dashboard", "", -1, &both)
            .await
            .unwrap();

        let dashboard = hub.as_identity("dashboard").await;
        // Commits naming the unreadable topic: an existing partition, a
        // missing partition, a missing topic — one answer, the topic's name
        // aside.
        let mut answers = Vec::new();
        for (topic, partition) in [("secret", 0), ("secret", 7), ("nosuch", 0)] {
            let e = dashboard
                .commit_offsets("dashboard", "", -1, &[(topic.to_string(), partition, 1)])
                .await
                .unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{e}");
            answers.push(e.to_string().replace(topic, "T"));
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
        // The operator's offset for secret is untouched.
        let offsets = ops.fetch_offsets("dashboard", &[]).await.unwrap();
        assert!(
            offsets.contains(&("secret".to_string(), 0, 2)),
            "{offsets:?}"
        );

        // Describing the group shows only what the dashboard may read.
        let info = dashboard.describe_group("dashboard").await.unwrap();
        let topics: Vec<&str> = info.partitions.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics, ["telemetry"]);
        let seen = dashboard.fetch_offsets("dashboard", &[]).await.unwrap();
        assert_eq!(seen, [("telemetry".to_string(), 0, 0)]);
        let asked = dashboard
            .fetch_offsets("dashboard", &["secret"])
            .await
            .unwrap();
        assert!(asked.is_empty(), "{asked:?}");
        // The operator still sees both.
        let info = ops.describe_group("dashboard").await.unwrap();
        assert_eq!(info.partitions.len(), 2);
    });
}
