//! Criterion benchmarks of the status page with 10,000 daemons (spec/host.md
//! §10: ≤ 50 ms). Each daemon processed one event first, so every row has
//! figures to show.
//!
//! - `status_page/render_first_page`: `page::render(&node, None, 100)`, the
//!   page `GET /` serves by default;
//! - `status_page/render_middle_page`: the 100 daemons after the middle
//!   origin (`?after=`), which must not cost more than the first page;
//! - `status_page/render_all`: every daemon on one page (`?limit=10000`);
//! - `status_page/get_first_page`: `GET /` through the node's router
//!   (`tower::ServiceExt::oneshot`, no socket), body read to its end.
//!
//! There is no reference run: the target is absolute.

mod common;

use std::hint::black_box;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use common::Dirs;
use criterion::Criterion;
use holdfast_host::{Node, page};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn main() {
    common::announce("status_page");
    let daemons = common::size(10_000, 100);
    let runtime = common::runtime();
    let dirs = Dirs::new();
    let (node, mut origins) = runtime.block_on(async {
        let node = Node::open(dirs.config()).await.expect("the node opens");
        let origins = common::spawn_counters(&node, daemons, 64).await;
        common::send_events(&node, &origins, daemons, 64, Bytes::from_static(b"tick")).await;
        common::wait_all_processed(&node, Duration::from_secs(60)).await;
        (node, origins)
    });
    origins.sort();
    let middle = origins[origins.len() / 2].clone();
    let router = holdfast_host::http::router(node.clone(), None);
    println!(
        "status_page: {daemons} daemons; first page {} bytes, all on one page {} bytes",
        page::render(&node, None, page::DEFAULT_PAGE)
            .expect("renders")
            .len(),
        page::render(&node, None, daemons).expect("renders").len(),
    );

    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = criterion.benchmark_group("status_page");
    group.bench_function("render_first_page", |b| {
        b.iter(|| page::render(black_box(&node), None, page::DEFAULT_PAGE).expect("renders"));
    });
    group.bench_function("render_middle_page", |b| {
        b.iter(|| page::render(black_box(&node), Some(&middle), page::DEFAULT_PAGE).expect("renders"));
    });
    group.bench_function("render_all", |b| {
        b.iter(|| page::render(black_box(&node), None, daemons).expect("renders"));
    });
    group.bench_function("get_first_page", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = Request::get("/").body(Body::empty()).expect("a valid request");
                let response = router.clone().oneshot(request).await.expect("infallible");
                assert_eq!(response.status(), StatusCode::OK);
                response.into_body().collect().await.expect("the page").to_bytes()
            })
        });
    });
    group.finish();
    criterion.final_summary();
    let _guard = runtime.enter();
    drop((router, node));
}
