//! `eddy mirror status`: the hub's mirror links, their state, last error,
//! and per partition the `mirrored` watermark and the lag.

use std::path::PathBuf;

use argh::FromArgs;

use super::{default_server, CliError, Connection};
use crate::client::MirrorLinkInfo;

/// Mirror links of a hub: `status [--json]` shows each link's state, last
/// error, traffic and, per partition, how far it is mirrored and the lag.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "mirror")]
pub struct MirrorArgs {
    /// status
    #[argh(positional)]
    pub action: String,
    /// print JSON
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

pub fn run(args: MirrorArgs) -> Result<(), CliError> {
    super::serve::init_logging(None, "warn");
    if args.action != "status" {
        return Err(CliError::usage(format!(
            "unknown mirror action {:?}: use `eddy mirror status [--json]`",
            args.action
        )));
    }
    let connection = Connection {
        server: args.server.clone(),
        ca: args.ca.clone(),
        plaintext: args.plaintext,
        tls_server_name: args.tls_server_name.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
    };
    smol::block_on(async {
        let client = connection.connect("eddy-mirror-status").await?;
        let links = client.mirror_status().await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&links)?);
        } else {
            print_links(&links);
        }
        Ok(())
    })
}

fn print_links(links: &[MirrorLinkInfo]) {
    if links.is_empty() {
        println!("this hub has no mirror links (eddy serve --mirror URL)");
        return;
    }
    let now_ms = crate::time::now_ms();
    for link in links {
        println!(
            "link {} → {}: {} for {} s; {} records ({} bytes) mirrored, {} reconnects, {} records dropped before mirroring",
            link.link,
            link.upstream,
            link.state,
            now_ms.saturating_sub(link.state_since_ms) / 1000,
            link.records_mirrored,
            link.bytes_mirrored,
            link.reconnects,
            link.dropped_records
        );
        if let Some(error) = &link.last_error {
            println!(
                "  last error ({} s ago): {error}",
                now_ms.saturating_sub(link.last_error_ms) / 1000
            );
        }
        println!(
            "  {:<24} {:>5} {:<28} {:>12} {:>12} {:>12} {:>14}",
            "TOPIC", "PART", "UPSTREAM", "MIRRORED", "LOG-END", "LAG", "LAG-BYTES"
        );
        for p in &link.partitions {
            println!(
                "  {:<24} {:>5} {:<28} {:>12} {:>12} {:>12} {:>14}",
                p.topic,
                p.partition,
                p.upstream_topic,
                p.mirrored,
                p.log_end,
                p.lag_records,
                p.lag_bytes
            );
        }
    }
}
