//! Authorization: who is calling, and whether the ACL lets them make a
//! request ([`Broker::handle_as`]).
//!
//! The connection passes its [`Caller`] (the identity its certificate
//! proved, and its address for logs) with every request. With ACLs off
//! every request goes through. With ACLs on, each request is mapped to the
//! operations and resources it touches (the table in [`crate::acl`]) and
//! refused with `NotAuthorized` unless all of them are allowed; each
//! refusal is one log line, rate-bounded ([`crate::log_limit`]) so that a
//! device hammering a forbidden topic cannot fill the disk with logs.
//! Listings (`Metadata` of all topics, `ListGroups`) are filtered to what
//! the caller may see instead of refused.
//!
//! This file decides and refuses; it does not parse the ACL file
//! ([`crate::acl`]) or touch storage.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{error_frame, AnswerBudget, Broker, Reply};
use crate::acl::{Acl, Operation, Resource};
use crate::wire::{ErrorCode, FetchOffsets, GroupRef, Request};

/// Who sent a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity the connection proved ([`crate::tls::identity_of`]), or
    /// [`crate::tls::ANONYMOUS_IDENTITY`].
    pub identity: Arc<str>,
    /// Where it connected from (for logs).
    pub peer: SocketAddr,
    /// The connection's bound on pending answers (fetches reserve from it).
    pub answers: Arc<AnswerBudget>,
}

/// A refused request: what was asked and why not.
struct Refusal {
    op: Operation,
    /// The resource, as text (`topic telemetry`, `group dashboard`, or a
    /// description for requests that are not about one resource).
    what: String,
    why: String,
}

fn need(acl: &Acl, identity: &str, op: Operation, resource: Resource<'_>) -> Result<(), Refusal> {
    let decision = acl.decide(identity, op, resource);
    if decision.is_allowed() {
        return Ok(());
    }
    Err(Refusal {
        op,
        what: resource.to_string(),
        why: acl.explain(identity, op, resource),
    })
}

/// Needs any of `ops` on a topic (describe-like requests).
fn need_any(acl: &Acl, identity: &str, ops: &[Operation], topic: &str) -> Result<(), Refusal> {
    if acl.allows_any(identity, ops, Resource::Topic(topic)) {
        return Ok(());
    }
    Err(Refusal {
        op: ops[0],
        what: format!("topic {topic}"),
        why: format!(
            "denied: {identity} has none of {} on topic {topic} (default deny)",
            ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
        ),
    })
}

const DESCRIBE: [Operation; 3] = [Operation::Consume, Operation::Produce, Operation::Admin];
/// Who may see a topic's consumer positions (committed offsets, lag).
const READ: [Operation; 2] = [Operation::Consume, Operation::Admin];

/// Checks `request` against `acl` for `identity`.
fn check(acl: &Acl, identity: &str, request: &Request<'_>) -> Result<(), Refusal> {
    use Operation::{Admin, Consume, Produce};
    let topic = Resource::Topic;
    let group = Resource::Group;
    match request {
        // The connection's own business, or filtered listings.
        Request::Hello(_) | Request::Ping(_) | Request::Metadata(_) | Request::ListGroups => Ok(()),
        Request::Produce(p) => need(acl, identity, Produce, topic(p.topic)),
        Request::InitProducer(_) => {
            if acl.has_any(identity, Produce) {
                Ok(())
            } else {
                Err(Refusal {
                    op: Produce,
                    what: "an idempotent producer id".into(),
                    why: format!("denied: no rule lets {identity} produce to any topic"),
                })
            }
        }
        Request::Fetch(f) => need(acl, identity, Consume, topic(f.topic)),
        // A downstream hub forwarding its topics: it produces here.
        Request::MirrorProduce(m) => need(acl, identity, Produce, topic(m.topic)),
        // Every link's state and topics: an operator's view.
        Request::MirrorStatus => {
            if acl.has_any(identity, Admin) {
                Ok(())
            } else {
                Err(Refusal {
                    op: Admin,
                    what: "the mirror status".into(),
                    why: format!("denied: no rule gives {identity} admin on any topic"),
                })
            }
        }
        Request::OffsetsForTimestamp(o) => need(acl, identity, Consume, topic(o.topic)),
        Request::DescribeTopic(t) | Request::Watermarks(t) | Request::TopicStats(t) => {
            need_any(acl, identity, &DESCRIBE, t.topic)
        }
        Request::CreateTopic(c) => need(acl, identity, Admin, topic(c.name)),
        Request::DeleteTopic(t) => need(acl, identity, Admin, topic(t.topic)),
        Request::AlterTopicConfig(a) => need(acl, identity, Admin, topic(a.topic)),
        Request::GroupHeartbeat(h) => {
            need(acl, identity, Consume, group(h.group))?;
            if h.pattern.is_some() {
                // A pattern may match topics the caller may not read; only
                // an identity that may read every topic may subscribe by one.
                return need(acl, identity, Consume, topic("*")).map_err(|mut r| {
                    r.why = format!(
                        "{}; a pattern subscription needs consume on topic \"*\": subscribe by topic names instead",
                        r.why
                    );
                    r
                });
            }
            for t in &h.topics {
                need(acl, identity, Consume, topic(t))?;
            }
            Ok(())
        }
        Request::CommitOffsets(c) if c.member_id.is_empty() => {
            // An administrative commit (`eddy groups reset`, only while the
            // group has no members): an operator's job, on the group and on
            // every topic it names (checked before storage is asked, so the
            // refusal is the same whether the topic exists or not).
            if !acl.allows_any(identity, &[Consume, Admin], group(c.group)) {
                need(acl, identity, Admin, group(c.group))?;
            }
            for t in &c.offsets {
                need_any(acl, identity, &READ, t.topic)?;
            }
            Ok(())
        }
        Request::CommitOffsets(c) => {
            need(acl, identity, Consume, group(c.group))?;
            for t in &c.offsets {
                need(acl, identity, Consume, topic(t.topic))?;
            }
            Ok(())
        }
        Request::FetchOffsets(FetchOffsets { group: g, .. })
        | Request::DescribeGroup(GroupRef { group: g }) => {
            if acl.allows_any(identity, &[Consume, Admin], group(g)) {
                Ok(())
            } else {
                need(acl, identity, Consume, group(g))
            }
        }
        Request::DeleteGroup(g) => need(acl, identity, Admin, group(g.group)),
    }
}

impl Broker {
    /// The error frame of a failed request (counted).
    fn failed(&self, correlation_id: u32, (code, message): super::Failure) -> Reply {
        self.stats.errors.count(code);
        Reply::Ready(error_frame(correlation_id, code, &message))
    }

    /// Handles one request from `caller`: checks it against the ACL (when
    /// ACLs are on), then [`Broker::handle`]s it.
    pub async fn handle_as(
        self: &Arc<Self>,
        caller: &Caller,
        correlation_id: u32,
        request: Request<'_>,
    ) -> Reply {
        let Some(acls) = &self.acl else {
            return self.handle(caller, correlation_id, request).await;
        };
        let acl = acls.current();
        let identity: &str = &caller.identity;
        if let Err(refusal) = check(&acl, identity, &request) {
            self.count_denial(caller, &refusal);
            let message = format!(
                "{identity} may not {} {}: ask the hub's operator for an ACL rule (`eddy acl check {identity} {} …` explains)",
                refusal.op, refusal.what, refusal.op
            );
            return Reply::Ready(error_frame(
                correlation_id,
                ErrorCode::NotAuthorized,
                &message,
            ));
        }
        match &request {
            Request::Metadata(m) => Reply::Ready(self.metadata_visible(correlation_id, m, &|t| {
                acl.allows_any(identity, &DESCRIBE, Resource::Topic(t))
            })),
            // A group's offsets and lag only for the topics the caller may
            // read: the rest are left out, as if the group had none there.
            Request::DescribeGroup(g) => self
                .describe_group(correlation_id, g.group, &|t| {
                    acl.allows_any(identity, &READ, Resource::Topic(t))
                })
                .await
                .unwrap_or_else(|failure| self.failed(correlation_id, failure)),
            Request::FetchOffsets(f) => self
                .fetch_offsets(correlation_id, f, &|t| {
                    acl.allows_any(identity, &READ, Resource::Topic(t))
                })
                .await
                .unwrap_or_else(|failure| self.failed(correlation_id, failure)),
            Request::ListGroups => self
                .list_groups_visible(correlation_id, &|g| {
                    acl.allows_any(
                        identity,
                        &[Operation::Consume, Operation::Admin],
                        Resource::Group(g),
                    )
                })
                .await
                .unwrap_or_else(|failure| self.failed(correlation_id, failure)),
            _ => self.handle(caller, correlation_id, request).await,
        }
    }
}

impl Broker {
    /// Checks `op` on `resource` for `caller` (front ends that do not speak
    /// the native protocol: the Kafka listener); refusals are counted and
    /// logged like [`Broker::handle_as`]'s. `Ok` when ACLs are off.
    pub fn authorize(
        &self,
        caller: &Caller,
        op: Operation,
        resource: Resource<'_>,
    ) -> Result<(), super::ops::BrokerError> {
        let Some(acls) = &self.acl else {
            return Ok(());
        };
        let acl = acls.current();
        let identity: &str = &caller.identity;
        let Err(refusal) = need(&acl, identity, op, resource) else {
            return Ok(());
        };
        self.count_denial(caller, &refusal);
        Err(super::ops::BrokerError::NotAuthorized {
            identity: identity.to_string(),
            what: format!("{} {}", refusal.op, refusal.what),
        })
    }

    /// Counts a refusal and logs it (rate-bounded).
    fn count_denial(&self, caller: &Caller, refusal: &Refusal) {
        self.stats.errors.count(ErrorCode::NotAuthorized);
        if let Some(left_out) = self.denial_log.admit() {
            log::warn!(
                "denied {} ({}): {} {}: {}{}",
                caller.peer,
                caller.identity,
                refusal.op,
                refusal.what,
                refusal.why.replace('\n', ";"),
                crate::log_limit::suppressed_note(left_out)
            );
        }
    }

    /// Whether `caller` may see `topic` in listings (any of consume,
    /// produce, admin on it); always with ACLs off.
    pub fn may_describe(&self, caller: &Caller, topic: &str) -> bool {
        self.acl.as_ref().is_none_or(|acls| {
            acls.current()
                .allows_any(&caller.identity, &DESCRIBE, Resource::Topic(topic))
        })
    }

    /// Whether `caller` may see `group` in listings (consume or admin on
    /// it); always with ACLs off. Nothing is logged.
    pub fn may_see_group(&self, caller: &Caller, group: &str) -> bool {
        self.acl.as_ref().is_none_or(|acls| {
            acls.current().allows_any(
                &caller.identity,
                &[Operation::Consume, Operation::Admin],
                Resource::Group(group),
            )
        })
    }

    /// Whether the hub has an ACL (is not open to every identity).
    pub fn has_acl(&self) -> bool {
        self.acl.is_some()
    }
}
