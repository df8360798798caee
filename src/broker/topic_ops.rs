//! Protocol-neutral topic administration for every front end: create
//! (with the hub's topic and partition limits, or only checked), delete,
//! and a topic's settings with their defaults. Errors are [`BrokerError`];
//! the native handlers and the Kafka listener translate them.

use std::sync::Arc;

use super::ops::BrokerError;
use super::Broker;
use crate::config::PARTITIONS_MAX;
use crate::storage::topic_config::{TopicConfig, KNOWN};
use crate::storage::{StorageError, Topic};
use crate::wire;

/// One topic setting as a describe shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSetting {
    pub name: &'static str,
    pub value: String,
    /// Not set on the topic: the hub's default.
    pub is_default: bool,
    pub documentation: &'static str,
}

impl Broker {
    /// Creates `name` with `partitions` and settings `configs` (sorted
    /// here), within the hub's limits; with `validate_only`, checks all of
    /// that (but not a concurrent create) and creates nothing.
    pub async fn create_topic_checked(
        &self,
        name: &str,
        partitions: u32,
        mut configs: Vec<(String, String)>,
        validate_only: bool,
    ) -> Result<Option<Arc<Topic>>, BrokerError> {
        if !wire::is_valid_topic_name(name) {
            return Err(BrokerError::InvalidTopicName(name.to_string()));
        }
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(BrokerError::InvalidRequest(format!(
                "partitions must be between 1 and {PARTITIONS_MAX}"
            )));
        }
        configs.sort();
        if validate_only {
            TopicConfig::parse(&configs)
                .map_err(|e| BrokerError::Storage(StorageError::InvalidConfig(e)))?;
            if self.storage.topic(name).is_some() {
                return Err(BrokerError::Storage(StorageError::TopicExists(
                    name.to_string(),
                )));
            }
            return Ok(None);
        }
        let topic = self
            .create_within_limits(name, partitions, configs)
            .await
            .map_err(|e| match e {
                Ok((_, message)) => BrokerError::InvalidRequest(message),
                Err(e) => BrokerError::Storage(e),
            })?;
        log::info!("created topic {name} with {partitions} partitions");
        Ok(Some(topic))
    }

    /// Deletes a topic and forgets its traffic counters.
    pub async fn delete_topic_named(&self, name: &str) -> Result<(), BrokerError> {
        let storage = self.storage.clone();
        let owned = name.to_string();
        smol::unblock(move || storage.delete_topic(&owned))
            .await
            .map_err(BrokerError::Storage)?;
        self.stats.forget_topic(name);
        log::info!("deleted topic {name}");
        Ok(())
    }

    /// Every setting of `topic` (set or default), in the order of
    /// [`KNOWN`].
    pub fn topic_settings(&self, topic: &Topic) -> Vec<TopicSetting> {
        KNOWN
            .iter()
            .map(|&(name, default, documentation)| {
                let set = topic.meta.configs.iter().find(|(n, _)| n == name);
                TopicSetting {
                    name,
                    value: set.map_or_else(|| default.to_string(), |(_, v)| v.clone()),
                    is_default: set.is_none(),
                    documentation,
                }
            })
            .collect()
    }
}
