//! The HTTP API (spec/host.md §5) on axum: routes, the error contract, the
//! bearer-token rule and body limits.
//!
//! Every error is `{"error": {"code", "message"}}` with the status of its
//! [`RequestError`]; anything axum itself refuses (an unknown route, a
//! wrong method, a bad path) is rewritten into the same shape, so no client
//! ever has to parse two error formats. Bad input never yields a 5xx: 503
//! means the node is draining or its storage failed.
//!
//! In cluster mode ([`cluster_router`]) the daemon routes go to the
//! cluster ([`ClusterMode`]) instead of the node's own database, and
//! `POST /v1/daemons/{origin}/migrate` and `GET /v1/cluster` answer; on a
//! single node those two refuse with 409 and 404.
//!
//! This module translates between HTTP and [`Node`]; it holds no state of
//! its own besides the token.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::cluster::ClusterMode;
use crate::error::RequestError;
use crate::node::Node;
use crate::page;

/// The largest JSON request body (spawn requests are small).
const MAX_JSON_BODY: usize = 64 * 1024;
/// Page sizes of list endpoints.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Clone)]
struct App {
    node: Node,
    cluster: Option<ClusterMode>,
    token: Option<Arc<str>>,
}

/// The API's router over `node`. With `token`, every request but
/// `/healthz` must carry `Authorization: Bearer <token>`.
pub fn router(node: Node, token: Option<String>) -> Router {
    routes(App {
        node,
        cluster: None,
        token: token.map(Arc::from),
    })
}

/// The API's router in cluster mode: daemons are `cluster`'s; bundles,
/// reloads, metrics and the node facts are `node`'s. The token rule is
/// [`router`]'s.
pub fn cluster_router(node: Node, cluster: ClusterMode, token: Option<String>) -> Router {
    routes(App {
        node,
        cluster: Some(cluster),
        token: token.map(Arc::from),
    })
}

fn routes(app: App) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/node", get(node_info))
        .route("/v1/daemons", post(spawn).get(list_daemons))
        .route("/v1/daemons/{origin}", get(daemon).delete(delete_daemon))
        .route("/v1/daemons/{origin}/events", post(send_event))
        .route("/v1/daemons/{origin}/outputs", get(outputs))
        .route("/v1/daemons/{origin}/migrate", post(migrate))
        .route("/v1/cluster", get(cluster_overview))
        .route("/v1/bundles", get(bundles))
        .route("/v1/bundles/{name}/reload", post(reload))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .layer(middleware::map_response(json_errors))
        // Bodies are read with this module's own limits, so that an
        // oversized one gets the JSON error contract.
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown` completes.
///
/// # Errors
/// The server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The status of each refusal.
pub fn status_of(error: &RequestError) -> StatusCode {
    match error {
        RequestError::Malformed(_) => StatusCode::BAD_REQUEST,
        RequestError::UnknownDaemon { .. }
        | RequestError::UnknownKind { .. }
        | RequestError::UnknownBundle { .. }
        | RequestError::UnknownNode { .. } => StatusCode::NOT_FOUND,
        RequestError::EventTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        RequestError::TooManyDaemons { .. }
        | RequestError::DaemonStopped { .. }
        | RequestError::SpawnFailed { .. }
        | RequestError::ReloadRolledBack { .. }
        | RequestError::SnapshotFailed { .. }
        | RequestError::NotClustered
        | RequestError::NoNodeForKind { .. }
        | RequestError::NodeCannotHost { .. }
        | RequestError::OwnershipChanged { .. }
        | RequestError::DaemonRefused { .. } => StatusCode::CONFLICT,
        RequestError::Draining
        | RequestError::StorageUnavailable(_)
        | RequestError::ClusterUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

struct ApiError(RequestError);

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(status_of(&self.0), self.0.code(), &self.0.to_string())
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

type ApiResult = Result<Response, ApiError>;

/// Rewrites axum's own plain-text refusals into the JSON error contract.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), MAX_JSON_BODY)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        _ if status.is_server_error() => "internal",
        _ => "malformed",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_owned()
    } else {
        text
    };
    error_response(status, code, &message)
}

async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    if presented.is_some_and(|presented| same_secret(presented, token.as_bytes())) {
        return next.run(request).await;
    }
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this node requires 'Authorization: Bearer <token>'",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Compares in time that depends only on the lengths.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Reads at most `limit` bytes of `body`; a longer body is refused whole.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| RequestError::EventTooLarge {
            size: limit.saturating_add(1),
            max: limit,
        })
}

/// `key=value` pairs of a query string (values are plain tokens here:
/// origins and numbers).
fn query_value<'q>(query: &'q Option<String>, name: &str) -> Option<&'q str> {
    query
        .as_deref()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn query_number(query: &Option<String>, name: &str) -> Result<Option<u64>, RequestError> {
    query_value(query, name)
        .map(|text| {
            text.parse::<u64>()
                .map_err(|_| RequestError::Malformed(format!("query parameter '{name}' must be a number")))
        })
        .transpose()
}

fn page_limit(query: &Option<String>) -> Result<usize, RequestError> {
    let limit = query_number(query, "limit")?.unwrap_or(DEFAULT_LIMIT as u64);
    if limit == 0 || limit > MAX_LIMIT as u64 {
        return Err(RequestError::Malformed(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    Ok(limit as usize)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.node.metrics_text(),
    )
        .into_response()
}

async fn node_info(State(app): State<App>) -> Response {
    let mut body = serde_json::to_value(app.node.info()).expect("node facts serialize");
    if let Some(cluster) = &app.cluster {
        // The node's own counts are of its local database, empty in
        // cluster mode; these say what it does in the cluster.
        body["cluster"] = json!(cluster.cluster().name());
        body["cluster_node"] = json!(cluster.node_id());
        body["hosted"] = json!(cluster.cluster().hosted_count());
    }
    axum::Json(body).into_response()
}

async fn status_page(State(app): State<App>, RawQuery(query): RawQuery) -> ApiResult {
    let limit = page_limit(&query).unwrap_or(page::DEFAULT_PAGE);
    let after = query_value(&query, "after");
    let html = match &app.cluster {
        Some(cluster) => page::render_cluster(&app.node, cluster, after, limit)?,
        None => page::render(&app.node, after, limit)?,
    };
    Ok(Html(html).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnRequest {
    kind: String,
    #[serde(default)]
    config: serde_json::Value,
}

async fn spawn(State(app): State<App>, body: Body) -> ApiResult {
    let body = read_body(body, MAX_JSON_BODY).await?;
    let request: SpawnRequest = serde_json::from_slice(&body).map_err(|error| {
        RequestError::Malformed(format!("the body must be {{\"kind\", \"config\"?}}: {error}"))
    })?;
    if let Some(cluster) = &app.cluster {
        if !request.config.is_null() {
            return Err(RequestError::Malformed(
                "a daemon config is not supported in cluster mode; leave out \"config\"".into(),
            )
            .into());
        }
        let spawned = cluster.spawn(&request.kind).await?;
        return Ok((StatusCode::CREATED, axum::Json(spawned)).into_response());
    }
    let spawned = app.node.spawn(&request.kind, request.config).await?;
    Ok((StatusCode::CREATED, axum::Json(spawned)).into_response())
}

async fn list_daemons(State(app): State<App>, RawQuery(query): RawQuery) -> ApiResult {
    let limit = page_limit(&query)?;
    if let Some(cluster) = &app.cluster {
        let daemons = cluster.daemons(query_value(&query, "after"), limit)?;
        let next = (daemons.len() == limit).then(|| daemons.last().map(|last| last.origin.clone()));
        return Ok(axum::Json(json!({ "daemons": daemons, "next_after": next.flatten() })).into_response());
    }
    let daemons = app.node.daemons(query_value(&query, "after"), limit)?;
    let next = (daemons.len() == limit).then(|| daemons.last().map(|last| last.origin.clone()));
    Ok(axum::Json(json!({ "daemons": daemons, "next_after": next.flatten() })).into_response())
}

async fn daemon(State(app): State<App>, Path(origin): Path<String>) -> ApiResult {
    if let Some(cluster) = &app.cluster {
        return Ok(axum::Json(cluster.daemon(&origin).await?).into_response());
    }
    let view = app.node.daemon(&origin)?;
    let mut body = serde_json::to_value(view).expect("a daemon view serializes");
    body["node"] = json!(app.node.node_id());
    Ok(axum::Json(body).into_response())
}

async fn delete_daemon(State(app): State<App>, Path(origin): Path<String>) -> ApiResult {
    match &app.cluster {
        Some(cluster) => cluster.delete(&origin).await?,
        None => app.node.delete(&origin).await?,
    }
    Ok(axum::Json(json!({ "deleted": origin })).into_response())
}

async fn send_event(
    State(app): State<App>,
    Path(origin): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let max = app.node.config().max_event_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<usize>().ok());
    if let Some(size) = declared
        && size > max
    {
        return Err(RequestError::EventTooLarge { size, max }.into());
    }
    let payload = read_body(body, max).await?;
    let key = headers
        .get("idempotency-key")
        .map(|value| Bytes::copy_from_slice(value.as_bytes()));
    let seq = match &app.cluster {
        Some(cluster) => cluster.send(&origin, payload, key).await?,
        None => app.node.send(&origin, payload, key).await?,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "seq": seq }))).into_response())
}

async fn outputs(State(app): State<App>, Path(origin): Path<String>, RawQuery(query): RawQuery) -> ApiResult {
    let from = query_number(&query, "from")?.unwrap_or(1);
    let limit = page_limit(&query)?;
    if let Some(cluster) = &app.cluster {
        return Ok(axum::Json(cluster.outputs(&origin, from, limit).await?).into_response());
    }
    let outputs = app.node.outputs(&origin, from, limit)?;
    Ok(axum::Json(outputs).into_response())
}

async fn bundles(State(app): State<App>) -> Response {
    axum::Json(json!({
        "bundles": app.node.bundles(),
        "reloads": app.node.reload_history(),
    }))
    .into_response()
}

async fn reload(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let report = app.node.reload(&name).await?;
    Ok(axum::Json(report).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateRequest {
    node: String,
}

async fn migrate(State(app): State<App>, Path(origin): Path<String>, body: Body) -> ApiResult {
    let body = read_body(body, MAX_JSON_BODY).await?;
    let request: MigrateRequest = serde_json::from_slice(&body)
        .map_err(|error| RequestError::Malformed(format!("the body must be {{\"node\"}}: {error}")))?;
    let Some(cluster) = &app.cluster else {
        // A malformed origin is still a 400; a well-formed one gets the
        // answer every origin gets here.
        crate::node::parse_origin(&origin)?;
        return Err(RequestError::NotClustered.into());
    };
    let report = cluster.migrate(&origin, &request.node).await?;
    Ok(axum::Json(report).into_response())
}

async fn cluster_overview(State(app): State<App>) -> ApiResult {
    let Some(cluster) = &app.cluster else {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            RequestError::NotClustered.code(),
            &RequestError::NotClustered.to_string(),
        ));
    };
    Ok(axum::Json(cluster.overview()).into_response())
}
