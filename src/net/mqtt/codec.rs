//! MQTT packets in and out: framing with the size bound, and translation
//! between the `mqtt-codec-kit` crate's 3.1.1 and 5.0 packet types and the
//! listener's own version-neutral [`Inbound`] / [`Outbound`].
//!
//! [`read_packet`] reads the fixed header, checks the remaining length
//! against the packet bound *before* allocating the body, then reads
//! exactly that many bytes; the crate decodes only bytes already bounded.
//! Reason codes are MQTT 5's numbers; for 3.1.1 they map to its return
//! codes (CONNACK, SUBACK) or have no encoding (PUBACK: the session closes
//! the connection instead).
//!
//! This file does no I/O beyond reading one packet and knows nothing of
//! sessions, routes or the broker.

use std::io::Cursor;

use mqtt_codec_kit::common::qos::{QoSWithPacketIdentifier, QualityOfService};
use mqtt_codec_kit::common::{Decodable, Encodable, TopicName};
use mqtt_codec_kit::{v4, v5};
use smol::io::{AsyncRead, AsyncReadExt};

/// MQTT 3.1.1's protocol level.
pub const LEVEL_V311: u8 = 4;
/// MQTT 5.0's protocol level.
pub const LEVEL_V5: u8 = 5;

/// Reason codes (MQTT 5 numbering) the listener sends.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
}

/// Why a packet could not be read or decoded. Any of them closes the
/// connection (MQTT: a malformed packet ends the network connection).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("connection closed")]
    Closed,
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("remaining length encoded in more than 4 bytes")]
    BadLength,
    #[error("packet of {len} bytes exceeds the limit of {max} (mqtt.packet_bytes_max)")]
    TooLarge { len: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("protocol level {0} is not MQTT 3.1.1 (4) or 5 (5)")]
    UnsupportedLevel(u8),
    #[error("{0} packets are not accepted from a client")]
    Unexpected(&'static str),
}

/// Which protocol version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// MQTT 5 properties of a message that travel as record headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProps {
    pub content_type: Option<String>,
    pub payload_format: Option<u8>,
    pub user: Vec<(String, String)>,
    pub message_expiry_s: Option<u32>,
    pub topic_alias: Option<u16>,
}

/// An application message (PUBLISH, or a CONNECT's will).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub props: MessageProps,
}

/// What a CONNECT asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    /// 3.1.1 clean session, or 5's clean start.
    pub clean_start: bool,
    pub keep_alive_s: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will: Option<Message>,
    /// MQTT 5 session expiry; 3.1.1: 0 with clean session, "never" without.
    pub session_expiry_s: u32,
    /// MQTT 5: the most packets the client takes unacknowledged.
    pub receive_maximum: Option<u16>,
    /// MQTT 5: the largest packet the client takes.
    pub packet_bytes_max: Option<u32>,
}

/// A packet from a client, after CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Connect(Box<Connect>),
    Publish {
        pkid: u16,
        message: Message,
    },
    Puback(u16),
    Pubrec(u16),
    Pubrel(u16),
    Pubcomp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    Pingreq,
    /// `with_will`: MQTT 5's 0x04, "disconnect with will message".
    Disconnect {
        with_will: bool,
    },
}

/// A packet to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Connack {
        session_present: bool,
        code: u8,
        receive_maximum: u16,
        packet_bytes_max: u32,
        keep_alive_s: Option<u16>,
        /// MQTT 5: the id the server gave a client that sent none.
        assigned_client_id: Option<String>,
    },
    Puback {
        pkid: u16,
        code: u8,
    },
    Pubrec {
        pkid: u16,
        code: u8,
    },
    Pubcomp {
        pkid: u16,
    },
    Suback {
        pkid: u16,
        codes: Vec<u8>,
    },
    Unsuback {
        pkid: u16,
        count: usize,
    },
    Pingresp,
    Publish {
        pkid: u16,
        message: Message,
    },
    Disconnect {
        code: u8,
    },
}

/// Reads one whole packet (fixed header included) into `buf`; the body is
/// allocated only after its length was checked against `max_bytes`.
pub async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max_bytes: usize,
) -> Result<(), CodecError> {
    buf.clear();
    let mut byte = [0u8; 1];
    if reader.read(&mut byte).await? == 0 {
        return Err(CodecError::Closed);
    }
    buf.push(byte[0]);
    let mut len = 0usize;
    for i in 0..4 {
        reader.read_exact(&mut byte).await?;
        buf.push(byte[0]);
        len |= usize::from(byte[0] & 0x7F) << (7 * i);
        if byte[0] & 0x80 == 0 {
            let total = buf.len() + len;
            if total > max_bytes {
                return Err(CodecError::TooLarge {
                    len: total,
                    max: max_bytes,
                });
            }
            let start = buf.len();
            buf.resize(total, 0);
            reader.read_exact(&mut buf[start..]).await?;
            return Ok(());
        }
    }
    Err(CodecError::BadLength)
}

/// The protocol level a CONNECT packet names (its byte after the
/// protocol name), to pick the decoder.
pub fn connect_level(packet: &[u8]) -> Result<u8, CodecError> {
    if packet.first().map(|b| b >> 4) != Some(1) {
        return Err(CodecError::Malformed(
            "the first packet must be CONNECT".into(),
        ));
    }
    let header = 1
        + packet[1..]
            .iter()
            .position(|b| b & 0x80 == 0)
            .ok_or(CodecError::BadLength)?
        + 1;
    let name_len = packet
        .get(header..header + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| CodecError::Malformed("CONNECT too short".into()))?;
    packet
        .get(header + 2 + name_len)
        .copied()
        .ok_or_else(|| CodecError::Malformed("CONNECT too short".into()))
}

/// Decodes a bounded packet of `version` (`None`: the first, a CONNECT of
/// either version).
pub fn decode(version: Option<Version>, packet: &[u8]) -> Result<Inbound, CodecError> {
    let version = match version {
        Some(v) => v,
        None => match connect_level(packet)? {
            LEVEL_V311 => Version::V311,
            LEVEL_V5 => Version::V5,
            other => return Err(CodecError::UnsupportedLevel(other)),
        },
    };
    let mut cursor = Cursor::new(packet);
    match version {
        Version::V311 => {
            let p = v4::packet::VariablePacket::decode(&mut cursor)
                .map_err(|e| CodecError::Malformed(e.to_string()))?;
            super::codec_v4::inbound(p)
        }
        Version::V5 => {
            let p = v5::packet::VariablePacket::decode(&mut cursor)
                .map_err(|e| CodecError::Malformed(e.to_string()))?;
            super::codec_v5::inbound(p)
        }
    }
}

/// Appends `packet`, encoded for `version`, to `out`.
pub fn encode(version: Version, packet: Outbound, out: &mut Vec<u8>) {
    let written = match version {
        Version::V311 => super::codec_v4::outbound(packet).encode(out),
        Version::V5 => super::codec_v5::outbound(packet).encode(out),
    };
    // Writing into a Vec cannot fail; the values were checked when built.
    debug_assert!(written.is_ok(), "encoding into a Vec failed");
}

pub(super) fn qos_of(qos: QualityOfService) -> u8 {
    match qos {
        QualityOfService::Level0 => 0,
        QualityOfService::Level1 => 1,
        QualityOfService::Level2 => 2,
    }
}

pub(super) fn qos_with_pkid(qos: u8, pkid: u16) -> QoSWithPacketIdentifier {
    match qos {
        0 => QoSWithPacketIdentifier::Level0,
        1 => QoSWithPacketIdentifier::Level1(pkid),
        _ => QoSWithPacketIdentifier::Level2(pkid),
    }
}

pub(super) fn split_qos(qos: QoSWithPacketIdentifier) -> (u8, u16) {
    let (qos, pkid) = qos.split();
    (qos_of(qos), pkid.unwrap_or(0))
}

/// A topic name the crate accepts (it was a valid name when it came in).
pub(super) fn topic_name(topic: &str) -> TopicName {
    TopicName::new(topic).unwrap_or_else(|_| TopicName::new("invalid").expect("valid name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
        let mut buf = Vec::new();
        let mut reader = bytes;
        smol::block_on(read_packet(&mut reader, &mut buf, max)).map(|()| buf)
    }

    #[test]
    fn oversized_packets_are_refused_before_allocating() {
        // PUBLISH announcing 268,435,455 bytes (the largest MQTT length).
        let huge = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
        match read_all(&huge, 1 << 10) {
            Err(CodecError::TooLarge { len, max }) => {
                assert_eq!(len, 268_435_455 + 5);
                assert_eq!(max, 1 << 10);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(
            read_all(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], 1 << 20),
            Err(CodecError::BadLength)
        ));
    }

    #[test]
    fn a_v311_connect_and_publish_round_trip_to_neutral_types() {
        let mut connect = v4::packet::ConnectPacket::new("dev-1");
        connect.set_keep_alive(30);
        connect.set_clean_session(false);
        let mut bytes = Vec::new();
        connect.encode(&mut bytes).unwrap();
        let packet = read_all(&bytes, 1 << 10).unwrap();
        let Inbound::Connect(c) = decode(None, &packet).unwrap() else {
            panic!("not a connect");
        };
        assert_eq!(c.version, Version::V311);
        assert_eq!(c.client_id, "dev-1");
        assert!(!c.clean_start);
        assert_eq!(c.keep_alive_s, 30);

        let publish = v4::packet::PublishPacket::new(
            topic_name("plant/a/b/temp"),
            QoSWithPacketIdentifier::Level1(7),
            b"21.5".to_vec(),
        );
        let mut bytes = Vec::new();
        publish.encode(&mut bytes).unwrap();
        let Inbound::Publish { pkid, message } = decode(Some(Version::V311), &bytes).unwrap()
        else {
            panic!("not a publish");
        };
        assert_eq!((pkid, message.qos), (7, 1));
        assert_eq!(message.topic, "plant/a/b/temp");
        assert_eq!(message.payload, b"21.5");
    }

    #[test]
    fn a_v5_publish_keeps_its_properties() {
        let mut connect = v5::packet::ConnectPacket::new("dev-5");
        let mut props = v5::packet::connect::ConnectProperties::default();
        props.set_receive_maximum(Some(10));
        props.set_session_expiry_interval(Some(60));
        connect.set_properties(props);
        let mut bytes = Vec::new();
        connect.encode(&mut bytes).unwrap();
        let Inbound::Connect(c) = decode(None, &bytes).unwrap() else {
            panic!("not a connect");
        };
        assert_eq!(c.version, Version::V5);
        assert_eq!(c.receive_maximum, Some(10));
        assert_eq!(c.session_expiry_s, 60);

        let mut publish = v5::packet::PublishPacket::new(
            topic_name("a/b"),
            QoSWithPacketIdentifier::Level0,
            b"x".to_vec(),
        );
        let mut props = v5::control::variable_header::PublishProperties::default();
        props.set_content_type(Some("text/plain".into()));
        props.add_user_property("site", "north");
        publish.set_properties(props);
        let mut bytes = Vec::new();
        publish.encode(&mut bytes).unwrap();
        let Inbound::Publish { message, .. } = decode(Some(Version::V5), &bytes).unwrap() else {
            panic!("not a publish");
        };
        assert_eq!(message.props.content_type.as_deref(), Some("text/plain"));
        assert_eq!(message.props.user, vec![("site".into(), "north".into())]);
    }

    /// The crate's ConnackProperties leaves the shared-subscription
    /// property out of its length (mqtt-codec-kit 1.0.5), which clients
    /// reject as a protocol error: the listener must not set it, and every
    /// CONNACK's property length must match its bytes.
    #[test]
    fn a_v5_connack_states_its_true_lengths() {
        let mut out = Vec::new();
        let connack = Outbound::Connack {
            session_present: true,
            code: reason::SUCCESS,
            receive_maximum: 64,
            packet_bytes_max: 1 << 18,
            keep_alive_s: Some(600),
            assigned_client_id: Some("auto-1".into()),
        };
        encode(Version::V5, connack, &mut out);
        // Fixed header (1 + 1-byte length), flags, reason, property length.
        assert_eq!(usize::from(out[1]), out.len() - 2, "{out:02x?}");
        assert_eq!(usize::from(out[4]), out.len() - 5, "{out:02x?}");
        let mut reader = &out[..];
        let decoded = v5::packet::VariablePacket::decode(&mut reader).unwrap();
        let v5::packet::VariablePacket::ConnackPacket(c) = decoded else {
            panic!("not a CONNACK");
        };
        assert_eq!(c.properties().receive_maximum(), Some(64));
        assert_eq!(c.properties().server_keep_alive(), Some(600));
        assert_eq!(
            c.properties().assigned_client_identifier().as_deref(),
            Some("auto-1")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2_000 {
            let len = rng.usize(0..40);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if let Some(first) = bytes.first_mut() {
                *first = (rng.u8(1..15) << 4) | (*first & 0x0F);
            }
            let _ = decode(Some(Version::V311), &bytes);
            let _ = decode(Some(Version::V5), &bytes);
            let _ = decode(None, &bytes);
        }
    }
}
