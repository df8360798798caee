//! The `eddy` binary: parses the command line and runs the command.

#![forbid(unsafe_code)]

fn main() {
    let cli: eddy::cli::Cli = argh::from_env();
    if let Err(e) = eddy::cli::run(cli) {
        // An empty message: the command already said everything (e.g. a
        // denied `acl check`); only the exit code is left.
        if !e.message.is_empty() {
            eprintln!("error: {}", e.message);
        }
        std::process::exit(e.code);
    }
}
