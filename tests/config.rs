//! The config file through the `eddy` binary: `eddy config check`, and
//! `eddy serve --config` with flags overriding the file.

mod common;

use std::process::Command;

use common::{metric, scrape, values, ChildServer};
use eddy::client::{Client, ClientOptions};
use eddy::wire::Acks;

fn eddy(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
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
fn config_check_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/eddy.toml");
    let (code, out, err) = eddy(&["config", "check", example]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("eddy.toml: ok"), "{out}");
    assert!(out.contains("data dir /var/lib/eddy"), "{out}");
    assert!(
        out.contains("metrics http://127.0.0.1:7655/metrics"),
        "{out}"
    );
}

#[test]
fn config_check_reports_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eddy.toml");
    let shown = path.display().to_string();
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        eddy(&["config", "check", path.to_str().unwrap()])
    };

    let (code, _, err) = check("listen = \"127.0.0.1:7654\"\n\n[limits]\nconections_max = 5\n");
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{shown}:4:1: limits.conections_max: unknown field"
        )),
        "{err}"
    );

    let (code, _, err) = check("[limits]\ninflight_max = 0\n");
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{shown}:2:1: limits.inflight_max: 0 is out of range"
        )),
        "{err}"
    );

    let (code, _, err) = check("[storage]\ncache_mb = \"big\"\n");
    assert_eq!(code, 2);
    assert!(err.contains(&format!("{shown}:2:")), "{err}");
    assert!(err.contains("storage.cache_mb: invalid type"), "{err}");

    let (code, _, err) = eddy(&["config", "check", "/nonexistent/eddy.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/eddy.toml: cannot read"), "{err}");
}

#[test]
fn serve_reads_the_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {data:?}\nhub_id = \"from-file\"\n\
             default_partitions = 3\nlog_level = \"debug\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // The file alone: its hub id, 3 partitions, debug logging.
    let server = ChildServer::spawn(&["serve", "--config", config], &[]);
    assert_eq!(server.data_dir, std::path::PathBuf::new());
    let options = ClientOptions::tls(server.addr.to_string(), data.join("tls").join("ca.pem"));
    smol::block_on(async {
        let client = Client::connect(&options).await.unwrap();
        assert_eq!(client.server_info().hub_id, "from-file");
        client
            .produce("t3", None, Acks::Durable, 10_000, &values(&[b"x"]))
            .await
            .unwrap();
        assert_eq!(client.describe_topic("t3").await.unwrap().partitions, 3);
    });
    let metrics = scrape(server.metrics_addr.expect("metrics from the file"));
    assert_eq!(
        metric(&metrics, "eddy_records_in_total{topic=\"t3\"}"),
        Some(1.0)
    );
    assert!(
        server.log_text().contains("[DEBUG]"),
        "log_level from the file"
    );
    assert!(server.terminate().success());

    // A flag overrides the file; the rest of the file still applies.
    let server = ChildServer::spawn(
        &["serve", "--config", config],
        &[
            "--default-partitions",
            "2",
            "--log-level",
            "info",
            "--no-metrics",
        ],
    );
    assert_eq!(server.metrics_addr, None);
    let options = ClientOptions::tls(server.addr.to_string(), data.join("tls").join("ca.pem"));
    smol::block_on(async {
        let client = Client::connect(&options).await.unwrap();
        assert_eq!(client.server_info().hub_id, "from-file");
        client
            .produce("t2", None, Acks::Durable, 10_000, &values(&[b"x"]))
            .await
            .unwrap();
        assert_eq!(client.describe_topic("t2").await.unwrap().partitions, 2);
    });
    assert!(!server.log_text().contains("[DEBUG]"), "--log-level wins");
    assert!(server.terminate().success());
}

#[test]
fn serve_refuses_a_bad_file_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("eddy.toml");
    std::fs::write(&config, "[tls]\ncert = \"/etc/eddy/server.pem\"\n").unwrap();
    let (code, _, err) = eddy(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains(":2:1: tls.cert: cert and key go together"),
        "{err}"
    );
}

#[test]
fn mirror_links_from_the_file_and_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eddy.toml");
    std::fs::write(
        &path,
        "[[mirror]]\nname = \"dc\"\nurl = \"kafka://k1:9092\"\npattern = \"sensors\\\\..*\"\n",
    )
    .unwrap();
    let (code, out, err) = eddy(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mirror dc → kafka://k1:9092 (/sensors\\..*/ as {hub_id}.{topic})"),
        "{out}"
    );
    // --mirror-topics and --mirror-ca pair with the links, once or per link.
    let (code, _, err) = eddy(&[
        "serve",
        "--mirror",
        "kafka://a:1",
        "--mirror",
        "kafka://b:1",
        "--mirror-topics",
        "x",
        "--mirror-topics",
        "y",
        "--mirror-topics",
        "z",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--mirror-topics is given 3 times for 2 --mirror links"),
        "{err}"
    );
    let (code, _, err) = eddy(&["serve", "--mirror", "eddy://a:1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--mirror-ca FILE"), "{err}");
    let (code, _, err) = eddy(&["serve", "--mirror", "http://a:1"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("must start with eddy:// (another eddy) or kafka://"),
        "{err}"
    );
}

#[test]
fn config_check_loads_the_files_serve_would() {
    let dir = tempfile::tempdir().unwrap();
    let check = |body: &str| {
        let path = dir.path().join("eddy.toml");
        std::fs::write(&path, body).unwrap();
        eddy(&["config", "check", path.to_str().unwrap()])
    };
    // A certificate that does not exist.
    let missing = dir.path().join("nope.pem");
    let (code, _, err) = check(&format!("[tls]\ncert = {missing:?}\nkey = {missing:?}\n"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tls.cert") && err.contains("nope.pem"),
        "{err}"
    );
    // A certificate and a key that do not belong together.
    let (a, _) = eddy::tls::ensure_dev_certs(&dir.path().join("a"), &[]).unwrap();
    let (b, _) = eddy::tls::ensure_dev_certs(&dir.path().join("b"), &[]).unwrap();
    let (code, _, err) = check(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        a.server_cert, b.server_key
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tls.cert/tls.key"), "{err}");
    let (code, _, err) = check(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        a.server_cert, a.server_key
    ));
    assert_eq!(code, 0, "{err}");
    // A mirror link's CA file that does not exist.
    let (code, _, err) = check(&format!(
        "[[mirror]]\nname = \"up\"\nurl = \"eddy://127.0.0.1:9\"\nca = {missing:?}\n"
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("mirror \"up\" ca") && err.contains("nope.pem"),
        "{err}"
    );
}

#[test]
fn an_unquoted_address_gets_the_quoted_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eddy.toml");
    std::fs::write(&path, "listen = 127.0.0.1:7654\n").unwrap();
    let (code, _, err) = eddy(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(r#"listen = "127.0.0.1:7654""#), "{err}");
}
