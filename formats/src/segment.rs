//! On-disk files of a segment other than its batches: the segment header that
//! opens every `.log` file, the `.seal` manifest written when it seals, and
//! the `.idx` sparse offset index. Layouts in docs/FORMATS.md.

use crate::{le_u32, le_u64, FormatError};

/// Bytes of the header at the start of every segment file; batches follow it.
pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const SEGMENT_MAGIC: [u8; 4] = *b"DDCS";
pub const SEGMENT_VERSION: u8 = 1;

/// The header at offset 0 of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub base_offset: u64,
    pub created_ms: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..4].copy_from_slice(&SEGMENT_MAGIC);
        out[4] = SEGMENT_VERSION;
        out[8..16].copy_from_slice(&self.base_offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32fast::hash(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, FormatError> {
        check_fixed(bytes, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION, "segment header")?;
        check_zero(bytes, &[5..8, 24..60], "segment header")?;
        Ok(SegmentHeader { base_offset: le_u64(bytes, 8), created_ms: le_u64(bytes, 16) })
    }
}

/// Bytes of a `.seal` manifest.
pub const SEAL_BYTES: usize = 96;
pub const SEAL_MAGIC: [u8; 4] = *b"DDCM";
pub const SEAL_VERSION: u8 = 1;

/// What is known of a sealed segment: its extent and its BLAKE3 root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealManifest {
    pub base_offset: u64,
    /// One past the last offset in the segment.
    pub next_offset: u64,
    /// Bytes of the segment file that hold data (segment header and batches);
    /// the file may be longer by up to one block of zero padding.
    pub data_len: u64,
    pub batch_count: u64,
    pub sealed_ms: u64,
    /// BLAKE3-256 of the file's first `data_len` bytes.
    pub root: [u8; 32],
}

impl SealManifest {
    pub fn encode(&self) -> [u8; SEAL_BYTES] {
        let mut out = [0u8; SEAL_BYTES];
        out[0..4].copy_from_slice(&SEAL_MAGIC);
        out[4] = SEAL_VERSION;
        out[8..16].copy_from_slice(&self.base_offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.next_offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.data_len.to_le_bytes());
        out[32..40].copy_from_slice(&self.batch_count.to_le_bytes());
        out[40..48].copy_from_slice(&self.sealed_ms.to_le_bytes());
        out[48..80].copy_from_slice(&self.root);
        let crc = crc32fast::hash(&out[..92]);
        out[92..96].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SealManifest, FormatError> {
        check_fixed(bytes, SEAL_BYTES, SEAL_MAGIC, SEAL_VERSION, "seal manifest")?;
        check_zero(bytes, &[5..8, 80..92], "seal manifest")?;
        if bytes.len() != SEAL_BYTES {
            return Err(FormatError::Invalid { what: "seal manifest", reason: format!("length {}", bytes.len()) });
        }
        let mut root = [0u8; 32];
        root.copy_from_slice(&bytes[48..80]);
        let seal = SealManifest {
            base_offset: le_u64(bytes, 8),
            next_offset: le_u64(bytes, 16),
            data_len: le_u64(bytes, 24),
            batch_count: le_u64(bytes, 32),
            sealed_ms: le_u64(bytes, 40),
            root,
        };
        if seal.next_offset < seal.base_offset || seal.data_len < SEGMENT_HEADER_BYTES as u64 {
            return Err(FormatError::Invalid { what: "seal manifest", reason: "extent out of order".into() });
        }
        Ok(seal)
    }
}

pub const INDEX_MAGIC: [u8; 4] = *b"DDCI";
pub const INDEX_VERSION: u8 = 1;
pub const INDEX_HEADER_BYTES: usize = 16;
pub const INDEX_ENTRY_BYTES: usize = 16;

/// One sparse index entry: the batch holding `offset` starts at file byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexEntry {
    pub offset: u64,
    pub position: u64,
}

/// Encode a `.idx` file: header (magic, version, entry count, CRC over entries) then entries.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = vec![0u8; INDEX_HEADER_BYTES];
    out[0..4].copy_from_slice(&INDEX_MAGIC);
    out[4] = INDEX_VERSION;
    let count = u32::try_from(entries.len()).expect("index entries fit u32");
    out[8..12].copy_from_slice(&count.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.position.to_le_bytes());
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out[..12]);
    hasher.update(&out[INDEX_HEADER_BYTES..]);
    let crc = hasher.finalize();
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decode a `.idx` file; entries must be strictly increasing in both fields.
pub fn decode_index(bytes: &[u8]) -> Result<Vec<IndexEntry>, FormatError> {
    if bytes.len() < INDEX_HEADER_BYTES {
        return Err(FormatError::Truncated { what: "index", needed: INDEX_HEADER_BYTES, available: bytes.len() });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != INDEX_MAGIC {
        return Err(FormatError::BadMagic { what: "index", found: magic });
    }
    if bytes[4] != INDEX_VERSION {
        return Err(FormatError::UnsupportedVersion { what: "index", found: bytes[4] });
    }
    check_zero(bytes, std::slice::from_ref(&(5..8)), "index")?;
    let count = le_u32(bytes, 8) as usize;
    let needed = count.checked_mul(INDEX_ENTRY_BYTES).and_then(|n| n.checked_add(INDEX_HEADER_BYTES));
    if needed != Some(bytes.len()) {
        return Err(FormatError::Invalid {
            what: "index",
            reason: format!("{count} entries in {} bytes", bytes.len()),
        });
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..12]);
    hasher.update(&bytes[INDEX_HEADER_BYTES..]);
    let actual = hasher.finalize();
    let expected = le_u32(bytes, 12);
    if actual != expected {
        return Err(FormatError::ChecksumMismatch { what: "index", expected, actual });
    }
    let entries: Vec<IndexEntry> = bytes[INDEX_HEADER_BYTES..]
        .chunks_exact(INDEX_ENTRY_BYTES)
        .map(|c| IndexEntry { offset: le_u64(c, 0), position: le_u64(c, 8) })
        .collect();
    if entries.windows(2).any(|w| w[0].offset >= w[1].offset || w[0].position >= w[1].position) {
        return Err(FormatError::Invalid { what: "index", reason: "entries not increasing".into() });
    }
    Ok(entries)
}

/// Bytes of a stream's `recovery-point` file.
pub const RECOVERY_POINT_BYTES: usize = 40;
pub const RECOVERY_POINT_MAGIC: [u8; 4] = *b"DDCR";
pub const RECOVERY_POINT_VERSION: u8 = 1;

/// A durable position of a stream's open segment, written now and then (not
/// on the append path). Recovery treats any damage before it as corruption of
/// acknowledged data, never as a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    pub segment_base: u64,
    /// Bytes of the segment file known durable (header and whole batches).
    pub durable_len: u64,
    /// One past the last offset within `durable_len`.
    pub next_offset: u64,
}

impl RecoveryPoint {
    pub fn encode(&self) -> [u8; RECOVERY_POINT_BYTES] {
        let mut out = [0u8; RECOVERY_POINT_BYTES];
        out[0..4].copy_from_slice(&RECOVERY_POINT_MAGIC);
        out[4] = RECOVERY_POINT_VERSION;
        out[8..16].copy_from_slice(&self.segment_base.to_le_bytes());
        out[16..24].copy_from_slice(&self.durable_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.next_offset.to_le_bytes());
        let crc = crc32fast::hash(&out[..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<RecoveryPoint, FormatError> {
        check_fixed(bytes, RECOVERY_POINT_BYTES, RECOVERY_POINT_MAGIC, RECOVERY_POINT_VERSION, "recovery point")?;
        check_zero(bytes, &[5..8, 32..36], "recovery point")?;
        Ok(RecoveryPoint {
            segment_base: le_u64(bytes, 8),
            durable_len: le_u64(bytes, 16),
            next_offset: le_u64(bytes, 24),
        })
    }
}

/// Reserved bytes must be zero in version 1, so a later version can give them meaning.
fn check_zero(bytes: &[u8], ranges: &[std::ops::Range<usize>], what: &'static str) -> Result<(), FormatError> {
    for r in ranges {
        if bytes[r.clone()].iter().any(|&b| b != 0) {
            return Err(FormatError::Invalid {
                what,
                reason: format!("reserved bytes {}..{} must be zero", r.start, r.end),
            });
        }
    }
    Ok(())
}

fn check_fixed(bytes: &[u8], len: usize, magic: [u8; 4], version: u8, what: &'static str) -> Result<(), FormatError> {
    if bytes.len() < len {
        return Err(FormatError::Truncated { what, needed: len, available: bytes.len() });
    }
    let found = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if found != magic {
        return Err(FormatError::BadMagic { what, found });
    }
    let expected = le_u32(bytes, len - 4);
    let actual = crc32fast::hash(&bytes[..len - 4]);
    if expected != actual {
        return Err(FormatError::ChecksumMismatch { what, expected, actual });
    }
    if bytes[4] != version {
        return Err(FormatError::UnsupportedVersion { what, found: bytes[4] });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let h = SegmentHeader { base_offset: 42, created_ms: 7 };
        assert_eq!(SegmentHeader::decode(&h.encode()).unwrap(), h);
        let s = SealManifest {
            base_offset: 1,
            next_offset: 9,
            data_len: 4096,
            batch_count: 3,
            sealed_ms: 5,
            root: [7; 32],
        };
        assert_eq!(SealManifest::decode(&s.encode()).unwrap(), s);
        let rp = RecoveryPoint { segment_base: 3, durable_len: 4096, next_offset: 9 };
        assert_eq!(RecoveryPoint::decode(&rp.encode()).unwrap(), rp);
        let idx = vec![IndexEntry { offset: 0, position: 64 }, IndexEntry { offset: 10, position: 20000 }];
        assert_eq!(decode_index(&encode_index(&idx)).unwrap(), idx);
        let mut bad = encode_index(&idx);
        bad[20] ^= 1;
        assert!(decode_index(&bad).is_err());
        let mut bad = s.encode();
        bad[50] ^= 1;
        assert!(SealManifest::decode(&bad).is_err());
    }
}
