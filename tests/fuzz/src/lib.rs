//! What the fuzz targets check, on any input: the decoders of the device
//! protocol never panic, allocate only what the input justifies, and
//! whatever they accept survives the server's next steps.
//!
//! - [`frame`]: the server's read path: a length prefix checked against
//!   the maximum, then a request body ([`request`]); and the client's
//!   decoding of a response body.
//! - [`request`]: a request body decodes or is refused; what decodes
//!   re-encodes to a frame that decodes to the same request.
//! - [`batch`]: a produced batch as the broker handles it: parse (length,
//!   magic, CRC), route records to partitions (dense offsets, headers),
//!   rebuild them into stored batches that parse, validate and hold the
//!   same records, stamp arrival times; and concatenated batches as a
//!   consumer reads a fetch. Inputs are also tried with their length and
//!   CRC fields fixed up, so the fuzzer reaches the record decoder.
//!
//! Used by the cargo-fuzz targets (`fuzz_targets/`) and, over the seed
//! corpus and the regression inputs, by `tests/fuzz_corpus.rs` in `cargo
//! test`. This file only checks; it writes nothing.

use eddy::broker::produce::{rebuild, route};
use eddy::wire::batch::{stamp_arrival_time, Batch, Batches, ProducerStamp};
use eddy::wire::{self, FRAME_PREFIX_BYTES};

/// The frame limit the server uses by default.
pub const FRAME_BYTES_MAX: u32 = wire::FRAME_BYTES_MAX_DEFAULT;

/// Stored batch size the broker cuts to (`storage::STORED_BATCH_BYTES_TARGET`).
const CHUNK_BYTES: usize = 4 << 10;

/// Bytes 8..12 of a batch: its length field; 12..16: its CRC32C of 16..end
/// (the documented layout, `src/wire/batch.rs`).
const LENGTH_FIELD: std::ops::Range<usize> = 8..12;
const CRC_FIELD: std::ops::Range<usize> = 12..16;

/// A length prefix and a request body, as the server reads them.
pub fn frame(data: &[u8]) {
    let Some((prefix, rest)) = data.split_first_chunk::<FRAME_PREFIX_BYTES>() else {
        return;
    };
    let Ok(len) = wire::decode_frame_len(*prefix, FRAME_BYTES_MAX) else {
        return;
    };
    assert!(
        len <= FRAME_BYTES_MAX as usize,
        "a length over the maximum passed"
    );
    let Some(body) = rest.get(..len) else {
        // The server would wait for the rest (bounded by its frame timeout).
        return;
    };
    request(body);
    if let Ok(response) = wire::decode_response(body) {
        let mut out = Vec::new();
        wire::encode_response(&response, &mut out);
        let again = wire::decode_response(&out[FRAME_PREFIX_BYTES..])
            .expect("a re-encoded response decodes");
        assert_eq!(again, response, "a response changed in a round trip");
    }
}

/// A request body.
pub fn request(body: &[u8]) {
    let Ok(frame) = wire::decode_request(body) else {
        return;
    };
    let mut out = Vec::new();
    wire::encode_request(&frame, &mut out);
    let again =
        wire::decode_request(&out[FRAME_PREFIX_BYTES..]).expect("a re-encoded request decodes");
    assert_eq!(again, frame, "a request changed in a round trip");
    if let wire::Request::Produce(p) = &frame.request {
        produced_batch(p.batch);
    }
}

/// A produced batch, and the same bytes read as a fetch result.
pub fn batch(data: &[u8]) {
    produced_batch(data);
    if data.len() > CRC_FIELD.end {
        let mut fixed = data.to_vec();
        let len = u32::try_from(fixed.len() - LENGTH_FIELD.end).unwrap_or(u32::MAX);
        fixed[LENGTH_FIELD].copy_from_slice(&len.to_be_bytes());
        let crc = wire::crc32c(&fixed[CRC_FIELD.end..]);
        fixed[CRC_FIELD].copy_from_slice(&crc.to_be_bytes());
        produced_batch(&fixed);
    }
    for parsed in Batches::new(data).flatten() {
        let _ = parsed.validate();
        for record in parsed.records().flatten() {
            let _ = parsed.timestamp_of(&record);
            let _ = record.headers.iter().count();
        }
    }
}

/// What the broker does with a produced batch.
fn produced_batch(bytes: &[u8]) {
    let Ok(batch) = Batch::parse(bytes) else {
        return;
    };
    let valid = batch.validate().is_ok();
    for partitions in [1, 3] {
        let Ok(routes) = route(&batch, partitions, None, 0) else {
            continue;
        };
        assert!(valid, "route accepted a batch that validate refuses");
        let chunks = rebuild(&batch, &routes, 1_000, CHUNK_BYTES, ProducerStamp::NONE)
            .expect("a routed batch rebuilds");
        let mut records = 0u64;
        for (partition, chunk) in &chunks {
            assert!(*partition < partitions);
            let mut in_chunk = 0u64;
            for stored in &chunk.batches {
                let parsed = Batch::parse(stored).expect("a rebuilt batch parses");
                parsed
                    .validate_produced()
                    .expect("a rebuilt batch is a valid produced batch");
                in_chunk += u64::from(parsed.record_count());
            }
            assert_eq!(in_chunk, u64::from(chunk.record_count));
            records += in_chunk;
        }
        assert_eq!(
            records,
            u64::from(batch.record_count()),
            "records lost or added"
        );
    }
    let mut stamped = bytes.to_vec();
    if stamp_arrival_time(&mut stamped, 1_000).is_ok() {
        let parsed = Batch::parse(&stamped).expect("a stamped batch still parses");
        assert_eq!(parsed.record_count(), batch.record_count());
        assert!(!parsed.wants_arrival_timestamps());
    }
}
