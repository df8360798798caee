//! MQTT 3.1.1: the crate's packet types ⇄ the listener's neutral
//! [`Inbound`] / [`Outbound`]. Pure translation; no I/O.

use mqtt_codec_kit::v4::control::variable_header::ConnectReturnCode;
use mqtt_codec_kit::v4::packet::suback::SubscribeReturnCode;
use mqtt_codec_kit::v4::packet::*;

use super::codec::{
    qos_of, qos_with_pkid, reason, split_qos, topic_name, CodecError, Connect, Inbound, Message,
    MessageProps, Outbound, Version,
};

/// A decoded client packet in neutral terms.
pub(super) fn inbound(packet: VariablePacket) -> Result<Inbound, CodecError> {
    Ok(match packet {
        VariablePacket::ConnectPacket(c) => Inbound::Connect(Box::new(Connect {
            version: Version::V311,
            client_id: c.client_identifier().to_string(),
            clean_start: c.clean_session(),
            keep_alive_s: c.keep_alive(),
            username: c.username().map(str::to_string),
            password: c.password().map(str::to_string),
            will: c.will().map(|w| Message {
                topic: w.topic().to_string(),
                payload: w.message().0.clone(),
                qos: qos_of(c.will_qos()),
                retain: c.will_retain(),
                props: MessageProps::default(),
            }),
            session_expiry_s: if c.clean_session() { 0 } else { u32::MAX },
            receive_maximum: None,
            packet_bytes_max: None,
        })),
        VariablePacket::PublishPacket(p) => {
            let (qos, pkid) = split_qos(p.qos());
            Inbound::Publish {
                pkid,
                message: Message {
                    topic: p.topic_name().to_string(),
                    payload: p.payload().to_vec(),
                    qos,
                    retain: p.retain(),
                    props: MessageProps::default(),
                },
            }
        }
        VariablePacket::PubackPacket(p) => Inbound::Puback(p.packet_identifier()),
        VariablePacket::PubrecPacket(p) => Inbound::Pubrec(p.packet_identifier()),
        VariablePacket::PubrelPacket(p) => Inbound::Pubrel(p.packet_identifier()),
        VariablePacket::PubcompPacket(p) => Inbound::Pubcomp(p.packet_identifier()),
        VariablePacket::SubscribePacket(s) => Inbound::Subscribe {
            pkid: s.packet_identifier(),
            filters: s
                .subscribes()
                .iter()
                .map(|(f, q)| (f.to_string(), qos_of(*q)))
                .collect(),
        },
        VariablePacket::UnsubscribePacket(u) => Inbound::Unsubscribe {
            pkid: u.packet_identifier(),
            filters: u.topic_filters().iter().map(|f| f.to_string()).collect(),
        },
        VariablePacket::PingreqPacket(_) => Inbound::Pingreq,
        VariablePacket::DisconnectPacket(_) => Inbound::Disconnect { with_will: false },
        VariablePacket::ConnackPacket(_) => return Err(CodecError::Unexpected("CONNACK")),
        VariablePacket::SubackPacket(_) => return Err(CodecError::Unexpected("SUBACK")),
        VariablePacket::UnsubackPacket(_) => return Err(CodecError::Unexpected("UNSUBACK")),
        VariablePacket::PingrespPacket(_) => return Err(CodecError::Unexpected("PINGRESP")),
    })
}

/// 3.1.1's CONNACK return code for an MQTT 5 reason code.
fn return_code(code: u8) -> ConnectReturnCode {
    match code {
        reason::SUCCESS => ConnectReturnCode::ConnectionAccepted,
        reason::UNSUPPORTED_PROTOCOL_VERSION => ConnectReturnCode::UnacceptableProtocolVersion,
        reason::CLIENT_IDENTIFIER_NOT_VALID => ConnectReturnCode::IdentifierRejected,
        reason::BAD_USER_NAME_OR_PASSWORD => ConnectReturnCode::BadUserNameOrPassword,
        reason::NOT_AUTHORIZED => ConnectReturnCode::NotAuthorized,
        _ => ConnectReturnCode::ServiceUnavailable,
    }
}

/// A server packet, encodable. PUBACK/PUBREC have no reason code in
/// 3.1.1 (a failure closes the connection instead, the session's job).
pub(super) fn outbound(packet: Outbound) -> VariablePacket {
    match packet {
        Outbound::Connack {
            session_present,
            code,
            ..
        } => ConnackPacket::new(session_present && code == 0, return_code(code)).into(),
        Outbound::Puback { pkid, .. } => PubackPacket::new(pkid).into(),
        Outbound::Pubrec { pkid, .. } => PubrecPacket::new(pkid).into(),
        Outbound::Pubcomp { pkid } => PubcompPacket::new(pkid).into(),
        Outbound::Suback { pkid, codes } => SubackPacket::new(
            pkid,
            codes
                .into_iter()
                .map(|c| match c {
                    0 => SubscribeReturnCode::MaximumQoSLevel0,
                    1 => SubscribeReturnCode::MaximumQoSLevel1,
                    2 => SubscribeReturnCode::MaximumQoSLevel2,
                    _ => SubscribeReturnCode::Failure,
                })
                .collect(),
        )
        .into(),
        Outbound::Unsuback { pkid, .. } => UnsubackPacket::new(pkid).into(),
        Outbound::Pingresp => PingrespPacket::new().into(),
        Outbound::Publish { pkid, message } => {
            let mut p = PublishPacket::new(
                topic_name(&message.topic),
                qos_with_pkid(message.qos, pkid),
                message.payload,
            );
            p.set_retain(message.retain);
            p.into()
        }
        // 3.1.1 has no server DISCONNECT: the connection is just closed.
        Outbound::Disconnect { .. } => PingrespPacket::new().into(),
    }
}
