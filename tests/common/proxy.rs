//! A TCP proxy the tests control, standing for a flaky uplink: it forwards
//! to a target, refuses connections (uplink down), cuts every open
//! connection (drop), stops moving bytes without closing anything (stall:
//! every connection, or only those open now and in one direction, so a
//! request can reach the server while its answer is lost, or land only
//! long after the client gave up), holds every chunk for a while (delay),
//! or passes each connection's bytes at a bounded rate (a slow link).
//! Optionally it rewrites the frames a server sends (length-prefixed, as
//! eddy's protocol), to make an upstream report what a test needs.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
    /// Pass each connection's bytes on at most this fast (bytes/s, each
    /// direction on its own): a slow link on which a connection with a
    /// backlog queues up while an idle one stays quick.
    Rate(u64),
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server (requests).
    Up,
    /// Server to client (answers).
    Down,
    Both,
}

impl Direction {
    fn covers(self, other: Direction) -> bool {
        self == Direction::Both || self == other
    }
}

/// Rewrites one whole frame (length prefix included) a server sent.
pub type Rewriter = Arc<dyn Fn(Vec<u8>) -> Vec<u8> + Send + Sync>;

struct Conn {
    id: u64,
    client: TcpStream,
    server: TcpStream,
}

struct State {
    mode: Mode,
    target: Option<SocketAddr>,
    conns: Vec<Conn>,
    /// Connections (by id) that move no bytes in a direction until
    /// [`Proxy::release`].
    held: Vec<(u64, Direction)>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Connections cut by [`Proxy::cut`].
    cuts: AtomicU64,
    /// Bytes read but not passed on because their connection is held (or
    /// the proxy stalls), now.
    held_bytes: AtomicU64,
    /// Bytes passed on, per direction.
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    rewriter: Option<Rewriter>,
}

/// A running proxy on 127.0.0.1, port chosen by the system.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy in `mode`, forwarding to `target` (if any).
    pub fn start(target: Option<SocketAddr>, mode: Mode) -> Proxy {
        Proxy::start_with(target, mode, None)
    }

    /// A proxy that passes every frame the server sends through `rewriter`.
    pub fn start_rewriting(target: SocketAddr, rewriter: Rewriter) -> Proxy {
        Proxy::start_with(Some(target), Mode::Forward, Some(rewriter))
    }

    fn start_with(target: Option<SocketAddr>, mode: Mode, rewriter: Option<Rewriter>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode,
                target,
                conns: Vec::new(),
                held: Vec::new(),
            }),
            changed: Condvar::new(),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            up_bytes: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
            rewriter,
        });
        let accept_shared = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let id = accept_shared.accepted.fetch_add(1, Ordering::Relaxed);
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
                accept_shared.state.lock().unwrap().conns.push(Conn {
                    id,
                    client: client.try_clone().unwrap(),
                    server: server.try_clone().unwrap(),
                });
                for (from, to, direction) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        Direction::Up,
                    ),
                    (server, client, Direction::Down),
                ] {
                    let shared = accept_shared.clone();
                    std::thread::spawn(move || pump(from, to, id, direction, &shared));
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

    /// Stops moving bytes in `direction` on every connection open now;
    /// connections opened later pass bytes as the mode says. Returns how
    /// many connections are held.
    pub fn hold(&self, direction: Direction) -> usize {
        let mut s = self.shared.state.lock().unwrap();
        let ids: Vec<u64> = s.conns.iter().map(|c| c.id).collect();
        for id in &ids {
            s.held.push((*id, direction));
        }
        ids.len()
    }

    /// Lets held connections move their bytes again (what they held
    /// arrives now, late).
    pub fn release(&self) {
        self.shared.state.lock().unwrap().held.clear();
        self.shared.changed.notify_all();
    }

    /// Closes every open connection (both sides see a reset or EOF).
    pub fn cut(&self) {
        let conns = std::mem::take(&mut self.shared.state.lock().unwrap().conns);
        for c in &conns {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
        }
        self.shared.cuts.fetch_add(1, Ordering::Relaxed);
        self.shared.changed.notify_all();
    }

    /// Closes the held connections only (and forgets that they were held).
    pub fn cut_held(&self) {
        let mut s = self.shared.state.lock().unwrap();
        let held: Vec<u64> = s.held.iter().map(|(id, _)| *id).collect();
        let (cut, kept): (Vec<Conn>, Vec<Conn>) = std::mem::take(&mut s.conns)
            .into_iter()
            .partition(|c| held.contains(&c.id));
        s.conns = kept;
        s.held.clear();
        drop(s);
        for c in &cut {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
        }
        self.shared.cuts.fetch_add(1, Ordering::Relaxed);
        self.shared.changed.notify_all();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Bytes read from one side but held back from the other, now.
    pub fn held_bytes(&self) -> u64 {
        self.shared.held_bytes.load(Ordering::Relaxed)
    }

    /// Bytes passed on client → server and server → client so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.shared.up_bytes.load(Ordering::Relaxed),
            self.shared.down_bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set_mode(Mode::Refuse);
        self.release();
        self.cut();
    }
}

/// Waits while `chunk` may not move: the proxy stalls, or the connection
/// is held in this direction. Returns the mode to pass it on in, or
/// `None` when the connection was cut meanwhile.
fn wait_until_movable(shared: &Shared, id: u64, direction: Direction, len: usize) -> Option<Mode> {
    let mut s = shared.state.lock().unwrap();
    let blocked = |s: &State| {
        s.mode == Mode::Stall
            || s.held
                .iter()
                .any(|(held, d)| *held == id && d.covers(direction))
    };
    if blocked(&s) {
        shared.held_bytes.fetch_add(len as u64, Ordering::Relaxed);
        while blocked(&s) && s.conns.iter().any(|c| c.id == id) {
            s = shared.changed.wait(s).unwrap();
        }
        shared.held_bytes.fetch_sub(len as u64, Ordering::Relaxed);
    }
    s.conns.iter().any(|c| c.id == id).then_some(s.mode)
}

/// Copies `from` → `to` chunk by chunk, obeying the mode and holds.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, direction: Direction, shared: &Shared) {
    let mut buf = vec![0u8; 64 << 10];
    // Frames from the server not complete yet (rewriting only).
    let mut pending: Vec<u8> = Vec::new();
    let rewriter = shared
        .rewriter
        .clone()
        .filter(|_| direction == Direction::Down);
    let started = Instant::now();
    let mut passed = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Some(mode) = wait_until_movable(shared, id, direction, n) else {
            break;
        };
        match mode {
            // The simulated latency of the link itself.
            Mode::Delay(ms) => std::thread::sleep(Duration::from_millis(ms)),
            // The simulated bandwidth of the link: bytes so far may not be
            // ahead of the rate.
            Mode::Rate(bytes_per_s) => {
                let due = Duration::from_secs_f64(passed as f64 / bytes_per_s as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            _ => {}
        }
        passed += n as u64;
        let out: Vec<u8> = match &rewriter {
            None => buf[..n].to_vec(),
            Some(rewrite) => {
                pending.extend_from_slice(&buf[..n]);
                let mut out = Vec::new();
                while pending.len() >= 4 {
                    let len = u32::from_be_bytes(pending[..4].try_into().unwrap()) as usize;
                    if pending.len() < 4 + len {
                        break;
                    }
                    let frame: Vec<u8> = pending.drain(..4 + len).collect();
                    out.extend(rewrite(frame));
                }
                out
            }
        };
        if to.write_all(&out).is_err() {
            break;
        }
        let counter = match direction {
            Direction::Down => &shared.down_bytes,
            _ => &shared.up_bytes,
        };
        counter.fetch_add(out.len() as u64, Ordering::Relaxed);
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    // The connection is over (its other direction ends with it).
    let mut s = shared.state.lock().unwrap();
    s.conns.retain(|c| c.id != id);
    s.held.retain(|(held, _)| *held != id);
}
