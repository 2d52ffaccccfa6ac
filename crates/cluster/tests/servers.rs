//! The test support's real servers (cluster.md §2): a single server with
//! JetStream, a server with users that refuses anonymous clients, and a
//! three-server JetStream cluster that keeps a replicas-3 stream writable
//! and complete when its leader is killed.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::{ConnectErrorKind, ConnectOptions, HeaderMap};
use holdfast_cluster::testing::{
    NatsCluster, NatsServer, REFERENCE_VERSION, binary_version, installed_binary, nats_server_binary,
};
use holdfast_cluster::version::{ServerVersion, check_server, read_server_info};

const TIMEOUT: Duration = Duration::from_secs(5);

fn stream_config(name: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Publishes `payload` with a message id, retrying for up to 30 s: while a
/// stream elects a leader an ack can be lost although the message was
/// stored, and the id makes the retry a duplicate the stream drops.
async fn publish_until_acked(js: &jetstream::Context, subject: String, id: String) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let attempt = async {
            js.publish_with_headers(subject.clone(), headers, id.clone().into())
                .await?
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        };
        match attempt.await {
            Ok(ack) => return ack.sequence,
            Err(e) if Instant::now() < deadline => {
                eprintln!("publish {id} not acked yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("publish {id} was not acked within 30 s: {e}"),
        }
    }
}

#[tokio::test]
async fn a_single_server_is_the_reference_version_passes_the_check_and_stores_messages() {
    let mut server = NatsServer::start().await;
    let binary = nats_server_binary().expect("the server started, so the binary exists");
    let expected = binary_version(&binary).expect("the binary was checked");

    let info = read_server_info(&format!("127.0.0.1:{}", server.port()), TIMEOUT)
        .await
        .expect("a real server greets");
    assert_eq!(ServerVersion::parse(&info.version).expect("parses"), expected);
    if binary == installed_binary().expect("the workspace is found") {
        // The pip-installed server is exactly the reference version.
        assert_eq!(info.version, "2.15.1");
        assert_eq!(expected, REFERENCE_VERSION);
    }
    let checked = check_server(&server.url(), TIMEOUT).await.expect("passes");
    assert!(checked.jetstream && checked.headers);
    assert_eq!(checked.server_name, server.server_name());

    let client = async_nats::connect(server.url()).await.expect("anonymous access");
    let js = jetstream::new(client);
    js.create_stream(stream_config("SINGLE", 1))
        .await
        .expect("create a stream");
    for i in 1..=3u64 {
        let ack = js
            .publish("SINGLE.x", format!("m{i}").into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        assert_eq!(ack.sequence, i);
        assert!(!ack.duplicate);
    }

    // The store survives a SIGKILL and restart on the same port.
    let old_pid = server.pid().expect("running");
    server.restart().await.expect("restart");
    assert_ne!(server.pid().expect("running again"), old_pid);
    let client = async_nats::connect(server.url()).await.expect("reconnect");
    let js = jetstream::new(client);
    let mut stream = js.get_stream("SINGLE").await.expect("stream kept");
    assert_eq!(stream.info().await.expect("info").state.messages, 3);
    let third = stream.get_raw_message(3).await.expect("message 3");
    assert_eq!(&third.payload[..], b"m3");
}

#[tokio::test]
async fn a_server_with_users_refuses_anonymous_and_wrong_passwords_and_admits_the_user() {
    let server = NatsServer::start_with_users(&[("alice", "s3cret-A"), ("bob", "s3cret-B")]).await;

    let anonymous = async_nats::connect(server.url())
        .await
        .expect_err("anonymous access is refused");
    assert_eq!(anonymous.kind(), ConnectErrorKind::AuthorizationViolation);
    let wrong = ConnectOptions::with_user_and_password("alice".into(), "s3cret-B".into())
        .connect(server.url())
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(wrong.kind(), ConnectErrorKind::AuthorizationViolation);

    let client = ConnectOptions::with_user_and_password("alice".into(), "s3cret-A".into())
        .connect(server.url())
        .await
        .expect("the user is admitted");
    let js = jetstream::new(client);
    js.create_stream(stream_config("USERS", 1))
        .await
        .expect("the account has JetStream");
    let ack = js
        .publish("USERS.x", "hello".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert_eq!(ack.sequence, 1);
}

#[tokio::test]
async fn a_replicated_stream_survives_the_kill_of_its_leader_with_every_message() {
    let mut cluster = NatsCluster::start().await;
    assert_eq!(cluster.urls().split(',').count(), 3);
    let client = ConnectOptions::new()
        .connect(cluster.server_addrs())
        .await
        .expect("connect to the cluster");
    let js = jetstream::new(client);
    js.create_stream(stream_config("REPL", 3))
        .await
        .expect("create a replicas-3 stream");

    const PER_PHASE: u64 = 50;
    for i in 1..=PER_PHASE {
        let seq = publish_until_acked(&js, "REPL.x".into(), format!("m{i}")).await;
        assert_eq!(seq, i);
    }

    let mut stream = js.get_stream("REPL").await.expect("stream");
    let info = stream.info().await.expect("info");
    let leader_name = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a replicated stream has a leader");
    let leader = cluster
        .index_of(&leader_name)
        .unwrap_or_else(|| panic!("leader {leader_name} is one of ours"));
    cluster.kill(leader).expect("kill the leader");
    assert_eq!(cluster.servers()[leader].pid(), None);

    for i in PER_PHASE + 1..=2 * PER_PHASE {
        let seq = publish_until_acked(&js, "REPL.x".into(), format!("m{i}")).await;
        assert_eq!(seq, i, "no gap and no duplicate after the failover");
    }

    let info = stream.info().await.expect("info from the new leader");
    let new_leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a new leader was elected");
    assert_ne!(new_leader, leader_name);
    assert_eq!(info.state.messages, 2 * PER_PHASE);
    assert_eq!(info.state.last_sequence, 2 * PER_PHASE);
    for i in 1..=2 * PER_PHASE {
        let message = stream.get_raw_message(i).await.expect("every message is there");
        assert_eq!(message.payload, format!("m{i}").as_bytes());
    }

    // The killed server comes back on its port with its store.
    cluster.restart(leader).await.expect("restart the old leader");
    assert!(cluster.servers()[leader].pid().is_some());
}
