//! The version check against fake servers on loopback sockets (cluster.md §7
//! "Version check"): each fake writes a chosen greeting, or nothing, and the
//! check must give exactly the expected answer.

use std::time::Duration;

use holdfast_cluster::version::{
    MINIMUM_SERVER_VERSION, ServerVersion, VersionError, check_server, check_servers, read_server_info,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(5);

fn info_line(version: &str, jetstream: bool) -> Vec<u8> {
    format!(
        "INFO {{\"server_id\":\"NFAKE\",\"server_name\":\"fake\",\"version\":\"{version}\",\
         \"proto\":1,\"go\":\"go1.21\",\"host\":\"127.0.0.1\",\"port\":4222,\"headers\":true,\
         \"max_payload\":1048576,\"jetstream\":{jetstream}}}\r\n"
    )
    .into_bytes()
}

/// Serves `greeting` to every connection, then holds the socket open until
/// the client goes away (a real server would wait for CONNECT).
async fn fake_server(greeting: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let greeting = greeting.clone();
            tokio::spawn(async move {
                if socket.write_all(&greeting).await.is_ok() {
                    let mut sink = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_2_9_server_is_refused_as_too_old_naming_both_versions() {
    let addr = fake_server(info_line("2.9.25", true)).await;
    let info = read_server_info(&addr, TIMEOUT).await.expect("fake greets");
    assert_eq!(info.version, "2.9.25");
    match check_server(&format!("nats://{addr}"), TIMEOUT).await {
        Err(VersionError::TooOld { found, minimum, .. }) => {
            assert_eq!(
                found,
                ServerVersion {
                    major: 2,
                    minor: 9,
                    patch: 25
                }
            );
            assert_eq!(minimum, MINIMUM_SERVER_VERSION);
        }
        other => panic!("2.9.25 gave {other:?}"),
    }
}

#[tokio::test]
async fn a_2_10_server_with_jetstream_is_accepted() {
    let addr = fake_server(info_line("2.10.0", true)).await;
    let info = check_server(&addr, TIMEOUT).await.expect("2.10.0 passes");
    assert_eq!(info.version, "2.10.0");
    assert_eq!(info.server_id, "NFAKE");
    assert!(info.jetstream && info.headers);
}

#[tokio::test]
async fn a_server_without_jetstream_is_refused() {
    let addr = fake_server(info_line("2.15.1", false)).await;
    match check_server(&addr, TIMEOUT).await {
        Err(VersionError::NoJetStream { server, .. }) => assert_eq!(server, "fake"),
        other => panic!("no JetStream gave {other:?}"),
    }
}

#[tokio::test]
async fn a_peer_that_is_not_nats_is_refused_with_its_first_bytes() {
    let addr = fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()).await;
    match read_server_info(&addr, TIMEOUT).await {
        Err(VersionError::NotNats { first_bytes, .. }) => {
            assert_eq!(first_bytes, "HTTP/1.1 400 Bad Request\r\n");
        }
        other => panic!("garbage gave {other:?}"),
    }
    // A binary greeting without any line feed is refused as soon as it
    // cannot be INFO, not after reading 64 KiB.
    let addr = fake_server(vec![0xff; 16]).await;
    assert!(matches!(
        check_server(&addr, TIMEOUT).await,
        Err(VersionError::NotNats { .. })
    ));
}

#[tokio::test]
async fn an_endless_info_line_is_cut_at_the_limit() {
    let mut endless = b"INFO {\"version\":\"".to_vec();
    endless.resize(200 * 1024, b'9');
    let addr = fake_server(endless).await;
    match read_server_info(&addr, TIMEOUT).await {
        Err(VersionError::InfoTooLong { limit, .. }) => assert_eq!(limit, 64 * 1024),
        other => panic!("endless line gave {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts (the kernel completes the handshake on the listen backlog)
    // and never writes.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound").to_string();
    let started = std::time::Instant::now();
    match read_server_info(&addr, Duration::from_millis(300)).await {
        Err(VersionError::TimedOut { after, .. }) => {
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("silence gave {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}

#[tokio::test]
async fn a_server_closing_before_the_line_ends_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound").to_string();
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"INFO {\"vers").await;
        }
    });
    match read_server_info(&addr, TIMEOUT).await {
        Err(VersionError::ClosedEarly { received, .. }) => assert_eq!(received, 11),
        other => panic!("early close gave {other:?}"),
    }
}

#[tokio::test]
async fn a_list_is_refused_when_any_answering_server_is_old() {
    let new = fake_server(info_line("2.15.1", true)).await;
    let old = fake_server(info_line("2.9.25", true)).await;
    assert!(matches!(
        check_servers(&format!("nats://{new},nats://{old}"), TIMEOUT).await,
        Err(VersionError::TooOld { .. })
    ));
}

#[tokio::test]
async fn a_list_passes_over_an_unreachable_seed_but_not_an_all_dead_list() {
    // A port that was just free: nothing listens there any more.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("bound").to_string()
    };
    let live = fake_server(info_line("2.11.0-RC.1", true)).await;
    let checked = check_servers(&format!("{dead},{live}"), TIMEOUT)
        .await
        .expect("the live seed is enough");
    assert_eq!(checked.len(), 1);
    assert_eq!(checked[0].version, "2.11.0-RC.1");
    assert!(matches!(
        check_server(&dead, TIMEOUT).await,
        Err(VersionError::Io { .. })
    ));
}
