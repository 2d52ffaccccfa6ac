//! Hot reload with 10,000 live counter daemons (spec/host.md §10: the pause
//! ≤ 25 ms). Bundle `counter` is reinstalled and reloaded through
//! `Node::reload_bundle`, v1 → v2 → v1 → …; every reload carries all the
//! daemons' states through `save_state` → `create` → `restore_state`.
//!
//! Two figures per reload:
//!
//! - *pause*: `ReloadReport::pause_us`, the time the reload gate was
//!   closed (the plugin runtime's `Preparing` to `Reloaded`), during which
//!   no daemon runs while events are still journaled and acknowledged;
//! - *whole*: the wall clock of `reload_bundle`, which first snapshots
//!   (durably) and parks the bundle's daemons that processed events since
//!   their last snapshot, then reloads, then resumes them.
//!
//! After each reload one event is sent to one daemon (the *probe*) and
//! timed until it is acknowledged and until it is processed: work the
//! engine does for the reload after `reload_bundle` returns (resuming the
//! daemons, republishing their views) delays it, and so every event.
//!
//! Two series: *after traffic*, where every daemon processed one event
//! since its last snapshot (sent and processed untimed before each reload,
//! so the park step snapshots all of them), and *idle*, back-to-back
//! reloads with nothing to snapshot.
//!
//! A harness binary: one reload costs milliseconds of setup that must stay
//! out of the figure, and the pause is a figure the node reports itself.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Dirs, Spread};
use holdfast_host::Node;
use holdfast_host::samples::Sample;

fn main() {
    common::announce("reload");
    let daemons = common::size(10_000, 100);
    let reloads = common::size(10, 2);
    let runtime = common::runtime();
    let dirs = Dirs::new();
    let node = runtime.block_on(async {
        let node = Node::open(dirs.config()).await.expect("the node opens");
        let started = Instant::now();
        let origins = common::spawn_counters(&node, daemons, 64).await;
        println!(
            "reload: {daemons} counter daemons spawned in {:.0} ms",
            common::ms(started.elapsed())
        );
        (node, origins)
    });
    let (node, origins) = node;
    let mut current = Sample::CounterV1;

    let mut series = |name: &str, traffic: bool| {
        let (mut pauses, mut wholes, mut acks, mut processed) = (vec![], vec![], vec![], vec![]);
        for _ in 0..reloads {
            if traffic {
                runtime.block_on(async {
                    common::send_events(&node, &origins, daemons, 64, Bytes::from_static(b"tick")).await;
                    common::wait_all_processed(&node, Duration::from_secs(60)).await;
                });
            }
            current = if current == Sample::CounterV1 {
                Sample::CounterV2
            } else {
                Sample::CounterV1
            };
            dirs.install(current);
            let started = Instant::now();
            let report = node.reload_bundle("counter").expect("the reload succeeds");
            let whole = started.elapsed();
            assert_eq!(
                report.daemons_carried as usize, daemons,
                "every daemon is carried"
            );
            pauses.push(report.pause_us as f64 / 1e3);
            wholes.push(common::ms(whole));
            let (ack, done) = runtime.block_on(probe(&node, &origins[0]));
            acks.push(common::ms(ack));
            processed.push(common::ms(done));
        }
        println!(
            "reload {name}: pause {} ms (target ≤ 25 ms), whole reload_bundle {} ms; an event sent right \
             after: acknowledged in {} ms, processed in {} ms; over {reloads} reloads",
            Spread::of(&pauses),
            Spread::of(&wholes),
            Spread::of(&acks),
            Spread::of(&processed),
        );
    };
    series("after_traffic", true);
    series("idle", false);

    // Every daemon processed every event through all the reloads: one
    // per reload of the traffic series, and the probed one a probe more
    // per reload of both series.
    for view in node.daemons(None, usize::MAX).expect("listing from the start") {
        let probes = if view.origin == origins[0] { 2 * reloads } else { 0 };
        assert_eq!(
            view.events_processed,
            (reloads + probes) as u64,
            "daemon {}",
            view.origin
        );
    }
    let _guard = runtime.enter();
    drop(node);
}

/// Sends one event to `origin`; returns how long until it was
/// acknowledged and until the daemon's view shows it processed.
async fn probe(node: &Node, origin: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let seq = node
        .send(origin, Bytes::from_static(b"probe"), None)
        .await
        .expect("the probe is accepted");
    let acknowledged = started.elapsed();
    let deadline = started + Duration::from_secs(30);
    while node.daemon(origin).expect("the probed daemon").events_processed < seq {
        assert!(Instant::now() < deadline, "the probe was not processed in 30 s");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    (acknowledged, started.elapsed())
}
