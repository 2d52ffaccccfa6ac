//! `holdfast`: the command-line tool.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keep a program's state safe while its code changes.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play three releases of a sample application over one stable memory.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => {
            eprintln!("holdfast demo: not built yet (holdfast-memory is in progress)");
            ExitCode::from(2)
        }
    }
}
