//! The anchor record a node puts on the Cere chain for each era, the proof
//! bundle that ties one leaf to it, and the crate's error type.
//!
//! An [`AnchorRecord`] carries the era's data and usage roots
//! ([`crate::merkle`]) and the node's usage totals, signed by the node key.
//! It goes on chain as the bytes of a `System.remark_with_event` remark,
//! exactly [`RECORD_BYTES`] of them. A [`RecordProof`] bundles one leaf, its
//! inclusion proof and the record; a third party holding only the bundle and
//! the remark bytes read from the chain checks it with
//! [`RecordProof::verify_against`].
//!
//! # Record encoding
//!
//! A record is [`RECORD_BYTES`] (252) bytes, integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic, `"DDCA"` ([`RECORD_MAGIC`]) |
//! | 4 | version, 1 |
//! | 5..8 | reserved, zero |
//! | 8..28 | cluster id, 20 bytes (an H160 on the Cere chain, e.g. `0x00…01`) |
//! | 28..60 | node account (ed25519 public key) that signs |
//! | 60..68 | era (`u64`) |
//! | 68..76 | start_ms (`u64`, Unix ms, first instant of the era) |
//! | 76..84 | end_ms (`u64`, Unix ms, first instant after the era), greater than start_ms |
//! | 84..116 | data_root, root of the data tree |
//! | 116..148 | usage_root, root of the usage tree |
//! | 148..152 | data_leaves (`u32`), leaves of the data tree |
//! | 152..156 | usage_leaves (`u32`), leaves of the usage tree |
//! | 156..188 | totals, the node's usage in the era ([`NodeUsage::encode`]) |
//! | 188..252 | ed25519 signature by the node |
//!
//! The node signs [`RECORD_SIGNING_DOMAIN`] (`"ddc anchor record v1"`, 20
//! bytes) followed by bytes `0..188`; the domain keeps the signature from
//! being valid as any other message the node key signs. A root is
//! [`crate::merkle::empty_root`] exactly when its tree has no leaves.
//! Decoding checks the length, magic, version, reserved bytes, that the era
//! is not empty, the empty roots, and the signature (strictly, see
//! [`Account::verify`]), so every byte is either checked or signed.
//!
//! Worked example, the record of the `golden_vector` test: node key from seed
//! `[1; 32]`, cluster `0x00…01`, era 42 from 1 700 000 000 000 ms for one
//! hour, roots `11…` and `22…` (not real trees) of 3 and 5 leaves. Ed25519
//! signing is deterministic, so the signature is part of the vector; it was
//! also checked with another implementation (Python `cryptography`).
//!
//! ```text
//! 44444341                                                          magic "DDCA"
//! 01 000000                                                         version 1, reserved
//! 0000000000000000000000000000000000000001                          cluster_id 0x00…01
//! 8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c  node
//! 2a00000000000000                                                  era 42
//! 0068e5cf8b010000                                                  start_ms 1700000000000
//! 80561cd08b010000                                                  end_ms 1700003600000
//! 1111111111111111111111111111111111111111111111111111111111111111  data_root
//! 2222222222222222222222222222222222222222222222222222222222222222  usage_root
//! 03000000 05000000                                                 data_leaves 3, usage_leaves 5
//! 00a0724e18090000 0000000000000100                                 totals: transferred_bytes 10^13, stored_bytes 2^48
//! 0700000000000000 e803000000000000                                 totals: number_of_puts 7, number_of_gets 1000
//! 4b316510bda8c66a23e6aec5c9027a091bd404160b3938a8ee7776755283da56  signature
//! bb90767e87f964bfaba0952847210f471cea05488fdcac725c71f1e99759d60a
//! ```
//!
//! # Proof bundle encoding
//!
//! [`RecordProof::encode`], integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic, `"DDRP"` ([`RECORD_PROOF_MAGIC`]) |
//! | 4 | version, 1 |
//! | 5 | tree: 1 data, 2 usage ([`Tree`]) |
//! | 6..8 | leaf length `ℓ` (`u16`), at most [`LEAF_BYTES_MAX`] |
//! | 8..260 | the anchor record, as above |
//! | 260..260+ℓ | the leaf: a [`DataLeaf`] or [`UsageLeaf`] encoding, of the named tree |
//! | then | the [`InclusionProof`] encoding, to the last byte |
//!
//! Decoding checks every part as its own decoder does (the record's
//! signature included) and refuses trailing bytes. It does not check that
//! the leaf is in the tree; [`RecordProof::verify_against`] does.

use std::fmt;

use ddc_auth::account::{Account, Keypair};
use ddc_auth::usage::{NodeUsage, UsageError, USAGE_BYTES};

use crate::merkle::{
    empty_root, read_array, read_u64, DataLeaf, DataLeafKind, InclusionProof, Leaf, LeafTree, Tree, UsageLeaf,
    LEAF_BYTES_MAX, LEAF_COUNT_MAX,
};

/// The first four bytes of every encoded [`AnchorRecord`].
pub const RECORD_MAGIC: &[u8; 4] = b"DDCA";

/// The record encoding version this module writes and accepts.
pub const RECORD_VERSION: u8 = 1;

/// Bytes of one encoded [`AnchorRecord`].
pub const RECORD_BYTES: usize = 252;

/// Prefix of the message a node signs to anchor an era.
pub const RECORD_SIGNING_DOMAIN: &[u8; 20] = b"ddc anchor record v1";

/// Bytes of the message the node signs.
pub const RECORD_SIGNING_MESSAGE_BYTES: usize = RECORD_SIGNING_DOMAIN.len() + RECORD_SIGNED_BYTES;

/// The first four bytes of every encoded [`RecordProof`].
pub const RECORD_PROOF_MAGIC: &[u8; 4] = b"DDRP";

/// The proof bundle encoding version this module writes and accepts.
pub const RECORD_PROOF_VERSION: u8 = 1;

/// Bytes of a proof bundle before its record.
pub const RECORD_PROOF_HEADER_BYTES: usize = 8;

const RECORD_SIGNED_BYTES: usize = OFFSET_SIGNATURE;

const OFFSET_MAGIC: usize = 0;
const OFFSET_VERSION: usize = 4;
const OFFSET_RESERVED: usize = 5;
const OFFSET_CLUSTER: usize = 8;
const OFFSET_NODE: usize = 28;
const OFFSET_ERA: usize = 60;
const OFFSET_START: usize = 68;
const OFFSET_END: usize = 76;
const OFFSET_DATA_ROOT: usize = 84;
const OFFSET_USAGE_ROOT: usize = 116;
const OFFSET_DATA_LEAVES: usize = 148;
const OFFSET_USAGE_LEAVES: usize = 152;
const OFFSET_TOTALS: usize = 156;
const OFFSET_SIGNATURE: usize = 188;

const _: () = assert!(OFFSET_VERSION == OFFSET_MAGIC + RECORD_MAGIC.len());
const _: () = assert!(OFFSET_RESERVED == OFFSET_VERSION + 1);
const _: () = assert!(OFFSET_CLUSTER == OFFSET_RESERVED + 3);
const _: () = assert!(OFFSET_NODE == OFFSET_CLUSTER + 20);
const _: () = assert!(OFFSET_ERA == OFFSET_NODE + 32);
const _: () = assert!(OFFSET_START == OFFSET_ERA + 8);
const _: () = assert!(OFFSET_END == OFFSET_START + 8);
const _: () = assert!(OFFSET_DATA_ROOT == OFFSET_END + 8);
const _: () = assert!(OFFSET_USAGE_ROOT == OFFSET_DATA_ROOT + 32);
const _: () = assert!(OFFSET_DATA_LEAVES == OFFSET_USAGE_ROOT + 32);
const _: () = assert!(OFFSET_USAGE_LEAVES == OFFSET_DATA_LEAVES + 4);
const _: () = assert!(OFFSET_TOTALS == OFFSET_USAGE_LEAVES + 4);
const _: () = assert!(OFFSET_SIGNATURE == OFFSET_TOTALS + USAGE_BYTES);
const _: () = assert!(RECORD_BYTES == OFFSET_SIGNATURE + 64);
const _: () = assert!(LEAF_COUNT_MAX == u32::MAX as u64);
const _: () = assert!(LEAF_BYTES_MAX <= u16::MAX as usize);

/// Why bytes are not an anchor record, a proof bundle, a leaf or an
/// inclusion proof, or why a proof does not hold. Each variant names the
/// rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// Not exactly the length the encoding has.
    #[error("{what}: expected {expected} bytes, got {actual}")]
    WrongLength {
        /// What was being decoded.
        what: &'static str,
        /// The length the encoding has.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// Fewer bytes than the shortest encoding.
    #[error("{what}: at least {minimum} bytes, got {actual}")]
    TooShort {
        /// What was being decoded.
        what: &'static str,
        /// The shortest encoding.
        minimum: usize,
        /// The length given.
        actual: usize,
    },
    /// The bytes do not start with [`RECORD_MAGIC`].
    #[error("not an anchor record: the first bytes are {found:02x?}, not \"DDCA\"")]
    NotAnAnchorRecord {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The bytes do not start with [`RECORD_PROOF_MAGIC`].
    #[error("not a record proof: the first bytes are {found:02x?}, not \"DDRP\"")]
    NotARecordProof {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A version this code does not read.
    #[error("{what} version {found} is not supported (this node reads version {supported})")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version found.
        found: u8,
        /// The version this code reads.
        supported: u8,
    },
    /// A reserved byte that is not zero.
    #[error("{what}: byte {offset} is reserved and must be zero, found {value:#04x}")]
    NonZeroReserved {
        /// What was being decoded.
        what: &'static str,
        /// Offset of the byte.
        offset: usize,
        /// Its value.
        value: u8,
    },
    /// The era does not end after it starts.
    #[error("era end_ms {end_ms} is not after start_ms {start_ms}")]
    EmptyEra {
        /// The stated start.
        start_ms: u64,
        /// The stated end.
        end_ms: u64,
    },
    /// A root is the empty tree's root but its tree has leaves, or the other
    /// way round.
    #[error("the {tree} root {} the empty tree's root, but the record counts {leaves} leaves", empty_or_not(*leaves))]
    EmptyRootMismatch {
        /// Which root.
        tree: Tree,
        /// The leaf count the record states.
        leaves: u32,
    },
    /// The record's signature is not the node's over the record.
    #[error("anchor record signature does not verify for node {node}")]
    BadSignature {
        /// The node the record claims signed it.
        node: Account,
    },
    /// A proof's leaf count is 0 or above [`LEAF_COUNT_MAX`].
    #[error("an inclusion proof is for a tree of 1 to {LEAF_COUNT_MAX} leaves, not {count}")]
    ProofLeafCount {
        /// The count the proof states.
        count: u64,
    },
    /// A proof's leaf index is not below its leaf count.
    #[error("an inclusion proof for leaf {index} of a tree of {count} leaves")]
    LeafIndexOutOfRange {
        /// The index the proof states.
        index: u64,
        /// The count the proof states.
        count: u64,
    },
    /// A proof's sibling count is not the one its position needs.
    #[error("the inclusion proof's position needs {expected} siblings, it has {found}")]
    SiblingCount {
        /// What the index and count need.
        expected: usize,
        /// What the proof holds.
        found: usize,
    },
    /// A leaf's kind byte names no leaf of the tree.
    #[error("{kind:#04x} is not the kind of a {tree} leaf")]
    UnknownLeafKind {
        /// The tree the leaf was decoded for.
        tree: Tree,
        /// The kind byte.
        kind: u8,
    },
    /// A data leaf's stream name is empty or longer than 200 bytes.
    #[error("a stream name is 1 to 200 bytes, not {bytes}")]
    StreamNameLength {
        /// Its length.
        bytes: usize,
    },
    /// A data leaf's stream name is not UTF-8.
    #[error("a data leaf's stream name is not UTF-8")]
    StreamNameNotUtf8,
    /// A segment's data leaf has a shard index other than 0.
    #[error("a segment's data leaf has shard index {index}, not 0")]
    SegmentWithShardIndex {
        /// The index.
        index: u8,
    },
    /// A data leaf's next_offset is below its base_offset.
    #[error("a data leaf's next_offset {next_offset} is below its base_offset {base_offset}")]
    OffsetsBackwards {
        /// The stated base offset.
        base_offset: u64,
        /// The stated next offset.
        next_offset: u64,
    },
    /// A usage leaf's usage or acknowledgment does not decode.
    #[error("usage leaf: {0}")]
    Usage(UsageError),
    /// A usage leaf's acknowledgment is not signed by its consumer.
    #[error("the consumer ack of a usage leaf does not verify for {consumer}")]
    BadAckSignature {
        /// The consumer the acknowledgment names.
        consumer: Account,
    },
    /// More leaves than a tree may have.
    #[error("{count} leaves, a tree has at most {LEAF_COUNT_MAX}")]
    TooManyLeaves {
        /// The number of leaves given.
        count: usize,
    },
    /// Two data leaves for the same segment or shard.
    #[error("two data leaves for {kind:?} {index} of stream {stream:?} at base_offset {base_offset}")]
    DuplicateDataLeaf {
        /// The stream.
        stream: String,
        /// The base offset.
        base_offset: u64,
        /// Segment or shard.
        kind: DataLeafKind,
        /// The shard index.
        index: u8,
    },
    /// Two usage leaves for the same bucket.
    #[error("two usage leaves for bucket {bucket}")]
    DuplicateBucket {
        /// The bucket id.
        bucket: u64,
    },
    /// Two node usage leaves.
    #[error("two node usage leaves")]
    DuplicateNodeUsage,
    /// Two acknowledgments of the same session.
    #[error("two consumer acks of the session {} of {consumer} in bucket {bucket}", hex::encode(session_nonce))]
    DuplicateAckSession {
        /// The bucket.
        bucket: u64,
        /// The consumer.
        consumer: Account,
        /// The session nonce.
        session_nonce: [u8; 16],
    },
    /// A proof bundle's tree byte names no tree.
    #[error("tree byte {byte} names no tree (1 data, 2 usage)")]
    UnknownTree {
        /// The byte.
        byte: u8,
    },
    /// The record in the chain's remark is not the bundled one.
    #[error("the anchor record on chain is not the one in the proof")]
    RecordMismatch,
    /// The proof's leaf count is not the record's for that tree.
    #[error("the proof is for a {tree} tree of {proof} leaves, the record counts {record}")]
    LeafCountMismatch {
        /// The tree.
        tree: Tree,
        /// The count the proof states.
        proof: u64,
        /// The count the record states.
        record: u32,
    },
    /// The leaf and proof do not lead to the record's root.
    #[error("the leaf and its proof do not lead to the record's {tree} root")]
    WrongRoot {
        /// The tree whose root was not reached.
        tree: Tree,
    },
}

/// How [`AnchorError::EmptyRootMismatch`] describes the root: with no
/// leaves, the root is wrong for not being the empty root.
fn empty_or_not(leaves: u32) -> &'static str {
    if leaves == 0 {
        "is not"
    } else {
        "is"
    }
}

/// Everything in an anchor record that the node states: the record but the
/// node account and signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AnchorFields {
    /// The chain's cluster id (an H160).
    pub cluster_id: [u8; 20],
    /// The era number.
    pub era: u64,
    /// First instant of the era, Unix ms.
    pub start_ms: u64,
    /// First instant after the era, Unix ms; greater than `start_ms`.
    pub end_ms: u64,
    /// Root of the era's data tree ([`crate::merkle::DataTree`]).
    pub data_root: [u8; 32],
    /// Root of the era's usage tree ([`crate::merkle::UsageTree`]).
    pub usage_root: [u8; 32],
    /// Leaves of the data tree.
    pub data_leaves: u32,
    /// Leaves of the usage tree.
    pub usage_leaves: u32,
    /// The node's usage in the era.
    pub totals: NodeUsage,
}

impl AnchorFields {
    /// Whether the fields follow the rules [`AnchorRecord::decode`] checks:
    /// the era ends after it starts, and a root is the empty tree's root
    /// exactly when its tree has no leaves.
    pub fn check(&self) -> Result<(), AnchorError> {
        if self.end_ms <= self.start_ms {
            return Err(AnchorError::EmptyEra { start_ms: self.start_ms, end_ms: self.end_ms });
        }
        let empty = empty_root();
        for (tree, root, leaves) in
            [(Tree::Data, self.data_root, self.data_leaves), (Tree::Usage, self.usage_root, self.usage_leaves)]
        {
            if (root == empty) != (leaves == 0) {
                return Err(AnchorError::EmptyRootMismatch { tree, leaves });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for AnchorFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnchorFields")
            .field("cluster_id", &format_args!("0x{}", hex::encode(self.cluster_id)))
            .field("era", &self.era)
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("data_root", &hex::encode(self.data_root))
            .field("usage_root", &hex::encode(self.usage_root))
            .field("data_leaves", &self.data_leaves)
            .field("usage_leaves", &self.usage_leaves)
            .field("totals", &self.totals)
            .finish()
    }
}

/// A node's signed anchor of one era; the module documentation describes
/// the encoding.
///
/// Built by [`AnchorRecord::sign`] or [`AnchorRecord::decode`], so the
/// signature verifies; the fields are public for reading, and a record
/// changed afterwards no longer decodes once encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AnchorRecord {
    /// The node that signs.
    pub node: Account,
    /// What the node states.
    pub fields: AnchorFields,
    /// The node's ed25519 signature over [`AnchorRecord::signing_message`].
    pub signature: [u8; 64],
}

impl AnchorRecord {
    /// Sign `fields` as `node`.
    ///
    /// # Panics
    ///
    /// If [`AnchorFields::check`] fails: the node's own era bookkeeping is
    /// broken, and a record the decoder refuses must not be produced.
    pub fn sign(node: &Keypair, fields: AnchorFields) -> AnchorRecord {
        if let Err(error) = fields.check() {
            panic!("signing an invalid anchor record: {error}");
        }
        let mut record = AnchorRecord { node: node.account(), fields, signature: [0; 64] };
        record.signature = node.sign(&record.signing_message());
        assert!(record.signature_is_valid(), "a record just signed verifies");
        record
    }

    fn encode_signed_fields(&self) -> [u8; RECORD_SIGNED_BYTES] {
        let fields = &self.fields;
        let mut out = [0u8; RECORD_SIGNED_BYTES];
        out[OFFSET_MAGIC..OFFSET_VERSION].copy_from_slice(RECORD_MAGIC);
        out[OFFSET_VERSION] = RECORD_VERSION;
        // Bytes OFFSET_RESERVED..OFFSET_CLUSTER stay zero.
        out[OFFSET_CLUSTER..OFFSET_NODE].copy_from_slice(&fields.cluster_id);
        out[OFFSET_NODE..OFFSET_ERA].copy_from_slice(&self.node.0);
        out[OFFSET_ERA..OFFSET_START].copy_from_slice(&fields.era.to_le_bytes());
        out[OFFSET_START..OFFSET_END].copy_from_slice(&fields.start_ms.to_le_bytes());
        out[OFFSET_END..OFFSET_DATA_ROOT].copy_from_slice(&fields.end_ms.to_le_bytes());
        out[OFFSET_DATA_ROOT..OFFSET_USAGE_ROOT].copy_from_slice(&fields.data_root);
        out[OFFSET_USAGE_ROOT..OFFSET_DATA_LEAVES].copy_from_slice(&fields.usage_root);
        out[OFFSET_DATA_LEAVES..OFFSET_USAGE_LEAVES].copy_from_slice(&fields.data_leaves.to_le_bytes());
        out[OFFSET_USAGE_LEAVES..OFFSET_TOTALS].copy_from_slice(&fields.usage_leaves.to_le_bytes());
        out[OFFSET_TOTALS..OFFSET_SIGNATURE].copy_from_slice(&fields.totals.encode());
        out
    }

    /// The message the node signs: [`RECORD_SIGNING_DOMAIN`] followed by
    /// bytes `0..188` of the encoding.
    pub fn signing_message(&self) -> [u8; RECORD_SIGNING_MESSAGE_BYTES] {
        let mut out = [0u8; RECORD_SIGNING_MESSAGE_BYTES];
        out[..RECORD_SIGNING_DOMAIN.len()].copy_from_slice(RECORD_SIGNING_DOMAIN);
        out[RECORD_SIGNING_DOMAIN.len()..].copy_from_slice(&self.encode_signed_fields());
        out
    }

    /// Whether the signature is the node's over [`Self::signing_message`],
    /// checked strictly ([`Account::verify`]).
    pub fn signature_is_valid(&self) -> bool {
        self.node.verify(&self.signing_message(), &self.signature)
    }

    /// The canonical encoding, [`RECORD_BYTES`] bytes: the remark's content.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_BYTES);
        out.extend_from_slice(&self.encode_signed_fields());
        out.extend_from_slice(&self.signature);
        assert_eq!(out.len(), RECORD_BYTES);
        out
    }

    /// Decode exactly one record and check all of it, in this order: the
    /// length, magic, version, reserved bytes, [`AnchorFields::check`], and
    /// the node's signature.
    pub fn decode(bytes: &[u8]) -> Result<AnchorRecord, AnchorError> {
        const WHAT: &str = "anchor record";
        if bytes.len() != RECORD_BYTES {
            return Err(AnchorError::WrongLength { what: WHAT, expected: RECORD_BYTES, actual: bytes.len() });
        }
        let magic: [u8; 4] = read_array(bytes, OFFSET_MAGIC);
        if &magic != RECORD_MAGIC {
            return Err(AnchorError::NotAnAnchorRecord { found: magic });
        }
        if bytes[OFFSET_VERSION] != RECORD_VERSION {
            return Err(AnchorError::UnsupportedVersion {
                what: WHAT,
                found: bytes[OFFSET_VERSION],
                supported: RECORD_VERSION,
            });
        }
        for (offset, &value) in bytes.iter().enumerate().take(OFFSET_CLUSTER).skip(OFFSET_RESERVED) {
            if value != 0 {
                return Err(AnchorError::NonZeroReserved { what: WHAT, offset, value });
            }
        }
        let fields = AnchorFields {
            cluster_id: read_array(bytes, OFFSET_CLUSTER),
            era: read_u64(bytes, OFFSET_ERA),
            start_ms: read_u64(bytes, OFFSET_START),
            end_ms: read_u64(bytes, OFFSET_END),
            data_root: read_array(bytes, OFFSET_DATA_ROOT),
            usage_root: read_array(bytes, OFFSET_USAGE_ROOT),
            data_leaves: u32::from_le_bytes(read_array(bytes, OFFSET_DATA_LEAVES)),
            usage_leaves: u32::from_le_bytes(read_array(bytes, OFFSET_USAGE_LEAVES)),
            totals: NodeUsage::decode(&bytes[OFFSET_TOTALS..OFFSET_SIGNATURE]).map_err(AnchorError::Usage)?,
        };
        fields.check()?;
        let record = AnchorRecord {
            node: Account(read_array(bytes, OFFSET_NODE)),
            fields,
            signature: read_array(bytes, OFFSET_SIGNATURE),
        };
        if !record.signature_is_valid() {
            return Err(AnchorError::BadSignature { node: record.node });
        }
        debug_assert_eq!(record.encode(), bytes, "decoding is the inverse of encoding");
        Ok(record)
    }

    /// The root of `tree`.
    pub fn root(&self, tree: Tree) -> [u8; 32] {
        match tree {
            Tree::Data => self.fields.data_root,
            Tree::Usage => self.fields.usage_root,
        }
    }

    /// The leaf count of `tree`.
    pub fn leaves(&self, tree: Tree) -> u32 {
        match tree {
            Tree::Data => self.fields.data_leaves,
            Tree::Usage => self.fields.usage_leaves,
        }
    }
}

impl fmt::Debug for AnchorRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnchorRecord")
            .field("node", &self.node)
            .field("fields", &self.fields)
            .field("signature", &hex::encode(self.signature))
            .finish()
    }
}

/// One leaf, its inclusion proof, and the anchor record whose root it leads
/// to: what a third party needs, with the remark bytes from the chain, to
/// check that the node anchored the leaf. The module documentation describes
/// the encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordProof {
    /// The leaf's encoding ([`DataLeaf::encode`] or [`UsageLeaf::encode`]).
    pub leaf: Vec<u8>,
    /// The tree the leaf is in.
    pub tree: Tree,
    /// The leaf's inclusion proof.
    pub proof: InclusionProof,
    /// The record that anchors the tree.
    pub record: AnchorRecord,
}

impl RecordProof {
    /// The bundle for leaf `index` of `tree`, anchored by `record`.
    ///
    /// # Panics
    ///
    /// If `index` is not a leaf of `tree`, or `record` does not carry the
    /// tree's root and leaf count.
    pub fn new<L: Leaf>(record: AnchorRecord, tree: &LeafTree<L>, index: usize) -> RecordProof {
        assert_eq!(record.root(L::TREE), tree.root(), "the record anchors this tree");
        assert_eq!(record.leaves(L::TREE), tree.leaf_count(), "the record counts this tree's leaves");
        let bundle =
            RecordProof { leaf: tree.leaves()[index].encode(), tree: L::TREE, proof: tree.proof(index), record };
        debug_assert!(bundle.check_inclusion().is_ok());
        bundle
    }

    /// The encoding described in the module documentation.
    ///
    /// # Panics
    ///
    /// If the leaf was changed to be longer than [`LEAF_BYTES_MAX`].
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.leaf.len() <= LEAF_BYTES_MAX, "leaves are at most LEAF_BYTES_MAX bytes");
        let mut out =
            Vec::with_capacity(RECORD_PROOF_HEADER_BYTES + RECORD_BYTES + self.leaf.len() + self.proof.encoded_bytes());
        out.extend_from_slice(RECORD_PROOF_MAGIC);
        out.push(RECORD_PROOF_VERSION);
        out.push(self.tree.byte());
        out.extend_from_slice(&(self.leaf.len() as u16).to_le_bytes());
        assert_eq!(out.len(), RECORD_PROOF_HEADER_BYTES);
        out.extend_from_slice(&self.record.encode());
        out.extend_from_slice(&self.leaf);
        out.extend_from_slice(&self.proof.encode());
        out
    }

    /// Decode exactly one bundle, checking each part with its own decoder:
    /// the record (signature included), the leaf as one of the named tree,
    /// and the proof, which must end with the bytes.
    pub fn decode(bytes: &[u8]) -> Result<RecordProof, AnchorError> {
        const WHAT: &str = "record proof";
        const LEAF_AT: usize = RECORD_PROOF_HEADER_BYTES + RECORD_BYTES;
        if bytes.len() < LEAF_AT {
            return Err(AnchorError::TooShort { what: WHAT, minimum: LEAF_AT, actual: bytes.len() });
        }
        let magic: [u8; 4] = read_array(bytes, 0);
        if &magic != RECORD_PROOF_MAGIC {
            return Err(AnchorError::NotARecordProof { found: magic });
        }
        if bytes[4] != RECORD_PROOF_VERSION {
            return Err(AnchorError::UnsupportedVersion {
                what: WHAT,
                found: bytes[4],
                supported: RECORD_PROOF_VERSION,
            });
        }
        let tree = Tree::from_byte(bytes[5]).ok_or(AnchorError::UnknownTree { byte: bytes[5] })?;
        let leaf_bytes = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
        let record = AnchorRecord::decode(&bytes[RECORD_PROOF_HEADER_BYTES..LEAF_AT])?;
        let proof_at = LEAF_AT + leaf_bytes;
        if bytes.len() < proof_at {
            return Err(AnchorError::TooShort { what: WHAT, minimum: proof_at, actual: bytes.len() });
        }
        let leaf = bytes[LEAF_AT..proof_at].to_vec();
        check_leaf(tree, &leaf)?;
        let proof = InclusionProof::decode(&bytes[proof_at..])?;
        let bundle = RecordProof { leaf, tree, proof, record };
        debug_assert_eq!(bundle.encode(), bytes, "decoding is the inverse of encoding");
        Ok(bundle)
    }

    /// Check the bundle against the remark bytes read from the chain: they
    /// decode as a record (signature included) equal to the bundled one, the
    /// leaf is a valid leaf of the named tree, the proof's leaf count is the
    /// record's for that tree, and the leaf and proof lead to the record's
    /// root for that tree.
    pub fn verify_against(&self, record_bytes_from_chain: &[u8]) -> Result<(), AnchorError> {
        let on_chain = AnchorRecord::decode(record_bytes_from_chain)?;
        if on_chain != self.record {
            return Err(AnchorError::RecordMismatch);
        }
        self.check_inclusion()
    }

    /// Everything [`Self::verify_against`] checks after the record matches.
    fn check_inclusion(&self) -> Result<(), AnchorError> {
        check_leaf(self.tree, &self.leaf)?;
        let record_leaves = self.record.leaves(self.tree);
        if self.proof.leaf_count() != u64::from(record_leaves) {
            return Err(AnchorError::LeafCountMismatch {
                tree: self.tree,
                proof: self.proof.leaf_count(),
                record: record_leaves,
            });
        }
        if !self.proof.verify(&self.record.root(self.tree), &self.leaf) {
            return Err(AnchorError::WrongRoot { tree: self.tree });
        }
        Ok(())
    }
}

/// Whether `leaf` is the encoding of a valid leaf of `tree`.
fn check_leaf(tree: Tree, leaf: &[u8]) -> Result<(), AnchorError> {
    match tree {
        Tree::Data => DataLeaf::decode(leaf).map(drop),
        Tree::Usage => UsageLeaf::decode(leaf).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use ddc_auth::usage::{ConsumerAck, CustomerUsage};

    use super::*;
    use crate::merkle::{DataTree, UsageTree};

    fn node_key() -> Keypair {
        Keypair::from_seed([1; 32])
    }

    fn cluster_one() -> [u8; 20] {
        let mut id = [0u8; 20];
        id[19] = 1;
        id
    }

    fn golden_fields() -> AnchorFields {
        AnchorFields {
            cluster_id: cluster_one(),
            era: 42,
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_003_600_000,
            data_root: [0x11; 32],
            usage_root: [0x22; 32],
            data_leaves: 3,
            usage_leaves: 5,
            totals: NodeUsage {
                transferred_bytes: 10_000_000_000_000,
                stored_bytes: 1 << 48,
                number_of_puts: 7,
                number_of_gets: 1000,
            },
        }
    }

    /// The worked example of the module documentation, field by field.
    const GOLDEN: &[&str] = &[
        "44444341",
        "01 000000",
        "0000000000000000000000000000000000000001",
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
        "2a00000000000000",
        "0068e5cf8b010000",
        "80561cd08b010000",
        "1111111111111111111111111111111111111111111111111111111111111111",
        "2222222222222222222222222222222222222222222222222222222222222222",
        "03000000 05000000",
        "00a0724e18090000 0000000000000100",
        "0700000000000000 e803000000000000",
        "4b316510bda8c66a23e6aec5c9027a091bd404160b3938a8ee7776755283da56",
        "bb90767e87f964bfaba0952847210f471cea05488fdcac725c71f1e99759d60a",
    ];

    #[test]
    fn golden_vector() {
        let record = AnchorRecord::sign(&node_key(), golden_fields());
        let bytes = record.encode();
        assert_eq!(hex::encode(&bytes), GOLDEN.concat().replace(' ', ""));
        assert_eq!(AnchorRecord::decode(&bytes), Ok(record));
    }

    #[test]
    fn round_trips_and_follows_the_layout() {
        let node = node_key();
        let record = AnchorRecord::sign(&node, golden_fields());
        let bytes = record.encode();
        assert_eq!(bytes.len(), RECORD_BYTES);
        assert_eq!(&bytes[0..8], b"DDCA\x01\0\0\0");
        assert_eq!(&bytes[8..28], &cluster_one());
        assert_eq!(&bytes[28..60], &node.account().0);
        assert_eq!(&bytes[60..68], &42u64.to_le_bytes());
        assert_eq!(&bytes[156..188], &golden_fields().totals.encode());
        let mut message = b"ddc anchor record v1".to_vec();
        message.extend_from_slice(&bytes[..188]);
        assert_eq!(&message[..], &record.signing_message()[..]);
        assert!(node.account().verify(&message, &record.signature));
        assert_eq!(AnchorRecord::decode(&bytes), Ok(record));
        assert_eq!(record.root(Tree::Data), [0x11; 32]);
        assert_eq!(record.leaves(Tree::Usage), 5);

        let empty = AnchorFields {
            data_root: empty_root(),
            usage_root: empty_root(),
            data_leaves: 0,
            usage_leaves: 0,
            ..golden_fields()
        };
        let record = AnchorRecord::sign(&node, empty);
        assert_eq!(AnchorRecord::decode(&record.encode()), Ok(record));
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let bytes = AnchorRecord::sign(&node_key(), golden_fields()).encode();
        for bit in 0..RECORD_BYTES * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(AnchorRecord::decode(&flipped).is_err(), "bit {bit} flipped and still decodes");
        }
        for cut in 0..RECORD_BYTES {
            assert!(AnchorRecord::decode(&bytes[..cut]).is_err());
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            AnchorRecord::decode(&trailing),
            Err(AnchorError::WrongLength { what: "anchor record", expected: 252, actual: 253 })
        );
    }

    /// Encoded bytes of `fields` signed by `node` without checking them, to
    /// show that the decoder refuses them even with a valid signature.
    fn signed_unchecked(node: &Keypair, fields: AnchorFields, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let record = AnchorRecord { node: node.account(), fields, signature: [0; 64] };
        let mut bytes = record.encode();
        edit(&mut bytes);
        let mut message = RECORD_SIGNING_DOMAIN.to_vec();
        message.extend_from_slice(&bytes[..OFFSET_SIGNATURE]);
        let signature = node.sign(&message);
        bytes[OFFSET_SIGNATURE..].copy_from_slice(&signature);
        bytes
    }

    #[test]
    fn decoding_refuses_each_broken_rule_even_when_signed() {
        let node = node_key();
        let fields = golden_fields();
        let decode =
            |fields: AnchorFields, edit: fn(&mut [u8])| AnchorRecord::decode(&signed_unchecked(&node, fields, edit));
        assert_eq!(decode(fields, |_| {}).map(|record| record.fields), Ok(fields));
        assert_eq!(decode(fields, |b| b[0] = b'X'), Err(AnchorError::NotAnAnchorRecord { found: *b"XDCA" }));
        assert_eq!(
            decode(fields, |b| b[4] = 2),
            Err(AnchorError::UnsupportedVersion { what: "anchor record", found: 2, supported: 1 })
        );
        assert_eq!(
            decode(fields, |b| b[7] = 9),
            Err(AnchorError::NonZeroReserved { what: "anchor record", offset: 7, value: 9 })
        );
        let same_instant = AnchorFields { end_ms: fields.start_ms, ..fields };
        assert_eq!(
            decode(same_instant, |_| {}),
            Err(AnchorError::EmptyEra { start_ms: fields.start_ms, end_ms: fields.start_ms })
        );
        let backwards = AnchorFields { end_ms: fields.start_ms - 1, ..fields };
        assert!(matches!(decode(backwards, |_| {}), Err(AnchorError::EmptyEra { .. })));
        let leafless = AnchorFields { data_leaves: 0, ..fields };
        assert_eq!(decode(leafless, |_| {}), Err(AnchorError::EmptyRootMismatch { tree: Tree::Data, leaves: 0 }));
        let empty_but_counted = AnchorFields { usage_root: empty_root(), ..fields };
        assert_eq!(
            decode(empty_but_counted, |_| {}),
            Err(AnchorError::EmptyRootMismatch { tree: Tree::Usage, leaves: 5 })
        );
        // A record signed by another key in this node's name.
        let mut forged = signed_unchecked(&Keypair::from_seed([2; 32]), fields, |_| {});
        forged[OFFSET_NODE..OFFSET_ERA].copy_from_slice(&node.account().0);
        assert_eq!(AnchorRecord::decode(&forged), Err(AnchorError::BadSignature { node: node.account() }));
    }

    #[test]
    #[should_panic(expected = "signing an invalid anchor record")]
    fn signing_an_empty_era_panics() {
        AnchorRecord::sign(&node_key(), AnchorFields { end_ms: 0, start_ms: 0, ..golden_fields() });
    }

    /// An era's two trees and the record anchoring them.
    fn anchored_era() -> (DataTree, UsageTree, AnchorRecord) {
        let node = node_key();
        let consumer = Keypair::from_seed([2; 32]);
        let data = DataTree::build(
            (0..5u64)
                .map(|i| DataLeaf {
                    kind: if i % 2 == 0 { DataLeafKind::Segment } else { DataLeafKind::Shard },
                    stream: format!("b1.stream-{}", i % 3),
                    base_offset: i * 100,
                    next_offset: i * 100 + 100,
                    index: (i % 2) as u8,
                    root: *blake3::hash(&i.to_le_bytes()).as_bytes(),
                })
                .collect(),
        )
        .unwrap();
        let bucket =
            CustomerUsage { transferred_bytes: 4096, stored_bytes: 1 << 20, number_of_puts: 3, number_of_gets: 2 };
        let totals = NodeUsage { transferred_bytes: 4096, stored_bytes: 1 << 20, number_of_puts: 3, number_of_gets: 2 };
        let usage = UsageTree::build(vec![
            UsageLeaf::Bucket { bucket: 1, usage: bucket },
            UsageLeaf::Node { usage: totals },
            UsageLeaf::Ack(ConsumerAck::sign(&consumer, 1, node.account(), [3; 16], 2, 4096, 2)),
        ])
        .unwrap();
        let record = AnchorRecord::sign(
            &node,
            AnchorFields {
                cluster_id: cluster_one(),
                era: 7,
                start_ms: 1_000,
                end_ms: 2_000,
                data_root: data.root(),
                usage_root: usage.root(),
                data_leaves: data.leaf_count(),
                usage_leaves: usage.leaf_count(),
                totals,
            },
        );
        (data, usage, record)
    }

    fn every_bundle(data: &DataTree, usage: &UsageTree, record: AnchorRecord) -> Vec<RecordProof> {
        let data_proofs = (0..data.leaves().len()).map(|i| RecordProof::new(record, data, i));
        let usage_proofs = (0..usage.leaves().len()).map(|i| RecordProof::new(record, usage, i));
        data_proofs.chain(usage_proofs).collect()
    }

    #[test]
    fn record_proofs_verify_end_to_end() {
        let (data, usage, record) = anchored_era();
        let chain = record.encode();
        for bundle in every_bundle(&data, &usage, record) {
            let bytes = bundle.encode();
            assert_eq!(&bytes[0..6], &[b'D', b'D', b'R', b'P', 1, bundle.tree.byte()]);
            assert_eq!(&bytes[8..260], &chain[..]);
            let decoded = RecordProof::decode(&bytes).unwrap();
            assert_eq!(decoded, bundle);
            assert_eq!(decoded.verify_against(&chain), Ok(()));
        }
    }

    #[test]
    fn record_proofs_refuse_tampering() {
        let (data, usage, record) = anchored_era();
        let chain = record.encode();
        let bundles = every_bundle(&data, &usage, record);
        let data_proof = &bundles[1];
        let usage_proof = bundles.last().unwrap();

        // Another record on chain: another era, or the same one re-signed
        // with other totals.
        let other_era = AnchorRecord::sign(&node_key(), AnchorFields { era: 8, ..record.fields });
        assert_eq!(data_proof.verify_against(&other_era.encode()), Err(AnchorError::RecordMismatch));
        // Remark bytes that are not a valid record.
        let mut broken = chain.clone();
        broken[OFFSET_ERA] ^= 1;
        assert_eq!(data_proof.verify_against(&broken), Err(AnchorError::BadSignature { node: record.node }));
        assert!(data_proof.verify_against(&chain[1..]).is_err());

        // Another leaf of the same tree with this leaf's proof.
        let swapped = RecordProof { leaf: bundles[2].leaf.clone(), ..data_proof.clone() };
        assert_eq!(swapped.verify_against(&chain), Err(AnchorError::WrongRoot { tree: Tree::Data }));
        // Another leaf's proof.
        let other_proof = RecordProof { proof: bundles[0].proof.clone(), ..data_proof.clone() };
        assert_eq!(other_proof.verify_against(&chain), Err(AnchorError::WrongRoot { tree: Tree::Data }));
        // A data leaf presented as a usage leaf and the other way round.
        let retreed = RecordProof { tree: Tree::Usage, ..data_proof.clone() };
        assert!(matches!(retreed.verify_against(&chain), Err(AnchorError::UnknownLeafKind { tree: Tree::Usage, .. })));
        let retreed = RecordProof { tree: Tree::Data, ..usage_proof.clone() };
        assert!(matches!(retreed.verify_against(&chain), Err(AnchorError::UnknownLeafKind { tree: Tree::Data, .. })));
        // A leaf that is in the tree, shown with a record that counts it
        // against another tree size.
        let recounted = AnchorRecord::sign(&node_key(), AnchorFields { data_leaves: 6, ..record.fields });
        let bundle = RecordProof { record: recounted, ..data_proof.clone() };
        assert_eq!(
            bundle.verify_against(&recounted.encode()),
            Err(AnchorError::LeafCountMismatch { tree: Tree::Data, proof: 5, record: 6 })
        );
        // A valid record for another root.
        let rerooted = AnchorRecord::sign(&node_key(), AnchorFields { data_root: [9; 32], ..record.fields });
        let bundle = RecordProof { record: rerooted, ..data_proof.clone() };
        assert_eq!(bundle.verify_against(&rerooted.encode()), Err(AnchorError::WrongRoot { tree: Tree::Data }));
    }

    #[test]
    fn every_bit_flip_of_a_record_proof_is_refused() {
        let (data, usage, record) = anchored_era();
        let chain = record.encode();
        let bundles = every_bundle(&data, &usage, record);
        // One data leaf, and the ack leaf (the largest usage leaf).
        for bundle in [&bundles[0], bundles.last().unwrap()] {
            let bytes = bundle.encode();
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                if let Ok(decoded) = RecordProof::decode(&flipped) {
                    assert!(decoded.verify_against(&chain).is_err(), "bit {bit} flipped and still verifies");
                }
            }
            for cut in 0..bytes.len() {
                assert!(RecordProof::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut trailing = bytes.clone();
            trailing.push(0);
            assert!(RecordProof::decode(&trailing).is_err());
        }
    }

    #[test]
    fn record_proof_decoding_names_what_is_wrong() {
        let (data, _, record) = anchored_era();
        let bytes = RecordProof::new(record, &data, 0).encode();
        let with = |at: usize, value: u8| {
            let mut bytes = bytes.clone();
            bytes[at] = value;
            RecordProof::decode(&bytes)
        };
        assert_eq!(with(3, b'A'), Err(AnchorError::NotARecordProof { found: *b"DDRA" }));
        assert_eq!(with(4, 0), Err(AnchorError::UnsupportedVersion { what: "record proof", found: 0, supported: 1 }));
        assert_eq!(with(5, 3), Err(AnchorError::UnknownTree { byte: 3 }));
        assert!(matches!(with(5, 2), Err(AnchorError::UnknownLeafKind { tree: Tree::Usage, kind: 1 })));
        assert_eq!(
            with(7, 1).unwrap_err(),
            AnchorError::TooShort {
                what: "record proof",
                minimum: 260 + 256 + usize::from(bytes[6]),
                actual: bytes.len()
            }
        );
        assert_eq!(
            with(8 + 4, 2),
            Err(AnchorError::UnsupportedVersion { what: "anchor record", found: 2, supported: 1 })
        );
        assert!(RecordProof::decode(&bytes[..100]).is_err());
    }
}
