//! The metrics listener: a minimal HTTP/1.x GET responder on async-net.
//!
//! `GET /metrics` (or `HEAD`) answers 200 with the OpenMetrics text;
//! `GET /status.json` the hub's status ([`super::status`]); `GET /` the
//! status page (one self-contained HTML file, `status.html`: inline CSS and
//! JS, no external assets); other paths get 404, other methods 405, a request
//! that is not HTTP 400, one whose head exceeds the size bound 431. One
//! request per connection (`Connection: close`), which is how Prometheus
//! scrapes a target at 15–60 s intervals anyway.
//!
//! Bounds: [`METRICS_CONNECTIONS_MAX`] connections at once, a request head
//! of at most [`METRICS_REQUEST_BYTES_MAX`] sent within
//! [`METRICS_HEAD_TIMEOUT_MS`], [`METRICS_RENDERS_MAX`] answers rendered at
//! once, and [`METRICS_TIMEOUT_MS`] to write an answer.
//!
//! Slow clients cannot starve the scraper: when every slot is taken, a new
//! connection takes the slot of the oldest connection that has not yet sent
//! its request head (which is closed unanswered); only when every slot is
//! answering a complete request is the newcomer closed. Prometheus sends
//! its request as soon as it connects, so it is never the oldest waiting.
//!
//! Why not an HTTP crate: Prometheus needs one GET path. hyper brings its
//! own runtime traits and a large dependency tree, tiny_http a thread per
//! connection; either would add more to the gateway binary than these lines,
//! and neither plugs into smol without adapters.
//!
//! This module knows nothing of what it serves: `render` makes the body.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Executor;

use crate::shutdown::Shutdown;

/// Most connections open at once (each holds at most a request head).
pub const METRICS_CONNECTIONS_MAX: usize = 64;
/// Most answers rendered at once (rendering reads every layer's counters).
pub const METRICS_RENDERS_MAX: usize = 4;
/// Largest request head (request line and headers) read, in bytes.
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 << 10;
/// Time to receive the request head, in ms (a scraper sends it at once).
pub const METRICS_HEAD_TIMEOUT_MS: u64 = 2_000;
/// Time to send the answer, in ms.
pub const METRICS_TIMEOUT_MS: u64 = 5_000;
/// Pause after a failed `accept` (e.g. out of file descriptors), in ms.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// The content type of the OpenMetrics text exposition format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders an answer's body. Called on the blocking pool.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// What the listener serves: the metrics text and the status JSON.
#[derive(Clone)]
pub struct Pages {
    pub metrics: Render,
    pub status: Render,
}

/// The status page, served as is.
const STATUS_PAGE: &str = include_str!("status.html");

/// The connection slots: how many are open, and which of them are still
/// waiting for their request head (oldest first), each with the sender
/// whose drop tells it that a newcomer took its slot.
#[derive(Default)]
struct Slots {
    open: usize,
    next_id: u64,
    waiting: VecDeque<(u64, smol::channel::Sender<()>)>,
}

impl Slots {
    /// A slot for a new connection: a free one, or the one of the oldest
    /// connection still waiting for its head. `None`: all are answering.
    fn take(&mut self) -> Option<(u64, smol::channel::Receiver<()>)> {
        if self.open >= METRICS_CONNECTIONS_MAX {
            // Dropping the sender evicts that connection; its slot passes on.
            self.waiting.pop_front()?;
        } else {
            self.open += 1;
        }
        assert!(self.open <= METRICS_CONNECTIONS_MAX);
        let (tx, rx) = smol::channel::bounded(1);
        self.next_id += 1;
        self.waiting.push_back((self.next_id, tx));
        Some((self.next_id, rx))
    }

    /// The head phase of `id` is over: true if it still owns its slot
    /// (false: a newcomer took it).
    fn head_done(&mut self, id: u64) -> bool {
        match self.waiting.iter().position(|(i, _)| *i == id) {
            Some(at) => {
                self.waiting.remove(at);
                true
            }
            None => false,
        }
    }

    fn release(&mut self) {
        assert!(self.open > 0);
        self.open -= 1;
    }
}

/// Serves `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    render: Pages,
    executor: Arc<Executor<'static>>,
    shutdown: Arc<Shutdown>,
) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    let renders = Arc::new(smol::lock::Semaphore::new(METRICS_RENDERS_MAX));
    loop {
        let accepted = smol::future::or(async { Some(listener.accept().await) }, async {
            shutdown.wait().await;
            None
        })
        .await;
        let (stream, peer) = match accepted {
            None => return,
            Some(Ok(accepted)) => accepted,
            Some(Err(e)) => {
                log::warn!("metrics: accept failed: {e}");
                smol::Timer::after(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                continue;
            }
        };
        let Some((id, evicted)) = slots.lock().expect("metrics slots").take() else {
            log::debug!("metrics: {peer} refused, {METRICS_CONNECTIONS_MAX} answers in progress");
            continue;
        };
        let (slots, render, renders) = (slots.clone(), render.clone(), renders.clone());
        executor
            .spawn(async move {
                let mut stream = stream;
                let mut head = Vec::new();
                let read = smol::future::or(
                    async { Some(within(head_timeout(), read_head(&mut stream, &mut head)).await) },
                    async {
                        let _ = evicted.recv().await;
                        None
                    },
                )
                .await;
                if !slots.lock().expect("metrics slots").head_done(id) {
                    log::debug!(
                        "metrics: {peer} sent no request before a newcomer needed its slot"
                    );
                    return;
                }
                if let Some(read) = read {
                    respond(&mut stream, peer, read, &head, render, &renders).await;
                }
                // Free the slot before the socket closes: a scraper that saw
                // the close may connect again at once and must find it free.
                slots.lock().expect("metrics slots").release();
                drop(stream);
            })
            .detach();
    }
}

fn head_timeout() -> Duration {
    Duration::from_millis(METRICS_HEAD_TIMEOUT_MS)
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    Status,
    Index,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Parses a request head (`METHOD PATH HTTP/1.x`, headers ignored).
fn route(head: &[u8]) -> Route {
    let Ok(head) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    match path {
        "/metrics" => Route::Metrics { head_only },
        "/status.json" => Route::Status,
        "/" => Route::Index,
        _ => Route::NotFound,
    }
}

/// Reads the request head into `buf`; `Err` with the status to answer.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), &'static str> {
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| "400 Bad Request")?;
        if n == 0 {
            return Err("400 Bad Request");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(());
        }
        if buf.len() > METRICS_REQUEST_BYTES_MAX {
            return Err("431 Request Header Fields Too Large");
        }
    }
}

/// Answers the request whose head was read (`read`: `None` when it did not
/// come within [`METRICS_HEAD_TIMEOUT_MS`]).
async fn respond(
    stream: &mut TcpStream,
    peer: SocketAddr,
    read: Option<Result<(), &'static str>>,
    head: &[u8],
    render: Pages,
    renders: &smol::lock::Semaphore,
) {
    let timeout = Duration::from_millis(METRICS_TIMEOUT_MS);
    let (status, content_type, body, head_only) = match read {
        None => {
            log::debug!("metrics: {peer} sent no request within {METRICS_HEAD_TIMEOUT_MS} ms");
            return;
        }
        Some(Err(status)) => (status, "text/plain", format!("{status}\n"), false),
        Some(Ok(())) => match route(head) {
            Route::Metrics { head_only } => {
                let _rendering = renders.acquire().await;
                let body = smol::unblock(move || (render.metrics)()).await;
                ("200 OK", CONTENT_TYPE, body, head_only)
            }
            Route::Status => {
                let _rendering = renders.acquire().await;
                let body = smol::unblock(move || (render.status)()).await;
                ("200 OK", "application/json", body, false)
            }
            Route::Index => (
                "200 OK",
                "text/html; charset=utf-8",
                STATUS_PAGE.to_string(),
                false,
            ),
            Route::NotFound => (
                "404 Not Found",
                "text/plain",
                "not found: try /metrics\n".into(),
                false,
            ),
            Route::MethodNotAllowed => (
                "405 Method Not Allowed",
                "text/plain",
                "only GET and HEAD\n".into(),
                false,
            ),
            Route::BadRequest => (
                "400 Bad Request",
                "text/plain",
                "bad request\n".into(),
                false,
            ),
        },
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    let written = within(timeout, async {
        stream.write_all(&out).await?;
        stream.flush().await
    })
    .await;
    if !matches!(written, Some(Ok(()))) {
        log::debug!("metrics: could not answer {peer} within {METRICS_TIMEOUT_MS} ms");
    }
}

async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    smol::future::or(async { Some(future.await) }, async {
        smol::Timer::at(deadline).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_takes_the_slot_of_the_oldest_connection_without_a_request() {
        let mut slots = Slots::default();
        let taken: Vec<_> = (0..METRICS_CONNECTIONS_MAX)
            .map(|_| slots.take().unwrap())
            .collect();
        assert_eq!(slots.open, METRICS_CONNECTIONS_MAX);
        // The second sent its request: it keeps its slot.
        assert!(slots.head_done(taken[1].0));
        let (newcomer, _rx) = slots.take().unwrap();
        assert_eq!(slots.open, METRICS_CONNECTIONS_MAX, "the bound holds");
        assert!(taken[0].1.is_closed(), "the oldest waiting one is evicted");
        assert!(!slots.head_done(taken[0].0), "and owns no slot any more");
        assert!(!taken[2].1.is_closed());
        assert!(slots.head_done(newcomer));
        // With every slot answering, a newcomer is refused.
        for (id, _) in &taken[2..] {
            assert!(slots.head_done(*id));
        }
        assert!(slots.take().is_none());
        slots.release();
        assert!(slots.take().is_some());
    }

    #[test]
    fn routes() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(
            r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            r("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::Index);
        assert_eq!(r("GET /status.json HTTP/1.1\r\n\r\n"), Route::Status);
        assert_eq!(r("GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(r("GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(r("GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::BadRequest);
    }
}
