//! MQTT 5.0: the crate's packet types ⇄ the listener's neutral
//! [`Inbound`] / [`Outbound`], properties included (content type, payload
//! format, user properties, message expiry, topic alias, receive maximum,
//! maximum packet size, session expiry). Pure translation; no I/O.

use mqtt_codec_kit::v5::control::variable_header::{
    ConnackProperties, ConnectReasonCode, DisconnectReasonCode, PubackReasonCode,
    PubcompReasonCode, PublishProperties, PubrecReasonCode,
};
use mqtt_codec_kit::v5::packet::suback::SubscribeReasonCode;
use mqtt_codec_kit::v5::packet::unsuback::UnsubscribeReasonCode;
use mqtt_codec_kit::v5::packet::*;

use super::codec::{
    qos_of, qos_with_pkid, split_qos, topic_name, CodecError, Connect, Inbound, Message,
    MessageProps, Outbound, Version,
};

/// MQTT 5's DISCONNECT reason "disconnect with will message".
const DISCONNECT_WITH_WILL: u8 = 0x04;

fn props_of(p: &PublishProperties) -> MessageProps {
    MessageProps {
        content_type: p.content_type().clone(),
        payload_format: p.payload_format_indicator(),
        user: p.user_properties().to_vec(),
        message_expiry_s: p.message_expiry_interval(),
        topic_alias: p.topic_alias(),
    }
}

/// A decoded client packet in neutral terms.
pub(super) fn inbound(packet: VariablePacket) -> Result<Inbound, CodecError> {
    Ok(match packet {
        VariablePacket::ConnectPacket(c) => {
            let props = c.properties();
            Inbound::Connect(Box::new(Connect {
                version: Version::V5,
                client_id: c.client_identifier().to_string(),
                clean_start: c.clean_session(),
                keep_alive_s: c.keep_alive(),
                username: c.username().map(str::to_string),
                password: c.password().map(str::to_string),
                will: c.will().map(|w| Message {
                    topic: w.topic().to_string(),
                    payload: w.message().0.clone(),
                    qos: qos_of(w.qos()),
                    retain: w.retain(),
                    props: MessageProps {
                        content_type: w.properties().content_type().clone(),
                        payload_format: w.properties().payload_format_indicator(),
                        user: w.properties().user_properties().to_vec(),
                        message_expiry_s: w.properties().message_expiry_interval(),
                        topic_alias: None,
                    },
                }),
                session_expiry_s: props.session_expiry_interval().unwrap_or(0),
                receive_maximum: props.receive_maximum(),
                packet_bytes_max: props.max_packet_size(),
            }))
        }
        VariablePacket::PublishPacket(p) => {
            let (qos, pkid) = split_qos(p.qos());
            Inbound::Publish {
                pkid,
                message: Message {
                    topic: p.topic_name().to_string(),
                    payload: p.payload().to_vec(),
                    qos,
                    retain: p.retain(),
                    props: props_of(p.properties()),
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
                .map(|(f, o)| (f.to_string(), qos_of(o.qos())))
                .collect(),
        },
        VariablePacket::UnsubscribePacket(u) => Inbound::Unsubscribe {
            pkid: u.packet_identifier(),
            filters: u.subscribes().iter().map(|f| f.to_string()).collect(),
        },
        VariablePacket::PingreqPacket(_) => Inbound::Pingreq,
        VariablePacket::DisconnectPacket(d) => Inbound::Disconnect {
            with_will: u8::from(d.reason_code()) == DISCONNECT_WITH_WILL,
        },
        VariablePacket::AuthPacket(_) => return Err(CodecError::Unexpected("AUTH")),
        VariablePacket::ConnackPacket(_) => return Err(CodecError::Unexpected("CONNACK")),
        VariablePacket::SubackPacket(_) => return Err(CodecError::Unexpected("SUBACK")),
        VariablePacket::UnsubackPacket(_) => return Err(CodecError::Unexpected("UNSUBACK")),
        VariablePacket::PingrespPacket(_) => return Err(CodecError::Unexpected("PINGRESP")),
    })
}

/// A server packet, encodable.
pub(super) fn outbound(packet: Outbound) -> VariablePacket {
    match packet {
        Outbound::Connack {
            session_present,
            code,
            receive_maximum,
            packet_bytes_max,
            keep_alive_s,
            assigned_client_id,
        } => {
            let code =
                ConnectReasonCode::try_from(code).unwrap_or(ConnectReasonCode::UnspecifiedError);
            let accepted = code == ConnectReasonCode::Success;
            let mut p = ConnackPacket::new(session_present && accepted, code);
            if !accepted {
                // A refusal says only why (a Maximum Packet Size of 0, say,
                // would itself be a protocol error to the client).
                return p.into();
            }
            let mut props = ConnackProperties::default();
            props.set_receive_maximum(Some(receive_maximum));
            props.set_max_packet_size(Some(packet_bytes_max));
            props.set_server_keep_alive(keep_alive_s);
            props.set_assigned_client_identifier(assigned_client_id);
            // Shared subscriptions are not supported (README; SUBACK says
            // so per filter). Not announced here: mqtt-codec-kit 1.0.5
            // leaves that property out of the properties' length.
            props.set_subscription_identifiers_available(Some(0));
            props.set_topic_alias_max(Some(super::session::TOPIC_ALIASES_MAX));
            p.set_properties(props);
            p.into()
        }
        Outbound::Puback { pkid, code } => PubackPacket::new(
            pkid,
            PubackReasonCode::try_from(code).unwrap_or(PubackReasonCode::UnspecifiedError),
        )
        .into(),
        Outbound::Pubrec { pkid, code } => PubrecPacket::new(
            pkid,
            PubrecReasonCode::try_from(code).unwrap_or(PubrecReasonCode::UnspecifiedError),
        )
        .into(),
        Outbound::Pubcomp { pkid } => PubcompPacket::new(pkid, PubcompReasonCode::Success).into(),
        Outbound::Suback { pkid, codes } => SubackPacket::new(
            pkid,
            codes
                .into_iter()
                .map(|c| {
                    SubscribeReasonCode::try_from(c)
                        .unwrap_or(SubscribeReasonCode::UnspecifiedError)
                })
                .collect(),
        )
        .into(),
        Outbound::Unsuback { pkid, count } => {
            UnsubackPacket::new(pkid, vec![UnsubscribeReasonCode::Success; count]).into()
        }
        Outbound::Pingresp => PingrespPacket::new().into(),
        Outbound::Publish { pkid, message } => {
            let mut p = PublishPacket::new(
                topic_name(&message.topic),
                qos_with_pkid(message.qos, pkid),
                message.payload,
            );
            p.set_retain(message.retain);
            let m = message.props;
            if m.content_type.is_some() || m.payload_format.is_some() || !m.user.is_empty() {
                let mut props = PublishProperties::default();
                props.set_content_type(m.content_type);
                props.set_payload_format_indicator(m.payload_format);
                for (k, v) in m.user {
                    props.add_user_property(k, v);
                }
                p.set_properties(props);
            }
            p.into()
        }
        Outbound::Disconnect { code } => DisconnectPacket::new(
            DisconnectReasonCode::try_from(code).unwrap_or(DisconnectReasonCode::UnspecifiedError),
        )
        .into(),
    }
}
