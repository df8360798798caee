//! ApiVersions: which APIs and versions the listener speaks ([`APIS`]),
//! and the answer that tells clients so.
//!
//! The ApiVersions response header is always v0 (also for v3+, whose
//! request header is flexible). A client asking with a version above ours
//! gets a v0 answer with UNSUPPORTED_VERSION and our list, and then asks
//! again with a version it finds there (KIP-511). Produce is advertised
//! from v0 although v0–v2 (message sets v0/v1) are refused per partition:
//! librdkafka turns compression off against a broker whose Produce starts
//! above v0.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::conn::{frame, frame_with_header, Out};

/// Every API the listener answers, with its lowest and highest version.
pub const APIS: [(ApiKey, i16, i16); 18] = [
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 4, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 3),
    (ApiKey::LeaveGroup, 0, 3),
    (ApiKey::SyncGroup, 0, 3),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::ListGroups, 0, 4),
];

/// The lowest Produce version served (record batch v2); v0–v2 close the
/// connection with a log line naming the client's version.
pub const PRODUCE_VERSION_MIN: i16 = 3;

/// Whether `api` at `version` is in [`APIS`].
pub fn supported(api: Option<ApiKey>, version: i16) -> bool {
    api.is_some_and(|api| {
        APIS.iter()
            .any(|(key, min, max)| *key == api && (*min..=*max).contains(&version))
    })
}

fn answer(error_code: i16) -> ApiVersionsResponse {
    let mut answer = ApiVersionsResponse::default();
    answer.error_code = error_code;
    answer.api_keys = APIS
        .iter()
        .map(|(key, min, max)| {
            let mut api = ApiVersion::default();
            api.api_key = *key as i16;
            api.min_version = *min;
            api.max_version = *max;
            api
        })
        .collect();
    answer
}

/// The answer to ApiVersions at a supported `version`.
pub fn api_versions(correlation_id: i32, version: i16) -> Out {
    frame(correlation_id, version, &answer(0))
}

/// The v0 answer to ApiVersions at a version we do not speak.
pub fn unsupported_version(correlation_id: i32) -> Out {
    frame_with_header(
        correlation_id,
        0,
        0,
        &answer(ResponseError::UnsupportedVersion.code()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_within_what_the_codec_speaks() {
        for (key, min, max) in APIS {
            let range = key.valid_versions();
            // Produce v0–v2 are advertised but refused (see the file's doc).
            let min = if key == ApiKey::Produce {
                PRODUCE_VERSION_MIN
            } else {
                min
            };
            assert!(range.min <= min && max <= range.max, "{key:?}");
            assert!(supported(Some(key), min) && supported(Some(key), max));
            assert!(!supported(Some(key), max + 1));
        }
        assert!(!supported(None, 0));
    }

    #[test]
    fn an_unsupported_version_gets_a_v0_answer_listing_the_apis() {
        let Out::Frame(bytes) = unsupported_version(7) else {
            panic!("no frame");
        };
        // Length, correlation id (header v0), error code, array of keys.
        assert_eq!(&bytes[4..8], &7i32.to_be_bytes());
        assert_eq!(&bytes[8..10], &35i16.to_be_bytes());
        assert_eq!(&bytes[10..14], &(APIS.len() as i32).to_be_bytes());
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
    }
}
