//! The status page, `GET /` (spec/host.md §6): one server-rendered HTML
//! page with no external assets, readable without JavaScript and refreshed
//! by `<meta http-equiv="refresh">`. Daemons are paginated, so a node with
//! many of them renders one page at a time.
//!
//! In cluster mode ([`render_cluster`]) the daemon table is the cluster's
//! ownership (origin → node, epoch), with the live nodes and the recent
//! moves beside it.
//!
//! Every value that comes from the node (names, versions, reasons) is
//! escaped with `html-escape`; this module writes markup only from its own
//! literals.

use std::fmt::Write;

use html_escape::encode_text as text;

use crate::cluster::ClusterMode;
use crate::error::RequestError;
use crate::node::Node;

/// Daemons per page unless `?limit=` says otherwise.
pub const DEFAULT_PAGE: usize = 100;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}.waiting_for_kind{color:#a60}.nondeterministic{color:#b00}\
.rolled_back,.refused{color:#b00}code{font-size:.9em}";

/// Renders the page with up to `limit` daemons after origin `after`.
///
/// # Errors
/// `Malformed` for a bad `after`.
pub fn render(node: &Node, after: Option<&str>, limit: usize) -> Result<String, RequestError> {
    let daemons = node.daemons(after, limit)?;
    let mut html = String::with_capacity(4096 + daemons.len() * 256);
    node_and_bundles(node, &mut html);
    html.push_str("<h2>Daemons</h2><table id=\"daemons\"><tr><th>origin</th><th>kind</th><th>version</th><th>status</th><th>processed</th><th>journal depth</th><th>last snapshot</th></tr>");
    for daemon in &daemons {
        let _ = write!(
            html,
            "<tr data-origin=\"{origin}\" class=\"{status}\"><td><code>{origin}</code></td><td>{kind}</td>\
             <td>{version}</td><td>{status}</td><td class=\"processed\">{processed}</td><td>{depth}</td>\
             <td>input {snapshot}</td></tr>",
            origin = text(&daemon.origin),
            kind = text(&daemon.kind),
            version = text(daemon.kind_version.as_deref().unwrap_or("-")),
            status = daemon.status.as_str(),
            processed = daemon.events_processed,
            depth = daemon.journal_depth,
            snapshot = daemon.snapshot_seq,
        );
    }
    html.push_str("</table>");
    next_link(
        &mut html,
        daemons.len(),
        daemons.last().map(|last| last.origin.as_str()),
        limit,
    );
    html.push_str("</body></html>");
    Ok(html)
}

/// Renders the page of a node in cluster mode: the node and its bundles as
/// [`render`] shows them, then the live nodes, up to `limit` daemons after
/// origin `after` with their owners, and the recent moves.
///
/// # Errors
/// `Malformed` for a bad `after`.
pub fn render_cluster(
    node: &Node,
    cluster: &ClusterMode,
    after: Option<&str>,
    limit: usize,
) -> Result<String, RequestError> {
    let daemons = cluster.daemons(after, limit)?;
    let mut html = String::with_capacity(4096 + daemons.len() * 256);
    node_and_bundles(node, &mut html);
    let overview = cluster.cluster();
    let _ = write!(
        html,
        "<h2>Cluster</h2><p id=\"cluster\">cluster <code>{}</code> · this node <code>{}</code></p>\
         <table id=\"nodes\"><tr><th>node</th><th>http</th><th>kinds</th><th>hosted</th><th>draining</th></tr>",
        text(overview.name()),
        text(overview.node_id()),
    );
    for member in overview.nodes() {
        let _ = write!(
            html,
            "<tr data-node=\"{attribute}\"><td><code>{id}</code></td><td>{http}</td><td>{kinds}</td>\
             <td class=\"hosted\">{hosted}</td><td>{draining}</td></tr>",
            attribute = html_escape::encode_double_quoted_attribute(&member.node),
            id = text(&member.node),
            http = text(&member.http),
            kinds = text(&member.kinds.join(", ")),
            hosted = member.hosted,
            draining = if member.draining { "yes" } else { "no" },
        );
    }
    html.push_str("</table><h2>Daemons</h2><table id=\"daemons\"><tr><th>origin</th><th>kind</th><th>version</th><th>status</th><th>node</th><th>epoch</th><th>moves</th><th>last snapshot</th></tr>");
    for daemon in &daemons {
        let _ = write!(
            html,
            "<tr data-origin=\"{origin}\" class=\"{status}\"><td><code>{origin}</code></td><td>{kind}</td>\
             <td>{version}</td><td>{status}{reason}</td><td class=\"owner\"><code>{owner}</code></td>\
             <td class=\"epoch\">{epoch}</td><td>{moves}</td><td>input {snapshot}</td></tr>",
            origin = text(&daemon.origin),
            kind = text(&daemon.kind),
            version = text(&daemon.kind_version),
            status = daemon.status,
            reason = daemon
                .halted
                .as_deref()
                .or(daemon.refused.as_deref())
                .map(|reason| format!(": {}", text(reason)))
                .unwrap_or_default(),
            owner = text(&daemon.node),
            epoch = daemon.epoch,
            moves = daemon.moves,
            snapshot = daemon.snapshot_seq,
        );
    }
    html.push_str("</table>");
    next_link(
        &mut html,
        daemons.len(),
        daemons.last().map(|last| last.origin.as_str()),
        limit,
    );
    html.push_str("<h2>Moves</h2><table id=\"moves\"><tr><th>at (Unix ms)</th><th>origin</th><th>from</th><th>to</th><th>epoch</th></tr>");
    for moved in overview.moves().iter().rev().take(50) {
        let _ = write!(
            html,
            "<tr><td>{at}</td><td><code>{origin:016x}</code></td><td><code>{from}</code></td>\
             <td><code>{to}</code></td><td>{epoch}</td></tr>",
            at = moved.at_ms,
            origin = moved.origin,
            from = text(&moved.from),
            to = text(&moved.to),
            epoch = moved.epoch,
        );
    }
    html.push_str("</table></body></html>");
    Ok(html)
}

/// The link to the next page when this one is full.
fn next_link(html: &mut String, shown: usize, last: Option<&str>, limit: usize) {
    if shown == limit
        && let Some(last) = last
    {
        let _ = write!(
            html,
            "<p><a id=\"next\" href=\"/?after={}&amp;limit={limit}\">next {limit} daemons</a></p>",
            text(last)
        );
    }
}

/// The head of the page, the node's facts, its bundles and reloads.
fn node_and_bundles(node: &Node, html: &mut String) {
    let info = node.info();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>holdfast node</title>\
         <style>{STYLE}</style></head><body><h1>holdfast node</h1>"
    );
    let _ = write!(
        html,
        "<section id=\"node\"><p>node <code>{}</code> · holdfast {} · storage format {} · up {} s · \
         {} daemons · {} events accepted · {} processed</p></section>",
        text(&info.node_id),
        text(info.binary_version),
        info.storage_format,
        info.uptime_s,
        info.daemons,
        info.events_accepted,
        info.events_processed,
    );
    html.push_str(
        "<h2>Bundles</h2><table id=\"bundles\"><tr><th>bundle</th><th>version</th><th>kinds</th></tr>",
    );
    for bundle in node.bundles() {
        let kinds: Vec<String> = bundle
            .kinds
            .iter()
            .map(|kind| format!("{}@{}", kind.kind, kind.version))
            .collect();
        let _ = write!(
            html,
            "<tr data-bundle=\"{attribute}\"><td>{name}</td><td class=\"version\">{version}</td><td>{kinds}</td></tr>",
            attribute = html_escape::encode_double_quoted_attribute(&bundle.name),
            name = text(&bundle.name),
            version = text(&bundle.version),
            kinds = text(&kinds.join(", ")),
        );
    }
    html.push_str("</table><h2>Reloads</h2><table id=\"reloads\"><tr><th>at (Unix ms)</th><th>bundle</th><th>from</th><th>to</th><th>daemons carried</th><th>pause</th><th>outcome</th></tr>");
    for reload in node.reload_history().iter().rev().take(50) {
        let _ = write!(
            html,
            "<tr class=\"{outcome}\"><td>{at}</td><td>{bundle}</td><td>{from}</td><td>{to}</td><td>{carried}</td>\
             <td>{pause} µs</td><td>{outcome}{reason}</td></tr>",
            outcome = text(&reload.outcome),
            at = reload.at,
            bundle = text(&reload.bundle),
            from = text(&reload.from),
            to = text(&reload.to),
            carried = reload.daemons_carried,
            pause = reload.pause_us,
            reason = reload
                .reason
                .as_deref()
                .map(|reason| format!(": {}", text(reason)))
                .unwrap_or_default(),
        );
    }
    html.push_str("</table>");
}
