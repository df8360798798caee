//! Reading records out of fetched batches, for consumers.

use crate::wire::batch::{Batch, BatchError, Batches, Record};

/// A record copied out of a fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Calls `f(offset, timestamp_ms, record)` for every record at or after
/// `from_offset` in `batches` (concatenated batches as a fetch returns them),
/// checking each batch's CRC and structure. Returns the offset after the
/// last batch (where the next fetch starts).
pub fn for_each_record<'a>(
    batches: &'a [u8],
    from_offset: u64,
    mut f: impl FnMut(u64, i64, &Record<'a>),
) -> Result<Option<u64>, BatchError> {
    let mut next = None;
    for batch in Batches::new(batches) {
        let batch: Batch<'a> = batch?;
        for record in batch.records() {
            let record = record?;
            let offset = batch.base_offset() + u64::from(record.offset_delta);
            if offset >= from_offset {
                f(offset, batch.timestamp_of(&record), &record);
            }
        }
        next = Some(batch.end_offset());
    }
    Ok(next)
}

/// Copies the records at or after `from_offset` out of `batches`.
pub fn records_from(
    batches: &[u8],
    partition: u32,
    from_offset: u64,
) -> Result<(Vec<ConsumedRecord>, Option<u64>), BatchError> {
    let mut out = Vec::new();
    let mut header_error = None;
    let next = for_each_record(batches, from_offset, |offset, timestamp_ms, r| {
        let mut headers = Vec::new();
        for pair in r.headers.iter() {
            match pair {
                Ok((name, value)) => headers.push((name.to_string(), value.to_vec())),
                Err(e) => header_error = Some(e),
            }
        }
        out.push(ConsumedRecord {
            partition,
            offset,
            timestamp_ms,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.to_vec(),
            headers,
        });
    })?;
    match header_error {
        Some(e) => Err(e),
        None => Ok((out, next)),
    }
}
