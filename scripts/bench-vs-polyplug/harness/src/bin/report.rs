//! Prints the side-by-side table of scripts/bench-vs-polyplug.sh from the
//! criterion results of both sides (the median of each row's
//! `new/estimates.json`), refusing any result older than `--since`, so a row
//! that did not run this time can never show last run's figure.
//!
//! Usage: report --holdfast DIR --polyplug DIR --since UNIX_SECONDS

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

/// Median time per iteration of one bench, in nanoseconds.
fn median_ns(root: &Path, id: &str, since: u64) -> Result<f64, String> {
    let path = root.join(id).join("new/estimates.json");
    let modified = std::fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if modified < UNIX_EPOCH + Duration::from_secs(since) {
        return Err(format!("{}: older than this run", path.display()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    json["median"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| format!("{}: no median.point_estimate", path.display()))
}

fn time(ns: f64) -> String {
    if ns >= 1_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else {
        format!("{ns:.2} ns")
    }
}

struct Side {
    root: PathBuf,
    since: u64,
}

impl Side {
    fn get(&self, id: &str) -> Result<f64, String> {
        median_ns(&self.root, id, self.since)
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|at| args.get(at + 1))
            .cloned()
            .ok_or_else(|| format!("missing {flag} VALUE"))
    };
    let since: u64 = value("--since")?.parse().map_err(|e| format!("--since: {e}"))?;
    let holdfast = Side {
        root: value("--holdfast")?.into(),
        since,
    };
    let polyplug = Side {
        root: value("--polyplug")?.into(),
        since,
    };

    println!("| | holdfast | polyplug 0.1.3 | holdfast / polyplug |");
    println!("|---|---|---|---|");
    let times = [
        ("direct call (baseline)", "dispatch/direct"),
        ("cached dispatch", "dispatch/cached"),
        ("reload total (old image unmapped)", "reload/total"),
        ("load (old image unmapped)", "load_bundle/full"),
    ];
    for (label, id) in times {
        let (h, p) = (holdfast.get(id)?, polyplug.get(id)?);
        println!("| {label} | {} | {} | {:.2}× |", time(h), time(p), h / p);
    }
    // Each iteration of these is one call on each of 2 threads.
    let rate = |ns: f64| 2.0e9 / ns;
    let quiet = (
        holdfast.get("dispatch_while_reloading/quiet")?,
        polyplug.get("dispatch_while_reloading/quiet")?,
    );
    println!(
        "| dispatch, quiet (calls/s, 2 threads) | {:.0} M | {:.0} M | {:.2}× |",
        rate(quiet.0) / 1e6,
        rate(quiet.1) / 1e6,
        rate(quiet.0) / rate(quiet.1)
    );
    let loaded = [
        (
            "dispatch while reloading, 1 reload/ms (ratio to quiet)",
            "dispatch_while_reloading/paced",
        ),
        (
            "dispatch during back-to-back reloads (ratio to quiet)",
            "dispatch_while_reloading/back_to_back",
        ),
    ];
    for (label, id) in loaded {
        let h = quiet.0 / holdfast.get(id)?;
        let p = quiet.1 / polyplug.get(id)?;
        println!("| {label} | {h:.3} | {p:.3} | {:.2}× |", h / p);
    }
    // What no implementation that keeps a private copy can go below, in
    // holdfast's process on the same image: the gap the reload row leaves
    // is measured against this, not only against polyplug.
    let reload = polyplug.get("reload/total")?;
    let floors = [
        ("`dlopen` alone", "reload/floor_dlopen"),
        (
            "the image read into mapped memory + `dlopen`",
            "reload/floor_copy_and_dlopen",
        ),
    ];
    println!();
    println!("Floors (holdfast's bench, nothing but these steps):");
    for (label, id) in floors {
        let floor = holdfast.get(id)?;
        println!(
            "  {label}: {} = {:.2}× polyplug's reload total",
            time(floor),
            floor / reload
        );
    }
    let paced_floor = quiet.0 / holdfast.get("dispatch_while_reloading/paced_floor_dlopen")?;
    println!(
        "  dispatch while only a `dlopen` + `dlclose` of the image runs once per ms: {paced_floor:.3} of quiet (the paced row's floor)"
    );
    println!();
    println!("Medians. Times: holdfast / polyplug below 1 means holdfast is faster.");
    println!("Rates and ratios to quiet: above 1 means holdfast keeps more of its rate.");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("report: {error}");
            ExitCode::FAILURE
        }
    }
}
