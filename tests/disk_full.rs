//! A full disk, for real: `eddy serve` on a 32 MiB tmpfs, filled up by
//! producers. Producers get `DiskFull`, nothing acknowledged is lost, and
//! service resumes once space is freed — by itself while the free-space
//! reserve kept sled from hitting ENOSPC, and after the restart that
//! eddy asks for (it exits non-zero) when sled did hit it (reserve 0):
//! sled cannot reopen on a full disk, so systemd restarts eddy until it can.
//!
//! Mounting needs root, so these tests are ignored in a plain `cargo test`
//! and `.ci/run` (which runs as root) runs them with `--ignored`. They fail,
//! never skip, when the mount is refused.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{values, wait_until, ChildServer};
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
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("fs");
        std::fs::create_dir(&root).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_MB}m"), "tmpfs"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a {FS_MB} MiB tmpfs failed: these tests need root (CI runs them as root)"
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
        std::fs::write(self.ballast(), vec![1u8; (BALLAST_MB << 20) as usize]).unwrap();
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
    let fs = SmallFs::mount();
    fs.fill_ballast();
    let server = start(&fs, 4);
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
    let fs = SmallFs::mount();
    fs.fill_ballast();
    let mut server = start(&fs, 0);
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
