//! Compression on the telemetry data set (benches/telemetry): what each
//! codec costs and saves, and the bytes a mirror link sends upstream with
//! compression off and on, side by side in one run.
//!
//! ```text
//! cargo bench --bench compression -- [--records N] [--runs R] [--only codecs|uplink]
//! cargo bench --bench compression -- --write DIR [--records N]   # the data set as files
//! ```
//!
//! 1. Codecs: the data set as stored (eddy batches of 10 readings of one
//!    device, interleaved as a hub receives them) cut into requests of
//!    512 KiB (a link's default `request_bytes_max`), each compressed and
//!    decompressed: ratio (compressed / stored bytes and / value bytes)
//!    and ns per stored byte, medians of R passes. JSON, binary (postcard)
//!    and random values.
//! 2. Uplink: N JSON readings loaded into a hub (4 partitions, keyed by
//!    device) while its link is down, then drained into another eddy
//!    (`eddy://`, TLS, through a byte-counting proxy) and into librdkafka's
//!    mock cluster (`kafka://`); per codec the link's payload bytes (its
//!    `eddy_mirror_sent_compressed_bytes` metric) and, for eddy://, every
//!    byte on the TCP connections (TLS, framing, pings included), as a
//!    share of the value bytes. Medians of R runs, each on fresh hubs.
//!
//! Prints one JSON line per figure on stdout.

#[path = "../tests/common/mod.rs"]
mod common;
mod telemetry;

use std::time::{Duration, Instant};

use common::mirror::{sent_bytes, wait_mirrored};
use common::proxy::{Mode, Proxy};
use common::TestServer;
use eddy::config::mirror::UplinkCompression;
use eddy::config::MirrorLinkConfig;
use eddy::wire::Acks;
use rdkafka::mocking::MockCluster;
use telemetry::Form;

const SEED: u64 = 20_261_205;
/// Readings per device batch.
const PER_BATCH: usize = 10;
/// A link's default request size.
const REQUEST_BYTES: usize = 512 << 10;

struct Args {
    records: usize,
    runs: usize,
    only: Option<String>,
    write: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut args = Args {
        records: 100_000,
        runs: 3,
        only: None,
        write: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--records" => args.records = it.next().unwrap().parse().unwrap(),
            "--runs" => args.runs = it.next().unwrap().parse().unwrap(),
            "--only" => args.only = it.next(),
            "--write" => args.write = it.next().map(Into::into),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    args
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Stored batches cut into requests of at most `REQUEST_BYTES`.
fn requests(batches: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![Vec::new()];
    for b in batches {
        if out.last().unwrap().len() + b.len() > REQUEST_BYTES {
            out.push(Vec::new());
        }
        out.last_mut().unwrap().extend_from_slice(b);
    }
    out
}

type Codec = (
    &'static str,
    Box<dyn Fn(&[u8]) -> Vec<u8>>,
    Box<dyn Fn(&[u8], usize) -> Vec<u8>>,
);

fn codecs() -> Vec<Codec> {
    let mut all: Vec<Codec> = vec![(
        "lz4",
        Box::new(lz4_flex::block::compress),
        Box::new(|c, n| lz4_flex::block::decompress(c, n).unwrap()),
    )];
    for (name, level) in [("zstd-1", 1), ("zstd-3", 3), ("zstd-6", 6), ("zstd-9", 9)] {
        all.push((
            name,
            Box::new(move |raw| zstd::bulk::compress(raw, level).unwrap()),
            Box::new(|c, n| zstd::bulk::decompress(c, n).unwrap()),
        ));
    }
    all.push((
        "snappy",
        Box::new(|raw| snap::raw::Encoder::new().compress_vec(raw).unwrap()),
        Box::new(|c, _| snap::raw::Decoder::new().decompress_vec(c).unwrap()),
    ));
    all
}

fn codec_figures(args: &Args) {
    for form in [Form::Json, Form::Binary, Form::Random] {
        let (batches, value_bytes) = telemetry::batches(SEED, form, args.records, PER_BATCH);
        let requests = requests(&batches);
        let stored: usize = requests.iter().map(Vec::len).sum();
        println!(
            "{{\"dataset\":\"{}\",\"records\":{},\"value_bytes\":{value_bytes},\"stored_bytes\":{stored}}}",
            form.name(),
            args.records
        );
        for (name, compress, decompress) in codecs() {
            let (mut packs, mut unpacks) = (Vec::new(), Vec::new());
            let mut packed_bytes = 0usize;
            for _ in 0..args.runs {
                let started = Instant::now();
                let packed: Vec<Vec<u8>> = requests.iter().map(|r| compress(r)).collect();
                packs.push(started.elapsed().as_nanos() as f64 / stored as f64);
                let started = Instant::now();
                for (p, r) in packed.iter().zip(&requests) {
                    let back = decompress(p, r.len());
                    assert_eq!(back.len(), r.len());
                }
                unpacks.push(started.elapsed().as_nanos() as f64 / stored as f64);
                packed_bytes = packed.iter().map(Vec::len).sum();
            }
            println!(
                "{{\"dataset\":\"{}\",\"codec\":\"{name}\",\"ratio_of_stored\":{:.4},\"ratio_of_values\":{:.4},\
                 \"compress_ns_per_byte\":{:.3},\"decompress_ns_per_byte\":{:.3}}}",
                form.name(),
                packed_bytes as f64 / stored as f64,
                packed_bytes as f64 / value_bytes as f64,
                median(packs),
                median(unpacks)
            );
        }
    }
}

/// Loads the JSON data set into `client`'s topic "sensors" (durable acks).
async fn load(client: &eddy::client::Client, batches: &[Vec<u8>]) {
    client.create_topic("sensors", 4).await.unwrap();
    for b in batches {
        client
            .produce("sensors", None, Acks::Durable, 60_000, b)
            .await
            .unwrap();
    }
}

/// A source hub with `link` (its upstream unreachable), loaded with
/// `batches`; then `open` makes the upstream reachable, and the hub is
/// returned once the link drained everything.
fn drain(link: MirrorLinkConfig, batches: &[Vec<u8>], open: impl FnOnce()) -> TestServer {
    let source = TestServer::start_with(|c| {
        c.hub_id = Some("gw-1".into());
        c.mirror = vec![link];
    });
    smol::block_on(async {
        let client = source.client().await;
        load(&client, batches).await;
        open();
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(600)).await;
    });
    source
}

/// One drain into another eddy: (payload bytes, TCP bytes up).
fn eddy_drain(batches: &[Vec<u8>], compression: UplinkCompression) -> (f64, f64) {
    let upstream = TestServer::start();
    let proxy = Proxy::start(Some(upstream.addr()), Mode::Refuse);
    let mut link = MirrorLinkConfig::parse(&format!("dc=eddy://{}", proxy.addr)).unwrap();
    link.ca = Some(upstream.ca());
    link.server_name = Some("localhost".into());
    link.backoff_max_ms = 200;
    link.compression = compression;
    let source = drain(link, batches, || proxy.set_mode(Mode::Forward));
    let (_, payload) = sent_bytes(&source, "dc");
    (payload, proxy.bytes().0 as f64)
}

/// One drain into the mock Kafka cluster: payload bytes.
fn kafka_drain(batches: &[Vec<u8>], compression: UplinkCompression) -> f64 {
    let cluster = MockCluster::new(1).unwrap();
    cluster.broker_down(1).unwrap();
    let mut link =
        MirrorLinkConfig::parse(&format!("dc=kafka://{}", cluster.bootstrap_servers())).unwrap();
    link.backoff_max_ms = 200;
    link.compression = compression;
    let source = drain(link, batches, || cluster.broker_up(1).unwrap());
    sent_bytes(&source, "dc").1
}

fn uplink_figures(args: &Args) {
    let (batches, value_bytes) = telemetry::batches(SEED, Form::Json, args.records, PER_BATCH);
    println!(
        "{{\"uplink_dataset\":\"json\",\"records\":{},\"value_bytes\":{value_bytes},\"runs\":{}}}",
        args.records, args.runs
    );
    let share = |bytes: f64| bytes / value_bytes as f64;
    for compression in [
        UplinkCompression::None,
        UplinkCompression::Lz4,
        UplinkCompression::Zstd,
    ] {
        let runs: Vec<(f64, f64)> = (0..args.runs)
            .map(|_| eddy_drain(&batches, compression))
            .collect();
        let payload = median(runs.iter().map(|r| r.0).collect());
        let tcp = median(runs.iter().map(|r| r.1).collect());
        println!(
            "{{\"link\":\"eddy\",\"compression\":\"{}\",\"payload_bytes\":{payload},\"payload_of_values\":{:.4},\
             \"tcp_bytes_up\":{tcp},\"tcp_of_values\":{:.4}}}",
            compression.name(),
            share(payload),
            share(tcp)
        );
    }
    for compression in [
        UplinkCompression::None,
        UplinkCompression::Snappy,
        UplinkCompression::Lz4,
        UplinkCompression::Zstd,
    ] {
        let payload = median(
            (0..args.runs)
                .map(|_| kafka_drain(&batches, compression))
                .collect(),
        );
        println!(
            "{{\"link\":\"kafka\",\"compression\":\"{}\",\"payload_bytes\":{payload},\"payload_of_values\":{:.4}}}",
            compression.name(),
            share(payload)
        );
    }
}

fn main() {
    let args = args();
    if let Some(dir) = &args.write {
        telemetry::write_files(dir, SEED, args.records).unwrap();
        eprintln!(
            "wrote the data set ({} readings) to {}",
            args.records,
            dir.display()
        );
        return;
    }
    if args.only.as_deref() != Some("uplink") {
        codec_figures(&args);
    }
    if args.only.as_deref() != Some("codecs") {
        uplink_figures(&args);
    }
}
