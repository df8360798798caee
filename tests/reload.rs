//! TLS certificate hot reload: new connections get the new certificate
//! while connections already open keep working; a broken or mismatched file
//! is refused and the certificate in use stays; SIGHUP reloads and does not
//! stop the server.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{values, wait_until, ChildServer, TestServer};
use eddy::client::{Client, ClientOptions};
use eddy::config::TlsSetup;
use eddy::tls::{ensure_dev_certs, DevTlsPaths};
use eddy::wire::Acks;

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn new_pair(dir: &Path) -> DevTlsPaths {
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    let (paths, generated) = ensure_dev_certs(dir, &hosts).unwrap();
    assert!(generated);
    paths
}

/// Replaces `to` with the contents of `from` the way certificate tools do:
/// write a temporary file, then rename it over the old one.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

fn write(to: &Path, text: &str) {
    let tmp = to.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

struct Live {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Live {
    fn new(pair: &DevTlsPaths) -> Live {
        let dir = tempfile::tempdir().unwrap();
        let live = Live {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            _dir: dir,
        };
        live.install(pair);
        live
    }

    fn install(&self, pair: &DevTlsPaths) {
        replace(&pair.server_cert, &self.cert);
        replace(&pair.server_key, &self.key);
    }
}

fn connect(addr: std::net::SocketAddr, ca: &Path) -> Result<Client, String> {
    smol::block_on(Client::connect(&ClientOptions::tls(addr.to_string(), ca)))
        .map_err(|e| e.to_string())
}

fn produce_one(client: &Client, value: &[u8]) {
    smol::block_on(client.produce("reload", None, Acks::Durable, 10_000, &values(&[value])))
        .expect("the connection opened before the reload still works");
}

#[test]
fn a_new_certificate_reaches_new_connections_while_old_ones_keep_working() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (new_pair(dir_a.path()), new_pair(dir_b.path()));
    let live = Live::new(&a);
    let server = TestServer::start_with(|c| {
        c.tls = TlsSetup::Files {
            cert: live.cert.clone(),
            key: live.key.clone(),
        };
        c.tls_reload_check_ms = 100;
    });
    let addr = server.addr();
    let stats = || {
        let (name, s) = server.running().reloader().stats().next().unwrap();
        assert_eq!(name, "tls");
        (
            s.ok.load(Ordering::Relaxed),
            s.failed.load(Ordering::Relaxed),
        )
    };

    let old = connect(addr, &a.ca_cert).unwrap();
    produce_one(&old, b"before");
    assert!(connect(addr, &b.ca_cert).is_err(), "B is not served yet");

    live.install(&b);
    wait_until(Duration::from_secs(20), "certificate B served", || {
        connect(addr, &b.ca_cert).is_ok()
    });
    assert!(stats().0 >= 1);
    produce_one(&old, b"after");
    let err = connect(addr, &a.ca_cert)
        .err()
        .expect("A is no longer served");
    assert!(err.contains("certificate") || err.contains("TLS"), "{err}");

    // A broken certificate file is refused; B stays in use.
    let failed = stats().1;
    write(
        &live.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    );
    wait_until(Duration::from_secs(20), "the broken file refused", || {
        stats().1 > failed
    });
    connect(addr, &b.ca_cert).expect("B is still served");
    produce_one(&old, b"still");

    // A key that does not match the certificate is refused too.
    let failed = stats().1;
    replace(&a.server_cert, &live.cert);
    wait_until(
        Duration::from_secs(20),
        "the mismatched pair refused",
        || stats().1 > failed,
    );
    connect(addr, &b.ca_cert).expect("B is still served");
    assert!(connect(addr, &a.ca_cert).is_err());

    // Once the pair is consistent again, it is loaded.
    let ok = stats().0;
    replace(&a.server_key, &live.key);
    wait_until(Duration::from_secs(20), "A served again", || {
        stats().0 > ok && connect(addr, &a.ca_cert).is_ok()
    });
    produce_one(&old, b"end");
}

#[test]
fn sighup_reloads_without_stopping_the_server() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (new_pair(dir_a.path()), new_pair(dir_b.path()));
    let live = Live::new(&a);
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n# SIGHUP only: no polling.\nreload_check_ms = 0\n",
            live.cert, live.key
        ),
    )
    .unwrap();
    let data_dir = data.path().join("data");
    let server = ChildServer::start(&data_dir, &["--config", config.to_str().unwrap()]);
    let addr = server.addr;

    let old = connect(addr, &a.ca_cert).unwrap();
    produce_one(&old, b"before");

    // A control: an in-process server on the same files that polls every
    // POLL_MS. Once it serves B, the swap is one polling sees; the server
    // under test (polling off) must still serve A then, and after
    // QUIET_POLLS more of the control's intervals.
    const POLL_MS: u64 = 100; // the smallest allowed
    const QUIET_POLLS: u32 = 10;
    let control = TestServer::start_with(|c| {
        c.tls = TlsSetup::Files {
            cert: live.cert.clone(),
            key: live.key.clone(),
        };
        c.tls_reload_check_ms = POLL_MS;
    });
    live.install(&b);
    wait_until(
        Duration::from_secs(20),
        "the polling control serves B",
        || connect(control.addr(), &b.ca_cert).is_ok(),
    );
    // The observation window itself (nothing to wait for: the point is
    // that nothing happens in it).
    std::thread::sleep(Duration::from_millis(POLL_MS) * QUIET_POLLS);
    drop(control);
    connect(addr, &a.ca_cert).expect("no polling: A is still served before SIGHUP");
    assert!(
        connect(addr, &b.ca_cert).is_err(),
        "no polling: B is not served before SIGHUP"
    );
    let metrics = common::scrape(server.metrics_addr.unwrap());
    for result in ["ok", "failed"] {
        let series = format!("eddy_reloads_total{{what=\"tls\",result=\"{result}\"}}");
        assert_eq!(
            common::metric(&metrics, &series),
            Some(0.0),
            "no polling: no reload was even tried ({series})"
        );
    }

    server.signal("HUP");
    wait_until(Duration::from_secs(20), "certificate B served", || {
        connect(addr, &b.ca_cert).is_ok()
    });
    produce_one(&old, b"after");
    assert!(server.log_text().contains("tls reloaded (requested)"));

    write(&live.key, "garbage");
    server.signal("HUP");
    wait_until(Duration::from_secs(20), "the bad key refused", || {
        server
            .log_text()
            .contains("still using the previous version")
    });
    connect(addr, &b.ca_cert).expect("B is still served");
    produce_one(&old, b"still");

    drop(old);
    let status = server.terminate();
    assert!(status.success(), "SIGTERM still stops cleanly: {status:?}");
}
