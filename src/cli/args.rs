//! From `argv` to a [`Cli`]: argh's parse, plus what argh does not do —
//! "did you mean" for an unknown flag, command or action, a pointer to
//! `eddy help <command>`, help on stdout that survives `| head`, and one
//! exit code convention (0 ok, 1 failure, 2 usage, 141 stdout closed).
//!
//! It does not run commands ([`super::run`] does) and knows the command
//! tree only through argh's [`ArgsInfo`].

use argh::{ArgsInfo, CommandInfoWithArgs, FromArgs};

use super::{output, Cli, CliError, EXIT_USAGE};

/// The name the help text uses for the program, whatever argv\[0\] is.
pub const PROGRAM: &str = "eddy";

/// Parses and runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse(&args) {
        Ok(cli) => super::run(cli),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // An empty message: the command already said everything (a
            // denied `acl check`, a closed stdout); only the code is left.
            if !e.message.is_empty() {
                eprintln!("error: {}", e.message);
            }
            e.code
        }
    }
}

/// Parses `args` (without the program name). Help (`--help`, `help …`)
/// is printed here and comes back as a quiet `Err` with code 0.
pub fn parse(args: &[String]) -> Result<Cli, CliError> {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match Cli::from_args(&[PROGRAM], &strs) {
        Ok(cli) => Ok(cli),
        Err(exit) if exit.status.is_ok() => {
            output::write_all(&exit.output)?;
            Err(CliError {
                message: String::new(),
                code: 0,
            })
        }
        Err(exit) => {
            // `eddy bench` alone: its help (the benchmarks it has), as
            // `eddy topics` alone lists its actions.
            let info = Cli::get_args_info();
            let (path, command) = command_of(&info, &strs);
            if !path.is_empty() && path.len() == strs.len() && !command.commands.is_empty() {
                let mut help = strs.clone();
                help.push("--help");
                if let Err(shown) = Cli::from_args(&[PROGRAM], &help) {
                    output::write_all(&shown.output)?;
                    return Err(CliError {
                        message: String::new(),
                        code: 0,
                    });
                }
            }
            Err(CliError::usage(usage_message(&strs, &exit.output)))
        }
    }
}

/// argh's message, a suggestion when one word is close to a known one,
/// and where to read more.
fn usage_message(args: &[&str], argh_output: &str) -> String {
    let info = Cli::get_args_info();
    let (path, command) = command_of(&info, args);
    let mut message = argh_output.trim_end().to_string();
    if let Some(given) = unrecognized(argh_output) {
        let candidates = words_of(command);
        if let Some(near) = did_you_mean(given, candidates.iter().map(String::as_str)) {
            message = format!("unknown argument {given:?}: did you mean {near:?}?");
        } else if given.starts_with('-') {
            message = format!("unknown flag {given:?}");
        } else {
            message = format!("unexpected argument {given:?}");
        }
    }
    let help = if path.is_empty() {
        format!("{PROGRAM} help")
    } else {
        format!("{PROGRAM} help {}", path.join(" "))
    };
    format!("{message}\n  see `{help}`")
}

/// The argument argh did not recognize, from its message.
fn unrecognized(argh_output: &str) -> Option<&str> {
    let rest = argh_output.strip_prefix("Unrecognized argument: ")?;
    let word = rest.lines().next()?.trim();
    // argh quotes the word in some messages and adds its own suggestion.
    let word = word.split(". Did you mean").next()?.trim_matches('"');
    Some(word)
}

/// The deepest command `args` names, and its path of subcommand names.
pub fn command_of<'a>(
    info: &'a CommandInfoWithArgs,
    args: &[&str],
) -> (Vec<&'a str>, &'a CommandInfoWithArgs) {
    let mut path = Vec::new();
    let mut command = info;
    for arg in args {
        if let Some(sub) = command.commands.iter().find(|c| c.name == *arg) {
            path.push(sub.name);
            command = &sub.command;
        }
    }
    (path, command)
}

/// Every word a user may type after `command`: its flags (long and short),
/// subcommands and actions.
pub fn words_of(command: &CommandInfoWithArgs) -> Vec<String> {
    let mut words: Vec<String> = command
        .flags
        .iter()
        .filter(|f| !f.hidden)
        .flat_map(|f| std::iter::once(f.long.to_string()).chain(f.short.map(|c| format!("-{c}"))))
        .collect();
    words.extend(command.commands.iter().map(|c| c.name.to_string()));
    words.extend(
        super::actions_of(command.name)
            .iter()
            .map(|(name, _)| name.to_string()),
    );
    words
}

/// The candidate closest to `given`, if it is close enough to be a typo:
/// at most 1 edit for short words, 2 for longer ones, or a prefix.
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let budget = if given.trim_start_matches('-').len() <= 4 {
        1
    } else {
        2
    };
    candidates
        .into_iter()
        .filter(|c| c.len() > 2 || given.len() <= 2)
        .map(|c| (edit_distance(given, c), c))
        .filter(|(d, c)| *d <= budget || (given.len() >= 4 && c.starts_with(given)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over chars where a swap of two neighbours counts as one
/// edit (optimal string alignment: `lsit` is one edit from `list`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// A usage error for an unknown action of `command`, with a suggestion.
pub fn unknown_action(command: &str, given: &str) -> CliError {
    let actions = super::actions_of(command);
    let names: Vec<&str> = actions.iter().map(|(n, _)| *n).collect();
    let hint = match did_you_mean(given, names.iter().copied()) {
        Some(near) => format!("did you mean {near:?}? "),
        None => String::new(),
    };
    CliError {
        message: format!(
            "unknown action {given:?} for `{PROGRAM} {command}`: {hint}use one of {}\n  see `{PROGRAM} help {command}`",
            names.join(", ")
        ),
        code: EXIT_USAGE,
    }
}

/// `eddy topics` alone: its actions, one a line, on stdout.
pub fn print_actions(command: &str) -> Result<(), CliError> {
    crate::outln!("Usage: {PROGRAM} {command} ACTION [ARGS] [OPTIONS]\n\nActions:");
    for (name, about) in super::actions_of(command) {
        crate::outln!("  {name:<10} {about}");
    }
    crate::outln!("\nSee `{PROGRAM} help {command}` for the options.");
    Ok(())
}

/// `eddy` alone: the top-level help (as `eddy help`), on stdout.
pub fn print_top_level_help() -> Result<(), CliError> {
    match Cli::from_args(&[PROGRAM], &["help"]) {
        Err(exit) => output::write_all(&exit.output),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("topc", "topic"), 1);
        assert_eq!(edit_distance("--partition", "--partitions"), 1);
        assert_eq!(edit_distance("lsit", "list"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggestions_are_close_or_absent() {
        let flags = ["--topic", "--partition", "--server", "-t"];
        assert_eq!(did_you_mean("--topc", flags), Some("--topic"));
        assert_eq!(did_you_mean("--partitions", flags), Some("--partition"));
        assert_eq!(did_you_mean("--frobnicate", flags), None);
        assert_eq!(did_you_mean("topic", ["topics", "groups"]), Some("topics"));
    }

    #[test]
    fn unknown_flags_get_a_suggestion_and_the_help_command() {
        let args: Vec<String> = ["produce", "--topc", "x"].map(String::from).to_vec();
        let e = parse(&args).unwrap_err();
        assert_eq!(e.code, EXIT_USAGE);
        assert!(
            e.message.contains("did you mean \"--topic\""),
            "{}",
            e.message
        );
        assert!(e.message.contains("eddy help produce"), "{}", e.message);
    }
}
