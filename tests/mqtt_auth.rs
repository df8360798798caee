//! MQTT log-in against a password file in Mosquitto's format: a file made
//! by Mosquitto's own `mosquitto_passwd` (Debian `mosquitto`) works in
//! eddy, a line `eddy passwd` writes works in Mosquitto, the user name is
//! the identity the ACLs see, refusals are CONNACK codes in both versions
//! with a log line, and the file reloads on SIGHUP.
//!
//! The clients are `mosquitto_pub` / `mosquitto_sub`; `.ci/run` installs
//! them and `mosquitto_passwd`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::mqtt::{stored, topic_names, Hub, WAIT};
use common::wait_until;

/// `eddy passwd FILE USER` with `password` on stdin; its success.
fn eddy_passwd(file: &Path, user: &str, password: &str) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "passwd",
            file.to_str().unwrap(),
            user,
            "--iterations",
            "1000",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait().unwrap().success()
}

/// A hub whose MQTT clients log in with `passwords`, under `acl`.
fn hub_with(dir: &Path, passwords: &Path) -> Hub {
    let acl = dir.join("acl.toml");
    std::fs::write(
        &acl,
        "[[allow]]\nidentities = [\"alice\"]\noperations = [\"produce\", \"consume\"]\n\
         topics = [\"plant\"]\n\n[[allow]]\nidentities = [\"bob\", \"carol\"]\n\
         operations = [\"produce\"]\ntopics = [\"{identity}\"]\n\n\
         [[allow]]\nidentities = [\"anonymous\"]\noperations = [\"consume\", \"admin\"]\n\
         topics = [\"*\"]\n",
    )
    .unwrap();
    let config = dir.join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\npassword_file = {:?}\n",
            passwords.to_str().unwrap()
        ),
    )
    .unwrap();
    Hub::start(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--acl",
            acl.to_str().unwrap(),
        ],
    )
}

#[test]
fn users_from_mosquitto_passwd_and_eddy_passwd_log_in_as_their_identity() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b", passwords.to_str().unwrap(), "alice", "s3cret"])
        .status()
        .expect("mosquitto_passwd (Debian mosquitto) must be installed");
    assert!(made.success());
    assert!(eddy_passwd(&passwords, "bob", "hunter2"));
    let hub = hub_with(dir.path(), &passwords);

    for version in ["mqttv311", "mqttv5"] {
        let alice = ["-V", version, "-u", "alice", "-P", "s3cret", "-q", "1"];
        hub.publish_ok(&[&alice[..], &["-t", "plant/a", "-m", version]].concat());
        let bob = ["-V", version, "-u", "bob", "-P", "hunter2", "-q", "1"];
        hub.publish_ok(&[&bob[..], &["-t", "bob/x", "-m", version]].concat());
        // bob's identity is bob: the ACL does not let him into plant.
        let (ok, text) = hub.publish(&[&bob[..], &["-t", "plant/b", "-m", "no"]].concat());
        assert!(!ok || text.contains("Not authorized"), "{version}: {text}");
    }
    assert_eq!(stored(&hub.options(), "plant").len(), 2);
    assert_eq!(stored(&hub.options(), "bob").len(), 2);
    wait_until(WAIT, "the ACL denial names bob", || {
        hub.server.log_text().contains("bob may not publish")
    });
}

#[test]
fn wrong_or_missing_credentials_are_refused_in_connack() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    assert!(eddy_passwd(&passwords, "alice", "s3cret"));
    let hub = hub_with(dir.path(), &passwords);
    for (version, bad, none) in [
        // 3.1.1 return codes 4 and 5.
        ("mqttv311", "bad user name or password", "not authorised"),
        // MQTT 5 reason codes 0x86 and 0x87.
        ("mqttv5", "Bad user name or password", "Not authorized"),
    ] {
        for creds in [
            &["-u", "alice", "-P", "wrong"][..],
            &["-u", "mallory", "-P", "s3cret"][..],
            &["-u", "alice"][..],
        ] {
            let (ok, text) =
                hub.publish(&[creds, &["-V", version, "-t", "plant/a", "-m", "x"]].concat());
            let said = text.to_lowercase().contains(&bad.to_lowercase());
            assert!(!ok && said, "{version} {creds:?}: {text}");
        }
        let (ok, text) = hub.publish(&["-V", version, "-t", "plant/a", "-m", "x"]);
        let said = text.to_lowercase().contains(&none.to_lowercase());
        assert!(!ok && said, "{version} no user: {text}");
    }
    let log = hub.server.log_text();
    assert!(
        log.contains("CONNECT refused: bad user name or password for user \"mallory\""),
        "{log}"
    );
    assert!(
        !log.contains("s3cret") && !log.contains("wrong"),
        "no password logged"
    );
    let topics = topic_names(&hub.options());
    assert!(!topics.contains(&"plant".to_string()), "nothing stored");
}

#[test]
fn a_user_added_while_running_logs_in_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    assert!(eddy_passwd(&passwords, "alice", "s3cret"));
    let hub = hub_with(dir.path(), &passwords);
    let carol = ["-u", "carol", "-P", "pw-c", "-q", "1", "-t", "carol/a"];
    let (ok, _) = hub.publish(&[&carol[..], &["-m", "early"]].concat());
    assert!(!ok, "carol is not in the file yet");
    assert!(eddy_passwd(&passwords, "carol", "pw-c"));
    hub.server.signal("HUP");
    wait_until(WAIT, "the password file reloaded", || {
        hub.server.log_text().contains("MQTT password file")
            && hub.server.log_text().contains("(2 users)")
    });
    hub.publish_ok(&[&carol[..], &["-m", "late"]].concat());
    let records = stored(&hub.options(), "carol");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, b"late");
}

/// What `eddy passwd` writes, Mosquitto (the broker) accepts: the two
/// tools' files are interchangeable.
#[test]
fn mosquitto_accepts_a_file_eddy_passwd_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    assert!(eddy_passwd(&passwords, "dora", "pw-d"));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            // `user root`: started as root (CI), Mosquitto would switch to
            // its own user, who cannot read the 0600 file.
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\nuser root\n",
            passwords.display()
        ),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (Debian mosquitto) must be installed");
    let publish = |password: &str| {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", "dora", "-P", password, "-t", "t", "-m", "x"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let mut last = String::new();
    wait_until(WAIT, "mosquitto to accept dora's password", || {
        let out = publish("pw-d");
        last = String::from_utf8_lossy(&out.stderr).to_string();
        out.status.success()
    });
    let refused = publish("other");
    let _ = broker.kill();
    let _ = broker.wait();
    assert!(!refused.status.success(), "{last}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not authorised")
            || String::from_utf8_lossy(&refused.stderr).contains("bad user name"),
        "{:?}",
        refused
    );
}
