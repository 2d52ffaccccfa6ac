//! `holdfast`: the command-line tool.
//!
//! Today it has one command, `demo`, which plays three releases of a sample
//! application over one file-backed stable memory with holdfast-memory
//! governing the layout. `inspect` and `check` of images are the next
//! milestone (see the project's issues).
#![forbid(unsafe_code)]

mod demo;

use std::path::PathBuf;
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
    /// Play three releases of a sample application over one stable memory:
    /// the drifted release is refused and the image left unchanged.
    ///
    /// Example: holdfast demo --dir /tmp/holdfast-demo
    Demo {
        /// Directory for the stable-memory image (default: a fresh temporary
        /// directory, printed).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { dir } => match demo::run(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("holdfast demo: {err}");
                ExitCode::from(2)
            }
        },
    }
}
