//! `eddy topics`: create, list, describe, alter and delete topics.

use std::path::PathBuf;

use argh::FromArgs;

use super::{default_server, CliError, Connection};
use crate::storage::topic_config::KNOWN;

/// Manage topics: `create NAME [--partitions N] [--config K=V]…`, `list`,
/// `describe NAME [--json]`, `alter NAME [--config K=V]… [--delete-config
/// K]…`, `delete NAME`. Settings: retention.ms, retention.bytes,
/// cleanup.policy, delete.retention.ms, min.cleanable.dirty.ratio, priority,
/// on_full, on_full.unmirrored.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "topics")]
pub struct TopicsArgs {
    /// create, list, describe, alter or delete
    #[argh(positional)]
    pub action: String,
    /// topic name (create, describe, alter, delete)
    #[argh(positional)]
    pub name: Option<String>,
    /// number of partitions, with create (default 1)
    #[argh(option, default = "1")]
    pub partitions: u32,
    /// a setting NAME=VALUE, with create and alter; repeatable
    #[argh(option)]
    pub config: Vec<String>,
    /// return a setting to its default, with alter; repeatable
    #[argh(option)]
    pub delete_config: Vec<String>,
    /// print JSON, with describe
    #[argh(switch)]
    pub json: bool,
    /// server address (default 127.0.0.1:7654)
    #[argh(option, default = "default_server()")]
    pub server: String,
    /// CA certificate to trust (default ./eddy-data/tls/ca.pem)
    #[argh(option)]
    pub ca: Option<PathBuf>,
    /// connect without TLS (only to a server started with --insecure-plaintext)
    #[argh(switch)]
    pub plaintext: bool,
    /// name to verify in the server certificate (default: the host of --server)
    #[argh(option)]
    pub tls_server_name: Option<String>,
    /// client certificate (PEM) to present to a server that requires one (mTLS)
    #[argh(option)]
    pub cert: Option<PathBuf>,
    /// private key (PEM) of --cert
    #[argh(option)]
    pub key: Option<PathBuf>,
}

/// What to do.
enum Action {
    Create(String),
    List,
    Describe(String),
    Alter(String),
    Delete(String),
}

impl TopicsArgs {
    fn action(&self) -> Result<Action, CliError> {
        let name = || {
            self.name.clone().ok_or_else(|| {
                CliError::usage(format!("eddy topics {} needs a topic name", self.action))
            })
        };
        match self.action.as_str() {
            "create" => Ok(Action::Create(name()?)),
            "list" => Ok(Action::List),
            "describe" => Ok(Action::Describe(name()?)),
            "alter" => Ok(Action::Alter(name()?)),
            "delete" => Ok(Action::Delete(name()?)),
            other => Err(CliError::usage(format!(
                "unknown action {other:?}: use create, list, describe, alter or delete"
            ))),
        }
    }
}

pub fn run(args: TopicsArgs) -> Result<(), CliError> {
    super::serve::init_logging(None, "warn");
    let connection = Connection {
        server: args.server.clone(),
        ca: args.ca.clone(),
        plaintext: args.plaintext,
        tls_server_name: args.tls_server_name.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
    };
    let action = args.action()?;
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
                println!(
                    "created topic {} with {} partitions",
                    topic.name, topic.partitions
                );
            }
            Action::List => {
                for (name, partitions) in client.metadata(&[]).await? {
                    println!("{name}\t{partitions}");
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
                    println!(
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
                    println!(
                        "topic {}: {} partitions, created_ms {}",
                        topic.name, topic.partitions, topic.created_ms
                    );
                    print_settings(&topic.configs);
                    println!(
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
                        println!(
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
                println!("altered topic {}; settings now:", topic.name);
                print_settings(&topic.configs);
            }
            Action::Delete(name) => {
                client.delete_topic(&name).await?;
                println!("deleted topic {name}");
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

fn print_settings(overrides: &[(String, String)]) {
    for (name, value, default) in effective(overrides) {
        println!(
            "  {name} = {value}{}",
            if default { " (default)" } else { "" }
        );
    }
}
