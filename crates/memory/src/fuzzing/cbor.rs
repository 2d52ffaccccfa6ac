//! A CBOR item tree for mutating ledger payloads by structure.
//!
//! Parsing uses minicbor (only the item kinds the ledger format uses:
//! unsigned integers, text, definite arrays, null); anything else makes the
//! parse fail and the mutator falls back to bytes. Encoding writes each head
//! in its shortest form unless a mutation asked for another one — a lying
//! count, a wider head — which is exactly what the decoder must refuse.
//! Nothing here judges what the bytes mean.

use minicbor::Decoder;
use minicbor::data::Type;

/// One CBOR item, as the mutator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// Major type 0.
    Uint(u64),
    /// Major type 3 (valid UTF-8; other bytes go through `Raw`).
    Text(String),
    /// Major type 4; `declared` overrides the count written in the head.
    Array { items: Vec<Self>, declared: Option<u64> },
    /// Simple value 22.
    Null,
    /// Bytes written as they are (a wide head, invalid UTF-8, a lying
    /// length): the item the decoder must refuse.
    Raw(Vec<u8>),
}

/// The position of an item: child indices from the root.
pub(crate) type Path = Vec<usize>;

impl Item {
    /// An array with its true count.
    pub(crate) fn array(items: Vec<Self>) -> Self {
        Self::Array {
            items,
            declared: None,
        }
    }

    /// The item at `path`.
    pub(crate) fn get(&self, path: &[usize]) -> Option<&Self> {
        path.iter().try_fold(self, |item, &index| match item {
            Self::Array { items, .. } => items.get(index),
            _ => None,
        })
    }

    /// The item at `path`, mutably.
    pub(crate) fn get_mut(&mut self, path: &[usize]) -> Option<&mut Self> {
        path.iter().try_fold(self, |item, &index| match item {
            Self::Array { items, .. } => items.get_mut(index),
            _ => None,
        })
    }

    /// The items of the array at `path`.
    pub(crate) fn items_mut(&mut self, path: &[usize]) -> Option<&mut Vec<Self>> {
        match self.get_mut(path)? {
            Self::Array { items, .. } => Some(items),
            _ => None,
        }
    }

    /// The unsigned integer at `path`.
    pub(crate) fn uint(&self, path: &[usize]) -> Option<u64> {
        match self.get(path)? {
            Self::Uint(value) => Some(*value),
            _ => None,
        }
    }

    /// The text at `path`.
    pub(crate) fn text(&self, path: &[usize]) -> Option<&str> {
        match self.get(path)? {
            Self::Text(text) => Some(text),
            _ => None,
        }
    }

    /// Every path in the tree, parents before children.
    pub(crate) fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut stack = vec![Vec::new()];
        while let Some(path) = stack.pop() {
            if let Some(Self::Array { items, .. }) = self.get(&path) {
                for index in (0..items.len()).rev() {
                    let mut child = path.clone();
                    child.push(index);
                    stack.push(child);
                }
            }
            out.push(path);
        }
        out
    }
}

/// Parses `bytes` as exactly one item of the kinds the ledger uses.
pub(crate) fn parse(bytes: &[u8]) -> Option<Item> {
    let mut decoder = Decoder::new(bytes);
    let item = parse_item(&mut decoder, 0)?;
    (decoder.position() == bytes.len()).then_some(item)
}

/// The ledger nests five arrays deep; anything deeper is not a ledger.
const MAX_DEPTH: usize = 8;

fn parse_item(decoder: &mut Decoder<'_>, depth: usize) -> Option<Item> {
    if depth > MAX_DEPTH {
        return None;
    }
    Some(match decoder.datatype().ok()? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => Item::Uint(decoder.u64().ok()?),
        Type::String => Item::Text(decoder.str().ok()?.to_owned()),
        Type::Null => {
            decoder.null().ok()?;
            Item::Null
        }
        Type::Array => {
            let count = decoder.array().ok()??;
            // Each item takes at least one byte: a count beyond the input is
            // not parsed (and never preallocated).
            if count > (decoder.input().len() - decoder.position()) as u64 {
                return None;
            }
            let items = (0..count)
                .map(|_| parse_item(decoder, depth + 1))
                .collect::<Option<Vec<_>>>()?;
            Item::array(items)
        }
        _ => return None,
    })
}

/// Appends the encoding of `item`.
pub(crate) fn encode(item: &Item, out: &mut Vec<u8>) {
    match item {
        Item::Uint(value) => head(0, *value, out),
        Item::Text(text) => {
            head(3, text.len() as u64, out);
            out.extend_from_slice(text.as_bytes());
        }
        Item::Array { items, declared } => {
            head(4, declared.unwrap_or(items.len() as u64), out);
            for item in items {
                encode(item, out);
            }
        }
        Item::Null => out.push(0xf6),
        Item::Raw(bytes) => out.extend_from_slice(bytes),
    }
}

/// The encoding of `item`.
pub(crate) fn to_bytes(item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    encode(item, &mut out);
    out
}

/// Appends the shortest head of major type `major` with `argument`.
pub(crate) fn head(major: u8, argument: u64, out: &mut Vec<u8>) {
    let width = match argument {
        0..=23 => 0,
        24..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    };
    wide_head(major, argument, width, out);
}

/// Appends a head of major type `major` whose argument takes `width` bytes
/// (0 for an argument below 24 inside the first byte, else 1, 2, 4 or 8),
/// truncating the argument to that width.
pub(crate) fn wide_head(major: u8, argument: u64, width: usize, out: &mut Vec<u8>) {
    let major = major << 5;
    match width {
        0 => out.push(major | (argument.min(23) as u8)),
        1 => out.extend_from_slice(&[major | 24, argument as u8]),
        2 => {
            out.push(major | 25);
            out.extend_from_slice(&(argument as u16).to_be_bytes());
        }
        4 => {
            out.push(major | 26);
            out.extend_from_slice(&(argument as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&argument.to_be_bytes());
        }
    }
}

/// A person's name for the ledger field at `path` (docs/FORMAT.md's
/// names), used in the mutation log.
pub(crate) fn describe(path: &[usize]) -> String {
    const LEDGER: [&str; 5] = [
        "schema_version",
        "physical_format_id",
        "current_generation",
        "records",
        "generations",
    ];
    const RECORD: [&str; 8] = [
        "stable_key",
        "slot",
        "state",
        "first_generation",
        "last_seen_generation",
        "retired_generation",
        "label",
        "schema_history",
    ];
    const GENERATION: [&str; 5] = [
        "generation",
        "parent",
        "runtime_fingerprint",
        "declaration_count",
        "committed_at",
    ];
    const SCHEMA: [&str; 3] = ["generation", "schema_version", "schema_fingerprint"];
    let name = |names: &[&str], index: usize| {
        names
            .get(index)
            .map_or_else(|| format!("[{index}]"), |name| (*name).to_owned())
    };
    match path {
        [] => "ledger".into(),
        [field] => name(&LEDGER, *field),
        [3, record] => format!("records[{record}]"),
        [3, record, 1, rest @ ..] => format!("records[{record}].slot{}", indices(rest)),
        [3, record, 7, entry] => format!("records[{record}].schema_history[{entry}]"),
        [3, record, 7, entry, field, rest @ ..] => format!(
            "records[{record}].schema_history[{entry}].{}{}",
            name(&SCHEMA, *field),
            indices(rest)
        ),
        [3, record, field, rest @ ..] => {
            format!("records[{record}].{}{}", name(&RECORD, *field), indices(rest))
        }
        [4, generation] => format!("generations[{generation}]"),
        [4, generation, field, rest @ ..] => format!(
            "generations[{generation}].{}{}",
            name(&GENERATION, *field),
            indices(rest)
        ),
        [field, rest @ ..] => format!("{}{}", name(&LEDGER, *field), indices(rest)),
    }
}

fn indices(path: &[usize]) -> String {
    path.iter().map(|index| format!("[{index}]")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CborLedgerCodec, LEDGER_ENVELOPE_LEN, LedgerCodec};
    use crate::ledger::AllocationLedger;

    #[test]
    fn a_ledger_body_parses_and_re_encodes_to_the_same_bytes() {
        let bytes = CborLedgerCodec.encode(&AllocationLedger::genesis());
        let body = &bytes[LEDGER_ENVELOPE_LEN..];
        let tree = parse(body).expect("a ledger body parses");
        assert_eq!(to_bytes(&tree), body);
        assert_eq!(tree.uint(&[2]), Some(0));
        assert_eq!(
            describe(&[3, 2, 7, 1, 2]),
            "records[2].schema_history[1].schema_fingerprint"
        );
        assert_eq!(describe(&[4, 0, 2]), "generations[0].runtime_fingerprint");
    }

    #[test]
    fn heads_are_shortest_unless_widened_and_a_count_can_lie() {
        let mut out = Vec::new();
        head(0, 24, &mut out);
        wide_head(0, 1, 2, &mut out);
        encode(
            &Item::Array {
                items: vec![Item::Null],
                declared: Some(3),
            },
            &mut out,
        );
        assert_eq!(out, [0x18, 24, 0x19, 0, 1, 0x83, 0xf6]);
        assert_eq!(parse(&[0x83, 0xf6]), None, "a count beyond the input");
        assert_eq!(parse(&[0xf6, 0xf6]), None, "trailing bytes");
    }
}
