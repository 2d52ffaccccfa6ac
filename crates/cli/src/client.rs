//! Thin client commands over a node's HTTP API (spec/host.md §7):
//! `spawn`, `send`, `outputs`, `daemons`, `reload`. Each makes one request
//! and prints the answer, as a short human line or, with `--json`, the
//! node's JSON unchanged.
//!
//! This module knows the API's paths and error contract, nothing of the
//! node's internals.

use std::path::Path;

use serde_json::Value;

use crate::error::CliError;

/// Where a node is and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct NodeClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A node's answer: its status and JSON body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body (JSON, or a string for non-JSON bodies).
    pub body: Value,
}

impl Answer {
    /// Whether the node accepted the request.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error message of a refusal, as `code: message`.
    pub fn error_text(&self) -> String {
        let error = &self.body["error"];
        match (error["code"].as_str(), error["message"].as_str()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            _ => format!("HTTP {}: {}", self.status, self.body),
        }
    }
}

impl NodeClient {
    /// A client of the node at `base` (`http://127.0.0.1:7070`), with the
    /// bearer token read from `token_file` if given.
    ///
    /// # Errors
    /// `Client` when the token file cannot be read.
    pub fn new(base: &str, token_file: Option<&Path>) -> Result<Self, CliError> {
        let token = token_file
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|text| text.trim().to_owned())
                    .map_err(|error| CliError::Client(format!("token file {}: {error}", path.display())))
            })
            .transpose()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|token| format!("Bearer {token}"))
    }

    fn finish(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, CliError> {
        let mut response = response
            .map_err(|error| CliError::Client(format!("cannot reach the node at {}: {error}", self.base)))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|error| CliError::Client(format!("reading the node's answer: {error}")))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    /// `GET path`.
    ///
    /// # Errors
    /// `Client` when the node cannot be reached.
    pub fn get(&self, path: &str) -> Result<Answer, CliError> {
        let mut request = self.agent.get(self.url(path));
        if let Some(value) = self.authorization() {
            request = request.header("Authorization", value);
        }
        self.finish(request.call())
    }

    /// `DELETE path`.
    ///
    /// # Errors
    /// `Client` when the node cannot be reached.
    pub fn delete(&self, path: &str) -> Result<Answer, CliError> {
        let mut request = self.agent.delete(self.url(path));
        if let Some(value) = self.authorization() {
            request = request.header("Authorization", value);
        }
        self.finish(request.call())
    }

    /// `POST path` with `body` (and an idempotency key, if given).
    ///
    /// # Errors
    /// `Client` when the node cannot be reached.
    pub fn post(&self, path: &str, body: &[u8], idempotency_key: Option<&str>) -> Result<Answer, CliError> {
        let mut request = self.agent.post(self.url(path));
        if let Some(value) = self.authorization() {
            request = request.header("Authorization", value);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.finish(request.send(body))
    }

    /// Spawns a daemon of `kind`.
    ///
    /// # Errors
    /// `Client`.
    pub fn spawn(&self, kind: &str, config: Option<Value>) -> Result<Answer, CliError> {
        let mut body = serde_json::json!({ "kind": kind });
        if let Some(config) = config {
            body["config"] = config;
        }
        self.post("/v1/daemons", body.to_string().as_bytes(), None)
    }

    /// Sends one event to `origin`.
    ///
    /// # Errors
    /// `Client`.
    pub fn send(&self, origin: &str, payload: &[u8], key: Option<&str>) -> Result<Answer, CliError> {
        self.post(&format!("/v1/daemons/{origin}/events"), payload, key)
    }

    /// Reloads bundle `name`.
    ///
    /// # Errors
    /// `Client`.
    pub fn reload(&self, name: &str) -> Result<Answer, CliError> {
        self.post(&format!("/v1/bundles/{name}/reload"), b"", None)
    }

    /// Outputs of `origin` from `from`.
    ///
    /// # Errors
    /// `Client`.
    pub fn outputs(&self, origin: &str, from: u64, limit: usize) -> Result<Answer, CliError> {
        self.get(&format!("/v1/daemons/{origin}/outputs?from={from}&limit={limit}"))
    }

    /// One daemon.
    ///
    /// # Errors
    /// `Client`.
    pub fn daemon(&self, origin: &str) -> Result<Answer, CliError> {
        self.get(&format!("/v1/daemons/{origin}"))
    }
}

/// One line per daemon, for `holdfast daemons` (in cluster mode, with
/// its owner node and epoch instead of the local counters).
pub fn daemons_human(body: &Value) -> String {
    let mut out = String::new();
    for daemon in body["daemons"].as_array().into_iter().flatten() {
        let detail = match daemon["node"].as_str() {
            Some(node) if daemon.get("epoch").is_some() => format!(
                "node {}  epoch {}",
                node.get(..16).unwrap_or(node),
                daemon["epoch"]
            ),
            _ => format!(
                "processed {}  journal {}",
                daemon["events_processed"], daemon["journal_depth"]
            ),
        };
        out.push_str(&format!(
            "{}  {}@{}  {}  {detail}\n",
            daemon["origin"].as_str().unwrap_or("?"),
            daemon["kind"].as_str().unwrap_or("?"),
            daemon["kind_version"].as_str().unwrap_or("-"),
            daemon["status"].as_str().unwrap_or("?"),
        ));
    }
    if out.is_empty() {
        out.push_str("no daemons\n");
    }
    out
}

/// The live nodes, then one line per daemon with its owner, for
/// `holdfast cluster`.
pub fn cluster_human(body: &Value) -> String {
    let mut out = format!(
        "cluster {}, this node {}\n",
        body["cluster"].as_str().unwrap_or("?"),
        body["node"].as_str().unwrap_or("?")
    );
    for node in body["nodes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "node {}  {}  hosts {}{}\n",
            node["node"].as_str().unwrap_or("?"),
            node["http"].as_str().unwrap_or("?"),
            node["hosted"],
            if node["draining"] == true {
                "  draining"
            } else {
                ""
            },
        ));
    }
    out.push_str(&daemons_human(body));
    out
}

/// One line per output, for `holdfast outputs`: the sequence, the payload
/// (as text when it is printable UTF-8, else base64) and the hash.
pub fn outputs_human(body: &Value) -> String {
    let mut out = String::new();
    for output in body.as_array().into_iter().flatten() {
        let encoded = output["payload_base64"].as_str().unwrap_or_default();
        let payload = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|text| text.chars().all(|c| !c.is_control()))
            .unwrap_or_else(|| format!("base64:{encoded}"));
        out.push_str(&format!(
            "{:>6}  {}  hash {}\n",
            output["seq"],
            payload,
            output["hash"].as_str().unwrap_or("?")
        ));
    }
    out
}
