//! The fuzz targets' checks (`tests/fuzz/src/lib.rs`) over the seed corpus
//! and every regression input in `tests/fuzz/regressions/` (inputs the
//! fuzzer once found a problem with, named `<target>-<what>`), on stable
//! Rust and in CI; the fuzzing itself needs nightly (see README.md).
//!
//! `EDDY_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_corpus` rewrites the seed
//! corpus from the requests and batches below (after a wire change).

#[path = "fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

use eddy::wire::batch::{BatchBuilder, Headers, ProducerStamp, NO_TIMESTAMP};
use eddy::wire::{
    self, Acks, AlterTopicConfig, CommitOffsets, ConfigEntry, CreateTopic, ErrorCode, ErrorReply,
    Fetch, FetchOffsets, FetchPartition, GroupHeartbeat, GroupRef, Hello, InitProducer, Metadata,
    OffsetsForTimestamp, PartitionOffset, Ping, Produce, Request, RequestFrame, Response,
    ResponseFrame, TopicOffsets, TopicPartitions, TopicRef,
};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

/// A record to seed: key, value, headers.
type SeedRecord<'a> = (Option<&'a [u8]>, &'a [u8], &'a [(&'a str, &'a [u8])]);
/// A fuzz target's name and its check.
type Target = (&'static str, fn(&[u8]));

fn batch(records: &[SeedRecord<'_>], timestamp_ms: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(vec![0u8; 4096], timestamp_ms).unwrap();
    for (key, value, headers) in records {
        let encoded = Headers::encode_vec(headers);
        let ts = if timestamp_ms == NO_TIMESTAMP {
            NO_TIMESTAMP
        } else {
            timestamp_ms + 5
        };
        b.push(ts, *key, value, Headers(&encoded)).unwrap();
    }
    let (buf, len) = b.finish();
    buf[..len].to_vec()
}

/// Seed batches: keyless, keyed over partitions, headers, arrival time,
/// an idempotent producer's.
fn seed_batches() -> Vec<(&'static str, Vec<u8>)> {
    let idempotent = {
        let mut b = BatchBuilder::new(vec![0u8; 512], 1_000).unwrap();
        b.set_producer(ProducerStamp {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 40,
        });
        b.push(1_000, Some(b"pump-1"), b"on", Headers::EMPTY)
            .unwrap();
        b.push(1_001, Some(b"pump-1"), b"off", Headers::EMPTY)
            .unwrap();
        let (buf, len) = b.finish();
        buf[..len].to_vec()
    };
    vec![
        (
            "keyless",
            batch(&[(None, b"21.5", &[]), (None, b"21.6", &[])], 1_000),
        ),
        (
            "keyed",
            batch(
                &[
                    (Some(b"sensor-1"), b"a", &[]),
                    (Some(b"sensor-2"), b"b", &[]),
                    (Some(b"sensor-3"), b"", &[]),
                ],
                1_700_000_000_000,
            ),
        ),
        (
            "headers",
            batch(
                &[(
                    Some(b"k"),
                    b"v",
                    &[("content-type", b"json"), ("device", b"7")],
                )],
                1_000,
            ),
        ),
        (
            "arrival-time",
            batch(&[(None, b"x", &[]), (None, b"y", &[])], NO_TIMESTAMP),
        ),
        ("idempotent", idempotent),
    ]
}

fn seed_requests<'a>(batches: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, Request<'a>)> {
    let keyed = &batches[1].1;
    vec![
        (
            "hello",
            Request::Hello(Hello {
                protocol_version: wire::PROTOCOL_VERSION,
                client_id: "sensor-7",
            }),
        ),
        ("ping", Request::Ping(Ping { nonce: 42 })),
        (
            "produce",
            Request::Produce(Produce {
                topic: "telemetry",
                partition: None,
                acks: Acks::Durable,
                timeout_ms: 10_000,
                batch: keyed,
            }),
        ),
        (
            "fetch",
            Request::Fetch(Fetch {
                topic: "telemetry",
                partitions: vec![
                    FetchPartition {
                        partition: 0,
                        offset: 0,
                    },
                    FetchPartition {
                        partition: 1,
                        offset: 17,
                    },
                ],
                max_bytes: 1 << 20,
                max_wait_ms: 500,
            }),
        ),
        (
            "metadata",
            Request::Metadata(Metadata {
                topics: vec!["a", "b"],
            }),
        ),
        (
            "create-topic",
            Request::CreateTopic(CreateTopic {
                name: "alarms",
                partitions: 4,
                configs: vec![ConfigEntry {
                    name: "retention.ms",
                    value: "86400000",
                }],
            }),
        ),
        (
            "delete-topic",
            Request::DeleteTopic(TopicRef { topic: "old" }),
        ),
        (
            "describe-topic",
            Request::DescribeTopic(TopicRef { topic: "telemetry" }),
        ),
        (
            "watermarks",
            Request::Watermarks(TopicRef { topic: "telemetry" }),
        ),
        (
            "group-heartbeat",
            Request::GroupHeartbeat(GroupHeartbeat {
                group: "dashboard",
                member_id: "m-1",
                member_epoch: 3,
                client_id: "dash",
                topics: vec!["telemetry"],
                pattern: Some("tele.*"),
                session_timeout_ms: 45_000,
                rebalance_timeout_ms: 0,
                owned: vec![TopicPartitions {
                    topic: "telemetry",
                    partitions: vec![0, 2],
                }],
            }),
        ),
        (
            "commit-offsets",
            Request::CommitOffsets(CommitOffsets {
                group: "dashboard",
                member_id: "m-1",
                member_epoch: 3,
                offsets: vec![TopicOffsets {
                    topic: "telemetry",
                    partitions: vec![PartitionOffset {
                        partition: 0,
                        offset: 99,
                    }],
                }],
            }),
        ),
        (
            "fetch-offsets",
            Request::FetchOffsets(FetchOffsets {
                group: "dashboard",
                topics: vec![],
            }),
        ),
        ("list-groups", Request::ListGroups),
        (
            "describe-group",
            Request::DescribeGroup(GroupRef { group: "dashboard" }),
        ),
        (
            "delete-group",
            Request::DeleteGroup(GroupRef { group: "dashboard" }),
        ),
        (
            "alter-topic-config",
            Request::AlterTopicConfig(AlterTopicConfig {
                topic: "telemetry",
                set: vec![ConfigEntry {
                    name: "cleanup.policy",
                    value: "compact",
                }],
                delete: vec!["retention.ms"],
            }),
        ),
        (
            "topic-stats",
            Request::TopicStats(TopicRef { topic: "telemetry" }),
        ),
        (
            "offsets-for-timestamp",
            Request::OffsetsForTimestamp(OffsetsForTimestamp {
                topic: "telemetry",
                timestamp_ms: 1_700_000_000_000,
            }),
        ),
        (
            "init-producer",
            Request::InitProducer(InitProducer { name: "pump-1" }),
        ),
    ]
}

fn encode(request: Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_request(
        &RequestFrame {
            correlation_id: 9,
            request,
        },
        &mut out,
    );
    out
}

/// Writes the seed corpus (only with `EDDY_WRITE_FUZZ_SEEDS=1`).
fn write_seeds() {
    let dir = fuzz_dir().join("corpus");
    let batches = seed_batches();
    let write = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(dir.join(target)).unwrap();
        std::fs::write(dir.join(target).join(name), bytes).unwrap();
    };
    let mut concatenated = Vec::new();
    for (name, b) in &batches {
        write("batch", name, b);
        concatenated.extend_from_slice(b);
    }
    write("batch", "fetched-several", &concatenated);
    for (name, request) in seed_requests(&batches) {
        let frame = encode(request);
        write("frame", name, &frame);
        write("request", name, &frame[wire::FRAME_PREFIX_BYTES..]);
    }
    let mut error = Vec::new();
    wire::encode_response(
        &ResponseFrame {
            correlation_id: 9,
            response: Response::Error(ErrorReply {
                code: ErrorCode::NotAuthorized,
                message: "sensor-1 may not produce topic alarms",
            }),
        },
        &mut error,
    );
    write("frame", "response-error", &error);
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        // Dot files (.keep) are not inputs.
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    all.sort();
    all
}

#[test]
fn the_seed_corpus_passes_every_check() {
    if std::env::var_os("EDDY_WRITE_FUZZ_SEEDS").is_some() {
        write_seeds();
    }
    let targets: [Target; 3] = [
        ("frame", checks::frame),
        ("request", checks::request),
        ("batch", checks::batch),
    ];
    for (target, check) in targets {
        let files = inputs(&fuzz_dir().join("corpus").join(target));
        assert!(files.len() >= 5, "the {target} corpus has seeds");
        for file in files {
            check(&std::fs::read(&file).unwrap());
        }
    }
}

#[test]
fn every_request_seed_decodes_and_every_batch_seed_is_accepted() {
    // Seeds must be valid inputs, or the fuzzer starts from noise.
    for file in inputs(&fuzz_dir().join("corpus/request")) {
        let body = std::fs::read(&file).unwrap();
        assert!(wire::decode_request(&body).is_ok(), "{}", file.display());
    }
    for file in inputs(&fuzz_dir().join("corpus/batch")) {
        let bytes = std::fs::read(&file).unwrap();
        for parsed in eddy::wire::batch::Batches::new(&bytes) {
            parsed
                .and_then(|b| b.validate())
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
}

#[test]
fn regression_inputs_stay_fixed() {
    // Each file is named after its target: frame-…, request-…, batch-….
    for file in inputs(&fuzz_dir().join("regressions")) {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        let bytes = std::fs::read(&file).unwrap();
        match name.split('-').next() {
            Some("frame") => checks::frame(&bytes),
            Some("request") => checks::request(&bytes),
            Some("batch") => checks::batch(&bytes),
            _ => panic!("{name}: regression inputs are named <target>-<what>"),
        }
    }
}
