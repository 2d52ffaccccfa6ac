//! Structure-aware mutators for the three layers a hostile image can attack:
//! the encoded ledger (CBOR items inside the envelope), the commit store at
//! ID 0 (slot headers, presence markers, the high-water mark, the store
//! header) and the raw MemoryManager image (header fields, bucket table,
//! size).
//!
//! Every mutator re-seals what a checksum covers — the envelope length, the
//! slot CRC-32C, the high-water mark's CRC-32C — unless it logs that it
//! deliberately did not, so the checks behind the checksums are reached.
//! Each logs what it did in words (field names of docs/FORMAT.md) so a
//! failing case reads as a reproducer. Mutators only ever write the memory
//! they are given, which is a case's own copy.

use ic_stable_structures::Memory;

use super::cbor::{self, Item, Path};
use super::entropy::Entropy;
use crate::codec::{
    CborLedgerCodec, LEDGER_ENVELOPE_LEN, LEDGER_ENVELOPE_MAGIC, LEDGER_ENVELOPE_VERSION, LedgerCodec,
    MAX_ENCODED_LEDGER_LEN,
};
use crate::image::{MM_BUCKET_TABLE_OFFSET, MM_MAX_BUCKETS, MM_SIZES_OFFSET, WASM_PAGE_SIZE};
use crate::physical::{
    DATA_OFFSET, HIGH_WATER_LEN, HIGH_WATER_OFFSETS, SLOT_HEADER_LEN, SLOT_HEADER_OFFSETS, SLOT_PRESENT,
};
use crate::slot::IC_MEMORY_LEDGER_STABLE_KEY;

/// What the mutators did, in order, for a person reading a reproducer.
pub type MutationLog = Vec<String>;

/// Integers at the edges of every width the format uses.
const EDGES: [u64; 18] = [
    0,
    1,
    2,
    3,
    9,
    10,
    23,
    24,
    254,
    255,
    256,
    65_535,
    65_536,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
];

/// The tag the high-water mark's CRC starts with (docs/FORMAT.md).
const HIGH_WATER_TAG: &[u8; 4] = b"HFHW";

// ---- the encoded ledger ----------------------------------------------------

/// `payload` (an envelope around CBOR) changed by one to three
/// structure-aware mutations of its CBOR items, sometimes followed by a
/// byte-level one, in an envelope whose length is re-sealed (except when
/// the envelope itself is the logged target).
pub fn mutate_payload(payload: &[u8], e: &mut Entropy, log: &mut MutationLog) -> Vec<u8> {
    let body = payload.get(LEDGER_ENVELOPE_LEN..).unwrap_or(payload);
    let mut body = match cbor::parse(body) {
        Some(mut tree) => {
            for _ in 0..=e.below(3) {
                mutate_tree(&mut tree, e, log);
            }
            cbor::to_bytes(&tree)
        }
        None => {
            log.push("payload: not a CBOR tree; bytes only".into());
            mutate_bytes(body.to_vec(), e, log)
        }
    };
    if e.chance(12) {
        body = mutate_bytes(body, e, log);
    }
    seal_envelope(&body, e, log)
}

fn seal_envelope(body: &[u8], e: &mut Entropy, log: &mut MutationLog) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEDGER_ENVELOPE_LEN + body.len());
    out.extend_from_slice(&LEDGER_ENVELOPE_MAGIC);
    out.extend_from_slice(&LEDGER_ENVELOPE_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    if e.chance(4) {
        match e.below(3) {
            0 => {
                let at = e.index(4);
                out[at] ^= 1 << e.below(8);
                log.push(format!("envelope: magic byte {at} flipped"));
            }
            1 => {
                let version = *e.pick(&[0u16, 2, u16::MAX]);
                out[4..6].copy_from_slice(&version.to_le_bytes());
                log.push(format!("envelope: version {version}"));
            }
            _ => {
                let declared = *e.pick(&[
                    (body.len() as u32).wrapping_sub(1),
                    body.len() as u32 + 1,
                    0,
                    u32::MAX,
                ]);
                out[6..10].copy_from_slice(&declared.to_le_bytes());
                log.push(format!(
                    "envelope: length {declared} not re-sealed ({} follow)",
                    body.len()
                ));
            }
        }
    }
    out
}

/// Byte-level damage to an encoded body: bit flips, a truncation, an
/// extension, an overwrite with a CBOR-significant byte, an insertion.
fn mutate_bytes(mut body: Vec<u8>, e: &mut Entropy, log: &mut MutationLog) -> Vec<u8> {
    if body.is_empty() {
        body.push(0xf6);
    }
    match e.below(5) {
        0 => {
            for _ in 0..=e.below(3) {
                let at = e.index(body.len());
                let bit = e.below(8);
                body[at] ^= 1 << bit;
                log.push(format!("payload byte {at}: bit {bit} flipped"));
            }
        }
        1 => {
            let at = e.index(body.len());
            body.truncate(at);
            log.push(format!("payload truncated to {at} bytes"));
        }
        2 => {
            let n = 1 + e.index(16);
            for _ in 0..n {
                body.push(e.below(256) as u8);
            }
            log.push(format!("payload extended by {n} bytes"));
        }
        3 => {
            let at = e.index(body.len());
            let value = *e.pick(&[0x00, 0xff, 0xf6, 0x80, 0x9b, 0x7b, 0x1b, 0xbf, 0x5f]);
            body[at] = value;
            log.push(format!("payload byte {at} set to {value:#04x}"));
        }
        _ => {
            let at = e.index(body.len() + 1);
            let value = e.below(256) as u8;
            body.insert(at, value);
            log.push(format!("payload byte {value:#04x} inserted at {at}"));
        }
    }
    body
}

/// A random path whose item satisfies `keep`.
fn pick_path(tree: &Item, e: &mut Entropy, keep: impl Fn(&Path, &Item) -> bool) -> Option<Path> {
    let paths: Vec<Path> = tree
        .paths()
        .into_iter()
        .filter(|path| tree.get(path).is_some_and(|item| keep(path, item)))
        .collect();
    (!paths.is_empty()).then(|| paths[e.index(paths.len())].clone())
}

fn mutate_tree(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    match e.below(100) {
        0..20 => int_edge(tree, e, log),
        20..30 => int_step(tree, e, log),
        30..50 => semantic(tree, e, log),
        50..62 => text(tree, e, log),
        62..75 => array_shape(tree, e, log),
        75..80 => type_swap(tree, e, log),
        80..86 => count_lie(tree, e, log),
        86..93 => widen(tree, e, log),
        93..96 => huge_claim(tree, e, log),
        _ => transplant(tree, e, log),
    }
}

fn set(tree: &mut Item, path: &[usize], item: Item) {
    if let Some(slot) = tree.get_mut(path) {
        *slot = item;
    }
}

fn int_edge(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let Some(path) = pick_path(tree, e, |_, item| matches!(item, Item::Uint(_))) else {
        return;
    };
    let current = tree.uint(&[2]).unwrap_or(0);
    let value = if e.chance(70) {
        *e.pick(&EDGES)
    } else {
        *e.pick(&[current, current.wrapping_add(1), current.wrapping_sub(1)])
    };
    log.push(format!("{} = {value}", cbor::describe(&path)));
    set(tree, &path, Item::Uint(value));
}

fn int_step(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let Some(path) = pick_path(tree, e, |_, item| matches!(item, Item::Uint(_))) else {
        return;
    };
    let old = tree.uint(&path).unwrap_or(0);
    let step = 1 + e.below(3);
    let value = if e.chance(50) {
        old.wrapping_add(step)
    } else {
        old.wrapping_sub(step)
    };
    log.push(format!("{} {old} -> {value}", cbor::describe(&path)));
    set(tree, &path, Item::Uint(value));
}

fn text(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let Some(path) = pick_path(tree, e, |_, item| matches!(item, Item::Text(_))) else {
        return;
    };
    let old = tree.text(&path).unwrap_or_default().to_owned();
    let others: Vec<String> = tree
        .paths()
        .iter()
        .filter_map(|p| tree.text(p).map(str::to_owned))
        .collect();
    let what = cbor::describe(&path);
    let replacement = match e.below(7) {
        0 if !old.is_empty() => {
            let mut chars: Vec<char> = old.chars().collect();
            let at = e.index(chars.len());
            chars[at] = *e.pick(&[
                'A', '.', '-', '_', ' ', '\u{1b}', '\u{7f}', 'é', '0', 'v', '\u{202e}',
            ]);
            Item::Text(chars.into_iter().collect())
        }
        1 => {
            let mut text = old.clone();
            if e.chance(50) || text.is_empty() {
                text.push('a');
            } else {
                text.pop();
            }
            Item::Text(text)
        }
        2 => Item::Text(
            (*e.pick(&[
                "a.v1",
                IC_MEMORY_LEDGER_STABLE_KEY,
                "ic_memory.other.v1",
                "MemoryLayoutLedger",
                "",
                "\u{1b}[31mred\u{1b}[0m",
                "app.users.v0",
                "App.users.v1",
            ]))
            .to_owned(),
        ),
        3 => Item::Text("x".repeat(*e.pick(&[127, 128, 129, 255, 256, 257, 4096]))),
        4 => Item::Text(e.pick(&others).clone()),
        5 => {
            let mut raw = Vec::new();
            cbor::head(3, old.len() as u64 + 1, &mut raw);
            raw.extend_from_slice(old.as_bytes());
            raw.push(0xff);
            Item::Raw(raw)
        }
        _ => {
            let mut raw = Vec::new();
            let bytes = old.as_bytes();
            let declared = if e.chance(50) {
                bytes.len() as u64 + 1
            } else {
                (bytes.len() as u64).saturating_sub(1)
            };
            cbor::head(3, declared, &mut raw);
            raw.extend_from_slice(bytes);
            log.push(format!(
                "{what}: text length {declared} for {} bytes",
                bytes.len()
            ));
            set(tree, &path, Item::Raw(raw));
            return;
        }
    };
    log.push(format!("{what} = {}", short(&replacement)));
    set(tree, &path, replacement);
}

fn short(item: &Item) -> String {
    let text = format!("{item:?}");
    if text.len() > 60 {
        format!(
            "{}… ({} chars)",
            &text[..text.floor_char_boundary(57)],
            text.len()
        )
    } else {
        text
    }
}

fn array_shape(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let Some(path) = pick_path(
        tree,
        e,
        |_, item| matches!(item, Item::Array { items, .. } if !items.is_empty()),
    ) else {
        return;
    };
    let what = cbor::describe(&path);
    let Some(items) = tree.items_mut(&path) else {
        return;
    };
    let len = items.len();
    match e.below(5) {
        0 => {
            let (a, b) = (e.index(len), e.index(len));
            items.swap(a, b);
            log.push(format!("{what}: items {a} and {b} swapped"));
        }
        1 => {
            let at = e.index(len);
            let copy = items[at].clone();
            items.insert(at, copy);
            log.push(format!("{what}: item {at} duplicated"));
        }
        2 => {
            let at = e.index(len);
            items.remove(at);
            log.push(format!("{what}: item {at} dropped"));
        }
        3 => {
            items.reverse();
            log.push(format!("{what}: reversed"));
        }
        _ => {
            items.clear();
            log.push(format!("{what}: emptied"));
        }
    }
}

fn type_swap(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let Some(path) = pick_path(tree, e, |path, _| !path.is_empty()) else {
        return;
    };
    let replacement = e
        .pick(&[
            Item::Null,
            Item::Uint(0),
            Item::Uint(1),
            Item::Text(String::new()),
            Item::array(vec![]),
        ])
        .clone();
    log.push(format!("{} replaced by {replacement:?}", cbor::describe(&path)));
    set(tree, &path, replacement);
}

fn count_lie(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let Some(path) = pick_path(tree, e, |_, item| matches!(item, Item::Array { .. })) else {
        return;
    };
    if let Some(Item::Array { items, declared }) = tree.get_mut(&path) {
        let len = items.len() as u64;
        let lie = *e.pick(&[len + 1, len.saturating_sub(1), 0, len + 2]);
        *declared = Some(lie);
        log.push(format!(
            "{}: head claims {lie} items, {len} follow",
            cbor::describe(&path)
        ));
    }
}

fn huge_claim(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let Some(path) = pick_path(tree, e, |_, item| matches!(item, Item::Array { .. })) else {
        return;
    };
    let claim = *e.pick(&[
        1 << 16,
        MAX_ENCODED_LEDGER_LEN as u64 / 15,
        MAX_ENCODED_LEDGER_LEN as u64,
        u64::from(u32::MAX),
        u64::MAX,
    ]);
    if let Some(Item::Array { declared, .. }) = tree.get_mut(&path) {
        *declared = Some(claim);
        log.push(format!("{}: head claims {claim} items", cbor::describe(&path)));
    }
}

/// Re-encodes an integer, text or array head in a wider form than the
/// shortest: the same value, bytes that are not canonical.
fn widen(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let Some(path) = pick_path(tree, e, |_, item| {
        matches!(item, Item::Uint(_) | Item::Text(_) | Item::Array { .. })
    }) else {
        return;
    };
    let Some(item) = tree.get(&path).cloned() else {
        return;
    };
    let (major, argument) = match &item {
        Item::Uint(value) => (0, *value),
        Item::Text(text) => (3, text.len() as u64),
        Item::Array { items, declared } => (4, declared.unwrap_or(items.len() as u64)),
        _ => return,
    };
    let shortest = match argument {
        0..=23 => 0,
        24..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => return,
    };
    let width = *e.pick(&[1usize, 2, 4, 8].map(|w| w.max(shortest * 2).min(8)));
    let mut raw = Vec::new();
    cbor::wide_head(major, argument, width, &mut raw);
    match &item {
        Item::Text(text) => raw.extend_from_slice(text.as_bytes()),
        Item::Array { items, .. } => items.iter().for_each(|item| cbor::encode(item, &mut raw)),
        _ => {}
    }
    log.push(format!(
        "{}: head widened to {width} argument bytes",
        cbor::describe(&path)
    ));
    set(tree, &path, Item::Raw(raw));
}

fn transplant(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let (Some(from), Some(to)) = (
        pick_path(tree, e, |path, _| !path.is_empty()),
        pick_path(tree, e, |path, _| !path.is_empty()),
    ) else {
        return;
    };
    let Some(copy) = tree.get(&from).cloned() else {
        return;
    };
    log.push(format!(
        "{} copied over {}",
        cbor::describe(&from),
        cbor::describe(&to)
    ));
    set(tree, &to, copy);
}

/// Changes that know what the ledger's fields mean, so the result is often
/// a well-formed ledger that breaks one rule of history — what the integrity
/// checks, not the decoder, must refuse.
fn semantic(tree: &mut Item, e: &mut Entropy, log: &mut MutationLog) {
    let current = tree.uint(&[2]).unwrap_or(0);
    let records = tree.get(&[3]).map_or(0, |r| match r {
        Item::Array { items, .. } => items.len(),
        _ => 0,
    });
    let generations = tree.get(&[4]).map_or(0, |g| match g {
        Item::Array { items, .. } => items.len(),
        _ => 0,
    });
    let record = e.index(records);
    let other = e.index(records);
    let r = |field: usize| vec![3, record, field];
    match e.below(12) {
        0 if records > 0 => {
            let last_seen = tree.uint(&r(4)).unwrap_or(0);
            let first = tree.uint(&r(3)).unwrap_or(0);
            let at = *e.pick(&[
                current,
                last_seen,
                last_seen.wrapping_add(1),
                first,
                first.saturating_sub(1),
                current.wrapping_add(1),
            ]);
            set(tree, &r(2), Item::Uint(2));
            set(tree, &r(5), Item::Uint(at));
            log.push(format!("records[{record}] retired at generation {at}"));
        }
        1 if records > 0 => {
            let state = e.below(2);
            set(tree, &r(2), Item::Uint(state));
            set(tree, &r(5), Item::Null);
            log.push(format!("records[{record}] state {state}, not retired"));
        }
        2 if records > 0 => {
            let other_id = tree.uint(&[3, other, 1, 1]).unwrap_or(0);
            let id = *e.pick(&[other_id, 0, 1, 9, 10, 254, 255]);
            set(tree, &r(1), Item::array(vec![Item::Uint(0), Item::Uint(id)]));
            log.push(format!("records[{record}] moved to ID {id}"));
        }
        3 if records > 0 => {
            let other_key = tree.text(&[3, other, 0]).unwrap_or("a.v1").to_owned();
            let key = e
                .pick(&[
                    other_key,
                    IC_MEMORY_LEDGER_STABLE_KEY.to_owned(),
                    "ic_memory.other.v1".to_owned(),
                    "ic_memory.ledger.v2".to_owned(),
                    "a.v1".to_owned(),
                ])
                .clone();
            log.push(format!("records[{record}] renamed {key}"));
            set(tree, &r(0), Item::Text(key));
        }
        4 if records > 0 => {
            let governance =
                (0..records).find(|&i| tree.text(&[3, i, 0]) == Some(IC_MEMORY_LEDGER_STABLE_KEY));
            match (governance, e.below(2)) {
                (Some(i), 0) => {
                    if let Some(items) = tree.items_mut(&[3]) {
                        items.remove(i);
                    }
                    log.push("the governance record dropped".into());
                }
                (Some(i), _) => {
                    let label = e.pick(&[Item::Null, Item::Text("Users".into())]).clone();
                    log.push(format!("the governance record relabelled {label:?}"));
                    set(tree, &[3, i, 6], label);
                }
                (None, _) => {}
            }
        }
        5 => {
            let next = current.wrapping_add(1);
            let count = e.pick(&[records as u64, 0, records as u64 + 1]).to_owned();
            if let Some(items) = tree.items_mut(&[4]) {
                items.push(Item::array(vec![
                    Item::Uint(next),
                    Item::Uint(current),
                    Item::Null,
                    Item::Uint(count),
                    Item::Null,
                ]));
            }
            set(tree, &[2], Item::Uint(next));
            if records > 0 && e.chance(50) {
                set(tree, &r(4), Item::Uint(next));
                log.push(format!("records[{record}] seen in it"));
            }
            log.push(format!("generation {next} appended ({count} declarations)"));
        }
        6 if generations > 0 => {
            if let Some(items) = tree.items_mut(&[4]) {
                items.pop();
            }
            set(tree, &[2], Item::Uint(current.wrapping_sub(1)));
            log.push(format!(
                "generation {current} dropped (current {})",
                current.wrapping_sub(1)
            ));
        }
        7 if generations > 0 => {
            let g = e.index(generations);
            let count = *e.pick(&[0, 1, records as u64, records as u64 + 1, u64::from(u32::MAX)]);
            set(tree, &[4, g, 3], Item::Uint(count));
            log.push(format!("generations[{g}].declaration_count = {count}"));
        }
        8 if generations > 0 => {
            let g = e.index(generations);
            let fingerprint = e
                .pick(&[
                    Item::Text(String::new()),
                    Item::Text("\u{1b}[2J\u{1b}[H".into()),
                    Item::Text("f".repeat(257)),
                    Item::Text("f".repeat(256)),
                    Item::Text("\0".into()),
                    Item::Text("x".repeat(1 << 20)),
                ])
                .clone();
            log.push(format!(
                "generations[{g}].runtime_fingerprint = {}",
                short(&fingerprint)
            ));
            set(tree, &[4, g, 2], fingerprint);
        }
        9 if records > 0 => schema_history(tree, record, e, log),
        10 => {
            let field = e.index(2);
            let value = *e.pick(&[0, 2, u64::from(u32::MAX)]);
            set(tree, &[field], Item::Uint(value));
            log.push(format!("{} = {value}", cbor::describe(&[field])));
        }
        _ if records > 1 => {
            if let Some(items) = tree.items_mut(&[3]) {
                items.swap(record, other);
            }
            log.push(format!("records {record} and {other} swapped"));
        }
        _ => int_edge(tree, e, log),
    }
}

fn schema_history(tree: &mut Item, record: usize, e: &mut Entropy, log: &mut MutationLog) {
    let first = tree.uint(&[3, record, 3]).unwrap_or(1);
    let last_seen = tree.uint(&[3, record, 4]).unwrap_or(1);
    let Some(entries) = tree.items_mut(&[3, record, 7]) else {
        return;
    };
    let entry =
        |generation: u64, version: Item| Item::array(vec![Item::Uint(generation), version, Item::Null]);
    match e.below(5) {
        0 => {
            entries.insert(0, entry(first, Item::Null));
            log.push(format!(
                "records[{record}]: an empty schema entry at generation {first} first"
            ));
        }
        1 if !entries.is_empty() => {
            let mut copy = entries[entries.len() - 1].clone();
            if let Item::Array { items, .. } = &mut copy {
                items[0] = Item::Uint(last_seen);
            }
            entries.push(copy);
            log.push(format!(
                "records[{record}]: the last schema entry repeated at {last_seen}"
            ));
        }
        2 if entries.len() > 1 => {
            entries.swap(0, 1);
            log.push(format!("records[{record}]: schema entries 0 and 1 swapped"));
        }
        3 => {
            let generation = *e.pick(&[0, first.saturating_sub(1), last_seen.wrapping_add(1)]);
            entries.push(entry(generation, Item::Uint(7)));
            log.push(format!(
                "records[{record}]: a schema entry at generation {generation}"
            ));
        }
        _ => {
            entries.push(entry(last_seen, Item::Uint(0)));
            log.push(format!("records[{record}]: schema version 0 at {last_seen}"));
        }
    }
}

// ---- the commit store (ID 0) ----------------------------------------------

/// One slot header's fields (docs/FORMAT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotHeader {
    pub(crate) bytes: [u8; SLOT_HEADER_LEN as usize],
}

impl SlotHeader {
    pub(crate) fn read<M: Memory>(id0: &M, slot: usize) -> Self {
        let mut bytes = [0u8; SLOT_HEADER_LEN as usize];
        id0.read(SLOT_HEADER_OFFSETS[slot], &mut bytes);
        Self { bytes }
    }

    pub(crate) fn present(&self) -> bool {
        self.bytes[0] == SLOT_PRESENT
    }

    pub(crate) fn generation(&self) -> u64 {
        u64::from_le_bytes(self.bytes[8..16].try_into().expect("8-byte range"))
    }

    pub(crate) fn offset(&self) -> u64 {
        u64::from_le_bytes(self.bytes[16..24].try_into().expect("8-byte range"))
    }

    pub(crate) fn len(&self) -> u32 {
        u32::from_le_bytes(self.bytes[24..28].try_into().expect("4-byte range"))
    }

    pub(crate) fn stored_checksum(&self) -> u32 {
        u32::from_le_bytes(self.bytes[28..32].try_into().expect("4-byte range"))
    }

    fn set_generation(&mut self, generation: u64) {
        self.bytes[8..16].copy_from_slice(&generation.to_le_bytes());
    }

    fn set_offset(&mut self, offset: u64) {
        self.bytes[16..24].copy_from_slice(&offset.to_le_bytes());
    }

    fn set_len(&mut self, len: u32) {
        self.bytes[24..28].copy_from_slice(&len.to_le_bytes());
    }

    /// The payload the header points at, if it lies inside `id0`.
    pub(crate) fn payload<M: Memory>(&self, id0: &M) -> Option<Vec<u8>> {
        let size = id0.size() * WASM_PAGE_SIZE;
        let end = self.offset().checked_add(u64::from(self.len()))?;
        if end > size || self.len() as usize > MAX_ENCODED_LEDGER_LEN {
            return None;
        }
        let mut payload = vec![0u8; self.len() as usize];
        id0.read(self.offset(), &mut payload);
        Some(payload)
    }

    /// The CRC-32C the format stores: header bytes +1..+28, then the payload.
    pub(crate) fn checksum_of(&self, payload: &[u8]) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(&self.bytes[1..28]), payload)
    }

    /// Writes the header, re-sealing its checksum over the payload it points
    /// at when that payload lies inside the memory.
    fn write<M: Memory>(mut self, id0: &M, slot: usize, reseal: bool, log: &mut MutationLog) {
        if reseal && let Some(payload) = self.payload(id0) {
            let crc = self.checksum_of(&payload);
            self.bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        } else if reseal {
            log.push(format!("slot {slot}: payload out of bounds, checksum left"));
        } else {
            log.push(format!("slot {slot}: checksum not re-sealed"));
        }
        id0.write(SLOT_HEADER_OFFSETS[slot], &self.bytes);
    }
}

/// The high-water mark record of `generation` (docs/FORMAT.md).
pub(crate) fn high_water_record(generation: u64) -> [u8; HIGH_WATER_LEN as usize] {
    let mut record = [0u8; HIGH_WATER_LEN as usize];
    record[..8].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(HIGH_WATER_TAG), &record[..8]);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
    record
}

/// The slot the newest valid-looking header names (the higher generation
/// among present slots), else slot 0.
fn newest_slot<M: Memory>(id0: &M) -> usize {
    let headers = [SlotHeader::read(id0, 0), SlotHeader::read(id0, 1)];
    match (headers[0].present(), headers[1].present()) {
        (true, true) if headers[1].generation() > headers[0].generation() => 1,
        (false, true) => 1,
        _ => 0,
    }
}

/// Rewrites one slot's payload with [`mutate_payload`], at its old offset
/// when it fits there and sometimes past both payloads (growing ID 0), and
/// re-seals the slot; often also makes the header's generation (and the
/// high-water mark) agree with the ledger the new payload decodes to, as a
/// commit would have.
pub(crate) fn rewrite_payload<M: Memory>(id0: &M, e: &mut Entropy, log: &mut MutationLog) {
    let slot = if e.chance(75) {
        newest_slot(id0)
    } else {
        1 - newest_slot(id0)
    };
    let mut header = SlotHeader::read(id0, slot);
    let Some(old) = header.payload(id0) else {
        log.push(format!("slot {slot}: no payload to rewrite"));
        return;
    };
    log.push(format!("slot {slot}: payload rewritten"));
    let payload = mutate_payload(&old, e, log);
    let offset = if payload.len() <= old.len() && e.chance(60) {
        header.offset()
    } else {
        let other = SlotHeader::read(id0, 1 - slot);
        let size = id0.size() * WASM_PAGE_SIZE;
        [header, other]
            .iter()
            .filter_map(|h| h.offset().checked_add(u64::from(h.len())))
            .filter(|&end| end <= size)
            .max()
            .unwrap_or(DATA_OFFSET)
            .max(DATA_OFFSET)
            .next_multiple_of(8)
    };
    let end = offset + payload.len() as u64;
    let pages = end.div_ceil(WASM_PAGE_SIZE);
    if pages > id0.size() && id0.grow(pages - id0.size()) < 0 {
        log.push(format!(
            "slot {slot}: ID 0 cannot grow to {pages} pages; unchanged"
        ));
        return;
    }
    id0.write(offset, &payload);
    header.set_offset(offset);
    header.set_len(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    if let Ok(ledger) = CborLedgerCodec.decode(&payload)
        && ledger.current_generation() != header.generation()
        && e.chance(70)
    {
        let generation = ledger.current_generation();
        log.push(format!(
            "slot {slot}: header generation {generation}, as its ledger says"
        ));
        header.set_generation(generation);
        if e.chance(80) {
            for at in HIGH_WATER_OFFSETS {
                id0.write(at, &high_water_record(generation));
            }
            log.push(format!("high-water mark {generation}"));
        }
    }
    header.write(id0, slot, !e.chance(3), log);
}

/// One change to the commit store's own bytes, re-sealed where a checksum
/// covers them.
pub(crate) fn mutate_store<M: Memory>(id0: &M, e: &mut Entropy, log: &mut MutationLog) {
    let slot = e.index(2);
    let mut header = SlotHeader::read(id0, slot);
    let other = SlotHeader::read(id0, 1 - slot);
    let reseal = !e.chance(8);
    let size = id0.size() * WASM_PAGE_SIZE;
    match e.below(100) {
        0..30 => rewrite_payload(id0, e, log),
        30..40 => {
            let marker = *e.pick(&[0x00, 0xC4, 0xC5, 0xFF, 0x45]);
            id0.write(SLOT_HEADER_OFFSETS[slot], &[marker]);
            log.push(format!("slot {slot}: marker {marker:#04x}"));
        }
        40..50 => {
            let g = header.generation();
            let generation = if e.chance(50) {
                *e.pick(&EDGES)
            } else {
                *e.pick(&[other.generation(), g.wrapping_add(1), g.wrapping_sub(1)])
            };
            header.set_generation(generation);
            log.push(format!("slot {slot}: header generation {generation}"));
            header.write(id0, slot, reseal, log);
        }
        50..58 => {
            if e.chance(50) {
                let offset = *e.pick(&[
                    0,
                    DATA_OFFSET - 1,
                    DATA_OFFSET,
                    other.offset(),
                    header.offset().wrapping_add(1),
                    size.saturating_sub(u64::from(header.len())),
                    size,
                    u64::MAX,
                    SLOT_HEADER_OFFSETS[1],
                ]);
                header.set_offset(offset);
                log.push(format!("slot {slot}: payload offset {offset}"));
            } else {
                let len = *e.pick(&[
                    0,
                    1,
                    header.len().wrapping_sub(1),
                    header.len().wrapping_add(1),
                    MAX_ENCODED_LEDGER_LEN as u32,
                    MAX_ENCODED_LEDGER_LEN as u32 + 1,
                    u32::MAX,
                    other.len(),
                ]);
                header.set_len(len);
                log.push(format!("slot {slot}: payload length {len}"));
            }
            header.write(id0, slot, reseal, log);
        }
        58..61 => {
            let at = 1 + e.index(7);
            header.bytes[at] = 1 + e.below(255) as u8;
            log.push(format!("slot {slot}: reserved byte +{at} set"));
            header.write(id0, slot, reseal, log);
        }
        61..67 => {
            let mut copy = other;
            if e.chance(50) {
                copy.set_generation(copy.generation().wrapping_add(*e.pick(&[0, 1, u64::MAX])));
            }
            log.push(format!(
                "slot {slot}: header copied from slot {} (generation {})",
                1 - slot,
                copy.generation()
            ));
            copy.write(id0, slot, reseal, log);
        }
        67..71 => {
            id0.write(SLOT_HEADER_OFFSETS[slot], &other.bytes);
            id0.write(SLOT_HEADER_OFFSETS[1 - slot], &header.bytes);
            log.push("slot headers swapped".into());
        }
        71..83 => high_water(id0, e, log, [header.generation(), other.generation()]),
        83..90 => {
            let at = e.index(32) as u64;
            let mut byte = [0u8];
            id0.read(at, &mut byte);
            let value = if at == 8 {
                *e.pick(&[0, 2, 255])
            } else {
                byte[0] ^ (1 << e.below(8))
            };
            id0.write(at, &[value]);
            log.push(format!(
                "store header byte {at}: {:#04x} -> {value:#04x}",
                byte[0]
            ));
        }
        90..96 => {
            // The marker of the newest slot lost and both mark copies
            // lowered to match: two independent faults (docs/FORMAT.md says
            // this rollback is not detected), re-sealed.
            let newest = newest_slot(id0);
            let older = SlotHeader::read(id0, 1 - newest);
            id0.write(SLOT_HEADER_OFFSETS[newest], &[0]);
            let mark = if older.present() {
                high_water_record(older.generation())
            } else {
                [0; HIGH_WATER_LEN as usize]
            };
            for at in HIGH_WATER_OFFSETS {
                id0.write(at, &mark);
            }
            log.push(format!(
                "slot {newest} (newest) marked absent and the high-water mark lowered to match"
            ));
        }
        _ => {
            let keep = e.index(9);
            let len = size.min(1 << 18).saturating_sub(keep as u64);
            id0.write(keep as u64, &vec![0u8; len as usize]);
            log.push(format!("ID 0 zeroed after its first {keep} bytes ({len} bytes)"));
        }
    }
}

fn high_water<M: Memory>(id0: &M, e: &mut Entropy, log: &mut MutationLog, generations: [u64; 2]) {
    let copy = e.index(2);
    let highest = generations[0].max(generations[1]);
    match e.below(4) {
        0 | 1 => {
            let generation = *e.pick(&[
                0,
                highest.wrapping_sub(1),
                highest,
                highest.wrapping_add(1),
                u64::MAX,
                generations[0].min(generations[1]),
            ]);
            id0.write(HIGH_WATER_OFFSETS[copy], &high_water_record(generation));
            log.push(format!("high-water copy {copy}: {generation}, re-sealed"));
        }
        2 => {
            let at = HIGH_WATER_OFFSETS[copy] + e.below(HIGH_WATER_LEN);
            let mut byte = [0u8];
            id0.read(at, &mut byte);
            id0.write(at, &[byte[0] ^ (1 << e.below(8))]);
            log.push(format!("high-water copy {copy}: a bit flipped, not re-sealed"));
        }
        _ => {
            for at in HIGH_WATER_OFFSETS {
                id0.write(at, &[0; HIGH_WATER_LEN as usize]);
            }
            log.push("high-water mark zeroed (as in a store written before it)".into());
        }
    }
}

// ---- the raw MemoryManager image -------------------------------------------

/// One change to the raw image: a MemoryManager header field, a bucket-table
/// entry, the size. Nothing here is covered by a checksum, so nothing is
/// re-sealed. Swapping two allocated entries of different owners is left
/// out on purpose: it leaves a consistent header that no reader could tell
/// from the original (there is no checksum), so it judges nothing. Returns
/// whether the change was to the header's layout (count, bucket size,
/// sizes, owners, image size).
pub(crate) fn mutate_image<M: Memory>(
    raw: &M,
    resize: impl FnOnce(u64),
    e: &mut Entropy,
    log: &mut MutationLog,
) -> bool {
    let size = raw.size();
    if size * WASM_PAGE_SIZE < MM_BUCKET_TABLE_OFFSET + MM_MAX_BUCKETS as u64 {
        // An earlier mutation cut the header off: only the size is left.
        let pages = *e.pick(&[0, 1, 2, 129]);
        resize(pages);
        log.push(format!("image resized from {size} to {pages} pages"));
        return true;
    }
    let read_u16 = |at: u64| {
        let mut b = [0u8; 2];
        raw.read(at, &mut b);
        u16::from_le_bytes(b)
    };
    let read_u64 = |at: u64| {
        let mut b = [0u8; 8];
        raw.read(at, &mut b);
        u64::from_le_bytes(b)
    };
    let allocated = read_u16(4);
    let bucket = read_u16(6);
    let in_use: Vec<u8> = (0..=254u8)
        .filter(|&id| read_u64(MM_SIZES_OFFSET + 8 * u64::from(id)) > 0)
        .collect();
    let some_id = |e: &mut Entropy| {
        if e.chance(80) && !in_use.is_empty() {
            *e.pick(&in_use)
        } else {
            *e.pick(&[0, 1, 9, 10, 100, 254])
        }
    };
    let choice = e.below(100);
    // The header's layout: the count, the bucket size, sizes, owners, the
    // image's size. Two such changes can agree with each other (nothing
    // checksums the header), which the caller needs to know.
    let layout = matches!(choice, 8..74 | 86..96);
    match choice {
        0..5 => {
            let at = e.index(3) as u64;
            let mut byte = [0u8];
            raw.read(at, &mut byte);
            raw.write(at, &[byte[0] ^ (1 << e.below(8))]);
            log.push(format!("MemoryManager magic byte {at} flipped"));
        }
        5..8 => {
            let version = *e.pick(&[0u8, 2, 255]);
            raw.write(3, &[version]);
            log.push(format!("MemoryManager layout version {version}"));
        }
        8..20 => {
            let value = *e.pick(&[
                0,
                allocated.wrapping_sub(1),
                allocated.wrapping_add(1),
                allocated.wrapping_add(2),
                allocated.wrapping_add(1000),
                32_767,
                32_768,
                32_769,
                u16::MAX,
            ]);
            raw.write(4, &value.to_le_bytes());
            log.push(format!("MemoryManager allocated buckets {allocated} -> {value}"));
        }
        20..27 => {
            let value = *e.pick(&[
                0,
                1,
                64,
                127,
                129,
                256,
                u16::MAX,
                bucket.wrapping_mul(2),
                bucket / 2,
            ]);
            raw.write(6, &value.to_le_bytes());
            log.push(format!("MemoryManager bucket size {bucket} -> {value} pages"));
        }
        27..50 => {
            let id = some_id(e);
            let at = MM_SIZES_OFFSET + 8 * u64::from(id);
            let old = read_u64(at);
            let b = u64::from(bucket);
            let value = *e.pick(&[
                0,
                old.wrapping_sub(1),
                old.wrapping_add(1),
                old.wrapping_add(b),
                old.saturating_mul(2),
                b,
                b + 1,
                u64::MAX,
                1 << 40,
            ]);
            raw.write(at, &value.to_le_bytes());
            log.push(format!("MemoryManager size of ID {id}: {old} -> {value} pages"));
        }
        50..66 => {
            let index = e.below(u64::from(allocated) + 2).min(MM_MAX_BUCKETS as u64 - 1);
            let owner = if e.chance(25) { 255 } else { some_id(e) };
            raw.write(MM_BUCKET_TABLE_OFFSET + index, &[owner]);
            log.push(format!("MemoryManager bucket {index} owned by {owner}"));
        }
        66..74 => {
            let owner = some_id(e);
            let index = u64::from(allocated).min(MM_MAX_BUCKETS as u64 - 1);
            raw.write(MM_BUCKET_TABLE_OFFSET + index, &[owner]);
            log.push(format!(
                "MemoryManager torn allocation: bucket {index} (past the count) owned by {owner}"
            ));
        }
        74..78 => {
            let at = 8 + e.below(32);
            raw.write(at, &[1 + e.below(255) as u8]);
            log.push(format!("MemoryManager reserved byte {at} set"));
        }
        78..86 => {
            let at = e.below(MM_BUCKET_TABLE_OFFSET + MM_MAX_BUCKETS as u64);
            let mut byte = [0u8];
            raw.read(at, &mut byte);
            raw.write(at, &[byte[0] ^ (1 << e.below(8))]);
            log.push(format!("MemoryManager header byte {at}: a bit flipped"));
        }
        86..96 => {
            let b = u64::from(bucket);
            let pages = *e.pick(&[
                0,
                1,
                size.saturating_sub(1),
                size + 1,
                size + b,
                1 + b * u64::from(allocated.saturating_sub(1)),
                1 + b,
            ]);
            resize(pages);
            log.push(format!("image resized from {size} to {pages} pages"));
        }
        _ => {
            let at = e.below(WASM_PAGE_SIZE - 16);
            let bytes: Vec<u8> = (0..16).map(|_| e.below(256) as u8).collect();
            raw.write(at, &bytes);
            log.push(format!("16 random bytes over the header page at {at}"));
        }
    }
    layout
}
