//! MQTT sessions: who is connected under which client id (a new
//! connection with the same id takes the session over and the old one is
//! closed), and what one connection's session holds: topic aliases,
//! packet ids of its deliveries, QoS 2 packet ids received, and the read
//! positions of a persistent session.
//!
//! Positions are kept durably by the broker (committed offsets of group
//! `mqtt.<client id>`, [`group_of`]), and so are QoS 2 messages awaiting
//! PUBREL (`exactly_once`); the rest ([`Kept`]) is in memory, shared by a
//! client id's connections: the QoS 2 packet ids seen stored (a fast
//! path) and subscriptions survive a reconnect while the hub runs, not a
//! hub restart (README "MQTT devices").
//!
//! No I/O, no broker calls: the connection loop drives this.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use event_listener::Event;

/// Topic aliases a v5 client may use (told in CONNACK).
pub const TOPIC_ALIASES_MAX: u16 = 16;
/// Client ids whose QoS 2 state and subscriptions are kept between
/// connections; beyond it the oldest entry is dropped.
pub const SESSIONS_KEPT_MAX: usize = 10_000;

/// The consumer-group id under which a client's positions are kept.
pub fn group_of(client_id: &str) -> String {
    format!("mqtt.{client_id}")
}

/// What is kept of a persistent session between its connections.
#[derive(Debug, Default, Clone)]
pub struct Kept {
    /// QoS 2 packet ids stored (PUBREC sent) and not yet released (the
    /// durable record of them: `exactly_once`).
    pub qos2: HashSet<u16>,
    /// Subscriptions: filter and granted QoS.
    pub subscriptions: Vec<(String, u8)>,
}

/// A live connection's claim on its client id.
pub struct Claim {
    pub generation: u64,
    /// Set when a newer connection took the session over.
    pub taken_over: Arc<AtomicBool>,
    /// Fires with `taken_over`.
    pub event: Arc<Event>,
}

struct Live {
    generation: u64,
    taken_over: Arc<AtomicBool>,
    event: Arc<Event>,
}

/// What a client id's connections share: each of them, and a later one of
/// a persistent session, sees the same [`Kept`] (a QoS 2 packet id stored
/// by a connection that is being taken over is known to its successor).
pub type Shared = Arc<Mutex<Kept>>;

/// Every client id connected now, and kept sessions.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Live>>,
    /// By client id: the generation that last used it, and its state.
    kept: Mutex<HashMap<String, (u64, Shared)>>,
    next_generation: AtomicU64,
}

impl Sessions {
    /// Claims `client_id` for a new connection; an older connection with
    /// it is told to close. Returns the claim, the session's state, and
    /// whether it continues an earlier session (`clean`: it starts anew).
    pub fn claim(&self, client_id: &str, clean: bool) -> (Claim, Shared, bool) {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let claim = Claim {
            generation,
            taken_over: Arc::new(AtomicBool::new(false)),
            event: Arc::new(Event::new()),
        };
        let old = self.live.lock().expect("sessions lock").insert(
            client_id.to_string(),
            Live {
                generation,
                taken_over: claim.taken_over.clone(),
                event: claim.event.clone(),
            },
        );
        if let Some(old) = old {
            old.taken_over.store(true, Ordering::Release);
            old.event.notify(usize::MAX);
        }
        let mut kept = self.kept.lock().expect("sessions lock");
        let previous = kept.remove(client_id).filter(|_| !clean);
        let present = previous.is_some();
        let shared = previous.map_or_else(Shared::default, |(_, s)| s);
        if kept.len() >= SESSIONS_KEPT_MAX {
            // The session unused the longest goes (a live one is re-added
            // by its connection's release).
            if let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, (g, _))| *g)
                .map(|(k, _)| k.clone())
            {
                kept.remove(&oldest);
            }
        }
        kept.insert(client_id.to_string(), (generation, shared.clone()));
        (claim, shared, present)
    }

    /// Ends a connection's claim (unless a newer one took it); a session
    /// that is not `persistent` is forgotten.
    pub fn release(&self, client_id: &str, generation: u64, persistent: bool, shared: &Shared) {
        let mut live = self.live.lock().expect("sessions lock");
        if live.get(client_id).map(|l| l.generation) != Some(generation) {
            return;
        }
        live.remove(client_id);
        drop(live);
        let mut kept = self.kept.lock().expect("sessions lock");
        if persistent {
            kept.insert(client_id.to_string(), (generation, shared.clone()));
        } else {
            kept.remove(client_id);
        }
    }
}

/// Outstanding QoS 1 deliveries of one partition, to know how far the
/// client has acknowledged in order.
#[derive(Debug, Default)]
pub struct PartitionProgress {
    outstanding: BTreeSet<u64>,
    /// One past the highest offset delivered.
    delivered_end: u64,
    /// The position last committed.
    committed: u64,
}

impl PartitionProgress {
    /// The next offset to resume from: the first unacknowledged one, or
    /// one past the last delivered.
    pub fn position(&self) -> u64 {
        self.outstanding
            .first()
            .copied()
            .unwrap_or(self.delivered_end)
    }
}

/// One connection's session.
pub struct Session {
    pub client_id: String,
    /// Whether positions and QoS 2 state outlive the connection.
    pub persistent: bool,
    /// Topic aliases the client set (index: alias − 1).
    aliases: Vec<Option<String>>,
    next_pkid: u16,
    /// Deliveries at QoS 1 waiting for the client's PUBACK: packet id →
    /// (eddy topic, partition, offset).
    pub unacked: HashMap<u16, (Arc<str>, u32, u64)>,
    /// Per (eddy topic, partition): how far deliveries were acknowledged.
    pub progress: HashMap<(Arc<str>, u32), PartitionProgress>,
    pub kept: Shared,
}

impl Session {
    pub fn new(client_id: String, persistent: bool, kept: Shared) -> Session {
        Session {
            client_id,
            persistent,
            aliases: vec![None; usize::from(TOPIC_ALIASES_MAX)],
            next_pkid: 1,
            unacked: HashMap::new(),
            progress: HashMap::new(),
            kept,
        }
    }

    /// The topic of a PUBLISH after its alias (MQTT 5): an alias with a
    /// topic sets it, an alias with an empty topic uses it. `None`: an
    /// alias out of range or never set (a protocol error).
    pub fn resolve_alias(&mut self, topic: String, alias: Option<u16>) -> Option<String> {
        let Some(alias) = alias else {
            return Some(topic);
        };
        let slot = self.aliases.get_mut(usize::from(alias).checked_sub(1)?)?;
        if topic.is_empty() {
            slot.clone()
        } else {
            *slot = Some(topic.clone());
            Some(topic)
        }
    }

    /// A packet id for a delivery, not in use by another unacknowledged
    /// one (the caller keeps fewer than 65,535 in flight).
    pub fn next_pkid(&mut self) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.unacked.contains_key(&pkid) {
                return pkid;
            }
        }
    }

    /// A record was handed to the client (`pkid`: at QoS 1, until its
    /// PUBACK; `None`: QoS 0, done).
    pub fn delivered(&mut self, topic: Arc<str>, partition: u32, offset: u64, pkid: Option<u16>) {
        let progress = self.progress.entry((topic.clone(), partition)).or_default();
        progress.delivered_end = progress.delivered_end.max(offset + 1);
        if let Some(pkid) = pkid {
            progress.outstanding.insert(offset);
            self.unacked.insert(pkid, (topic, partition, offset));
        }
    }

    /// Holds `pkid` until its PUBACK for a delivery that moves no
    /// position (a retained message).
    pub fn reserve(&mut self, pkid: u16) {
        self.unacked.insert(pkid, (Arc::from(""), 0, 0));
    }

    /// The client acknowledged delivery `pkid`.
    pub fn acknowledged(&mut self, pkid: u16) {
        if let Some((topic, partition, offset)) = self.unacked.remove(&pkid) {
            if let Some(p) = self.progress.get_mut(&(topic, partition)) {
                p.outstanding.remove(&offset);
            }
        }
    }

    /// Positions that moved since they were last committed; marks them
    /// committed (the caller commits them).
    pub fn positions_to_commit(&mut self) -> Vec<(String, u32, u64)> {
        let mut out = Vec::new();
        for ((topic, partition), p) in self.progress.iter_mut() {
            let position = p.position();
            if position > p.committed {
                p.committed = position;
                out.push((topic.to_string(), *partition, position));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_wait_for_the_first_unacknowledged_delivery() {
        let mut s = Session::new("c".into(), true, Shared::default());
        let t: Arc<str> = Arc::from("t");
        let a = s.next_pkid();
        s.delivered(t.clone(), 0, 10, Some(a));
        let b = s.next_pkid();
        s.delivered(t.clone(), 0, 11, Some(b));
        assert_ne!(a, b);
        s.acknowledged(b);
        assert_eq!(s.positions_to_commit(), vec![("t".to_string(), 0, 10)]);
        s.acknowledged(a);
        assert_eq!(s.positions_to_commit(), vec![("t".to_string(), 0, 12)]);
        assert!(s.positions_to_commit().is_empty());
    }

    #[test]
    fn aliases_set_and_resolve() {
        let mut s = Session::new("c".into(), false, Shared::default());
        assert_eq!(
            s.resolve_alias("a/b".into(), Some(1)).as_deref(),
            Some("a/b")
        );
        assert_eq!(
            s.resolve_alias(String::new(), Some(1)).as_deref(),
            Some("a/b")
        );
        assert_eq!(s.resolve_alias(String::new(), Some(2)), None);
        assert_eq!(
            s.resolve_alias("x".into(), Some(TOPIC_ALIASES_MAX + 1)),
            None
        );
        assert_eq!(s.resolve_alias("x".into(), Some(0)), None);
    }

    #[test]
    fn a_new_connection_takes_the_session_over_with_its_state() {
        let sessions = Sessions::default();
        let (first, shared, present) = sessions.claim("dev", false);
        assert!(!present);
        shared.lock().unwrap().qos2.insert(5);
        // Taken over before the first connection noticed it was gone.
        let (second, again, present) = sessions.claim("dev", false);
        assert!(present);
        assert!(first.taken_over.load(Ordering::Acquire));
        assert!(again.lock().unwrap().qos2.contains(&5));
        // The old connection's release does not end the new claim.
        sessions.release("dev", first.generation, true, &shared);
        sessions.release("dev", second.generation, true, &again);
        let (_, kept, present) = sessions.claim("dev", false);
        assert!(present && kept.lock().unwrap().qos2.contains(&5));
        let (third, clean, present) = sessions.claim("dev", true);
        assert!(!present && clean.lock().unwrap().qos2.is_empty());
        sessions.release("dev", third.generation, false, &clean);
        assert!(
            !sessions.claim("dev", false).2,
            "a clean session is forgotten"
        );
    }
}
