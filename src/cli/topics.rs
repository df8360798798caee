//! `eddy topics`: create, list, describe and delete topics.

use std::path::PathBuf;

use argh::FromArgs;

use super::{default_server, CliError, Connection};

/// Manage topics: `create NAME [--partitions N]`, `list`, `describe NAME
/// [--json]`, `delete NAME`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "topics")]
pub struct TopicsArgs {
    /// create, list, describe or delete
    #[argh(positional)]
    pub action: String,
    /// topic name (create, describe, delete)
    #[argh(positional)]
    pub name: Option<String>,
    /// number of partitions, with create (default 1)
    #[argh(option, default = "1")]
    pub partitions: u32,
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
}

/// What to do.
enum Action {
    Create(String),
    List,
    Describe(String),
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
            "delete" => Ok(Action::Delete(name()?)),
            other => Err(CliError::usage(format!(
                "unknown action {other:?}: use create, list, describe or delete"
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
    };
    let action = args.action()?;
    smol::block_on(async {
        let client = connection.connect("eddy-topics").await?;
        match action {
            Action::Create(name) => {
                let topic = client.create_topic(&name, args.partitions).await?;
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
                    let configs: serde_json::Map<String, serde_json::Value> = topic
                        .configs
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({
                            "topic": topic.name,
                            "partitions": topic.partitions,
                            "created_ms": topic.created_ms,
                            "configs": configs,
                            "watermarks": partitions,
                        })
                    );
                } else {
                    println!(
                        "topic {}: {} partitions, created_ms {}",
                        topic.name, topic.partitions, topic.created_ms
                    );
                    for (name, value) in &topic.configs {
                        println!("  {name} = {value}");
                    }
                    println!(
                        "{:>9} {:>12} {:>12} {:>12}",
                        "partition", "log_start", "log_end", "durable"
                    );
                    for m in &topic.watermarks {
                        println!(
                            "{:>9} {:>12} {:>12} {:>12}",
                            m.partition, m.log_start, m.log_end, m.durable
                        );
                    }
                }
            }
            Action::Delete(name) => {
                client.delete_topic(&name).await?;
                println!("deleted topic {name}");
            }
        }
        Ok(())
    })
}
