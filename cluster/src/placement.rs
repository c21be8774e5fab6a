//! Where things live: rendezvous (highest random weight) hashing.
//!
//! Every node gets a score for a key, `BLAKE3("ddc placement v1" || node id ||
//! key)` read as a u64; the nodes sorted by descending score are the key's
//! placement. A stream's first node leads it and the next
//! `replication_total - 1` follow it; a sealed segment's shard `i` lives on its
//! `i`-th node. All are distinct by construction. When a node joins or leaves,
//! only the keys where that node ranks within the chosen prefix move, which is
//! the least any placement can move.

use crate::membership::{Membership, NodeId};

const DOMAIN: &[u8] = b"ddc placement v1";

fn score(node: &NodeId, key: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(&node.0);
    h.update(key);
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// All nodes ranked for `key`, best first.
pub fn rank<'a>(nodes: impl IntoIterator<Item = &'a NodeId>, key: &[u8]) -> Vec<NodeId> {
    let mut scored: Vec<(u64, NodeId)> = nodes.into_iter().map(|n| (score(n, key), *n)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, n)| n).collect()
}

/// The placement key of a stream.
pub fn stream_key(stream: &str) -> Vec<u8> {
    let mut key = b"stream\0".to_vec();
    key.extend_from_slice(stream.as_bytes());
    key
}

/// The placement key of a sealed segment.
pub fn segment_key(stream: &str, base_offset: u64) -> Vec<u8> {
    let mut key = b"segment\0".to_vec();
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&base_offset.to_le_bytes());
    key
}

impl Membership {
    fn ids(&self) -> impl Iterator<Item = &NodeId> {
        self.nodes.iter().map(|m| &m.id)
    }

    /// The stream's leader then its followers (`replication_total` distinct nodes).
    pub fn replicas(&self, stream: &str) -> Vec<NodeId> {
        let mut r = rank(self.ids(), &stream_key(stream));
        r.truncate(usize::from(self.replication_total));
        r
    }

    pub fn leader(&self, stream: &str) -> NodeId {
        // validate() guarantees at least one node.
        self.replicas(stream)[0]
    }

    /// The holders of a sealed segment's shards: entry `i` stores shard `i`
    /// (`erasure_coding_total` distinct nodes).
    pub fn shard_holders(&self, stream: &str, base_offset: u64) -> Vec<NodeId> {
        let mut r = rank(self.ids(), &segment_key(stream, base_offset));
        r.truncate(usize::from(self.erasure_coding_total));
        r
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::membership::Member;

    fn cluster(ids: impl IntoIterator<Item = u8>) -> Membership {
        let nodes: Vec<Member> = ids
            .into_iter()
            .map(|i| Member {
                id: NodeId([i; 32]),
                address: format!("127.0.0.1:{}", 7400 + u16::from(i)).parse().unwrap(),
            })
            .collect();
        Membership {
            cluster_id: "test".into(),
            erasure_coding_required: 4,
            erasure_coding_total: 6,
            replication_total: 3,
            min_insync_replicas: 2,
            nodes,
        }
    }

    const GOLDEN_ORDERS_LEADER: u8 = 1;

    #[test]
    fn placements_are_distinct_and_stable() {
        let m = cluster(1..=9);
        for s in 0..500 {
            let name = format!("stream-{s}");
            let r = m.replicas(&name);
            assert_eq!(r.len(), 3);
            assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3);
            let h = m.shard_holders(&name, s * 1000);
            assert_eq!(h.len(), 6);
            assert_eq!(h.iter().collect::<BTreeSet<_>>().len(), 6);
            // Member order in the file does not matter.
            let mut shuffled = m.clone();
            shuffled.nodes.reverse();
            assert_eq!(shuffled.replicas(&name), r);
        }
        // Golden value: changing the hash re-places every stream on upgrade.
        assert_eq!(m.leader("orders").0[0], GOLDEN_ORDERS_LEADER);
    }

    #[test]
    fn load_is_spread() {
        let m = cluster(1..=6);
        let mut led = [0usize; 7];
        for s in 0..6000 {
            led[usize::from(m.leader(&format!("s{s}")).0[0])] += 1;
        }
        for count in &led[1..] {
            assert!((800..1200).contains(count), "{led:?}");
        }
    }

    #[test]
    fn adding_a_node_moves_only_its_share() {
        let before = cluster(1..=8);
        let after = cluster(1..=9);
        let new = NodeId([9; 32]);
        let (mut moved, total) = (0, 4000);
        for s in 0..total {
            let key = format!("s{s}");
            let (b, a) = (before.shard_holders(&key, 0), after.shard_holders(&key, 0));
            for (i, (x, y)) in b.iter().zip(&a).enumerate() {
                if x != y {
                    // A slot changes only when the new node takes it or an earlier slot's holder shifted down.
                    assert!(a[..=i].contains(&new), "slot {i} of {key} moved without the new node taking part");
                }
            }
            if b.iter().collect::<BTreeSet<_>>() != a.iter().collect::<BTreeSet<_>>() {
                moved += 1;
                // Exactly one holder is replaced: by the new node.
                let gone: Vec<_> = b.iter().filter(|x| !a.contains(x)).collect();
                assert_eq!(gone.len(), 1);
                assert!(a.contains(&new));
            }
        }
        // The new node should take about n/nodes = 6/9 of the segments.
        let share = moved as f64 / total as f64;
        assert!((0.60..0.73).contains(&share), "{share}");
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let before = cluster(1..=9);
        let after = cluster((1..=9).filter(|&i| i != 4));
        let gone = NodeId([4; 32]);
        for s in 0..2000 {
            let key = format!("s{s}");
            let (b, a) = (before.replicas(&key), after.replicas(&key));
            if !b.contains(&gone) {
                assert_eq!(a, b, "{key} moved though its nodes all stayed");
            } else {
                let kept: Vec<_> = b.iter().filter(|x| **x != gone).collect();
                assert!(kept.iter().all(|x| a.contains(x)));
            }
        }
    }
}

/// The durable record, kept by a stream's leader, that a sealed segment is
/// erasure-coded and where its shards went (docs/FORMATS.md "Placement record").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRecord {
    pub base_offset: u64,
    pub next_offset: u64,
    pub segment_bytes: u64,
    pub segment_root: [u8; 32],
    pub k: u8,
    /// `holders[i]` confirmed shard `i` durable.
    pub holders: Vec<NodeId>,
}

pub const PLACEMENT_MAGIC: [u8; 4] = *b"DDCP";
pub const PLACEMENT_VERSION: u8 = 1;

impl PlacementRecord {
    /// magic(4) version(1) k(1) n(1) reserved(1) base(8) next(8) segment_bytes(8) root(32)
    /// holders(n*32) crc32(4), integers little-endian; the CRC covers every byte before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 32 * self.holders.len() + 4);
        out.extend_from_slice(&PLACEMENT_MAGIC);
        out.push(PLACEMENT_VERSION);
        out.push(self.k);
        out.push(self.holders.len() as u8);
        out.push(0);
        out.extend_from_slice(&self.base_offset.to_le_bytes());
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        out.extend_from_slice(&self.segment_bytes.to_le_bytes());
        out.extend_from_slice(&self.segment_root);
        for h in &self.holders {
            out.extend_from_slice(&h.0);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PlacementRecord, String> {
        if bytes.len() < 64 + 4 || bytes[..4] != PLACEMENT_MAGIC {
            return Err("not a placement record".into());
        }
        if bytes[4] != PLACEMENT_VERSION || bytes[7] != 0 {
            return Err(format!("placement record version {} not understood", bytes[4]));
        }
        let n = usize::from(bytes[6]);
        if bytes.len() != 64 + 32 * n + 4 {
            return Err(format!("placement record of {} bytes, expected {}", bytes.len(), 64 + 32 * n + 4));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err("placement record checksum mismatch".into());
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut root = [0u8; 32];
        root.copy_from_slice(&body[32..64]);
        let holders = body[64..]
            .chunks_exact(32)
            .map(|c| {
                let mut id = [0u8; 32];
                id.copy_from_slice(c);
                NodeId(id)
            })
            .collect();
        Ok(PlacementRecord {
            base_offset: u64_at(8),
            next_offset: u64_at(16),
            segment_bytes: u64_at(24),
            segment_root: root,
            k: body[5],
            holders,
        })
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn placement_record_round_trips_and_refuses_damage() {
        let r = PlacementRecord {
            base_offset: 7,
            next_offset: 99,
            segment_bytes: 12345,
            segment_root: [5; 32],
            k: 4,
            holders: (0..6).map(|i| NodeId([i; 32])).collect(),
        };
        let bytes = r.encode();
        assert_eq!(PlacementRecord::decode(&bytes).unwrap(), r);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(PlacementRecord::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(PlacementRecord::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
