//! The command line as a user runs it: `eddy serve` with no arguments from
//! a fresh directory, `--insecure-plaintext`, `--cert/--key`, `produce`
//! flags, a standard input that cannot be read, `bench … --json`; and the
//! operator's side: version, exit codes (0 ok, 1 failure, 2 usage, 141 or 0
//! when stdout's reader left), "did you mean", actions lists, `--json`,
//! shell completions.
//!
//! Only `serve_with_no_arguments_works_from_its_directory` may use the
//! fixed default ports (127.0.0.1:7654 and 7655); everything else listens
//! on port 0.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_until, ChildServer};
use eddy::client::Client;

/// Bound on one client command (they take well under a second).
const COMMAND_WAIT_MAX: Duration = Duration::from_secs(60);
/// Bound on a server starting or stopping.
const SERVER_WAIT_MAX: Duration = Duration::from_secs(60);

/// Runs `eddy args…` in `cwd` with `stdin`, within [`COMMAND_WAIT_MAX`].
fn eddy_in(cwd: &Path, args: &[&str], stdin: Stdio, input: Option<&str>) -> Output {
    eddy_io(cwd, args, stdin, input, Stdio::piped())
}

/// [`eddy_in`] with the given stdout (a pipe whose reader is gone, …).
fn eddy_io(cwd: &Path, args: &[&str], stdin: Stdio, input: Option<&str>, stdout: Stdio) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .current_dir(cwd)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = input {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_WAIT_MAX) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("eddy {args:?} did not finish within {COMMAND_WAIT_MAX:?}");
        }
    }
}

/// `eddy args…` with `input` on stdin (or none), from the current directory.
fn eddy(args: &[&str], input: Option<&str>) -> Output {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    eddy_in(Path::new("."), args, stdin, input)
}

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Starts `eddy serve` with exactly `args` in `cwd` and waits for its
/// "listening on" and metrics lines.
fn serve_in(cwd: &Path, args: &[&str]) -> ChildServer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    });
    let after = |line: &str, marker: &str| -> Option<SocketAddr> {
        line.split(marker)
            .nth(1)?
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()?
            .parse()
            .ok()
    };
    let mut found = (None, None);
    wait_until(SERVER_WAIT_MAX, "eddy serve listening", || {
        for line in log.lock().unwrap().iter() {
            found.0 = found.0.or_else(|| after(line, "listening on "));
            found.1 = found.1.or_else(|| after(line, "metrics on http://"));
        }
        found.0.is_some() && found.1.is_some()
    });
    ChildServer {
        child,
        addr: found.0.unwrap(),
        metrics_addr: found.1,
        kafka_addr: None,
        data_dir: cwd.join("eddy-data"),
        log,
    }
}

#[test]
fn serve_with_no_arguments_works_from_its_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let server = serve_in(cwd.path(), &["serve"]);
    assert_eq!(server.addr, "127.0.0.1:7654".parse().unwrap());
    assert_eq!(server.metrics_addr, Some("127.0.0.1:7655".parse().unwrap()));
    let data = cwd.path().join("eddy-data");
    assert!(data.join("tls").join("ca.pem").is_file(), "the dev CA");
    assert!(data.join("log").is_dir(), "the records");
    // How to connect: the banner (after the log lines) names no --server
    // and no --ca, since both are the defaults from this directory.
    wait_until(SERVER_WAIT_MAX, "the connection hint", || {
        server.log_text().contains("eddy consume --topic demo")
    });
    let log = server.log_text();
    assert!(log.contains("generated a dev CA"), "{log}");
    let hint = log
        .lines()
        .find(|l| l.contains("eddy produce --topic demo"))
        .unwrap_or_else(|| panic!("no produce hint in:\n{log}"));
    assert!(
        !hint.contains("--server") && !hint.contains("--ca"),
        "{hint}"
    );

    let produced = eddy_in(
        cwd.path(),
        &["produce", "--topic", "demo"],
        Stdio::piped(),
        Some("hello\nworld\n"),
    );
    ok(&produced, "produce with the defaults");
    let consumed = eddy_in(
        cwd.path(),
        &["consume", "--topic", "demo", "--from-beginning"],
        Stdio::null(),
        None,
    );
    assert_eq!(ok(&consumed, "consume with the defaults"), "hello\nworld\n");

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn insecure_plaintext_serves_plaintext_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &["--insecure-plaintext"]);
    let addr = server.addr.to_string();
    let log = server.log_text();
    assert!(log.contains("plaintext (INSECURE"), "{log}");
    wait_until(SERVER_WAIT_MAX, "the connection hint", || {
        server
            .log_text()
            .lines()
            .any(|l| l.contains("eddy produce --topic demo") && l.contains("--plaintext"))
    });
    let plain = ["--server", addr.as_str(), "--plaintext"];
    let with = |args: &[&'static str]| -> Vec<String> {
        args.iter()
            .chain(plain.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: &[&'static str], input: Option<&str>| {
        let owned = with(args);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        eddy(&refs, input)
    };
    ok(
        &run(&["produce", "--topic", "plain"], Some("p1\np2\n")),
        "produce",
    );
    let out = ok(
        &run(&["consume", "--topic", "plain", "--from-beginning"], None),
        "consume",
    );
    assert_eq!(out, "p1\np2\n");

    // A TLS client (with a CA that loads) gets a clear failure from a
    // plaintext server, not a hang.
    let (pki, _) = eddy::tls::ensure_dev_certs(&dir.path().join("pki"), &[]).unwrap();
    let tls = eddy(
        &[
            "topics",
            "list",
            "--server",
            &addr,
            "--ca",
            pki.ca_cert.to_str().unwrap(),
        ],
        None,
    );
    assert!(!tls.status.success());
    let err = stderr_of(&tls);
    assert!(
        err.contains("does not speak TLS") && err.contains("add --plaintext"),
        "{err}"
    );
    // And the server's log says what the client did.
    wait_until(
        SERVER_WAIT_MAX,
        "the server's log of the TLS client",
        || {
            server
                .log_text()
                .contains("the client speaks TLS to this plaintext listener")
        },
    );
    assert!(server.terminate().success());
}

#[test]
fn a_plaintext_client_of_a_tls_hub_is_told_to_drop_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let out = eddy(&["topics", "list", "-s", &addr, "--plaintext"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("the server speaks TLS") && err.contains("drop --plaintext"),
        "{err}"
    );
    assert!(!err.contains("exceeds the maximum"), "{err}");
    wait_until(
        SERVER_WAIT_MAX,
        "the server's log of the plaintext client",
        || server.log_text().contains("the client speaks plaintext"),
    );
}

#[test]
fn serve_uses_the_certificate_and_key_files_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    // A CA and a server certificate for the name gateway.test (not for
    // 127.0.0.1, unlike the generated dev certificate).
    let pki = dir.path().join("pki");
    let (files, generated) =
        eddy::tls::ensure_dev_certs(&pki, &["gateway.test".to_string()]).unwrap();
    assert!(generated);
    let data = dir.path().join("data");
    let server = ChildServer::start(
        &data,
        &[
            "--cert",
            files.server_cert.to_str().unwrap(),
            "--key",
            files.server_key.to_str().unwrap(),
        ],
    );
    assert!(
        !data.join("tls").join("ca.pem").exists(),
        "no dev CA is generated when a certificate is given"
    );
    let addr = server.addr.to_string();
    let ca = files.ca_cert.to_str().unwrap();
    let conn = ["--server", addr.as_str(), "--ca", ca];
    let run = |extra: &[&str], args: &[&str], input: Option<&str>| {
        let all: Vec<&str> = args
            .iter()
            .chain(conn.iter())
            .chain(extra.iter())
            .copied()
            .collect();
        eddy(&all, input)
    };
    let name = ["--tls-server-name", "gateway.test"];
    ok(
        &run(&name, &["produce", "--topic", "files"], Some("f1\n")),
        "produce",
    );
    let out = ok(
        &run(
            &name,
            &["consume", "--topic", "files", "--from-beginning"],
            None,
        ),
        "consume",
    );
    assert_eq!(out, "f1\n");
    // The name it was issued for is checked: 127.0.0.1 is not in it.
    let wrong = run(&[], &["topics", "list"], None);
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(server.terminate().success());
}

#[test]
fn produce_to_an_explicit_partition_with_acks_received() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let ca = dir.path().join("tls").join("ca.pem");
    let conn = ["--server", addr.as_str(), "--ca", ca.to_str().unwrap()];
    let run = |args: &[&str], input: Option<&str>| {
        let all: Vec<&str> = args.iter().chain(conn.iter()).copied().collect();
        eddy(&all, input)
    };
    ok(
        &run(&["topics", "create", "placed", "--partitions", "3"], None),
        "create",
    );
    let lines: String = (0..50).map(|i| format!("r{i}\n")).collect();
    ok(
        &run(
            &[
                "produce",
                "--topic",
                "placed",
                "--partition",
                "2",
                "--acks",
                "received",
                "--batch",
                "7",
            ],
            Some(&lines),
        ),
        "produce --partition 2 --acks received",
    );
    // `received` answers before the fsync: wait for the records to become
    // durable (consumers read only durable records), then look.
    let options = server.options();
    let marks = || {
        smol::block_on(async {
            let client = Client::connect(&options).await.unwrap();
            client.watermarks("placed").await.unwrap()
        })
    };
    wait_until(SERVER_WAIT_MAX, "50 durable records in partition 2", || {
        marks()[2].durable == 50
    });
    let ends: Vec<u64> = marks().iter().map(|m| m.log_end).collect();
    assert_eq!(ends, vec![0, 0, 50], "every record in partition 2");
    let out = ok(
        &run(
            &[
                "consume",
                "--topic",
                "placed",
                "--partition",
                "2",
                "--from-beginning",
            ],
            None,
        ),
        "consume",
    );
    assert_eq!(out, lines, "in order");
    // A partition the topic does not have: a clear error, exit non-zero.
    let out = run(
        &["produce", "--topic", "placed", "--partition", "3"],
        Some("x\n"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UnknownPartition"), "{stderr}");
}

#[test]
fn produce_fails_when_standard_input_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let ca = dir.path().join("tls").join("ca.pem");
    // A directory as standard input: read(2) fails with EISDIR.
    let stdin = std::fs::File::open(dir.path()).unwrap();
    let out = eddy_in(
        Path::new("."),
        &[
            "produce",
            "--topic",
            "stdin",
            "--server",
            &addr,
            "--ca",
            ca.to_str().unwrap(),
        ],
        Stdio::from(stdin),
        None,
    );
    assert!(!out.status.success(), "a read error must not exit 0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reading standard input failed"), "{stderr}");
}

/// The last line of a `--json` run, parsed, with the fields the issue
/// names checked for plausibility.
fn last_json(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("some output");
    let value: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last:?}"));
    let num = |k: &str| {
        value[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number in {last}"))
    };
    assert!(num("records_per_s") > 0.0, "{last}");
    assert!(num("mb_per_s") > 0.0, "{last}");
    let (p50, p99, max) = (num("p50_ms"), num("p99_ms"), num("max_ms"));
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{last}");
    value
}

#[test]
fn bench_produce_and_consume_end_with_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let ca = dir.path().join("tls").join("ca.pem");
    let conn = ["--server", addr.as_str(), "--ca", ca.to_str().unwrap()];
    let run = |args: &[&str]| {
        let all: Vec<&str> = args.iter().chain(conn.iter()).copied().collect();
        eddy(&all, None)
    };
    let started = Instant::now();
    let produced = ok(
        &run(&[
            "bench",
            "produce",
            "--connections",
            "2",
            "--batch",
            "100",
            "--record-bytes",
            "50",
            "--records",
            "2000",
            "--topic",
            "benchj",
            "--partitions",
            "2",
            "--json",
            "--keep-topics",
        ]),
        "bench produce",
    );
    let p = last_json(&produced);
    assert_eq!(p["bench"], "produce");
    assert_eq!(p["records"], 2000);
    assert!(
        produced.lines().count() >= 2,
        "a human line before the JSON"
    );
    let consumed = ok(
        &run(&["bench", "consume", "--topic", "benchj", "--json"]),
        "bench consume",
    );
    let c = last_json(&consumed);
    assert_eq!(c["bench"], "consume");
    assert_eq!(c["records"], 2000, "every durable record read back");
    // Without --keep-topics the run deletes the topic it created; progress
    // lines (stderr, not a terminal here) never mix into stdout.
    let again = run(&[
        "bench",
        "produce",
        "--records",
        "100",
        "--topic",
        "benchk",
        "--json",
    ]);
    assert!(
        stderr_of(&again).contains("deleted topic benchk"),
        "{}",
        stderr_of(&again)
    );
    last_json(&ok(&again, "bench produce, deleting its topic"));
    let listed = ok(&run(&["topics", "list"]), "topics list");
    assert!(
        !listed.contains("benchk") && listed.contains("benchj"),
        "{listed}"
    );
    let quiet = run(&["bench", "consume", "--topic", "benchj", "-q"]);
    ok(&quiet, "bench consume -q");
    assert!(stderr_of(&quiet).is_empty(), "{}", stderr_of(&quiet));
    eprintln!("bench produce and consume took {:?}", started.elapsed());
}

/// A stdout for [`eddy_io`] whose reader has already gone: every write
/// to it fails with EPIPE.
fn closed_stdout() -> Stdio {
    let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
    let writer = reader.stdin.take().unwrap();
    assert!(reader.wait().unwrap().success());
    Stdio::from(writer)
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn version_is_a_flag_and_a_command() {
    for args in [&["--version"][..], &["-V"], &["version"]] {
        let out = ok(&eddy(args, None), "version");
        assert!(out.starts_with("eddy "), "{out}");
        assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
        assert!(
            out.contains("commit ") && out.contains("features "),
            "{out}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&eddy(&["version", "--json"], None), "version --json")).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(json["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "server"));
}

#[test]
fn usage_errors_exit_2_with_a_suggestion_and_the_help_command() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["produce", "--topc", "t"],
            "did you mean \"--topic\"",
            "eddy help produce",
        ),
        (&["topic", "list"], "did you mean \"topics\"", "eddy help"),
        (
            &["topics", "create", "t", "--partition", "3"],
            "did you mean \"--partitions\"",
            "eddy help topics",
        ),
        (
            &["topics", "lsit"],
            "did you mean \"list\"",
            "eddy help topics",
        ),
        (
            &["groups", "descibe", "g"],
            "did you mean \"describe\"",
            "eddy help groups",
        ),
        (
            &["topics", "list", "extra"],
            "takes no name",
            "eddy topics describe extra",
        ),
        (&["produce"], "--topic", "eddy help produce"),
        (
            &["consume", "-t", "x", "--server", "127.0.0.1"],
            "127.0.0.1:7654",
            "add one",
        ),
    ];
    for (args, hint, pointer) in cases {
        let out = eddy(args, None);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "eddy {args:?}: {err}");
        assert!(err.contains(hint), "eddy {args:?}: no {hint:?} in {err}");
        assert!(
            err.contains(pointer),
            "eddy {args:?}: no {pointer:?} in {err}"
        );
    }
}

#[test]
fn short_flags_mean_the_same_as_long_ones() {
    // -s without a port is refused before connecting, the same as --server.
    let long = eddy(&["consume", "--topic", "x", "--server", "localhost"], None);
    let short = eddy(&["consume", "-t", "x", "-s", "localhost"], None);
    assert_eq!(long.status.code(), Some(2));
    assert_eq!(stderr_of(&long), stderr_of(&short));
}

#[test]
fn commands_with_actions_list_them_when_given_none() {
    for (command, actions) in [
        (
            "topics",
            &["create", "list", "describe", "alter", "delete"][..],
        ),
        ("groups", &["list", "describe", "reset", "delete"]),
        ("mirror", &["status"]),
        ("completions", &["bash", "zsh", "fish"]),
    ] {
        let out = ok(&eddy(&[command], None), command);
        for action in actions {
            assert!(
                out.contains(&format!("  {action} ")),
                "{command}: {action} in {out}"
            );
        }
        assert!(out.contains(&format!("eddy help {command}")), "{out}");
    }
    // A command with subcommands shows them.
    let out = ok(&eddy(&["bench"], None), "bench alone");
    for bench in ["produce", "consume", "group-consume", "devices"] {
        assert!(out.contains(bench), "{bench} in {out}");
    }
}

#[test]
fn a_closed_stdout_ends_quietly() {
    for args in [
        &["help", "serve"][..],
        &["man"],
        &["completions", "fish"],
        &["version"],
    ] {
        let out = eddy_io(Path::new("."), args, Stdio::null(), None, closed_stdout());
        let err = stderr_of(&out);
        assert!(
            matches!(out.status.code(), Some(0) | Some(141)),
            "eddy {args:?}: {:?} {err}",
            out.status
        );
        assert!(!err.contains("panicked"), "eddy {args:?}: {err}");
    }
}

#[test]
fn lists_print_json_and_say_when_they_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &["--insecure-plaintext"]);
    let addr = server.addr.to_string();
    let run = |args: &[&str]| {
        let all: Vec<&str> = args
            .iter()
            .copied()
            .chain(["-s", &addr, "--plaintext"])
            .collect();
        eddy(&all, None)
    };
    let empty = run(&["topics", "list", "--json"]);
    assert_eq!(ok(&empty, "topics list on an empty hub").trim(), "[]");
    assert!(
        stderr_of(&empty).contains("no topics"),
        "{}",
        stderr_of(&empty)
    );
    ok(
        &run(&["topics", "create", "t1", "--partitions", "3"]),
        "topics create",
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&run(&["topics", "list", "-j"]), "topics list -j")).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{"topic": "t1", "partitions": 3}])
    );
    let groups = run(&["groups", "list", "--json"]);
    assert_eq!(ok(&groups, "groups list").trim(), "[]");
    assert!(stderr_of(&groups).contains("no consumer groups"));
    let mirror: serde_json::Value =
        serde_json::from_str(&ok(&run(&["mirror", "status", "--json"]), "mirror status")).unwrap();
    assert_eq!(mirror, serde_json::json!([]));
    // --json where it means nothing is a usage error, not ignored.
    assert_eq!(
        run(&["topics", "delete", "t1", "--json"]).status.code(),
        Some(2)
    );
    // A closed stdout on a client command ends quietly too.
    let all = ["groups", "list", "--json", "-s", &addr, "--plaintext"];
    let out = eddy_io(Path::new("."), &all, Stdio::null(), None, closed_stdout());
    assert!(matches!(out.status.code(), Some(0) | Some(141)), "{out:?}");
    assert!(!stderr_of(&out).contains("panicked"));
}

/// Runs the bash completion function for the words of `line` (the last
/// one being completed) and returns what it offers.
fn bash_complete(script: &Path, line: &[&str]) -> Vec<String> {
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let program = format!(
        "source '{}'; COMP_WORDS=({words}); COMP_CWORD={}; _eddy; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        line.len() - 1
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn bash_completions_follow_the_command_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("eddy.bash");
    std::fs::write(
        &script,
        ok(&eddy(&["completions", "bash"], None), "completions bash"),
    )
    .unwrap();
    assert_eq!(bash_complete(&script, &["eddy", "top"]), ["topics"]);
    assert_eq!(
        bash_complete(&script, &["eddy", "topics", "cr"]),
        ["create"]
    );
    assert_eq!(
        bash_complete(&script, &["eddy", "produce", "--to"]),
        ["--topic"]
    );
    assert_eq!(
        bash_complete(&script, &["eddy", "bench", "produce", "--rec"]),
        ["--record-bytes", "--records"]
    );
    let consume = bash_complete(&script, &["eddy", "consume", "-"]);
    for flag in [
        "--group",
        "-g",
        "--server",
        "-s",
        "--plaintext",
        "--wait-for-topic",
    ] {
        assert!(consume.contains(&flag.to_string()), "{flag} in {consume:?}");
    }
    // After a flag that takes a value: file names.
    std::fs::write(dir.path().join("ca-file.pem"), "").unwrap();
    let ca = dir.path().join("ca-f");
    let offered = bash_complete(&script, &["eddy", "topics", "--ca", ca.to_str().unwrap()]);
    assert_eq!(offered, [dir.path().join("ca-file.pem").to_str().unwrap()]);
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    for shell in ["zsh", "fish"] {
        let script = ok(&eddy(&["completions", shell], None), shell);
        for word in [
            "serve",
            "topics",
            "create",
            "group-consume",
            "--wait-for-topic",
            "--server",
        ] {
            let word = if shell == "fish" {
                word.trim_start_matches("--")
            } else {
                word
            };
            assert!(script.contains(word), "{shell}: {word}");
        }
    }
    assert_eq!(eddy(&["completions", "tcsh"], None).status.code(), Some(2));
}

#[test]
fn consume_group_reports_assignments_and_fails_fast_on_a_missing_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &["--insecure-plaintext"]);
    let addr = server.addr.to_string();
    let conn = ["-s", addr.as_str(), "--plaintext"];
    let run = |args: &[&str], input: Option<&str>| {
        let all: Vec<&str> = args.iter().chain(conn.iter()).copied().collect();
        eddy(&all, input)
    };
    let missing = run(&["consume", "-g", "g1", "-t", "nosuch", "-n", "1"], None);
    let err = stderr_of(&missing);
    assert_eq!(missing.status.code(), Some(1), "{err}");
    assert!(
        err.contains("UnknownTopic") && err.contains("--wait-for-topic"),
        "{err}"
    );

    ok(
        &run(&["topics", "create", "t", "--partitions", "2"], None),
        "create",
    );
    ok(
        &run(&["produce", "-t", "t", "-p", "0"], Some("a\n")),
        "produce 0",
    );
    ok(
        &run(&["produce", "-t", "t", "-p", "1"], Some("b\n")),
        "produce 1",
    );
    let out = run(&["consume", "-g", "g1", "-t", "t", "-b", "-n", "2"], None);
    let printed = ok(&out, "consume --group");
    assert_eq!(printed.lines().count(), 2, "{printed}");
    let err = stderr_of(&out);
    assert!(err.contains("group g1: assigned t/0, t/1"), "{err}");

    // --wait-for-topic: the member waits for the topic instead of failing.
    let waiting = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            eddy(
                &[
                    "consume",
                    "-g",
                    "g2",
                    "-t",
                    "later",
                    "--wait-for-topic",
                    "-b",
                    "-n",
                    "1",
                    "-s",
                    &addr,
                    "--plaintext",
                ],
                None,
            )
        })
    };
    ok(&run(&["topics", "create", "later"], None), "create later");
    ok(
        &run(&["produce", "-t", "later"], Some("late\n")),
        "produce later",
    );
    let out = waiting.join().unwrap();
    assert_eq!(ok(&out, "consume --wait-for-topic"), "late\n");
}
