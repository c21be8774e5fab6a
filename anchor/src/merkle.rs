//! Era Merkle trees: the BLAKE3 binary tree over an era's data and usage
//! leaves, inclusion proofs, and the canonical encodings of the leaves.
//!
//! Every era a node builds two trees: the **data tree** over the segments and
//! shards it sealed or stored in the era ([`DataLeaf`]), and the **usage
//! tree** over the era's usage records ([`UsageLeaf`]). Their roots go into
//! the anchor record ([`crate::record`]). An [`InclusionProof`] shows that one
//! leaf is in a tree with a given root, to someone who has only the leaf, the
//! proof and the root.
//!
//! # Hashing
//!
//! Four BLAKE3 functions, each in `derive_key` mode with its own context
//! string, so no two of them can ever give the same hash for any inputs:
//!
//! | name | context | input |
//! | --- | --- | --- |
//! | `L(x)`, leaf | `"ddc merkle leaf v1"` | the leaf's bytes |
//! | `N(l, r)`, inner node | `"ddc merkle node v1"` | `l ‖ r`, 64 bytes |
//! | `R(n, t)`, root | `"ddc merkle root v1"` | `n` (leaf count, `u64` little-endian) ‖ `t` (top node), 40 bytes |
//! | `E`, empty tree root | `"ddc merkle empty v1"` | nothing |
//!
//! **Why separate leaves from nodes.** With one hash function for both, the
//! 64 bytes `l ‖ r` under an inner node are also a valid leaf whose hash is
//! that node. Anyone could then prove "leaf `l ‖ r`" at the node's position
//! in a smaller tree (a second preimage of the tree). With distinct contexts a
//! leaf hash never equals a node hash, so a proof can only end in a real leaf.
//!
//! **Why the root binds the leaf count.** A proof recomputes one path. Paths
//! do not tell a node from a leaf, nor always one tree size from another:
//! leaf 2 of 3 and leaf 1 of 2 both have one sibling, on the left, and leaf
//! 0 of 5 and leaf 0 of 6 both have three, all on the right. Hashing the count into
//! the root (`R`) makes a proof that states a wrong count or index fail,
//! rather than prove a true leaf at a false position. The anchor record
//! carries the counts as well.
//!
//! # Shape
//!
//! Leaves are hashed with `L` in order. Each level pairs nodes `(0, 1)`,
//! `(2, 3)`, ... with `N`; an odd last node is **promoted** unchanged to the
//! next level. Levels shrink until one node, the top `t`, is left; the root is
//! `R(n, t)`, and the root of no leaves is `E`. Five leaves:
//!
//! ```text
//!                      R(5, t)
//!                         |
//!              t = N(n0123, L4)
//!               /               \
//!        n0123 = N(n01, n23)     L4      promoted again
//!         /          \            |
//!   n01 = N(L0,L1)  n23 = N(L2,L3)   L4   promoted (no partner at this level)
//!    /    \          /    \       |
//!   L0    L1        L2    L3      L4
//! ```
//!
//! Bitcoin's tree instead pairs an odd last node with a copy of itself, so
//! leaves `[a, b, c]` and `[a, b, c, c]` share a root (CVE-2012-2459).
//! Promotion never hashes a node twice, so every list of leaves has its own
//! root. This shape is the one of RFC 6962 (Certificate Transparency): the
//! left subtree always holds the largest power of two below `n` leaves.
//!
//! Test vectors (`golden_roots` in the tests), leaves given as ASCII:
//!
//! | leaves | root |
//! | --- | --- |
//! | none | `6bc16ac2b2da9e3dfa99058f7630faa694c9689a8032720092b4eaf1dce7b485` |
//! | `a` | `ce0b4749d51989d5c0cad5995bd80cf55c0e79ff63e966cdee0e214b71964af3` |
//! | `a`, `b`, `c` | `d5f13f9cd56d34a1ef5aa76fab9ee1d2788307ce11b84a5833a0a6297d90f8cf` |
//!
//! # Inclusion proof encoding
//!
//! [`InclusionProof::encode`], integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | leaf index `i` (`u64`), less than the count |
//! | 8..16 | leaf count `n` (`u64`), 1 to [`LEAF_COUNT_MAX`] |
//! | 16 | sibling count `k` (`u8`), exactly the number of levels at which leaf `i` of `n` has a partner |
//! | 17..17+32k | the siblings, from the leaf level up |
//!
//! The sibling count is fixed by `i` and `n` (at most 32), and decoding
//! refuses any other count, a count or index out of range, and trailing bytes.
//!
//! # Leaf encodings
//!
//! A leaf's first byte is its kind. Data kinds (1, 2) and usage kinds
//! (`0x10`..`0x12`) are disjoint, so a leaf's bytes say which tree they
//! belong to. Integers are little-endian.
//!
//! [`DataLeaf`], 53 to 252 bytes:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 | kind: 1 segment, 2 shard ([`DataLeafKind`]) |
//! | 1 | shard index (`u8`); 0 for a segment |
//! | 2..4 | stream name length `s` (`u16`), 1 to 200 |
//! | 4..12 | base_offset (`u64`) |
//! | 12..20 | next_offset (`u64`), at least base_offset |
//! | 20..52 | root: a segment's seal-manifest root, or the BLAKE3 of a shard's body |
//! | 52..52+s | stream name, UTF-8 |
//!
//! [`UsageLeaf`], one of:
//!
//! | kind | bytes | after the kind byte |
//! | --- | --- | --- |
//! | `0x10` bucket | 41 | bucket id (`u64`), then its [`CustomerUsage`] (32 bytes, [`CustomerUsage::encode`]) |
//! | `0x11` node | 33 | the node's [`NodeUsage`] (32 bytes, [`NodeUsage::encode`]) |
//! | `0x12` ack | 185 | a [`ConsumerAck`] (184 bytes, [`ConsumerAck::encode`]), version 1, validly signed |
//!
//! # Canonical order
//!
//! [`LeafTree::build`] sorts the leaves, so the same set of leaves always
//! gives the same root, and refuses two leaves with the same sort key (a set
//! has no duplicates; two different leaves for one segment would be a lie).
//! Data leaves sort by (stream, base_offset, kind, index); usage leaves by
//! kind (buckets, then the node, then acks), then bucket id for buckets and
//! the session (bucket, consumer, node, session nonce) for acks. There is at
//! most one node leaf.
//!
//! ```
//! use ddc_anchor::merkle::{DataLeaf, DataLeafKind, DataTree};
//!
//! let segment = |base_offset| DataLeaf {
//!     kind: DataLeafKind::Segment,
//!     stream: "orders".to_string(),
//!     base_offset,
//!     next_offset: base_offset + 100,
//!     index: 0,
//!     root: [7; 32],
//! };
//! let tree = DataTree::build(vec![segment(100), segment(0), segment(200)]).unwrap();
//! let index = tree.position(&segment(100)).unwrap();
//! let proof = tree.proof(index);
//! assert!(proof.verify(&tree.root(), &segment(100).encode()));
//! assert!(!proof.verify(&tree.root(), &segment(300).encode()));
//! ```

use std::cmp::Ordering;
use std::fmt;

use ddc_auth::account::Account;
use ddc_auth::usage::{ConsumerAck, CustomerUsage, NodeUsage, CONSUMER_ACK_BYTES, USAGE_BYTES};

use crate::record::AnchorError;

/// `derive_key` context of leaf hashes.
pub const LEAF_CONTEXT: &str = "ddc merkle leaf v1";
/// `derive_key` context of inner node hashes.
pub const NODE_CONTEXT: &str = "ddc merkle node v1";
/// `derive_key` context of the root of a non-empty tree.
pub const ROOT_CONTEXT: &str = "ddc merkle root v1";
/// `derive_key` context of the root of the empty tree.
pub const EMPTY_CONTEXT: &str = "ddc merkle empty v1";

/// Most leaves a tree may have: the anchor record counts leaves in a `u32`.
pub const LEAF_COUNT_MAX: u64 = u32::MAX as u64;
/// Most siblings a proof can have: one per level of the largest tree.
pub const PROOF_SIBLINGS_MAX: usize = 32;
/// Bytes of an encoded proof before its siblings.
pub const PROOF_HEADER_BYTES: usize = 17;
/// Bytes of the longest encoded proof.
pub const PROOF_BYTES_MAX: usize = PROOF_HEADER_BYTES + PROOF_SIBLINGS_MAX * 32;

/// Longest stream name in bytes, as `formats::name::STREAM_NAME_BYTES_MAX`.
pub const STREAM_NAME_BYTES_MAX: usize = 200;
/// Bytes of an encoded [`DataLeaf`] before its stream name.
pub const DATA_LEAF_HEADER_BYTES: usize = 52;
/// Bytes of the longest encoded [`DataLeaf`].
pub const DATA_LEAF_BYTES_MAX: usize = DATA_LEAF_HEADER_BYTES + STREAM_NAME_BYTES_MAX;
/// Bytes of the longest encoded leaf of either tree.
pub const LEAF_BYTES_MAX: usize = DATA_LEAF_BYTES_MAX;

const USAGE_BUCKET_LEAF_BYTES: usize = 1 + 8 + USAGE_BYTES;
const USAGE_NODE_LEAF_BYTES: usize = 1 + USAGE_BYTES;
const USAGE_ACK_LEAF_BYTES: usize = 1 + CONSUMER_ACK_BYTES;

// A tree of LEAF_COUNT_MAX leaves has 32 levels above the leaves, so a path
// has at most 32 siblings, and their count fits the proof's count byte.
const _: () = assert!(LEAF_COUNT_MAX == (1u64 << PROOF_SIBLINGS_MAX) - 1);
const _: () = assert!(PROOF_SIBLINGS_MAX <= u8::MAX as usize);
const _: () = assert!(PROOF_HEADER_BYTES == 8 + 8 + 1);
const _: () = assert!(DATA_LEAF_HEADER_BYTES == 1 + 1 + 2 + 8 + 8 + 32);
const _: () = assert!(STREAM_NAME_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(USAGE_ACK_LEAF_BYTES <= LEAF_BYTES_MAX && USAGE_BUCKET_LEAF_BYTES <= LEAF_BYTES_MAX);

/// `L(x)`: the hash of a leaf's bytes.
pub fn leaf_hash(leaf_bytes: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    hasher.update(leaf_bytes);
    *hasher.finalize().as_bytes()
}

/// `N(l, r)`: the hash of an inner node over its two children.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(NODE_CONTEXT);
    hasher.update(left);
    hasher.update(right);
    *hasher.finalize().as_bytes()
}

/// `E`: the root of the tree of no leaves.
pub fn empty_root() -> [u8; 32] {
    *blake3::Hasher::new_derive_key(EMPTY_CONTEXT).finalize().as_bytes()
}

/// `R(n, t)`: the root of a tree of `leaf_count` leaves whose top node is `top`.
fn bound_root(leaf_count: u64, top: &[u8; 32]) -> [u8; 32] {
    assert!((1..=LEAF_COUNT_MAX).contains(&leaf_count));
    let mut hasher = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
    hasher.update(&leaf_count.to_le_bytes());
    hasher.update(top);
    *hasher.finalize().as_bytes()
}

/// The level above `level`: pairs hashed with `N`, an odd last node promoted.
fn parent_level(level: &[[u8; 32]]) -> Vec<[u8; 32]> {
    assert!(level.len() > 1);
    let parent: Vec<[u8; 32]> = level
        .chunks(2)
        .map(|pair| match pair {
            [left, right] => node_hash(left, right),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two nodes"),
        })
        .collect();
    assert_eq!(parent.len(), level.len().div_ceil(2));
    parent
}

/// The root of a tree over `leaves` (their bytes, in this order).
///
/// # Panics
///
/// With more than [`LEAF_COUNT_MAX`] leaves.
pub fn root(leaves: &[impl AsRef<[u8]>]) -> [u8; 32] {
    assert!(leaves.len() as u64 <= LEAF_COUNT_MAX, "a tree has at most LEAF_COUNT_MAX leaves");
    if leaves.is_empty() {
        return empty_root();
    }
    let mut level: Vec<[u8; 32]> = leaves.iter().map(|leaf| leaf_hash(leaf.as_ref())).collect();
    while level.len() > 1 {
        level = parent_level(&level);
    }
    bound_root(leaves.len() as u64, &level[0])
}

/// How many siblings the path of leaf `leaf_index` of `leaf_count` has: one
/// for each level where the node on the path has a partner.
fn sibling_count(leaf_index: u64, leaf_count: u64) -> usize {
    assert!(leaf_index < leaf_count && leaf_count <= LEAF_COUNT_MAX);
    let (mut index, mut count, mut siblings) = (leaf_index, leaf_count, 0);
    while count > 1 {
        if index ^ 1 < count {
            siblings += 1;
        }
        index /= 2;
        count = count.div_ceil(2);
    }
    assert!(siblings <= PROOF_SIBLINGS_MAX);
    siblings
}

/// A tree with every level kept, to answer [`MerkleTree::proof`] for any leaf.
#[derive(Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]` holds the leaf hashes, each next level the one above, the
    /// last level the top node alone. One empty level for the empty tree.
    levels: Vec<Vec<[u8; 32]>>,
    root: [u8; 32],
}

impl MerkleTree {
    /// Build the tree over leaves already hashed with [`leaf_hash`], in order.
    ///
    /// # Panics
    ///
    /// With more than [`LEAF_COUNT_MAX`] leaves.
    pub fn from_leaf_hashes(leaf_hashes: Vec<[u8; 32]>) -> MerkleTree {
        assert!(leaf_hashes.len() as u64 <= LEAF_COUNT_MAX, "a tree has at most LEAF_COUNT_MAX leaves");
        let leaf_count = leaf_hashes.len() as u64;
        let mut levels = vec![leaf_hashes];
        while let Some(level) = levels.last().filter(|level| level.len() > 1) {
            let parent = parent_level(level);
            levels.push(parent);
        }
        let root = match levels.last().map(Vec::as_slice) {
            Some([top]) => bound_root(leaf_count, top),
            _ => empty_root(),
        };
        assert!(levels.len() <= PROOF_SIBLINGS_MAX + 1);
        MerkleTree { levels, root }
    }

    /// Build the tree over `leaves` (their bytes, in this order).
    pub fn from_leaves(leaves: &[impl AsRef<[u8]>]) -> MerkleTree {
        MerkleTree::from_leaf_hashes(leaves.iter().map(|leaf| leaf_hash(leaf.as_ref())).collect())
    }

    /// The number of leaves.
    pub fn leaf_count(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// The root; [`empty_root`] for no leaves.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// The proof that leaf `index` is in this tree.
    ///
    /// # Panics
    ///
    /// If `index` is not less than [`Self::leaf_count`].
    pub fn proof(&self, index: usize) -> InclusionProof {
        assert!(index < self.levels[0].len(), "leaf {index} of a tree of {} leaves", self.levels[0].len());
        let mut siblings = Vec::with_capacity(self.levels.len());
        let mut at = index;
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(at ^ 1) {
                siblings.push(*sibling);
            }
            at /= 2;
        }
        let proof = InclusionProof { leaf_index: index as u64, leaf_count: self.leaf_count(), siblings };
        assert_eq!(proof.siblings.len(), sibling_count(proof.leaf_index, proof.leaf_count));
        assert_eq!(proof.root_from_leaf_hash(&self.levels[0][index]), Some(self.root));
        proof
    }
}

impl fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree")
            .field("leaf_count", &self.leaf_count())
            .field("root", &hex::encode(self.root))
            .finish()
    }
}

/// The siblings on the path from one leaf to the root, with the leaf's
/// position: enough to recompute the root from the leaf's bytes.
///
/// Built by [`MerkleTree::proof`] or [`InclusionProof::decode`]; either way
/// the index is less than the count and the sibling count is the one the
/// position needs. The module documentation describes the encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct InclusionProof {
    leaf_index: u64,
    leaf_count: u64,
    siblings: Vec<[u8; 32]>,
}

impl InclusionProof {
    /// The position of the leaf, counting from 0.
    pub fn leaf_index(&self) -> u64 {
        self.leaf_index
    }

    /// The number of leaves of the tree.
    pub fn leaf_count(&self) -> u64 {
        self.leaf_count
    }

    /// The siblings, from the leaf level up.
    pub fn siblings(&self) -> &[[u8; 32]] {
        &self.siblings
    }

    /// Whether `leaf_bytes` is leaf [`Self::leaf_index`] of a tree of
    /// [`Self::leaf_count`] leaves whose root is `root`.
    pub fn verify(&self, root: &[u8; 32], leaf_bytes: &[u8]) -> bool {
        self.root_from_leaf_hash(&leaf_hash(leaf_bytes)).is_some_and(|computed| computed == *root)
    }

    /// The root this proof leads to from a leaf hash, or `None` if the index,
    /// count and sibling count do not fit together.
    fn root_from_leaf_hash(&self, leaf: &[u8; 32]) -> Option<[u8; 32]> {
        if self.leaf_count == 0 || self.leaf_count > LEAF_COUNT_MAX || self.leaf_index >= self.leaf_count {
            return None;
        }
        if self.siblings.len() != sibling_count(self.leaf_index, self.leaf_count) {
            return None;
        }
        let mut siblings = self.siblings.iter();
        let (mut index, mut count, mut hash) = (self.leaf_index, self.leaf_count, *leaf);
        while count > 1 {
            if index ^ 1 < count {
                let sibling = siblings.next()?;
                hash = if index % 2 == 0 { node_hash(&hash, sibling) } else { node_hash(sibling, &hash) };
            }
            index /= 2;
            count = count.div_ceil(2);
        }
        assert!(siblings.next().is_none(), "the sibling count was checked against the path");
        Some(bound_root(self.leaf_count, &hash))
    }

    /// Bytes of [`Self::encode`]'s output.
    pub fn encoded_bytes(&self) -> usize {
        PROOF_HEADER_BYTES + 32 * self.siblings.len()
    }

    /// The encoding described in the module documentation.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.siblings.len() <= PROOF_SIBLINGS_MAX, "built proofs have at most 32 siblings");
        let mut out = Vec::with_capacity(self.encoded_bytes());
        out.extend_from_slice(&self.leaf_index.to_le_bytes());
        out.extend_from_slice(&self.leaf_count.to_le_bytes());
        out.push(self.siblings.len() as u8);
        for sibling in &self.siblings {
            out.extend_from_slice(sibling);
        }
        assert_eq!(out.len(), self.encoded_bytes());
        out
    }

    /// Decode exactly one proof. Refuses a count of 0 or above
    /// [`LEAF_COUNT_MAX`], an index not below the count, a sibling count
    /// other than the one the position needs, and any other length.
    pub fn decode(bytes: &[u8]) -> Result<InclusionProof, AnchorError> {
        const WHAT: &str = "inclusion proof";
        if bytes.len() < PROOF_HEADER_BYTES {
            return Err(AnchorError::TooShort { what: WHAT, minimum: PROOF_HEADER_BYTES, actual: bytes.len() });
        }
        let leaf_index = read_u64(bytes, 0);
        let leaf_count = read_u64(bytes, 8);
        if leaf_count == 0 || leaf_count > LEAF_COUNT_MAX {
            return Err(AnchorError::ProofLeafCount { count: leaf_count });
        }
        if leaf_index >= leaf_count {
            return Err(AnchorError::LeafIndexOutOfRange { index: leaf_index, count: leaf_count });
        }
        let expected = sibling_count(leaf_index, leaf_count);
        let found = usize::from(bytes[16]);
        if found != expected {
            return Err(AnchorError::SiblingCount { expected, found });
        }
        let length = PROOF_HEADER_BYTES + 32 * expected;
        if bytes.len() != length {
            return Err(AnchorError::WrongLength { what: WHAT, expected: length, actual: bytes.len() });
        }
        let siblings = bytes[PROOF_HEADER_BYTES..].chunks_exact(32).map(|chunk| read_array(chunk, 0)).collect();
        let proof = InclusionProof { leaf_index, leaf_count, siblings };
        debug_assert_eq!(proof.encode(), bytes, "decoding is the inverse of encoding");
        Ok(proof)
    }
}

impl fmt::Debug for InclusionProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InclusionProof")
            .field("leaf_index", &self.leaf_index)
            .field("leaf_count", &self.leaf_count)
            .field("siblings", &self.siblings.iter().map(hex::encode).collect::<Vec<_>>())
            .finish()
    }
}

/// Which of an era's two trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    /// The tree over [`DataLeaf`]s; its root is the record's `data_root`.
    Data = 1,
    /// The tree over [`UsageLeaf`]s; its root is the record's `usage_root`.
    Usage = 2,
}

impl Tree {
    /// The byte that names the tree in a [`crate::record::RecordProof`].
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The tree a byte names, if any.
    pub fn from_byte(byte: u8) -> Option<Tree> {
        match byte {
            1 => Some(Tree::Data),
            2 => Some(Tree::Usage),
            _ => None,
        }
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tree::Data => "data",
            Tree::Usage => "usage",
        })
    }
}

/// What a [`LeafTree`] needs of its leaves: a strict codec, the rules every
/// leaf follows, and the canonical order.
pub trait Leaf: Clone + fmt::Debug + PartialEq + Sized {
    /// The tree this kind of leaf goes in.
    const TREE: Tree;
    /// Whether the leaf follows every rule its decoder checks, so that it
    /// encodes, and its encoding decodes back to it.
    fn check(&self) -> Result<(), AnchorError>;
    /// The canonical encoding. Panics if [`Leaf::check`] fails.
    fn encode(&self) -> Vec<u8>;
    /// Decode exactly one leaf, checking every rule.
    fn decode(bytes: &[u8]) -> Result<Self, AnchorError>;
    /// The canonical order; `Equal` means the two leaves may not both be in
    /// one tree.
    fn canonical_cmp(&self, other: &Self) -> Ordering;
    /// The error naming the key two leaves of one tree share.
    fn duplicate_error(&self) -> AnchorError;
}

/// The kind of a [`DataLeaf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataLeafKind {
    /// A sealed segment of a stream.
    Segment = 1,
    /// One erasure-coded shard of a sealed segment.
    Shard = 2,
}

impl DataLeafKind {
    /// The kind byte of the encoding.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The kind a byte names, if any.
    pub fn from_byte(byte: u8) -> Option<DataLeafKind> {
        match byte {
            1 => Some(DataLeafKind::Segment),
            2 => Some(DataLeafKind::Shard),
            _ => None,
        }
    }
}

/// A segment the node sealed, or a shard it stored, in the era.
#[derive(Clone, PartialEq, Eq)]
pub struct DataLeaf {
    /// Segment or shard.
    pub kind: DataLeafKind,
    /// The stream, 1 to [`STREAM_NAME_BYTES_MAX`] bytes.
    pub stream: String,
    /// The segment's base offset (a shard's segment's).
    pub base_offset: u64,
    /// One past the segment's last offset; at least `base_offset`.
    pub next_offset: u64,
    /// The shard's index; 0 for a segment.
    pub index: u8,
    /// For a segment, its root as sealed (the seal manifest's `root`); for a
    /// shard, the BLAKE3 of the shard's body.
    pub root: [u8; 32],
}

impl DataLeaf {
    /// Whether the leaf follows the encoding's rules: stream name length,
    /// index 0 for a segment, offsets not going backwards.
    pub fn check(&self) -> Result<(), AnchorError> {
        if !(1..=STREAM_NAME_BYTES_MAX).contains(&self.stream.len()) {
            return Err(AnchorError::StreamNameLength { bytes: self.stream.len() });
        }
        if self.kind == DataLeafKind::Segment && self.index != 0 {
            return Err(AnchorError::SegmentWithShardIndex { index: self.index });
        }
        if self.next_offset < self.base_offset {
            return Err(AnchorError::OffsetsBackwards { base_offset: self.base_offset, next_offset: self.next_offset });
        }
        Ok(())
    }

    /// The canonical encoding (see the module documentation).
    ///
    /// # Panics
    ///
    /// If [`Self::check`] fails.
    pub fn encode(&self) -> Vec<u8> {
        if let Err(error) = self.check() {
            panic!("encoding an invalid data leaf: {error}");
        }
        let mut out = Vec::with_capacity(DATA_LEAF_HEADER_BYTES + self.stream.len());
        out.push(self.kind.byte());
        out.push(self.index);
        out.extend_from_slice(&(self.stream.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.base_offset.to_le_bytes());
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        out.extend_from_slice(&self.root);
        assert_eq!(out.len(), DATA_LEAF_HEADER_BYTES);
        out.extend_from_slice(self.stream.as_bytes());
        out
    }

    /// Decode exactly one data leaf, checking every rule of the encoding.
    pub fn decode(bytes: &[u8]) -> Result<DataLeaf, AnchorError> {
        const WHAT: &str = "data leaf";
        let Some(&kind_byte) = bytes.first() else {
            return Err(AnchorError::TooShort { what: WHAT, minimum: DATA_LEAF_HEADER_BYTES + 1, actual: 0 });
        };
        let kind = DataLeafKind::from_byte(kind_byte)
            .ok_or(AnchorError::UnknownLeafKind { tree: Tree::Data, kind: kind_byte })?;
        if bytes.len() < DATA_LEAF_HEADER_BYTES {
            return Err(AnchorError::TooShort { what: WHAT, minimum: DATA_LEAF_HEADER_BYTES + 1, actual: bytes.len() });
        }
        let stream_bytes = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
        if !(1..=STREAM_NAME_BYTES_MAX).contains(&stream_bytes) {
            return Err(AnchorError::StreamNameLength { bytes: stream_bytes });
        }
        let length = DATA_LEAF_HEADER_BYTES + stream_bytes;
        if bytes.len() != length {
            return Err(AnchorError::WrongLength { what: WHAT, expected: length, actual: bytes.len() });
        }
        let stream = std::str::from_utf8(&bytes[DATA_LEAF_HEADER_BYTES..])
            .map_err(|_| AnchorError::StreamNameNotUtf8)?
            .to_string();
        let leaf = DataLeaf {
            kind,
            stream,
            base_offset: read_u64(bytes, 4),
            next_offset: read_u64(bytes, 12),
            index: bytes[1],
            root: read_array(bytes, 20),
        };
        leaf.check()?;
        debug_assert_eq!(leaf.encode(), bytes, "decoding is the inverse of encoding");
        Ok(leaf)
    }

    fn sort_key(&self) -> (&str, u64, DataLeafKind, u8) {
        (&self.stream, self.base_offset, self.kind, self.index)
    }
}

impl fmt::Debug for DataLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataLeaf")
            .field("kind", &self.kind)
            .field("stream", &self.stream)
            .field("base_offset", &self.base_offset)
            .field("next_offset", &self.next_offset)
            .field("index", &self.index)
            .field("root", &hex::encode(self.root))
            .finish()
    }
}

impl Leaf for DataLeaf {
    const TREE: Tree = Tree::Data;

    fn check(&self) -> Result<(), AnchorError> {
        DataLeaf::check(self)
    }

    fn encode(&self) -> Vec<u8> {
        DataLeaf::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<DataLeaf, AnchorError> {
        DataLeaf::decode(bytes)
    }

    fn canonical_cmp(&self, other: &DataLeaf) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }

    fn duplicate_error(&self) -> AnchorError {
        AnchorError::DuplicateDataLeaf {
            stream: self.stream.clone(),
            base_offset: self.base_offset,
            kind: self.kind,
            index: self.index,
        }
    }
}

/// The kind of a [`UsageLeaf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UsageLeafKind {
    /// [`UsageLeaf::Bucket`].
    Bucket = 0x10,
    /// [`UsageLeaf::Node`].
    Node = 0x11,
    /// [`UsageLeaf::Ack`].
    Ack = 0x12,
}

impl UsageLeafKind {
    /// The kind byte of the encoding.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The kind a byte names, if any.
    pub fn from_byte(byte: u8) -> Option<UsageLeafKind> {
        match byte {
            0x10 => Some(UsageLeafKind::Bucket),
            0x11 => Some(UsageLeafKind::Node),
            0x12 => Some(UsageLeafKind::Ack),
            _ => None,
        }
    }
}

/// One usage record of the era.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageLeaf {
    /// What one bucket used (bucket 0 holds the usage of streams in no bucket).
    Bucket {
        /// The bucket id.
        bucket: u64,
        /// Its usage in the era.
        usage: CustomerUsage,
    },
    /// What the node provided in the era.
    Node {
        /// The node's usage.
        usage: NodeUsage,
    },
    /// A consumer's latest signed acknowledgment of a session, as evidence.
    Ack(ConsumerAck),
}

impl UsageLeaf {
    /// The kind of the leaf.
    pub fn kind(&self) -> UsageLeafKind {
        match self {
            UsageLeaf::Bucket { .. } => UsageLeafKind::Bucket,
            UsageLeaf::Node { .. } => UsageLeafKind::Node,
            UsageLeaf::Ack(_) => UsageLeafKind::Ack,
        }
    }

    /// Whether the leaf follows the encoding's rules: an acknowledgment has
    /// version 1, zero reserved bytes and a valid consumer signature.
    pub fn check(&self) -> Result<(), AnchorError> {
        if let UsageLeaf::Ack(ack) = self {
            ConsumerAck::decode(&ack.encode()).map_err(AnchorError::Usage)?;
            if !ack.verify() {
                return Err(AnchorError::BadAckSignature { consumer: ack.consumer });
            }
        }
        Ok(())
    }

    /// The canonical encoding (see the module documentation).
    ///
    /// # Panics
    ///
    /// If [`Self::check`] fails.
    pub fn encode(&self) -> Vec<u8> {
        if let Err(error) = self.check() {
            panic!("encoding an invalid usage leaf: {error}");
        }
        let mut out = vec![self.kind().byte()];
        match self {
            UsageLeaf::Bucket { bucket, usage } => {
                out.extend_from_slice(&bucket.to_le_bytes());
                out.extend_from_slice(&usage.encode());
            }
            UsageLeaf::Node { usage } => out.extend_from_slice(&usage.encode()),
            UsageLeaf::Ack(ack) => out.extend_from_slice(&ack.encode()),
        }
        out
    }

    /// Decode exactly one usage leaf, checking every rule of the encoding,
    /// including the acknowledgment's signature.
    pub fn decode(bytes: &[u8]) -> Result<UsageLeaf, AnchorError> {
        const WHAT: &str = "usage leaf";
        let Some(&kind_byte) = bytes.first() else {
            return Err(AnchorError::TooShort { what: WHAT, minimum: USAGE_NODE_LEAF_BYTES, actual: 0 });
        };
        let kind = UsageLeafKind::from_byte(kind_byte)
            .ok_or(AnchorError::UnknownLeafKind { tree: Tree::Usage, kind: kind_byte })?;
        let expected = match kind {
            UsageLeafKind::Bucket => USAGE_BUCKET_LEAF_BYTES,
            UsageLeafKind::Node => USAGE_NODE_LEAF_BYTES,
            UsageLeafKind::Ack => USAGE_ACK_LEAF_BYTES,
        };
        if bytes.len() != expected {
            return Err(AnchorError::WrongLength { what: WHAT, expected, actual: bytes.len() });
        }
        let body = &bytes[1..];
        let leaf = match kind {
            UsageLeafKind::Bucket => UsageLeaf::Bucket {
                bucket: read_u64(body, 0),
                usage: CustomerUsage::decode(&body[8..]).map_err(AnchorError::Usage)?,
            },
            UsageLeafKind::Node => UsageLeaf::Node { usage: NodeUsage::decode(body).map_err(AnchorError::Usage)? },
            UsageLeafKind::Ack => UsageLeaf::Ack(ConsumerAck::decode(body).map_err(AnchorError::Usage)?),
        };
        leaf.check()?;
        debug_assert_eq!(leaf.encode(), bytes, "decoding is the inverse of encoding");
        Ok(leaf)
    }

    /// The order within a kind: bucket id, or the acknowledgment's session.
    fn key_cmp(&self, other: &UsageLeaf) -> Ordering {
        match (self, other) {
            (UsageLeaf::Bucket { bucket: a, .. }, UsageLeaf::Bucket { bucket: b, .. }) => a.cmp(b),
            (UsageLeaf::Ack(a), UsageLeaf::Ack(b)) => ack_session(a).cmp(&ack_session(b)),
            _ => Ordering::Equal,
        }
    }
}

/// The session of an acknowledgment, in sort order.
fn ack_session(ack: &ConsumerAck) -> (u64, Account, Account, [u8; 16]) {
    (ack.bucket, ack.consumer, ack.node, ack.session_nonce)
}

impl Leaf for UsageLeaf {
    const TREE: Tree = Tree::Usage;

    fn check(&self) -> Result<(), AnchorError> {
        UsageLeaf::check(self)
    }

    fn encode(&self) -> Vec<u8> {
        UsageLeaf::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<UsageLeaf, AnchorError> {
        UsageLeaf::decode(bytes)
    }

    fn canonical_cmp(&self, other: &UsageLeaf) -> Ordering {
        self.kind().cmp(&other.kind()).then_with(|| self.key_cmp(other))
    }

    fn duplicate_error(&self) -> AnchorError {
        match self {
            UsageLeaf::Bucket { bucket, .. } => AnchorError::DuplicateBucket { bucket: *bucket },
            UsageLeaf::Node { .. } => AnchorError::DuplicateNodeUsage,
            UsageLeaf::Ack(ack) => AnchorError::DuplicateAckSession {
                bucket: ack.bucket,
                consumer: ack.consumer,
                session_nonce: ack.session_nonce,
            },
        }
    }
}

/// A set of leaves in canonical order and the tree over their encodings.
#[derive(Clone, Debug)]
pub struct LeafTree<L> {
    leaves: Vec<L>,
    tree: MerkleTree,
}

/// The era's data tree.
pub type DataTree = LeafTree<DataLeaf>;
/// The era's usage tree.
pub type UsageTree = LeafTree<UsageLeaf>;

impl<L: Leaf> LeafTree<L> {
    /// Check every leaf, sort them canonically and build the tree. The order
    /// given does not matter. Refuses an invalid leaf, two leaves with the
    /// same sort key, and more than [`LEAF_COUNT_MAX`] leaves.
    pub fn build(mut leaves: Vec<L>) -> Result<LeafTree<L>, AnchorError> {
        if leaves.len() as u64 > LEAF_COUNT_MAX {
            return Err(AnchorError::TooManyLeaves { count: leaves.len() });
        }
        for leaf in &leaves {
            leaf.check()?;
        }
        leaves.sort_by(L::canonical_cmp);
        if let Some(pair) = leaves.windows(2).find(|pair| pair[0].canonical_cmp(&pair[1]) == Ordering::Equal) {
            return Err(pair[0].duplicate_error());
        }
        let tree = MerkleTree::from_leaf_hashes(leaves.iter().map(|leaf| leaf_hash(&leaf.encode())).collect());
        Ok(LeafTree { leaves, tree })
    }

    /// The leaves, in canonical order: leaf `i` of the tree is `leaves()[i]`.
    pub fn leaves(&self) -> &[L] {
        &self.leaves
    }

    /// The tree over the leaves' encodings.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// The root; [`empty_root`] for no leaves.
    pub fn root(&self) -> [u8; 32] {
        self.tree.root()
    }

    /// The number of leaves, as the anchor record counts them.
    pub fn leaf_count(&self) -> u32 {
        u32::try_from(self.leaves.len()).expect("build bounds the count by LEAF_COUNT_MAX")
    }

    /// The position of `leaf` in the tree, if it is there.
    pub fn position(&self, leaf: &L) -> Option<usize> {
        let index = self.leaves.binary_search_by(|probe| probe.canonical_cmp(leaf)).ok()?;
        (self.leaves[index] == *leaf).then_some(index)
    }

    /// The proof that leaf `index` is in the tree.
    ///
    /// # Panics
    ///
    /// If `index` is not less than the leaf count.
    pub fn proof(&self, index: usize) -> InclusionProof {
        self.tree.proof(index)
    }
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(read_array(bytes, at))
}

/// `N` bytes of `bytes` from `at`; callers check the length first.
pub(crate) fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use ddc_auth::account::Keypair;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// An independent reference: the RFC 6962 recursion (split at the
    /// largest power of two below `n`), hashing with blake3 directly.
    fn reference_top(leaves: &[Vec<u8>]) -> [u8; 32] {
        let derive = |context: &str, parts: &[&[u8]]| {
            let mut input = Vec::new();
            for part in parts {
                input.extend_from_slice(part);
            }
            blake3::derive_key(context, &input)
        };
        if leaves.len() == 1 {
            return derive("ddc merkle leaf v1", &[&leaves[0]]);
        }
        let mut split = 1;
        while split * 2 < leaves.len() {
            split *= 2;
        }
        let left = reference_top(&leaves[..split]);
        let right = reference_top(&leaves[split..]);
        derive("ddc merkle node v1", &[&left, &right])
    }

    fn reference_root(leaves: &[Vec<u8>]) -> [u8; 32] {
        if leaves.is_empty() {
            return blake3::derive_key("ddc merkle empty v1", b"");
        }
        let mut input = (leaves.len() as u64).to_le_bytes().to_vec();
        input.extend_from_slice(&reference_top(leaves));
        blake3::derive_key("ddc merkle root v1", &input)
    }

    /// `count` distinct leaves of varying lengths.
    fn leaves(count: usize) -> Vec<Vec<u8>> {
        (0..count).map(|i| format!("leaf {i}").repeat(i % 3 + 1).into_bytes()).collect()
    }

    #[test]
    fn roots_match_the_reference_for_0_to_17_leaves() {
        for count in 0..=17 {
            let leaves = leaves(count);
            let expected = reference_root(&leaves);
            assert_eq!(root(&leaves), expected, "{count} leaves");
            assert_eq!(MerkleTree::from_leaves(&leaves).root(), expected, "{count} leaves");
            assert_eq!(MerkleTree::from_leaves(&leaves).leaf_count(), count as u64);
        }
    }

    #[test]
    fn golden_roots() {
        // Kept so that a change of hashing or shape is noticed; an
        // implementation in another language can check itself against these.
        assert_eq!(hex::encode(root(&NO_LEAVES)), hex::encode(empty_root()));
        assert_eq!(hex::encode(empty_root()), GOLDEN_EMPTY);
        assert_eq!(hex::encode(root(&[b"a"])), GOLDEN_ONE);
        assert_eq!(hex::encode(root(&[b"a", b"b", b"c"])), GOLDEN_THREE);
    }

    const NO_LEAVES: [&[u8]; 0] = [];

    const GOLDEN_EMPTY: &str = "6bc16ac2b2da9e3dfa99058f7630faa694c9689a8032720092b4eaf1dce7b485";
    const GOLDEN_ONE: &str = "ce0b4749d51989d5c0cad5995bd80cf55c0e79ff63e966cdee0e214b71964af3";
    const GOLDEN_THREE: &str = "d5f13f9cd56d34a1ef5aa76fab9ee1d2788307ce11b84a5833a0a6297d90f8cf";

    #[test]
    fn every_list_of_leaves_has_its_own_root() {
        // Duplicating the odd node (Bitcoin) would make these equal.
        assert_ne!(root(&[b"a", b"b", b"c"]), root(&[b"a", b"b", b"c", b"c"]));
        // The leaf count is bound: one leaf is not its own tree's top.
        assert_ne!(root(&[b"a"]), leaf_hash(b"a"));
        assert_ne!(root(&[b"a", b"b"]), root(&[b"b", b"a"]));
        assert_ne!(root(&NO_LEAVES), root(&[b""]));
    }

    #[test]
    fn a_node_is_never_a_leaf() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut concatenated = a.to_vec();
        concatenated.extend_from_slice(&b);
        assert_ne!(leaf_hash(&concatenated), node_hash(&a, &b));
        // The two-leaf tree's top cannot be presented as a one-leaf tree.
        assert_ne!(root(&[b"a", b"b"]), root(&[concatenated]));
    }

    #[test]
    fn every_proof_verifies_and_every_tamper_fails() {
        for count in 1..=33usize {
            let leaves = leaves(count);
            let tree = MerkleTree::from_leaves(&leaves);
            let root = tree.root();
            for (index, leaf) in leaves.iter().enumerate() {
                let proof = tree.proof(index);
                assert!(proof.verify(&root, leaf), "leaf {index} of {count}");
                assert_eq!(proof.siblings().len(), sibling_count(index as u64, count as u64));

                for bit in 0..leaf.len() * 8 {
                    let mut flipped = leaf.clone();
                    flipped[bit / 8] ^= 1 << (bit % 8);
                    assert!(!proof.verify(&root, &flipped), "leaf {index} of {count}, bit {bit}");
                }
                let mut longer = leaf.clone();
                longer.push(0);
                assert!(!proof.verify(&root, &longer));
                for other in (0..count + 2).filter(|&other| other != index) {
                    let wrong = InclusionProof { leaf_index: other as u64, ..proof.clone() };
                    assert!(!wrong.verify(&root, leaf), "leaf {index} of {count} as {other}");
                }
                for other in (0..count + 3).filter(|&other| other != count) {
                    let wrong = InclusionProof { leaf_count: other as u64, ..proof.clone() };
                    assert!(!wrong.verify(&root, leaf), "leaf {index} of {count} in a tree of {other}");
                }
                for sibling in 0..proof.siblings.len() {
                    for bit in [0, 77, 255] {
                        let mut wrong = proof.clone();
                        wrong.siblings[sibling][bit / 8] ^= 1 << (bit % 8);
                        assert!(!wrong.verify(&root, leaf), "leaf {index} of {count}, sibling {sibling}");
                    }
                    let mut missing = proof.clone();
                    missing.siblings.remove(sibling);
                    assert!(!missing.verify(&root, leaf));
                }
                let mut extra = proof.clone();
                extra.siblings.push([0; 32]);
                assert!(!extra.verify(&root, leaf));
                let mut front = proof.clone();
                front.siblings.insert(0, leaf_hash(leaf));
                assert!(!front.verify(&root, leaf));
                // Another leaf's proof does not prove this leaf.
                if count > 1 {
                    let neighbour = tree.proof((index + 1) % count);
                    assert!(!neighbour.verify(&root, leaf));
                }
            }
        }
    }

    #[test]
    fn the_empty_tree_has_no_proofs() {
        let tree = MerkleTree::from_leaf_hashes(Vec::new());
        assert_eq!(tree.root(), empty_root());
        assert_eq!(tree.leaf_count(), 0);
        assert!(std::panic::catch_unwind(|| tree.proof(0)).is_err());
        let nothing = InclusionProof { leaf_index: 0, leaf_count: 0, siblings: Vec::new() };
        assert!(!nothing.verify(&empty_root(), b""));
    }

    #[test]
    fn proofs_round_trip_and_refuse_every_bit_flip() {
        for count in [1usize, 2, 3, 5, 8, 13, 33] {
            let leaves = leaves(count);
            let tree = MerkleTree::from_leaves(&leaves);
            for (index, leaf) in leaves.iter().enumerate() {
                let proof = tree.proof(index);
                let bytes = proof.encode();
                assert_eq!(bytes.len(), proof.encoded_bytes());
                assert_eq!(&bytes[0..8], &(index as u64).to_le_bytes());
                assert_eq!(&bytes[8..16], &(count as u64).to_le_bytes());
                assert_eq!(usize::from(bytes[16]), proof.siblings().len());
                assert_eq!(InclusionProof::decode(&bytes), Ok(proof.clone()));
                for bit in 0..bytes.len() * 8 {
                    let mut flipped = bytes.clone();
                    flipped[bit / 8] ^= 1 << (bit % 8);
                    if let Ok(decoded) = InclusionProof::decode(&flipped) {
                        assert!(!decoded.verify(&tree.root(), leaf), "{count} leaves, bit {bit}");
                    }
                }
                for cut in 0..bytes.len() {
                    assert!(InclusionProof::decode(&bytes[..cut]).is_err());
                }
                let mut trailing = bytes.clone();
                trailing.push(0);
                assert!(InclusionProof::decode(&trailing).is_err());
            }
        }
    }

    fn proof_bytes(index: u64, count: u64, siblings: u8) -> Vec<u8> {
        let mut bytes = index.to_le_bytes().to_vec();
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.push(siblings);
        bytes.extend(std::iter::repeat_n(7u8, 32 * usize::from(siblings)));
        bytes
    }

    #[test]
    fn proof_decoding_refuses_absurd_positions() {
        assert_eq!(InclusionProof::decode(&proof_bytes(0, 0, 0)), Err(AnchorError::ProofLeafCount { count: 0 }));
        assert_eq!(
            InclusionProof::decode(&proof_bytes(0, 1 << 32, 32)),
            Err(AnchorError::ProofLeafCount { count: 1 << 32 })
        );
        assert_eq!(
            InclusionProof::decode(&proof_bytes(u64::MAX, u64::MAX, 64)),
            Err(AnchorError::ProofLeafCount { count: u64::MAX })
        );
        assert_eq!(
            InclusionProof::decode(&proof_bytes(3, 3, 1)),
            Err(AnchorError::LeafIndexOutOfRange { index: 3, count: 3 })
        );
        assert_eq!(
            InclusionProof::decode(&proof_bytes(2, 3, 2)),
            Err(AnchorError::SiblingCount { expected: 1, found: 2 })
        );
        assert_eq!(
            InclusionProof::decode(&proof_bytes(0, 3, 255)),
            Err(AnchorError::SiblingCount { expected: 2, found: 255 })
        );
        let largest = InclusionProof::decode(&proof_bytes(0, LEAF_COUNT_MAX, 32)).unwrap();
        assert_eq!(largest.encoded_bytes(), PROOF_BYTES_MAX);
        assert!(InclusionProof::decode(&proof_bytes(LEAF_COUNT_MAX - 1, LEAF_COUNT_MAX, 31)).is_ok());
        assert_eq!(InclusionProof::decode(&proof_bytes(0, 1, 0)).unwrap().siblings().len(), 0);
    }

    fn data_leaf(kind: DataLeafKind, stream: &str, base_offset: u64, index: u8) -> DataLeaf {
        DataLeaf {
            kind,
            stream: stream.to_string(),
            base_offset,
            next_offset: base_offset + 10,
            index,
            root: [base_offset as u8 ^ index; 32],
        }
    }

    #[test]
    fn data_leaves_round_trip_and_follow_the_layout() {
        let segment = data_leaf(DataLeafKind::Segment, "orders", 0x0102, 0);
        let bytes = segment.encode();
        assert_eq!(bytes.len(), DATA_LEAF_HEADER_BYTES + 6);
        assert_eq!(&bytes[0..4], &[1, 0, 6, 0]);
        assert_eq!(&bytes[4..12], &0x0102u64.to_le_bytes());
        assert_eq!(&bytes[12..20], &0x010cu64.to_le_bytes());
        assert_eq!(&bytes[20..52], &segment.root);
        assert_eq!(&bytes[52..], b"orders");
        assert_eq!(DataLeaf::decode(&bytes), Ok(segment));

        let shard = data_leaf(DataLeafKind::Shard, &"s".repeat(STREAM_NAME_BYTES_MAX), 5, 255);
        let bytes = shard.encode();
        assert_eq!(bytes.len(), DATA_LEAF_BYTES_MAX);
        assert_eq!(&bytes[0..4], &[2, 255, 200, 0]);
        assert_eq!(DataLeaf::decode(&bytes), Ok(shard));

        let empty_range = DataLeaf { next_offset: 7, ..data_leaf(DataLeafKind::Segment, "é", 7, 0) };
        assert_eq!(DataLeaf::decode(&empty_range.encode()), Ok(empty_range));
    }

    #[test]
    fn data_leaf_decoding_refuses_broken_rules() {
        let good = data_leaf(DataLeafKind::Shard, "orders", 100, 3).encode();
        let with = |at: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[at] = value;
            DataLeaf::decode(&bytes)
        };
        assert_eq!(with(0, 0), Err(AnchorError::UnknownLeafKind { tree: Tree::Data, kind: 0 }));
        assert_eq!(with(0, 0x10), Err(AnchorError::UnknownLeafKind { tree: Tree::Data, kind: 0x10 }));
        assert_eq!(with(0, 1), Err(AnchorError::SegmentWithShardIndex { index: 3 }));
        assert_eq!(with(2, 0), Err(AnchorError::StreamNameLength { bytes: 0 }));
        assert_eq!(with(2, 201), Err(AnchorError::StreamNameLength { bytes: 201 }));
        assert_eq!(with(3, 1), Err(AnchorError::StreamNameLength { bytes: 262 }));
        assert_eq!(with(2, 5), Err(AnchorError::WrongLength { what: "data leaf", expected: 57, actual: 58 }));
        assert_eq!(with(53, 0xff), Err(AnchorError::StreamNameNotUtf8));
        // next_offset 100 + 10 with its top byte set is fine; below base is not.
        assert_eq!(with(19, 0x80).map(|leaf| leaf.next_offset), Ok(110 | 0x80 << 56));
        assert_eq!(
            with(11, 0x80),
            Err(AnchorError::OffsetsBackwards { base_offset: 100 | 0x80 << 56, next_offset: 110 })
        );
        assert!(DataLeaf::decode(&[]).is_err());
        for cut in 0..good.len() {
            assert!(DataLeaf::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(b's');
        assert!(DataLeaf::decode(&trailing).is_err());
    }

    fn keys() -> (Keypair, Keypair) {
        (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]))
    }

    fn usage_leaves(node: &Keypair, consumer: &Keypair) -> Vec<UsageLeaf> {
        let usage = CustomerUsage { transferred_bytes: 1, stored_bytes: 2, number_of_puts: 3, number_of_gets: 4 };
        vec![
            UsageLeaf::Ack(ConsumerAck::sign(consumer, 9, node.account(), [2; 16], 5, 4096, 2)),
            UsageLeaf::Bucket { bucket: 9, usage },
            UsageLeaf::Node {
                usage: NodeUsage { transferred_bytes: 10, stored_bytes: 20, number_of_puts: 30, number_of_gets: 40 },
            },
            UsageLeaf::Bucket { bucket: 0, usage: CustomerUsage::default() },
            UsageLeaf::Ack(ConsumerAck::sign(consumer, 9, node.account(), [1; 16], 7, 100, 1)),
            UsageLeaf::Ack(ConsumerAck::sign(consumer, 3, node.account(), [9; 16], 1, 1, 1)),
        ]
    }

    #[test]
    fn usage_leaves_round_trip_and_follow_the_layout() {
        let (node, consumer) = keys();
        for leaf in usage_leaves(&node, &consumer) {
            let bytes = leaf.encode();
            assert_eq!(bytes[0], leaf.kind().byte());
            match leaf {
                UsageLeaf::Bucket { bucket, usage } => {
                    assert_eq!(bytes.len(), 41);
                    assert_eq!(&bytes[1..9], &bucket.to_le_bytes());
                    assert_eq!(&bytes[9..], &usage.encode());
                }
                UsageLeaf::Node { usage } => assert_eq!(&bytes[1..], &usage.encode()),
                UsageLeaf::Ack(ack) => assert_eq!(&bytes[1..], &ack.encode()),
            }
            assert_eq!(UsageLeaf::decode(&bytes), Ok(leaf));
            for cut in 0..bytes.len() {
                assert!(UsageLeaf::decode(&bytes[..cut]).is_err());
            }
            let mut trailing = bytes.clone();
            trailing.push(0);
            assert!(UsageLeaf::decode(&trailing).is_err());
            // A usage leaf is never a data leaf.
            assert!(matches!(DataLeaf::decode(&bytes), Err(AnchorError::UnknownLeafKind { tree: Tree::Data, .. })));
        }
    }

    #[test]
    fn usage_leaf_decoding_refuses_broken_rules() {
        let (node, consumer) = keys();
        let ack = ConsumerAck::sign(&consumer, 9, node.account(), [2; 16], 5, 4096, 2);
        let bytes = UsageLeaf::Ack(ack).encode();
        for kind in [0u8, 1, 2, 0x0f, 0x13, 0xff] {
            let mut other = bytes.clone();
            other[0] = kind;
            assert_eq!(UsageLeaf::decode(&other), Err(AnchorError::UnknownLeafKind { tree: Tree::Usage, kind }));
        }
        let mut as_bucket = bytes.clone();
        as_bucket[0] = UsageLeafKind::Bucket.byte();
        assert_eq!(
            UsageLeaf::decode(&as_bucket),
            Err(AnchorError::WrongLength { what: "usage leaf", expected: 41, actual: 185 })
        );
        let mut forged = bytes.clone();
        forged[1 + 104] ^= 1; // cumulative_bytes
        assert_eq!(UsageLeaf::decode(&forged), Err(AnchorError::BadAckSignature { consumer: consumer.account() }));
        let mut versioned = bytes.clone();
        versioned[1] = 2;
        assert!(matches!(UsageLeaf::decode(&versioned), Err(AnchorError::Usage(_))));
        let mut reserved = bytes.clone();
        reserved[2] = 1;
        assert!(matches!(UsageLeaf::decode(&reserved), Err(AnchorError::Usage(_))));
        assert!(UsageLeaf::decode(&[]).is_err());
        let invalid = UsageLeaf::Ack(ConsumerAck { cumulative_gets: 3, ..ack });
        assert_eq!(invalid.check(), Err(AnchorError::BadAckSignature { consumer: consumer.account() }));
        assert_eq!(
            UsageTree::build(vec![invalid]).unwrap_err(),
            AnchorError::BadAckSignature { consumer: consumer.account() }
        );
    }

    #[test]
    fn garbage_is_refused_or_canonical() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (node, consumer) = keys();
        let samples: Vec<Vec<u8>> = usage_leaves(&node, &consumer)
            .iter()
            .map(UsageLeaf::encode)
            .chain([data_leaf(DataLeafKind::Segment, "x", 1, 0).encode()])
            .collect();
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = rng.gen_range(0..300);
                (0..len).map(|_| rng.gen()).collect()
            } else {
                // A real leaf with a few random bytes changed, to get past the
                // kind and length checks.
                let mut bytes = samples[round % samples.len()].clone();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] = rng.gen();
                }
                bytes
            };
            if let Ok(leaf) = DataLeaf::decode(&bytes) {
                assert_eq!(leaf.encode(), bytes);
            }
            if let Ok(leaf) = UsageLeaf::decode(&bytes) {
                assert_eq!(leaf.encode(), bytes);
            }
            if let Ok(proof) = InclusionProof::decode(&bytes) {
                assert_eq!(proof.encode(), bytes);
            }
        }
    }

    #[test]
    fn trees_sort_leaves_and_prove_each() {
        let leaves = vec![
            data_leaf(DataLeafKind::Shard, "orders", 0, 1),
            data_leaf(DataLeafKind::Segment, "orders", 10, 0),
            data_leaf(DataLeafKind::Segment, "clicks", 50, 0),
            data_leaf(DataLeafKind::Shard, "orders", 0, 0),
            data_leaf(DataLeafKind::Segment, "orders", 0, 0),
        ];
        let tree = DataTree::build(leaves.clone()).unwrap();
        let order: Vec<_> =
            tree.leaves().iter().map(|leaf| (leaf.stream.as_str(), leaf.base_offset, leaf.kind, leaf.index)).collect();
        assert_eq!(
            order,
            vec![
                ("clicks", 50, DataLeafKind::Segment, 0),
                ("orders", 0, DataLeafKind::Segment, 0),
                ("orders", 0, DataLeafKind::Shard, 0),
                ("orders", 0, DataLeafKind::Shard, 1),
                ("orders", 10, DataLeafKind::Segment, 0),
            ]
        );
        let encoded: Vec<Vec<u8>> = tree.leaves().iter().map(DataLeaf::encode).collect();
        assert_eq!(tree.root(), root(&encoded));
        assert_eq!(tree.leaf_count(), 5);
        let mut reversed = leaves.clone();
        reversed.reverse();
        assert_eq!(DataTree::build(reversed).unwrap().root(), tree.root());
        for leaf in &leaves {
            let index = tree.position(leaf).unwrap();
            assert!(tree.proof(index).verify(&tree.root(), &leaf.encode()));
        }
        let absent = data_leaf(DataLeafKind::Segment, "orders", 20, 0);
        assert_eq!(tree.position(&absent), None);
        let same_key = DataLeaf { root: [0xee; 32], ..leaves[1].clone() };
        assert_eq!(tree.position(&same_key), None);

        let (node, consumer) = keys();
        let usage = usage_leaves(&node, &consumer);
        let tree = UsageTree::build(usage.clone()).unwrap();
        let kinds: Vec<_> = tree.leaves().iter().map(UsageLeaf::kind).collect();
        use UsageLeafKind::{Ack, Bucket, Node};
        assert_eq!(kinds, vec![Bucket, Bucket, Node, Ack, Ack, Ack]);
        assert!(matches!(tree.leaves()[0], UsageLeaf::Bucket { bucket: 0, .. }));
        let sessions: Vec<_> = tree
            .leaves()
            .iter()
            .filter_map(|leaf| match leaf {
                UsageLeaf::Ack(ack) => Some((ack.bucket, ack.session_nonce[0])),
                _ => None,
            })
            .collect();
        assert_eq!(sessions, vec![(3, 9), (9, 1), (9, 2)]);
        let mut shuffled = usage.clone();
        shuffled.rotate_left(2);
        assert_eq!(UsageTree::build(shuffled).unwrap().root(), tree.root());
        for leaf in &usage {
            assert!(tree.proof(tree.position(leaf).unwrap()).verify(&tree.root(), &leaf.encode()));
        }

        let empty = UsageTree::build(Vec::new()).unwrap();
        assert_eq!((empty.root(), empty.leaf_count()), (empty_root(), 0));
    }

    #[test]
    fn trees_refuse_duplicates_and_invalid_leaves() {
        let segment = data_leaf(DataLeafKind::Segment, "orders", 0, 0);
        let rerooted = DataLeaf { root: [1; 32], ..segment.clone() };
        assert_eq!(
            DataTree::build(vec![segment.clone(), rerooted]).unwrap_err(),
            AnchorError::DuplicateDataLeaf {
                stream: "orders".to_string(),
                base_offset: 0,
                kind: DataLeafKind::Segment,
                index: 0
            }
        );
        assert!(DataTree::build(vec![segment.clone(), segment.clone()]).is_err());
        let nameless = DataLeaf { stream: String::new(), ..segment.clone() };
        assert_eq!(DataTree::build(vec![nameless]).unwrap_err(), AnchorError::StreamNameLength { bytes: 0 });

        let (node, consumer) = keys();
        let usage = CustomerUsage::default();
        assert_eq!(
            UsageTree::build(vec![UsageLeaf::Bucket { bucket: 4, usage }, UsageLeaf::Bucket { bucket: 4, usage }])
                .unwrap_err(),
            AnchorError::DuplicateBucket { bucket: 4 }
        );
        let node_leaf = UsageLeaf::Node { usage: NodeUsage::default() };
        let other_node_leaf = UsageLeaf::Node { usage: NodeUsage { number_of_gets: 1, ..NodeUsage::default() } };
        assert_eq!(UsageTree::build(vec![node_leaf, other_node_leaf]).unwrap_err(), AnchorError::DuplicateNodeUsage);
        let first = ConsumerAck::sign(&consumer, 9, node.account(), [2; 16], 5, 4096, 2);
        let later = ConsumerAck::sign(&consumer, 9, node.account(), [2; 16], 6, 8192, 3);
        assert_eq!(
            UsageTree::build(vec![UsageLeaf::Ack(first), UsageLeaf::Ack(later)]).unwrap_err(),
            AnchorError::DuplicateAckSession { bucket: 9, consumer: consumer.account(), session_nonce: [2; 16] }
        );
    }
}
