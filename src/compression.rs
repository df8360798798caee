//! Compression of a mirror request's batches on `eddy://` links: LZ4
//! (block) and zstd (one frame), the codecs of
//! [`crate::wire::Compression`].
//!
//! Pure: bytes in, bytes out, no I/O. The sending side compresses
//! ([`compress`]); the receiving side decompresses into a buffer of
//! exactly the announced size ([`decompress`]), after checking that size
//! against its own limit, so a small frame can never make it allocate more
//! than an uncompressed frame could. Kafka's codecs on `kafka://` links and
//! in the Kafka listener are `kafka-protocol`'s (see `kafka_records`).

use crate::wire::Compression;

/// zstd level of `eddy://` uplinks: zstd's own default. On the telemetry
/// data set (benches/compression.rs) levels 1 to 3 compress about alike
/// and level 3 is still well under the cost of TLS per byte.
pub const ZSTD_LEVEL_UPLINK: i32 = 3;

/// A codec failed.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("{codec} data of {raw_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        codec: &'static str,
        raw_bytes: u32,
        limit_bytes: u32,
    },
    #[error("{codec} data is corrupt: {message}")]
    Corrupt {
        codec: &'static str,
        message: String,
    },
    #[error("{codec} data decompressed to {got} bytes, {announced} announced")]
    SizeMismatch {
        codec: &'static str,
        got: usize,
        announced: u32,
    },
    #[error("{codec} compression failed: {message}")]
    Compress {
        codec: &'static str,
        message: String,
    },
}

/// Compresses `raw` with `codec`.
pub fn compress(codec: Compression, raw: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let failed = |e: std::io::Error| CompressionError::Compress {
        codec: codec.name(),
        message: e.to_string(),
    };
    match codec {
        // Without the size prefix: the request carries `raw_bytes`.
        Compression::Lz4 => Ok(lz4_flex::block::compress(raw)),
        Compression::Zstd => zstd::bulk::compress(raw, ZSTD_LEVEL_UPLINK).map_err(failed),
    }
}

/// Decompresses `compressed`, announced as `raw_bytes` long, refusing an
/// announcement above `limit_bytes` before allocating anything, and data
/// that does not decompress to exactly `raw_bytes`.
pub fn decompress(
    codec: Compression,
    compressed: &[u8],
    raw_bytes: u32,
    limit_bytes: u32,
) -> Result<Vec<u8>, CompressionError> {
    if raw_bytes > limit_bytes {
        return Err(CompressionError::TooLarge {
            codec: codec.name(),
            raw_bytes,
            limit_bytes,
        });
    }
    let corrupt = |e: std::io::Error| CompressionError::Corrupt {
        codec: codec.name(),
        message: e.to_string(),
    };
    // u32 fits in usize on every target eddy supports (32 and 64 bits).
    let capacity = raw_bytes as usize;
    let raw = match codec {
        Compression::Lz4 => lz4_flex::block::decompress(compressed, capacity).map_err(|e| {
            CompressionError::Corrupt {
                codec: codec.name(),
                message: e.to_string(),
            }
        })?,
        Compression::Zstd => zstd::bulk::decompress(compressed, capacity).map_err(corrupt)?,
    };
    if raw.len() != capacity {
        return Err(CompressionError::SizeMismatch {
            codec: codec.name(),
            got: raw.len(),
            announced: raw_bytes,
        });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..20_000u32)
            .flat_map(|i| format!("{{\"device\":\"d-{}\",\"t\":{i}}}", i % 7).into_bytes())
            .collect()
    }

    #[test]
    fn both_codecs_round_trip_and_shrink_telemetry() {
        let raw = sample();
        let len = u32::try_from(raw.len()).unwrap();
        for codec in [Compression::Lz4, Compression::Zstd] {
            let packed = compress(codec, &raw).unwrap();
            assert!(packed.len() * 4 < raw.len(), "{codec:?}: {}", packed.len());
            assert_eq!(decompress(codec, &packed, len, len).unwrap(), raw);
            // Empty input too.
            let empty = compress(codec, &[]).unwrap();
            assert_eq!(decompress(codec, &empty, 0, 0).unwrap(), Vec::<u8>::new());
        }
    }

    #[test]
    fn a_size_above_the_limit_is_refused_before_decompressing() {
        let raw = sample();
        let len = u32::try_from(raw.len()).unwrap();
        for codec in [Compression::Lz4, Compression::Zstd] {
            let packed = compress(codec, &raw).unwrap();
            assert!(matches!(
                decompress(codec, &packed, len, len - 1),
                Err(CompressionError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn wrong_sizes_and_garbage_are_errors() {
        let raw = sample();
        let len = u32::try_from(raw.len()).unwrap();
        for codec in [Compression::Lz4, Compression::Zstd] {
            let packed = compress(codec, &raw).unwrap();
            // Announced shorter or longer than it is.
            assert!(
                decompress(codec, &packed, len - 1, len).is_err(),
                "{codec:?}"
            );
            assert!(
                decompress(codec, &packed, len + 1, len + 1).is_err(),
                "{codec:?}"
            );
            // Bytes that are no such data.
            let garbage = vec![0xA5u8; 300];
            assert!(decompress(codec, &garbage, len, len).is_err(), "{codec:?}");
            // A corrupted byte in the middle.
            let mut bad = packed.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0xFF;
            if let Ok(out) = decompress(codec, &bad, len, len) {
                // LZ4 blocks carry no checksum: a flipped literal may still
                // decompress; the batches' own CRC32C catches it upstream.
                assert_ne!(out, raw, "{codec:?}");
            }
        }
    }
}
