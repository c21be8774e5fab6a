//! The record batch: the unit of append on disk and of transfer in a fetch.
//!
//! ```text
//! 0      4       5           6            8             16             20         24
//! +------+-------+-----------+------------+-------------+--------------+----------+
//! | DDCB |version| attributes| header_len | base_offset | record_count | body_len |
//! +------+-------+-----------+------------+-------------+--------------+----------+
//! 24                32         36             44           48
//! +-----------------+----------+--------------+------------+---------------------+
//! | append_time_ms  | body_crc | reserved (0) | header_crc | body (body_len) ... |
//! +-----------------+----------+--------------+------------+---------------------+
//! ```
//! Two checksums, as Redpanda does: `header_crc` (CRC-32 over bytes 0..44) lets
//! a reader trust `body_len` before reading the body; `body_crc` covers the body.
//! The body holds `record_count` records, each a u32 length then its bytes.

use crate::{le_u16, le_u32, le_u64, FormatError};

pub const BATCH_HEADER_BYTES: usize = 48;
pub const BATCH_MAGIC: [u8; 4] = *b"DDCB";
pub const BATCH_VERSION: u8 = 1;
/// Bytes of the per-record length prefix.
pub const RECORD_LEN_BYTES: usize = 4;
/// Largest body a batch may carry; bounded by the frame maximum in practice.
pub const BATCH_BODY_BYTES_MAX: u32 = 64 << 20;

const HEADER_CRC_AT: usize = 44;
const _: () = assert!(HEADER_CRC_AT + 4 == BATCH_HEADER_BYTES);

/// A decoded batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub record_count: u32,
    pub body_len: u32,
    pub append_time_ms: u64,
    pub body_crc: u32,
}

impl BatchHeader {
    /// A header for `body`, computing its checksum.
    pub fn new(base_offset: u64, record_count: u32, body: &[u8], append_time_ms: u64) -> BatchHeader {
        BatchHeader {
            base_offset,
            record_count,
            body_len: u32::try_from(body.len()).expect("batch body fits u32: validated by caller"),
            append_time_ms,
            body_crc: crc32fast::hash(body),
        }
    }

    /// Whole batch length, header included.
    pub fn batch_len(&self) -> usize {
        BATCH_HEADER_BYTES + self.body_len as usize
    }

    /// One past the last offset in the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    pub fn encode(&self) -> [u8; BATCH_HEADER_BYTES] {
        let mut out = [0u8; BATCH_HEADER_BYTES];
        out[0..4].copy_from_slice(&BATCH_MAGIC);
        out[4] = BATCH_VERSION;
        out[5] = 0;
        out[6..8].copy_from_slice(&(BATCH_HEADER_BYTES as u16).to_le_bytes());
        out[8..16].copy_from_slice(&self.base_offset.to_le_bytes());
        out[16..20].copy_from_slice(&self.record_count.to_le_bytes());
        out[20..24].copy_from_slice(&self.body_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.append_time_ms.to_le_bytes());
        out[32..36].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32fast::hash(&out[..HEADER_CRC_AT]);
        out[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decode and check a header (not the body). All-zero bytes, as found past
    /// the end of a preallocated segment, give `BadMagic`.
    pub fn decode(bytes: &[u8]) -> Result<BatchHeader, FormatError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(FormatError::Truncated {
                what: "batch header",
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != BATCH_MAGIC {
            return Err(FormatError::BadMagic { what: "batch", found: magic });
        }
        let expected = le_u32(bytes, HEADER_CRC_AT);
        let actual = crc32fast::hash(&bytes[..HEADER_CRC_AT]);
        if expected != actual {
            return Err(FormatError::ChecksumMismatch { what: "batch header", expected, actual });
        }
        if bytes[4] != BATCH_VERSION {
            return Err(FormatError::UnsupportedVersion { what: "batch", found: bytes[4] });
        }
        if bytes[5] != 0 || bytes[36..HEADER_CRC_AT].iter().any(|&b| b != 0) {
            return Err(FormatError::Invalid {
                what: "batch header",
                reason: "attributes and reserved bytes must be zero in version 1".into(),
            });
        }
        if le_u16(bytes, 6) as usize != BATCH_HEADER_BYTES {
            return Err(FormatError::Invalid { what: "batch header", reason: "header_len is not 48".into() });
        }
        let header = BatchHeader {
            base_offset: le_u64(bytes, 8),
            record_count: le_u32(bytes, 16),
            body_len: le_u32(bytes, 20),
            append_time_ms: le_u64(bytes, 24),
            body_crc: le_u32(bytes, 32),
        };
        if header.record_count == 0 {
            return Err(FormatError::Invalid { what: "batch header", reason: "record_count is 0".into() });
        }
        if header.body_len > BATCH_BODY_BYTES_MAX {
            return Err(FormatError::Invalid {
                what: "batch header",
                reason: format!("body_len {} exceeds {}", header.body_len, BATCH_BODY_BYTES_MAX),
            });
        }
        if header.base_offset.checked_add(u64::from(header.record_count)).is_none() {
            return Err(FormatError::Invalid { what: "batch header", reason: "offset overflow".into() });
        }
        Ok(header)
    }

    /// Check `body` against this header's length and checksum.
    pub fn verify_body(&self, body: &[u8]) -> Result<(), FormatError> {
        if body.len() != self.body_len as usize {
            return Err(FormatError::Truncated {
                what: "batch body",
                needed: self.body_len as usize,
                available: body.len(),
            });
        }
        let actual = crc32fast::hash(body);
        if actual != self.body_crc {
            return Err(FormatError::ChecksumMismatch { what: "batch body", expected: self.body_crc, actual });
        }
        Ok(())
    }
}

/// Encode records as a batch body (u32 length, then bytes, for each).
pub fn encode_records<'a, I: IntoIterator<Item = &'a [u8]>>(records: I) -> Vec<u8> {
    let mut body = Vec::new();
    for record in records {
        push_record(&mut body, record);
    }
    body
}

/// Append one record to a batch body.
pub fn push_record(body: &mut Vec<u8>, record: &[u8]) {
    let len = u32::try_from(record.len()).expect("record fits u32");
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(record);
}

/// Check that `body` holds exactly `record_count` well-formed records.
pub fn validate_records(body: &[u8], record_count: u32) -> Result<(), FormatError> {
    let invalid = |reason: String| Err(FormatError::Invalid { what: "records", reason });
    if record_count == 0 {
        return invalid("a batch needs at least one record".into());
    }
    let mut at = 0usize;
    let mut seen = 0u32;
    while at < body.len() {
        if body.len() - at < RECORD_LEN_BYTES {
            return invalid(format!("record {seen} length prefix cut at byte {at}"));
        }
        let len = le_u32(body, at) as usize;
        at += RECORD_LEN_BYTES;
        if body.len() - at < len {
            return invalid(format!("record {seen} claims {len} bytes, {} remain", body.len() - at));
        }
        at += len;
        seen += 1;
        if seen > record_count {
            return invalid(format!("more records than record_count {record_count}"));
        }
    }
    if seen != record_count {
        return invalid(format!("record_count says {record_count}, body holds {seen}"));
    }
    Ok(())
}

/// Iterate the records of a body that passed [`validate_records`] or a body checksum.
/// Stops (yields nothing more) at the first malformed length rather than panicking.
pub fn records(body: &[u8]) -> RecordIter<'_> {
    RecordIter { body, at: 0 }
}

pub struct RecordIter<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.body.len().checked_sub(self.at)?;
        if rest < RECORD_LEN_BYTES {
            return None;
        }
        let len = le_u32(self.body, self.at) as usize;
        let start = self.at + RECORD_LEN_BYTES;
        if self.body.len() - start < len {
            return None;
        }
        self.at = start + len;
        Some(&self.body[start..start + len])
    }
}

/// One verified batch inside a byte run of back-to-back batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    pub header: BatchHeader,
    pub body: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Records with their offsets (at most `record_count` of them).
    pub fn records(&self) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
        let base = self.header.base_offset;
        records(self.body).take(self.header.record_count as usize).enumerate().map(move |(i, r)| (base + i as u64, r))
    }
}

/// Walk back-to-back batches (a fetch response or a segment's data), verifying
/// each header and body checksum. Yields an error once and then stops.
pub fn batches(bytes: &[u8]) -> BatchIter<'_> {
    BatchIter { bytes, at: 0, failed: false }
}

pub struct BatchIter<'a> {
    bytes: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    /// Byte position of the next batch.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchView<'a>, FormatError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.bytes.len() {
            return None;
        }
        let result = (|| {
            let rest = &self.bytes[self.at..];
            let header = BatchHeader::decode(rest)?;
            let end = header.batch_len();
            if rest.len() < end {
                return Err(FormatError::Truncated { what: "batch", needed: end, available: rest.len() });
            }
            let body = &rest[BATCH_HEADER_BYTES..end];
            header.verify_body(body)?;
            // A checksum only proves the bytes are what was written; the
            // record count must also match, or offsets would run past the batch.
            validate_records(body, header.record_count)?;
            self.at += end;
            Ok(BatchView { header, body })
        })();
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: u64, recs: &[&[u8]]) -> Vec<u8> {
        let body = encode_records(recs.iter().copied());
        let mut out = BatchHeader::new(base, recs.len() as u32, &body, 99).encode().to_vec();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn walk_batches_and_records() {
        let mut bytes = batch(0, &[b"a", b"bb"]);
        bytes.extend(batch(2, &[b"ccc"]));
        let all: Vec<(u64, Vec<u8>)> = batches(&bytes)
            .flat_map(|b| b.unwrap().records().map(|(o, r)| (o, r.to_vec())).collect::<Vec<_>>())
            .collect();
        assert_eq!(all, vec![(0, b"a".to_vec()), (1, b"bb".to_vec()), (2, b"ccc".to_vec())]);
    }

    #[test]
    fn any_flip_in_a_batch_is_detected() {
        let bytes = batch(5, &[b"hello", b"world"]);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let r: Vec<_> = batches(&bad).collect();
                assert!(r.iter().any(|x| x.is_err()), "flip {i}:{bit} undetected");
            }
        }
    }

    #[test]
    fn validate_records_catches_bad_bodies() {
        let body = encode_records([b"x".as_slice(), b"yz".as_slice()]);
        assert!(validate_records(&body, 2).is_ok());
        assert!(validate_records(&body, 1).is_err());
        assert!(validate_records(&body, 3).is_err());
        assert!(validate_records(&body[..body.len() - 1], 2).is_err());
        assert!(validate_records(&[], 0).is_err());
        assert!(validate_records(&[0, 0, 0, 0], 1).is_ok(), "empty records are allowed");
    }

    /// Found by the `batch` fuzzer: a batch with valid checksums whose body
    /// holds more records than `record_count` made offsets overflow.
    #[test]
    fn regression_record_count_mismatch_with_valid_checksums() {
        let body = encode_records([b"a".as_slice(), b"b".as_slice()]);
        let mut bytes = BatchHeader::new(u64::MAX - 1, 1, &body, 0).encode().to_vec();
        bytes.extend_from_slice(&body);
        let r: Vec<_> = batches(&bytes).collect();
        assert!(matches!(r.as_slice(), [Err(FormatError::Invalid { .. })]), "{r:?}");
    }

    /// Found by the `batch` fuzzer: nonzero reserved bytes were accepted.
    #[test]
    fn regression_reserved_bytes_must_be_zero() {
        let body = encode_records([b"a".as_slice()]);
        let mut header = BatchHeader::new(0, 1, &body, 0).encode();
        header[40] = 1;
        let crc = crc32fast::hash(&header[..HEADER_CRC_AT]);
        header[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(BatchHeader::decode(&header), Err(FormatError::Invalid { .. })));
    }

    #[test]
    fn zeros_are_not_a_batch() {
        assert!(matches!(BatchHeader::decode(&[0u8; 64]), Err(FormatError::BadMagic { .. })));
    }
}
