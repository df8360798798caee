//! A telematics unit simulator for Linux boards: one vehicle sends position,
//! speed and fuel once per interval to eddy over TLS, with the same
//! `no_std` client a microcontroller runs (`eddy-device`), here over rustls
//! and a `std` TCP socket.
//!
//! When the connection breaks (or `--drop-every N` cuts it on purpose) the
//! readings stay in the client's outbox, the simulator reconnects with a
//! capped, jittered exponential backoff, and the client resends what was
//! not acknowledged: eddy stores every reading exactly once.
//!
//! It deliberately does not parse GPS or CAN data: the readings are made up.

use std::io;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argh::FromArgs;
use eddy_device::wire::Acks;
use eddy_device::{Buffers, Config, Device, Error};
use embedded_io_adapters::std::FromStd;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Readings kept while the hub is unreachable.
const OUTBOX_READINGS_MAX: usize = 256;
/// Longest reading, in bytes.
const READING_BYTES_MAX: usize = 128;
/// First reconnect delay, doubled per failure up to the maximum, in ms.
const RECONNECT_BACKOFF_MS_MIN: u64 = 100;
const RECONNECT_BACKOFF_MS_MAX: u64 = 10_000;
/// TCP connect and TLS read/write timeout, in ms.
const IO_TIMEOUT_MS: u64 = 10_000;

/// Simulate a vehicle's telematics unit sending readings to eddy.
#[derive(FromArgs)]
struct Args {
    /// eddy address (default 127.0.0.1:7654)
    #[argh(option, default = "String::from(\"127.0.0.1:7654\")")]
    server: String,
    /// CA certificate to trust (default ./eddy-data/tls/ca.pem)
    #[argh(option, default = "PathBuf::from(\"eddy-data/tls/ca.pem\")")]
    ca: PathBuf,
    /// name in the server certificate (default: the host of --server)
    #[argh(option)]
    tls_server_name: Option<String>,
    /// stable device id: the producer name and record key (default truck-1)
    #[argh(option, default = "String::from(\"truck-1\")")]
    device_id: String,
    /// topic (default telemetry)
    #[argh(option, default = "String::from(\"telemetry\")")]
    topic: String,
    /// ms between readings (default 1000)
    #[argh(option, default = "1000")]
    interval_ms: u64,
    /// readings to send, then exit once all are acknowledged (default 10)
    #[argh(option, default = "10")]
    count: u64,
    /// acknowledgement level: durable or received (default durable)
    #[argh(option, default = "String::from(\"durable\")")]
    acks: String,
    /// cut the connection after every N readings (to show resends)
    #[argh(option)]
    drop_every: Option<u64>,
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn main() {
    let args: Args = argh::from_env();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let acks = match args.acks.as_str() {
        "durable" => Acks::Durable,
        "received" => Acks::Received,
        other => return Err(format!("--acks {other}: use durable or received")),
    };
    let tls = tls_config(&args.ca)?;
    let host = args.tls_server_name.clone().unwrap_or_else(|| {
        let host = args
            .server
            .rsplit_once(':')
            .map_or(&*args.server, |(h, _)| h);
        host.trim_matches(['[', ']']).to_string()
    });
    let server_name = ServerName::try_from(host.clone())
        .map_err(|_| format!("{host:?} is not a valid TLS name; pass --tls-server-name"))?;

    let mut frame = vec![0u8; 512];
    let mut batch = vec![0u8; 256];
    let mut response = vec![0u8; 1024];
    let config = Config {
        acks,
        ..Config::new(&args.device_id, &args.topic)
    };
    let mut device: Device<'_, '_, OUTBOX_READINGS_MAX, READING_BYTES_MAX> = Device::new(
        config,
        Buffers {
            frame: &mut frame,
            batch: &mut batch,
            response: &mut response,
        },
    );
    let mut link: Option<FromStd<Tls>> = None;
    let mut backoff_ms = RECONNECT_BACKOFF_MS_MIN;
    let mut produced = 0u64;
    let mut since_drop = 0u64;
    let started = Instant::now();
    let mut next_reading = Instant::now();

    while produced < args.count || device.pending() > 0 {
        if produced < args.count && Instant::now() >= next_reading {
            let reading = vehicle_reading(&args.device_id, produced, started.elapsed());
            if device.publish(reading.as_bytes(), now_ms()).is_err() {
                eprintln!("outbox full ({OUTBOX_READINGS_MAX} readings): dropping the oldest");
                device.drop_oldest();
                let _ = device.publish(reading.as_bytes(), now_ms());
            }
            produced += 1;
            since_drop += 1;
            next_reading += Duration::from_millis(args.interval_ms);
        }

        let stream = match link.as_mut() {
            Some(stream) => stream,
            None => match connect(&args.server, &tls, &server_name) {
                Ok(stream) => {
                    let stream = link.insert(FromStd::new(stream));
                    match device.connect(stream) {
                        Ok(init) => {
                            eprintln!(
                                "connected as producer {} epoch {} (next sequence {}), {} readings to send",
                                init.producer_id, init.producer_epoch, init.next_sequence, device.pending()
                            );
                            backoff_ms = RECONNECT_BACKOFF_MS_MIN;
                            stream
                        }
                        Err(e) => {
                            eprintln!("session refused: {}", describe(&e));
                            link = None;
                            backoff(&mut backoff_ms);
                            continue;
                        }
                    }
                }
                Err(e) => {
                    eprintln!("cannot reach {}: {e}", args.server);
                    backoff(&mut backoff_ms);
                    continue;
                }
            },
        };
        match device.flush(stream) {
            Ok(acked) if acked > 0 => {
                let stats = device.stats();
                println!(
                    "acked {acked} (total {}, resent {}, duplicates {}, pending {})",
                    stats.acked,
                    stats.resent,
                    stats.duplicates,
                    device.pending()
                );
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("connection lost: {}", describe(&e));
                link = None;
                continue;
            }
        }
        if args.drop_every.is_some_and(|n| since_drop >= n) {
            eprintln!("dropping the connection on purpose (--drop-every)");
            since_drop = 0;
            device.disconnect();
            link = None;
        }
        if produced < args.count {
            std::thread::sleep(next_reading.saturating_duration_since(Instant::now()));
        }
    }
    let stats = device.stats();
    println!(
        "done: {} readings acknowledged, {} resent, {} recognised as duplicates, {} refused, {} connects",
        stats.acked, stats.resent, stats.duplicates, stats.rejected, stats.connects
    );
    Ok(())
}

fn tls_config(ca: &PathBuf) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read CA {}: {e}", ca.display()))?
    {
        let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA in {}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn connect(
    server: &str,
    tls: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
) -> io::Result<Tls> {
    use std::net::ToSocketAddrs;
    let addr = server
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let timeout = Duration::from_millis(IO_TIMEOUT_MS);
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let conn =
        rustls::ClientConnection::new(tls.clone(), name.clone()).map_err(io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Sleeps for the current backoff (with ±25 % jitter) and doubles it.
fn backoff(backoff_ms: &mut u64) {
    let jitter = (now_ms().unsigned_abs() % 50) as f64 / 100.0 + 0.75;
    std::thread::sleep(Duration::from_millis((*backoff_ms as f64 * jitter) as u64));
    *backoff_ms = (*backoff_ms * 2).min(RECONNECT_BACKOFF_MS_MAX);
}

fn describe<E: std::fmt::Debug>(e: &Error<E>) -> String {
    match e {
        Error::Io(io) => format!("I/O error {io:?}"),
        Error::Closed => "closed by eddy".into(),
        Error::Server(code) => format!("eddy answered {code}"),
        other => format!("{other:?}"),
    }
}

/// A made-up position on a loop around Hamburg, speed and fuel level.
fn vehicle_reading(device_id: &str, n: u64, elapsed: Duration) -> String {
    let phase = n as f64 / 60.0;
    let lat = 53.55 + 0.05 * phase.sin();
    let lon = 9.99 + 0.08 * phase.cos();
    let speed_kmh = 50.0 + 30.0 * (phase * 3.0).sin().abs();
    let fuel_pct = (100.0 - elapsed.as_secs_f64() / 600.0).max(5.0);
    format!(
        "{{\"id\":\"{device_id}\",\"n\":{n},\"lat\":{lat:.5},\"lon\":{lon:.5},\"kmh\":{speed_kmh:.1},\"fuel\":{fuel_pct:.1}}}"
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
