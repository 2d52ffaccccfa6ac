//! The node's database, `DATA/holdfast.redb` (spec/host.md §4): the table
//! definitions, the storage format version, and the byte layout of every
//! record (also in docs/FORMAT.md).
//!
//! Records are read as untrusted bytes: every decoder checks lengths before
//! slicing and returns [`Corrupt`] naming the table and key, never panics.
//! This module opens and checks the database and encodes records; it never
//! decides what to write when (the engine does), and it never resets or
//! rewrites a database it does not understand.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `&str` | `format` (u32 LE), `node_id` (32 bytes), `created_at` (u64 LE, Unix ms) |
//! | `daemons` | origin (u64) | [`DaemonRecord`] as JSON |
//! | `journal` | (origin, input seq) | [`JournalEntry`] |
//! | `idempotency` | (origin, key bytes) | (input seq, accepted at Unix ms) |
//! | `snapshots` | origin | [`SnapshotRecord`] |
//! | `outputs` | (origin, output seq) | [`OutputRecord`] |

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use holdfast_compute::{CausalEvent, CausalLink, StateSnapshot};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// The storage format this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "holdfast.redb";

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const DAEMONS: TableDefinition<u64, &[u8]> = TableDefinition::new("daemons");
pub(crate) const JOURNAL: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("journal");
pub(crate) const IDEMPOTENCY: TableDefinition<(u64, &[u8]), (u64, u64)> = TableDefinition::new("idempotency");
pub(crate) const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
pub(crate) const OUTPUTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("outputs");

/// A record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table {table}, key {key}: {reason}")]
pub struct Corrupt {
    /// The table.
    pub table: &'static str,
    /// The key, printed.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// What the node keeps of a daemon besides its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// The kind (`counter` for contract `daemon.counter`).
    pub kind: String,
    /// The identity seed, hex; the entity id and origin follow from it.
    pub seed: String,
    /// The configuration given at spawn.
    pub config: serde_json::Value,
    /// Unix ms of the spawn.
    pub created_at: u64,
    /// Set when the node stopped the daemon (`nondeterministic`), with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halt>,
}

/// Why the node stopped a daemon for good; its data is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// The status reported (`nondeterministic`).
    pub status: String,
    /// The first output sequence whose replay differed, if that is why.
    pub first_differing_seq: Option<u64>,
    /// Explanation.
    pub reason: String,
}

impl DaemonRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a daemon record always serializes")
    }

    pub(crate) fn decode(origin: u64, bytes: &[u8]) -> Result<Self, Corrupt> {
        serde_json::from_slice(bytes).map_err(|error| Corrupt {
            table: "daemons",
            key: format!("{origin:016x}"),
            reason: error.to_string(),
        })
    }

    /// The 32-byte identity seed.
    pub(crate) fn seed_bytes(&self, origin: u64) -> Result<[u8; 32], Corrupt> {
        decode_hex32(&self.seed).ok_or_else(|| Corrupt {
            table: "daemons",
            key: format!("{origin:016x}"),
            reason: "the identity seed is not 64 hex digits".into(),
        })
    }
}

pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// One accepted input event.
///
/// Layout: `received_at` u64 LE · key length u16 LE · key · payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// Unix ms when the node accepted it (given to the daemon on every
    /// replay, so replays are identical).
    pub received_at: u64,
    /// The sender's idempotency key, if it gave one.
    pub key: Option<Bytes>,
    /// The event.
    pub payload: Bytes,
}

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

impl JournalEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let key = self.key.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(10 + key.len() + self.payload.len());
        out.extend_from_slice(&self.received_at.to_le_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&self.payload);
        out
    }

    pub(crate) fn decode(origin: u64, seq: u64, bytes: &[u8]) -> Result<Self, Corrupt> {
        let corrupt = |reason: &str| Corrupt {
            table: "journal",
            key: format!("({origin:016x}, {seq})"),
            reason: reason.to_owned(),
        };
        let mut reader = Reader(bytes);
        let received_at = reader.u64().ok_or_else(|| corrupt("truncated header"))?;
        let key_len = reader.u16().ok_or_else(|| corrupt("truncated header"))? as usize;
        if key_len > MAX_IDEMPOTENCY_KEY {
            return Err(corrupt("idempotency key longer than the limit"));
        }
        let key = reader.take(key_len).ok_or_else(|| corrupt("truncated key"))?;
        Ok(Self {
            received_at,
            key: (key_len > 0).then(|| Bytes::copy_from_slice(key)),
            payload: Bytes::copy_from_slice(reader.0),
        })
    }
}

/// A daemon's latest snapshot.
///
/// Layout: input through-seq u64 LE · the compute snapshot's own encoding
/// (checksummed; its state bytes are the kind adapter's envelope, which
/// records the kind version that wrote them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Every input event with a sequence at or below this is reflected.
    pub input_through: u64,
    /// The daemon's state and chain position.
    pub snapshot: StateSnapshot,
}

impl SnapshotRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let encoded = self.snapshot.to_bytes();
        let mut out = Vec::with_capacity(8 + encoded.len());
        out.extend_from_slice(&self.input_through.to_le_bytes());
        out.extend_from_slice(&encoded);
        out
    }

    pub(crate) fn decode(origin: u64, bytes: &[u8]) -> Result<Self, Corrupt> {
        let corrupt = |reason: String| Corrupt {
            table: "snapshots",
            key: format!("{origin:016x}"),
            reason,
        };
        let mut reader = Reader(bytes);
        let input_through = reader.u64().ok_or_else(|| corrupt("truncated header".into()))?;
        let snapshot = StateSnapshot::from_bytes(reader.0).map_err(|error| corrupt(error.to_string()))?;
        if snapshot.origin_hash() != origin {
            return Err(corrupt("the snapshot belongs to another origin".into()));
        }
        Ok(Self {
            input_through,
            snapshot,
        })
    }
}

/// One output of a daemon.
///
/// Layout: chain link (32 bytes) · `received_at` u64 LE · payload.
pub struct OutputRecord;

impl OutputRecord {
    pub(crate) fn encode(event: &CausalEvent) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + event.payload.len());
        out.extend_from_slice(&event.link.to_bytes());
        out.extend_from_slice(&event.received_at.to_le_bytes());
        out.extend_from_slice(&event.payload);
        out
    }

    pub(crate) fn decode(origin: u64, seq: u64, bytes: &[u8]) -> Result<CausalEvent, Corrupt> {
        let corrupt = |reason: &str| Corrupt {
            table: "outputs",
            key: format!("({origin:016x}, {seq})"),
            reason: reason.to_owned(),
        };
        let mut reader = Reader(bytes);
        let link: [u8; 32] = reader
            .take(32)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| corrupt("truncated link"))?;
        let link = CausalLink::from_bytes(&link);
        let received_at = reader.u64().ok_or_else(|| corrupt("truncated header"))?;
        if link.origin_hash != origin || link.sequence != seq {
            return Err(corrupt("the link names another origin or sequence"));
        }
        Ok(CausalEvent {
            link,
            payload: Bytes::copy_from_slice(reader.0),
            received_at,
        })
    }
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
}

/// What `meta` says about the database.
#[derive(Clone, Debug)]
pub struct Meta {
    /// The storage format.
    pub format: u32,
    /// The node's id (random at creation).
    pub node_id: [u8; 32],
    /// Unix ms of creation.
    pub created_at: u64,
}

/// Opens (or creates, `0700` directory and `0600` file) the database of
/// `data_dir`, and checks its format before anything else reads it.
///
/// # Errors
/// `DataDir` when the directory or file cannot be made; `InUse` when another
/// process holds it; `Corrupt` when redb or `meta` finds damage;
/// `NewerFormat` when a newer holdfast wrote it. None of them writes.
pub fn open_database(data_dir: &Path) -> Result<(Database, Meta), NodeError> {
    let path = data_dir.join(DATABASE_FILE);
    create_private_dir(data_dir)?;
    let existed = path.exists();
    if existed {
        refuse_newer_format_read_only(&path)?;
    } else {
        create_private_file(&path)?;
    }
    let database = Database::create(&path).map_err(|error| database_error(&path, error))?;
    let meta = if existed && has_meta(&database, &path)? {
        read_meta(&database, &path)?
    } else {
        initialize(&database, &path)?
    };
    if meta.format > FORMAT_VERSION {
        return Err(NodeError::NewerFormat {
            path,
            found: meta.format,
            known: FORMAT_VERSION,
        });
    }
    Ok((database, meta))
}

/// Reads `meta` through a read-only open, so that a database this binary
/// must refuse (newer format, not a redb file) is never opened for writing:
/// redb updates its header when it opens a file for writing.
fn refuse_newer_format_read_only(path: &Path) -> Result<(), NodeError> {
    let database = match redb::ReadOnlyDatabase::open(path) {
        Ok(database) => database,
        // A database left by a crash needs redb's repair, which only a
        // writable open does; its format is checked again after that.
        Err(redb::DatabaseError::RepairAborted) => return Ok(()),
        Err(error) => return Err(database_error(path, error)),
    };
    if has_meta(&database, path)? {
        let meta = read_meta(&database, path)?;
        if meta.format > FORMAT_VERSION {
            return Err(NodeError::NewerFormat {
                path: path.to_owned(),
                found: meta.format,
                known: FORMAT_VERSION,
            });
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    let failed = |error: std::io::Error| NodeError::DataDir {
        path: dir.to_owned(),
        reason: error.to_string(),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    if !dir.is_dir() {
        return Err(NodeError::DataDir {
            path: dir.to_owned(),
            reason: "not a directory".into(),
        });
    }
    Ok(())
}

fn create_private_file(path: &Path) -> Result<(), NodeError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|file| file.set_permissions(std::fs::Permissions::from_mode(0o600)))
        .map_err(|error| NodeError::DataDir {
            path: path.to_owned(),
            reason: error.to_string(),
        })
}

fn database_error(path: &Path, error: redb::DatabaseError) -> NodeError {
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => NodeError::InUse {
            path: path.to_owned(),
        },
        redb::DatabaseError::UpgradeRequired(version) => NodeError::NewerFormat {
            path: path.to_owned(),
            found: u32::from(version),
            known: FORMAT_VERSION,
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(error))
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            NodeError::DataDir {
                path: path.to_owned(),
                reason: error.to_string(),
            }
        }
        other => NodeError::Corrupt {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

pub(crate) fn corrupt(path: &Path, error: impl std::fmt::Display) -> NodeError {
    NodeError::Corrupt {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

fn has_meta(database: &impl ReadableDatabase, path: &Path) -> Result<bool, NodeError> {
    let read = database.begin_read().map_err(|error| corrupt(path, error))?;
    match read.open_table(META) {
        Ok(_) => Ok(true),
        Err(redb::TableError::TableDoesNotExist(_)) => {
            // A database with tables but no meta is not one we made.
            let tables = read.list_tables().map_err(|error| corrupt(path, error))?;
            if tables.count() > 0 {
                return Err(corrupt(path, "it has tables but no meta table"));
            }
            Ok(false)
        }
        Err(error) => Err(corrupt(path, error)),
    }
}

fn read_meta(database: &impl ReadableDatabase, path: &Path) -> Result<Meta, NodeError> {
    let read = database.begin_read().map_err(|error| corrupt(path, error))?;
    let table = read.open_table(META).map_err(|error| corrupt(path, error))?;
    let field = |name: &str| -> Result<Vec<u8>, NodeError> {
        table
            .get(name)
            .map_err(|error| corrupt(path, error))?
            .map(|value| value.value().to_vec())
            .ok_or_else(|| corrupt(path, format!("meta has no '{name}'")))
    };
    let format = field("format")?;
    let format = u32::from_le_bytes(
        format
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(path, "meta 'format' is not 4 bytes"))?,
    );
    if format > FORMAT_VERSION {
        // Nothing else is read: a newer format may lay meta out differently.
        return Ok(Meta {
            format,
            node_id: [0; 32],
            created_at: 0,
        });
    }
    let node_id = field("node_id")?
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(path, "meta 'node_id' is not 32 bytes"))?;
    let created_at = u64::from_le_bytes(
        field("created_at")?
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(path, "meta 'created_at' is not 8 bytes"))?,
    );
    Ok(Meta {
        format,
        node_id,
        created_at,
    })
}

fn initialize(database: &Database, path: &Path) -> Result<Meta, NodeError> {
    let mut node_id = [0u8; 32];
    getrandom::fill(&mut node_id).map_err(|error| NodeError::Storage(error.to_string()))?;
    let meta = Meta {
        format: FORMAT_VERSION,
        node_id,
        created_at: unix_millis(),
    };
    let write = database.begin_write().map_err(|error| corrupt(path, error))?;
    {
        let mut table = write.open_table(META).map_err(|error| corrupt(path, error))?;
        let storage = |error: redb::StorageError| NodeError::Storage(error.to_string());
        table
            .insert("format", meta.format.to_le_bytes().as_slice())
            .map_err(storage)?;
        table
            .insert("node_id", meta.node_id.as_slice())
            .map_err(storage)?;
        table
            .insert("created_at", meta.created_at.to_le_bytes().as_slice())
            .map_err(storage)?;
        for definition in [DAEMONS, SNAPSHOTS] {
            write
                .open_table(definition)
                .map_err(|error| corrupt(path, error))?;
        }
        for definition in [JOURNAL, OUTPUTS] {
            write
                .open_table(definition)
                .map_err(|error| corrupt(path, error))?;
        }
        write
            .open_table(IDEMPOTENCY)
            .map_err(|error| corrupt(path, error))?;
    }
    write
        .commit()
        .map_err(|error| NodeError::Storage(error.to_string()))?;
    Ok(meta)
}

/// Unix milliseconds now (0 before the epoch).
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The database path of a data directory.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_entry_round_trips_and_refuses_truncation() {
        let entry = JournalEntry {
            received_at: 7,
            key: Some(Bytes::from_static(b"key-1")),
            payload: Bytes::from_static(b"payload"),
        };
        let bytes = entry.encode();
        assert_eq!(JournalEntry::decode(1, 2, &bytes), Ok(entry));
        for cut in 0..15 {
            let error =
                JournalEntry::decode(1, 2, &bytes[..cut]).expect_err("a cut header or key is refused");
            assert_eq!(error.table, "journal");
        }
    }

    #[test]
    fn output_record_names_its_origin_and_sequence() {
        let event = CausalEvent {
            link: CausalLink {
                origin_hash: 9,
                sequence: 3,
                ..CausalLink::default()
            },
            payload: Bytes::from_static(b"out"),
            received_at: 5,
        };
        let bytes = OutputRecord::encode(&event);
        assert_eq!(OutputRecord::decode(9, 3, &bytes), Ok(event));
        assert!(OutputRecord::decode(9, 4, &bytes).is_err());
        assert!(OutputRecord::decode(8, 3, &bytes).is_err());
    }

    proptest::proptest! {
        #[test]
        fn record_decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = JournalEntry::decode(1, 1, &bytes);
            let _ = OutputRecord::decode(1, 1, &bytes);
            let _ = SnapshotRecord::decode(1, &bytes);
            let _ = DaemonRecord::decode(1, &bytes);
        }
    }
}
