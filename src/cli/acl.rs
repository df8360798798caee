//! `eddy acl check IDENTITY OP NAME`: what the ACL file says about one
//! request, and which rule decides it.
//!
//! Reads the ACL file named by `--acl`, or by `[acl] file` in `--config`
//! (default `/etc/eddy/eddy.toml`); it does not contact a server. Exit 0
//! when allowed, 1 when denied, 2 on bad usage or a bad file.

use std::path::PathBuf;

use argh::FromArgs;

use super::CliError;
use crate::acl::{Acl, Operation, Resource};
use crate::config::{file, ServerConfig};
use crate::outln;

/// The config file `eddy acl check` reads when given neither --acl nor --config.
pub const CONFIG_FILE_DEFAULT: &str = "/etc/eddy/eddy.toml";

/// Explain an ACL decision: `eddy acl check IDENTITY OP TOPIC` (OP: produce,
/// consume, admin); --group when NAME is a consumer group. Exit 0 allowed,
/// 1 denied.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "acl")]
pub struct AclArgs {
    /// check
    #[argh(positional)]
    pub action: String,
    /// the identity (a certificate's DNS/URI name or common name, or anonymous)
    #[argh(positional)]
    pub identity: String,
    /// produce, consume or admin
    #[argh(positional)]
    pub operation: String,
    /// the topic (or, with --group, the consumer group)
    #[argh(positional)]
    pub name: String,
    /// NAME is a consumer group, not a topic
    #[argh(switch)]
    pub group: bool,
    /// the ACL file (default: [acl] file of --config)
    #[argh(option)]
    pub acl: Option<PathBuf>,
    /// config file naming the ACL file (default /etc/eddy/eddy.toml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// The actions, for parsing, help, completions and the man page.
pub const ACTIONS: &[(&str, &str)] = &[(
    "check",
    "check IDENTITY OP NAME [--group]: which rule decides, allowed or denied",
)];

pub fn run(args: AclArgs) -> Result<(), CliError> {
    if args.action != "check" {
        return Err(super::args::unknown_action("acl", &args.action));
    }
    let op = Operation::parse(&args.operation).map_err(CliError::usage)?;
    if args.group && op == Operation::Produce {
        return Err(CliError::usage(
            "groups are consumed or administered, not produced to: use consume or admin with --group",
        ));
    }
    let path = match (&args.acl, &args.config) {
        (Some(_), Some(_)) => {
            return Err(CliError::usage("give --acl or --config, not both"));
        }
        (Some(acl), None) => acl.clone(),
        (None, config) => {
            let config_path = config
                .clone()
                .unwrap_or_else(|| PathBuf::from(CONFIG_FILE_DEFAULT));
            let loaded = file::load(&config_path).map_err(|e| CliError::usage(e.to_string()))?;
            let mut settings = ServerConfig::default();
            loaded
                .apply(&mut settings)
                .map_err(|e| CliError::usage(e.to_string()))?;
            settings.acl_file.ok_or_else(|| {
                CliError::usage(format!(
                    "{} sets no [acl] file: ACLs are off there and everyone may do everything; \
                     pass --acl FILE to check a file",
                    config_path.display()
                ))
            })?
        }
    };
    let acl = Acl::load(&path).map_err(|e| CliError::usage(e.to_string()))?;
    let resource = if args.group {
        Resource::Group(&args.name)
    } else {
        Resource::Topic(&args.name)
    };
    outln!("{}", acl.explain(&args.identity, op, resource));
    if acl.decide(&args.identity, op, resource).is_allowed() {
        Ok(())
    } else {
        Err(CliError {
            message: String::new(),
            code: 1,
        })
    }
}
