//! Kafka's default partitioner: `murmur2(key) & 0x7fffffff mod partitions`.
//!
//! A keyed record lands in the partition a default Kafka producer would pick
//! for the same key and partition count, so a topic mirrored into Kafka keeps
//! its key → partition mapping. Pure and `no_std`.

/// Kafka's `Utils.murmur2` (MurmurHash2, seed `0x9747b28c`), as a signed
/// 32-bit value exactly as Java computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's int arithmetic wraps; so does this. The length is an int in Java;
    // keys longer than 2 GiB cannot occur (frames are far smaller).
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() == 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key`.
/// `partitions` must be at least 1.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    // Kafka's `toPositive`: clear the sign bit (not `abs`).
    let positive = (murmur2(key) as u32) & 0x7fff_ffff;
    positive % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafka_utils_murmur2() {
        // Values produced by Kafka's own Utils.murmur2 (its UtilsTest, and the
        // Java reference values used by other Kafka-compatible clients).
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                *expected,
                "key {:?}",
                core::str::from_utf8(key)
            );
        }
    }

    #[test]
    fn partition_uses_to_positive_not_abs() {
        // murmur2("1") is negative: Kafka masks the sign bit.
        let expected = ((-1_993_445_489i32 as u32) & 0x7fff_ffff) % 10;
        assert_eq!(partition_for_key(b"1", 10), expected);
        for key in [&b"a"[..], b"", b"sensor-42"] {
            assert!(partition_for_key(key, 7) < 7);
            assert_eq!(partition_for_key(key, 1), 0);
        }
    }
}
