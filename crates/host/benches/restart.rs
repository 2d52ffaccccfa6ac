//! Restart after a crash (spec/host.md §10: 10,000 daemons and 100,000
//! journaled events to replay, ready in ≤ 1 s).
//!
//! The crashed data directory is made the honest way: this binary runs
//! itself as a child process (environment variable [`CHILD`]) that opens a
//! node configured never to snapshot (`snapshot_every_events = 0`,
//! `snapshot_every` = one day), spawns the daemons, sends the events (1 KiB
//! each, 64 concurrent senders, every one acknowledged, so durable) and
//! waits until all are processed; the parent then kills it with `SIGKILL`.
//! No drain and no final snapshot run, so every event is in the journal
//! and no daemon has a snapshot: a restart must replay all of them, and
//! redb must repair a database that was not closed.
//!
//! Each measured restart copies that directory (untimed, so every run
//! starts from the same crashed bytes, warm in the page cache) and times
//! `Node::open` (format check, redb's open and repair, plugin load, reading
//! every daemon's record and journal) and then the replay, until every
//! daemon's published view has processed everything it accepted. Dropping
//! the node afterwards snapshots all the daemons; that is reported apart.
//! So is redb's open of the crashed file alone, on another copy.
//!
//! A harness binary: each iteration needs a fresh copy of a crashed
//! directory of about 120 MB, which criterion's timing loop cannot keep out.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dirs, Spread};
use holdfast_host::{Node, NodeConfig};

/// Set in the child: the root (holding `data/` and `plugins/`) to fill,
/// then `daemons:events`.
const CHILD: &str = "HOLDFAST_BENCH_RESTART_CHILD";
/// What the child prints once everything is durable and processed.
const READY: &str = "restart-child-ready";

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    common::announce("restart");
    let daemons = common::size(10_000, 100);
    let events = common::size(100_000, 1_000);
    let restarts = common::size(5, 1);
    let dirs = Dirs::new();

    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().expect("this binary's path"))
        .env(CHILD, format!("{}:{daemons}:{events}", dirs.root().display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let ready = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == READY);
    assert!(ready, "the child ended before it was ready");
    child.kill().expect("the child can be killed");
    child.wait().expect("the killed child is reaped");
    let image = std::fs::metadata(dirs.data().join("holdfast.redb"))
        .expect("the crashed database exists")
        .len();
    println!(
        "restart: child journaled {events} events of 1 KiB for {daemons} daemons and was killed \
         (SIGKILL) after {:.1} s; database {:.1} MB",
        started.elapsed().as_secs_f64(),
        image as f64 / 1e6
    );

    let runtime = common::runtime();
    let (mut opens, mut readies, mut drops) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..restarts {
        let copy = dirs.root().join(format!("restart-{run}"));
        copy_dir(&dirs.data(), &copy);
        let config = crashed_config(&copy, &dirs);
        let (node, opened, ready) = runtime.block_on(async {
            let started = Instant::now();
            let node = Node::open(config).await.expect("the crashed node opens");
            let opened = started.elapsed();
            common::wait_all_processed(&node, Duration::from_secs(120)).await;
            (node, opened, started.elapsed())
        });
        let views = node.daemons(None, usize::MAX).expect("listing from the start");
        assert_eq!(views.len(), daemons, "every daemon is back");
        let replayed: u64 = views.iter().map(|view| view.events_processed).sum();
        assert_eq!(replayed, events as u64, "every event was processed");
        assert!(
            views.iter().all(|view| view.snapshot_seq == 0),
            "no daemon had a snapshot: every event was replayed from the journal"
        );
        println!(
            "restart {run}: open {:.0} ms, ready {:.0} ms",
            common::ms(opened),
            common::ms(ready)
        );
        opens.push(common::ms(opened));
        readies.push(common::ms(ready));
        let started = Instant::now();
        runtime.block_on(async move { drop(node) });
        drops.push(common::ms(started.elapsed()));
        std::fs::remove_dir_all(&copy).expect("the copy is removed");
    }

    let copy = dirs.root().join("redb-only");
    copy_dir(&dirs.data(), &copy);
    let started = Instant::now();
    let database = redb::Database::create(copy.join("holdfast.redb")).expect("redb opens the crashed file");
    let redb_open = started.elapsed();
    drop(database);

    println!(
        "restart: ready {} ms (target ≤ 1000 ms), of which Node::open {} ms; redb's open and repair \
         of the crashed file alone {:.0} ms; dropping the node (a snapshot of every daemon) {} ms; \
         over {restarts} restarts",
        Spread::of(&readies),
        Spread::of(&opens),
        common::ms(redb_open),
        Spread::of(&drops),
    );
}

/// The configuration of the crashed node and of its restarts: the
/// defaults, never snapshotting on its own.
fn crashed_config(data: &Path, dirs: &Dirs) -> NodeConfig {
    let mut config = NodeConfig::new(data);
    config.plugins_dir = Some(dirs.plugins());
    config.plugin_scan_interval = Duration::ZERO;
    config.snapshot_every_events = 0;
    config.snapshot_every = Duration::from_secs(86_400);
    config
}

/// The child: fills `root` and waits to be killed.
fn child(spec: &str) {
    let mut parts = spec.rsplitn(3, ':');
    let events: usize = parts.next().and_then(|text| text.parse().ok()).expect("events");
    let daemons: usize = parts.next().and_then(|text| text.parse().ok()).expect("daemons");
    let root = PathBuf::from(parts.next().expect("the root"));
    let dirs = Dirs::at(root);
    let runtime = common::runtime();
    runtime.block_on(async {
        let node = Node::open(crashed_config(&dirs.data(), &dirs))
            .await
            .expect("the node opens");
        let origins = common::spawn_counters(&node, daemons, 64).await;
        common::send_events(&node, &origins, events, 64, common::payload()).await;
        common::wait_all_processed(&node, Duration::from_secs(120)).await;
        println!("{READY}");
        // The parent kills this process now, so neither the node's drop
        // nor any drain runs. Should the parent be gone, exit without
        // running them either.
        tokio::time::sleep(Duration::from_secs(600)).await;
        std::process::exit(1);
    });
}

/// Copies the regular files of `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("the copy's directory");
    for entry in std::fs::read_dir(from).expect("the data directory") {
        let entry = entry.expect("a directory entry");
        if entry.file_type().expect("a file type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("a file copies");
        }
    }
}
