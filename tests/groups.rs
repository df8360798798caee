//! Consumer groups over the wire: ownership, session expiry, fencing,
//! durability of commits, pub-sub between groups, retention and the disk
//! budget as clients see them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{batch, wait_until, ChildServer, TestServer};
use eddy::client::{
    Client, ClientOptions, GroupConsumer, GroupConsumerOptions, OffsetReset, RebalanceEvent,
};
use eddy::wire::{Acks, ErrorCode, Response};

type Tp = (String, u32);

/// Produces `per_partition` records into each of `partitions` partitions;
/// value = "p{partition}-{n}".
async fn fill(
    client: &Client,
    topic: &str,
    partitions: u32,
    per_partition: u32,
    tag: &str,
) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for p in 0..partitions {
        let values: Vec<String> = (0..per_partition)
            .map(|n| format!("{tag}p{p}-{n}"))
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> =
            values.iter().map(|v| (None, v.as_bytes())).collect();
        client
            .produce(
                topic,
                Some(p),
                Acks::Durable,
                30_000,
                &batch(&records, eddy::time::now_ms_i64()),
            )
            .await
            .unwrap();
        all.extend(values);
    }
    all
}

/// Shared view of who owns what, checked at every rebalance event.
#[derive(Default)]
struct Owners {
    owner: BTreeMap<Tp, String>,
    violations: Vec<String>,
    /// When each partition was last assigned.
    assigned_at: BTreeMap<Tp, Instant>,
}

struct Member {
    name: String,
    stop: Arc<AtomicBool>,
    kill: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(String, i32)>,
}

/// Runs a group member on its own thread; every consumed value goes into
/// `seen`. `kill` makes it vanish without leaving (its connection closes).
fn member(
    options: ClientOptions,
    group: &str,
    topic: &str,
    name: &str,
    session_timeout_ms: u32,
    owners: Arc<Mutex<Owners>>,
    seen: Arc<Mutex<Vec<String>>>,
) -> Member {
    let stop = Arc::new(AtomicBool::new(false));
    let kill = Arc::new(AtomicBool::new(false));
    let (group, topic, name_owned) = (group.to_string(), topic.to_string(), name.to_string());
    let (t_stop, t_kill) = (stop.clone(), kill.clone());
    let thread = std::thread::spawn(move || {
        smol::block_on(async move {
            let client = Client::connect(&options).await.unwrap();
            let mut opts = GroupConsumerOptions::new(&group, &[&topic]);
            opts.client_id = name_owned.clone();
            opts.session_timeout_ms = session_timeout_ms;
            opts.reset = OffsetReset::Earliest;
            opts.fetch_wait_ms_max = 100;
            let mut consumer = GroupConsumer::new(client, opts);
            let me = name_owned.clone();
            let listener_owners = owners.clone();
            consumer.set_listener(move |event| {
                let mut o = listener_owners.lock().unwrap();
                match event {
                    RebalanceEvent::Assigned(tps) => {
                        for tp in tps {
                            if let Some(other) = o.owner.get(tp) {
                                let v = format!("{tp:?} assigned to {me} while {other} owns it");
                                o.violations.push(v);
                            }
                            o.owner.insert(tp.clone(), me.clone());
                            o.assigned_at.insert(tp.clone(), Instant::now());
                        }
                    }
                    RebalanceEvent::Revoked(tps) | RebalanceEvent::Lost(tps) => {
                        for tp in tps {
                            if o.owner.get(tp) == Some(&me) {
                                o.owner.remove(tp);
                            }
                        }
                    }
                }
            });
            loop {
                if t_kill.load(Ordering::SeqCst) {
                    let id = (consumer.member_id().to_string(), consumer.epoch());
                    // Vanish: it stops consuming now, but never tells the
                    // coordinator.
                    let mut o = owners.lock().unwrap();
                    let mine: Vec<Tp> = o
                        .owner
                        .iter()
                        .filter(|(_, who)| **who == name_owned)
                        .map(|(tp, _)| tp.clone())
                        .collect();
                    for tp in mine {
                        o.owner.remove(&tp);
                    }
                    return id;
                }
                if t_stop.load(Ordering::SeqCst) {
                    let id = (consumer.member_id().to_string(), consumer.epoch());
                    consumer.leave().await.unwrap();
                    return id;
                }
                if let Some(polled) = consumer.poll().await.unwrap() {
                    let mut got = Vec::new();
                    polled
                        .for_each(|_, _, _, r| {
                            got.push(String::from_utf8(r.value.to_vec()).unwrap())
                        })
                        .unwrap();
                    seen.lock().unwrap().extend(got);
                    consumer.commit().await.unwrap();
                }
            }
        })
    });
    Member {
        name: name.to_string(),
        stop,
        kill,
        thread,
    }
}

fn distinct(seen: &Mutex<Vec<String>>) -> BTreeSet<String> {
    seen.lock().unwrap().iter().cloned().collect()
}

#[test]
fn three_members_share_six_partitions_and_a_killed_one_is_replaced() {
    let server = TestServer::start();
    let session_ms = 4_000u32;
    let client = smol::block_on(server.client());
    smol::block_on(client.create_topic("t", 6)).unwrap();
    let mut expected = smol::block_on(fill(&client, "t", 6, 500, "a"));
    let owners = Arc::new(Mutex::new(Owners::default()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut members: Vec<Member> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| {
            member(
                server.options(),
                "g",
                "t",
                n,
                session_ms,
                owners.clone(),
                seen.clone(),
            )
        })
        .collect();
    wait_until(Duration::from_secs(60), "every record consumed", || {
        distinct(&seen).len() == expected.len()
    });
    assert_eq!(distinct(&seen), expected);
    // Balanced and stable: two partitions each.
    wait_until(Duration::from_secs(30), "a stable group", || {
        let info = smol::block_on(client.describe_group("g")).unwrap();
        let stable = info.state == eddy::wire::GroupState::Stable
            && info.members.len() == 3
            && info.members.iter().all(|m| m.assigned.len() == 2);
        // The members' own view (their heartbeat answers may be in flight).
        let o = owners.lock().unwrap();
        stable
            && ["m1", "m2", "m3"]
                .iter()
                .all(|m| o.owner.values().filter(|w| w.as_str() == *m).count() == 2)
    });

    // Kill m3 without leaving; new data in every partition.
    let victim = members.pop().unwrap();
    let victim_partitions: Vec<Tp> = owners
        .lock()
        .unwrap()
        .owner
        .iter()
        .filter(|(_, who)| **who == victim.name)
        .map(|(tp, _)| tp.clone())
        .collect();
    assert_eq!(victim_partitions.len(), 2);
    let committed_before = smol::block_on(client.describe_group("g")).unwrap();
    victim.kill.store(true, Ordering::SeqCst);
    let killed_at = Instant::now();
    let (victim_id, victim_epoch) = victim.thread.join().unwrap();
    expected.extend(smol::block_on(fill(&client, "t", 6, 100, "b")));
    wait_until(
        Duration::from_secs(60),
        "the killed member's partitions consumed by the others",
        || distinct(&seen).len() == expected.len(),
    );
    assert_eq!(distinct(&seen), expected);
    {
        let o = owners.lock().unwrap();
        for tp in &victim_partitions {
            let moved = o.assigned_at[tp].duration_since(killed_at);
            // Its last heartbeat was at most one interval (session/3) before
            // the kill: the partition cannot move earlier than this.
            assert!(
                moved >= Duration::from_millis(u64::from(session_ms) * 2 / 3),
                "{tp:?} moved {moved:?} after the kill, before the session timeout"
            );
            assert_ne!(o.owner.get(tp), Some(&victim.name));
        }
        assert!(o.violations.is_empty(), "{:?}", o.violations);
    }
    // The stale member's commit is refused; its committed offsets stand
    // (or moved on only by their new owners).
    let stale = smol::block_on(client.commit_offsets(
        "g",
        &victim_id,
        victim_epoch,
        &[(victim_partitions[0].0.clone(), victim_partitions[0].1, 0)],
    ))
    .unwrap_err();
    assert_eq!(stale.code(), Some(ErrorCode::UnknownMemberId), "{stale}");
    wait_until(
        Duration::from_secs(30),
        "every partition committed to its end",
        || {
            let info = smol::block_on(client.describe_group("g")).unwrap();
            info.partitions.iter().all(|p| p.lag() == Some(0))
        },
    );
    let after = smol::block_on(client.describe_group("g")).unwrap();
    for p in &after.partitions {
        let before = committed_before
            .partitions
            .iter()
            .find(|b| b.topic == p.topic && b.partition == p.partition)
            .and_then(|b| b.committed);
        assert!(p.committed >= before, "{p:?} went back");
        assert_eq!(
            p.committed,
            Some(p.high_watermark),
            "everything committed: lag 0"
        );
    }
    assert_eq!(after.members.len(), 2);
    for m in members {
        m.stop.store(true, Ordering::SeqCst);
        m.thread.join().unwrap();
    }
    assert!(owners.lock().unwrap().violations.is_empty());
    // Empty now: the group's offsets can be reset (admin commit).
    smol::block_on(client.commit_offsets("g", "", -1, &[("t".into(), 0, 3)])).unwrap();
}

#[test]
fn two_groups_each_get_every_record() {
    let server = TestServer::start();
    let client = smol::block_on(server.client());
    smol::block_on(client.create_topic("t", 3)).unwrap();
    let expected = smol::block_on(fill(&client, "t", 3, 200, ""));
    let owners = Arc::new(Mutex::new(Owners::default()));
    let (seen_a, seen_b) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let a = member(
        server.options(),
        "ga",
        "t",
        "a",
        10_000,
        Arc::new(Mutex::new(Owners::default())),
        seen_a.clone(),
    );
    let b = member(
        server.options(),
        "gb",
        "t",
        "b",
        10_000,
        owners,
        seen_b.clone(),
    );
    wait_until(
        Duration::from_secs(60),
        "both groups consumed everything",
        || distinct(&seen_a).len() == expected.len() && distinct(&seen_b).len() == expected.len(),
    );
    assert_eq!(distinct(&seen_a), expected);
    assert_eq!(distinct(&seen_b), expected);
    assert_eq!(
        seen_a.lock().unwrap().len(),
        expected.len(),
        "no duplicates without failures"
    );
    for m in [a, b] {
        m.stop.store(true, Ordering::SeqCst);
        m.thread.join().unwrap();
    }
    let groups = smol::block_on(client.list_groups()).unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, ["ga", "gb"]);
    assert!(groups
        .iter()
        .all(|g| g.members == 0 && g.state == eddy::wire::GroupState::Empty));
}

#[test]
fn committed_offsets_survive_kill_9_and_consumption_resumes_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let client = smol::block_on(Client::connect(&server.options())).unwrap();
    smol::block_on(client.create_topic("t", 4)).unwrap();
    let expected = smol::block_on(fill(&client, "t", 4, 300, ""));
    // First run: consume about half, committing as we go.
    let mut first: Vec<(u32, u64, String)> = Vec::new();
    let committed = smol::block_on(async {
        let mut opts = GroupConsumerOptions::new("g", &["t"]);
        opts.reset = OffsetReset::Earliest;
        opts.fetch_bytes_max = 2_000;
        let mut consumer =
            GroupConsumer::join(Client::connect(&server.options()).await.unwrap(), opts)
                .await
                .unwrap();
        while first.len() < 600 {
            if let Some(polled) = consumer.poll().await.unwrap() {
                polled
                    .for_each(|p, o, _, r| {
                        first.push((p, o, String::from_utf8(r.value.to_vec()).unwrap()))
                    })
                    .unwrap();
                consumer.commit().await.unwrap();
            }
        }
        consumer.positions().clone()
    });
    server.kill9();
    let server = ChildServer::start(dir.path(), &[]);
    let client = smol::block_on(Client::connect(&server.options())).unwrap();
    let stored = smol::block_on(client.fetch_offsets("g", &["t"])).unwrap();
    let stored: BTreeMap<Tp, u64> = stored.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
    assert_eq!(
        stored, committed,
        "every acknowledged commit survived kill -9"
    );
    // Second run: a new member resumes exactly at the committed offsets.
    let mut second: Vec<(u32, u64, String)> = Vec::new();
    smol::block_on(async {
        let mut opts = GroupConsumerOptions::new("g", &["t"]);
        opts.reset = OffsetReset::Earliest;
        let mut consumer =
            GroupConsumer::join(Client::connect(&server.options()).await.unwrap(), opts)
                .await
                .unwrap();
        while first.len() + second.len() < expected.len() {
            if let Some(polled) = consumer.poll().await.unwrap() {
                polled
                    .for_each(|p, o, _, r| {
                        second.push((p, o, String::from_utf8(r.value.to_vec()).unwrap()))
                    })
                    .unwrap();
                consumer.commit().await.unwrap();
            }
        }
        consumer.leave().await.unwrap();
    });
    for (p, o, _) in &second {
        assert!(
            *o >= committed[&("t".to_string(), *p)],
            "offset {o} of {p} redelivered"
        );
    }
    let all: BTreeSet<String> = first
        .iter()
        .chain(second.iter())
        .map(|(_, _, v)| v.clone())
        .collect();
    assert_eq!(all, expected, "nothing lost");
}

#[test]
fn retention_moves_the_log_start_and_fetches_below_it_say_so() {
    let server = TestServer::start_with(|c| c.maintenance_interval_ms = 20);
    let client = smol::block_on(server.client());
    let created = smol::block_on(client.create_topic_with(
        "r",
        1,
        &[("retention.ms".into(), "60000".into())],
    ))
    .unwrap();
    assert_eq!(
        created.configs,
        vec![("retention.ms".to_string(), "60000".to_string())]
    );
    // Bad settings are refused with the setting named.
    let bad =
        smol::block_on(client.create_topic_with("x", 1, &[("retention.ms".into(), "soon".into())]))
            .unwrap_err();
    assert_eq!(bad.code(), Some(ErrorCode::InvalidConfig));
    assert!(bad.to_string().contains("retention.ms"), "{bad}");
    // Old records (timestamp 1000) and new ones.
    let old: Vec<(Option<&[u8]>, &[u8])> = vec![(None, b"old"); 10];
    smol::block_on(client.produce("r", Some(0), Acks::Durable, 30_000, &batch(&old, 1_000)))
        .unwrap();
    let new: Vec<(Option<&[u8]>, &[u8])> = vec![(None, b"new"); 5];
    smol::block_on(client.produce(
        "r",
        Some(0),
        Acks::Durable,
        30_000,
        &batch(&new, eddy::time::now_ms_i64()),
    ))
    .unwrap();
    wait_until(
        Duration::from_secs(30),
        "retention removed the old batch",
        || smol::block_on(client.watermarks("r")).unwrap()[0].log_start == 10,
    );
    let body = smol::block_on(client.fetch(
        "r",
        &[eddy::wire::FetchPartition {
            partition: 0,
            offset: 3,
        }],
        1 << 20,
        0,
    ))
    .unwrap();
    let Response::Fetched(f) = body.decode().unwrap() else {
        panic!()
    };
    assert_eq!(f.partitions[0].error, Some(ErrorCode::OffsetOutOfRange));
    assert_eq!(f.partitions[0].log_start, 10, "carries the earliest offset");
    let stats = smol::block_on(client.topic_stats("r")).unwrap();
    assert_eq!(stats[0].retention_removed_records, 10);
    // alter: keep forever; describe shows it.
    let altered =
        smol::block_on(client.alter_topic("r", &[("retention.ms".into(), "-1".into())], &[]))
            .unwrap();
    assert_eq!(
        altered.configs,
        vec![("retention.ms".to_string(), "-1".to_string())]
    );
    let reset = smol::block_on(client.alter_topic("r", &[], &["retention.ms".into()])).unwrap();
    assert!(reset.configs.is_empty());
}

#[test]
fn disk_budget_reject_loses_nothing_acknowledged_and_drop_oldest_counts() {
    let server = TestServer::start_with(|c| {
        c.storage.disk_budget_bytes = Some(64 << 10);
    });
    let client = smol::block_on(server.client());
    smol::block_on(client.create_topic_with("keep", 1, &[("priority".into(), "5".into())]))
        .unwrap();
    smol::block_on(client.create_topic_with(
        "shed",
        1,
        &[
            ("on_full".into(), "drop_oldest".into()),
            ("priority".into(), "1".into()),
        ],
    ))
    .unwrap();
    let value = vec![b'v'; 1_000];
    let records: Vec<(Option<&[u8]>, &[u8])> = vec![(None, value.as_slice()); 3];
    // Some `shed` data first, then fill with `keep` until the budget refuses.
    for i in 0..4 {
        smol::block_on(client.produce(
            "shed",
            Some(0),
            Acks::Durable,
            30_000,
            &batch(&records, 10 + i),
        ))
        .unwrap();
    }
    let mut acked = 0u64;
    let refusal = loop {
        match smol::block_on(client.produce(
            "keep",
            Some(0),
            Acks::Durable,
            30_000,
            &batch(&records, 5),
        )) {
            Ok(_) => acked += 3,
            Err(e) => break e,
        }
        assert!(acked < 1_000, "the budget never refused");
    };
    assert_eq!(refusal.code(), Some(ErrorCode::DiskFull), "{refusal}");
    assert!(refusal.to_string().contains("on_full=reject"), "{refusal}");
    let marks = smol::block_on(client.watermarks("keep")).unwrap();
    assert_eq!(
        marks[0].durable, acked,
        "everything acknowledged is there, nothing more"
    );
    // `shed` (drop_oldest) makes room by dropping its own oldest batches.
    for i in 0..4 {
        smol::block_on(client.produce(
            "shed",
            Some(0),
            Acks::Durable,
            30_000,
            &batch(&records, 100 + i),
        ))
        .unwrap();
    }
    let stats = smol::block_on(client.topic_stats("shed")).unwrap();
    assert_eq!(
        stats[0].dropped_records, 12,
        "the four oldest batches were dropped and counted"
    );
    let shed = smol::block_on(client.watermarks("shed")).unwrap();
    assert_eq!((shed[0].log_start, shed[0].durable), (12, 24));
    // `keep` lost nothing.
    let keep = smol::block_on(client.watermarks("keep")).unwrap();
    assert_eq!((keep[0].log_start, keep[0].durable), (0, acked));
    assert_eq!(
        smol::block_on(client.topic_stats("keep")).unwrap()[0].dropped_records,
        0
    );
}

fn eddy(server: &ChildServer, args: &[&str]) -> std::process::Output {
    let ca = server.data_dir.join("tls").join("ca.pem");
    std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--ca")
        .arg(ca)
        .output()
        .unwrap()
}

#[test]
fn cli_group_consumer_commits_after_output_and_leaves_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let client = smol::block_on(Client::connect(&server.options())).unwrap();
    smol::block_on(client.create_topic("t", 2)).unwrap();
    let expected = smol::block_on(fill(&client, "t", 2, 50, ""));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "consume",
            "--group",
            "g",
            "--topic",
            "t",
            "--from-beginning",
            "--session-timeout-ms",
            "60000",
        ])
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--ca")
        .arg(server.data_dir.join("tls").join("ca.pem"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut got = BTreeSet::new();
    while got.len() < expected.len() {
        got.insert(lines.next().unwrap().unwrap());
    }
    assert_eq!(got, expected);
    wait_until(
        Duration::from_secs(30),
        "offsets committed after output",
        || {
            let info = smol::block_on(client.describe_group("g")).unwrap();
            info.members.len() == 1 && info.partitions.iter().all(|p| p.lag() == Some(0))
        },
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "exits 0 on SIGTERM");
    // Gone at once: a 60 s session could not have expired.
    let info = smol::block_on(client.describe_group("g")).unwrap();
    assert!(info.members.is_empty(), "left the group cleanly: {info:?}");
    // Reset (inactive group): dry run changes nothing, --execute does.
    let dry = eddy(
        &server,
        &["groups", "reset", "g", "--topic", "t:1", "--to-earliest"],
    );
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run"));
    let info = smol::block_on(client.describe_group("g")).unwrap();
    assert!(info.partitions.iter().all(|p| p.committed == Some(50)));
    let run = eddy(
        &server,
        &[
            "groups",
            "reset",
            "g",
            "--topic",
            "t:1",
            "--to-earliest",
            "--execute",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let info = smol::block_on(client.describe_group("g")).unwrap();
    let committed: Vec<Option<u64>> = info.partitions.iter().map(|p| p.committed).collect();
    assert_eq!(committed, [Some(50), Some(0)]);
    let shift = eddy(
        &server,
        &[
            "groups",
            "reset",
            "g",
            "--topic",
            "t",
            "--shift-by",
            "-10",
            "--execute",
        ],
    );
    assert!(
        shift.status.success(),
        "{}",
        String::from_utf8_lossy(&shift.stderr)
    );
    let info = smol::block_on(client.describe_group("g")).unwrap();
    let committed: Vec<Option<u64>> = info.partitions.iter().map(|p| p.committed).collect();
    assert_eq!(
        committed,
        [Some(40), Some(0)],
        "shifted and clamped at the log start"
    );
    let list = eddy(&server, &["groups", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("g\tEmpty\t0 members"));
    // Topic settings from the CLI.
    let alter = eddy(
        &server,
        &[
            "topics",
            "alter",
            "t",
            "--config",
            "cleanup.policy=compact",
            "--config",
            "priority=4",
        ],
    );
    assert!(
        alter.status.success(),
        "{}",
        String::from_utf8_lossy(&alter.stderr)
    );
    let describe = eddy(&server, &["topics", "describe", "t"]);
    let text = String::from_utf8_lossy(&describe.stdout);
    assert!(text.contains("cleanup.policy = compact\n"), "{text}");
    assert!(text.contains("retention.ms = -1 (default)"), "{text}");
    let bad = eddy(
        &server,
        &["topics", "alter", "t", "--config", "on_full=explode"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("reject or drop_oldest"));
}
