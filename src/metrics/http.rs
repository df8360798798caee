//! The `/metrics` endpoint: a minimal HTTP/1.x GET responder on async-net.
//!
//! `GET /metrics` (or `HEAD`) answers 200 with the OpenMetrics text; `GET /`
//! points at `/metrics`; other paths get 404, other methods 405, a request
//! that is not HTTP 400, one whose head exceeds the size bound 431. One
//! request per connection (`Connection: close`), which is how Prometheus
//! scrapes a target at 15–60 s intervals anyway.
//!
//! Bounds: [`METRICS_CONNECTIONS_MAX`] connections at once (more are closed
//! unanswered), a request head of at most [`METRICS_REQUEST_BYTES_MAX`], and
//! [`METRICS_TIMEOUT_MS`] to read the request and again to write the answer.
//!
//! Why not an HTTP crate: Prometheus needs one GET path. hyper brings its
//! own runtime traits and a large dependency tree, tiny_http a thread per
//! connection; either would add more to the gateway binary than these lines,
//! and neither plugs into smol without adapters.
//!
//! This module knows nothing of what it serves: `render` makes the body.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Executor;

use crate::shutdown::Shutdown;

/// Most scrapes served at once.
pub const METRICS_CONNECTIONS_MAX: usize = 4;
/// Largest request head (request line and headers) read, in bytes.
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 << 10;
/// Time to receive the request head, and again to send the answer, in ms.
pub const METRICS_TIMEOUT_MS: u64 = 5_000;
/// Pause after a failed `accept` (e.g. out of file descriptors), in ms.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// The content type of the OpenMetrics text exposition format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the metrics text. Called on the blocking pool.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    render: Render,
    executor: Arc<Executor<'static>>,
    shutdown: Arc<Shutdown>,
) {
    let open = Arc::new(AtomicUsize::new(0));
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
        if open.fetch_add(1, Ordering::AcqRel) >= METRICS_CONNECTIONS_MAX {
            open.fetch_sub(1, Ordering::AcqRel);
            log::debug!("metrics: {peer} refused, {METRICS_CONNECTIONS_MAX} scrapes in progress");
            continue;
        }
        let (open, render) = (open.clone(), render.clone());
        executor
            .spawn(async move {
                let mut stream = stream;
                respond(&mut stream, peer, render).await;
                // Free the slot before the socket closes: a scraper that saw
                // the close may connect again at once and must find it free.
                open.fetch_sub(1, Ordering::AcqRel);
                drop(stream);
            })
            .detach();
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
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

async fn respond(stream: &mut TcpStream, peer: SocketAddr, render: Render) {
    let timeout = Duration::from_millis(METRICS_TIMEOUT_MS);
    let mut head = Vec::new();
    let read = within(timeout, read_head(stream, &mut head)).await;
    let (status, content_type, body, head_only) = match read {
        None => {
            log::debug!("metrics: {peer} sent no request within {METRICS_TIMEOUT_MS} ms");
            return;
        }
        Some(Err(status)) => (status, "text/plain", format!("{status}\n"), false),
        Some(Ok(())) => match route(&head) {
            Route::Metrics { head_only } => {
                let body = smol::unblock(move || render()).await;
                ("200 OK", CONTENT_TYPE, body, head_only)
            }
            Route::Index => (
                "200 OK",
                "text/plain",
                "eddy: metrics are at /metrics\n".to_string(),
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
        assert_eq!(r("GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(r("GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(r("GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::BadRequest);
    }
}
