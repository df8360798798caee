//! `eddy groups`: list, describe, reset and delete consumer groups
//! (Kafka's `kafka-consumer-groups`).
//!
//! `reset` computes new offsets on the client (earliest, latest, an offset,
//! a time, a shift) and prints the plan; with `--execute` it commits them
//! as an administrative commit, which the server accepts only while the
//! group has no members.

use argh::FromArgs;

use super::CliError;
use crate::client::{Client, GroupInfo};
use crate::outln;
use crate::wire::GroupState;

crate::client_args! {
/// Manage consumer groups: `list`, `describe GROUP [--json]`, `reset GROUP
/// --topic T[:P,…] | --all-topics (--to-earliest | --to-latest | --to-offset
/// N | --to-timestamp MS | --shift-by N) [--execute]`, `delete GROUP`.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "groups")]
pub struct GroupsArgs {
    /// the action (list, describe, reset or delete), then the group id for
    /// all but list
    #[argh(positional, arg_name = "action")]
    pub words: Vec<String>,
    /// print JSON, with describe and list
    #[argh(switch, short = 'j')]
    pub json: bool,
    /// reset: topic to reset, optionally with partitions (`T:0,2`); repeatable
    #[argh(option, short = 't')]
    pub topic: Vec<String>,
    /// reset: every topic the group has committed offsets for
    #[argh(switch)]
    pub all_topics: bool,
    /// reset to the earliest stored offset
    #[argh(switch)]
    pub to_earliest: bool,
    /// reset to the end (skip everything stored)
    #[argh(switch)]
    pub to_latest: bool,
    /// reset to this offset (clamped to what is stored)
    #[argh(option)]
    pub to_offset: Option<u64>,
    /// reset to the first record at or after this time (ms since the epoch)
    #[argh(option)]
    pub to_timestamp: Option<i64>,
    /// move the committed offsets by this many records (negative = back)
    #[argh(option)]
    pub shift_by: Option<i64>,
    /// apply the reset (without it, only print the plan)
    #[argh(switch)]
    pub execute: bool,
}
}

/// The actions, for parsing, help, completions and the man page.
pub const ACTIONS: &[(&str, &str)] = &[
    ("list", "list [--json]: every group, its state and members"),
    (
        "describe",
        "describe GROUP [--json]: members, assignments, committed offsets, lag",
    ),
    (
        "reset",
        "reset GROUP --topic T[:P,...] | --all-topics --to-...: move committed offsets",
    ),
    ("delete", "delete GROUP: its committed offsets"),
];

/// Where a reset goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
    Shift(i64),
}

impl GroupsArgs {
    fn target(&self) -> Result<Target, CliError> {
        let mut chosen = Vec::new();
        if self.to_earliest {
            chosen.push(Target::Earliest);
        }
        if self.to_latest {
            chosen.push(Target::Latest);
        }
        if let Some(o) = self.to_offset {
            chosen.push(Target::Offset(o));
        }
        if let Some(t) = self.to_timestamp {
            chosen.push(Target::Timestamp(t));
        }
        if let Some(s) = self.shift_by {
            chosen.push(Target::Shift(s));
        }
        match chosen.as_slice() {
            [one] => Ok(*one),
            _ => Err(CliError::usage(
                "reset needs exactly one of --to-earliest, --to-latest, --to-offset N, --to-timestamp MS, --shift-by N",
            )),
        }
    }
}

pub fn run(args: GroupsArgs) -> Result<(), CliError> {
    super::serve::init_logging(None, "warn");
    let connection = args.connection();
    let Some(action) = args.words.first().map(String::as_str) else {
        return super::args::print_actions("groups");
    };
    if let Some(extra) = args.words.get(2) {
        return Err(CliError::usage(format!(
            "eddy groups {action} takes at most one group; unexpected {extra:?}"
        )));
    }
    let group = || {
        args.words
            .get(1)
            .cloned()
            .ok_or_else(|| CliError::usage(format!("eddy groups {action} needs a group id")))
    };
    if !ACTIONS.iter().any(|(name, _)| *name == action) {
        return Err(super::args::unknown_action("groups", action));
    }
    if action == "list" {
        if let Some(extra) = args.words.get(1) {
            return Err(CliError::usage(format!(
                "eddy groups list takes no group (got {extra:?}): use `eddy groups describe {extra}`"
            )));
        }
    }
    smol::block_on(async {
        match action {
            "list" => {
                let client = connection.connect("eddy-groups").await?;
                let groups = client.list_groups().await?;
                if groups.is_empty() {
                    eprintln!("no consumer groups (a group appears when a member joins: eddy consume --group G)");
                }
                if args.json {
                    let list: Vec<_> = groups
                        .iter()
                        .map(|g| {
                            serde_json::json!({
                                "group": g.group,
                                "state": state_name(g.state),
                                "members": g.members,
                                "group_epoch": g.group_epoch,
                            })
                        })
                        .collect();
                    outln!("{}", serde_json::Value::Array(list));
                } else {
                    for g in groups {
                        outln!(
                            "{}\t{}\t{} members",
                            g.group,
                            state_name(g.state),
                            g.members
                        );
                    }
                }
                Ok(())
            }
            "describe" => {
                let client = connection.connect("eddy-groups").await?;
                let info = client.describe_group(&group()?).await?;
                print_group(&info, args.json)?;
                Ok(())
            }
            "delete" => {
                let client = connection.connect("eddy-groups").await?;
                let id = group()?;
                client.delete_group(&id).await?;
                outln!("deleted the committed offsets of group {id}");
                Ok(())
            }
            "reset" => {
                let client = connection.connect("eddy-groups").await?;
                reset(&client, &args, &group()?, args.target()?).await
            }
            other => Err(super::args::unknown_action("groups", other)),
        }
    })
}

fn state_name(state: GroupState) -> &'static str {
    match state {
        GroupState::Empty => "Empty",
        GroupState::Reconciling => "Reconciling",
        GroupState::Stable => "Stable",
    }
}

fn print_group(info: &GroupInfo, json: bool) -> Result<(), CliError> {
    if json {
        let members: Vec<_> = info
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "member_id": m.member_id,
                    "client_id": m.client_id,
                    "member_epoch": m.member_epoch,
                    "assigned": m.assigned.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>(),
                    "revoking": m.revoking.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>(),
                })
            })
            .collect();
        let partitions: Vec<_> = info
            .partitions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "topic": p.topic,
                    "partition": p.partition,
                    "owner": p.owner,
                    "committed": p.committed,
                    "log_start": p.log_start,
                    "high_watermark": p.high_watermark,
                    "lag": p.lag(),
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "group": info.group,
                "state": state_name(info.state),
                "group_epoch": info.group_epoch,
                "members": members,
                "partitions": partitions,
            })
        );
        return Ok(());
    }
    outln!(
        "group {}: {}, epoch {}, {} members",
        info.group,
        state_name(info.state),
        info.group_epoch,
        info.members.len()
    );
    for m in &info.members {
        let assigned: Vec<String> = m.assigned.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        let revoking: Vec<String> = m.revoking.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        outln!(
            "  member {} ({}) epoch {}: {}{}",
            m.member_id,
            m.client_id,
            m.member_epoch,
            assigned.join(" "),
            if revoking.is_empty() {
                String::new()
            } else {
                format!(" (revoking {})", revoking.join(" "))
            }
        );
    }
    outln!(
        "{:<24} {:>9} {:>12} {:>12} {:>10}  owner",
        "topic",
        "partition",
        "committed",
        "log_end",
        "lag"
    );
    for p in &info.partitions {
        outln!(
            "{:<24} {:>9} {:>12} {:>12} {:>10}  {}",
            p.topic,
            p.partition,
            p.committed.map_or("-".to_string(), |c| c.to_string()),
            p.high_watermark,
            p.lag().map_or("-".to_string(), |l| l.to_string()),
            p.owner.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

async fn reset(
    client: &Client,
    args: &GroupsArgs,
    group: &str,
    target: Target,
) -> Result<(), CliError> {
    let info = match client.describe_group(group).await {
        Ok(info) => Some(info),
        Err(e) if e.code() == Some(crate::wire::ErrorCode::UnknownGroup) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(info) = &info {
        if !info.members.is_empty() {
            return Err(CliError::new(format!(
                "group {group} has {} active member(s); offsets can only be reset while it has none: stop its consumers first",
                info.members.len()
            )));
        }
    }
    // (topic, partitions or None for all)
    let mut scope: Vec<(String, Option<Vec<u32>>)> = Vec::new();
    for t in &args.topic {
        match t.split_once(':') {
            Some((name, list)) => {
                let partitions = list
                    .split(',')
                    .map(|p| p.trim().parse::<u32>())
                    .collect::<Result<Vec<u32>, _>>()
                    .map_err(|_| {
                        CliError::usage(format!("--topic {t}: partitions are numbers, as in T:0,2"))
                    })?;
                scope.push((name.to_string(), Some(partitions)));
            }
            None => scope.push((t.clone(), None)),
        }
    }
    if args.all_topics {
        let mut topics: Vec<String> = info
            .iter()
            .flat_map(|i| i.partitions.iter().map(|p| p.topic.clone()))
            .collect();
        topics.dedup();
        scope.extend(topics.into_iter().map(|t| (t, None)));
    }
    if scope.is_empty() {
        return Err(CliError::usage(
            "reset needs --topic T[:P,…] or --all-topics",
        ));
    }
    let mut plan: Vec<(String, u32, Option<u64>, u64)> = Vec::new();
    for (topic, partitions) in scope {
        let marks = client.watermarks(&topic).await?;
        let by_time = match target {
            Target::Timestamp(ts) => Some(client.offsets_for_timestamp(&topic, ts).await?),
            _ => None,
        };
        for m in &marks {
            if partitions
                .as_ref()
                .is_some_and(|ps| !ps.contains(&m.partition))
            {
                continue;
            }
            let current = info.as_ref().and_then(|i| {
                i.partitions
                    .iter()
                    .find(|p| p.topic == topic && p.partition == m.partition)
                    .and_then(|p| p.committed)
            });
            let wanted = match target {
                Target::Earliest => m.log_start,
                Target::Latest => m.durable,
                Target::Offset(o) => o,
                Target::Timestamp(_) => by_time
                    .as_ref()
                    .and_then(|o| o.iter().find(|o| o.partition == m.partition))
                    .map_or(m.durable, |o| o.offset),
                Target::Shift(by) => {
                    let base = current.unwrap_or(m.log_start);
                    if by >= 0 {
                        base.saturating_add(by.unsigned_abs())
                    } else {
                        base.saturating_sub(by.unsigned_abs())
                    }
                }
            };
            // As Kafka: never outside what is stored.
            plan.push((
                topic.clone(),
                m.partition,
                current,
                wanted.clamp(m.log_start, m.durable),
            ));
        }
        if let Some(ps) = &partitions {
            if let Some(missing) = ps
                .iter()
                .find(|p| !marks.iter().any(|m| m.partition == **p))
            {
                return Err(CliError::usage(format!(
                    "topic {topic} has no partition {missing}"
                )));
            }
        }
    }
    outln!(
        "{:<24} {:>9} {:>12} {:>12}",
        "topic",
        "partition",
        "committed",
        "new offset"
    );
    for (topic, partition, current, new) in &plan {
        outln!(
            "{:<24} {:>9} {:>12} {:>12}",
            topic,
            partition,
            current.map_or("-".to_string(), |c| c.to_string()),
            new
        );
    }
    if !args.execute {
        outln!("(dry run: add --execute to apply)");
        return Ok(());
    }
    let offsets: Vec<(String, u32, u64)> = plan.into_iter().map(|(t, p, _, o)| (t, p, o)).collect();
    client.commit_offsets(group, "", -1, &offsets).await?;
    outln!("reset {} partition(s) of group {group}", offsets.len());
    Ok(())
}
