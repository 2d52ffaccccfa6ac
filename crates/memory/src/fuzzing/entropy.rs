//! Where a case's choices come from: a seed (the campaign and the property
//! tests, so every case replays from `(seed, case)`) or a fuzzer's bytes
//! (cargo-fuzz, so its coverage feedback steers the choices).
//!
//! SplitMix64 is used instead of a `rand` generator because the library
//! must not depend on one for a test-only module, the stream must never
//! change under a dependency update (recorded reproducers name seeds), and
//! the generator is the published five-line SplitMix64 (Steele, Lea, Flood
//! 2014), not a design of our own.

/// A source of choices. Never fails: a fuzzer's bytes, once used up, read
/// as zeros.
#[derive(Clone, Debug)]
pub struct Entropy {
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    Seeded(u64),
    Bytes { data: Vec<u8>, position: usize },
}

impl Entropy {
    /// The deterministic stream of `seed`.
    pub fn from_seed(seed: u64) -> Self {
        Self {
            source: Source::Seeded(seed),
        }
    }

    /// Choices read from `data` (a fuzzer's input), then zeros.
    pub fn from_bytes(data: &[u8]) -> Self {
        Self {
            source: Source::Bytes {
                data: data.to_vec(),
                position: 0,
            },
        }
    }

    /// A value below `bound` (0 when `bound` is 0). Reads only as many of a
    /// fuzzer's bytes as the bound needs, so small choices cost one byte.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound <= 1 {
            return 0;
        }
        match &mut self.source {
            Source::Seeded(state) => splitmix64(state) % bound,
            Source::Bytes { data, position } => {
                let width = (64 - (bound - 1).leading_zeros()).div_ceil(8) as usize;
                let mut value = 0u64;
                for _ in 0..width {
                    let byte = data.get(*position).copied().unwrap_or(0);
                    *position += 1;
                    value = (value << 8) | u64::from(byte);
                }
                value % bound
            }
        }
    }

    /// A full 64-bit value.
    pub fn u64(&mut self) -> u64 {
        match &mut self.source {
            Source::Seeded(state) => splitmix64(state),
            Source::Bytes { .. } => (self.below(1 << 32) << 32) | self.below(1 << 32),
        }
    }

    /// An index into a collection of `len` items (0 for an empty one).
    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).expect("below a usize")
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items`, which must not be empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

/// The seed of case `case` of a campaign seeded with `seed`: independent
/// streams per case, so a case replays alone and threads may share cases
/// out in any order.
pub fn case_seed(seed: u64, case: u64) -> u64 {
    let mut state = seed ^ case.wrapping_mul(0xD1B5_4A32_D192_ED03);
    splitmix64(&mut state)
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_choices_and_bytes_are_read_big_endian_then_as_zeros() {
        let draw = |e: &mut Entropy| (0..8).map(|_| e.below(1000)).collect::<Vec<_>>();
        assert_eq!(draw(&mut Entropy::from_seed(7)), draw(&mut Entropy::from_seed(7)));
        assert_ne!(draw(&mut Entropy::from_seed(7)), draw(&mut Entropy::from_seed(8)));
        let mut bytes = Entropy::from_bytes(&[5, 0x01, 0x02]);
        assert_eq!(bytes.below(10), 5);
        assert_eq!(bytes.below(1000), 0x0102);
        assert_eq!(bytes.below(10), 0, "used-up input reads as zeros");
        // SplitMix64's published first output for seed 0.
        assert_eq!(splitmix64(&mut 0), 0xE220_A839_7B1D_CDAF);
    }
}
