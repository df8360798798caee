//! One shutdown signal that every long-running loop races against.
//!
//! Triggered once (SIGINT/SIGTERM or a test); cheap to check, and awaitable.

use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::Event;

/// A latch: once triggered it stays triggered.
#[derive(Default)]
pub struct Shutdown {
    triggered: AtomicBool,
    event: Event,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Starts the shutdown. Idempotent.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// Completes once shutdown has started.
    pub async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }
}
