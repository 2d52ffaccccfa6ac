//! The HTTP API's contract (spec/host.md §5): every error status with the
//! JSON error shape, the bearer-token rule, idempotency keys over HTTP, and
//! a property test that random requests never get a 5xx.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Dirs, wait_processed};
use holdfast_host::Node;
use holdfast_host::samples::Sample;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

/// Spawns a counter through the API and returns its origin.
async fn spawn_counter(router: &axum::Router) -> String {
    let (status, body) = call(router, Method::POST, "/v1/daemons", br#"{"kind":"counter"}"#, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind_version"], "1.0");
    body["origin"].as_str().unwrap().to_owned()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_has_its_status_and_json_shape() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let mut config = dirs.config();
    config.max_event_bytes = 32;
    let node = Node::open(config).await.unwrap();
    let router = holdfast_host::http::router(node.clone(), None);

    let origin = spawn_counter(&router).await;

    let cases: Vec<(Method, String, Vec<u8>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/v1/daemons".into(),
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            Method::POST,
            "/v1/daemons".into(),
            br#"{"kind":"counter","extra":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            Method::POST,
            "/v1/daemons".into(),
            br#"{"kind":"nope"}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "unknown_kind",
        ),
        (
            Method::GET,
            "/v1/daemons/zz".into(),
            vec![],
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            Method::GET,
            "/v1/daemons/00000000000000aa".into(),
            vec![],
            StatusCode::NOT_FOUND,
            "unknown_daemon",
        ),
        (
            Method::POST,
            format!("/v1/daemons/{origin}/events"),
            vec![b'x'; 33],
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
        ),
        (
            Method::GET,
            format!("/v1/daemons/{origin}/outputs?from=abc"),
            vec![],
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            Method::GET,
            "/v1/daemons?limit=0".into(),
            vec![],
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            Method::POST,
            "/v1/bundles/nope/reload".into(),
            vec![],
            StatusCode::NOT_FOUND,
            "unknown_bundle",
        ),
        (
            Method::GET,
            "/no/such/route".into(),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PUT,
            "/v1/daemons".into(),
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, uri, body, status, expected) in cases {
        let (got, answer) = call(&router, method.clone(), &uri, &body, &[]).await;
        assert_eq!(
            (got, code(&answer)),
            (status, expected),
            "{method} {uri}: {answer}"
        );
        assert!(answer["error"]["message"].is_string(), "{method} {uri}: {answer}");
    }

    // A broken release: 409 with the rollback reason, the old code serves.
    std::fs::remove_dir_all(dirs.plugins().join("counter")).unwrap();
    dirs.install(Sample::CounterV3Broken, "counter");
    let (status, answer) = call(&router, Method::POST, "/v1/bundles/counter/reload", b"", &[]).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::CONFLICT, "reload_rolled_back"),
        "{answer}"
    );

    let (status, answer) = call(
        &router,
        Method::POST,
        &format!("/v1/daemons/{origin}/events"),
        b"tick",
        &[],
    )
    .await;
    assert_eq!((status, &answer["seq"]), (StatusCode::ACCEPTED, &Value::from(1)));
    node.drain().await.unwrap();
    let (status, answer) = call(
        &router,
        Method::POST,
        &format!("/v1/daemons/{origin}/events"),
        b"tick",
        &[],
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_and_outputs_over_http() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let node = dirs.open().await;
    let router = holdfast_host::http::router(node.clone(), None);
    let origin = spawn_counter(&router).await;
    let events = format!("/v1/daemons/{origin}/events");
    let key = [("idempotency-key", "k-1")];
    assert_eq!(call(&router, Method::POST, &events, b"a", &key).await.1["seq"], 1);
    assert_eq!(call(&router, Method::POST, &events, b"b", &[]).await.1["seq"], 2);
    assert_eq!(call(&router, Method::POST, &events, b"a", &key).await.1["seq"], 1);
    wait_processed(&node, &origin, 2).await;
    let (status, outputs) = call(
        &router,
        Method::GET,
        &format!("/v1/daemons/{origin}/outputs?from=1&limit=10"),
        b"",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<u64> = outputs
        .as_array()
        .unwrap()
        .iter()
        .map(|output| output["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(outputs[1]["parent_hash"], outputs[0]["hash"]);
    let (_, view) = call(&router, Method::GET, &format!("/v1/daemons/{origin}"), b"", &[]).await;
    assert_eq!(
        (view["events_processed"].as_u64(), view["status"].as_str()),
        (Some(2), Some("running"))
    );
    let (status, metrics) = call(&router, Method::GET, "/metrics", b"", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("holdfast_events_accepted_total 2"), "{metrics}");
    assert!(metrics.contains("holdfast_duplicate_events_total 1"), "{metrics}");
    assert!(
        metrics.contains(r#"holdfast_daemons{kind="counter",status="running"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_required_on_everything_but_healthz() {
    let dirs = Dirs::new(&[]);
    let node = dirs.open().await;
    let router = holdfast_host::http::router(node, Some("s3cret".into()));
    assert_eq!(
        call(&router, Method::GET, "/healthz", b"", &[]).await.0,
        StatusCode::OK
    );
    let (status, body) = call(&router, Method::GET, "/v1/node", b"", &[]).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let wrong = [("authorization", "Bearer s3creT")];
    assert_eq!(
        call(&router, Method::GET, "/v1/node", b"", &wrong).await.0,
        StatusCode::UNAUTHORIZED
    );
    let right = [("authorization", "Bearer s3cret")];
    let (status, body) = call(&router, Method::GET, "/v1/node", b"", &right).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["storage_format"], 1);
    assert_eq!(
        call(&router, Method::GET, "/", b"", &right).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_beyond_loopback_refuses_to_start_without_a_token() {
    let dirs = Dirs::new(&[]);
    let mut config = dirs.config();
    config.listen = "0.0.0.0:7070".parse().unwrap();
    let error = Node::open(config).await.err().expect("no token, no start");
    assert!(
        matches!(error, holdfast_host::NodeError::TokenRequired { .. }),
        "{error:?}"
    );
}

#[test]
fn random_requests_never_get_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let (node, origin) = runtime.block_on(async {
        let node = dirs.open().await;
        let origin = node.spawn("counter", Value::Null).await.unwrap().origin;
        (node, origin)
    });
    let router = holdfast_host::http::router(node, None);
    let paths = [
        "/".to_owned(),
        "/v1/daemons".to_owned(),
        format!("/v1/daemons/{origin}"),
        format!("/v1/daemons/{origin}/events"),
        format!("/v1/daemons/{origin}/outputs"),
        "/v1/bundles".to_owned(),
        "/v1/bundles/counter/reload".to_owned(),
        "/v1/node".to_owned(),
    ];
    let methods = [Method::GET, Method::POST, Method::DELETE, Method::PUT];
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 200,
        ..Default::default()
    });
    let strategy = (
        0..paths.len(),
        0..methods.len(),
        proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        "[a-z0-9=&%]{0,20}",
    );
    runner
        .run(&strategy, |(path, method, body, query)| {
            let uri = format!("{}?{query}", paths[path]);
            let (status, answer) = runtime.block_on(call(&router, methods[method].clone(), &uri, &body, &[]));
            proptest::prop_assert!(
                !status.is_server_error(),
                "{} {uri}: {status} {answer}",
                methods[method]
            );
            if status.is_client_error() {
                proptest::prop_assert!(answer["error"]["code"].is_string(), "{uri}: {answer}");
            }
            Ok(())
        })
        .unwrap();
}
