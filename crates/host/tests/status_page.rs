//! The status page in a real browser (spec/host.md §6): headless Chromium
//! renders `GET /` of a live node and the test reads the DOM it built.
//! Skipped, with a printed reason, only when no `chromium` is on PATH and
//! `HOLDFAST_REQUIRE_BROWSER` is unset (CI installs Chromium and sets it).

mod common;

use std::process::Command;

use common::{Dirs, spawn, wait_processed};
use holdfast_host::samples::Sample;

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_daemons_bundle_versions_and_a_reload() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("HOLDFAST_REQUIRE_BROWSER").is_none(),
            "HOLDFAST_REQUIRE_BROWSER is set but no chromium is on PATH"
        );
        println!("skipped: no chromium on PATH (set HOLDFAST_REQUIRE_BROWSER=1 to require it)");
        return;
    };
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let node = dirs.open().await;
    let origin = spawn(&node, "counter").await;
    for _ in 0..3 {
        node.send(
            &origin,
            bytes::Bytes::from_static(b"<script>alert(1)</script>"),
            None,
        )
        .await
        .unwrap();
    }
    wait_processed(&node, &origin, 3).await;
    dirs.install(Sample::CounterV2, "counter");
    node.reload("counter").await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = holdfast_host::http::router(node.clone(), None);
    let server = tokio::spawn(holdfast_host::http::serve(
        listener,
        router,
        std::future::pending(),
    ));
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{address}/");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    server.abort();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        dom.contains(&format!("data-origin=\"{origin}\"")),
        "the daemon row is rendered:\n{dom}"
    );
    assert!(
        dom.contains("<td class=\"processed\">3</td>"),
        "its processed count:\n{dom}"
    );
    assert!(
        dom.contains("<td class=\"version\">2.0.0</td>"),
        "the bundle's new version:\n{dom}"
    );
    assert!(
        dom.contains("<tr class=\"reloaded\"><td>"),
        "the reload it performed:\n{dom}"
    );
    assert!(
        dom.contains("<td>1.1</td>"),
        "the daemon's kind version after the reload:\n{dom}"
    );
    assert!(
        !dom.contains("<script>alert"),
        "nothing from outside is rendered unescaped"
    );
}
