//! The firmware client (`firmware-examples/eddy-device`, `no_std`) against
//! a real eddy over TLS (rustls through `embedded-io` adapters): readings
//! whose acknowledgements were lost are resent after a reconnect and after
//! a `kill -9` of the hub, and every reading is stored exactly once.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, ChildServer, TestServer};
use eddy::client::Client;
use eddy::wire::batch::NO_TIMESTAMP;
use eddy_device::{Buffers, Config, Device, Error};
use embedded_io_adapters::std::FromStd;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS link whose answers can be made to vanish: while `lose_answers`
/// is set every read fails, as when the radio drops right after sending.
struct Link {
    tls: FromStd<Tls>,
    lose_answers: Arc<AtomicBool>,
}

impl Link {
    fn open(addr: SocketAddr, ca: &Path) -> (Link, Arc<AtomicBool>) {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn = rustls::ClientConnection::new(
            eddy::tls::client_config(ca).unwrap(),
            eddy::tls::server_name("127.0.0.1").unwrap(),
        )
        .unwrap();
        let lose = Arc::new(AtomicBool::new(false));
        let link = Link {
            tls: FromStd::new(rustls::StreamOwned::new(conn, tcp)),
            lose_answers: lose.clone(),
        };
        (link, lose)
    }
}

impl embedded_io::ErrorType for Link {
    type Error = std::io::Error;
}

impl embedded_io::Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, std::io::Error> {
        if self.lose_answers.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("answer lost"));
        }
        self.tls.read(buf)
    }
}

impl embedded_io::Write for Link {
    fn write(&mut self, buf: &[u8]) -> Result<usize, std::io::Error> {
        self.tls.write(buf)
    }

    fn flush(&mut self) -> Result<(), std::io::Error> {
        self.tls.flush()
    }
}

struct Bufs {
    frame: Vec<u8>,
    batch: Vec<u8>,
    response: Vec<u8>,
}

impl Bufs {
    fn new() -> Bufs {
        Bufs {
            frame: vec![0; 256],
            batch: vec![0; 128],
            response: vec![0; 1024],
        }
    }

    fn lend(&mut self) -> Buffers<'_> {
        Buffers {
            frame: &mut self.frame,
            batch: &mut self.batch,
            response: &mut self.response,
        }
    }
}

/// Every value of every partition of `topic`, by partition then offset.
fn stored_values(options: &eddy::client::ClientOptions, topic: &str) -> Vec<String> {
    common::stored_records(options, topic)
        .into_iter()
        .map(|r| String::from_utf8(r.value).unwrap())
        .collect()
}

fn durable_end(options: &eddy::client::ClientOptions, topic: &str) -> u64 {
    smol::block_on(async {
        let client = Client::connect(options).await.unwrap();
        match client.watermarks(topic).await {
            Ok(marks) => marks.iter().map(|m| m.durable).sum(),
            Err(_) => 0,
        }
    })
}

#[test]
fn lost_acks_are_resent_after_reconnect_and_stored_once() {
    let server = TestServer::start();
    let mut bufs = Bufs::new();
    let mut device: Device<'_, '_, 32, 64> =
        Device::new(Config::new("sensor-17", "readings"), bufs.lend());

    let (mut link, lose) = Link::open(server.addr(), &server.ca());
    device.connect(&mut link).unwrap();
    for i in 0..3 {
        device
            .publish(format!("r{i}").as_bytes(), NO_TIMESTAMP)
            .unwrap();
    }
    // The three readings reach eddy, their acknowledgements do not.
    lose.store(true, Ordering::SeqCst);
    assert!(matches!(device.flush(&mut link), Err(Error::Io(_))));
    assert_eq!(device.pending(), 3);
    wait_until(
        Duration::from_secs(10),
        "eddy appended the readings",
        || {
            server
                .running()
                .broker()
                .stats
                .records_in
                .load(Ordering::Relaxed)
                == 3
        },
    );
    drop(link);

    // A new connection: the outbox goes out again and eddy recognises it.
    let (mut link, _) = Link::open(server.addr(), &server.ca());
    let init = device.connect(&mut link).unwrap();
    assert_eq!(init.next_sequence, 3, "eddy has the three readings");
    assert_eq!(device.flush(&mut link).unwrap(), 3);
    let stats = &server.running().broker().stats;
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 3);
    assert_eq!(stats.records_in.load(Ordering::Relaxed), 3);
    for i in 3..10 {
        device
            .publish(format!("r{i}").as_bytes(), NO_TIMESTAMP)
            .unwrap();
    }
    assert_eq!(device.flush(&mut link).unwrap(), 7);
    assert_eq!(device.stats().resent, 3);

    let expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    assert_eq!(stored_values(&server.options(), "readings"), expected);
}

#[test]
fn readings_in_flight_during_kill_9_are_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let ca = dir.path().join("tls").join("ca.pem");
    let mut bufs = Bufs::new();
    let mut device: Device<'_, '_, 64, 64> =
        Device::new(Config::new("truck-4", "fleet"), bufs.lend());

    let (mut link, lose) = Link::open(server.addr, &ca);
    device.connect(&mut link).unwrap();
    for i in 0..20 {
        device
            .publish(format!("p{i}").as_bytes(), NO_TIMESTAMP)
            .unwrap();
    }
    assert_eq!(device.flush(&mut link).unwrap(), 20);
    // Five more reach eddy and are fsynced, but the device never hears back
    // before the hub is killed.
    for i in 20..25 {
        device
            .publish(format!("p{i}").as_bytes(), NO_TIMESTAMP)
            .unwrap();
    }
    lose.store(true, Ordering::SeqCst);
    assert!(device.flush(&mut link).is_err());
    let options = server.options();
    wait_until(Duration::from_secs(10), "the five are durable", || {
        durable_end(&options, "fleet") == 25
    });
    server.kill9();
    drop(link);

    let server = ChildServer::start(dir.path(), &[]);
    for i in 25..30 {
        device
            .publish(format!("p{i}").as_bytes(), NO_TIMESTAMP)
            .unwrap();
    }
    let (mut link, _) = Link::open(server.addr, &ca);
    let init = device.connect(&mut link).unwrap();
    assert_eq!(init.next_sequence, 25, "the restarted hub kept its state");
    assert_eq!(device.flush(&mut link).unwrap(), 10);
    assert_eq!(device.pending(), 0);
    let expected: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    assert_eq!(stored_values(&server.options(), "fleet"), expected);
}
