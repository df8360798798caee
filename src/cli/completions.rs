//! `eddy completions bash|zsh|fish`: shell completion scripts generated
//! from the command definitions (argh's [`ArgsInfo`]) and the actions
//! lists ([`super::actions_of`]), so they cannot drift from the parser.
//!
//! Completes commands, actions and flags; after a flag that takes a value
//! it offers file names. It does not complete topic or group names (that
//! would need a running hub).

use argh::{ArgsInfo, CommandInfoWithArgs, FlagInfoKind, FromArgs};

use super::{output, Cli, CliError};

/// The shells, with a line about each (the `actions` of this command).
pub const SHELLS: &[(&str, &str)] = &[
    (
        "bash",
        "source it: eddy completions bash > /etc/bash_completion.d/eddy",
    ),
    ("zsh", "eddy completions zsh > \"${fpath[1]}/_eddy\""),
    (
        "fish",
        "eddy completions fish > ~/.config/fish/completions/eddy.fish",
    ),
];

/// Print a shell completion script: `eddy completions bash|zsh|fish`.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "completions")]
pub struct CompletionsArgs {
    /// bash, zsh or fish
    #[argh(positional)]
    pub shell: Option<String>,
}

pub fn run(args: CompletionsArgs) -> Result<(), CliError> {
    let Some(shell) = args.shell else {
        return super::args::print_actions("completions");
    };
    let info = Cli::get_args_info();
    let commands = walk(&info);
    let script = match shell.as_str() {
        "bash" => bash(&commands),
        "zsh" => zsh(&commands),
        "fish" => fish(&commands),
        other => return Err(super::args::unknown_action("completions", other)),
    };
    output::write_all(&script)
}

/// One command of the tree, flattened for the generators.
pub struct Node {
    /// Subcommand names from the top, joined by spaces ("" for `eddy`).
    pub path: String,
    /// What follows the command: subcommands and actions, with a line each.
    pub words: Vec<(String, String)>,
    /// Its flags: long name, short letter, takes a value, description.
    pub flags: Vec<(String, Option<char>, bool, String)>,
}

/// Every command of the tree, depth first.
pub fn walk(info: &CommandInfoWithArgs) -> Vec<Node> {
    let mut nodes = Vec::new();
    visit(info, String::new(), &mut nodes);
    nodes
}

fn visit(info: &CommandInfoWithArgs, path: String, nodes: &mut Vec<Node>) {
    let mut words: Vec<(String, String)> = info
        .commands
        .iter()
        .map(|c| (c.name.to_string(), first_line(c.command.description)))
        .collect();
    let last = path.rsplit(' ').next().unwrap_or("");
    words.extend(
        super::actions_of(last)
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_string())),
    );
    let flags = info
        .flags
        .iter()
        .filter(|f| !f.hidden)
        .map(|f| {
            let takes_value = matches!(f.kind, FlagInfoKind::Option { .. });
            (
                f.long.to_string(),
                f.short,
                takes_value,
                first_line(f.description),
            )
        })
        .collect();
    nodes.push(Node {
        path: path.clone(),
        words,
        flags,
    });
    for sub in &info.commands {
        let child = if path.is_empty() {
            sub.name.to_string()
        } else {
            format!("{path} {}", sub.name)
        };
        visit(&sub.command, child, nodes);
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

/// Shell `case` arms that move `$cmd` down the tree as words are read.
fn descend_arms(nodes: &[Node]) -> String {
    nodes
        .iter()
        .filter(|n| !n.path.is_empty())
        .map(|n| {
            let (parent, name) = n.path.rsplit_once(' ').unwrap_or(("", &n.path));
            format!("            \"{parent} {name}\") cmd=\"{}\" ;;\n", n.path)
        })
        .collect()
}

/// The flags that take a value, as a `case` pattern.
fn value_flags(nodes: &[Node]) -> String {
    let mut flags: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.flags.iter())
        .filter(|f| f.2)
        .flat_map(|f| std::iter::once(f.0.clone()).chain(f.1.map(|c| format!("-{c}"))))
        .collect();
    flags.sort();
    flags.dedup();
    flags.join("|")
}

fn all_words(node: &Node) -> String {
    let mut words: Vec<String> = node.words.iter().map(|w| w.0.clone()).collect();
    for (long, short, _, _) in &node.flags {
        words.push(long.clone());
        if let Some(c) = short {
            words.push(format!("-{c}"));
        }
    }
    words.join(" ")
}

/// The bash and zsh scripts share their shape: walk the words typed so
/// far down the tree into `$cmd`, offer files after a flag that takes a
/// value, else the words of `$cmd`.
struct ShellScript<'a> {
    /// Up to the `case` that walks the words.
    head: &'a str,
    /// The previous word, as the shell spells it.
    prev: &'a str,
    /// What to do after a flag that takes a value.
    files: &'a str,
    /// Before the per-command `case`.
    pick: &'a str,
    /// One `case` arm: the command's path and its words.
    arm: fn(&str, &str) -> String,
    tail: &'a str,
}

fn shell_script(nodes: &[Node], script: &ShellScript) -> String {
    let mut s = String::from(script.head);
    s.push_str(&descend_arms(nodes));
    s.push_str("        esac\n    done\n");
    s.push_str(&format!(
        "    case \"{}\" in\n        {}) {} ;;\n    esac\n",
        script.prev,
        value_flags(nodes),
        script.files
    ));
    s.push_str(script.pick);
    for node in nodes {
        s.push_str(&(script.arm)(&node.path, &all_words(node)));
    }
    s.push_str(script.tail);
    s
}

/// The bash script: `complete -F _eddy eddy`.
pub fn bash(nodes: &[Node]) -> String {
    shell_script(
        nodes,
        &ShellScript {
            head: "# bash completion for eddy (generated by `eddy completions bash`)\n\
                   _eddy() {\n    local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"\" cmd=\"\" w i\n    \
                   (( COMP_CWORD > 0 )) && prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n    \
                   for (( i = 1; i < COMP_CWORD; i++ )); do\n        w=\"${COMP_WORDS[i]}\"\n        \
                   case \"$cmd $w\" in\n",
            prev: "$prev",
            files: "COMPREPLY=( $(compgen -f -- \"$cur\") ); return",
            pick: "    local words=\"\"\n    case \"$cmd\" in\n",
            arm: |path, words| format!("        \"{path}\") words=\"{words}\" ;;\n"),
            tail: "    esac\n    COMPREPLY=( $(compgen -W \"$words\" -- \"$cur\") )\n}\n\
                   complete -F _eddy eddy\n",
        },
    )
}

/// The zsh script (`#compdef eddy`, for a directory in `$fpath`).
pub fn zsh(nodes: &[Node]) -> String {
    shell_script(
        nodes,
        &ShellScript {
            head: "#compdef eddy\n# zsh completion for eddy (generated by `eddy completions zsh`)\n\
                   _eddy() {\n    local cmd=\"\" w i\n    for (( i = 2; i < CURRENT; i++ )); do\n        \
                   w=\"${words[i]}\"\n        case \"$cmd $w\" in\n",
            prev: "${words[CURRENT-1]}",
            files: "_files; return",
            pick: "    case \"$cmd\" in\n",
            arm: |path, words| format!("        \"{path}\") compadd -- {words} ;;\n"),
            tail: "    esac\n}\n_eddy \"$@\"\n",
        },
    )
}

/// The fish script: one `complete` line per command word and flag.
pub fn fish(nodes: &[Node]) -> String {
    let mut s = String::from(
        "# fish completion for eddy (generated by `eddy completions fish`)\n\
         function __eddy_cmd\n    set -l cmd ''\n    for w in (commandline -opc)[2..-1]\n        \
         switch \"$cmd $w\"\n",
    );
    for node in nodes.iter().filter(|n| !n.path.is_empty()) {
        let (parent, name) = node.path.rsplit_once(' ').unwrap_or(("", &node.path));
        s.push_str(&format!(
            "            case '{parent} {name}'\n                set cmd '{}'\n",
            node.path
        ));
    }
    s.push_str("        end\n    end\n    echo \"$cmd\"\nend\ncomplete -c eddy -f\n");
    for node in nodes {
        let when = format!("test (__eddy_cmd) = '{}'", node.path);
        for (word, about) in &node.words {
            s.push_str(&format!(
                "complete -c eddy -n \"{when}\" -a {word} -d '{}'\n",
                fish_quote(about)
            ));
        }
        for (long, short, takes_value, about) in &node.flags {
            let short = short.map(|c| format!(" -s {c}")).unwrap_or_default();
            let value = if *takes_value { " -r -F" } else { "" };
            s.push_str(&format!(
                "complete -c eddy -n \"{when}\" -l {}{short}{value} -d '{}'\n",
                long.trim_start_matches("--"),
                fish_quote(about)
            ));
        }
    }
    s
}

fn fish_quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}
