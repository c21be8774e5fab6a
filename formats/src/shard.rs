//! The shard file: one of the `n` Reed-Solomon shards of a sealed segment, as
//! a fixed 512-byte header followed by the shard's body. Layout and stripe
//! arithmetic in docs/FORMATS.md, "Shards (erasure-coded sealed segments)".
//!
//! The coding itself lives in `ddc-cluster` (`erasure.rs`); this module only
//! says what the bytes of a shard file mean and checks them.
//!
//! **Stripes.** A segment of `segment_bytes` bytes is cut into stripes of
//! `k * stripe_bytes` bytes, the last one zero-padded; each stripe gives every
//! shard one chunk of `stripe_bytes`. So every shard body of a segment is
//! [`body_bytes_for`] bytes long:
//! `ceil(segment_bytes / (k * stripe_bytes)) * stripe_bytes`.

use crate::name::{validate_stream_name, STREAM_NAME_BYTES_MAX};
use crate::{le_u16, le_u32, le_u64, FormatError};

/// Bytes of the header at the start of every shard file; the body follows it.
pub const SHARD_HEADER_BYTES: usize = 512;
pub const SHARD_MAGIC: [u8; 4] = *b"DDCH";
pub const SHARD_VERSION: u8 = 1;

// Where each field sits; docs/FORMATS.md has the same table.
const K_AT: usize = 8;
const N_AT: usize = 9;
const INDEX_AT: usize = 10;
const STRIPE_BYTES_AT: usize = 12;
const BASE_OFFSET_AT: usize = 16;
const NEXT_OFFSET_AT: usize = 24;
const SEGMENT_BYTES_AT: usize = 32;
const BODY_BYTES_AT: usize = 40;
const SEGMENT_ROOT_AT: usize = 48;
const BODY_HASH_AT: usize = 80;
const STREAM_LEN_AT: usize = 112;
const STREAM_AT: usize = 114;
const STREAM_END: usize = STREAM_AT + STREAM_NAME_BYTES_MAX;
const CRC_AT: usize = SHARD_HEADER_BYTES - 4;
/// Bytes that carry no field in version 1 and must be zero. The unused tail
/// of the stream name area (past `stream_len`) must be zero as well.
const RESERVED: [std::ops::Range<usize>; 3] = [5..8, 11..12, STREAM_END..CRC_AT];

const _: () = assert!(BODY_HASH_AT == SEGMENT_ROOT_AT + 32);
const _: () = assert!(STREAM_LEN_AT == BODY_HASH_AT + 32);
const _: () = assert!(STREAM_AT == STREAM_LEN_AT + 2);
const _: () = assert!(STREAM_END <= CRC_AT);
const _: () = assert!(STREAM_NAME_BYTES_MAX <= u16::MAX as usize);

/// The header of one shard file: which segment the shard belongs to, how the
/// segment was coded, and which shard this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    /// The segment's stream.
    pub stream: String,
    /// Offset of the segment's first record (its file name).
    pub base_offset: u64,
    /// One past the segment's last record offset.
    pub next_offset: u64,
    /// Bytes of the coded segment: its `.log` file's first `data_len` bytes
    /// (segment header and batches, no padding). At least 1.
    pub segment_bytes: u64,
    /// BLAKE3 of those `segment_bytes` bytes (the seal manifest's `root`).
    pub segment_root: [u8; 32],
    /// Data shards: any `k` shards rebuild the segment. At least 1.
    pub k: u8,
    /// All shards, data and parity; more than `k`.
    pub n: u8,
    /// This shard's position, `0..n`. Shards `0..k` hold the segment's bytes
    /// themselves (the code is systematic); `k..n` hold parity.
    pub index: u8,
    /// Bytes of one shard's chunk in each stripe. At least 1.
    pub stripe_bytes: u32,
    /// Bytes of the body after the header; always
    /// `body_bytes_for(segment_bytes, k, stripe_bytes)`.
    pub body_bytes: u64,
    /// BLAKE3 of the body.
    pub body_hash: [u8; 32],
}

/// Bytes of every shard body of a segment of `segment_bytes` bytes coded with
/// `k` data shards and `stripe_bytes` per chunk: the number of stripes,
/// `ceil(segment_bytes / (k * stripe_bytes))`, times `stripe_bytes`. `None`
/// if `k` or `stripe_bytes` is 0 or the arithmetic overflows.
pub fn body_bytes_for(segment_bytes: u64, k: u8, stripe_bytes: u32) -> Option<u64> {
    let stripe_data_bytes = u64::from(k).checked_mul(u64::from(stripe_bytes))?;
    if stripe_data_bytes == 0 {
        return None;
    }
    segment_bytes.div_ceil(stripe_data_bytes).checked_mul(u64::from(stripe_bytes))
}

impl ShardHeader {
    /// The 512 header bytes. Panics if the header breaks a rule
    /// [`ShardHeader::decode`] enforces: writing one would be our bug, and
    /// nobody could read it back.
    pub fn encode(&self) -> [u8; SHARD_HEADER_BYTES] {
        if let Err(e) = self.check() {
            panic!("ShardHeader::encode of an invalid header: {e}");
        }
        let mut out = [0u8; SHARD_HEADER_BYTES];
        out[0..4].copy_from_slice(&SHARD_MAGIC);
        out[4] = SHARD_VERSION;
        out[K_AT] = self.k;
        out[N_AT] = self.n;
        out[INDEX_AT] = self.index;
        out[STRIPE_BYTES_AT..STRIPE_BYTES_AT + 4].copy_from_slice(&self.stripe_bytes.to_le_bytes());
        out[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&self.base_offset.to_le_bytes());
        out[NEXT_OFFSET_AT..NEXT_OFFSET_AT + 8].copy_from_slice(&self.next_offset.to_le_bytes());
        out[SEGMENT_BYTES_AT..SEGMENT_BYTES_AT + 8].copy_from_slice(&self.segment_bytes.to_le_bytes());
        out[BODY_BYTES_AT..BODY_BYTES_AT + 8].copy_from_slice(&self.body_bytes.to_le_bytes());
        out[SEGMENT_ROOT_AT..SEGMENT_ROOT_AT + 32].copy_from_slice(&self.segment_root);
        out[BODY_HASH_AT..BODY_HASH_AT + 32].copy_from_slice(&self.body_hash);
        let name = self.stream.as_bytes();
        // `check` bounded the name by STREAM_NAME_BYTES_MAX, which fits u16.
        out[STREAM_LEN_AT..STREAM_LEN_AT + 2].copy_from_slice(&(name.len() as u16).to_le_bytes());
        out[STREAM_AT..STREAM_AT + name.len()].copy_from_slice(name);
        let crc = crc32fast::hash(&out[..CRC_AT]);
        out[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decode and check the header in the first 512 bytes of `bytes` (a
    /// longer slice, such as the whole shard file, is fine; the body is not
    /// looked at, see [`ShardHeader::verify_body`]).
    ///
    /// Checks, in this order: length, magic, CRC, version, reserved bytes,
    /// the stream name (length, zero padding, [`validate_stream_name`]), and
    /// the rules in [`ShardHeader::check`].
    pub fn decode(bytes: &[u8]) -> Result<ShardHeader, FormatError> {
        const WHAT: &str = "shard header";
        if bytes.len() < SHARD_HEADER_BYTES {
            return Err(FormatError::Truncated { what: WHAT, needed: SHARD_HEADER_BYTES, available: bytes.len() });
        }
        let bytes = &bytes[..SHARD_HEADER_BYTES];
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != SHARD_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT, found: magic });
        }
        let expected = le_u32(bytes, CRC_AT);
        let actual = crc32fast::hash(&bytes[..CRC_AT]);
        if expected != actual {
            return Err(FormatError::ChecksumMismatch { what: WHAT, expected, actual });
        }
        if bytes[4] != SHARD_VERSION {
            return Err(FormatError::UnsupportedVersion { what: WHAT, found: bytes[4] });
        }
        for r in RESERVED {
            if bytes[r.clone()].iter().any(|&b| b != 0) {
                return Err(FormatError::Invalid {
                    what: WHAT,
                    reason: format!("reserved bytes {}..{} must be zero", r.start, r.end),
                });
            }
        }
        let stream_len = usize::from(le_u16(bytes, STREAM_LEN_AT));
        if stream_len > STREAM_NAME_BYTES_MAX {
            return Err(FormatError::Invalid {
                what: WHAT,
                reason: format!("stream_len {stream_len} exceeds {STREAM_NAME_BYTES_MAX}"),
            });
        }
        let (name, padding) = bytes[STREAM_AT..STREAM_END].split_at(stream_len);
        if padding.iter().any(|&b| b != 0) {
            return Err(FormatError::Invalid {
                what: WHAT,
                reason: format!("stream name padding {}..{} must be zero", STREAM_AT + stream_len, STREAM_END),
            });
        }
        let stream = std::str::from_utf8(name)
            .map_err(|_| FormatError::Invalid { what: WHAT, reason: "stream name is not UTF-8".into() })?
            .to_owned();
        let mut segment_root = [0u8; 32];
        segment_root.copy_from_slice(&bytes[SEGMENT_ROOT_AT..SEGMENT_ROOT_AT + 32]);
        let mut body_hash = [0u8; 32];
        body_hash.copy_from_slice(&bytes[BODY_HASH_AT..BODY_HASH_AT + 32]);
        let header = ShardHeader {
            stream,
            base_offset: le_u64(bytes, BASE_OFFSET_AT),
            next_offset: le_u64(bytes, NEXT_OFFSET_AT),
            segment_bytes: le_u64(bytes, SEGMENT_BYTES_AT),
            segment_root,
            k: bytes[K_AT],
            n: bytes[N_AT],
            index: bytes[INDEX_AT],
            stripe_bytes: le_u32(bytes, STRIPE_BYTES_AT),
            body_bytes: le_u64(bytes, BODY_BYTES_AT),
            body_hash,
        };
        header.check()?;
        Ok(header)
    }

    /// The rules every header obeys, checked by `decode` and asserted by
    /// `encode`: a valid stream name; `1 <= k < n` (so `n <= 255` and at
    /// least one parity shard); `index < n`; `stripe_bytes >= 1`;
    /// `segment_bytes >= 1`; `base_offset <= next_offset`; and
    /// `body_bytes == body_bytes_for(segment_bytes, k, stripe_bytes)`.
    pub fn check(&self) -> Result<(), FormatError> {
        let invalid = |reason: String| Err(FormatError::Invalid { what: "shard header", reason });
        validate_stream_name(&self.stream)?;
        if self.k == 0 || self.k >= self.n {
            return invalid(format!("k {} and n {}: need 1 <= k < n", self.k, self.n));
        }
        if self.index >= self.n {
            return invalid(format!("index {} is not below n {}", self.index, self.n));
        }
        if self.stripe_bytes == 0 {
            return invalid("stripe_bytes is 0".into());
        }
        if self.segment_bytes == 0 {
            return invalid("segment_bytes is 0".into());
        }
        if self.next_offset < self.base_offset {
            return invalid(format!("next_offset {} is below base_offset {}", self.next_offset, self.base_offset));
        }
        if body_bytes_for(self.segment_bytes, self.k, self.stripe_bytes) != Some(self.body_bytes) {
            return invalid(format!(
                "body_bytes {} does not match segment_bytes {}, k {}, stripe_bytes {}",
                self.body_bytes, self.segment_bytes, self.k, self.stripe_bytes
            ));
        }
        Ok(())
    }

    /// Check a shard body against this header: exactly `body_bytes` long and
    /// its BLAKE3 equal to `body_hash`.
    pub fn verify_body(&self, body: &[u8]) -> Result<(), FormatError> {
        if body.len() as u64 != self.body_bytes {
            return Err(FormatError::Invalid {
                what: "shard body",
                reason: format!("length {} where the header says {}", body.len(), self.body_bytes),
            });
        }
        let actual = blake3::hash(body);
        if actual.as_bytes() != &self.body_hash {
            return Err(FormatError::Invalid {
                what: "shard body",
                reason: format!(
                    "BLAKE3 mismatch: header says {}, body hashes to {}",
                    blake3::Hash::from_bytes(self.body_hash).to_hex(),
                    actual.to_hex()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn header_for(body: &[u8]) -> ShardHeader {
        // 4 + 2 code, 64-byte chunks: 1000 segment bytes make ceil(1000 / 256) = 4 stripes.
        ShardHeader {
            stream: "orders.eu-1".into(),
            base_offset: 1_000,
            next_offset: 1_042,
            segment_bytes: 1_000,
            segment_root: [0xab; 32],
            k: 4,
            n: 6,
            index: 5,
            stripe_bytes: 64,
            body_bytes: body.len() as u64,
            body_hash: *blake3::hash(body).as_bytes(),
        }
    }

    /// Re-seal a hand-edited header with a correct CRC, so a check after the CRC is what fails.
    fn reseal(mut bytes: [u8; SHARD_HEADER_BYTES]) -> [u8; SHARD_HEADER_BYTES] {
        let crc = crc32fast::hash(&bytes[..CRC_AT]);
        bytes[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn reason(err: FormatError) -> String {
        err.to_string()
    }

    #[test]
    fn round_trips() {
        let b = body(256);
        let h = header_for(&b);
        let bytes = h.encode();
        assert_eq!(&bytes[0..4], b"DDCH");
        assert_eq!(ShardHeader::decode(&bytes).unwrap(), h);
        h.verify_body(&b).unwrap();
        // A longer slice (the header followed by its body) decodes the same.
        let mut file = bytes.to_vec();
        file.extend_from_slice(&b);
        assert_eq!(ShardHeader::decode(&file).unwrap(), h);
        // The longest allowed name, and extreme field values.
        let h = ShardHeader {
            stream: "s".repeat(STREAM_NAME_BYTES_MAX),
            base_offset: u64::MAX,
            next_offset: u64::MAX,
            segment_bytes: u64::MAX,
            k: 254,
            n: 255,
            index: 254,
            stripe_bytes: u32::MAX,
            body_bytes: body_bytes_for(u64::MAX, 254, u32::MAX).unwrap(),
            ..header_for(&b)
        };
        assert_eq!(ShardHeader::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn body_bytes_arithmetic() {
        assert_eq!(body_bytes_for(1, 4, 64), Some(64));
        assert_eq!(body_bytes_for(256, 4, 64), Some(64));
        assert_eq!(body_bytes_for(257, 4, 64), Some(128));
        assert_eq!(body_bytes_for(1_000, 4, 64), Some(256));
        assert_eq!(body_bytes_for(0, 4, 64), Some(0));
        assert_eq!(body_bytes_for(10, 1, 3), Some(12));
        assert_eq!(body_bytes_for(10, 0, 64), None);
        assert_eq!(body_bytes_for(10, 4, 0), None);
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let h = header_for(&body(256));
        let bytes = h.encode();
        for bit in 0..SHARD_HEADER_BYTES * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(ShardHeader::decode(&bad).is_err(), "flip of bit {bit} accepted");
        }
    }

    #[test]
    fn reserved_bytes_and_name_padding_must_be_zero() {
        let h = header_for(&body(256));
        for at in [5, 6, 7, 11, STREAM_END, 400, CRC_AT - 1] {
            let mut bad = h.encode();
            bad[at] = 1;
            let err = reason(ShardHeader::decode(&reseal(bad)).unwrap_err());
            assert!(err.contains("reserved bytes"), "byte {at}: {err}");
        }
        for at in [STREAM_AT + h.stream.len(), STREAM_END - 1] {
            let mut bad = h.encode();
            bad[at] = b'x';
            let err = reason(ShardHeader::decode(&reseal(bad)).unwrap_err());
            assert!(err.contains("padding"), "byte {at}: {err}");
        }
    }

    #[test]
    fn bad_lengths_are_refused() {
        let b = body(256);
        let h = header_for(&b);
        let bytes = h.encode();
        assert!(matches!(
            ShardHeader::decode(&bytes[..SHARD_HEADER_BYTES - 1]),
            Err(FormatError::Truncated { needed: SHARD_HEADER_BYTES, available: 511, .. })
        ));
        assert!(matches!(ShardHeader::decode(&[]), Err(FormatError::Truncated { .. })));
        // body_bytes one stripe chunk too many or too few, or off by one byte.
        for body_bytes in [0, 192, 255, 257, 320] {
            let mut bad = bytes;
            bad[BODY_BYTES_AT..BODY_BYTES_AT + 8].copy_from_slice(&(body_bytes as u64).to_le_bytes());
            let err = reason(ShardHeader::decode(&reseal(bad)).unwrap_err());
            assert!(err.contains("body_bytes"), "{body_bytes}: {err}");
        }
        // A body of the wrong length, or with one byte changed.
        assert!(reason(h.verify_body(&b[..255]).unwrap_err()).contains("length 255"));
        let mut longer = b.clone();
        longer.push(0);
        assert!(h.verify_body(&longer).is_err());
        let mut flipped = b.clone();
        flipped[100] ^= 0x10;
        assert!(reason(h.verify_body(&flipped).unwrap_err()).contains("BLAKE3 mismatch"));
        // Stream name longer than the area, and empty.
        let mut bad = bytes;
        bad[STREAM_LEN_AT..STREAM_LEN_AT + 2].copy_from_slice(&201u16.to_le_bytes());
        assert!(reason(ShardHeader::decode(&reseal(bad)).unwrap_err()).contains("stream_len 201"));
        let mut bad = bytes;
        bad[STREAM_LEN_AT..STREAM_LEN_AT + 2].copy_from_slice(&0u16.to_le_bytes());
        bad[STREAM_AT..STREAM_END].fill(0);
        assert!(reason(ShardHeader::decode(&reseal(bad)).unwrap_err()).contains("empty"));
    }

    #[test]
    fn code_parameters_and_extent_are_checked() {
        let h = header_for(&body(256));
        let cases: [(usize, u8, &str); 6] = [
            (K_AT, 0, "need 1 <= k < n"),
            (K_AT, 6, "need 1 <= k < n"),
            (K_AT, 7, "need 1 <= k < n"),
            (N_AT, 4, "need 1 <= k < n"),
            (INDEX_AT, 6, "index 6"),
            (INDEX_AT, 255, "index 255"),
        ];
        for (at, value, expected) in cases {
            let mut bad = h.encode();
            bad[at] = value;
            let err = reason(ShardHeader::decode(&reseal(bad)).unwrap_err());
            assert!(err.contains(expected), "byte {at} = {value}: {err}");
        }
        let mut bad = h.encode();
        bad[STRIPE_BYTES_AT..STRIPE_BYTES_AT + 4].fill(0);
        assert!(reason(ShardHeader::decode(&reseal(bad)).unwrap_err()).contains("stripe_bytes is 0"));
        let mut bad = h.encode();
        bad[SEGMENT_BYTES_AT..SEGMENT_BYTES_AT + 8].fill(0);
        bad[BODY_BYTES_AT..BODY_BYTES_AT + 8].fill(0);
        assert!(reason(ShardHeader::decode(&reseal(bad)).unwrap_err()).contains("segment_bytes is 0"));
        let mut bad = h.encode();
        bad[NEXT_OFFSET_AT..NEXT_OFFSET_AT + 8].copy_from_slice(&999u64.to_le_bytes());
        assert!(reason(ShardHeader::decode(&reseal(bad)).unwrap_err()).contains("below base_offset"));
        // A stream name the validator refuses, and one that is not UTF-8.
        let mut bad = h.encode();
        bad[STREAM_AT] = b'/';
        assert!(reason(ShardHeader::decode(&reseal(bad)).unwrap_err()).contains("stream name"));
        let mut bad = h.encode();
        bad[STREAM_AT] = 0xff;
        assert!(reason(ShardHeader::decode(&reseal(bad)).unwrap_err()).contains("UTF-8"));
        let mut bad = h.encode();
        bad[4] = 2;
        assert!(matches!(ShardHeader::decode(&reseal(bad)), Err(FormatError::UnsupportedVersion { found: 2, .. })));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(matches!(ShardHeader::decode(&bad), Err(FormatError::BadMagic { .. })));
        assert!(matches!(ShardHeader::decode(&[0u8; SHARD_HEADER_BYTES]), Err(FormatError::BadMagic { .. })));
    }

    #[test]
    #[should_panic(expected = "invalid header")]
    fn encode_refuses_an_invalid_header() {
        let h = ShardHeader { index: 6, ..header_for(&body(256)) };
        let _ = h.encode();
    }
}
