//! The hostile-input campaign: mutated ledgers and images, counted per
//! outcome category and per call (see `holdfast_memory::fuzzing`).
//!
//! ```sh
//! cargo run --release -p holdfast-memory --example campaign -- --cases 1000000 [--seed N] [--threads N] [--base NAME]...
//! cargo run --release -p holdfast-memory --example campaign -- --seed N --case I    # replay one case
//! ```
//!
//! Exits 1 when any call panicked, accepted a wrong ledger, wrote when it
//! must not, left a store damaged, or disagreed with `plan` (2 on bad
//! arguments).

use std::process::ExitCode;

use holdfast_memory::fuzzing::{BaseKind, CampaignConfig, case_entropy, replay_case, run_campaign};

struct Args {
    cases: u64,
    seed: u64,
    threads: usize,
    bases: Vec<BaseKind>,
    replay: Option<u64>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        cases: 1_000_000,
        seed: 11,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        bases: Vec::new(),
        replay: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| {
            text.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--cases" => args.cases = number(value()?)?,
            "--seed" => args.seed = number(value()?)?,
            "--threads" => args.threads = usize::try_from(number(value()?)?).map_err(|e| e.to_string())?,
            "--case" => args.replay = Some(number(value()?)?),
            "--base" => {
                let name = value()?;
                let names: Vec<_> = BaseKind::ALL.iter().map(|b| b.name()).collect();
                args.bases.push(
                    BaseKind::from_name(&name)
                        .ok_or_else(|| format!("unknown base {name}; one of {}", names.join(", ")))?,
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("campaign: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(case) = args.replay {
        let (base, _) = case_entropy(args.seed, case, &args.bases);
        eprintln!("replaying case {case} of seed {} over {}", args.seed, base.name());
        let report = replay_case(args.seed, case, &args.bases);
        println!("{report}");
        return if report.findings.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    eprintln!(
        "campaign: {} cases, seed {}, {} threads; building the base images",
        args.cases, args.seed, args.threads
    );
    let report = run_campaign(&CampaignConfig {
        cases: args.cases,
        seed: args.seed,
        threads: args.threads,
        bases: args.bases,
    });
    println!("{report}");
    if report.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
