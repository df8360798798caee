//! Real Kafka clients run as processes against a test hub: kcat,
//! confluent-kafka (Python) and eddy's own CLI. A missing client fails the
//! test, naming the install step (`.ci/run` installs them).

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use super::TestServer;

/// Runs `program` with `args` and `stdin`; panics (naming the install
/// step) when the program is missing.
pub fn run(program: &str, args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install it (apt-get install kcat; pip install confluent-kafka), as .ci/run does")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

pub fn kafka(server: &TestServer) -> SocketAddr {
    server
        .running()
        .kafka_addr()
        .expect("the Kafka listener is on")
}

/// `kcat` with the broker and a bounded wait for everything.
pub fn kcat(server: &TestServer, args: &[&str], stdin: &str) -> String {
    let broker = kafka(server).to_string();
    let mut all = vec!["-b", &broker, "-m", "30"];
    all.extend(args);
    String::from_utf8(run("kcat", &all, stdin).stdout).unwrap()
}

/// Runs a Python script with confluent-kafka, the bootstrap address as its
/// first argument; returns its standard output.
pub fn python(server: &TestServer, script: &str) -> String {
    let broker = kafka(server).to_string();
    String::from_utf8(run("python3", &["-c", script, &broker], "").stdout).unwrap()
}

/// `eddy` (the native CLI) against `server`.
pub fn eddy(server: &TestServer, args: &[&str], stdin: &str) -> String {
    let addr = server.addr().to_string();
    let ca = server.ca();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", &addr, "--ca", ca.to_str().unwrap()]);
    String::from_utf8(run(env!("CARGO_BIN_EXE_eddy"), &all, stdin).stdout).unwrap()
}
