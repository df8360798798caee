//! QoS 2 exactly once per client id and packet id, across reconnects and
//! hub restarts, with nothing but records: no MQTT type reaches the broker
//! or storage.
//!
//! Before a QoS 2 message is appended, a *mark* is made durable in the
//! compacted eddy topic [`MARKS_TOPIC`] (key `client id \n packet id`,
//! value: the eddy topic, partition and log end where the message will
//! land at or after, and a random nonce). The message's record carries the
//! nonce in header [`HEADER_NONCE`]. PUBREC follows once the record is
//! durable; PUBREL deletes the mark (a tombstone, durable before PUBCOMP,
//! so a packet id the client reuses afterwards is a new message).
//!
//! A PUBLISH with a packet id that has a mark is a resend: if the session
//! saw it land since the hub started, PUBREC at once; otherwise (a
//! restart, or its append failed) the partition is read from the mark's offset for a
//! record with the nonce — found: PUBREC without storing it again; not
//! found: it never landed, and is appended now to the same partition with
//! the same nonce. Whatever the crash point, the message is stored once:
//! the mark is durable before the record can be.
//!
//! Marks are read from the topic once, at the first QoS 2 use, and kept
//! in memory (at most [`MARKS_MAX`]); a clean session's marks are deleted
//! at its CONNECT (the client forgot them too). Limits, and why: the scan
//! reads at most [`SCAN_BYTES_MAX`] (a resend that would need more is
//! refused rather than risk a duplicate); a record retention deleted
//! before its resend cannot be found and is stored again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smol::lock::OnceCell;

use super::MqttContext;
use crate::broker::{AckLevel, BrokerError};
use crate::wire::batch::{BatchBuilder, Batches, Headers};

/// The compacted eddy topic holding the marks.
pub const MARKS_TOPIC: &str = "mqtt.qos2";
/// The header of a QoS 2 record naming its mark's nonce (hex).
pub const HEADER_NONCE: &str = "mqtt.qos2";
/// Most marks (QoS 2 messages between PUBLISH and PUBREL) kept in all;
/// beyond it a new QoS 2 PUBLISH is refused (quota exceeded).
pub const MARKS_MAX: usize = 100_000;
/// Most bytes read looking for a resent message's record.
pub const SCAN_BYTES_MAX: usize = 64 << 20;
/// Most bytes read at a time (scan and load).
const READ_BYTES_MAX: usize = 1 << 20;
/// Longest a mark waits to be durable, in ms.
const MARK_TIMEOUT_MS: u64 = 30_000;

/// Where a QoS 2 message lands, and how its record is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub topic: String,
    pub partition: u32,
    /// The partition's log end before the message was appended.
    pub from: u64,
    pub nonce: u64,
}

impl Mark {
    fn encode(&self) -> Vec<u8> {
        format!(
            "{}\n{}\n{}\n{:016x}",
            self.topic, self.partition, self.from, self.nonce
        )
        .into_bytes()
    }

    fn decode(value: &[u8]) -> Option<Mark> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split('\n');
        let mark = Mark {
            topic: parts.next()?.to_string(),
            partition: parts.next()?.parse().ok()?,
            from: parts.next()?.parse().ok()?,
            nonce: u64::from_str_radix(parts.next()?, 16).ok()?,
        };
        parts.next().is_none().then_some(mark)
    }

    /// The nonce as the record's header value.
    pub fn nonce_text(&self) -> String {
        format!("{:016x}", self.nonce)
    }
}

fn key_of(client_id: &str, pkid: u16) -> String {
    format!("{client_id}\n{pkid}")
}

type Table = HashMap<String, HashMap<u16, Mark>>;

/// The marks, loaded at first use.
#[derive(Default)]
pub struct Marks {
    table: OnceCell<Mutex<Table>>,
}

impl Marks {
    async fn table(&self, ctx: &MqttContext) -> &Mutex<Table> {
        self.table
            .get_or_init(|| async { Mutex::new(load(ctx).await) })
            .await
    }

    /// The mark of `client_id`'s `pkid`, if any.
    pub async fn lookup(&self, ctx: &MqttContext, client_id: &str, pkid: u16) -> Option<Mark> {
        let table = self.table(ctx).await.lock().expect("marks lock");
        table.get(client_id)?.get(&pkid).cloned()
    }

    /// Makes a new mark durable (then remembers it).
    pub async fn make(
        &self,
        ctx: &MqttContext,
        identity: &str,
        client_id: &str,
        pkid: u16,
        mark: Mark,
    ) -> Result<Mark, BrokerError> {
        let count: usize = {
            let table = self.table(ctx).await.lock().expect("marks lock");
            table.values().map(HashMap::len).sum()
        };
        if count >= MARKS_MAX {
            return Err(BrokerError::Storage(crate::storage::StorageError::Failed(
                format!("{MARKS_MAX} QoS 2 messages await their PUBREL (mqtt qos2 marks)"),
            )));
        }
        write(ctx, identity, &key_of(client_id, pkid), &mark.encode()).await?;
        let mut table = self.table(ctx).await.lock().expect("marks lock");
        let marks = table.entry(client_id.to_string()).or_default();
        marks.insert(pkid, mark.clone());
        Ok(mark)
    }

    /// Deletes the mark of `pkid` (durably, when there was one).
    pub async fn release(
        &self,
        ctx: &MqttContext,
        identity: &str,
        client_id: &str,
        pkid: u16,
    ) -> Result<(), BrokerError> {
        let had = {
            let mut table = self.table(ctx).await.lock().expect("marks lock");
            let had = table
                .get_mut(client_id)
                .and_then(|m| m.remove(&pkid))
                .is_some();
            if table.get(client_id).is_some_and(HashMap::is_empty) {
                table.remove(client_id);
            }
            had
        };
        if had {
            write(ctx, identity, &key_of(client_id, pkid), b"").await?;
        }
        Ok(())
    }

    /// Deletes every mark of `client_id` (a clean session starts).
    pub async fn forget_client(
        &self,
        ctx: &MqttContext,
        identity: &str,
        client_id: &str,
    ) -> Result<(), BrokerError> {
        let pkids: Vec<u16> = {
            let table = self.table(ctx).await.lock().expect("marks lock");
            table
                .get(client_id)
                .map(|m| m.keys().copied().collect())
                .unwrap_or_default()
        };
        for pkid in pkids {
            self.release(ctx, identity, client_id, pkid).await?;
        }
        Ok(())
    }
}

/// Appends one record (key, value) to [`MARKS_TOPIC`] and waits until it
/// is durable.
async fn write(
    ctx: &MqttContext,
    identity: &str,
    key: &str,
    value: &[u8],
) -> Result<(), BrokerError> {
    let broker = &ctx.net.broker;
    let configs = vec![("cleanup.policy".to_string(), "compact".to_string())];
    broker.ensure_topic(MARKS_TOPIC, 1, configs).await?;
    let now = crate::time::now_ms_i64();
    let mut builder = BatchBuilder::with_capacity(key.len() + value.len() + 128, now)
        .map_err(BrokerError::Corrupt)?;
    builder
        .push(now, Some(key.as_bytes()), value, Headers(&[]))
        .map_err(BrokerError::Corrupt)?;
    let timeout = Duration::from_millis(MARK_TIMEOUT_MS);
    broker
        .produce_to(
            identity,
            MARKS_TOPIC,
            0,
            builder.finish_vec(),
            AckLevel::Durable,
            timeout,
        )
        .await?
        .await?;
    Ok(())
}

/// Reads `partition` of `topic` from `from` (at most `budget` bytes),
/// calling `each` with every record's key, value and headers until it
/// returns true. Returns whether it did, or `None` when the budget ran out
/// first.
async fn scan(
    ctx: &MqttContext,
    topic: &str,
    partition: u32,
    from: u64,
    budget: usize,
    mut each: impl FnMut(Option<&[u8]>, &[u8], Headers<'_>) -> bool,
) -> Option<bool> {
    let broker = &ctx.net.broker;
    let Ok(topic) = broker.topic_named(topic) else {
        return Some(false);
    };
    let start = topic
        .partition(partition)
        .map_or(from, |log| log.watermarks().log_start.max(from));
    let mut offset = start;
    let mut read = 0usize;
    loop {
        let reads = broker
            .fetch_from(topic.clone(), vec![(partition, offset)], READ_BYTES_MAX)
            .await;
        let Some(data) = reads.into_iter().next() else {
            return Some(false);
        };
        if data.error.is_some() || data.bytes.is_empty() {
            return Some(false);
        }
        read += data.bytes.len();
        for batch in Batches::new(&data.bytes).flatten() {
            for record in batch.records().flatten() {
                if batch.base_offset() + u64::from(record.offset_delta) < offset {
                    continue;
                }
                if each(record.key, record.value, record.headers) {
                    return Some(true);
                }
            }
            offset = offset.max(batch.end_offset());
        }
        if offset >= data.high_watermark {
            return Some(false);
        }
        if read >= budget {
            return None;
        }
    }
}

/// Whether the record of `mark` is stored. `Err`: the scan would read
/// more than [`SCAN_BYTES_MAX`].
pub async fn is_stored(ctx: &MqttContext, mark: &Mark) -> Result<bool, BrokerError> {
    let nonce = mark.nonce_text();
    let found = scan(
        ctx,
        &mark.topic,
        mark.partition,
        mark.from,
        SCAN_BYTES_MAX,
        |_, _, headers| {
            headers
                .iter()
                .flatten()
                .any(|(name, value)| name == HEADER_NONCE && value == nonce.as_bytes())
        },
    )
    .await;
    found.ok_or_else(|| {
        BrokerError::Storage(crate::storage::StorageError::Failed(format!(
            "a QoS 2 resend would need more than {SCAN_BYTES_MAX} bytes read to rule out a duplicate"
        )))
    })
}

/// Every mark in [`MARKS_TOPIC`] (the latest per key).
async fn load(ctx: &MqttContext) -> Table {
    let mut table = Table::new();
    let whole = usize::MAX;
    scan(ctx, MARKS_TOPIC, 0, 0, whole, |key, value, _| {
        let Some((client, pkid)) = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.split_once('\n'))
            .and_then(|(c, p)| Some((c.to_string(), p.parse::<u16>().ok()?)))
        else {
            return false;
        };
        match Mark::decode(value) {
            Some(mark) => {
                table.entry(client).or_default().insert(pkid, mark);
            }
            None => {
                if let Some(m) = table.get_mut(&client) {
                    m.remove(&pkid);
                }
            }
        }
        false
    })
    .await;
    table.retain(|_, m| !m.is_empty());
    let count: usize = table.values().map(HashMap::len).sum();
    if count > 0 {
        log::info!("mqtt: {count} QoS 2 messages await their PUBREL (from {MARKS_TOPIC})");
    }
    table
}

/// A fresh mark for a message about to land in `partition` of `topic`.
pub fn new_mark(ctx: &Arc<MqttContext>, topic: &str, partition: u32) -> Mark {
    let from = ctx
        .net
        .broker
        .topic_named(topic)
        .ok()
        .and_then(|t| t.partition(partition).map(|log| log.watermarks().log_end))
        .unwrap_or(0);
    Mark {
        topic: topic.to_string(),
        partition,
        from,
        nonce: fastrand::u64(..),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_junk_is_not_a_mark() {
        let mark = Mark {
            topic: "plant".into(),
            partition: 3,
            from: 1234,
            nonce: 0xfeed_beef,
        };
        assert_eq!(Mark::decode(&mark.encode()), Some(mark));
        assert_eq!(Mark::decode(b""), None, "a tombstone");
        assert_eq!(Mark::decode(b"a\n1\n2"), None);
        assert_eq!(Mark::decode(b"a\n1\n2\nzz"), None);
    }
}
