//! Protocol-neutral helpers for front ends that do not send native
//! requests (MQTT): may this identity produce to or consume from a topic
//! ([`Broker::check_topic_access`]), and a topic the front end keeps for
//! itself, created with its settings ([`Broker::ensure_topic`]).
//!
//! The decision is the ACL's ([`crate::acl`]), the same rules the native
//! listener applies through [`Broker::handle_as`]; with ACLs off everything
//! is allowed. The front end answers a refusal in its protocol and logs it
//! (rate-bounded); nothing here encodes or touches a socket.

use crate::acl::{Operation, Resource};

use super::Broker;

impl Broker {
    /// `Ok` when `identity` may do `op` on `topic`, else the ACL's
    /// explanation of the refusal.
    pub fn check_topic_access(
        &self,
        identity: &str,
        op: Operation,
        topic: &str,
    ) -> Result<(), String> {
        let Some(store) = &self.acl else {
            return Ok(());
        };
        let acl = store.current();
        let resource = Resource::Topic(topic);
        if acl.decide(identity, op, resource).is_allowed() {
            return Ok(());
        }
        Err(acl.explain(identity, op, resource))
    }
}

impl Broker {
    /// The topic `name`, created with `partitions` and `configs` (topic
    /// settings, e.g. `cleanup.policy=compact`) when it does not exist —
    /// whatever `auto_create_topics` says: for topics a front end keeps for
    /// itself (MQTT's retained messages).
    pub async fn ensure_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: Vec<(String, String)>,
    ) -> Result<std::sync::Arc<crate::storage::Topic>, super::BrokerError> {
        if let Some(topic) = self.storage.topic(name) {
            return Ok(topic);
        }
        let created = self.create_within_limits(name, partitions, configs).await;
        match created {
            Ok(topic) => {
                log::info!("created topic {name}");
                Ok(topic)
            }
            Err(Err(crate::storage::StorageError::TopicExists(_))) => self.topic_named(name),
            Err(Err(e)) => Err(super::BrokerError::Storage(e)),
            Err(Ok((_, refused))) => Err(super::BrokerError::InvalidRequest(refused)),
        }
    }
}
