//! The NATS server version check: holdfast refuses a server older than 2.10
//! before it relies on it.
//!
//! This module owns reading a server's greeting (the `INFO {json}` line every
//! NATS server sends first on a new client connection), parsing its version,
//! and deciding whether that server may be used. It reads exactly one line,
//! bounded by [`MAX_INFO_LINE`], over a raw TCP connection, sends nothing, and
//! closes; it never authenticates, never speaks TLS and never keeps the
//! connection. The check matters for fencing: NATS 2.9 lets two concurrent
//! compare-and-set writes carrying the same expected revision both succeed,
//! so two nodes could both believe they own a daemon (cluster.md §2).
//!
//! Limits: only the servers named in the URL are checked. Servers a client
//! later learns from the cluster's gossip (`connect_urls`) are not, so a
//! deployment that mixes versions must be upgraded as a whole.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The oldest NATS server holdfast uses (cluster.md §2).
pub const MINIMUM_SERVER_VERSION: ServerVersion = ServerVersion {
    major: 2,
    minor: 10,
    patch: 0,
};

/// The most bytes read while looking for the end of the `INFO` line. A real
/// server's line is a few hundred bytes (a few KiB with many cluster URLs);
/// anything longer is not a greeting worth parsing.
pub const MAX_INFO_LINE: usize = 64 * 1024;

/// The port a `nats://` URL without one means (the NATS default).
pub const DEFAULT_NATS_PORT: u16 = 4222;

/// How many leading bytes of a non-NATS reply an error quotes.
const QUOTED_BYTES: usize = 32;

/// Why the stated minimum is the minimum; part of every [`VersionError::TooOld`].
pub const WHY_MINIMUM: &str = "NATS 2.9 lets concurrent compare-and-set writes with the same \
     expected revision both succeed, which breaks the fencing of daemon ownership";

/// A NATS server's release number, `major.minor.patch`.
///
/// Ordering is numeric, field by field. A suffix such as `-RC.1` or
/// `+build` is dropped when parsing: a release candidate of 2.10.0 counts
/// as 2.10.0 (the compare-and-set fix holdfast depends on is in the 2.10
/// line from its first candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    /// Major release.
    pub major: u32,
    /// Minor release.
    pub minor: u32,
    /// Patch release.
    pub patch: u32,
}

impl ServerVersion {
    /// Parses `2.10.0`, `v2.15.1`, `2.11.0-RC.1` or `2.10` (patch 0).
    ///
    /// # Errors
    /// [`VersionError::Unparseable`] when the text is not one to three dot
    /// separated decimal numbers (at least major and minor), optionally
    /// prefixed by `v` and followed by a `-` or `+` suffix.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let unparseable = || VersionError::Unparseable {
            version: text.to_owned(),
        };
        let trimmed = text.trim();
        let trimmed = trimmed
            .strip_prefix('v')
            .or_else(|| trimmed.strip_prefix('V'))
            .unwrap_or(trimmed);
        let core = match trimmed.find(['-', '+']) {
            Some(at) => &trimmed[..at],
            None => trimmed,
        };
        let mut numbers = [0u32; 3];
        let mut count = 0;
        for part in core.split('.') {
            if count == numbers.len() || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(unparseable());
            }
            numbers[count] = part.parse().map_err(|_| unparseable())?;
            count += 1;
        }
        if count < 2 {
            return Err(unparseable());
        }
        Ok(Self {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
        })
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The fields of a server's `INFO` greeting that holdfast looks at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerInfo {
    /// The server's release, as it states it (`2.15.1`).
    pub version: String,
    /// Whether JetStream is enabled on this server.
    #[serde(default)]
    pub jetstream: bool,
    /// The server's unique id.
    #[serde(default)]
    pub server_id: String,
    /// The server's configured name (cluster members have one).
    #[serde(default)]
    pub server_name: String,
    /// Whether the server supports message headers (JetStream needs them).
    #[serde(default)]
    pub headers: bool,
}

/// Why a server was refused or could not be checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// The server is older than holdfast can use safely.
    #[error("NATS server {found} is too old: holdfast needs {minimum} or newer because {why}")]
    TooOld {
        /// The version the server reported.
        found: ServerVersion,
        /// [`MINIMUM_SERVER_VERSION`].
        minimum: ServerVersion,
        /// [`WHY_MINIMUM`].
        why: &'static str,
    },
    /// The version text is not a release number.
    #[error("NATS server version {version:?} is not a release number like 2.10.0")]
    Unparseable {
        /// The text as received.
        version: String,
    },
    /// What answered does not greet like a NATS server.
    #[error("{addr} is not a NATS server: its first bytes were {first_bytes:?}, not \"INFO {{...}}\"")]
    NotNats {
        /// The address connected to.
        addr: String,
        /// The first bytes received, lossily decoded, at most 32.
        first_bytes: String,
    },
    /// No end of line within [`MAX_INFO_LINE`] bytes.
    #[error("{addr} sent more than {limit} bytes without ending its INFO line")]
    InfoTooLong {
        /// The address connected to.
        addr: String,
        /// [`MAX_INFO_LINE`].
        limit: usize,
    },
    /// The peer closed the connection before a whole line arrived.
    #[error("{addr} closed the connection after {received} bytes, before its INFO line ended")]
    ClosedEarly {
        /// The address connected to.
        addr: String,
        /// How many bytes arrived.
        received: usize,
    },
    /// The `INFO` line's JSON is malformed or lacks `version`.
    #[error("the INFO line of {addr} is not valid server info: {source}")]
    BadInfo {
        /// The address connected to.
        addr: String,
        /// What the JSON decoder said.
        source: serde_json::Error,
    },
    /// The server runs without JetStream, which holdfast's cluster mode needs.
    #[error("NATS server {server} at {addr} does not have JetStream enabled (start it with -js)")]
    NoJetStream {
        /// The address connected to.
        addr: String,
        /// The server's name, or its id when unnamed.
        server: String,
    },
    /// Connecting or reading failed.
    #[error("cannot read the INFO line of {addr}: {source}")]
    Io {
        /// The address connected to.
        addr: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Nothing complete arrived in time.
    #[error("{addr} did not send its INFO line within {after:?}")]
    TimedOut {
        /// The address connected to.
        addr: String,
        /// The time allowed for connecting and reading.
        after: Duration,
    },
    /// The URL names no server holdfast can check.
    #[error("{url:?} is not a NATS server URL: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Refuses a version older than [`MINIMUM_SERVER_VERSION`].
///
/// # Errors
/// [`VersionError::Unparseable`] for text that is not a release number,
/// [`VersionError::TooOld`] for a release before 2.10.0.
pub fn check_server_version(version: &str) -> Result<ServerVersion, VersionError> {
    let found = ServerVersion::parse(version)?;
    if found < MINIMUM_SERVER_VERSION {
        return Err(VersionError::TooOld {
            found,
            minimum: MINIMUM_SERVER_VERSION,
            why: WHY_MINIMUM,
        });
    }
    Ok(found)
}

/// Connects to `addr` (`host:port`), reads the server's first line, which
/// must be `INFO {json}` ending in a line feed, parses it and closes.
///
/// `timeout` bounds connecting and reading together. Nothing is sent.
///
/// # Errors
/// [`VersionError::Io`] when the connection fails, [`VersionError::TimedOut`]
/// when the line does not arrive in time, [`VersionError::ClosedEarly`],
/// [`VersionError::InfoTooLong`] or [`VersionError::NotNats`] when the bytes
/// are not a greeting, [`VersionError::BadInfo`] when its JSON is not.
pub async fn read_server_info(addr: &str, timeout: Duration) -> Result<ServerInfo, VersionError> {
    match tokio::time::timeout(timeout, read_info_line(addr)).await {
        Ok(line) => parse_info_line(addr, &line?),
        Err(_elapsed) => Err(VersionError::TimedOut {
            addr: addr.to_owned(),
            after: timeout,
        }),
    }
}

/// Reads up to and including the first `\n`, refusing early a reply that
/// cannot be a greeting so that a chatty non-NATS peer is not read to the limit.
async fn read_info_line(addr: &str) -> Result<Vec<u8>, VersionError> {
    let io = |source| VersionError::Io {
        addr: addr.to_owned(),
        source,
    };
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let mut line = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await.map_err(io)?;
        if read == 0 {
            if !could_be_info(&line) {
                return Err(not_nats(addr, &line));
            }
            return Err(VersionError::ClosedEarly {
                addr: addr.to_owned(),
                received: line.len(),
            });
        }
        let fresh = &chunk[..read];
        match fresh.iter().position(|&b| b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&fresh[..=end]);
                if line.len() > MAX_INFO_LINE {
                    return Err(too_long(addr));
                }
                return Ok(line);
            }
            None => line.extend_from_slice(fresh),
        }
        if !could_be_info(&line) {
            return Err(not_nats(addr, &line));
        }
        if line.len() > MAX_INFO_LINE {
            return Err(too_long(addr));
        }
    }
}

/// Whether `bytes` are a prefix of, or start with, `INFO` and a blank.
fn could_be_info(bytes: &[u8]) -> bool {
    const OP: &[u8] = b"INFO ";
    let n = bytes.len().min(OP.len());
    let head = &bytes[..n];
    // The protocol allows a tab after the operation name as well as a space.
    head.iter().zip(OP).enumerate().all(|(i, (&b, &want))| {
        if i == OP.len() - 1 {
            b == b' ' || b == b'\t'
        } else {
            b.eq_ignore_ascii_case(&want)
        }
    })
}

fn not_nats(addr: &str, bytes: &[u8]) -> VersionError {
    let shown = &bytes[..bytes.len().min(QUOTED_BYTES)];
    VersionError::NotNats {
        addr: addr.to_owned(),
        first_bytes: String::from_utf8_lossy(shown).into_owned(),
    }
}

fn too_long(addr: &str) -> VersionError {
    VersionError::InfoTooLong {
        addr: addr.to_owned(),
        limit: MAX_INFO_LINE,
    }
}

/// Parses one whole greeting line (with its line ending) as server info.
fn parse_info_line(addr: &str, line: &[u8]) -> Result<ServerInfo, VersionError> {
    if line.len() < 5 || !could_be_info(line) {
        return Err(not_nats(addr, line));
    }
    let body = line[5..]
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
        .ok_or_else(|| not_nats(addr, line))?;
    serde_json::from_slice(body).map_err(|source| VersionError::BadInfo {
        addr: addr.to_owned(),
        source,
    })
}

/// Checks every server a client URL names: each must greet as NATS, run
/// 2.10 or newer and have JetStream enabled.
///
/// `url` is `nats://host[:port]`, `host[:port]` or a comma-separated list
/// of them; user information (`user:pass@`) is ignored and a missing port
/// means 4222. A server that cannot be reached ([`VersionError::Io`] or
/// [`VersionError::TimedOut`]) is passed over as long as another one of the
/// list was checked, because a client connects through any live seed; a
/// server that answers wrongly fails the whole check. Returns the info of
/// every server checked, in the order of the list.
///
/// # Errors
/// [`VersionError::BadUrl`] for a malformed URL or an empty list; the first
/// refusal (`TooOld`, `Unparseable`, `NoJetStream`, `NotNats`, ...) of a
/// server that answered; the first connection error when none answered.
pub async fn check_servers(url: &str, timeout: Duration) -> Result<Vec<ServerInfo>, VersionError> {
    let addrs = parse_server_list(url)?;
    let mut checked = Vec::with_capacity(addrs.len());
    let mut unreachable = None;
    for addr in &addrs {
        match read_server_info(addr, timeout).await {
            Ok(info) => {
                check_server_version(&info.version)?;
                if !info.jetstream {
                    let server = if info.server_name.is_empty() {
                        info.server_id.clone()
                    } else {
                        info.server_name.clone()
                    };
                    return Err(VersionError::NoJetStream {
                        addr: addr.clone(),
                        server,
                    });
                }
                checked.push(info);
            }
            Err(e @ (VersionError::Io { .. } | VersionError::TimedOut { .. })) => {
                unreachable.get_or_insert(e);
            }
            Err(refused) => return Err(refused),
        }
    }
    match unreachable {
        Some(first) if checked.is_empty() => Err(first),
        _ => Ok(checked),
    }
}

/// [`check_servers`], returning the info of the first server checked.
///
/// # Errors
/// As [`check_servers`].
pub async fn check_server(url: &str, timeout: Duration) -> Result<ServerInfo, VersionError> {
    let mut checked = check_servers(url, timeout).await?;
    // check_servers returns Ok only with at least one server checked.
    Ok(checked.swap_remove(0))
}

/// Splits a client URL list into `host:port` addresses.
///
/// # Errors
/// [`VersionError::BadUrl`] naming the offending entry.
pub fn parse_server_list(url: &str) -> Result<Vec<String>, VersionError> {
    let addrs = url
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(parse_server_addr)
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(VersionError::BadUrl {
            url: url.to_owned(),
            reason: "it names no server",
        });
    }
    Ok(addrs)
}

fn parse_server_addr(entry: &str) -> Result<String, VersionError> {
    let bad = |reason| VersionError::BadUrl {
        url: entry.to_owned(),
        reason,
    };
    let rest = match entry.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("nats") => rest,
        Some(_) => return Err(bad("only nats:// URLs are checked")),
        None => entry,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(bad("a server URL has no path"));
    }
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    if host_port.is_empty() {
        return Err(bad("the host is missing"));
    }
    if let Some(bracketed) = host_port.strip_prefix('[') {
        // An IPv6 literal: [::1] or [::1]:4222.
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address lacks its closing ]"))?;
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let port = match after {
            "" => DEFAULT_NATS_PORT,
            _ => parse_port(after.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        };
        return Ok(format!("[{host}]:{port}"));
    }
    match host_port.split_once(':') {
        None => Ok(format!("{host_port}:{DEFAULT_NATS_PORT}")),
        Some((host, port)) => {
            if host.is_empty() {
                return Err(bad("the host is missing"));
            }
            let port = parse_port(port).ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
            Ok(format!("{host}:{port}"))
        }
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> ServerVersion {
        ServerVersion { major, minor, patch }
    }

    #[test]
    fn plain_prefixed_and_suffixed_versions_parse() {
        assert_eq!(ServerVersion::parse("2.10.0").expect("plain"), v(2, 10, 0));
        assert_eq!(ServerVersion::parse("v2.15.1").expect("v prefix"), v(2, 15, 1));
        assert_eq!(
            ServerVersion::parse("2.11.0-RC.1").expect("rc suffix"),
            v(2, 11, 0)
        );
        assert_eq!(
            ServerVersion::parse("2.12.3+build.7").expect("build suffix"),
            v(2, 12, 3)
        );
        assert_eq!(ServerVersion::parse("2.10").expect("no patch"), v(2, 10, 0));
        assert_eq!(
            ServerVersion::parse(" 2.9.25\n").expect("whitespace"),
            v(2, 9, 25)
        );
    }

    #[test]
    fn garbage_versions_are_unparseable() {
        for text in [
            "",
            "2",
            "v",
            "2.",
            ".10.0",
            "2..0",
            "2.10.0.1",
            "two.ten",
            "2.10.x",
            "-2.10.0",
            "2.10.0 beta",
            "99999999999.0.0",
            "2.+10.0",
        ] {
            match ServerVersion::parse(text) {
                Err(VersionError::Unparseable { version }) => assert_eq!(version, text),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn ordering_is_numeric_not_textual() {
        assert!(v(2, 9, 25) < v(2, 10, 0));
        assert!(v(2, 10, 0) < v(2, 10, 1));
        assert!(v(2, 100, 0) > v(2, 20, 0));
        assert!(v(3, 0, 0) > v(2, 99, 99));
    }

    #[test]
    fn versions_before_2_10_are_refused_with_the_reason() {
        for old in ["2.9.25", "v2.9.0", "1.4.1", "2.2.6", "2.9.99-RC.3"] {
            match check_server_version(old) {
                Err(VersionError::TooOld { found, minimum, why }) => {
                    assert_eq!(found, ServerVersion::parse(old).expect("parses"));
                    assert_eq!(minimum, v(2, 10, 0));
                    assert_eq!(why, WHY_MINIMUM);
                }
                other => panic!("{old} gave {other:?}"),
            }
        }
        let message = check_server_version("2.9.25")
            .expect_err("2.9 is refused")
            .to_string();
        assert!(message.contains("2.9.25"), "{message}");
        assert!(message.contains("2.10.0"), "{message}");
        assert!(message.contains("compare-and-set"), "{message}");
    }

    #[test]
    fn versions_from_2_10_are_accepted() {
        assert_eq!(check_server_version("2.10.0").expect("minimum"), v(2, 10, 0));
        assert_eq!(check_server_version("2.10.0-RC.1").expect("rc"), v(2, 10, 0));
        assert_eq!(check_server_version("v2.15.1").expect("ref"), v(2, 15, 1));
        assert_eq!(check_server_version("3.0.0").expect("next major"), v(3, 0, 0));
    }

    #[test]
    fn info_lines_parse_with_defaults_for_missing_fields() {
        let info = parse_info_line(
            "a:1",
            b"INFO {\"server_id\":\"NX\",\"version\":\"2.15.1\",\"jetstream\":true,\"headers\":true,\"max_payload\":1048576}\r\n",
        )
        .expect("well-formed");
        assert_eq!(info.version, "2.15.1");
        assert!(info.jetstream && info.headers);
        assert_eq!(info.server_id, "NX");
        let bare = parse_info_line("a:1", b"info\t{\"version\":\"2.10.0\"}\n").expect("minimal");
        assert!(!bare.jetstream && !bare.headers);
        assert_eq!(bare.server_name, "");
    }

    #[test]
    fn malformed_info_lines_are_typed_errors() {
        assert!(matches!(
            parse_info_line("a:1", b"INFO {\"jetstream\":true}\r\n"),
            Err(VersionError::BadInfo { .. })
        ));
        assert!(matches!(
            parse_info_line("a:1", b"INFO {\"version\":\r\n"),
            Err(VersionError::BadInfo { .. })
        ));
        match parse_info_line("a:1", b"-ERR 'Authorization Violation'\r\n") {
            Err(VersionError::NotNats { first_bytes, .. }) => {
                assert_eq!(first_bytes, "-ERR 'Authorization Violation'\r\n");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_info_line("a:1", b"INFOX{}\n"),
            Err(VersionError::NotNats { .. })
        ));
    }

    #[test]
    fn prefixes_of_info_are_recognised_before_the_line_ends() {
        assert!(could_be_info(b""));
        assert!(could_be_info(b"IN"));
        assert!(could_be_info(b"INFO "));
        assert!(could_be_info(b"info\t{"));
        assert!(!could_be_info(b"HTTP/1.1"));
        assert!(!could_be_info(b"INFOS"));
    }

    #[test]
    fn url_lists_become_host_port_addresses() {
        assert_eq!(
            parse_server_list("nats://127.0.0.1:4222").expect("one"),
            ["127.0.0.1:4222"]
        );
        assert_eq!(
            parse_server_list("nats://u:p@a.example:1, b.example ,NATS://[::1]:7,[::2]").expect("list"),
            ["a.example:1", "b.example:4222", "[::1]:7", "[::2]:4222"]
        );
        assert_eq!(
            parse_server_list("localhost:4333/").expect("slash"),
            ["localhost:4333"]
        );
    }

    #[test]
    fn malformed_urls_are_refused() {
        for url in [
            "",
            " , ",
            "tls://a:1",
            "ws://a:1",
            "nats://",
            "nats://:4222",
            "a:0",
            "a:65536",
            "a:-1",
            "a:4222/path",
            "[::1",
            "[::1]x",
            "[]:1",
        ] {
            assert!(
                matches!(parse_server_list(url), Err(VersionError::BadUrl { .. })),
                "{url:?} was accepted"
            );
        }
    }
}
