//! The `eddy` binary: parses the command line and runs the command.

#![forbid(unsafe_code)]

fn main() {
    let cli: eddy::cli::Cli = argh::from_env();
    if let Err(e) = eddy::cli::run(cli) {
        eprintln!("error: {}", e.message);
        std::process::exit(e.code);
    }
}
