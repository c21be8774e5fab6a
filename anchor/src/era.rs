//! The node's durable anchoring state: one set of files per era, and the
//! proofs built from them.
//!
//! In `<data_dir>/anchor/`, for era `e` (20 digits):
//!
//! - `era-<e>.leaves`: the era's data and usage leaves, written first;
//! - `era-<e>.record`: the signed [`AnchorRecord`] (252 bytes): the era is
//!   committed once this file exists, and waits to be anchored;
//! - `era-<e>.receipt`: where the record is on chain, once it is.
//!
//! Each file is written to a temporary name, fdatasynced and renamed, then
//! the directory is synced, so a crash leaves each file whole or absent. A
//! leaves file without its record is an era that was never committed; it is
//! deleted on open and rebuilt by the next era. Which data leaves are
//! anchored already, and the usage totals anchored so far, are read back from
//! the committed eras, so there is no other state to keep consistent.
//!
//! Leaves file layout (little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic `DDCL` |
//! | 4 | version 1 |
//! | 5..8 | reserved, zero |
//! | 8..12 | data leaf count `d` |
//! | 12..16 | usage leaf count `u` |
//! | 16.. | `d` then `u` leaves, each a `u16` length then [`DataLeaf`] / [`UsageLeaf`] bytes |
//! | last 8 | first 8 bytes of BLAKE3 over everything before |
//!
//! Receipt file: `block_hash (32) | block_number u32 | extrinsic_index u32 | tx_hash (32) | fee u128`, 88 bytes.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use ddc_auth::usage::CustomerUsage;

use crate::chain::submit::Receipt;
use crate::merkle::{DataLeaf, LeafTree, Tree, UsageLeaf};
use crate::record::{AnchorRecord, RecordProof};
use crate::AnchorError;

const LEAVES_MAGIC: &[u8; 4] = b"DDCL";
const LEAVES_VERSION: u8 = 1;
const RECEIPT_BYTES: usize = 88;

/// Why the era store could not be read or written; names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EraError {
    #[error("{file}: {source}")]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{file}: {reason}")]
    Corrupt { file: PathBuf, reason: String },
}

/// One committed era.
#[derive(Debug, Clone)]
pub struct Era {
    pub record: AnchorRecord,
    pub data: LeafTree<DataLeaf>,
    pub usage: LeafTree<UsageLeaf>,
    pub receipt: Option<Receipt>,
}

/// The data leaf's identity: anchored once, whatever its root.
pub type DataKey = (u8, String, u64, u8);

pub fn data_key(leaf: &DataLeaf) -> DataKey {
    (leaf.kind as u8, leaf.stream.clone(), leaf.base_offset, leaf.index)
}

/// All committed eras of a node, in order.
pub struct EraStore {
    dir: PathBuf,
    eras: BTreeMap<u64, Era>,
}

fn io(file: &Path) -> impl FnOnce(std::io::Error) -> EraError + '_ {
    move |source| EraError::Io { file: file.to_path_buf(), source }
}

fn corrupt(file: &Path, reason: impl Into<String>) -> EraError {
    EraError::Corrupt { file: file.to_path_buf(), reason: reason.into() }
}

/// Write `bytes` to `path` whole or not at all.
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), EraError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn encode_leaves(data: &[DataLeaf], usage: &[UsageLeaf]) -> Vec<u8> {
    let mut out = LEAVES_MAGIC.to_vec();
    out.push(LEAVES_VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(usage.len() as u32).to_le_bytes());
    for leaf in data.iter().map(DataLeaf::encode).chain(usage.iter().map(UsageLeaf::encode)) {
        out.extend_from_slice(&(leaf.len() as u16).to_le_bytes());
        out.extend_from_slice(&leaf);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(&sum.as_bytes()[..8]);
    out
}

fn decode_leaves(file: &Path, bytes: &[u8]) -> Result<(Vec<DataLeaf>, Vec<UsageLeaf>), EraError> {
    if bytes.len() < 24 {
        return Err(corrupt(file, "shorter than a leaves file"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if blake3::hash(body).as_bytes()[..8] != *sum {
        return Err(corrupt(file, "checksum mismatch"));
    }
    if &body[..4] != LEAVES_MAGIC || body[4] != LEAVES_VERSION || body[5..8] != [0; 3] {
        return Err(corrupt(file, "not a version 1 leaves file"));
    }
    let count = |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) as usize;
    let (d, u) = (count(8), count(12));
    let mut rest = &body[16..];
    let mut next = || -> Result<&[u8], EraError> {
        if rest.len() < 2 {
            return Err(corrupt(file, "truncated leaf"));
        }
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        if rest.len() < 2 + len {
            return Err(corrupt(file, "truncated leaf"));
        }
        let (leaf, tail) = rest[2..].split_at(len);
        rest = tail;
        Ok(leaf)
    };
    let mut data = Vec::with_capacity(d.min(1 << 20));
    for _ in 0..d {
        data.push(DataLeaf::decode(next()?).map_err(|e| corrupt(file, e.to_string()))?);
    }
    let mut usage = Vec::with_capacity(u.min(1 << 20));
    for _ in 0..u {
        usage.push(UsageLeaf::decode(next()?).map_err(|e| corrupt(file, e.to_string()))?);
    }
    if !rest.is_empty() {
        return Err(corrupt(file, "bytes after the last leaf"));
    }
    Ok((data, usage))
}

impl Receipt {
    pub fn encode(&self) -> [u8; RECEIPT_BYTES] {
        let mut out = [0u8; RECEIPT_BYTES];
        out[..32].copy_from_slice(&self.block_hash);
        out[32..36].copy_from_slice(&self.block_number.to_le_bytes());
        out[36..40].copy_from_slice(&self.extrinsic_index.to_le_bytes());
        out[40..72].copy_from_slice(&self.tx_hash);
        out[72..].copy_from_slice(&self.fee.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Receipt> {
        if bytes.len() != RECEIPT_BYTES {
            return None;
        }
        let mut block_hash = [0u8; 32];
        block_hash.copy_from_slice(&bytes[..32]);
        let mut tx_hash = [0u8; 32];
        tx_hash.copy_from_slice(&bytes[40..72]);
        let mut fee = [0u8; 16];
        fee.copy_from_slice(&bytes[72..]);
        Some(Receipt {
            block_hash,
            block_number: u32::from_le_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]),
            extrinsic_index: u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]),
            tx_hash,
            fee: u128::from_le_bytes(fee),
        })
    }
}

impl EraStore {
    /// Open (create) the store in `dir`, reading every committed era.
    pub fn open(dir: &Path) -> Result<EraStore, EraError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut eras = BTreeMap::new();
        let mut leaves_only = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let Some(era) = name.strip_prefix("era-").and_then(|n| n.strip_suffix(".leaves")) else { continue };
            let era: u64 = era.parse().map_err(|_| corrupt(&path, "not an era file name"))?;
            let record_path = dir.join(format!("era-{era:020}.record"));
            if !record_path.exists() {
                leaves_only.push(path);
                continue;
            }
            let (data, usage) = decode_leaves(&path, &std::fs::read(&path).map_err(io(&path))?)?;
            let record_bytes = std::fs::read(&record_path).map_err(io(&record_path))?;
            let record = AnchorRecord::decode(&record_bytes).map_err(|e| corrupt(&record_path, e.to_string()))?;
            let data = LeafTree::build(data).map_err(|e| corrupt(&path, e.to_string()))?;
            let usage = LeafTree::build(usage).map_err(|e| corrupt(&path, e.to_string()))?;
            if record.root(Tree::Data) != data.root() || record.root(Tree::Usage) != usage.root() {
                return Err(corrupt(&record_path, "the record's roots are not those of the leaves file"));
            }
            let receipt_path = dir.join(format!("era-{era:020}.receipt"));
            let receipt = match std::fs::read(&receipt_path) {
                Ok(bytes) => Some(Receipt::decode(&bytes).ok_or_else(|| corrupt(&receipt_path, "not a receipt"))?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(EraError::Io { file: receipt_path, source: e }),
            };
            eras.insert(era, Era { record, data, usage, receipt });
        }
        for path in leaves_only {
            // Never committed: the next era rebuilds it.
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(EraStore { dir: dir.to_path_buf(), eras })
    }

    pub fn eras(&self) -> &BTreeMap<u64, Era> {
        &self.eras
    }

    /// The next era number and where it starts (the last era's end), if any era exists.
    pub fn next_era(&self) -> (u64, Option<u64>) {
        match self.eras.iter().next_back() {
            Some((&e, era)) => (e + 1, Some(era.record.fields.end_ms)),
            None => (1, None),
        }
    }

    /// Every data leaf some committed era holds.
    pub fn anchored_data(&self) -> HashSet<DataKey> {
        self.eras.values().flat_map(|e| e.data.leaves().iter().map(data_key)).collect()
    }

    /// The usage of each bucket committed so far (the sum of the eras' bucket leaves).
    pub fn anchored_usage(&self) -> Result<BTreeMap<u64, CustomerUsage>, AnchorError> {
        let mut out: BTreeMap<u64, CustomerUsage> = BTreeMap::new();
        for era in self.eras.values() {
            for leaf in era.usage.leaves() {
                if let UsageLeaf::Bucket { bucket, usage } = leaf {
                    let sum = out.entry(*bucket).or_default();
                    *sum = sum.add(usage).map_err(AnchorError::Usage)?;
                }
            }
        }
        Ok(out)
    }

    /// Every acknowledgment some committed era holds, by (bucket, consumer, session, request_seq).
    pub fn anchored_acks(&self) -> HashSet<(u64, [u8; 32], [u8; 16], u64)> {
        self.eras
            .values()
            .flat_map(|e| e.usage.leaves().iter())
            .filter_map(|l| match l {
                UsageLeaf::Ack(a) => Some((a.bucket, a.consumer.0, a.session_nonce, a.request_seq)),
                _ => None,
            })
            .collect()
    }

    /// Commit era `era`: leaves first, then the record.
    pub fn commit(
        &mut self,
        era: u64,
        record: AnchorRecord,
        data: LeafTree<DataLeaf>,
        usage: LeafTree<UsageLeaf>,
    ) -> Result<(), EraError> {
        assert_eq!(record.fields.era, era, "the record is for this era");
        assert!(self.eras.keys().next_back().is_none_or(|&last| last < era), "eras are committed in order");
        let leaves = self.dir.join(format!("era-{era:020}.leaves"));
        write_durably(&self.dir, &leaves, &encode_leaves(data.leaves(), usage.leaves()))?;
        let record_path = self.dir.join(format!("era-{era:020}.record"));
        write_durably(&self.dir, &record_path, &record.encode())?;
        self.eras.insert(era, Era { record, data, usage, receipt: None });
        Ok(())
    }

    /// The first era not anchored yet.
    pub fn first_pending(&self) -> Option<(u64, &Era)> {
        self.eras.iter().find(|(_, e)| e.receipt.is_none()).map(|(&n, e)| (n, e))
    }

    pub fn set_receipt(&mut self, era: u64, receipt: Receipt) -> Result<(), EraError> {
        let path = self.dir.join(format!("era-{era:020}.receipt"));
        write_durably(&self.dir, &path, &receipt.encode())?;
        if let Some(e) = self.eras.get_mut(&era) {
            e.receipt = Some(receipt);
        }
        Ok(())
    }

    /// A proof that the segment holding `offset` of `stream` is in an anchored era.
    pub fn data_proof(&self, stream: &str, offset: u64) -> Option<AnchorProof> {
        self.eras.values().filter(|e| e.receipt.is_some()).find_map(|era| {
            let index = era.data.leaves().iter().position(|l| {
                l.kind == crate::merkle::DataLeafKind::Segment
                    && l.stream == stream
                    && l.base_offset <= offset
                    && offset < l.next_offset
            })?;
            Some(AnchorProof { receipt: era.receipt?, proof: RecordProof::new(era.record, &era.data, index) })
        })
    }

    /// A proof of the latest anchored usage leaf of `bucket`.
    pub fn usage_proof(&self, bucket: u64) -> Option<AnchorProof> {
        self.eras.values().rev().filter(|e| e.receipt.is_some()).find_map(|era| {
            let index = era
                .usage
                .leaves()
                .iter()
                .position(|l| matches!(l, UsageLeaf::Bucket { bucket: b, .. } if *b == bucket))?;
            Some(AnchorProof { receipt: era.receipt?, proof: RecordProof::new(era.record, &era.usage, index) })
        })
    }
}

/// Everything a third party needs to check a leaf against the chain: where
/// the record is ([`Receipt`]) and the leaf's proof under it.
///
/// Layout: magic `DDCX`, version 1, 3 reserved zero bytes, the 88-byte
/// receipt, then the [`RecordProof`] bytes to the end.
#[derive(Debug, Clone)]
pub struct AnchorProof {
    pub receipt: Receipt,
    pub proof: RecordProof,
}

impl AnchorProof {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = b"DDCX".to_vec();
        out.extend_from_slice(&[1, 0, 0, 0]);
        out.extend_from_slice(&self.receipt.encode());
        out.extend_from_slice(&self.proof.encode());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<AnchorProof, String> {
        if bytes.len() < 8 + RECEIPT_BYTES || &bytes[..4] != b"DDCX" {
            return Err("not an anchor proof (DDCX)".into());
        }
        if bytes[4..8] != [1, 0, 0, 0] {
            return Err(format!("anchor proof version {} is not supported", bytes[4]));
        }
        let receipt = Receipt::decode(&bytes[8..8 + RECEIPT_BYTES]).ok_or("bad receipt")?;
        let proof = RecordProof::decode(&bytes[8 + RECEIPT_BYTES..]).map_err(|e| e.to_string())?;
        Ok(AnchorProof { receipt, proof })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::DataLeafKind;
    use crate::record::AnchorFields;
    use ddc_auth::account::Keypair;
    use ddc_auth::usage::NodeUsage;

    fn segment(stream: &str, base: u64) -> DataLeaf {
        DataLeaf {
            kind: DataLeafKind::Segment,
            stream: stream.into(),
            base_offset: base,
            next_offset: base + 10,
            index: 0,
            root: [base as u8; 32],
        }
    }

    fn usage(bucket: u64, puts: u64) -> UsageLeaf {
        UsageLeaf::Bucket { bucket, usage: CustomerUsage { number_of_puts: puts, ..Default::default() } }
    }

    fn commit(store: &mut EraStore, key: &Keypair, era: u64, data: Vec<DataLeaf>, usage: Vec<UsageLeaf>) {
        let data = LeafTree::build(data).unwrap();
        let usage = LeafTree::build(usage).unwrap();
        let fields = AnchorFields {
            cluster_id: [1; 20],
            era,
            start_ms: era * 1000,
            end_ms: era * 1000 + 1000,
            data_root: data.root(),
            usage_root: usage.root(),
            data_leaves: data.leaf_count(),
            usage_leaves: usage.leaf_count(),
            totals: NodeUsage::default(),
        };
        store.commit(era, AnchorRecord::sign(key, fields), data, usage).unwrap();
    }

    fn receipt(n: u32) -> Receipt {
        Receipt { block_hash: [n as u8; 32], block_number: n, extrinsic_index: 1, tx_hash: [9; 32], fee: 484_414_000 }
    }

    #[test]
    fn eras_survive_reopen_and_say_what_is_anchored() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate();
        let mut store = EraStore::open(dir.path()).unwrap();
        assert_eq!(store.next_era(), (1, None));
        commit(&mut store, &key, 1, vec![segment("b1.a", 0), segment("b1.a", 10)], vec![usage(1, 3)]);
        commit(&mut store, &key, 2, vec![segment("b1.b", 0)], vec![usage(1, 2), usage(2, 5)]);
        assert_eq!(store.first_pending().map(|(e, _)| e), Some(1));
        store.set_receipt(1, receipt(7)).unwrap();
        assert!(store.data_proof("b1.a", 15).is_some(), "era 1 is anchored");
        assert!(store.data_proof("b1.b", 0).is_none(), "era 2 is not anchored yet");

        let store = EraStore::open(dir.path()).unwrap();
        assert_eq!(store.next_era(), (3, Some(3000)));
        assert_eq!(store.first_pending().map(|(e, _)| e), Some(2));
        assert_eq!(store.eras()[&1].receipt, Some(receipt(7)));
        assert_eq!(store.anchored_data().len(), 3);
        let totals = store.anchored_usage().unwrap();
        assert_eq!(totals[&1].number_of_puts, 5);
        assert_eq!(totals[&2].number_of_puts, 5);
        let proof = store.data_proof("b1.a", 15).unwrap();
        let decoded = AnchorProof::decode(&proof.encode()).unwrap();
        assert_eq!(decoded.receipt, receipt(7));
        decoded.proof.verify_against(&store.eras()[&1].record.encode()).unwrap();
        assert!(store.usage_proof(1).is_some());
        assert!(store.usage_proof(2).is_none(), "bucket 2's usage is only in era 2, not anchored yet");
    }

    #[test]
    fn an_uncommitted_era_is_dropped_and_damage_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate();
        let mut store = EraStore::open(dir.path()).unwrap();
        commit(&mut store, &key, 1, vec![segment("b1.a", 0)], vec![]);
        // A crash between the leaves file and the record: era 2 was never committed.
        let orphan = dir.path().join(format!("era-{:020}.leaves", 2));
        std::fs::copy(dir.path().join(format!("era-{:020}.leaves", 1)), &orphan).unwrap();
        std::fs::write(dir.path().join("era-00000000000000000003.record.tmp"), b"half").unwrap();
        let store = EraStore::open(dir.path()).unwrap();
        assert_eq!(store.next_era(), (2, Some(2000)));
        assert!(!orphan.exists(), "the uncommitted era's leaves are removed");
        // A damaged leaves file of a committed era: refused, naming the file.
        let leaves = dir.path().join(format!("era-{:020}.leaves", 1));
        let mut bytes = std::fs::read(&leaves).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&leaves, bytes).unwrap();
        let err = EraStore::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("era-00000000000000000001.leaves") && err.contains("checksum"), "{err}");
    }

    #[test]
    fn anchor_proofs_refuse_garbage() {
        assert!(AnchorProof::decode(b"DDCX").is_err());
        assert!(AnchorProof::decode(&[0; 200]).is_err());
        assert!(Receipt::decode(&[0; 71]).is_none());
        assert_eq!(Receipt::decode(&receipt(3).encode()), Some(receipt(3)));
    }
}
