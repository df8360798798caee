//! A full disk, for real: `eddy serve` on a 32 MiB tmpfs, filled up by
//! producers. Producers get `DiskFull`, nothing acknowledged is lost, and
//! service resumes once space is freed — by itself while the free-space
//! reserve kept sled from hitting ENOSPC, and after the restart that
//! eddy asks for (it exits non-zero) when sled did hit it (reserve 0):
//! sled cannot reopen on a full disk, so systemd restarts eddy until it can.
//! Every kind of write keeps the reserve (producer inits, group commits,
//! topic creation, a mirror received from another hub), no request makes
//! the hub exit, and a hub with a reserve starts on a disk another program
//! filled to the last byte (its emergency space), read-only until space is
//! freed.
//!
//! Mounting needs root, so these tests are ignored in a plain `cargo test`
//! and `.ci/run` (which runs as root) runs them with `--ignored`. They fail,
//! never skip, when the mount is refused.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::mirror::{check_exactly_once, read_all, wait_error, wait_mirrored};
use common::{values, wait_until, ChildServer, TestServer};
use eddy::client::{Client, ClientError, ClientOptions};
use eddy::wire::batch::Batches;
use eddy::wire::{Acks, ErrorCode, FetchPartition, Response};

/// Size of the small file system.
const FS_MB: u64 = 32;
/// Space taken by a ballast file that is deleted to "free space".
const BALLAST_MB: u64 = 16;

/// A size-limited tmpfs mounted for the test, unmounted on drop.
struct SmallFs {
    _parent: tempfile::TempDir,
    root: PathBuf,
}

impl SmallFs {
    fn mount() -> SmallFs {
        SmallFs::mount_mb(FS_MB)
    }

    fn mount_mb(fs_mb: u64) -> SmallFs {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("fs");
        std::fs::create_dir(&root).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={fs_mb}m"), "tmpfs"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a {fs_mb} MiB tmpfs failed: these tests need root (CI runs them as root)"
        );
        SmallFs {
            _parent: parent,
            root,
        }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn ballast(&self) -> PathBuf {
        self.root.join("ballast")
    }

    fn fill_ballast(&self) {
        self.fill_ballast_mb(BALLAST_MB);
    }

    fn fill_ballast_mb(&self, mb: u64) {
        std::fs::write(self.ballast(), vec![1u8; (mb << 20) as usize]).unwrap();
    }

    /// Another program fills what is left of the file system.
    fn fill_up(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.root.join("filler")).unwrap();
        let chunk = vec![2u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the file system: {e}"),
            }
        }
        let free = rustix::fs::statvfs(&self.root).unwrap();
        assert_eq!(free.f_bavail, 0, "the file system is full");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.root).status();
    }
}

/// Acknowledged records: (partition, offset) → value.
type Acked = BTreeMap<(u32, u64), Vec<u8>>;

/// Produces batches of 100 records of 100 bytes until a request fails;
/// returns what was acknowledged and the error.
async fn produce_until_refused(client: &Client, acked: &mut Acked, tag: &str) -> ClientError {
    for b in 0.. {
        let values_owned: Vec<Vec<u8>> = (0..100)
            .map(|r| format!("{tag}-{b}-{r}-{}", "x".repeat(80)).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values_owned.iter().map(|v| v.as_slice()).collect();
        match client
            .produce("full", Some(0), Acks::Durable, 30_000, &values(&refs))
            .await
        {
            Ok(acks) => {
                for ack in acks {
                    for (i, v) in values_owned.iter().enumerate() {
                        acked.insert((ack.partition, ack.base_offset + i as u64), v.clone());
                    }
                }
            }
            Err(e) => return e,
        }
    }
    unreachable!()
}

/// Every acknowledged record is stored, at its offset, in intact batches.
async fn check_acked(client: &Client, acked: &Acked) {
    let mut offset = 0u64;
    let mut stored = BTreeMap::new();
    loop {
        let body = client
            .fetch(
                "full",
                &[FetchPartition {
                    partition: 0,
                    offset,
                }],
                1 << 20,
                0,
            )
            .await
            .unwrap();
        let Response::Fetched(f) = body.decode().unwrap() else {
            panic!("not a fetch answer")
        };
        if f.partitions[0].batches.is_empty() {
            break;
        }
        for batch in Batches::new(f.partitions[0].batches) {
            let batch = batch.unwrap();
            batch.validate().unwrap();
            assert_eq!(batch.base_offset(), offset, "dense offsets");
            for (i, r) in batch.records().enumerate() {
                stored.insert((0u32, offset + i as u64), r.unwrap().value.to_vec());
            }
            offset = batch.end_offset();
        }
    }
    for (at, value) in acked {
        assert_eq!(
            stored.get(at),
            Some(value),
            "acknowledged record {at:?} lost"
        );
    }
}

fn options(server: &ChildServer) -> ClientOptions {
    server.options()
}

/// A hub with a `reserve_mb` reserve on a small file system that a ballast
/// file half fills.
fn hub_on_small_fs(reserve_mb: u64) -> (SmallFs, ChildServer) {
    let fs = SmallFs::mount();
    fs.fill_ballast();
    let server = start(&fs, reserve_mb);
    (fs, server)
}

fn start(fs: &SmallFs, reserve_mb: u64) -> ChildServer {
    ChildServer::start(&fs.data(), &["--disk-free-min-mb", &reserve_mb.to_string()])
}

/// Produces one batch, retrying while the disk is still full (space was
/// just freed; the reserve looks again within 100 ms).
async fn produce_once_space_is_back(client: &Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .produce("full", Some(0), Acks::Durable, 30_000, &values(&[b"after"]))
            .await
        {
            Ok(_) => return,
            Err(e) if e.code() == Some(ErrorCode::DiskFull) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "writes did not resume"
                );
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("after space came back: {e}"),
        }
    }
}

fn storage_failed(server: &ChildServer) -> f64 {
    let text = common::scrape(server.metrics_addr.unwrap());
    common::metric(&text, "eddy_storage_failed").unwrap()
}

#[test]
#[ignore = "needs root (mounts a tmpfs); .ci/run runs it with --ignored"]
fn a_full_disk_answers_disk_full_loses_nothing_and_resumes_when_space_is_freed() {
    let (fs, server) = hub_on_small_fs(4);
    let mut acked = Acked::new();
    smol::block_on(async {
        let client = Client::connect(&options(&server)).await.unwrap();
        client.create_topic("full", 1).await.unwrap();
        let refused = produce_until_refused(&client, &mut acked, "a").await;
        assert_eq!(refused.code(), Some(ErrorCode::DiskFull), "{refused}");
        assert!(acked.len() >= 1_000, "some records fit: {}", acked.len());
        // Refused cleanly: sled never saw ENOSPC, reads work, nothing lost.
        assert_eq!(storage_failed(&server), 0.0);
        let again = produce_until_refused(&client, &mut acked, "b").await;
        assert_eq!(again.code(), Some(ErrorCode::DiskFull));
        check_acked(&client, &acked).await;
        wait_until(Duration::from_secs(10), "the refusal is logged", || {
            server.log_text().contains("refusing appends with DiskFull")
        });

        // Space comes back: writes resume without a restart.
        std::fs::remove_file(fs.ballast()).unwrap();
        produce_once_space_is_back(&client).await;
        wait_until(Duration::from_secs(10), "the resume is logged", || {
            server.log_text().contains("appends resume")
        });
        check_acked(&client, &acked).await;
    });
    assert!(server.terminate().success());
    let server = start(&fs, 4);
    smol::block_on(async {
        let client = Client::connect(&options(&server)).await.unwrap();
        check_acked(&client, &acked).await;
    });
    println!(
        "{} acknowledged records kept through a full disk",
        acked.len()
    );
}

#[test]
#[ignore = "needs root (mounts a tmpfs); .ci/run runs it with --ignored"]
fn when_sled_itself_hits_enospc_eddy_stops_and_a_restart_recovers_everything_acknowledged() {
    let (fs, mut server) = hub_on_small_fs(0);
    let mut acked = Acked::new();
    smol::block_on(async {
        let client = Client::connect(&options(&server)).await.unwrap();
        client.create_topic("full", 1).await.unwrap();
        let refused = produce_until_refused(&client, &mut acked, "a").await;
        println!("refused with {refused} after {} records", acked.len());
        // DiskFull, or the connection closing as eddy stops.
        assert!(
            matches!(refused.code(), Some(ErrorCode::DiskFull) | None),
            "{refused}"
        );
    });
    // The server stops by itself, non-zero, for its service manager to
    // restart it.
    let status = server.child.wait().unwrap();
    assert!(
        !status.success(),
        "eddy must exit non-zero when storage failed"
    );
    wait_until(Duration::from_secs(10), "the stop is logged", || {
        server
            .log_text()
            .contains("stopping so that the service manager restarts eddy")
    });
    drop(server);

    // While the disk is still full, sled cannot even open its log: eddy
    // refuses to start, naming the problem (systemd retries every 2 s).
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--no-kafka",
            "--data-dir",
        ])
        .arg(fs.data())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("disk full while writing to"), "{stderr}");

    // Space comes back: it starts, everything acknowledged is there, and
    // it takes writes again.
    std::fs::remove_file(fs.ballast()).unwrap();
    let server = start(&fs, 4);
    smol::block_on(async {
        let client = Client::connect(&options(&server)).await.unwrap();
        check_acked(&client, &acked).await;
        produce_once_space_is_back(&client).await;
        check_acked(&client, &acked).await;
    });
    assert!(server.terminate().success());
    println!(
        "{} acknowledged records kept through ENOSPC and a restart",
        acked.len()
    );
}

/// Whether `result` is a refusal for a full disk.
fn is_disk_full<T>(result: &Result<T, ClientError>) -> bool {
    matches!(result, Err(e) if e.code() == Some(ErrorCode::DiskFull))
}

/// Calls `write(i)` for i = 0, 1, … until it is refused with `DiskFull`
/// (asserting that it is, within `tries`); returns the refusal's message.
async fn refused_within<F, Fut, T>(what: &str, tries: u32, mut write: F) -> String
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    for i in 0..tries {
        let result = write(i).await;
        if is_disk_full(&result) {
            return result.err().unwrap().to_string();
        }
        if let Err(e) = result {
            panic!("{what} #{i}: {e}");
        }
    }
    panic!("{what}: {tries} writes past the reserve were all accepted");
}

/// The hub still runs (no request made it exit) and storage is healthy.
fn still_up(server: &mut ChildServer) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "eddy exited:\n{}",
        server.log_text()
    );
    assert_eq!(storage_failed(server), 0.0, "storage failed");
}

#[test]
#[ignore = "needs root (mounts a tmpfs); .ci/run runs it with --ignored"]
fn every_kind_of_write_keeps_the_reserve_and_no_request_stops_the_hub() {
    let (fs, mut server) = hub_on_small_fs(4);
    let mut acked = Acked::new();
    smol::block_on(async {
        let client = Client::connect(&options(&server)).await.unwrap();
        client.create_topic("full", 1).await.unwrap();
        let refused = produce_until_refused(&client, &mut acked, "a").await;
        assert_eq!(refused.code(), Some(ErrorCode::DiskFull), "{refused}");
        // At the reserve now: each kind of write that takes space is
        // refused too, not only appends (each of these used to fill the
        // disk until sled hit ENOSPC and eddy exited).
        let message = refused_within("InitProducer", 200, |i| {
            let client = &client;
            async move { client.init_producer(&format!("device-{i}")).await }
        })
        .await;
        assert!(message.contains("free space there"), "{message}");
        refused_within("commit to a fresh group", 200, |i| {
            let client = &client;
            let offsets = vec![("full".to_string(), 0, 1)];
            async move {
                client
                    .commit_offsets(&format!("group-{i}"), "", -1, &offsets)
                    .await
            }
        })
        .await;
        refused_within("CreateTopic with 2,000 partitions", 1, |i| {
            let client = &client;
            async move { client.create_topic(&format!("wide-{i}"), 2_000).await }
        })
        .await;
        assert!(
            client.describe_topic("wide-0").await.is_err(),
            "not created"
        );
        still_up(&mut server);
        client.ping().await.unwrap();
        check_acked(&client, &acked).await;

        // Space comes back: every kind of write works again.
        std::fs::remove_file(fs.ballast()).unwrap();
        produce_once_space_is_back(&client).await;
        client.init_producer("device-after").await.unwrap();
        let offsets = vec![("full".to_string(), 0, 1)];
        client
            .commit_offsets("group-after", "", -1, &offsets)
            .await
            .unwrap();
        client.create_topic("wide-after", 64).await.unwrap();
        still_up(&mut server);
        check_acked(&client, &acked).await;
    });
    assert!(server.terminate().success());
}

#[test]
#[ignore = "needs root (mounts a tmpfs); .ci/run runs it with --ignored"]
fn a_hub_starts_on_a_full_disk_serves_reads_and_takes_writes_once_space_is_freed() {
    let (fs, server) = hub_on_small_fs(4);
    let mut acked = Acked::new();
    smol::block_on(async {
        let client = Client::connect(&options(&server)).await.unwrap();
        client.create_topic("full", 1).await.unwrap();
        for tag in ["a", "b", "c"] {
            let values_owned: Vec<Vec<u8>> = (0..100)
                .map(|r| format!("{tag}-{r}").into_bytes())
                .collect();
            let refs: Vec<&[u8]> = values_owned.iter().map(|v| v.as_slice()).collect();
            let acks = client
                .produce("full", Some(0), Acks::Durable, 30_000, &values(&refs))
                .await
                .unwrap();
            for (i, v) in values_owned.iter().enumerate() {
                acked.insert((0, acks[0].base_offset + i as u64), v.clone());
            }
        }
    });
    assert!(server.terminate().success());
    let emergency = fs.data().join("emergency-space");
    assert!(emergency.exists(), "the emergency space file was written");

    // Another program fills the disk to the last byte; eddy restarts.
    fs.fill_up();
    let mut server = start(&fs, 4);
    assert!(
        server.log_text().contains("starting on a full disk"),
        "{}",
        server.log_text()
    );
    assert!(!emergency.exists(), "the emergency space was used to start");
    smol::block_on(async {
        let client = Client::connect(&options(&server)).await.unwrap();
        // Reads, metadata and describes work.
        check_acked(&client, &acked).await;
        assert_eq!(client.describe_topic("full").await.unwrap().partitions, 1);
        assert!(client.metadata(&["full"]).await.is_ok());
        // Writes are refused, naming the fix.
        let refused = client
            .produce("full", Some(0), Acks::Durable, 30_000, &values(&[b"x"]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::DiskFull), "{refused}");
        assert!(
            refused.to_string().contains("free space there"),
            "{refused}"
        );
        assert!(is_disk_full(&client.init_producer("late").await));
        still_up(&mut server);

        // Space comes back: writes resume without a restart, and the
        // emergency space is set aside again.
        std::fs::remove_file(fs.root.join("filler")).unwrap();
        std::fs::remove_file(fs.ballast()).unwrap();
        produce_once_space_is_back(&client).await;
        client.init_producer("late").await.unwrap();
        check_acked(&client, &acked).await;
    });
    wait_until(Duration::from_secs(10), "the resume is logged", || {
        server.log_text().contains("appends resume")
    });
    assert!(emergency.exists(), "the emergency space file is back");
    assert!(server.terminate().success());
}

#[test]
#[ignore = "needs root (mounts a tmpfs); .ci/run runs it with --ignored"]
fn an_upstream_receiving_a_mirror_on_a_small_disk_refuses_stays_up_and_completes_it_exactly_once() {
    // The upstream: data on a 64 MiB file system, about 6 MiB usable
    // above its reserve; the mirror brings ~12 MB of records (about as much
    // on disk in segment files).
    let fs = SmallFs::mount_mb(64);
    fs.fill_ballast_mb(50);
    let mut upstream = start(&fs, 4);
    let mut link =
        eddy::config::MirrorLinkConfig::parse(&format!("dc=eddy://{}", upstream.addr)).unwrap();
    link.ca = Some(fs.data().join("tls").join("ca.pem"));
    link.server_name = Some("localhost".into());
    link.backoff_min_ms = 50;
    link.backoff_max_ms = 500;
    let source = TestServer::start_with(|c| {
        c.hub_id = Some("gw-1".into());
        c.mirror = vec![link];
    });
    const RECORDS: u64 = 100_000;
    smol::block_on(async {
        let client = source.client().await;
        client.create_topic("sensors", 4).await.unwrap();
        common::mirror::produce_range(&client, "sensors", 0..RECORDS, 1_000, Acks::Durable).await;
        // The upstream refuses what does not fit, and stays up.
        let error = wait_error(&client, "DiskFull").await;
        println!("the link reports: {error}");
        still_up(&mut upstream);

        // Space comes back upstream: the mirror completes, exactly once.
        std::fs::remove_file(fs.ballast()).unwrap();
        wait_mirrored(&client, "dc", "sensors", Duration::from_secs(180)).await;
        let up = Client::connect(&options(&upstream)).await.unwrap();
        let mirrored = read_all(&up, "gw-1.sensors").await;
        let expected: Vec<u64> = (0..RECORDS).collect();
        check_exactly_once(&mirrored, &expected, None);
        still_up(&mut upstream);
    });
    assert!(upstream.terminate().success());
}
