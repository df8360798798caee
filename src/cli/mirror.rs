//! `eddy mirror status`: the hub's mirror links, their state, last error,
//! and per partition the `mirrored` watermark and the lag.

use argh::FromArgs;

use super::CliError;
use crate::client::MirrorLinkInfo;
use crate::outln;

crate::client_args! {
/// Mirror links of a hub: `status [--json]` shows each link's state, last
/// error, traffic and, per partition, how far it is mirrored and the lag.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "mirror")]
pub struct MirrorArgs {
    /// status
    #[argh(positional)]
    pub action: Option<String>,
    /// print JSON
    #[argh(switch, short = 'j')]
    pub json: bool,
}
}

/// The actions, for parsing, help, completions and the man page.
pub const ACTIONS: &[(&str, &str)] = &[(
    "status",
    "status [--json]: each link's state, last error, traffic and lag per partition",
)];

pub fn run(args: MirrorArgs) -> Result<(), CliError> {
    super::serve::init_logging(None, "warn");
    match args.action.as_deref() {
        None => return super::args::print_actions("mirror"),
        Some("status") => {}
        Some(other) => return Err(super::args::unknown_action("mirror", other)),
    }
    let connection = args.connection();
    smol::block_on(async {
        let client = connection.connect("eddy-mirror-status").await?;
        let links = client.mirror_status().await?;
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&links)?);
        } else {
            print_links(&links)?;
        }
        Ok(())
    })
}

fn print_links(links: &[MirrorLinkInfo]) -> Result<(), CliError> {
    if links.is_empty() {
        eprintln!("this hub has no mirror links (eddy serve --mirror URL)");
        return Ok(());
    }
    let now_ms = crate::time::now_ms();
    for link in links {
        outln!(
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
            outln!(
                "  last error ({} s ago): {error}",
                now_ms.saturating_sub(link.last_error_ms) / 1000
            );
        }
        outln!(
            "  {:<24} {:>5} {:<28} {:>12} {:>12} {:>12} {:>14}",
            "TOPIC",
            "PART",
            "UPSTREAM",
            "MIRRORED",
            "LOG-END",
            "LAG",
            "LAG-BYTES"
        );
        for p in &link.partitions {
            outln!(
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
    Ok(())
}
