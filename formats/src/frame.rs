//! The frame that wraps every message on a TCP connection.
//!
//! ```text
//! 0      4        5      6          8             12         16
//! +------+--------+------+----------+-------------+----------+---------------+
//! | DDCF | version| flags| reserved | payload_len | checksum | payload ...   |
//! +------+--------+------+----------+-------------+----------+---------------+
//! ```
//! `checksum` is CRC-32 (IEEE, as `crc32fast`) over header bytes 0..12 followed
//! by the payload, so a flipped length or version is caught too. The payload is
//! one flatbuffers `Message` (schema/ddc.fbs). A reader checks the length
//! against its maximum *before* reading the payload.

use crate::{le_u16, le_u32, FormatError};

/// Bytes before the payload.
pub const FRAME_HEADER_BYTES: usize = 16;
/// First four bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"DDCF";
/// The only frame version this build speaks.
pub const FRAME_VERSION: u8 = 1;
/// Default largest accepted payload (16 MiB).
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 16 << 20;

/// A parsed frame header. The payload it announces is not yet verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub checksum: u32,
}

impl FrameHeader {
    /// Parse and bound-check a header. `payload_bytes_max` is the receiver's limit.
    pub fn decode(bytes: &[u8], payload_bytes_max: u32) -> Result<FrameHeader, FormatError> {
        if bytes.len() < FRAME_HEADER_BYTES {
            return Err(FormatError::Truncated {
                what: "frame header",
                needed: FRAME_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != FRAME_MAGIC {
            return Err(FormatError::BadMagic { what: "frame", found: magic });
        }
        if bytes[4] != FRAME_VERSION {
            return Err(FormatError::UnsupportedVersion { what: "frame", found: bytes[4] });
        }
        if bytes[5] != 0 || le_u16(bytes, 6) != 0 {
            return Err(FormatError::Invalid {
                what: "frame header",
                reason: "flags and reserved bytes must be zero in version 1".into(),
            });
        }
        let payload_len = le_u32(bytes, 8);
        if payload_len > payload_bytes_max {
            return Err(FormatError::FrameTooLarge { len: payload_len, max: payload_bytes_max });
        }
        Ok(FrameHeader { payload_len, checksum: le_u32(bytes, 12) })
    }

    /// Check the payload against the header's checksum.
    pub fn verify_payload(&self, header_bytes: &[u8], payload: &[u8]) -> Result<(), FormatError> {
        debug_assert!(header_bytes.len() >= FRAME_HEADER_BYTES);
        if payload.len() != self.payload_len as usize {
            return Err(FormatError::Truncated {
                what: "frame payload",
                needed: self.payload_len as usize,
                available: payload.len(),
            });
        }
        let actual = frame_checksum(&header_bytes[..12], payload);
        if actual != self.checksum {
            return Err(FormatError::ChecksumMismatch { what: "frame", expected: self.checksum, actual });
        }
        Ok(())
    }
}

fn frame_checksum(header_prefix: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_prefix);
    hasher.update(payload);
    hasher.finalize()
}

/// Write the header for `payload` into `out[..16]`.
pub fn encode_header(payload: &[u8], out: &mut [u8; FRAME_HEADER_BYTES]) {
    let len = u32::try_from(payload.len()).expect("payload length fits u32: callers bound frames");
    out[0..4].copy_from_slice(&FRAME_MAGIC);
    out[4] = FRAME_VERSION;
    out[5] = 0;
    out[6..8].copy_from_slice(&0u16.to_le_bytes());
    out[8..12].copy_from_slice(&len.to_le_bytes());
    let checksum = frame_checksum(&out[..12], payload);
    out[12..16].copy_from_slice(&checksum.to_le_bytes());
}

/// Append a whole frame (header and payload) to `out`.
pub fn encode_frame_into(payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    encode_header(payload, &mut header);
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// Decode one whole frame from the front of `bytes`: `Ok(Some((payload, consumed)))`,
/// `Ok(None)` when more bytes are needed, or the reason the frame is refused.
pub fn decode_frame(bytes: &[u8], payload_bytes_max: u32) -> Result<Option<(&[u8], usize)>, FormatError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let header = FrameHeader::decode(bytes, payload_bytes_max)?;
    let end = FRAME_HEADER_BYTES + header.payload_len as usize;
    if bytes.len() < end {
        return Ok(None);
    }
    let payload = &bytes[FRAME_HEADER_BYTES..end];
    header.verify_payload(bytes, payload)?;
    Ok(Some((payload, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_byte_flip_is_caught() {
        let mut frame = Vec::new();
        encode_frame_into(b"payload bytes", &mut frame);
        let (payload, used) = decode_frame(&frame, 1024).unwrap().unwrap();
        assert_eq!(payload, b"payload bytes");
        assert_eq!(used, frame.len());
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            assert!(!matches!(decode_frame(&bad, 1024), Ok(Some((p, _))) if p == b"payload bytes"), "flip at {i}");
        }
    }

    #[test]
    fn oversized_length_refused_before_payload() {
        let mut frame = Vec::new();
        encode_frame_into(&[0u8; 100], &mut frame);
        assert_eq!(FrameHeader::decode(&frame, 99), Err(FormatError::FrameTooLarge { len: 100, max: 99 }));
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let mut frame = Vec::new();
        encode_frame_into(b"abc", &mut frame);
        for cut in 0..frame.len() {
            assert_eq!(decode_frame(&frame[..cut], 1024), Ok(None));
        }
    }
}
