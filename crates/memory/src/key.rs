//! Stable keys: the permanent names of logical stores.
//!
//! A [`StableKey`] can only be built by [`StableKey::parse`], so every key in
//! the program has passed the grammar below. This module owns the grammar and
//! nothing else: whether a key may be *used* (history, policy, authority) is
//! decided by `validate` and `runtime`.
//!
//! Grammar: `namespace.component.role.vN` — non-empty, at most
//! [`STABLE_KEY_MAX_LEN`] bytes of lowercase ASCII; dot-separated segments,
//! each starting with `a-z` and continuing with `a-z`, `0-9` or `_`; the last
//! segment is `v` followed by a nonzero decimal without leading zeros; at least
//! one segment precedes the version.

use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// The longest stable key, in bytes.
pub const STABLE_KEY_MAX_LEN: usize = 128;

/// The prefix reserved for the governance layer's own stores.
pub const IC_MEMORY_STABLE_KEY_PREFIX: &str = "ic_memory.";

/// The permanent, validated name of a logical store. Stored inline when it
/// is at most 24 bytes, so decoding a ledger allocates nothing for most keys.
///
/// ```
/// use holdfast_memory::StableKey;
/// let key = StableKey::parse("app.users.v1").unwrap();
/// assert_eq!(key.as_str(), "app.users.v1");
/// assert!(StableKey::parse("app.users.v01").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StableKey(CompactString);

/// Why a string is not a stable key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StableKeyError {
    /// The key is the empty string.
    #[error("stable key is empty")]
    Empty,
    /// The key is longer than [`STABLE_KEY_MAX_LEN`] bytes.
    #[error("stable key is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A byte outside `a-z`, `0-9`, `_` and `.`.
    #[error("stable key {key:?} has the invalid character {character:?} at byte {position}")]
    InvalidCharacter {
        /// The key as given.
        key: String,
        /// The offending character.
        character: char,
        /// Its byte offset.
        position: usize,
    },
    /// Two dots in a row, or a leading or trailing dot.
    #[error("stable key {key:?} has an empty segment")]
    EmptySegment {
        /// The key as given.
        key: String,
    },
    /// A segment that does not start with `a-z`.
    #[error("stable key {key:?}: segment {segment:?} must start with a lowercase letter")]
    SegmentStart {
        /// The key as given.
        key: String,
        /// The offending segment.
        segment: String,
    },
    /// The last segment is not `v` followed by a nonzero number without
    /// leading zeros.
    #[error("stable key {key:?} must end with a version segment such as `v1` (found {segment:?})")]
    InvalidVersion {
        /// The key as given.
        key: String,
        /// The last segment.
        segment: String,
    },
    /// Only a version segment, with nothing before it.
    #[error("stable key {key:?} needs at least one segment before its version")]
    MissingNamespace {
        /// The key as given.
        key: String,
    },
}

impl StableKey {
    /// Parses `text` against the stable-key grammar.
    ///
    /// # Errors
    /// The [`StableKeyError`] variant naming the first rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, StableKeyError> {
        check_grammar(text)?;
        Ok(Self(CompactString::new(text)))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an owned string.
    pub fn into_string(self) -> String {
        self.0.into_string()
    }

    /// Whether this key is in the governance layer's reserved namespace.
    pub fn is_ic_memory_key(&self) -> bool {
        is_ic_memory_stable_key(&self.0)
    }
}

/// Whether `key` is in the namespace reserved for the governance layer
/// (`ic_memory.`).
pub fn is_ic_memory_stable_key(key: &str) -> bool {
    key.starts_with(IC_MEMORY_STABLE_KEY_PREFIX)
}

fn check_grammar(text: &str) -> Result<(), StableKeyError> {
    let key = || text.to_owned();
    if text.is_empty() {
        return Err(StableKeyError::Empty);
    }
    if text.len() > STABLE_KEY_MAX_LEN {
        return Err(StableKeyError::TooLong {
            len: text.len(),
            max: STABLE_KEY_MAX_LEN,
        });
    }
    if let Some((position, character)) = text
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
    {
        return Err(StableKeyError::InvalidCharacter {
            key: key(),
            character,
            position,
        });
    }
    let (has_empty_segment, badly_started) = scan_segments(text.as_bytes());
    if has_empty_segment {
        return Err(StableKeyError::EmptySegment { key: key() });
    }
    if let Some(segment) = badly_started {
        return Err(StableKeyError::SegmentStart {
            key: key(),
            segment: text[segment].to_owned(),
        });
    }
    let (namespace, version) = match text.rsplit_once('.') {
        Some((namespace, version)) => (Some(namespace), version),
        None => (None, text),
    };
    if !is_version_segment(version) {
        return Err(StableKeyError::InvalidVersion {
            key: key(),
            segment: version.to_owned(),
        });
    }
    if namespace.is_none() {
        return Err(StableKeyError::MissingNamespace { key: key() });
    }
    Ok(())
}

/// One pass over the dot-separated segments: whether any is empty, and the
/// byte range of the first that does not start with `a-z`.
fn scan_segments(bytes: &[u8]) -> (bool, Option<std::ops::Range<usize>>) {
    let mut has_empty_segment = false;
    let mut badly_started = None;
    let mut start = 0;
    for end in (0..=bytes.len()).filter(|&i| i == bytes.len() || bytes[i] == b'.') {
        if end == start {
            has_empty_segment = true;
        } else if badly_started.is_none() && !bytes[start].is_ascii_lowercase() {
            badly_started = Some(start..end);
        }
        start = end + 1;
    }
    (has_empty_segment, badly_started)
}

fn is_version_segment(segment: &str) -> bool {
    let Some(number) = segment.strip_prefix('v') else {
        return false;
    };
    !number.is_empty() && !number.starts_with('0') && number.bytes().all(|b| b.is_ascii_digit())
}

impl FromStr for StableKey {
    type Err = StableKeyError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl TryFrom<String> for StableKey {
    type Error = StableKeyError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        check_grammar(&text)?;
        Ok(Self(CompactString::from(text)))
    }
}

impl From<StableKey> for String {
    fn from(key: StableKey) -> Self {
        key.0.into_string()
    }
}

impl AsRef<str> for StableKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_key_grammar_table() {
        let long_valid = format!("{}.v1", "a".repeat(STABLE_KEY_MAX_LEN - 3));
        let too_long = format!("{}.v1", "a".repeat(STABLE_KEY_MAX_LEN - 2));
        let valid = [
            "app.v1",
            "app.users.v1",
            "app.users.v12",
            "namespace.component.role.v1",
            "a_b.c9_d.v300",
            "ic_memory.ledger.v1",
            long_valid.as_str(),
        ];
        for text in valid {
            assert_eq!(
                StableKey::parse(text).map(|k| k.into_string()),
                Ok(text.to_owned())
            );
        }
        let s = |t: &str| t.to_owned();
        let invalid: [(&str, StableKeyError); 17] = [
            ("", StableKeyError::Empty),
            (too_long.as_str(), StableKeyError::TooLong { len: 129, max: 128 }),
            (
                "App.users.v1",
                StableKeyError::InvalidCharacter {
                    key: s("App.users.v1"),
                    character: 'A',
                    position: 0,
                },
            ),
            (
                "app users.v1",
                StableKeyError::InvalidCharacter {
                    key: s("app users.v1"),
                    character: ' ',
                    position: 3,
                },
            ),
            (
                "app/users.v1",
                StableKeyError::InvalidCharacter {
                    key: s("app/users.v1"),
                    character: '/',
                    position: 3,
                },
            ),
            (
                "app-users.v1",
                StableKeyError::InvalidCharacter {
                    key: s("app-users.v1"),
                    character: '-',
                    position: 3,
                },
            ),
            (
                "app.usérs.v1",
                StableKeyError::InvalidCharacter {
                    key: s("app.usérs.v1"),
                    character: 'é',
                    position: 6,
                },
            ),
            (".app.v1", StableKeyError::EmptySegment { key: s(".app.v1") }),
            ("app.v1.", StableKeyError::EmptySegment { key: s("app.v1.") }),
            ("app..v1", StableKeyError::EmptySegment { key: s("app..v1") }),
            (
                "9app.v1",
                StableKeyError::SegmentStart {
                    key: s("9app.v1"),
                    segment: s("9app"),
                },
            ),
            (
                "_app.v1",
                StableKeyError::SegmentStart {
                    key: s("_app.v1"),
                    segment: s("_app"),
                },
            ),
            (
                "app.users.v0",
                StableKeyError::InvalidVersion {
                    key: s("app.users.v0"),
                    segment: s("v0"),
                },
            ),
            (
                "app.users.v01",
                StableKeyError::InvalidVersion {
                    key: s("app.users.v01"),
                    segment: s("v01"),
                },
            ),
            (
                "app.users",
                StableKeyError::InvalidVersion {
                    key: s("app.users"),
                    segment: s("users"),
                },
            ),
            (
                "app.users.v",
                StableKeyError::InvalidVersion {
                    key: s("app.users.v"),
                    segment: s("v"),
                },
            ),
            ("v1", StableKeyError::MissingNamespace { key: s("v1") }),
        ];
        for (text, expected) in invalid {
            assert_eq!(StableKey::parse(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn ic_memory_prefix_is_recognised() {
        assert!(is_ic_memory_stable_key("ic_memory.ledger.v1"));
        assert!(!is_ic_memory_stable_key("ic_memoryx.ledger.v1"));
        assert!(!StableKey::parse("app.v1").unwrap().is_ic_memory_key());
    }

    #[test]
    fn deserializing_an_invalid_key_is_refused() {
        let err = serde_json::from_str::<StableKey>("\"App.v1\"").unwrap_err();
        assert!(err.to_string().contains("invalid character"), "{err}");
    }
}
