//! Idempotent Kafka producers (InitProducerId, sequences per partition)
//! on eddy's producer state: confluent-kafka with enable.idempotence and
//! acks=all, and a resend made by hand (the same batch twice) that is
//! stored once.

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH,
};

use common::kafka_clients::{kafka, python};
use common::TestServer;

const IDEMPOTENT: &str = r#"
import sys
from confluent_kafka import Producer
b = sys.argv[1]
p = Producer({'bootstrap.servers': b, 'enable.idempotence': True, 'acks': 'all',
              'linger.ms': 2, 'max.in.flight.requests.per.connection': 5})
errors = []
def done(err, msg):
    if err: errors.append(str(err))
for i in range(3000):
    k = i % 10
    p.produce('idem', key=('k%d' % k).encode(), value=('%d %d' % (k, i // 10)).encode(),
              on_delivery=done)
    if i % 500 == 0: p.poll(0)
assert p.flush(30) == 0, 'unflushed'
assert not errors, errors
print('ok')
"#;

#[test]
fn an_idempotent_acks_all_producer_stores_every_record_once_in_order() {
    let server = TestServer::start_with(|c| c.default_partitions = 3);
    assert_eq!(python(&server, IDEMPOTENT).trim(), "ok");
    let records = common::stored_records(&server.options(), "idem");
    assert_eq!(records.len(), 3000);
    // Per key (one partition each): 0, 1, 2, … with nothing twice.
    let mut next: BTreeMap<String, u32> = BTreeMap::new();
    let mut partitions = std::collections::BTreeSet::new();
    for r in &records {
        let value = String::from_utf8(r.value.clone()).unwrap();
        let (key, n) = value.split_once(' ').unwrap();
        let n: u32 = n.parse().unwrap();
        let expected = next.entry(key.to_string()).or_default();
        assert_eq!(n, *expected, "key {key} in partition {}", r.partition);
        *expected += 1;
        partitions.insert(r.partition);
    }
    assert_eq!(next.values().copied().collect::<Vec<_>>(), vec![300; 10]);
    assert!(partitions.len() > 1, "the keys spread over partitions");
}

/// Sends one request and reads its answer (header skipped).
fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &Req,
) -> Resp {
    let mut out = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("resend-test"));
    header
        .encode(&mut out, Req::header_version(version))
        .unwrap();
    request.encode(&mut out, version).unwrap();
    stream.write_all(&(out.len() as u32).to_be_bytes()).unwrap();
    stream.write_all(&out).unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    kafka_protocol::messages::ResponseHeader::decode(&mut body, Resp::header_version(version))
        .unwrap();
    Resp::decode(&mut body, version).unwrap()
}

fn batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    out.freeze()
}

fn produce(stream: &mut TcpStream, id: i32, records: Bytes) -> (i16, i64) {
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(records);
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("resend"));
    topic.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![topic];
    let answer: ProduceResponse = call(stream, ApiKey::Produce, 9, id, &request);
    let p = &answer.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn a_resent_idempotent_batch_is_stored_once_and_a_gap_is_refused() {
    let server = TestServer::start();
    let mut stream = TcpStream::connect(kafka(&server)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let init: InitProducerIdResponse = call(
        &mut stream,
        ApiKey::InitProducerId,
        4,
        1,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(kafka_protocol::messages::ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(pid >= 0);
    assert_eq!(
        produce(&mut stream, 2, batch(pid, epoch, 0, &["a", "b"])),
        (0, 0)
    );
    assert_eq!(
        produce(&mut stream, 3, batch(pid, epoch, 2, &["c"])),
        (0, 2)
    );
    // The first batch again (a retry whose answer was lost): its offsets,
    // not a second copy.
    assert_eq!(
        produce(&mut stream, 4, batch(pid, epoch, 0, &["a", "b"])),
        (0, 0)
    );
    // A gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    assert_eq!(produce(&mut stream, 5, batch(pid, epoch, 9, &["z"])).0, 45);
    let stored: Vec<Vec<u8>> = common::stored_records(&server.options(), "resend")
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(stored, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
}
