//! How inputs reach their owner: the server republishes each stored input
//! to the daemon's live subject with the sequence of the one before it. A
//! republished input that never arrives is read from the stream (a gap the
//! next one reveals, or a quiet subject checked after its last input), and
//! a message on the live subject that is not a republished input of that
//! daemon is ignored.

mod support;

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use holdfast_cluster::testing::NatsServer;
use support::{TestNode, expect_exact_outputs};

const LEASE: Duration = Duration::from_millis(1500);

/// Turns the inputs stream's republish off (`false`) or back on, as the
/// node configures it: inputs stored while it is off never reach the live
/// subject, exactly as if their republished copies had been lost.
async fn set_republish(url: &str, cluster: &str, on: bool) {
    let client = async_nats::connect(url).await.expect("connects");
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(format!("HF_{cluster}_IN"))
        .await
        .expect("the inputs stream");
    let mut config = stream.info().await.expect("info").config.clone();
    config.republish = on.then(|| jetstream::stream::Republish {
        source: format!("hf.{cluster}.in.*"),
        destination: format!("hf.{cluster}.live.{{{{wildcard(1)}}}}"),
        headers_only: false,
    });
    js.update_stream(&config).await.expect("stream updated");
}

#[test]
fn inputs_whose_republished_copies_were_lost_are_read_from_the_stream_in_order() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), "lost", 1, LEASE);
    let origin = node.spawn_counters(1)[0];
    node.send_ticks(origin, 1);
    expect_exact_outputs(&node, origin, 1, Duration::from_secs(5));

    // A lost tail: inputs 2 and 3 are stored but never republished, and
    // nothing after them reveals the gap. The daemon reads its subject
    // once it has been quiet for a second after input 1.
    tokio.block_on(set_republish(&server.url(), "lost", false));
    node.send_ticks(origin, 2);
    expect_exact_outputs(&node, origin, 3, Duration::from_secs(5));

    // A gap: inputs 4 and 5 are lost too, and input 6, republished again,
    // names 5 as the one before it; the daemon reads 4 and 5 first.
    node.send_ticks(origin, 2);
    tokio.block_on(set_republish(&server.url(), "lost", true));
    node.send_ticks(origin, 1);
    let writers = expect_exact_outputs(&node, origin, 6, Duration::from_secs(5));
    assert_eq!(writers, vec![node.id(); 6]);
}

#[test]
fn messages_on_the_live_subject_that_are_not_republished_inputs_are_ignored() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), "forged", 1, LEASE);
    let origins = node.spawn_counters(2);
    let (origin, other) = (origins[0], origins[1]);
    tokio.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connects");
        let live = format!("hf.forged.live.{origin:016x}");
        // No headers at all.
        client
            .publish(live.clone(), Bytes::from_static(b"+1"))
            .await
            .expect("published");
        // Republish headers naming another daemon's subject.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_SEQUENCE, "1000");
        headers.insert(async_nats::header::NATS_LAST_SEQUENCE, "0");
        headers.insert(async_nats::header::NATS_TIME_STAMP, "2026-12-03T00:00:00Z");
        headers.insert(async_nats::header::NATS_STREAM, "HF_forged_IN");
        headers.insert(
            async_nats::header::NATS_SUBJECT,
            format!("hf.forged.in.{other:016x}").as_str(),
        );
        client
            .publish_with_headers(live.clone(), headers.clone(), Bytes::from_static(b"+1"))
            .await
            .expect("published");
        // A previous sequence that is not a number.
        headers.insert(
            async_nats::header::NATS_SUBJECT,
            format!("hf.forged.in.{origin:016x}").as_str(),
        );
        headers.insert(async_nats::header::NATS_LAST_SEQUENCE, "many");
        client
            .publish_with_headers(live, headers, Bytes::from_static(b"+1"))
            .await
            .expect("published");
        client.flush().await.expect("flushed");
    });
    // None of the three was applied: the first real input is count 1, and
    // the daemon goes on (the forged sequence 1000 did not move it ahead).
    node.send_ticks(origin, 2);
    expect_exact_outputs(&node, origin, 2, Duration::from_secs(5));
    expect_exact_outputs(&node, other, 0, Duration::from_secs(1));
    // Well-formed, but naming a predecessor (input 1) before the last
    // applied one (2) and the highest sequence there is: applied, it would
    // make every real input after it look already applied.
    tokio.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connects");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_SEQUENCE, u64::MAX.to_string().as_str());
        headers.insert(async_nats::header::NATS_LAST_SEQUENCE, "1");
        headers.insert(async_nats::header::NATS_TIME_STAMP, "2026-12-03T00:00:00Z");
        headers.insert(async_nats::header::NATS_STREAM, "HF_forged_IN");
        headers.insert(
            async_nats::header::NATS_SUBJECT,
            format!("hf.forged.in.{origin:016x}").as_str(),
        );
        client
            .publish_with_headers(
                format!("hf.forged.live.{origin:016x}"),
                headers,
                Bytes::from_static(b"+1"),
            )
            .await
            .expect("published");
        client.flush().await.expect("flushed");
    });
    node.send_ticks(origin, 2);
    expect_exact_outputs(&node, origin, 4, Duration::from_secs(5));
}

#[test]
fn a_node_opening_a_stream_without_the_republish_adds_it() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), "older", 1, LEASE);
    let origin = node.spawn_counters(1)[0];
    drop(node);
    // As a stream made by a binary from before the republish.
    tokio.block_on(set_republish(&server.url(), "older", false));
    let node = TestNode::start(&server.url(), "older", 1, LEASE);
    let republish = tokio.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connects");
        let mut stream = jetstream::new(client)
            .get_stream("HF_older_IN")
            .await
            .expect("the inputs stream");
        stream.info().await.expect("info").config.republish.clone()
    });
    let republish = republish.expect("the node added the republish");
    assert_eq!(
        (
            republish.source.as_str(),
            republish.destination.as_str(),
            republish.headers_only
        ),
        ("hf.older.in.*", "hf.older.live.{{wildcard(1)}}", false)
    );
    node.send_ticks(origin, 3);
    expect_exact_outputs(&node, origin, 3, Duration::from_secs(5));
}
