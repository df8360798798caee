//! The `eddy` binary: parses the command line and runs the command
//! (`eddy::cli::args`), then exits with its code: 0 ok, 1 failure, 2 usage,
//! 141 when standard output was closed by its reader.

#![forbid(unsafe_code)]

fn main() {
    std::process::exit(eddy::cli::args::main());
}
