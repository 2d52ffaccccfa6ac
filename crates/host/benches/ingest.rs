//! Ingest benchmarks of spec/host.md §10, each a ratio against a reference
//! measured in the same process, interleaved round by round with it:
//!
//! - `api_ingest`: durable ingest through `Node::send` (1 KiB events, 64
//!   concurrent senders, 1,000 counter daemons; every event is acknowledged
//!   only after its group commit is durable, and is processed and its
//!   output stored in that same commit). Reference: a single thread
//!   inserting the same journal rows (key `(origin, seq)`, value the
//!   1,034-byte journal entry of a 1 KiB event) into a fresh redb database
//!   in transactions of the size the node's round just achieved (events
//!   per commit, from its metrics), each committed with
//!   `Durability::Immediate` as the node's are. Target: ≥ 0.5 × the raw
//!   rate. Run once with the default `group_commit_max_delay` (2 ms) and
//!   once with 0.
//! - `http_ingest`: `POST /v1/daemons/{origin}/events` with 1 KiB bodies
//!   over 64 keep-alive connections (hyper's HTTP/1 client, one connection
//!   per task, opened before timing) to the node's router served by
//!   `holdfast_host::http::serve` on 127.0.0.1. Reference: an axum router
//!   with the same route whose handler reads the body and returns 202,
//!   served the same way to the same client. Target: ≥ 0.4 ×. Run at both
//!   group-commit delays too.
//!
//! Client, server, node and engine share the machine's cores, as they would
//! on a 2-core host; the reference runs share them the same way.
//!
//! This is a harness binary (`harness = false`) rather than criterion: the
//! figure wanted is a ratio of two throughputs taken side by side, each
//! round costing thousands of fsyncs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use common::{Dirs, Spread};
use holdfast_host::Node;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use redb::{Database, Durability, TableDefinition};
use tokio::sync::oneshot;

/// The node's journal table, as `crates/host/src/store.rs` defines it.
const JOURNAL: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("journal");
/// Concurrent senders (API) and keep-alive connections (HTTP).
const SENDERS: usize = 64;

fn main() {
    common::announce("ingest");
    let daemons = common::size(1_000, 50);
    let events = common::size(20_000, 400);
    let rounds = common::size(3, 1);
    let runtime = common::runtime();
    println!(
        "ingest: {daemons} counter daemons, {events} events of 1 KiB per round, {rounds} rounds, \
         {SENDERS} senders; {} cores",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    for delay in [Duration::from_millis(2), Duration::ZERO] {
        runtime.block_on(api_ingest(daemons, events, rounds, delay));
    }
    for delay in [Duration::from_millis(2), Duration::ZERO] {
        runtime.block_on(http_ingest(daemons, events, rounds, delay));
    }
}

/// One `api_ingest` comparison at `group_commit_max_delay = delay`.
async fn api_ingest(daemons: usize, events: usize, rounds: usize, delay: Duration) {
    let dirs = Dirs::new();
    let mut config = dirs.config();
    config.group_commit_max_delay = delay;
    let node = Node::open(config).await.expect("the node opens");
    let origins = common::spawn_counters(&node, daemons, SENDERS).await;
    let keys: Vec<u64> = origins
        .iter()
        .map(|origin| u64::from_str_radix(origin, 16).expect("an origin is 16 hex digits"))
        .collect();
    let reference = Arc::new(RawJournal::create(&dirs.root().join("raw.redb"), keys));
    let payload = common::payload();
    // Warm-up: the database's first pages and every daemon's first events.
    common::send_events(&node, &origins, events / 4, SENDERS, payload.clone()).await;

    let (mut node_rates, mut raw_rates, mut ratios, mut batches) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let (commits, accepted) = (
            common::counter(&node, "commits"),
            common::counter(&node, "events_accepted"),
        );
        let started = Instant::now();
        common::send_events(&node, &origins, events, SENDERS, payload.clone()).await;
        let node_rate = events as f64 / started.elapsed().as_secs_f64();
        let commits = common::counter(&node, "commits") - commits;
        let accepted = common::counter(&node, "events_accepted") - accepted;
        let batch = accepted as f64 / commits.max(1) as f64;

        let rows_per_commit = (batch.round() as usize).max(1);
        let raw_rate = {
            let (reference, payload) = (Arc::clone(&reference), payload.clone());
            tokio::task::spawn_blocking(move || reference.insert(events, rows_per_commit, &payload))
                .await
                .expect("the reference writer ends")
        };
        println!(
            "api_ingest delay={delay:?} round {round}: node {node_rate:.0} events/s \
             ({batch:.1} events/commit over {commits} commits) | raw redb {raw_rate:.0} events/s \
             ({rows_per_commit} rows/commit) | ratio {:.3}",
            node_rate / raw_rate
        );
        node_rates.push(node_rate);
        raw_rates.push(raw_rate);
        ratios.push(node_rate / raw_rate);
        batches.push(batch);
    }
    println!(
        "api_ingest delay={delay:?}: node {} events/s, raw redb {} events/s, ratio {:.3} \
         (per round {:.3}), {} events/commit (target ≥ 0.5)",
        Spread::of(&node_rates),
        Spread::of(&raw_rates),
        Spread::of(&node_rates).median / Spread::of(&raw_rates).median,
        Spread::of(&ratios),
        Spread::of(&batches),
    );
    drop(node);
}

/// The reference of `api_ingest`: the node's journal rows written straight
/// into a redb database of their own, one thread, no node.
struct RawJournal {
    db: Database,
    origins: Vec<u64>,
    /// The next event's index over all rounds (origin = index mod daemons,
    /// sequence = index / daemons + 1, as round-robin senders produce).
    next: std::sync::Mutex<usize>,
}

impl RawJournal {
    fn create(path: &std::path::Path, origins: Vec<u64>) -> Self {
        Self {
            db: Database::create(path).expect("the reference database opens"),
            origins,
            next: std::sync::Mutex::new(0),
        }
    }

    /// Inserts `events` journal rows of `payload` in transactions of
    /// `per_commit` rows, each committed durably; returns rows per second.
    fn insert(&self, events: usize, per_commit: usize, payload: &[u8]) -> f64 {
        // The node's journal entry: received_at u64 LE · key length u16 LE
        // (no key) · payload.
        let mut value = Vec::with_capacity(10 + payload.len());
        value.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
        value.extend_from_slice(&0u16.to_le_bytes());
        value.extend_from_slice(payload);
        let mut next = self.next.lock().expect("one reference round at a time");
        let started = Instant::now();
        let mut done = 0;
        while done < events {
            let rows = per_commit.min(events - done);
            let mut write = self.db.begin_write().expect("a write transaction");
            write
                .set_durability(Durability::Immediate)
                .expect("a fresh transaction takes a durability");
            {
                let mut journal = write.open_table(JOURNAL).expect("the journal table");
                for _ in 0..rows {
                    let origin = self.origins[*next % self.origins.len()];
                    let seq = (*next / self.origins.len()) as u64 + 1;
                    journal
                        .insert((origin, seq), value.as_slice())
                        .expect("a journal row inserts");
                    *next += 1;
                }
            }
            write.commit().expect("the reference commit");
            done += rows;
        }
        events as f64 / started.elapsed().as_secs_f64()
    }
}

/// One `http_ingest` comparison at `group_commit_max_delay = delay`.
async fn http_ingest(daemons: usize, events: usize, rounds: usize, delay: Duration) {
    let dirs = Dirs::new();
    let mut config = dirs.config();
    config.group_commit_max_delay = delay;
    let node = Node::open(config).await.expect("the node opens");
    let origins = common::spawn_counters(&node, daemons, SENDERS).await;
    let paths: Arc<[String]> = origins
        .iter()
        .map(|origin| format!("/v1/daemons/{origin}/events"))
        .collect();
    let payload = common::payload();
    let node_server = Server::start(holdfast_host::http::router(node.clone(), None)).await;
    let reference_server =
        Server::start(Router::new().route("/v1/daemons/{origin}/events", post(accepted))).await;
    let mut node_clients = Clients::connect(node_server.addr, SENDERS).await;
    let mut reference_clients = Clients::connect(reference_server.addr, SENDERS).await;
    node_clients.post(&paths, events / 4, &payload).await;
    reference_clients.post(&paths, events / 4, &payload).await;

    let (mut node_rates, mut reference_rates, mut ratios) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        let node_rate = node_clients.post(&paths, events, &payload).await;
        let reference_rate = reference_clients.post(&paths, events, &payload).await;
        println!(
            "http_ingest delay={delay:?} round {round}: node {node_rate:.0} events/s | axum 202 {reference_rate:.0} \
             requests/s | ratio {:.3}",
            node_rate / reference_rate
        );
        node_rates.push(node_rate);
        reference_rates.push(reference_rate);
        ratios.push(node_rate / reference_rate);
    }
    println!(
        "http_ingest delay={delay:?}: node {} events/s, axum 202 {} requests/s, ratio {:.3} (per round {:.3}) (target ≥ 0.4)",
        Spread::of(&node_rates),
        Spread::of(&reference_rates),
        Spread::of(&node_rates).median / Spread::of(&reference_rates).median,
        Spread::of(&ratios),
    );
    drop((node_clients, reference_clients));
    node_server.stop().await;
    reference_server.stop().await;
    drop(node);
}

/// The reference handler: reads the body and answers 202, nothing else.
async fn accepted(Path(_origin): Path<String>, _body: Bytes) -> StatusCode {
    StatusCode::ACCEPTED
}

/// A router served by `holdfast_host::http::serve` on 127.0.0.1.
struct Server {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(holdfast_host::http::serve(listener, router, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the server task ends")
            .expect("the server stops cleanly");
    }
}

/// Keep-alive HTTP/1.1 connections, one request in flight on each.
struct Clients {
    connections: Vec<SendRequest<Full<Bytes>>>,
}

impl Clients {
    async fn connect(addr: std::net::SocketAddr, count: usize) -> Self {
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("the server accepts");
            stream.set_nodelay(true).expect("TCP_NODELAY can be set");
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("the HTTP/1 handshake");
            tokio::spawn(async move {
                let _ = connection.await;
            });
            connections.push(sender);
        }
        Self { connections }
    }

    /// Posts `events` bodies of `payload`, connection `i` taking events
    /// `i, i + n, …` (event `k` goes to `paths[k % len]`); returns events
    /// per second. Every answer must be 202 and is read to its end.
    async fn post(&mut self, paths: &Arc<[String]>, events: usize, payload: &Bytes) -> f64 {
        let count = self.connections.len();
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(count);
        for (first, mut sender) in std::mem::take(&mut self.connections).into_iter().enumerate() {
            let (paths, payload) = (Arc::clone(paths), payload.clone());
            tasks.push(tokio::spawn(async move {
                let mut index = first;
                while index < events {
                    let request = hyper::Request::post(paths[index % paths.len()].as_str())
                        .header(hyper::header::HOST, "127.0.0.1")
                        .body(Full::new(payload.clone()))
                        .expect("a valid request");
                    sender.ready().await.expect("the connection stays open");
                    let response = sender.send_request(request).await.expect("an answer");
                    assert_eq!(response.status(), StatusCode::ACCEPTED, "the event is accepted");
                    response.into_body().collect().await.expect("the answer's body");
                    index += count;
                }
                sender
            }));
        }
        for task in tasks {
            self.connections.push(task.await.expect("a client task ends"));
        }
        events as f64 / started.elapsed().as_secs_f64()
    }
}
