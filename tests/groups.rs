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

/// What a member consumed: partition, offset, value.
type Consumed = (u32, u64, String);

/// Per partition: the highest offset a member's commit was acknowledged
/// for.
#[derive(Default)]
struct Commits {
    acked: BTreeMap<Tp, u64>,
}

struct Member {
    name: String,
    stop: Arc<AtomicBool>,
    kill: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<MemberEnd>,
}

/// How a member thread ended.
#[derive(Debug)]
struct MemberEnd {
    member_id: String,
    epoch: i32,
    /// The call that failed (e.g. the server went away).
    error: Option<String>,
}

/// A member's settings.
struct MemberSetup<'a> {
    options: ClientOptions,
    group: &'a str,
    topic: &'a str,
    name: &'a str,
    session_timeout_ms: u32,
    fetch_bytes_max: u32,
    owners: Arc<Mutex<Owners>>,
    seen: Arc<Mutex<Vec<Consumed>>>,
    commits: Arc<Mutex<Commits>>,
}

/// Runs a group member on its own thread with a default setup; every
/// consumed value goes into `seen`. `kill` makes it vanish without leaving
/// (its connection closes).
fn member(
    options: ClientOptions,
    group: &str,
    topic: &str,
    name: &str,
    session_timeout_ms: u32,
    owners: Arc<Mutex<Owners>>,
    seen: Arc<Mutex<Vec<Consumed>>>,
) -> Member {
    spawn_member(MemberSetup {
        options,
        group,
        topic,
        name,
        session_timeout_ms,
        fetch_bytes_max: eddy::client::group::GROUP_FETCH_BYTES_MAX_DEFAULT,
        owners,
        seen,
        commits: Arc::default(),
    })
}

/// Runs a member: polls, records what it consumed and its commits, checks
/// ownership at every rebalance event; ends on `stop` (leaving), `kill`
/// (vanishing) or the first failed call.
fn spawn_member(setup: MemberSetup<'_>) -> Member {
    let stop = Arc::new(AtomicBool::new(false));
    let kill = Arc::new(AtomicBool::new(false));
    let (group, topic, name_owned) = (
        setup.group.to_string(),
        setup.topic.to_string(),
        setup.name.to_string(),
    );
    let (t_stop, t_kill) = (stop.clone(), kill.clone());
    let MemberSetup {
        options,
        session_timeout_ms,
        fetch_bytes_max,
        owners,
        seen,
        commits,
        ..
    } = setup;
    let thread = std::thread::spawn(move || {
        smol::block_on(async move {
            let client = Client::connect(&options).await.unwrap();
            let mut opts = GroupConsumerOptions::new(&group, &[&topic]);
            opts.client_id = name_owned.clone();
            opts.session_timeout_ms = session_timeout_ms;
            opts.reset = OffsetReset::Earliest;
            opts.fetch_wait_ms_max = 100;
            opts.fetch_bytes_max = fetch_bytes_max;
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
            let end = |consumer: &GroupConsumer, error: Option<String>| MemberEnd {
                member_id: consumer.member_id().to_string(),
                epoch: consumer.epoch(),
                error,
            };
            // Forgets what this member owned (it no longer consumes).
            let disown = |owners: &Mutex<Owners>| {
                let mut o = owners.lock().unwrap();
                o.owner.retain(|_, who| *who != name_owned);
            };
            loop {
                if t_kill.load(Ordering::SeqCst) {
                    // Vanish: it stops consuming now, but never tells the
                    // coordinator.
                    disown(&owners);
                    return end(&consumer, None);
                }
                if t_stop.load(Ordering::SeqCst) {
                    let id = end(&consumer, None);
                    consumer.leave().await.unwrap();
                    return id;
                }
                let polled = match consumer.poll().await {
                    Ok(polled) => polled,
                    Err(e) => {
                        disown(&owners);
                        return end(&consumer, Some(format!("poll: {e}")));
                    }
                };
                if let Some(polled) = polled {
                    let mut got = Vec::new();
                    polled
                        .for_each(|p, o, _, r| {
                            got.push((p, o, String::from_utf8(r.value.to_vec()).unwrap()))
                        })
                        .unwrap();
                    seen.lock().unwrap().extend(got);
                    let offsets = consumer.uncommitted();
                    if let Err(e) = consumer.commit().await {
                        disown(&owners);
                        return end(&consumer, Some(format!("commit: {e}")));
                    }
                    let mut c = commits.lock().unwrap();
                    for (t, p, o) in offsets {
                        let e = c.acked.entry((t, p)).or_default();
                        *e = (*e).max(o);
                    }
                }
            }
        })
    });
    Member {
        name: setup.name.to_string(),
        stop,
        kill,
        thread,
    }
}

/// Stops members (they leave) and checks they ended without errors.
fn stop_all(members: Vec<Member>) {
    for m in &members {
        m.stop.store(true, Ordering::SeqCst);
    }
    for m in members {
        let end = m.thread.join().unwrap();
        assert!(end.error.is_none(), "{}: {end:?}", m.name);
    }
}

fn distinct(seen: &Mutex<Vec<Consumed>>) -> BTreeSet<String> {
    seen.lock().unwrap().iter().map(|c| c.2.clone()).collect()
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
    let victim_end = victim.thread.join().unwrap();
    assert!(victim_end.error.is_none(), "{victim_end:?}");
    let (victim_id, victim_epoch) = (victim_end.member_id, victim_end.epoch);
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
    stop_all(members);
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
    stop_all(vec![a, b]);
    let groups = smol::block_on(client.list_groups()).unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, ["ga", "gb"]);
    assert!(groups
        .iter()
        .all(|g| g.members == 0 && g.state == eddy::wire::GroupState::Empty));
}

/// The issue's restart: three members of one group consume a 6-partition
/// topic, committing as they go, when the server is killed with -9. After
/// the restart every acknowledged commit is there (and nothing beyond what
/// was sent), a commit under a pre-restart member id is refused, and three
/// new members resume exactly at the committed offsets and consume the rest
/// without loss, each partition owned by at most one member at a time.
#[test]
fn three_members_resume_at_their_commits_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let client = smol::block_on(Client::connect(&server.options())).unwrap();
    smol::block_on(client.create_topic("t", 6)).unwrap();
    let per_partition = 300u64;
    let expected = smol::block_on(fill(&client, "t", 6, 300, ""));
    let owners = Arc::new(Mutex::new(Owners::default()));
    let first_seen = Arc::new(Mutex::new(Vec::new()));
    let commits = Arc::new(Mutex::new(Commits::default()));
    let setup = |options: ClientOptions, name, seen: &Arc<Mutex<Vec<Consumed>>>| MemberSetup {
        options,
        group: "g",
        topic: "t",
        name,
        session_timeout_ms: 10_000,
        // Small fetches: many polls and commits per partition.
        fetch_bytes_max: 2_000,
        owners: owners.clone(),
        seen: seen.clone(),
        commits: commits.clone(),
    };
    let members: Vec<Member> = ["a1", "a2", "a3"]
        .into_iter()
        .map(|n| spawn_member(setup(server.options(), n, &first_seen)))
        .collect();
    wait_until(
        Duration::from_secs(60),
        "three members, half consumed",
        || {
            let members = smol::block_on(client.describe_group("g")).map_or(0, |i| i.members.len());
            members == 3 && distinct(&first_seen).len() >= expected.len() / 2
        },
    );
    server.kill9();
    let ends: Vec<MemberEnd> = members
        .into_iter()
        .map(|m| m.thread.join().unwrap())
        .collect();
    for end in &ends {
        assert!(end.error.is_some(), "a member outlived its server: {end:?}");
    }
    assert!(owners.lock().unwrap().violations.is_empty());

    let server = ChildServer::start(dir.path(), &[]);
    let client = smol::block_on(Client::connect(&server.options())).unwrap();
    let stored: BTreeMap<Tp, u64> = smol::block_on(client.fetch_offsets("g", &["t"]))
        .unwrap()
        .into_iter()
        .map(|(t, p, o)| ((t, p), o))
        .collect();
    {
        let c = commits.lock().unwrap();
        assert!(!c.acked.is_empty());
        let seen = first_seen.lock().unwrap();
        for (tp, acked) in &c.acked {
            let got = stored.get(tp).copied();
            // Never beyond what a member consumed: commits follow the work.
            let consumed_end = seen
                .iter()
                .filter(|s| s.0 == tp.1)
                .map(|s| s.1 + 1)
                .max()
                .or(Some(0));
            assert!(
                got >= Some(*acked) && got <= consumed_end,
                "{tp:?}: stored {got:?}, acknowledged {acked}, consumed up to {consumed_end:?}"
            );
        }
    }
    // A pre-restart member id is fenced, with or without a live group.
    let stale = |client: &Client, end: &MemberEnd| {
        let err = smol::block_on(client.commit_offsets(
            "g",
            &end.member_id,
            end.epoch,
            &[("t".into(), 0, 0)],
        ))
        .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownMemberId), "{err}");
    };
    stale(&client, &ends[0]);

    let second_seen = Arc::new(Mutex::new(Vec::new()));
    let members: Vec<Member> = ["b1", "b2", "b3"]
        .into_iter()
        .map(|n| spawn_member(setup(server.options(), n, &second_seen)))
        .collect();
    wait_until(Duration::from_secs(60), "the rest consumed", || {
        let mut all = distinct(&first_seen);
        all.extend(distinct(&second_seen));
        all.len() == expected.len()
    });
    let info = smol::block_on(client.describe_group("g")).unwrap();
    assert_eq!(info.members.len(), 3);
    for end in &ends {
        stale(&client, end);
    }
    stop_all(members);
    assert!(
        owners.lock().unwrap().violations.is_empty(),
        "{:?}",
        owners.lock().unwrap().violations
    );
    let mut all = distinct(&first_seen);
    all.extend(distinct(&second_seen));
    assert_eq!(all, expected, "nothing lost");
    // The new members started exactly at the committed offsets (records
    // below them are not delivered again) and read every offset after.
    for p in 0..6u32 {
        let tp = ("t".to_string(), p);
        let from = stored.get(&tp).copied().unwrap_or(0);
        let offsets: BTreeSet<u64> = second_seen
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == p)
            .map(|c| c.1)
            .collect();
        assert_eq!(
            offsets,
            (from..per_partition).collect::<BTreeSet<u64>>(),
            "partition {p}: resumed at {from}"
        );
    }
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

/// Produces `n` records of ~1,000 bytes named `{name}-{first}`… to
/// partition 0 of `topic`; returns what was acknowledged (offset, value)
/// or the error.
fn produce_named(
    client: &Client,
    topic: &str,
    name: &str,
    first: u64,
    n: u64,
    timestamp_ms: i64,
) -> Result<Vec<(u64, String)>, eddy::client::ClientError> {
    let values: Vec<String> = (first..first + n)
        .map(|i| format!("{name}-{i:06}-{}", "x".repeat(980)))
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> =
        values.iter().map(|v| (None, v.as_bytes())).collect();
    let acks = smol::block_on(client.produce(
        topic,
        Some(0),
        Acks::Durable,
        30_000,
        &batch(&records, timestamp_ms),
    ))?;
    let base = acks[0].base_offset;
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, v)| (base + i as u64, v))
        .collect())
}

/// Every stored record of partition 0 of `topic`, read back over the wire.
fn stored(client: &Client, topic: &str) -> Vec<(u64, String)> {
    smol::block_on(common::mirror::read_all(client, topic))
        .into_iter()
        .map(|r| (r.offset, String::from_utf8(r.value).unwrap()))
        .collect()
}

/// The disk budget over the wire, through a kill -9: a reject topic of a
/// higher priority keeps being written while a lower-priority drop_oldest
/// topic has data to shed (shed oldest first and counted), and gets
/// `DiskFull` once it has none; the drop_oldest topic cannot shed it; every
/// record either acknowledged is read back (the shed ones are the oldest,
/// the rest intact), before and after the restart; a drop_oldest topic
/// alone sheds its own oldest.
#[test]
fn disk_budget_sheds_for_reject_writers_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--disk-budget-mb", "1"];
    let server = ChildServer::start(dir.path(), &args);
    let client = smol::block_on(Client::connect(&server.options())).unwrap();
    let settings = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    smol::block_on(client.create_topic_with("keep", 1, &settings(&[("priority", "5")]))).unwrap();
    smol::block_on(client.create_topic_with(
        "shed",
        1,
        &settings(&[("on_full", "drop_oldest"), ("priority", "1")]),
    ))
    .unwrap();
    // Shed: 8 batches of 30 records, oldest first.
    let mut shed_acked = Vec::new();
    for i in 0..8 {
        shed_acked
            .extend(produce_named(&client, "shed", "shed", i * 30, 30, 10 + i as i64).unwrap());
    }
    // Keep writes until refused; it sheds `shed` on the way.
    let mut keep_acked = Vec::new();
    let refusal = loop {
        match produce_named(&client, "keep", "keep", keep_acked.len() as u64, 30, 1_000) {
            Ok(acked) => keep_acked.extend(acked),
            Err(e) => {
                // Refused only once nothing of shed was left to drop.
                let shed = smol::block_on(client.watermarks("shed")).unwrap()[0];
                assert_eq!(
                    shed.log_start, shed.durable,
                    "keep was refused while shed still held data"
                );
                break e;
            }
        }
        assert!(keep_acked.len() < 10_000, "the budget never refused");
    };
    assert_eq!(refusal.code(), Some(ErrorCode::DiskFull), "{refusal}");
    assert!(refusal.to_string().contains("on_full=reject"), "{refusal}");
    assert!(
        keep_acked.len() > 8 * 30,
        "keep wrote into the room shed made"
    );
    let shed_stats = smol::block_on(client.topic_stats("shed")).unwrap();
    assert_eq!(
        shed_stats[0].dropped_records, 240,
        "all of shed dropped, counted"
    );
    // Shed (priority 1) cannot shed keep (priority 5, reject).
    let err = produce_named(&client, "shed", "shed", 240, 30, 2_000).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::DiskFull), "{err}");
    assert!(err.to_string().contains("priority 1 or lower"), "{err}");
    // Every acknowledged keep record reads back; shed is empty.
    assert_eq!(stored(&client, "keep"), keep_acked);
    assert!(stored(&client, "shed").is_empty());
    server.kill9();
    let server = ChildServer::start(dir.path(), &args);
    let client = smol::block_on(Client::connect(&server.options())).unwrap();
    assert_eq!(stored(&client, "keep"), keep_acked, "after kill -9");
    // Drops of the refused write may not have reached the disk before the
    // kill (nothing acknowledged depended on them): what shed holds is its
    // newest records, unchanged.
    let shed_left = stored(&client, "shed");
    assert!(
        shed_acked.ends_with(&shed_left),
        "shed after kill -9: {} records, not the newest of what it was sent",
        shed_left.len()
    );
    let err = produce_named(&client, "keep", "keep", 0, 30, 1_000).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::DiskFull), "still full: {err}");
    // Free keep's room: shed alone now fills the budget and sheds its own
    // oldest batches, keeping the newest.
    smol::block_on(client.delete_topic("keep")).unwrap();
    let mut shed_acked = Vec::new();
    let mut i = 0;
    while smol::block_on(client.topic_stats("shed")).unwrap()[0].dropped_records < 300 {
        shed_acked.extend(
            produce_named(&client, "shed", "shed", 1_000 + i * 30, 30, 100 + i as i64).unwrap(),
        );
        i += 1;
        assert!(i < 1_000, "shed never shed itself");
    }
    let left = stored(&client, "shed");
    let start = left[0].0;
    assert!(start > shed_acked[0].0, "the oldest went");
    assert_eq!(
        left,
        shed_acked
            .iter()
            .filter(|(o, _)| *o >= start)
            .cloned()
            .collect::<Vec<_>>(),
        "the newest are all there"
    );
    let dropped = smol::block_on(client.topic_stats("shed")).unwrap()[0].dropped_records;
    assert_eq!(
        dropped,
        start - shed_acked[0].0,
        "every dropped record counted"
    );
}

/// A raw heartbeat on `client` (no `GroupConsumer` behind it).
fn heartbeat(
    client: &Client,
    group: &str,
    member_id: &str,
    epoch: i32,
    owned: &[Tp],
    rebalance_timeout_ms: u32,
) -> Result<(String, i32, Vec<Tp>), eddy::client::ClientError> {
    let mut by_topic: Vec<eddy::wire::TopicPartitions<'_>> = Vec::new();
    for (t, p) in owned {
        match by_topic.last_mut() {
            Some(last) if last.topic == t => last.partitions.push(*p),
            _ => by_topic.push(eddy::wire::TopicPartitions {
                topic: t,
                partitions: vec![*p],
            }),
        }
    }
    let (id, epoch, _, assignment) =
        smol::block_on(client.group_heartbeat(eddy::wire::GroupHeartbeat {
            group,
            member_id,
            member_epoch: epoch,
            client_id: "raw",
            topics: vec!["t"],
            pattern: None,
            session_timeout_ms: 30_000,
            rebalance_timeout_ms,
            owned: by_topic,
        }))?;
    Ok((id, epoch, assignment))
}

/// Fencing over the wire: a heartbeat with an old epoch gets
/// `FencedMemberEpoch`; a commit for a partition the member does not own,
/// or with a stale epoch, is refused; a member that never releases revoked
/// partitions is removed after its rebalance timeout, although it keeps
/// heartbeating, and its partitions move.
#[test]
fn stale_epochs_foreign_partitions_and_the_rebalance_timeout_are_fenced() {
    let server = TestServer::start();
    let client = smol::block_on(server.client());
    smol::block_on(client.create_topic("t", 4)).unwrap();
    let (a, a_epoch, a_owns) = heartbeat(&client, "g", "", 0, &[], 0).unwrap();
    assert_eq!(a_owns.len(), 4);
    let err = heartbeat(&client, "g", &a, a_epoch + 1, &a_owns, 0).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FencedMemberEpoch), "{err}");
    // b joins; a releases half (two heartbeats), b takes it.
    let (b, b_joined_epoch, none) = heartbeat(&client, "g", "", 0, &[], 0).unwrap();
    assert!(none.is_empty(), "a still owns everything");
    let (_, epoch, kept) = heartbeat(&client, "g", &a, a_epoch, &a_owns, 0).unwrap();
    assert_eq!(kept.len(), 2);
    let (_, a_new_epoch, kept) = heartbeat(&client, "g", &a, epoch, &kept, 0).unwrap();
    assert!(a_new_epoch > a_epoch, "a moved to the new epoch");
    let (_, b_epoch, b_owns) = heartbeat(&client, "g", &b, b_joined_epoch, &[], 0).unwrap();
    assert_eq!(b_owns.len(), 2);
    assert!(kept.iter().all(|tp| !b_owns.contains(tp)));
    let commit = |member: &str, epoch: i32, tp: &Tp| {
        smol::block_on(client.commit_offsets("g", member, epoch, &[(tp.0.clone(), tp.1, 1)]))
    };
    commit(&a, a_new_epoch, &kept[0]).unwrap();
    commit(&b, b_epoch, &b_owns[0]).unwrap();
    let foreign = commit(&b, b_epoch, &kept[0]).unwrap_err();
    assert_eq!(
        foreign.code(),
        Some(ErrorCode::StaleMemberEpoch),
        "{foreign}"
    );
    assert!(foreign.to_string().contains("does not own"), "{foreign}");
    let stale = commit(&a, a_epoch, &kept[0]).unwrap_err();
    assert_eq!(stale.code(), Some(ErrorCode::StaleMemberEpoch), "{stale}");
    let committed = smol::block_on(client.fetch_offsets("g", &["t"])).unwrap();
    assert!(
        committed.iter().all(|(_, _, o)| *o == 1),
        "refused commits wrote nothing"
    );

    // Group h: x owns everything and never releases; y joins.
    let (x, x_epoch, x_owns) = heartbeat(&client, "h", "", 0, &[], 500).unwrap();
    let (y, y_epoch, _) = heartbeat(&client, "h", "", 0, &[], 500).unwrap();
    let revoked_at = Instant::now();
    let (_, _, x_kept) = heartbeat(&client, "h", &x, x_epoch, &x_owns, 500).unwrap();
    assert_eq!(x_kept.len(), 2, "half revoked");
    // x keeps heartbeating (its session stays alive) but still lists the
    // revoked partitions as owned.
    let removed = loop {
        match heartbeat(&client, "h", &x, x_epoch, &x_owns, 500) {
            Ok(_) => {}
            Err(e) => break e,
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(30),
            "x was never removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        removed.code(),
        Some(ErrorCode::UnknownMemberId),
        "{removed}"
    );
    assert!(
        revoked_at.elapsed() >= Duration::from_millis(500),
        "removed before its rebalance timeout"
    );
    let (_, _, y_owns) = heartbeat(&client, "h", &y, y_epoch, &[], 500).unwrap();
    assert_eq!(y_owns.len(), 4, "x's partitions moved to y");
}

/// A member whose heartbeat answer was lost (simulated: the same heartbeat
/// sent on another connection, its answer dropped) gets
/// `FencedMemberEpoch` on its next heartbeat and rejoins with its member
/// id, so the coordinator replaces its stale entry at once and the group
/// settles with two members and two partitions each — long before the
/// stale entry's 60 s session could expire.
#[test]
fn a_fenced_member_rejoins_with_its_id_and_its_partitions_move_at_once() {
    let server = TestServer::start();
    let admin = smol::block_on(server.client());
    smol::block_on(admin.create_topic("t", 4)).unwrap();
    let options = |name: &str| {
        let mut o = GroupConsumerOptions::new("g", &["t"]);
        o.client_id = name.to_string();
        o.session_timeout_ms = 60_000;
        o.reset = OffsetReset::Earliest;
        o
    };
    smol::block_on(async {
        let mut a = GroupConsumer::join(server.client().await, options("a"))
            .await
            .unwrap();
        let lost = Arc::new(Mutex::new(Vec::new()));
        let heard = lost.clone();
        a.set_listener(move |event| {
            if let RebalanceEvent::Lost(tps) = event {
                heard.lock().unwrap().extend(tps.iter().cloned());
            }
        });
        assert_eq!(a.positions().len(), 4);
        let a_id = a.member_id().to_string();
        let mut b = GroupConsumer::join(server.client().await, options("b"))
            .await
            .unwrap();
        let b_id = b.member_id().to_string();
        // a's heartbeats whose answers "got lost": revoke, then release.
        let owned: Vec<Tp> = a.positions().keys().cloned().collect();
        let (_, epoch, kept) = heartbeat(&admin, "g", &a_id, a.epoch(), &owned, 0).unwrap();
        let (_, server_epoch, _) = heartbeat(&admin, "g", &a_id, epoch, &kept, 0).unwrap();
        assert_ne!(server_epoch, a.epoch(), "the coordinator moved a on");
        a.heartbeat_now().await.unwrap();
        assert_eq!(
            lost.lock().unwrap().len(),
            4,
            "a heard Lost for all it held"
        );
        assert_eq!(a.member_id(), a_id, "rejoined with its member id");
        let mut settled = false;
        for _ in 0..20 {
            b.heartbeat_now().await.unwrap();
            a.heartbeat_now().await.unwrap();
            let info = admin.describe_group("g").await.unwrap();
            let ids: BTreeSet<&str> = info.members.iter().map(|m| m.member_id.as_str()).collect();
            if info.state == eddy::wire::GroupState::Stable
                && ids == BTreeSet::from([a_id.as_str(), b_id.as_str()])
                && info.members.iter().all(|m| m.assigned.len() == 2)
            {
                settled = true;
                break;
            }
        }
        let info = admin.describe_group("g").await.unwrap();
        assert!(
            settled,
            "the group did not settle without the stale entry: {info:?}"
        );
        assert_eq!(a.positions().len(), 2);
        assert_eq!(b.positions().len(), 2);
        a.leave().await.unwrap();
        b.leave().await.unwrap();
    });
}

/// A member whose committed offset fell below the log start (retention
/// removed it) starts at the earliest stored offset with
/// `OffsetReset::Earliest` and at the end with `OffsetReset::Latest`; a
/// member without a committed offset and `Latest` starts at the end.
#[test]
fn committed_offsets_below_the_log_start_reset_to_earliest_or_latest() {
    let server = TestServer::start_with(|c| c.maintenance_interval_ms = 20);
    let client = smol::block_on(server.client());
    smol::block_on(client.create_topic("r", 1)).unwrap();
    let values =
        |tag: &str, n: u32| -> Vec<String> { (0..n).map(|i| format!("{tag}{i}")).collect() };
    let produce = |vs: &[String], ts: i64| {
        let records: Vec<(Option<&[u8]>, &[u8])> =
            vs.iter().map(|v| (None, v.as_bytes())).collect();
        smol::block_on(client.produce("r", Some(0), Acks::Durable, 30_000, &batch(&records, ts)))
            .unwrap();
    };
    produce(&values("old", 10), 1_000);
    produce(&values("new", 10), eddy::time::now_ms_i64());
    for group in ["early", "late"] {
        smol::block_on(client.commit_offsets(group, "", -1, &[("r".into(), 0, 3)])).unwrap();
    }
    smol::block_on(client.alter_topic("r", &[("retention.ms".into(), "600000".into())], &[]))
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "retention removed the old batch",
        || smol::block_on(client.watermarks("r")).unwrap()[0].log_start == 10,
    );
    let consume = |group: &str, reset: OffsetReset, until: usize| -> (Vec<(u64, String)>, u64) {
        smol::block_on(async {
            let mut o = GroupConsumerOptions::new(group, &["r"]);
            o.reset = reset;
            o.fetch_wait_ms_max = 100;
            let mut c = GroupConsumer::join(server.client().await, o).await.unwrap();
            let mut got = Vec::new();
            let mut polls = 0;
            while got.len() < until {
                if let Some(polled) = c.poll().await.unwrap() {
                    polled
                        .for_each(|_, offset, _, r| {
                            got.push((offset, String::from_utf8(r.value.to_vec()).unwrap()))
                        })
                        .unwrap();
                }
                polls += 1;
                assert!(polls < 1_000, "{group}: only {got:?}");
            }
            // The out-of-range position was replaced (a poll answers it).
            while c.positions()[&("r".to_string(), 0)] < 10 {
                c.poll().await.unwrap();
                polls += 1;
                assert!(polls < 1_000, "{group}: position never reset");
            }
            let position = c.positions()[&("r".to_string(), 0)];
            c.leave().await.unwrap();
            (got, position)
        })
    };
    // Earliest: from the log start (10), every stored record.
    let (got, position) = consume("early", OffsetReset::Earliest, 10);
    let expected: Vec<(u64, String)> = (10..20).zip(values("new", 10)).collect();
    assert_eq!(got, expected);
    assert_eq!(position, 20);
    // Latest: nothing of what is stored; position at the end.
    let (got, position) = consume("late", OffsetReset::Latest, 0);
    assert!(got.is_empty());
    assert_eq!(position, 20, "reset to the high watermark");
    let committed = smol::block_on(client.fetch_offsets("late", &["r"])).unwrap();
    assert_eq!(
        committed,
        [("r".to_string(), 0, 20)],
        "the reset position committed on leave"
    );
    // Latest without a committed offset: only what arrives after joining.
    smol::block_on(async {
        let mut o = GroupConsumerOptions::new("fresh", &["r"]);
        o.reset = OffsetReset::Latest;
        o.fetch_wait_ms_max = 100;
        let mut c = GroupConsumer::join(server.client().await, o).await.unwrap();
        assert_eq!(c.positions()[&("r".to_string(), 0)], 20);
        let newer = values("newer", 3);
        let records: Vec<(Option<&[u8]>, &[u8])> =
            newer.iter().map(|v| (None, v.as_bytes())).collect();
        client
            .produce(
                "r",
                Some(0),
                Acks::Durable,
                30_000,
                &batch(&records, eddy::time::now_ms_i64()),
            )
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..1_000 {
            if let Some(polled) = c.poll().await.unwrap() {
                polled
                    .for_each(|_, offset, _, r| {
                        got.push((offset, String::from_utf8(r.value.to_vec()).unwrap()))
                    })
                    .unwrap();
            }
            if got.len() >= 3 {
                break;
            }
        }
        let expected: Vec<(u64, String)> = (20..23).zip(values("newer", 3)).collect();
        assert_eq!(got, expected);
        c.leave().await.unwrap();
    });
}

/// `OffsetsForTimestamp` over the wire: per partition the first offset at
/// or after the time, the high watermark past the last record, and an
/// unknown topic refused.
#[test]
fn offsets_for_timestamp_answers_per_partition() {
    let server = TestServer::start();
    let client = smol::block_on(server.client());
    smol::block_on(client.create_topic("t", 2)).unwrap();
    for (p, ts) in [(0, 1_000), (0, 2_000), (0, 3_000), (1, 5_000)] {
        let records: Vec<(Option<&[u8]>, &[u8])> = vec![(None, b"v"); 2];
        smol::block_on(client.produce("t", Some(p), Acks::Durable, 30_000, &batch(&records, ts)))
            .unwrap();
    }
    let at = |ts: i64| -> Vec<(u32, u64)> {
        smol::block_on(client.offsets_for_timestamp("t", ts))
            .unwrap()
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect()
    };
    assert_eq!(at(0), [(0, 0), (1, 0)]);
    assert_eq!(at(1_500), [(0, 2), (1, 0)]);
    assert_eq!(at(3_000), [(0, 4), (1, 0)]);
    assert_eq!(at(3_001), [(0, 6), (1, 0)], "p0: past its last record");
    assert_eq!(at(9_999), [(0, 6), (1, 2)]);
    let err = smol::block_on(client.offsets_for_timestamp("nope", 0)).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic), "{err}");
}

/// A compacted topic over the wire: the hub compacts it in the background
/// and a group member reads the result — the newest record per key at its
/// original offset, an expired tombstone and what it superseded gone, the
/// last batch untouched.
#[test]
fn a_compacted_topic_reads_back_newest_per_key() {
    let server = TestServer::start_with(|c| c.maintenance_interval_ms = 20);
    let client = smol::block_on(server.client());
    smol::block_on(client.create_topic_with(
        "c",
        1,
        &[
            ("cleanup.policy".into(), "compact".into()),
            ("min.cleanable.dirty.ratio".into(), "0".into()),
        ],
    ))
    .unwrap();
    let now = eddy::time::now_ms_i64();
    let produce = |records: &[(Option<&[u8]>, &[u8])], ts: i64| {
        smol::block_on(client.produce("c", Some(0), Acks::Durable, 30_000, &batch(records, ts)))
            .unwrap();
    };
    // Rounds 0..5 of keys k0..k9 (offsets 0..50).
    for round in 0..5 {
        let kv: Vec<(String, String)> = (0..10)
            .map(|k| (format!("k{k}"), format!("v{round}")))
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> = kv
            .iter()
            .map(|(k, v)| (Some(k.as_bytes()), v.as_bytes()))
            .collect();
        produce(&records, now);
    }
    // A tombstone for k0, older than delete.retention.ms (1 day), at 50;
    // the last batch (never cleaned) at 51.
    produce(&[(Some(b"k0"), b"")], 1_000);
    produce(&[(Some(b"z"), b"last")], now);
    wait_until(Duration::from_secs(60), "the hub compacted c", || {
        smol::block_on(client.topic_stats("c")).unwrap()[0].compaction_removed_records == 42
    });
    let mut expected: Vec<(u64, String, String)> = (1..10)
        .map(|k| (40 + k, format!("k{k}"), "v4".to_string()))
        .collect();
    expected.push((51, "z".into(), "last".into()));
    let got = smol::block_on(async {
        let mut o = GroupConsumerOptions::new("reader", &["c"]);
        o.reset = OffsetReset::Earliest;
        o.fetch_wait_ms_max = 100;
        let mut c = GroupConsumer::join(server.client().await, o).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..1_000 {
            if let Some(polled) = c.poll().await.unwrap() {
                polled
                    .for_each(|_, offset, _, r| {
                        got.push((
                            offset,
                            String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                            String::from_utf8(r.value.to_vec()).unwrap(),
                        ))
                    })
                    .unwrap();
            }
            if got
                .last()
                .is_some_and(|r: &(u64, String, String)| r.0 == 51)
            {
                break;
            }
        }
        c.leave().await.unwrap();
        got
    });
    assert_eq!(got, expected);
    let marks = smol::block_on(client.watermarks("c")).unwrap()[0];
    assert_eq!(
        (marks.log_start, marks.durable),
        (0, 52),
        "offsets unchanged"
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
