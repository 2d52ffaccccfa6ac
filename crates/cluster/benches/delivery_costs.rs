//! What each way of getting an input to its owner costs the engine, with
//! no holdfast code in it: the reference for why ingest through a node
//! stays near half of raw JetStream publish (docs/BENCHMARKS.md, "Ingest:
//! where the other half goes").
//!
//! Every row publishes batches of 256 acknowledged 1 KiB inputs over 256
//! subjects into a stream of its own on one server, as the `ingest` rows of
//! the `cluster` bench do: a batch ends when its acknowledgements are in, a
//! row when every delivery or output it adds is in too. The rows run in turns,
//! three rounds, so the machine's drift shows in every row alike; each is
//! printed as inputs per second and as a ratio to the raw row of its round.
//!
//! `cargo bench -p holdfast-cluster --bench delivery_costs`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use holdfast_cluster::testing::NatsServer;

const BATCH: u64 = 256;
const SUBJECTS: u64 = 256;
const BATCHES_PER_ROW: u64 = 300;
const ROUNDS: usize = 3;

/// How the inputs of a row are published and what happens to them after.
struct Row {
    name: &'static str,
    prefix: &'static str,
    /// The row's stream republishes every input to `live.<prefix>.*`.
    republished: bool,
    /// Each input is published after its subject's last sequence.
    guarded_inputs: bool,
    /// Counts deliveries (or appended outputs) the batch waits for.
    delivered: Option<Arc<AtomicU64>>,
}

fn main() {
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let payload = Bytes::from(vec![7u8; 1024]);
    tokio.block_on(async {
        let publisher = async_nats::connect(server.url()).await.expect("connects");
        let owner = async_nats::connect(server.url()).await.expect("connects");
        let js = jetstream::new(publisher.clone());
        js.create_stream(jetstream::stream::Config {
            name: "OUT".into(),
            subjects: vec!["out.>".into()],
            ..Default::default()
        })
        .await
        .expect("output stream");
        let mut rows = [
            Row {
                name: "raw publish, acked",
                prefix: "raw",
                republished: false,
                guarded_inputs: false,
                delivered: None,
            },
            Row {
                name: "republished, nobody subscribed",
                prefix: "rep0",
                republished: true,
                guarded_inputs: false,
                delivered: None,
            },
            Row {
                name: "republished to 256 subscribers",
                prefix: "rep",
                republished: true,
                guarded_inputs: false,
                delivered: Some(subscribers(&owner, "live.rep", None).await),
            },
            Row {
                name: "republished, each appending a guarded output",
                prefix: "repout",
                republished: true,
                guarded_inputs: false,
                delivered: Some(subscribers(&owner, "live.repout", Some((&js, Outputs::PerDelivery))).await),
            },
            Row {
                name: "republished, one guarded output per run of waiting deliveries",
                prefix: "repbatch",
                republished: true,
                guarded_inputs: false,
                delivered: Some(subscribers(&owner, "live.repbatch", Some((&js, Outputs::PerRun))).await),
            },
            Row {
                name: "one ordered consumer over the input subjects, each appending a guarded output",
                prefix: "cons",
                republished: false,
                guarded_inputs: false,
                delivered: None,
            },
            Row {
                name: "plain subscription on the input subjects, each appending a guarded output",
                prefix: "subout",
                republished: false,
                guarded_inputs: false,
                delivered: Some(subscribers(&owner, "subout", Some((&js, Outputs::PerDelivery))).await),
            },
            Row {
                name: "guarded input, then a guarded output (no delivery at all)",
                prefix: "local",
                republished: false,
                guarded_inputs: true,
                delivered: None,
            },
        ];
        for row in &rows {
            create_input_stream(&js, row.prefix, row.republished).await;
        }
        // The consumer needs its stream, so its counter comes last.
        let consumed = consumer_subscribers(&owner, &js, "cons").await;
        rows.iter_mut()
            .find(|row| row.prefix == "cons")
            .expect("the consumer row")
            .delivered = Some(consumed);
        // Per row and subject: the last input and the last output (of a
        // guarded row), kept from round to round.
        let mut lasts = vec![vec![(0u64, 0u64); SUBJECTS as usize]; rows.len()];
        for round in 1..=ROUNDS {
            let mut raw = None;
            for (row, last) in rows.iter().zip(&mut lasts) {
                let rate = run(&js, row, &payload, last).await;
                let reference = *raw.get_or_insert(rate);
                println!(
                    "round {round}: {:<80} {:>6.1} k/s  {:.2}x raw",
                    row.name,
                    rate / 1000.0,
                    rate / reference
                );
            }
        }
    });
}

/// Inputs per second of one row.
async fn run(js: &jetstream::Context, row: &Row, payload: &Bytes, last: &mut [(u64, u64)]) -> f64 {
    let before = row
        .delivered
        .as_ref()
        .map_or(0, |count| count.load(Ordering::Acquire));
    let started = Instant::now();
    for _ in 0..BATCHES_PER_ROW {
        // A batch names each subject once, so every guard of it holds.
        let appends = (0..BATCH).map(|index| {
            let subject = index % SUBJECTS;
            let (last_input, last_output) = last[subject as usize];
            let input = format!("{}.{subject}", row.prefix);
            let payload = payload.clone();
            async move {
                if !row.guarded_inputs {
                    return (publish(js, input, payload, None).await, 0);
                }
                // As an owner's own node would: its input after the last
                // it knows of, then one output after the last output.
                let input = publish(js, input, payload, Some(last_input)).await;
                let output = format!("out.{}.{subject}", row.prefix);
                let output = publish(js, output, Bytes::from_static(&[1; 120]), Some(last_output)).await;
                (input, output)
            }
        });
        let appended = futures_util::future::join_all(appends).await;
        for (index, sequences) in appended.into_iter().enumerate() {
            last[index % SUBJECTS as usize] = sequences;
        }
    }
    if let Some(count) = &row.delivered {
        while count.load(Ordering::Acquire) < before + BATCHES_PER_ROW * BATCH {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    (BATCHES_PER_ROW * BATCH) as f64 / started.elapsed().as_secs_f64()
}

/// Publishes and awaits the acknowledgement; with `after`, only after the
/// subject's last sequence. Returns the stored sequence.
async fn publish(js: &jetstream::Context, subject: String, payload: Bytes, after: Option<u64>) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(after) = after {
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            after.to_string().as_str(),
        );
    }
    js.publish_with_headers(subject, headers, payload)
        .await
        .expect("published")
        .await
        .expect("stored after the expected sequence")
        .sequence
}

async fn create_input_stream(js: &jetstream::Context, prefix: &str, republish: bool) {
    js.create_stream(jetstream::stream::Config {
        name: prefix.to_uppercase(),
        subjects: vec![format!("{prefix}.*")],
        republish: republish.then(|| jetstream::stream::Republish {
            source: format!("{prefix}.*"),
            destination: format!("live.{prefix}.{{{{wildcard(1)}}}}"),
            headers_only: false,
        }),
        ..Default::default()
    })
    .await
    .expect("input stream");
}

/// How a subscriber stores the outputs of its deliveries.
#[derive(Clone, Copy)]
enum Outputs {
    /// One stored message per delivery.
    PerDelivery,
    /// One stored message for all the deliveries already waiting when the
    /// subscriber takes the next: one per delivery when it keeps up, fewer
    /// when it lags.
    PerRun,
}

/// One subscriber per subject under `prefix`, counting deliveries; with
/// `outputs`, each first appends a 120-byte output per delivery after its
/// output subject's last sequence (through the publisher's connection, as
/// a node appends through its one), so the count is of outputs appended.
async fn subscribers(
    client: &async_nats::Client,
    prefix: &str,
    outputs: Option<(&jetstream::Context, Outputs)>,
) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    for subject in 0..SUBJECTS {
        let mut deliveries = client
            .subscribe(format!("{prefix}.{subject}"))
            .await
            .expect("subscribed");
        let (count, outputs) = (Arc::clone(&count), outputs.map(|(js, how)| (js.clone(), how)));
        let output = format!("out.{prefix}.{subject}");
        tokio::spawn(async move {
            let mut last = 0;
            while deliveries.next().await.is_some() {
                let mut taken = 1;
                if let Some((_, Outputs::PerRun)) = &outputs {
                    while let Some(Some(_)) = futures_util::FutureExt::now_or_never(deliveries.next()) {
                        taken += 1;
                    }
                }
                if let Some((js, _)) = &outputs {
                    let run = Bytes::from(vec![1; 120 * taken as usize]);
                    last = publish(js, output.clone(), run, Some(last)).await;
                }
                count.fetch_add(taken, Ordering::Release);
            }
        });
    }
    client.flush().await.expect("subscriptions sent");
    count
}

/// One ordered push consumer over the stream of `prefix`, its deliveries
/// routed to one task per subject that appends a 120-byte output after its
/// output subject's last sequence; counts outputs appended.
async fn consumer_subscribers(
    client: &async_nats::Client,
    js: &jetstream::Context,
    prefix: &str,
) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let owner_js = jetstream::new(client.clone());
    let stream = owner_js.get_stream(prefix.to_uppercase()).await.expect("stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: format!("{prefix}.>"),
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut routes = Vec::new();
    for subject in 0..SUBJECTS {
        let (send, mut receive) = tokio::sync::mpsc::unbounded_channel::<()>();
        routes.push(send);
        let (count, js) = (Arc::clone(&count), js.clone());
        let output = format!("out.{prefix}.{subject}");
        tokio::spawn(async move {
            let mut last = 0;
            while receive.recv().await.is_some() {
                last = publish(&js, output.clone(), Bytes::from_static(&[1; 120]), Some(last)).await;
                count.fetch_add(1, Ordering::Release);
            }
        });
    }
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let message = message.expect("delivered");
            // Parsed as an owner would, for the sequence it applies by.
            black_box(message.info().expect("a stream message").stream_sequence);
            let subject: u64 = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|last| last.parse().ok())
                .expect("a numbered subject");
            let _ = routes[subject as usize].send(());
        }
    });
    count
}
