//! The fuzz targets' checks (`tests/fuzz/src/lib.rs`) over the seed corpus
//! and every regression input in `tests/fuzz/regressions/` (inputs the
//! fuzzer once found a problem with, named `<target>-<what>`), on stable
//! Rust and in CI; the fuzzing itself needs nightly (see README.md).
//!
//! `EDDY_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_corpus` rewrites the seed
//! corpus from the requests and batches below (after a wire change), and
//! the hand-made edge cases in `tests/fuzz/regressions/` ([`edge_cases`]):
//! inputs at the decoders' limits, each with the way it must be refused.
//! No fuzzer finding has been added there yet; one would be named
//! `<target>-<what>` too and checked by the same test.

#[path = "fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

use eddy::wire::batch::{
    Batch, BatchBuilder, BatchError, Headers, ProducerStamp, BATCH_HEADER_BYTES, NO_TIMESTAMP,
};
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

/// How a hand-made edge case must come out.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The length prefix is refused before any body is read.
    FrameTooLarge,
    /// The prefix is accepted, the body is not all there (the server waits
    /// for the rest, bounded by its frame timeout).
    FrameIncomplete,
    /// The request body does not decode.
    RequestMalformed,
    /// A produce request that decodes, whose batch is refused so.
    ProducedBatch(BatchError),
    /// The batch is refused so (parse, then validate).
    Batch(BatchError),
}

/// What the server's decoders make of an input of `target`.
fn outcome(target: &str, bytes: &[u8]) -> Option<Outcome> {
    let batch = |b: &[u8]| {
        Batch::parse(b)
            .and_then(|batch| batch.validate_produced())
            .err()
    };
    let request = |body: &[u8]| match wire::decode_request(body) {
        Err(_) => Some(Outcome::RequestMalformed),
        Ok(RequestFrame {
            request: Request::Produce(p),
            ..
        }) => batch(p.batch).map(Outcome::ProducedBatch),
        Ok(_) => None,
    };
    match target {
        "frame" => {
            let (prefix, rest) = bytes.split_first_chunk::<{ wire::FRAME_PREFIX_BYTES }>()?;
            match wire::decode_frame_len(*prefix, wire::FRAME_BYTES_MAX_DEFAULT) {
                Err(_) => Some(Outcome::FrameTooLarge),
                Ok(len) => match rest.get(..len) {
                    None => Some(Outcome::FrameIncomplete),
                    Some(body) => request(body),
                },
            }
        }
        "request" => request(bytes),
        "batch" => batch(bytes).map(Outcome::Batch),
        _ => None,
    }
}

/// Sets a batch's length field and CRC to match its bytes, so a change
/// further in reaches the record decoder.
fn fix_up(mut batch: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(batch.len() - 12).unwrap();
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = wire::crc32c(&batch[16..]);
    batch[12..16].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Inputs at the decoders' limits, made by hand (`tests/fuzz/regressions/`),
/// and how each must be refused.
fn edge_cases() -> Vec<(&'static str, Vec<u8>, Outcome)> {
    let keyless = batch(&[(None, b"21.5", &[]), (None, b"21.6", &[])], 1_000);
    let max = wire::FRAME_BYTES_MAX_DEFAULT;
    let frame_of = |len: u32, body: &[u8]| [&len.to_be_bytes()[..], body].concat();
    // A produce request carrying `batch`, as a body.
    let produce = |batch: &[u8]| {
        encode(Request::Produce(Produce {
            topic: "telemetry",
            partition: None,
            acks: Acks::Durable,
            timeout_ms: 10_000,
            batch,
        }))[wire::FRAME_PREFIX_BYTES..]
            .to_vec()
    };
    let mut wrong_crc = keyless.clone();
    wrong_crc[15] ^= 0x01;
    let mut count_too_high = keyless.clone();
    count_too_high[52..56].copy_from_slice(&3u32.to_be_bytes());
    count_too_high[18..22].copy_from_slice(&2u32.to_be_bytes());
    let count_too_high = fix_up(count_too_high);
    let truncated_record = fix_up(keyless[..keyless.len() - 2].to_vec());
    let mut past_end = keyless.clone();
    past_end[8..12].copy_from_slice(&(keyless.len() as u32).to_be_bytes());
    // A Hello whose client id says 100 bytes and has 3.
    let string_past_end = [&[0u8, 0, 1, 100][..], b"abc"].concat();
    vec![
        (
            "frame-length-over-max",
            frame_of(max + 1, &[0; 8]),
            Outcome::FrameTooLarge,
        ),
        (
            "frame-length-u32-max",
            frame_of(u32::MAX, &[0; 8]),
            Outcome::FrameTooLarge,
        ),
        (
            "frame-length-max-body-missing",
            frame_of(max, &[0, 0, 1]),
            Outcome::FrameIncomplete,
        ),
        (
            "frame-zero-length",
            frame_of(0, &[]),
            Outcome::RequestMalformed,
        ),
        (
            "frame-produce-wrong-crc",
            frame_of(produce(&wrong_crc).len() as u32, &produce(&wrong_crc)),
            Outcome::ProducedBatch(BatchError::BadCrc {
                stored: u32::from_be_bytes(wrong_crc[12..16].try_into().unwrap()),
                computed: wire::crc32c(&wrong_crc[16..]),
            }),
        ),
        (
            "request-truncated-varint",
            vec![0x80],
            Outcome::RequestMalformed,
        ),
        (
            "request-overlong-varint",
            vec![0xff; 11],
            Outcome::RequestMalformed,
        ),
        (
            "request-unknown-variant",
            vec![0, 0xc8, 0x01],
            Outcome::RequestMalformed,
        ),
        (
            "request-string-past-end",
            string_past_end,
            Outcome::RequestMalformed,
        ),
        (
            "request-trailing-byte",
            [
                &encode(Request::Ping(Ping { nonce: 1 }))[wire::FRAME_PREFIX_BYTES..],
                &[0],
            ]
            .concat(),
            Outcome::RequestMalformed,
        ),
        (
            "batch-wrong-crc",
            wrong_crc.clone(),
            Outcome::Batch(BatchError::BadCrc {
                stored: u32::from_be_bytes(wrong_crc[12..16].try_into().unwrap()),
                computed: wire::crc32c(&wrong_crc[16..]),
            }),
        ),
        (
            "batch-length-past-end",
            past_end,
            Outcome::Batch(BatchError::BadLength),
        ),
        (
            "batch-truncated-header",
            keyless[..BATCH_HEADER_BYTES - 1].to_vec(),
            Outcome::Batch(BatchError::Truncated),
        ),
        (
            "batch-record-count-too-high",
            count_too_high,
            Outcome::Batch(BatchError::BadRecord { index: 2 }),
        ),
        (
            "batch-truncated-record",
            truncated_record,
            Outcome::Batch(BatchError::BadRecord { index: 1 }),
        ),
    ]
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
    let dir = fuzz_dir().join("regressions");
    if std::env::var_os("EDDY_WRITE_FUZZ_SEEDS").is_some() {
        for (name, bytes, _) in edge_cases() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    // The edge cases are there and refused the way they must be.
    for (name, bytes, expected) in edge_cases() {
        let stored = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e} (EDDY_WRITE_FUZZ_SEEDS=1 writes it)"));
        assert_eq!(stored, bytes, "{name} is the input made here");
        let target = name.split('-').next().unwrap();
        assert_eq!(outcome(target, &stored), Some(expected), "{name}");
    }
    // Every input (edge cases and fuzzer findings) passes the target's
    // checks. Each file is named after its target: frame-…, request-…, batch-….
    for file in inputs(&dir) {
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
