//! Which node a daemon belongs on: rendezvous (highest random weight)
//! hashing over the live nodes that can host its kind.
//!
//! Every node computes the same answer from the same live set, so failover
//! needs no election: the chosen node claims, the others leave it alone, and
//! the compare-and-set on the ownership record settles any disagreement
//! about the live set. When one node joins or leaves, only the daemons whose
//! best node changed move. This module is pure: it never talks to the engine.

use blake2::{Blake2s256, Digest};

/// The score of `node` for `origin`; the highest score wins.
pub fn score(origin: u64, node: &str) -> u64 {
    let mut hasher = Blake2s256::new();
    hasher.update(origin.to_be_bytes());
    hasher.update(node.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The best of `candidates` for `origin`, or `None` when there are none.
pub fn choose<'a>(origin: u64, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .max_by_key(|node| (score(origin, node), *node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_does_not_depend_on_the_order_of_candidates() {
        let nodes = ["a", "b", "c", "d"];
        for origin in 0..200 {
            let forward = choose(origin, nodes);
            let backward = choose(origin, nodes.iter().rev().copied());
            assert_eq!(forward, backward);
        }
        assert_eq!(choose(1, []), None);
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_daemons() {
        let before = ["a", "b", "c"];
        let after = ["a", "b"];
        let mut moved = 0;
        for origin in 0..300 {
            let was = choose(origin, before).expect("nodes");
            let is = choose(origin, after).expect("nodes");
            if was != "c" {
                assert_eq!(was, is, "daemon {origin} moved though its node stayed");
            } else {
                moved += 1;
            }
        }
        // About a third of the daemons lived on c.
        assert!((60..=140).contains(&moved), "{moved}");
    }
}
