//! Server-side TLS for device connections, over rustls' unbuffered API.
//!
//! Why not futures-rustls (which eddy's client side uses): rustls' buffered
//! `ServerConnection` keeps a zero-filled receive buffer of at least 4 KiB
//! for the connection's whole life. A gateway's devices are mostly idle —
//! one small reading a second — so at 10,000 devices that buffer alone was
//! 40 MB of the hub's memory holding nothing (`eddy bench devices`, see
//! `net/mod.rs`). Here a connection owns bytes only while they are in
//! flight: the start of a TLS record that has not fully arrived, decrypted
//! data the connection has not read yet, encrypted data the socket has not
//! taken yet. Each is freed once emptied, so an idle connection holds only
//! its session (cipher state and keys).
//!
//! Reads from the socket go through one scratch buffer per thread
//! ([`READ_CHUNK_BYTES`]); only an incomplete record is copied out of it.
//! Encrypted output waits in a buffer of at most [`OUTGOING_BYTES_MAX`]
//! (plus one chunk) before a write waits for the socket.
//!
//! What it does not do: early data (0-RTT; off in eddy's server config),
//! the client side, or anything above the byte stream. TLS itself (record
//! protection, handshake, alerts, key updates) is rustls'; this file only
//! moves bytes between the socket, rustls and its caller.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use smol::io::{AsyncRead, AsyncWrite};

/// Bytes read from the socket at once: one TLS record of the largest size
/// (16 KiB of plaintext, its header and protection) fits.
pub const READ_CHUNK_BYTES: usize = 16 * 1024 + 512;
/// Encrypted bytes that may wait for the socket; beyond this a write
/// waits until the socket has taken them.
pub const OUTGOING_BYTES_MAX: usize = 64 * 1024;
/// Application data encrypted per write call (rustls cuts it into records
/// of at most 16 KiB).
const ENCRYPT_CHUNK_BYTES: usize = 64 * 1024;
/// Protection added per TLS record (header, tag, content type, padding
/// room), to size the output buffer before encrypting.
const RECORD_OVERHEAD_BYTES: usize = 64;
/// TLS states handled in one call before yielding: a handshake flight has
/// a handful of messages, a read of [`READ_CHUNK_BYTES`] at most a few
/// hundred records; this only guards against a peer that keeps rustls busy.
const STATES_PER_CALL_MAX: usize = 4096;

thread_local! {
    /// The socket read buffer, one per thread (a connection never holds it
    /// across an await).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A TLS server connection as an async byte stream.
pub struct TlsStream<S> {
    io: S,
    conn: UnbufferedServerConnection,
    /// TLS bytes received and not yet processed (a record not yet whole).
    incoming: Vec<u8>,
    /// Decrypted application data not yet read, from `plaintext_start`.
    plaintext: Vec<u8>,
    plaintext_start: usize,
    /// Encrypted bytes not yet written to the socket, from `outgoing_start`.
    outgoing: Vec<u8>,
    outgoing_start: usize,
    /// The peer sent close_notify or closed the socket: reads end.
    read_closed: bool,
    /// Our close_notify is queued.
    close_notify_queued: bool,
}

/// What processing the received bytes ended with.
#[derive(Debug, PartialEq, Eq)]
enum Processed {
    /// Everything received is processed; more input is needed to go on.
    NeedInput,
    /// The handshake is complete and everything received is processed.
    Traffic,
    /// Both sides have closed.
    Closed,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// Runs the server side of the handshake on `io`. Bounded by the
    /// caller's timeout, not here.
    pub async fn accept(io: S, config: Arc<rustls::ServerConfig>) -> io::Result<TlsStream<S>> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream {
            io,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_start: 0,
            outgoing: Vec::new(),
            outgoing_start: 0,
            read_closed: false,
            close_notify_queued: false,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// The certificate chain the client presented (mTLS), as verified.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let processed = match self.process() {
                Ok(p) => p,
                Err(e) => {
                    // The alert rustls queued (e.g. "certificate required")
                    // goes out if the socket takes it right away.
                    let _ = self.poll_write_outgoing(cx);
                    return Poll::Ready(Err(e));
                }
            };
            match processed {
                Processed::Traffic if !self.conn.is_handshaking() => {
                    ready!(self.poll_write_outgoing(cx))?;
                    return Poll::Ready(Ok(()));
                }
                Processed::Closed => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                Processed::Traffic | Processed::NeedInput => {
                    // Our flight first: the peer waits for it.
                    ready!(self.poll_write_outgoing(cx))?;
                    if ready!(self.poll_fill(cx))? == 0 || self.read_closed {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed the connection during the TLS handshake",
                        )));
                    }
                }
            }
        }
    }

    /// Hands everything received to rustls: decrypted data goes to
    /// `plaintext`, handshake messages and alerts rustls emits to
    /// `outgoing`. Consumed input is removed from `incoming` afterwards.
    fn process(&mut self) -> io::Result<Processed> {
        let mut consumed = 0;
        let mut result = Err(rustls::Error::General(
            "too many TLS records in one read".into(),
        ));
        for _ in 0..STATES_PER_CALL_MAX {
            let UnbufferedStatus { discard, state } = self
                .conn
                .process_tls_records(&mut self.incoming[consumed..]);
            let step = state.and_then(|state| {
                handle(
                    state,
                    &mut self.plaintext,
                    &mut self.outgoing,
                    &mut self.read_closed,
                )
            });
            consumed += discard;
            match step {
                Ok(Step::Continue) => continue,
                Ok(Step::NeedInput) => result = Ok(Processed::NeedInput),
                Ok(Step::Writable(_)) => result = Ok(Processed::Traffic),
                Ok(Step::Closed) => result = Ok(Processed::Closed),
                Err(e) => result = Err(e),
            }
            break;
        }
        if result.is_err() {
            self.encode_pending_alerts(consumed);
        }
        self.consume_incoming(consumed);
        result.map_err(tls_error)
    }

    /// Drops the first `consumed` bytes of `incoming` (rustls is done with
    /// them), and frees it once empty.
    fn consume_incoming(&mut self, consumed: usize) {
        self.incoming.drain(..consumed.min(self.incoming.len()));
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
    }

    /// After an error, moves the alert rustls queued (e.g. "certificate
    /// required", "decode error") into `outgoing`, so it can go out before
    /// the connection closes. One call: rustls hands queued output out
    /// before it looks at input again (looking again would fail again), and
    /// it is given the same unconsumed input, which handshake messages it
    /// still holds point into.
    fn encode_pending_alerts(&mut self, consumed: usize) {
        let start = consumed.min(self.incoming.len());
        let UnbufferedStatus { state, .. } =
            self.conn.process_tls_records(&mut self.incoming[start..]);
        if let Ok(state @ ConnectionState::EncodeTlsData(_)) = state {
            let mut ignored = false;
            let _ = handle(state, &mut self.plaintext, &mut self.outgoing, &mut ignored);
        }
    }

    /// Reads once from the socket into the scratch buffer and keeps what
    /// arrived in `incoming`. Ready(0) at end of file.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < READ_CHUNK_BYTES {
                scratch.resize(READ_CHUNK_BYTES, 0);
            }
            let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut scratch[..]))?;
            if n == 0 {
                self.read_closed = true;
            }
            self.incoming.extend_from_slice(&scratch[..n]);
            Poll::Ready(Ok(n))
        })
    }

    /// Writes `outgoing` to the socket until it is empty, then frees it.
    fn poll_write_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_start < self.outgoing.len() {
            let n = ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.outgoing_start..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing_start += n;
        }
        self.outgoing = Vec::new();
        self.outgoing_start = 0;
        Poll::Ready(Ok(()))
    }

    /// Encrypts `data` (with `None`: a close_notify alert) into `outgoing`.
    fn encrypt(&mut self, data: Option<&[u8]>) -> io::Result<()> {
        let mut consumed = 0;
        let mut result = Err(io::Error::other("TLS connection did not become writable"));
        for _ in 0..STATES_PER_CALL_MAX {
            let UnbufferedStatus { discard, state } = self
                .conn
                .process_tls_records(&mut self.incoming[consumed..]);
            let step = state.and_then(|state| {
                handle(
                    state,
                    &mut self.plaintext,
                    &mut self.outgoing,
                    &mut self.read_closed,
                )
            });
            consumed += discard;
            result = match step {
                Ok(Step::Continue) => continue,
                Ok(Step::Writable(mut traffic)) => {
                    encrypt_into(&mut traffic, data, &mut self.outgoing)
                }
                Ok(Step::Closed) => Err(io::ErrorKind::BrokenPipe.into()),
                Ok(Step::NeedInput) => Err(io::ErrorKind::NotConnected.into()),
                Err(e) => Err(tls_error(e)),
            };
            break;
        }
        self.consume_incoming(consumed);
        result
    }
}

/// What a TLS state leaves to do.
enum Step<'c> {
    /// Handled; ask rustls for the next state.
    Continue,
    /// rustls needs more input.
    NeedInput,
    /// Nothing left to process: application data may be encrypted.
    Writable(WriteTraffic<'c, ServerConnectionData>),
    /// Both sides have closed.
    Closed,
}

/// Handles one state: decrypted records go to `plaintext`, what rustls
/// wants sent to `outgoing`.
fn handle<'c>(
    state: ConnectionState<'c, '_, ServerConnectionData>,
    plaintext: &mut Vec<u8>,
    outgoing: &mut Vec<u8>,
    read_closed: &mut bool,
) -> Result<Step<'c>, rustls::Error> {
    Ok(match state {
        ConnectionState::ReadTraffic(mut traffic) => {
            while let Some(record) = traffic.next_record() {
                plaintext.extend_from_slice(record?.payload);
            }
            Step::Continue
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            let start = outgoing.len();
            let mut room = 0;
            loop {
                outgoing.resize(start + room, 0);
                match encode.encode(&mut outgoing[start..]) {
                    Ok(written) => {
                        outgoing.truncate(start + written);
                        break;
                    }
                    Err(EncodeError::InsufficientSize(need)) if need.required_size > room => {
                        room = need.required_size;
                    }
                    Err(_) => {
                        outgoing.truncate(start);
                        break;
                    }
                }
            }
            Step::Continue
        }
        // The encoded bytes wait in `outgoing` and go out in order.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Step::Continue
        }
        ConnectionState::BlockedHandshake => Step::NeedInput,
        ConnectionState::WriteTraffic(traffic) => Step::Writable(traffic),
        ConnectionState::PeerClosed => {
            *read_closed = true;
            Step::Continue
        }
        ConnectionState::Closed => {
            *read_closed = true;
            Step::Closed
        }
        // eddy's server config accepts no early data.
        ConnectionState::ReadEarlyData(_) => {
            return Err(rustls::Error::General("unexpected early data".into()))
        }
        _ => {
            return Err(rustls::Error::General(
                "unexpected TLS connection state".into(),
            ))
        }
    })
}

/// Encrypts `data` (or a close_notify) into the end of `outgoing`.
fn encrypt_into(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    data: Option<&[u8]>,
    outgoing: &mut Vec<u8>,
) -> io::Result<()> {
    let start = outgoing.len();
    let len = data.map_or(0, <[u8]>::len);
    let mut room = len + RECORD_OVERHEAD_BYTES * (len / (16 * 1024) + 2);
    loop {
        outgoing.resize(start + room, 0);
        let out = &mut outgoing[start..];
        let result = match data {
            Some(data) => traffic.encrypt(data, out),
            None => traffic.queue_close_notify(out),
        };
        match result {
            Ok(written) => {
                outgoing.truncate(start + written);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(need)) if need.required_size > room => {
                room = need.required_size;
            }
            Err(e) => {
                outgoing.truncate(start);
                return Err(io::Error::other(e.to_string()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let pending = this.plaintext.len() - this.plaintext_start;
            if pending > 0 {
                let n = pending.min(buf.len());
                let start = this.plaintext_start;
                buf[..n].copy_from_slice(&this.plaintext[start..start + n]);
                this.plaintext_start += n;
                if this.plaintext_start == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plaintext_start = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if this.read_closed || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            this.process()?;
            if this.plaintext.is_empty() && !this.read_closed {
                ready!(this.poll_fill(cx))?;
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() - this.outgoing_start >= OUTGOING_BYTES_MAX {
            ready!(this.poll_write_outgoing(cx))?;
        }
        let n = buf.len().min(ENCRYPT_CHUNK_BYTES);
        this.encrypt(Some(&buf[..n]))?;
        // Start sending at once; what the socket does not take now goes
        // with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_write_outgoing(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_outgoing(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_queued {
            this.close_notify_queued = true;
            // A connection that cannot take the alert closes without it.
            let _ = this.encrypt(None);
        }
        ready!(this.poll_write_outgoing(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::net::{TcpListener, TcpStream};

    /// A server config from freshly generated dev certificates, and a
    /// client config trusting their CA.
    fn configs(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let (paths, _) =
            crate::tls::ensure_dev_certs(dir, &["localhost".to_string()]).expect("dev certs");
        let server = crate::tls::server_config(&paths.server_cert, &paths.server_key).unwrap();
        let client = crate::tls::client_config(&paths.ca_cert).unwrap();
        (server, client)
    }

    async fn pair(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> (
        TlsStream<TcpStream>,
        futures_rustls::client::TlsStream<TcpStream>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsStream::accept(tcp, server).await.unwrap()
        };
        let connect = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            futures_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .unwrap()
        };
        smol::future::zip(accept, connect).await
    }

    /// Bytes of buffers a connection holds (capacity, not length).
    fn held_bytes<S>(s: &TlsStream<S>) -> usize {
        s.incoming.capacity() + s.plaintext.capacity() + s.outgoing.capacity()
    }

    #[test]
    fn data_flows_both_ways_in_any_chunking_and_an_idle_connection_holds_no_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let (server_config, client_config) = configs(dir.path());
        smol::block_on(async {
            let (mut server, mut client) = pair(server_config, client_config).await;
            assert_eq!(held_bytes(&server), 0, "after the handshake");
            // 1 MiB + a bit each way, in uneven pieces (several TLS records,
            // records split across reads).
            let up: Vec<u8> = (0..(1 << 20) + 4321).map(|i| (i * 7 + 3) as u8).collect();
            let down: Vec<u8> = (0..(1 << 20) + 1234).map(|i| (i * 13 + 1) as u8).collect();
            let send_up = async {
                for piece in up.chunks(7919) {
                    client.write_all(piece).await.unwrap();
                }
                client.flush().await.unwrap();
                let mut got = vec![0; down.len()];
                client.read_exact(&mut got).await.unwrap();
                (client, got)
            };
            let echo = async {
                let mut got = vec![0; up.len()];
                let mut filled = 0;
                let mut step = 1;
                while filled < got.len() {
                    let end = (filled + step).min(got.len());
                    let n = server.read(&mut got[filled..end]).await.unwrap();
                    assert!(n > 0, "unexpected end of stream");
                    filled += n;
                    step = step * 3 % 40_000 + 1;
                }
                for piece in down.chunks(100_003) {
                    server.write_all(piece).await.unwrap();
                }
                server.flush().await.unwrap();
                got
            };
            let ((mut client, got_down), got_up) = smol::future::zip(send_up, echo).await;
            assert!(got_up == up, "server received what the client sent");
            assert!(got_down == down, "client received what the server sent");
            assert_eq!(
                held_bytes(&server),
                0,
                "an idle connection holds no buffers"
            );

            // A small request and answer, as a device sends: still nothing held after.
            client.write_all(b"ping").await.unwrap();
            client.flush().await.unwrap();
            let mut four = [0; 4];
            server.read_exact(&mut four).await.unwrap();
            assert_eq!(&four, b"ping");
            server.write_all(b"pong").await.unwrap();
            server.flush().await.unwrap();
            client.read_exact(&mut four).await.unwrap();
            assert_eq!(&four, b"pong");
            assert_eq!(held_bytes(&server), 0);

            // close_notify both ways: each side reads a clean end of stream.
            server.close().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            client.close().await.unwrap();
            let mut rest = Vec::new();
            assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
        });
    }

    #[test]
    fn a_client_that_is_not_tls_fails_the_handshake_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (server_config, _) = configs(dir.path());
        smol::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accept = async {
                let (tcp, _) = listener.accept().await.unwrap();
                TlsStream::accept(tcp, server_config).await
            };
            let garbage = async {
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                tcp
            };
            let (accepted, _tcp) = smol::future::zip(accept, garbage).await;
            let error = accepted.err().expect("the handshake must fail");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert!(
                error.to_string().contains("corrupt message"),
                "rustls' reason: {error}"
            );
        });
    }

    #[test]
    fn a_peer_that_closes_mid_handshake_is_an_unexpected_end() {
        let dir = tempfile::tempdir().unwrap();
        let (server_config, _) = configs(dir.path());
        smol::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accept = async {
                let (tcp, _) = listener.accept().await.unwrap();
                TlsStream::accept(tcp, server_config).await
            };
            let close = async {
                let tcp = TcpStream::connect(addr).await.unwrap();
                drop(tcp);
            };
            let (accepted, ()) = smol::future::zip(accept, close).await;
            assert_eq!(
                accepted.err().expect("must fail").kind(),
                io::ErrorKind::UnexpectedEof
            );
        });
    }
}
