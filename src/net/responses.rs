//! A connection's queue of encoded responses, from the request handlers to
//! the writer.
//!
//! A `VecDeque` under a mutex and an event: it allocates nothing until the
//! first response and then a handful of slots, where an async channel
//! allocated a block of 32 slots (≈ 1 KB) per connection. Its length is
//! bounded by the connection's in-flight permits (every response is queued
//! while its request holds one), not by this type. It closes for the
//! receiver once every sender is gone and the queue is empty, and for the
//! senders once the receiver is gone.
//!
//! Not here: writing, coalescing (the writer does that), any ordering other
//! than first in, first out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use event_listener::Event;

struct Shared {
    state: Mutex<State>,
    /// Fired on every push, and when the last sender or the receiver goes.
    changed: Event,
}

struct State {
    queue: VecDeque<Vec<u8>>,
    senders: usize,
    receiver_alive: bool,
}

/// Queues responses; cloneable (one per handler still to answer).
pub(super) struct ResponseSender {
    shared: Arc<Shared>,
}

/// Takes responses in the order they were queued.
pub(super) struct ResponseReceiver {
    shared: Arc<Shared>,
}

/// The receiver is gone (the writer stopped): nothing will be sent.
#[derive(Debug)]
pub(super) struct Closed;

pub(super) fn queue() -> (ResponseSender, ResponseReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
        }),
        changed: Event::new(),
    });
    (
        ResponseSender {
            shared: shared.clone(),
        },
        ResponseReceiver { shared },
    )
}

impl ResponseSender {
    /// Queues `response` for the writer.
    pub(super) fn send(&self, response: Vec<u8>) -> Result<(), Closed> {
        {
            let mut state = self.shared.state.lock().expect("responses lock");
            if !state.receiver_alive {
                return Err(Closed);
            }
            state.queue.push_back(response);
        }
        self.shared.changed.notify(1);
        Ok(())
    }
}

impl Clone for ResponseSender {
    fn clone(&self) -> Self {
        self.shared.state.lock().expect("responses lock").senders += 1;
        ResponseSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for ResponseSender {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.state.lock().expect("responses lock");
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.changed.notify(usize::MAX);
        }
    }
}

impl ResponseReceiver {
    /// The next response; `None` once every sender is gone and all were taken.
    pub(super) async fn recv(&self) -> Option<Vec<u8>> {
        loop {
            let listener = self.shared.changed.listen();
            {
                let mut state = self.shared.state.lock().expect("responses lock");
                if let Some(response) = state.queue.pop_front() {
                    return Some(response);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            listener.await;
        }
    }

    /// The next response if one is queued.
    pub(super) fn try_recv(&self) -> Option<Vec<u8>> {
        self.shared
            .state
            .lock()
            .expect("responses lock")
            .queue
            .pop_front()
    }

    /// Whether nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.shared
            .state
            .lock()
            .expect("responses lock")
            .queue
            .is_empty()
    }
}

impl Drop for ResponseReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().expect("responses lock");
        state.receiver_alive = false;
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::queue;

    #[test]
    fn fifo_then_closed_when_every_sender_is_gone() {
        let (tx, rx) = queue();
        let tx2 = tx.clone();
        tx.send(vec![1]).unwrap();
        tx2.send(vec![2]).unwrap();
        drop(tx);
        smol::block_on(async {
            assert_eq!(rx.recv().await, Some(vec![1]));
            assert!(!rx.is_empty());
            assert_eq!(rx.try_recv(), Some(vec![2]));
            assert!(rx.is_empty());
            // One sender left: a response sent from another thread wakes recv.
            let sender = std::thread::spawn(move || {
                tx2.send(vec![3]).unwrap();
            });
            assert_eq!(rx.recv().await, Some(vec![3]));
            sender.join().unwrap();
            // tx2 moved into the thread and dropped there: closed.
            assert_eq!(rx.recv().await, None);
        });
    }

    #[test]
    fn senders_fail_once_the_receiver_is_gone() {
        let (tx, rx) = queue();
        tx.send(vec![1]).unwrap();
        drop(rx);
        assert!(tx.send(vec![2]).is_err());
    }
}
