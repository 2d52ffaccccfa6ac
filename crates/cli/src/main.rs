//! `holdfast`: the command-line tool. Parses arguments, runs the library's
//! command, prints its report, and exits 0 (success or accepted), 1 (layout
//! refused, a node refused the request, or a bundle's signature refused) or
//! 2 (image, key, input or data directory unreadable).
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use holdfast_cli::client::{self, NodeClient};
use holdfast_cli::render::{self, Colour};
use holdfast_cli::run::RunArgs;
use holdfast_cli::{CliError, EXIT_OK, EXIT_REFUSED, EXIT_UNREADABLE};

/// Keep a program's state safe while its code changes: run a node whose
/// daemons survive hot reloads, crashes and upgrades; inspect and check
/// stable-memory images governed by holdfast-memory.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success or accepted, 1 layout refused, request refused by the node or bundle signature refused, 2 image, key, input or data directory unreadable.";

/// Where the client commands find their node.
#[derive(Debug, clap::Args)]
struct NodeArgs {
    /// The node's base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7070")]
    node: String,
    /// A file holding the node's bearer token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the node's JSON answer unchanged.
    #[arg(long)]
    json: bool,
}

/// `--signature-policy`'s values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PolicyArg {
    Off,
    Warn,
    Require,
}

impl From<PolicyArg> for holdfast_plugin::abi::SignaturePolicy {
    fn from(policy: PolicyArg) -> Self {
        match policy {
            PolicyArg::Off => Self::Off,
            PolicyArg::Warn => Self::Warn,
            PolicyArg::Require => Self::Require,
        }
    }
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Create a signing key: the secret key at KEY (mode 0600, never
    /// overwritten) and the public key at KEY.pub.
    #[command(after_help = "Example:\n  holdfast bundle keygen --out release.key")]
    Keygen {
        /// Where to write the secret key (KEY.pub gets the public key).
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Sign the bundle in DIR: writes DIR/bundle.sig over manifest.toml and
    /// every file its `file` key names.
    #[command(after_help = "Example:\n  holdfast bundle sign --key release.key plugins/counter")]
    Sign {
        /// The secret key file.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The bundle directory.
        dir: PathBuf,
    },
    /// Verify the bundle in DIR as a runtime requiring signatures and
    /// trusting KEY.pub would: exit 0 when valid, 1 when refused (the reason
    /// on stderr).
    #[command(after_help = "Example:\n  holdfast bundle verify --key release.key.pub plugins/counter")]
    Verify {
        /// The public key file.
        #[arg(long, value_name = "KEY.pub")]
        key: PathBuf,
        /// The bundle directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign plugin bundles and verify their signatures (Ed25519).
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Play three releases of a sample application over one stable memory:
    /// the drifted release is refused and the image left byte-for-byte unchanged.
    #[command(after_help = "Examples:\n  holdfast demo\n  holdfast demo --dir /tmp/holdfast-demo")]
    Demo {
        /// Directory for the stable-memory image (default: a fresh temporary
        /// directory, printed).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run a node: daemons whose kinds come from plugin bundles, every
    /// accepted event journaled before it is acknowledged, HTTP API and
    /// status page. SIGTERM or Ctrl-C drains it and exits 0.
    #[command(
        after_help = "Examples:\n  holdfast run --data ./node --plugins ./plugins\n  holdfast run --data ./node --listen 0.0.0.0:7070 --token-file token.txt\n  holdfast run --data ./n1 --plugins ./plugins --cluster nats://127.0.0.1:4222 --cluster-name demo --psk-file cluster.psk"
    )]
    Run {
        /// The data directory (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// A directory of bundle directories, loaded at start and watched.
        #[arg(long, value_name = "DIR")]
        plugins: Option<PathBuf>,
        /// Where the HTTP API listens.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Bearer token file; required when listening beyond loopback.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// How often the plugins directory is scanned for new or changed
        /// bundles, in milliseconds (0: never).
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        plugin_scan_ms: u64,
        /// Outputs kept per daemon, the oldest dropped first (at least 1).
        /// In cluster mode: entries kept per daemon in the outputs stream,
        /// set by the node that creates it.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        output_retention: u64,
        /// A daemon is snapshotted after this many events (0: never by
        /// count); in cluster mode, after this many inputs.
        #[arg(long, value_name = "N", default_value_t = 1_000)]
        snapshot_every_events: u64,
        /// A daemon with events its last snapshot does not cover is
        /// snapshotted once that snapshot is this old, in milliseconds (at
        /// least 1); in cluster mode too, busy or quiet.
        #[arg(long, value_name = "MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
        snapshot_every_ms: u64,
        /// Whether bundles must be signed: `require` never opens an
        /// unsigned or altered bundle, `warn` logs and loads it.
        #[arg(long, value_enum, default_value_t = PolicyArg::Off)]
        signature_policy: PolicyArg,
        /// A public key (`holdfast bundle keygen`'s KEY.pub) bundles may be
        /// signed by; repeat for more.
        #[arg(long, value_name = "KEY.pub")]
        trusted_key: Vec<PathBuf>,
        /// A public key whose signatures are refused even if trusted.
        #[arg(long, value_name = "KEY.pub")]
        revoked_key: Vec<PathBuf>,
        // Boxed: the cluster flags would make every other command's
        // variant as large as this one.
        #[command(flatten)]
        cluster: Box<holdfast_cli::run::ClusterArgs>,
    },
    /// Spawn a daemon of KIND on a node.
    Spawn {
        /// The kind (`counter` for contract `daemon.counter`).
        kind: String,
        /// The daemon's configuration (JSON).
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Send one event to a daemon; PAYLOAD `-` reads it from stdin.
    Send {
        /// The daemon's origin (16 hex digits).
        origin: String,
        /// The event.
        payload: String,
        /// An idempotency key: a retry with the same key is not processed twice.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Show a daemon's outputs.
    Outputs {
        /// The daemon's origin.
        origin: String,
        /// The first sequence.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List a node's daemons.
    Daemons {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Move a daemon to another node of its cluster (a planned move; the
    /// node asked need not be its owner).
    Migrate {
        /// The daemon's origin.
        origin: String,
        /// The id of the node to move it to (`holdfast cluster` lists them).
        to: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Show a node's cluster: its live nodes, each daemon's owner, the
    /// recent moves.
    Cluster {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Reload a bundle on a node (its daemons keep their state).
    Reload {
        /// The bundle's name.
        bundle: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Show what a stable-memory image holds: MemoryManager header, both
    /// ledger commit slots, the allocation table, generation history and
    /// warnings. The image is opened read-only.
    #[command(
        after_help = "Examples:\n  holdfast inspect stable_memory.bin\n  holdfast inspect stable_memory.bin --json | jq .ledger.records\n  holdfast inspect stable_memory.bin --html history.html"
    )]
    Inspect {
        /// The image (for example from `dfx canister snapshot download`).
        image: PathBuf,
        /// Print one JSON document (field names in docs/CLI.md).
        #[arg(long)]
        json: bool,
        /// Also write the report as one self-contained HTML page (stores,
        /// generation timeline, schema history, warnings) to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Check whether a build's declarations would be accepted by the next
    /// boot over IMAGE: exactly the boot's validation, on a read-only view.
    #[command(
        after_help = "Examples:\n  holdfast check stable_memory.bin --declarations declarations.json\n  holdfast check stable_memory.bin --declarations declarations.json --json\n\nThe declarations file is what holdfast_memory::write_static_declarations_json\nwrites from the build you will deploy (see docs/CLI.md)."
    )]
    Check {
        /// The image.
        image: PathBuf,
        /// The declarations of the new build: the compact form
        /// `holdfast-declarations/1` (with declaring crates and ranges) or
        /// the older snapshot form (docs/CLI.md).
        #[arg(long, value_name = "FILE")]
        declarations: PathBuf,
        /// Print one JSON document (field names in docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
}

/// Runs one client command: prints the node's JSON (`--json`) or the
/// human text, and turns a refusal into `CliError::Refused`.
fn client_command(
    args: &NodeArgs,
    body: impl FnOnce(&NodeClient) -> Result<(client::Answer, String), CliError>,
) -> Result<u8, CliError> {
    let client = NodeClient::new(&args.node, args.token_file.as_deref())?;
    let (answer, text) = body(&client)?;
    if !answer.is_success() {
        return Err(CliError::Refused(answer.error_text()));
    }
    if args.json {
        println!("{}", answer.body);
    } else {
        print!("{text}");
    }
    Ok(EXIT_OK)
}

/// Runs one `bundle` subcommand and prints what it did.
fn bundle_command(command: BundleCommand) -> Result<u8, CliError> {
    match command {
        BundleCommand::Keygen { out } => {
            let (public, public_path) = holdfast_cli::bundle::keygen(&out)?;
            println!(
                "secret key {} (keep it private), public key {} ({public})",
                out.display(),
                public_path.display()
            );
        }
        BundleCommand::Sign { key, dir } => {
            let (signed, path) = holdfast_cli::bundle::sign(&key, &dir)?;
            println!(
                "signed bundle {} with key {}: manifest and {} file(s) -> {}",
                signed.bundle,
                signed.key,
                signed.files.len(),
                path.display()
            );
        }
        BundleCommand::Verify { key, dir } => {
            let verified = holdfast_cli::bundle::verify(&key, &dir)?;
            println!(
                "bundle {} is valid: signed by {}, manifest and {} file(s) unchanged",
                verified.bundle(),
                verified.key(),
                verified.file_count()
            );
        }
    }
    Ok(EXIT_OK)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let colour = Colour::for_stdout();
    let outcome = match cli.command {
        Command::Run {
            data,
            plugins,
            listen,
            token_file,
            plugin_scan_ms,
            output_retention,
            snapshot_every_events,
            snapshot_every_ms,
            signature_policy,
            trusted_key,
            revoked_key,
            cluster,
        } => holdfast_cli::run::run(RunArgs {
            data,
            plugins,
            listen,
            token_file,
            plugin_scan_ms,
            output_retention,
            snapshot_every_events,
            snapshot_every_ms,
            signature_policy: signature_policy.into(),
            trusted_keys: trusted_key,
            revoked_keys: revoked_key,
            cluster: *cluster,
        })
        .map(|()| EXIT_OK),
        Command::Spawn { kind, config, node } => client_command(&node, |client| {
            let config = config
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|error| CliError::Client(format!("--config is not JSON: {error}")))?;
            let answer = client.spawn(&kind, config)?;
            Ok((
                answer.clone(),
                format!("{}\n", answer.body["origin"].as_str().unwrap_or("?")),
            ))
        }),
        Command::Send {
            origin,
            payload,
            key,
            node,
        } => client_command(&node, |client| {
            let payload = if payload == "-" {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .map_err(|error| CliError::Client(format!("reading stdin: {error}")))?;
                bytes
            } else {
                payload.into_bytes()
            };
            let answer = client.send(&origin, &payload, key.as_deref())?;
            Ok((
                answer.clone(),
                format!("accepted as input {}\n", answer.body["seq"]),
            ))
        }),
        Command::Outputs {
            origin,
            from,
            limit,
            node,
        } => client_command(&node, |client| {
            let answer = client.outputs(&origin, from, limit)?;
            let text = client::outputs_human(&answer.body);
            Ok((answer, text))
        }),
        Command::Daemons { node } => client_command(&node, |client| {
            let answer = client.get("/v1/daemons?limit=1000")?;
            let text = client::daemons_human(&answer.body);
            Ok((answer, text))
        }),
        Command::Migrate { origin, to, node } => client_command(&node, |client| {
            let body = serde_json::json!({ "node": to }).to_string();
            let answer = client.post(&format!("/v1/daemons/{origin}/migrate"), body.as_bytes(), None)?;
            let text = format!(
                "{origin} moved to {} (epoch {}), paused {} µs\n",
                answer.body["to"].as_str().unwrap_or("?"),
                answer.body["epoch"],
                answer.body["pause_us"],
            );
            Ok((answer, text))
        }),
        Command::Cluster { node } => client_command(&node, |client| {
            let answer = client.get("/v1/cluster")?;
            let text = client::cluster_human(&answer.body);
            Ok((answer, text))
        }),
        Command::Reload { bundle, node } => client_command(&node, |client| {
            let answer = client.reload(&bundle)?;
            let text = format!(
                "{} {} -> {}: {} daemons carried, paused {} µs\n",
                answer.body["bundle"].as_str().unwrap_or("?"),
                answer.body["from"].as_str().unwrap_or("?"),
                answer.body["to"].as_str().unwrap_or("?"),
                answer.body["daemons_carried"],
                answer.body["pause_us"],
            );
            Ok((answer, text))
        }),
        Command::Bundle { command } => bundle_command(command),
        Command::Demo { dir } => holdfast_cli::demo::run(dir, colour).map(|()| EXIT_OK),
        Command::Inspect { image, json, html } => holdfast_cli::inspect(&image).and_then(|report| {
            if json {
                println!("{}", render::json(&report));
            } else {
                print!("{}", render::inspect_human(&report, colour));
            }
            if let Some(out) = &html {
                let bytes = holdfast_cli::html::write_page(&image, out, &report)?;
                eprintln!("wrote {} ({bytes} bytes)", out.display());
            }
            Ok(match &report.ledger_error {
                Some(error) => {
                    eprintln!("holdfast: {error}");
                    EXIT_UNREADABLE
                }
                None => EXIT_OK,
            })
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
