//! `eddy topics`: create, list, describe and delete topics.

use std::path::PathBuf;

use argh::FromArgs;

use super::{default_server, CliError, Connection};

/// Manage topics.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "topics")]
pub struct TopicsArgs {
    #[argh(subcommand)]
    pub action: TopicsAction,
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
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum TopicsAction {
    Create(CreateArgs),
    List(ListArgs),
    Describe(DescribeArgs),
    Delete(DeleteArgs),
}

/// Create a topic.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "create")]
pub struct CreateArgs {
    /// topic name: 1–249 characters of [a-zA-Z0-9._-]
    #[argh(positional)]
    pub name: String,
    /// number of partitions (default 1)
    #[argh(option, default = "1")]
    pub partitions: u32,
}

/// List topics and their partition counts.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListArgs {}

/// Show a topic's partitions and watermarks.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "describe")]
pub struct DescribeArgs {
    /// topic name
    #[argh(positional)]
    pub name: String,
    /// print JSON instead of a table
    #[argh(switch)]
    pub json: bool,
}

/// Delete a topic and all its records.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "delete")]
pub struct DeleteArgs {
    /// topic name
    #[argh(positional)]
    pub name: String,
}

pub fn run(args: TopicsArgs) -> Result<(), CliError> {
    super::serve::init_logging(None, "warn");
    let connection = Connection {
        server: args.server.clone(),
        ca: args.ca.clone(),
        plaintext: args.plaintext,
        tls_server_name: args.tls_server_name.clone(),
    };
    smol::block_on(async {
        let client = connection.connect("eddy-topics").await?;
        match args.action {
            TopicsAction::Create(c) => {
                let topic = client.create_topic(&c.name, c.partitions).await?;
                println!(
                    "created topic {} with {} partitions",
                    topic.name, topic.partitions
                );
            }
            TopicsAction::List(_) => {
                for (name, partitions) in client.metadata(&[]).await? {
                    println!("{name}\t{partitions}");
                }
            }
            TopicsAction::Describe(d) => {
                let topic = client.describe_topic(&d.name).await?;
                if d.json {
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
            TopicsAction::Delete(d) => {
                client.delete_topic(&d.name).await?;
                println!("deleted topic {}", d.name);
            }
        }
        Ok(())
    })
}
