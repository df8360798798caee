//! KafkaJS (npm; a pure-JavaScript Kafka codec, independent of
//! librdkafka): a producer with acks=all and a consumer group, against a
//! topic eddy's own producer also writes. `.ci/run` installs it into
//! tests/kafkajs (`npm ci`); missing, the test fails naming that step.

mod common;

use std::collections::BTreeMap;

use common::kafka_clients::{eddy, kafka, run};
use common::TestServer;

#[test]
fn kafkajs_produces_and_a_kafkajs_group_reads_everything_and_commits() {
    let server = TestServer::start();
    eddy(
        &server,
        &["topics", "create", "js", "--partitions", "3"],
        "",
    );
    let native: String = (0..20).map(|i| format!("n{i}=native{i}\n")).collect();
    eddy(
        &server,
        &["produce", "--topic", "js", "--key-separator", "="],
        &native,
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafkajs");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/kafkajs")
            .exists(),
        "KafkaJS is not installed: run `npm ci` in tests/kafkajs (as .ci/run does)"
    );
    let script = format!("{dir}/produce_and_consume.js");
    let broker = kafka(&server).to_string();
    let out = run("node", &[&script, &broker, "js", "jsgroup", "120"], "");
    let out = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.pop(), Some("done"), "{out}");
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 120, "{out}");
    // Every record once, offsets in order per partition.
    let mut last: BTreeMap<u64, i64> = BTreeMap::new();
    let mut values: Vec<String> = Vec::new();
    for r in &records {
        let partition = r["partition"].as_u64().unwrap();
        let offset: i64 = r["offset"].as_str().unwrap().parse().unwrap();
        let previous = last.insert(partition, offset).unwrap_or(-1);
        assert_eq!(offset, previous + 1, "{out}");
        values.push(r["value"].as_str().unwrap().to_string());
        if let Some(n) = r["n"].as_str() {
            assert_eq!(r["value"], format!("js{n}"), "headers survive");
        }
    }
    values.sort();
    let mut expected: Vec<String> = (0..100)
        .map(|i| format!("js{i}"))
        .chain((0..20).map(|i| format!("native{i}")))
        .collect();
    expected.sort();
    assert_eq!(values, expected);
    // Its commits are eddy's: no lag left.
    let described: serde_json::Value = serde_json::from_str(&eddy(
        &server,
        &["groups", "describe", "jsgroup", "--json"],
        "",
    ))
    .unwrap();
    for p in described["partitions"].as_array().unwrap() {
        assert_eq!(p["lag"], 0, "{described}");
    }
    assert_eq!(described["partitions"].as_array().unwrap().len(), 3);
}
