//! A TCP proxy the tests control, standing for a flaky uplink: it forwards
//! to a target, refuses connections (uplink down), cuts every open
//! connection (drop), stops moving bytes without closing anything
//! (stall), or holds every chunk for a while before passing it on (delay).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass bytes on.
    Forward,
    /// Accept and close at once (the upstream is unreachable).
    Refuse,
    /// Keep connections open but move no byte (a dead radio link).
    Stall,
    /// Pass bytes on after holding each chunk this many ms.
    Delay(u64),
}

struct State {
    mode: Mode,
    target: Option<SocketAddr>,
    conns: Vec<TcpStream>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Connections cut by [`Proxy::cut`].
    cuts: AtomicU64,
}

/// A running proxy on 127.0.0.1, port chosen by the system.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy in `mode`, forwarding to `target` (if any).
    pub fn start(target: Option<SocketAddr>, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode,
                target,
                conns: Vec::new(),
            }),
            changed: Condvar::new(),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                accept_shared.accepted.fetch_add(1, Ordering::Relaxed);
                let (mode, target) = {
                    let s = accept_shared.state.lock().unwrap();
                    (s.mode, s.target)
                };
                let Some(target) = target.filter(|_| mode != Mode::Refuse) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut s = accept_shared.state.lock().unwrap();
                    s.conns.push(client.try_clone().unwrap());
                    s.conns.push(server.try_clone().unwrap());
                }
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let shared = accept_shared.clone();
                    std::thread::spawn(move || pump(from, to, &shared));
                }
            }
        });
        Proxy { addr, shared }
    }

    /// Forwards new connections to `target`.
    pub fn set_target(&self, target: SocketAddr) {
        self.shared.state.lock().unwrap().target = Some(target);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.state.lock().unwrap().mode = mode;
        self.shared.changed.notify_all();
    }

    /// Closes every open connection (both sides see a reset or EOF).
    pub fn cut(&self) {
        let conns = std::mem::take(&mut self.shared.state.lock().unwrap().conns);
        for c in &conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.shared.cuts.fetch_add(1, Ordering::Relaxed);
        self.shared.changed.notify_all();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set_mode(Mode::Refuse);
        self.cut();
    }
}

/// Copies `from` → `to` chunk by chunk, obeying the mode.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mode = {
            let mut s = shared.state.lock().unwrap();
            // A stalled link holds the chunk until the mode changes or the
            // connection is cut.
            while s.mode == Mode::Stall {
                s = shared.changed.wait(s).unwrap();
            }
            s.mode
        };
        if let Mode::Delay(ms) = mode {
            // The simulated latency of the link itself.
            std::thread::sleep(Duration::from_millis(ms));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
