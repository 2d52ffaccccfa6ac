//! `holdfast`: the command-line tool. Parses arguments, runs the library's
//! command, prints its report, and exits 0 (success or accepted), 1 (layout
//! refused) or 2 (image or input unreadable).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use holdfast_cli::render::{self, Colour};
use holdfast_cli::{CliError, EXIT_OK, EXIT_REFUSED, EXIT_UNREADABLE};

/// Keep a program's state safe while its code changes: inspect and check
/// stable-memory images governed by holdfast-memory.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success or accepted, 1 layout refused, 2 image or input unreadable.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Play three releases of a sample application over one stable memory:
    /// the drifted release is refused and the image left byte-for-byte unchanged.
    #[command(after_help = "Examples:\n  holdfast demo\n  holdfast demo --dir /tmp/holdfast-demo")]
    Demo {
        /// Directory for the stable-memory image (default: a fresh temporary
        /// directory, printed).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show what a stable-memory image holds: MemoryManager header, both
    /// ledger commit slots, the allocation table, generation history and
    /// warnings. The image is opened read-only.
    #[command(
        after_help = "Examples:\n  holdfast inspect stable_memory.bin\n  holdfast inspect stable_memory.bin --json | jq .ledger.records"
    )]
    Inspect {
        /// The image (for example from `dfx canister snapshot download`).
        image: PathBuf,
        /// Print one JSON document (field names in docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
    /// Check whether a build's declarations would be accepted by the next
    /// boot over IMAGE: exactly the boot's validation, on a read-only view.
    #[command(
        after_help = "Examples:\n  holdfast check stable_memory.bin --declarations declarations.json\n  holdfast check stable_memory.bin --declarations declarations.json --json\n\nThe declarations file is what holdfast_memory::write_static_declarations_json\nwrites from the build you will deploy (see docs/CLI.md)."
    )]
    Check {
        /// The image.
        image: PathBuf,
        /// The declaration snapshot of the new build (JSON).
        #[arg(long, value_name = "FILE")]
        declarations: PathBuf,
        /// Print one JSON document (field names in docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let colour = Colour::for_stdout();
    let outcome = match cli.command {
        Command::Demo { dir } => holdfast_cli::demo::run(dir, colour).map(|()| EXIT_OK),
        Command::Inspect { image, json } => holdfast_cli::inspect(&image).map(|report| {
            if json {
                println!("{}", render::json(&report));
            } else {
                print!("{}", render::inspect_human(&report, colour));
            }
            match &report.ledger_error {
                Some(error) => {
                    eprintln!("holdfast: {error}");
                    EXIT_UNREADABLE
                }
                None => EXIT_OK,
            }
        }),
        Command::Check {
            image,
            declarations,
            json,
        } => holdfast_cli::check(&image, &declarations).map(|report| {
            if json {
                println!("{}", render::json(&report));
            } else {
                print!("{}", render::check_human(&report, colour));
            }
            if report.accepted() { EXIT_OK } else { EXIT_REFUSED }
        }),
    };
    ExitCode::from(outcome.unwrap_or_else(|error: CliError| {
        eprintln!("holdfast: {error}");
        error.exit_code()
    }))
}
