//! `eddy topics`: create, list, describe, alter and delete topics.

use argh::FromArgs;

use super::CliError;
use crate::outln;
use crate::storage::topic_config::KNOWN;

crate::client_args! {
/// Manage topics: `create NAME [--partitions N] [--config K=V]…`, `list`,
/// `describe NAME [--json]`, `alter NAME [--config K=V]… [--delete-config
/// K]…`, `delete NAME`. Settings: retention.ms, retention.bytes,
/// cleanup.policy, delete.retention.ms, min.cleanable.dirty.ratio, priority,
/// on_full, on_full.unmirrored, segment.bytes, segment.ms, flush.ms.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "topics")]
pub struct TopicsArgs {
    /// the action (create, list, describe, alter or delete), then the
    /// topic name for all but list
    #[argh(positional, arg_name = "action")]
    pub words: Vec<String>,
    /// number of partitions, with create (default 1; `--partition` is
    /// produce's and consume's partition index)
    #[argh(option, default = "1")]
    pub partitions: u32,
    /// a setting NAME=VALUE, with create and alter; repeatable
    #[argh(option)]
    pub config: Vec<String>,
    /// return a setting to its default, with alter; repeatable
    #[argh(option)]
    pub delete_config: Vec<String>,
    /// print JSON, with list and describe
    #[argh(switch, short = 'j')]
    pub json: bool,
}
}

/// The actions, for parsing, help, completions and the man page.
pub const ACTIONS: &[(&str, &str)] = &[
    (
        "create",
        "create NAME [--partitions N] [--config K=V]...: a new topic",
    ),
    ("list", "list [--json]: every topic and its partition count"),
    (
        "describe",
        "describe NAME [--json]: settings, watermarks, storage",
    ),
    (
        "alter",
        "alter NAME --config K=V... | --delete-config K...: change settings",
    ),
    ("delete", "delete NAME: the topic and its records"),
];

/// What to do.
enum Action {
    Create(String),
    List,
    Describe(String),
    Alter(String),
    Delete(String),
}

impl TopicsArgs {
    fn action(&self, action: &str) -> Result<Action, CliError> {
        if let Some(extra) = self.words.get(2) {
            return Err(CliError::usage(format!(
                "eddy topics {action} takes at most one name; unexpected {extra:?}"
            )));
        }
        let name = || {
            self.words
                .get(1)
                .cloned()
                .ok_or_else(|| CliError::usage(format!("eddy topics {action} needs a topic name")))
        };
        match action {
            "create" => Ok(Action::Create(name()?)),
            "list" => match self.words.get(1) {
                None => Ok(Action::List),
                Some(extra) => Err(CliError::usage(format!(
                    "eddy topics list takes no name (got {extra:?}): use `eddy topics describe {extra}`"
                ))),
            },
            "describe" => Ok(Action::Describe(name()?)),
            "alter" => Ok(Action::Alter(name()?)),
            "delete" => Ok(Action::Delete(name()?)),
            other => Err(super::args::unknown_action("topics", other)),
        }
    }
}

pub fn run(args: TopicsArgs) -> Result<(), CliError> {
    super::serve::init_logging(None, "warn");
    let connection = args.connection();
    let Some(action) = args.words.first().map(String::as_str) else {
        return super::args::print_actions("topics");
    };
    let action = args.action(action)?;
    if args.json && !matches!(action, Action::List | Action::Describe(_)) {
        return Err(CliError::usage("--json goes with list or describe"));
    }
    let configs: Vec<(String, String)> = args
        .config
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| CliError::usage(format!("--config {c:?}: use NAME=VALUE")))
        })
        .collect::<Result<_, _>>()?;
    if !matches!(action, Action::Create(_) | Action::Alter(_)) && !configs.is_empty() {
        return Err(CliError::usage("--config goes with create or alter"));
    }
    smol::block_on(async {
        let client = connection.connect("eddy-topics").await?;
        match action {
            Action::Create(name) => {
                let topic = client
                    .create_topic_with(&name, args.partitions, &configs)
                    .await?;
                outln!(
                    "created topic {} with {} partitions",
                    topic.name,
                    topic.partitions
                );
            }
            Action::List => {
                let topics = client.metadata(&[]).await?;
                if topics.is_empty() {
                    eprintln!("no topics (eddy produce creates one on first write, or eddy topics create NAME)");
                }
                if args.json {
                    let list: Vec<_> = topics
                        .iter()
                        .map(|(name, partitions)| {
                            serde_json::json!({"topic": name, "partitions": partitions})
                        })
                        .collect();
                    outln!("{}", serde_json::Value::Array(list));
                } else {
                    for (name, partitions) in topics {
                        outln!("{name}\t{partitions}");
                    }
                }
            }
            Action::Describe(name) => {
                let topic = client.describe_topic(&name).await?;
                let stats = client.topic_stats(&name).await?;
                if args.json {
                    let partitions: Vec<_> = topic
                        .watermarks
                        .iter()
                        .map(|m| {
                            serde_json::json!({
                                "partition": m.partition,
                                "log_start": m.log_start,
                                "log_end": m.log_end,
                                "durable": m.durable,
                            })
                        })
                        .collect();
                    let configs: serde_json::Map<String, serde_json::Value> =
                        effective(&topic.configs)
                            .into_iter()
                            .map(|(k, v, _)| (k, serde_json::Value::String(v)))
                            .collect();
                    let stats: Vec<_> = stats
                        .iter()
                        .map(|s| {
                            serde_json::json!({
                                "partition": s.partition,
                                "stored_bytes": s.stored_bytes,
                                "retention_removed_records": s.retention_removed_records,
                                "compaction_removed_records": s.compaction_removed_records,
                                "compaction_passes": s.compaction_passes,
                                "dropped_records": s.dropped_records,
                                "dropped_bytes": s.dropped_bytes,
                                "keep_from": s.keep_from,
                            })
                        })
                        .collect();
                    outln!(
                        "{}",
                        serde_json::json!({
                            "topic": topic.name,
                            "partitions": topic.partitions,
                            "created_ms": topic.created_ms,
                            "configs": configs,
                            "watermarks": partitions,
                            "storage": stats,
                        })
                    );
                } else {
                    outln!(
                        "topic {}: {} partitions, created_ms {}",
                        topic.name,
                        topic.partitions,
                        topic.created_ms
                    );
                    print_settings(&topic.configs)?;
                    outln!(
                        "{:>9} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
                        "partition",
                        "log_start",
                        "log_end",
                        "durable",
                        "bytes",
                        "ret_removed",
                        "cmp_removed",
                        "dropped"
                    );
                    for m in &topic.watermarks {
                        let s = stats.iter().find(|s| s.partition == m.partition);
                        outln!(
                            "{:>9} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
                            m.partition,
                            m.log_start,
                            m.log_end,
                            m.durable,
                            s.map_or(0, |s| s.stored_bytes),
                            s.map_or(0, |s| s.retention_removed_records),
                            s.map_or(0, |s| s.compaction_removed_records),
                            s.map_or(0, |s| s.dropped_records),
                        );
                    }
                }
            }
            Action::Alter(name) => {
                if configs.is_empty() && args.delete_config.is_empty() {
                    return Err(CliError::usage(
                        "alter needs --config NAME=VALUE or --delete-config NAME",
                    ));
                }
                let topic = client
                    .alter_topic(&name, &configs, &args.delete_config)
                    .await?;
                outln!("altered topic {}; settings now:", topic.name);
                print_settings(&topic.configs)?;
            }
            Action::Delete(name) => {
                client.delete_topic(&name).await?;
                outln!("deleted topic {name}");
            }
        }
        Ok(())
    })
}

/// Every known setting with its value in force and whether it is a default.
fn effective(overrides: &[(String, String)]) -> Vec<(String, String, bool)> {
    KNOWN
        .iter()
        .map(
            |(name, default, _)| match overrides.iter().find(|(n, _)| n == name) {
                Some((_, v)) => (name.to_string(), v.clone(), false),
                None => (name.to_string(), default.to_string(), true),
            },
        )
        .collect()
}

fn print_settings(overrides: &[(String, String)]) -> Result<(), CliError> {
    for (name, value, default) in effective(overrides) {
        outln!(
            "  {name} = {value}{}",
            if default { " (default)" } else { "" }
        );
    }
    Ok(())
}
