//! CRC32C (Castagnoli), the checksum of every batch.
//!
//! With `std` this is the `crc32c` crate (SSE 4.2 / ARMv8 CRC instructions
//! when present); without it the `crc` crate with a 1 KiB table, small
//! enough for a microcontroller's flash. Both compute the same function.

/// CRC32C of `bytes`.
#[cfg(feature = "std")]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// CRC32C of `bytes`.
#[cfg(not(feature = "std"))]
pub fn crc32c(bytes: &[u8]) -> u32 {
    const CRC32C: crc::Crc<u32, crc::Table<1>> =
        crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISCSI);
    CRC32C.checksum(bytes)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    #[test]
    fn hardware_and_table_implementations_agree() {
        const TABLE: crc::Crc<u32, crc::Table<1>> =
            crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISCSI);
        // The check value of CRC-32C ("123456789" → 0xE3069283).
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        let data: std::vec::Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 7, 8, 63, 64, 1000, 10_000] {
            assert_eq!(super::crc32c(&data[..len]), TABLE.checksum(&data[..len]));
        }
    }
}
