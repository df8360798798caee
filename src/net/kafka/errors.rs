//! eddy's errors as Kafka error codes.
//!
//! One table: the native protocol's [`ErrorCode`] (which every
//! [`BrokerError`] has) → Kafka's code. Where Kafka has no equivalent the
//! nearest code a client handles sensibly is chosen: a full disk is
//! KAFKA_STORAGE_ERROR (retriable), a topic written only by a mirror is
//! INVALID_REQUEST (with the explanation where the version carries a
//! message). Pure.

use kafka_protocol::error::ResponseError as K;

use crate::broker::ops::BrokerError;
use crate::wire::ErrorCode;

/// Kafka's code for eddy's `code`.
pub fn kafka_code(code: ErrorCode) -> i16 {
    let kafka = match code {
        ErrorCode::UnknownTopic | ErrorCode::UnknownPartition => K::UnknownTopicOrPartition,
        ErrorCode::TopicExists => K::TopicAlreadyExists,
        ErrorCode::InvalidTopicName => K::InvalidTopicException,
        ErrorCode::InvalidConfig => K::InvalidConfig,
        ErrorCode::RecordTooLarge => K::MessageTooLarge,
        ErrorCode::CorruptBatch => K::CorruptMessage,
        ErrorCode::OffsetOutOfRange => K::OffsetOutOfRange,
        ErrorCode::DiskFull | ErrorCode::StorageError => K::KafkaStorageError,
        ErrorCode::NotAuthorized => K::TopicAuthorizationFailed,
        ErrorCode::Timeout => K::RequestTimedOut,
        ErrorCode::RebalanceInProgress => K::RebalanceInProgress,
        ErrorCode::ShuttingDown => K::NotLeaderOrFollower,
        ErrorCode::NotSupported | ErrorCode::UnsupportedVersion => K::UnsupportedVersion,
        ErrorCode::UnknownMemberId => K::UnknownMemberId,
        ErrorCode::FencedMemberEpoch | ErrorCode::StaleMemberEpoch => K::IllegalGeneration,
        ErrorCode::GroupNotEmpty => K::NonEmptyGroup,
        ErrorCode::UnknownGroup => K::GroupIdNotFound,
        ErrorCode::OutOfOrderSequence => K::OutOfOrderSequenceNumber,
        ErrorCode::DuplicateSequence => K::DuplicateSequenceNumber,
        ErrorCode::ProducerFenced => K::InvalidProducerEpoch,
        ErrorCode::UnknownProducer => K::UnknownProducerId,
        ErrorCode::InvalidFrame
        | ErrorCode::FrameTooLarge
        | ErrorCode::HelloRequired
        | ErrorCode::InvalidRequest
        | ErrorCode::TooManyConnections
        | ErrorCode::MirrorConflict => K::InvalidRequest,
    };
    kafka.code()
}

/// Kafka's code for a broker error.
pub fn broker_code(e: &BrokerError) -> i16 {
    kafka_code(e.code())
}

/// Kafka's code for a broker error of a group call: refusals name the
/// group, a group used by native members is INCONSISTENT_GROUP_PROTOCOL,
/// an invalid group id INVALID_GROUP_ID.
pub fn group_code(e: &BrokerError) -> i16 {
    let kafka = match e {
        BrokerError::NotAuthorized { .. } => K::GroupAuthorizationFailed,
        BrokerError::GroupProtocolMismatch { .. } => K::InconsistentGroupProtocol,
        BrokerError::Group {
            code: ErrorCode::InvalidRequest,
            message,
        } if message.contains("group id") => K::InvalidGroupId,
        e => return broker_code(e),
    };
    kafka.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_clients_act_on_map_to_kafkas() {
        assert_eq!(kafka_code(ErrorCode::UnknownTopic), 3);
        assert_eq!(kafka_code(ErrorCode::OffsetOutOfRange), 1);
        assert_eq!(kafka_code(ErrorCode::NotAuthorized), 29);
        assert_eq!(kafka_code(ErrorCode::CorruptBatch), 2);
        assert_eq!(kafka_code(ErrorCode::DuplicateSequence), 46);
    }
}
