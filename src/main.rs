//! Thin entry point: parse, dispatch, exit with the command's code.

use clap::Parser;
use std::process::ExitCode;

use nodemedic::cli::{Cli, exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    ExitCode::from(nodemedic::commands::dispatch(cli.command))
}
