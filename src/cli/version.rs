//! `eddy version` and `eddy --version`: the version, the commit it was
//! built from, the target and the compiled-in features.
//!
//! The commit comes from `build.rs` (git at build time, or `EDDY_COMMIT`;
//! "unknown" when neither is there, e.g. a build from a source tarball).

use argh::FromArgs;

use super::CliError;
use crate::outln;

/// Print the version, commit, target and features.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {
    /// print JSON
    #[argh(switch, short = 'j')]
    pub json: bool,
}

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit built from, or "unknown".
pub const COMMIT: &str = env!("EDDY_COMMIT");
/// The target triple built for.
pub const TARGET: &str = env!("EDDY_TARGET");

/// The compiled-in cargo features.
pub fn features() -> Vec<&'static str> {
    let mut features = Vec::new();
    if cfg!(feature = "server") {
        features.push("server");
    }
    if cfg!(feature = "std") {
        features.push("std");
    }
    features
}

/// One line: `eddy 0.1.0 (commit 816692f1a2b3, x86_64-unknown-linux-musl, features server,std)`.
pub fn line() -> String {
    format!(
        "eddy {VERSION} (commit {COMMIT}, {TARGET}, features {})",
        features().join(",")
    )
}

pub fn run(args: VersionArgs) -> Result<(), CliError> {
    print(args.json)
}

/// Prints the version line, or a JSON object with `--json`.
pub fn print(json: bool) -> Result<(), CliError> {
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "version": VERSION,
                "commit": COMMIT,
                "target": TARGET,
                "features": features(),
            })
        );
    } else {
        outln!("{}", line());
    }
    Ok(())
}
