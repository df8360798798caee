//! The bound on answers a connection has pending: bytes being read for a
//! fetch, and encoded answers not yet written to the peer.
//!
//! A fetch reserves the most its answer may carry before it reads storage
//! and gives the reservation back once its answer is encoded; the connection
//! then holds the answer's bytes here until they are written. While the
//! budget is spent the connection reads no more requests, and woken
//! long-polls wait for room before they read: a peer that parks many
//! long-polls and never reads its answers makes the hub hold at most
//! [`crate::config::ANSWER_BYTES_PENDING_MAX`] (plus one answer), not one
//! answer per parked fetch. Parked long-polls hold no reservation (they
//! reserve when woken), so a budget spent by unwritten answers never keeps
//! another request from finishing.
//!
//! This file only counts; it does not know sockets or storage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use event_listener::Event;

/// One connection's pending-answer bytes.
#[derive(Debug)]
pub struct AnswerBudget {
    /// Bytes reserved or held now.
    held: Mutex<usize>,
    /// Above this a reservation waits (unless nothing is held: one answer
    /// of any size may always proceed, so a large fetch cannot starve).
    max_bytes: usize,
    /// Fires when bytes are given back.
    freed: Event,
    /// Every connection's pending-answer bytes (a gauge), kept in step.
    total: Arc<AtomicUsize>,
}

/// Bytes reserved for an answer being prepared; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<AnswerBudget>,
    bytes: usize,
}

impl AnswerBudget {
    /// A budget of `max_bytes` counted into `total` as well.
    pub fn new(max_bytes: usize, total: Arc<AtomicUsize>) -> AnswerBudget {
        AnswerBudget {
            held: Mutex::new(0),
            max_bytes,
            freed: Event::new(),
            total,
        }
    }

    /// A budget for callers that are not connections (tests, in-process
    /// use): large enough never to wait.
    pub fn unbounded() -> Arc<AnswerBudget> {
        Arc::new(AnswerBudget::new(usize::MAX, Arc::new(AtomicUsize::new(0))))
    }

    /// Waits until `bytes` fit (or nothing is held), then reserves them.
    pub async fn reserve(self: &Arc<Self>, bytes: usize) -> Reservation {
        loop {
            let listener = self.freed.listen();
            if self.try_take(bytes) {
                return Reservation {
                    budget: self.clone(),
                    bytes,
                };
            }
            listener.await;
        }
    }

    fn try_take(&self, bytes: usize) -> bool {
        let mut held = self.held.lock().expect("answer budget lock");
        if *held != 0 && held.saturating_add(bytes) > self.max_bytes {
            return false;
        }
        *held += bytes;
        self.total.fetch_add(bytes, Ordering::Relaxed);
        true
    }

    /// Counts `bytes` of an encoded answer waiting to be written (never
    /// waits: the answer exists already).
    pub fn hold(&self, bytes: usize) {
        *self.held.lock().expect("answer budget lock") += bytes;
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back `bytes` (written, or a reservation dropped).
    pub fn release(&self, bytes: usize) {
        {
            let mut held = self.held.lock().expect("answer budget lock");
            assert!(*held >= bytes, "released more answer bytes than held");
            *held -= bytes;
        }
        self.total.fetch_sub(bytes, Ordering::Relaxed);
        self.freed.notify(usize::MAX);
    }

    /// Whether the budget is used up (the connection stops reading).
    pub fn is_spent(&self) -> bool {
        *self.held.lock().expect("answer budget lock") >= self.max_bytes
    }

    /// Bytes reserved or held now.
    pub fn held_bytes(&self) -> usize {
        *self.held.lock().expect("answer budget lock")
    }
}

impl Drop for AnswerBudget {
    fn drop(&mut self) {
        // Answers never written (the connection closed): uncount them.
        let held = *self.held.get_mut().expect("answer budget lock");
        self.total.fetch_sub(held, Ordering::Relaxed);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_waits_for_room_and_one_answer_always_fits() {
        let total = Arc::new(AtomicUsize::new(0));
        let budget = Arc::new(AnswerBudget::new(100, total.clone()));
        smol::block_on(async {
            // Larger than the budget, but nothing is held: it proceeds.
            let big = budget.reserve(150).await;
            assert!(budget.is_spent());
            assert_eq!(total.load(Ordering::Relaxed), 150);
            let mut second = Box::pin(budget.reserve(10));
            assert!(smol::future::poll_once(&mut second).await.is_none());
            drop(big);
            let second = second.await;
            assert_eq!(budget.held_bytes(), 10);
            budget.hold(90);
            assert!(budget.is_spent());
            drop(second);
            budget.release(90);
            assert_eq!(total.load(Ordering::Relaxed), 0);
        });
    }
}
