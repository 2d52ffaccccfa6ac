//! The direct handoff of a planned move: the old owner sends the sealed
//! snapshot straight to the new owner while it stores it, so that the new
//! owner has it checked and opened by the time the record names it, instead
//! of reading it back from the object store after.
//!
//! A handoff is a shortcut, never a source of truth. Its frames come from
//! anyone who may publish on `hf.C.handoff.<node>`: the new owner opens what
//! arrived (the seal needs the cluster PSK) and starts from it only when its
//! object name, length, SHA-256 and seal place equal what the signed
//! ownership record names ([`OpenedSnapshot::check_against`]), the check a
//! snapshot read from the object store passes. A lost or reordered frame, a
//! forged one, a handoff for a move whose compare-and-set failed: each is
//! dropped, and the new owner reads the object store as it would without a
//! handoff. What this module keeps is bounded ([`MAX_HANDOFF_BYTES`] per
//! handoff, [`MAX_KEPT`] assembling and [`MAX_KEPT`] arrived, each for at
//! most [`KEPT_FOR`]).
//!
//! This module never talks to the server and never starts a daemon: the
//! node sends the frames, feeds what it receives to an [`Inbox`] and opens
//! what completes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::ClusterError;
use crate::layout::{origin_key, parse_origin_key};
use crate::lock;
use crate::restore::{OpenedSnapshot, SealedPlace};

/// The most payload bytes in one frame: under NATS's default 1 MiB
/// `max_payload`, with room for the headers.
pub(crate) const FRAME_BYTES: usize = 512 * 1024;

/// Larger snapshots are not handed over (the new owner reads the store):
/// the handoff's gain is the pause of small states, and what a node keeps
/// for handoffs must stay bounded.
pub(crate) const MAX_HANDOFF_BYTES: u64 = 32 * 1024 * 1024;

/// How many handoffs are kept assembling, and how many arrived, at once;
/// beyond it the oldest is dropped.
pub(crate) const MAX_KEPT: usize = 4;

/// How long an arrived handoff waits for the record that names it.
pub(crate) const KEPT_FOR: Duration = Duration::from_secs(30);

const ORIGIN: &str = "Hf-Origin";
const OBJECT: &str = "Hf-Object";
const SEALED_EPOCH: &str = "Hf-Sealed-Epoch";
const INPUT_SEQ: &str = "Hf-Input-Seq";
const TOTAL: &str = "Hf-Total";
const OFFSET: &str = "Hf-Offset";

/// The frames that hand over `sealed`, daemon `origin`'s snapshot sealed at
/// `place`, in the order they must arrive: headers and a slice of
/// `sealed` each (no copy). None when `sealed` is empty or larger than
/// [`MAX_HANDOFF_BYTES`].
pub(crate) fn frames(origin: u64, place: &SealedPlace, sealed: &Bytes) -> Vec<(HeaderMap, Bytes)> {
    if sealed.is_empty() || sealed.len() as u64 > MAX_HANDOFF_BYTES {
        return Vec::new();
    }
    (0..sealed.len())
        .step_by(FRAME_BYTES)
        .map(|offset| {
            let mut headers = HeaderMap::new();
            headers.insert(ORIGIN, origin_key(origin).as_str());
            headers.insert(OBJECT, place.object.as_str());
            headers.insert(SEALED_EPOCH, place.sealed_epoch.to_string().as_str());
            headers.insert(INPUT_SEQ, place.input_seq.to_string().as_str());
            headers.insert(TOTAL, sealed.len().to_string().as_str());
            headers.insert(OFFSET, offset.to_string().as_str());
            let end = (offset + FRAME_BYTES).min(sealed.len());
            (headers, sealed.slice(offset..end))
        })
        .collect()
}

/// A handoff whose last frame arrived: the node opens `sealed` and sends
/// the outcome on `opened`, where [`Inbox::take`] waits for it.
pub(crate) struct Complete {
    /// The daemon it is for.
    pub origin: u64,
    /// Where its frames say it was sealed.
    pub place: SealedPlace,
    /// The sealed bytes.
    pub sealed: Vec<u8>,
    /// Where the outcome of opening it goes.
    pub opened: oneshot::Sender<Result<OpenedSnapshot, ClusterError>>,
}

/// The handoffs a node has received: those still assembling, and those
/// complete (being opened, or opened) until the record naming them is
/// seen.
#[derive(Default)]
pub(crate) struct Inbox {
    assembling: Mutex<HashMap<u64, Assembly>>,
    arrived: Mutex<HashMap<u64, Arrival>>,
}

struct Assembly {
    place: SealedPlace,
    total: usize,
    sealed: Vec<u8>,
    started: Instant,
}

struct Arrival {
    object: String,
    at: Instant,
    opened: oneshot::Receiver<Result<OpenedSnapshot, ClusterError>>,
}

/// One frame's headers, parsed.
struct FrameHeader {
    origin: u64,
    place: SealedPlace,
    total: usize,
    offset: usize,
}

impl FrameHeader {
    fn parse(headers: Option<&HeaderMap>) -> Option<Self> {
        let headers = headers?;
        let text = |name: &str| headers.get(name).map(|value| value.as_str());
        let number = |name: &str| text(name)?.parse::<u64>().ok();
        let total = number(TOTAL)?;
        if total == 0 || total > MAX_HANDOFF_BYTES {
            return None;
        }
        Some(Self {
            origin: parse_origin_key(text(ORIGIN)?)?,
            place: SealedPlace {
                object: text(OBJECT)?.to_owned(),
                sealed_epoch: number(SEALED_EPOCH)?,
                input_seq: number(INPUT_SEQ)?,
            },
            total: usize::try_from(total).ok()?,
            offset: usize::try_from(number(OFFSET)?).ok()?,
        })
    }
}

impl Inbox {
    /// Takes in one received frame. Returns the handoff it completed, if
    /// it was the last; a frame that is malformed, out of order or past its
    /// handoff's length is dropped, with the handoff it belonged to.
    pub(crate) fn receive(&self, headers: Option<&HeaderMap>, chunk: &[u8]) -> Option<Complete> {
        let header = FrameHeader::parse(headers)?;
        let mut assembling = lock(&self.assembling);
        if header.offset == 0 {
            if assembling.len() >= MAX_KEPT && !assembling.contains_key(&header.origin) {
                drop_oldest(&mut assembling, |assembly| assembly.started);
            }
            assembling.insert(
                header.origin,
                Assembly {
                    place: header.place.clone(),
                    total: header.total,
                    sealed: Vec::with_capacity(header.total),
                    started: Instant::now(),
                },
            );
        }
        let assembly = assembling.get_mut(&header.origin)?;
        let fits = assembly.place == header.place
            && assembly.total == header.total
            && assembly.sealed.len() == header.offset
            && header
                .total
                .checked_sub(header.offset)
                .is_some_and(|room| chunk.len() <= room);
        if !fits || chunk.is_empty() {
            assembling.remove(&header.origin);
            return None;
        }
        assembly.sealed.extend_from_slice(chunk);
        if assembly.sealed.len() < assembly.total {
            return None;
        }
        let assembly = assembling
            .remove(&header.origin)
            .expect("the assembly was just found under this origin");
        drop(assembling);
        let (opened, waiting) = oneshot::channel();
        let mut arrived = lock(&self.arrived);
        arrived.retain(|_, arrival| arrival.at.elapsed() < KEPT_FOR);
        if arrived.len() >= MAX_KEPT && !arrived.contains_key(&header.origin) {
            drop_oldest(&mut arrived, |arrival| arrival.at);
        }
        arrived.insert(
            header.origin,
            Arrival {
                object: assembly.place.object.clone(),
                at: Instant::now(),
                opened: waiting,
            },
        );
        Some(Complete {
            origin: header.origin,
            place: assembly.place,
            sealed: assembly.sealed,
            opened,
        })
    }

    /// The handoff of daemon `origin`'s snapshot `object`, opened, if one
    /// arrived (waiting at most `wait` for its opening to finish). It is
    /// removed: a handoff is used at most once. `None` when there is none,
    /// it is too old, or its opening did not finish in time; the caller
    /// then reads the object store. An opened handoff must still pass
    /// [`OpenedSnapshot::check_against`] the record.
    pub(crate) async fn take(
        &self,
        origin: u64,
        object: &str,
        wait: Duration,
    ) -> Option<Result<OpenedSnapshot, ClusterError>> {
        let arrival = {
            let mut arrived = lock(&self.arrived);
            if arrived.get(&origin)?.object != object {
                return None;
            }
            arrived.remove(&origin)?
        };
        if arrival.at.elapsed() >= KEPT_FOR {
            return None;
        }
        tokio::time::timeout(wait, arrival.opened).await.ok()?.ok()
    }
}

fn drop_oldest<V>(map: &mut HashMap<u64, V>, at: impl Fn(&V) -> Instant) {
    if let Some(oldest) = map.iter().min_by_key(|(_, value)| at(value)).map(|(key, _)| *key) {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(object: &str) -> SealedPlace {
        SealedPlace {
            object: object.into(),
            sealed_epoch: 3,
            input_seq: 9,
        }
    }

    fn sealed(len: usize) -> Bytes {
        (0..len).map(|at| (at % 251) as u8).collect::<Vec<u8>>().into()
    }

    /// Feeds `frames` to `inbox` and returns the handoffs they completed.
    fn feed(inbox: &Inbox, frames: &[(HeaderMap, Bytes)]) -> Vec<Complete> {
        frames
            .iter()
            .filter_map(|(headers, chunk)| inbox.receive(Some(headers), chunk))
            .collect()
    }

    #[test]
    fn frames_in_order_reassemble_the_exact_bytes() {
        let inbox = Inbox::default();
        let bytes = sealed(2 * FRAME_BYTES + 17);
        let frames = frames(7, &place("o.1"), &bytes);
        assert_eq!(frames.len(), 3);
        let complete = feed(&inbox, &frames);
        assert_eq!(complete.len(), 1);
        assert_eq!(complete[0].origin, 7);
        assert_eq!(complete[0].place, place("o.1"));
        assert_eq!(complete[0].sealed, bytes.as_ref());
    }

    #[test]
    fn a_lost_or_reordered_frame_drops_the_handoff() {
        let inbox = Inbox::default();
        let frames = frames(7, &place("o.1"), &sealed(2 * FRAME_BYTES + 17));
        // Lost: the last frame's offset no longer follows.
        assert!(feed(&inbox, &[frames[0].clone(), frames[2].clone()]).is_empty());
        // Reordered.
        assert!(feed(&inbox, &[frames[0].clone(), frames[2].clone(), frames[1].clone()]).is_empty());
        // The handoff was dropped with its bad frame: the rest completes nothing.
        assert!(feed(&inbox, &frames[1..]).is_empty());
        // A fresh start still completes.
        assert_eq!(feed(&inbox, &frames).len(), 1);
    }

    #[test]
    fn frames_of_another_handoff_in_between_drop_the_first() {
        let inbox = Inbox::default();
        let first = frames(7, &place("o.1"), &sealed(FRAME_BYTES + 1));
        let second = frames(7, &place("o.2"), &sealed(FRAME_BYTES + 1));
        // The second starts (offset 0) and replaces the first; the first's
        // tail then does not fit it.
        assert!(feed(&inbox, &[first[0].clone(), second[0].clone(), first[1].clone()]).is_empty());
    }

    #[test]
    fn malformed_or_oversized_frames_are_dropped() {
        let inbox = Inbox::default();
        let (good, chunk) = frames(7, &place("o.1"), &sealed(100)).remove(0);
        assert!(inbox.receive(None, &chunk).is_none());
        for (name, value) in [
            (TOTAL, "0"),
            (TOTAL, "33554433"),
            (TOTAL, "x"),
            (ORIGIN, "7"),
            (OFFSET, "-1"),
        ] {
            let mut headers = good.clone();
            headers.insert(name, value);
            assert!(inbox.receive(Some(&headers), &chunk).is_none(), "{name}={value}");
        }
        // A chunk longer than the total it announces.
        let mut headers = good.clone();
        headers.insert(TOTAL, "99");
        assert!(inbox.receive(Some(&headers), &chunk).is_none());
        // Nothing is sent for a snapshot past the limit.
        assert!(
            frames(
                7,
                &place("o"),
                &Bytes::from(vec![0; MAX_HANDOFF_BYTES as usize + 1])
            )
            .is_empty()
        );
    }

    #[test]
    fn at_most_max_kept_handoffs_are_kept_and_the_oldest_goes_first() {
        let inbox = Inbox::default();
        for origin in 0..=MAX_KEPT as u64 {
            let completed = feed(&inbox, &frames(origin, &place("o"), &sealed(10)));
            assert_eq!(completed.len(), 1);
        }
        let arrived = lock(&inbox.arrived);
        assert_eq!(arrived.len(), MAX_KEPT);
        assert!(!arrived.contains_key(&0), "the oldest was dropped");
    }

    proptest::proptest! {
        /// Structure-aware: valid frames of a three-frame handoff, one
        /// header of one frame set to another number or to text, and the
        /// frame's chunk cut. The inbox never panics, and whatever it
        /// completes is exactly as long as its frames announced, in one
        /// piece per origin.
        #[test]
        fn mutated_frames_never_panic_and_complete_only_whole_handoffs(
            frame in 0usize..3,
            header in 0usize..6,
            number in proptest::num::u64::ANY,
            as_text in proptest::bool::ANY,
            cut in 0usize..FRAME_BYTES,
        ) {
            let inbox = Inbox::default();
            let bytes = sealed(2 * FRAME_BYTES + 17);
            let mut frames = frames(7, &place("o.1"), &bytes);
            let name = [ORIGIN, OBJECT, SEALED_EPOCH, INPUT_SEQ, TOTAL, OFFSET][header];
            let value = if as_text { format!("{number:x}z") } else { number.to_string() };
            frames[frame].0.insert(name, value.as_str());
            let length = frames[frame].1.len();
            frames[frame].1.truncate(length.saturating_sub(cut));
            let announced: Vec<usize> = frames
                .iter()
                .filter_map(|(headers, _)| headers.get(TOTAL)?.as_str().parse().ok())
                .collect();
            for complete in feed(&inbox, &frames) {
                proptest::prop_assert!(announced.contains(&complete.sealed.len()));
                if cut == 0 && complete.sealed.len() == bytes.len() {
                    proptest::prop_assert_eq!(&complete.sealed[..], bytes.as_ref());
                }
            }
        }
    }

    #[tokio::test]
    async fn a_handoff_is_taken_once_and_only_for_its_object() {
        let inbox = Inbox::default();
        let complete = feed(&inbox, &frames(7, &place("o.1"), &sealed(10))).remove(0);
        let refusal = ClusterError::BadSnapshot {
            origin: 7,
            object: "o.1".into(),
            problem: "test".into(),
        };
        assert!(complete.opened.send(Err(refusal)).is_ok());
        let wait = Duration::from_millis(10);
        assert!(inbox.take(7, "o.2", wait).await.is_none(), "another object");
        assert!(matches!(
            inbox.take(7, "o.1", wait).await,
            Some(Err(ClusterError::BadSnapshot { .. }))
        ));
        assert!(inbox.take(7, "o.1", wait).await.is_none(), "taken once");
    }

    #[tokio::test]
    async fn an_opening_that_does_not_finish_in_time_is_given_up() {
        let inbox = Inbox::default();
        let complete = feed(&inbox, &frames(7, &place("o.1"), &sealed(10))).remove(0);
        assert!(inbox.take(7, "o.1", Duration::from_millis(5)).await.is_none());
        drop(complete);
    }
}
