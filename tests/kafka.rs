//! The Kafka listener against real Kafka clients, run as processes: kcat
//! (Debian's, librdkafka 2.0) and confluent-kafka (PyPI, its bundled
//! librdkafka). `.ci/run` installs both; a test whose client is missing
//! fails (it does not skip).
//!
//! Each test starts a hub on port 0 (native and Kafka listeners) with a
//! temp data dir, and checks what one protocol wrote through the other.

mod common;

use common::kafka_clients::{eddy, kafka, kcat, python};
use common::TestServer;

#[test]
fn kcat_writes_what_eddy_reads_and_reads_what_eddy_writes() {
    let server = TestServer::start();
    kcat(
        &server,
        &["-P", "-t", "k", "-K", ":", "-H", "src=kcat", "-H", "n=1"],
        "a:one\nb:two\nc:three\n",
    );
    let native = eddy(
        &server,
        &["consume", "--topic", "k", "--format", "json"],
        "",
    );
    let lines: Vec<serde_json::Value> = native
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{native}");
    assert_eq!(lines[0]["key"], "a");
    assert_eq!(lines[2]["value"], "three");
    assert_eq!(lines[2]["offset"], 2);
    assert_eq!(lines[1]["headers"]["src"], "kcat");
    assert_eq!(lines[1]["headers"]["n"], "1");

    // And the other way: eddy's producer, kcat's consumer.
    eddy(
        &server,
        &[
            "produce",
            "--topic",
            "k",
            "--key-separator",
            "=",
            "--header",
            "from=eddy",
        ],
        "d=four\ne=five\n",
    );
    let read = kcat(
        &server,
        &[
            "-C",
            "-t",
            "k",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%p %o %k %s %h\\n",
        ],
        "",
    );
    let got: Vec<&str> = read.lines().collect();
    assert_eq!(
        got,
        vec![
            "0 0 a one src=kcat,n=1",
            "0 1 b two src=kcat,n=1",
            "0 2 c three src=kcat,n=1",
            "0 3 d four from=eddy",
            "0 4 e five from=eddy",
        ],
        "{read}"
    );
}

#[test]
fn a_fetch_in_the_middle_of_a_batch_starts_at_the_asked_offset() {
    let server = TestServer::start();
    // One batch of ten records (eddy's producer batches them).
    let values: String = (0..10).map(|i| format!("v{i}\n")).collect();
    eddy(&server, &["produce", "--topic", "m"], &values);
    let read = kcat(
        &server,
        &[
            "-C", "-t", "m", "-p", "0", "-o", "6", "-e", "-f", "%o %s\\n",
        ],
        "",
    );
    assert_eq!(read, "6 v6\n7 v7\n8 v8\n9 v9\n");
}

const PRODUCE_AND_ASSIGN: &str = r#"
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
b = sys.argv[1]
p = Producer({'bootstrap.servers': b, 'acks': 'all', 'linger.ms': 5,
              'compression.type': 'snappy'})
errors = []
def done(err, msg):
    if err: errors.append(str(err))
for i in range(600):
    p.produce('py', key=('k%d' % (i % 13)).encode(), value=('v%d' % i).encode(),
              headers=[('i', str(i).encode())], timestamp=1700000000000 + i, on_delivery=done)
assert p.flush(30) == 0, 'unflushed'
assert not errors, errors
c = Consumer({'bootstrap.servers': b, 'group.id': 'none', 'enable.auto.commit': False})
parts = sorted(c.list_topics('py', timeout=10).topics['py'].partitions)
lo, hi = c.get_watermark_offsets(TopicPartition('py', 0), timeout=10)
# assign() + seek(): no group, as MirrorMaker 2's source consumer does.
c.assign([TopicPartition('py', p, 0) for p in parts])
c.seek(TopicPartition('py', 0, 100))
seen = []
deadline = time.time() + 30
while len(seen) < 500 and time.time() < deadline:
    m = c.poll(1)
    if m is None: continue
    assert not m.error(), m.error()
    seen.append((m.offset(), m.key().decode(), m.value().decode(), dict(m.headers())['i'].decode(), m.timestamp()[1]))
c.close()
print(len(parts), lo, hi)
for s in seen: print(*s)
"#;

#[test]
fn confluent_kafka_produces_with_acks_all_and_reads_with_assign_and_seek() {
    let server = TestServer::start();
    let out = python(&server, PRODUCE_AND_ASSIGN);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1 0 600"), "{out}");
    let seen: Vec<&str> = lines.collect();
    assert_eq!(seen.len(), 500, "{out}");
    for (n, line) in seen.iter().enumerate() {
        let i = n + 100;
        assert_eq!(
            *line,
            format!(
                "{i} k{} v{i} {i} {}",
                i % 13,
                1_700_000_000_000u64 + i as u64
            )
        );
    }
    // Acknowledged with acks=all: durable, so a native consumer sees them.
    let native = eddy(&server, &["consume", "--topic", "py", "--max", "600"], "");
    assert_eq!(native.lines().count(), 600);
    assert_eq!(native.lines().nth(599), Some("v599"));
}

/// Kafka's four codecs, by their librdkafka names.
const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];

/// Telemetry-like lines (repetitive JSON, as devices send), `n` of them.
fn readings(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"device\":\"truck-{}\",\"ts\":{},\"temp\":{}.{},\"status\":\"ok\"}}\n",
                i % 5,
                1_700_000_000_000u64 + i as u64,
                20 + i % 3,
                i % 10
            )
        })
        .collect()
}

#[test]
fn kcat_produces_every_codec_and_reads_it_back() {
    let server = TestServer::start();
    let lines = readings(300);
    for codec in CODECS {
        let topic = format!("kz-{codec}");
        kcat(&server, &["-P", "-t", &topic, "-z", codec], &lines);
        let read = kcat(&server, &["-C", "-t", &topic, "-e", "-f", "%s\\n"], "");
        assert_eq!(read, lines, "{codec}: kcat reads back what it compressed");
        // Stored decompressed: the native consumer reads the same values.
        let native = eddy(&server, &["consume", "--topic", &topic, "--max", "300"], "");
        assert_eq!(native, lines, "{codec}: the native consumer reads them too");
    }
}

const COMPRESSION_AND_ACKS0: &str = r#"
import sys
from confluent_kafka import Producer
b = sys.argv[1]
def produce(topic, conf, n):
    errors = []
    p = Producer(dict({'bootstrap.servers': b, 'retries': 0, 'linger.ms': 20}, **conf))
    for i in range(n):
        p.produce(topic, key=b'k%d' % (i % 3), value=b'{"n":%d,"status":"ok"}' % i,
                  on_delivery=lambda err, msg: errors.append(err.name() if err else None))
    p.flush(30)
    return errors
for codec in ['gzip', 'snappy', 'lz4', 'zstd']:
    print(codec, set(produce('py-' + codec, {'compression.type': codec, 'acks': 'all'}, 200)))
print('zero', set(produce('zero', {'acks': 0}, 50)))
"#;

#[test]
fn confluent_kafka_produces_every_codec_and_acks_0_gets_no_answer() {
    let server = TestServer::start();
    let out = python(&server, COMPRESSION_AND_ACKS0);
    let lines: Vec<&str> = out.lines().collect();
    for (i, codec) in CODECS.iter().enumerate() {
        // Every record acknowledged (acks=all: durable), none refused.
        assert_eq!(lines[i], format!("{codec} {{None}}"), "{out}");
        let topic = format!("py-{codec}");
        let native = eddy(&server, &["consume", "--topic", &topic, "--max", "200"], "");
        let values: Vec<&str> = native.lines().collect();
        assert_eq!(values.len(), 200, "{codec}: {native}");
        assert_eq!(values[199], "{\"n\":199,\"status\":\"ok\"}", "{codec}");
    }
    // acks=0: librdkafka reports success without an answer; the records
    // are there (read once durable).
    assert_eq!(lines[4], "zero {None}", "{out}");
    let native = eddy(&server, &["consume", "--topic", "zero", "--max", "50"], "");
    assert_eq!(native.lines().count(), 50);
}

/// Reads one size-prefixed Kafka frame, or `None` at end of stream.
fn read_frame(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

#[test]
fn an_unknown_api_versions_version_gets_a_v0_answer_and_an_oversized_frame_is_closed() {
    use std::io::Write as _;
    let server = TestServer::start();
    let mut stream = std::net::TcpStream::connect(kafka(&server)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    // ApiVersions (18) v99, correlation id 7, no client id.
    let mut request = Vec::new();
    request.extend_from_slice(&18i16.to_be_bytes());
    request.extend_from_slice(&99i16.to_be_bytes());
    request.extend_from_slice(&7i32.to_be_bytes());
    request.extend_from_slice(&(-1i16).to_be_bytes());
    stream
        .write_all(&(request.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(&request).unwrap();
    let answer = read_frame(&mut stream).expect("an ApiVersions answer");
    // Header v0 (correlation id only), then UNSUPPORTED_VERSION (35) and a
    // non-empty list of APIs.
    assert_eq!(&answer[..4], &7i32.to_be_bytes());
    assert_eq!(&answer[4..6], &35i16.to_be_bytes());
    assert!(i32::from_be_bytes(answer[6..10].try_into().unwrap()) >= 5);

    // A frame above limits.frame_bytes_max: closed before any allocation.
    let too_big = server.config.limits.frame_bytes_max + 1;
    stream.write_all(&too_big.to_be_bytes()).unwrap();
    assert_eq!(read_frame(&mut stream), None, "the connection is closed");
    assert!(
        server
            .running()
            .net()
            .stats
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0,
        "the Kafka listener counts its own protocol errors"
    );
}

const ACL_FOR_LOCAL_KAFKA: &str = r#"
[[allow]]
identities = ["kafka-local"]
operations = ["produce", "consume"]
topics = ["open.*"]
"#;

const PRODUCE_OPEN_AND_SECRET: &str = r#"
import sys
from confluent_kafka import Producer, Consumer
b = sys.argv[1]
p = Producer({'bootstrap.servers': b, 'acks': 'all', 'retries': 0, 'message.timeout.ms': 10000})
results = {}
def done(err, msg):
    results[msg.topic()] = err.name() if err else 'ok'
p.produce('open.1', value=b'fine', on_delivery=done)
p.produce('secret', value=b'no', on_delivery=done)
p.flush(30)
print(results['open.1'], results['secret'])
c = Consumer({'bootstrap.servers': b, 'group.id': 'none'})
print(sorted(c.list_topics(timeout=10).topics))
c.close()
"#;

#[test]
fn a_loopback_kafka_client_is_kafka_local_and_passes_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(&acl, ACL_FOR_LOCAL_KAFKA).unwrap();
    let server = TestServer::start_with(|c| c.acl_file = Some(acl.clone()));
    let out = python(&server, PRODUCE_OPEN_AND_SECRET);
    let lines: Vec<&str> = out.lines().collect();
    // librdkafka names the per-topic refusal from Metadata or Produce.
    assert!(lines[0].starts_with("ok "), "{out}");
    assert!(lines[0].contains("TOPIC_AUTHORIZATION_FAILED"), "{out}");
    assert_eq!(lines[1], "['open.1']", "{out}");
    let storage = server.running().broker().storage();
    assert!(storage.topic("open.1").is_some());
    assert!(storage.topic("secret").is_none(), "a denial writes nothing");
}
