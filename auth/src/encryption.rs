//! Client-side encryption of record payloads with a bucket key.
//!
//! A bucket key is 32 random bytes that the bucket's owner hands to its grantees out of band
//! (nodes never see it). Clients seal each record payload with XChaCha20-Poly1305 before they
//! produce it and open it after they fetch it, so a node stores and serves ciphertext only.
//!
//! An encrypted record (all of it is the record payload the node sees; spec in
//! `docs/FORMATS.md`, "Encrypted records (client-side)"):
//!
//! ```text
//! offset  size  field
//!      0     1  version, 1
//!      1     8  key id: BLAKE3 derive_key("ddc bucket key id v1", key)[..8]
//!      9    24  nonce, random (OS RNG) for every record
//!     33     n  ciphertext of the n-byte plaintext
//!   33+n    16  Poly1305 tag
//! ```
//!
//! The associated data is `"ddc record v1" || header (33 bytes) || stream name`, so every byte
//! of the record is authenticated and a record copied into another stream does not open.
//!
//! A key file holds the key as 64 hex digits and a newline, readable by its owner only (mode
//! 0600), like the account key files of [`crate::account`].
//!
//! ```
//! use ddc_auth::encryption::{decrypt_record, encrypt_record, BucketKey};
//!
//! let key = BucketKey::generate();
//! let sealed = encrypt_record(&key, "orders", b"order 1: 3 apples");
//! assert_eq!(decrypt_record(&key, "orders", &sealed).unwrap(), b"order 1: 3 apples");
//! assert!(decrypt_record(&key, "invoices", &sealed).is_err());
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::path::Path;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// The version byte this module writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Bytes of the key id in the header.
pub const KEY_ID_BYTES: usize = 8;
/// Bytes of the XChaCha20 nonce in the header.
pub const NONCE_BYTES: usize = 24;
/// Bytes of the Poly1305 tag after the ciphertext.
pub const TAG_BYTES: usize = 16;
/// Bytes before the ciphertext: version, key id, nonce.
pub const HEADER_BYTES: usize = 1 + KEY_ID_BYTES + NONCE_BYTES;
/// Bytes an encrypted record has beyond its plaintext.
pub const RECORD_OVERHEAD_BYTES: usize = HEADER_BYTES + TAG_BYTES;
/// The longest plaintext one nonce can seal: XChaCha20's 32-bit block counter, less the block
/// that makes the Poly1305 key (the limit of the `chacha20poly1305` crate).
pub const RECORD_PLAINTEXT_BYTES_MAX: u64 = (1 << 38) - 64;

const _: () = assert!(HEADER_BYTES == 33);
const _: () = assert!(RECORD_OVERHEAD_BYTES == 49);

/// The first part of the associated data: names what is sealed and how, so a sealed record can
/// never be taken for another kind of ciphertext made with the same key.
const AAD_DOMAIN: &[u8] = b"ddc record v1";
/// The BLAKE3 key-derivation context of key ids.
const KEY_ID_CONTEXT: &str = "ddc bucket key id v1";
const KEY_BYTES: usize = 32;

/// Errors of bucket keys and encrypted records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionError {
    /// A key file could not be written or read, or does not hold a key.
    #[error("bucket key file {path}: {reason}")]
    KeyFile {
        /// The key file.
        path: String,
        /// What is wrong, or the I/O error.
        reason: String,
    },
    /// Shorter than a header and a tag: not an encrypted record (or a truncated one).
    #[error(
        "record of {len} bytes is too short to be encrypted (header and tag alone are {RECORD_OVERHEAD_BYTES} bytes)"
    )]
    TooShort {
        /// The record's length in bytes.
        len: usize,
    },
    /// A version byte this client does not know: not an encrypted record, or a newer format.
    #[error("record has encryption version {found}, this client reads {RECORD_VERSION} (not an encrypted record?)")]
    UnknownVersion {
        /// The record's first byte.
        found: u8,
    },
    /// The record names another key than the one given.
    #[error("record encrypted with key {record}, you have {have}")]
    WrongKey {
        /// The key the record was sealed with.
        record: KeyId,
        /// The key given to open it.
        have: KeyId,
    },
    /// The right key, but the tag does not match: the record was changed, or it was sealed for
    /// another stream.
    #[error(
        "record fails authentication for stream {stream:?}: it was tampered with, or encrypted for another stream"
    )]
    Authentication {
        /// The stream the record was read from.
        stream: String,
    },
}

/// Which key sealed a record: the first 8 bytes of
/// BLAKE3 `derive_key("ddc bucket key id v1", key)`. Shown as 16 hex digits.
///
/// It names a key without revealing it, so a reader holding the wrong key learns which one it
/// needs. It is not a secret and not a proof: the tag is what authenticates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_BYTES]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A bucket's record key: 32 random bytes, shared by everyone who may read the bucket.
///
/// Not `Clone`, so the secret has one home; it is overwritten with zeros when dropped.
pub struct BucketKey {
    bytes: [u8; KEY_BYTES],
    id: KeyId,
}

impl fmt::Debug for BucketKey {
    /// Shows the key id only, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BucketKey({})", self.id)
    }
}

impl Drop for BucketKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

impl BucketKey {
    /// A new key from the operating system's random number generator.
    ///
    /// Panics if that generator fails.
    pub fn generate() -> BucketKey {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        BucketKey::from_bytes(bytes)
    }

    /// The key with these bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> BucketKey {
        let derived = blake3::derive_key(KEY_ID_CONTEXT, &bytes);
        let mut id = [0u8; KEY_ID_BYTES];
        id.copy_from_slice(&derived[..KEY_ID_BYTES]);
        BucketKey { bytes, id: KeyId(id) }
    }

    /// The key's id, as written in the header of every record it seals.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Write a new key file, mode 0600; never overwrites an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), EncryptionError> {
        crate::key_file::write_new(path, &self.bytes).map_err(|reason| key_file_error(path, reason))
    }

    /// Read a key file, refusing one that others can read.
    pub fn read(path: &Path) -> Result<BucketKey, EncryptionError> {
        let bytes = crate::key_file::read(path).map_err(|reason| key_file_error(path, reason))?;
        Ok(BucketKey::from_bytes(bytes))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        // The cipher keeps its own copy of the key and zeroizes it when dropped.
        XChaCha20Poly1305::new(&self.bytes.into())
    }
}

fn key_file_error(path: &Path, reason: String) -> EncryptionError {
    EncryptionError::KeyFile { path: path.display().to_string(), reason }
}

use crate::key_file::wipe;

/// The associated data of a record: domain, header, stream name. The stream name goes last,
/// after fixed-length parts, so the concatenation is unambiguous.
fn associated_data(header: &[u8], stream: &str) -> Vec<u8> {
    assert_eq!(header.len(), HEADER_BYTES);
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + HEADER_BYTES + stream.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(header);
    aad.extend_from_slice(stream.as_bytes());
    aad
}

/// Seal `plaintext` as a record of `stream` under `key`, with a fresh random nonce.
///
/// The result is `plaintext.len() + RECORD_OVERHEAD_BYTES` long. Panics if the plaintext is
/// longer than [`RECORD_PLAINTEXT_BYTES_MAX`] (256 GiB, far beyond any record a node takes), or
/// if the operating system's random number generator fails.
pub fn encrypt_record(key: &BucketKey, stream: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    seal_with_nonce(key, stream, plaintext, nonce)
}

/// [`encrypt_record`] with a chosen nonce; only tests may choose one, to pin the format.
fn seal_with_nonce(key: &BucketKey, stream: &str, plaintext: &[u8], nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
    assert!(plaintext.len() as u64 <= RECORD_PLAINTEXT_BYTES_MAX, "plaintext of {} bytes", plaintext.len());
    let mut sealed = Vec::with_capacity(plaintext.len() + RECORD_OVERHEAD_BYTES);
    sealed.push(RECORD_VERSION);
    sealed.extend_from_slice(&key.id.0);
    sealed.extend_from_slice(&nonce);
    let aad = associated_data(&sealed, stream);
    sealed.extend_from_slice(plaintext);
    let tag = key
        .cipher()
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut sealed[HEADER_BYTES..])
        .expect("the only failure is a plaintext over the length limit, asserted above");
    sealed.extend_from_slice(&tag);
    assert_eq!(sealed.len(), plaintext.len() + RECORD_OVERHEAD_BYTES);
    sealed
}

/// Open a record of `stream` sealed by [`encrypt_record`]; returns its plaintext.
///
/// Fails, with an error saying which, if `sealed` is too short or of an unknown version, names
/// another key than `key`, or does not authenticate (changed bytes, or sealed for another
/// stream).
pub fn decrypt_record(key: &BucketKey, stream: &str, sealed: &[u8]) -> Result<Vec<u8>, EncryptionError> {
    if sealed.len() < RECORD_OVERHEAD_BYTES {
        return Err(EncryptionError::TooShort { len: sealed.len() });
    }
    if sealed[0] != RECORD_VERSION {
        return Err(EncryptionError::UnknownVersion { found: sealed[0] });
    }
    let (header, body) = sealed.split_at(HEADER_BYTES);
    let mut record_key_id = [0u8; KEY_ID_BYTES];
    record_key_id.copy_from_slice(&header[1..1 + KEY_ID_BYTES]);
    if record_key_id != key.id.0 {
        return Err(EncryptionError::WrongKey { record: KeyId(record_key_id), have: key.id });
    }
    let nonce = XNonce::from_slice(&header[1 + KEY_ID_BYTES..]);
    let (ciphertext, tag) = body.split_at(body.len() - TAG_BYTES);
    let mut plaintext = ciphertext.to_vec();
    key.cipher()
        .decrypt_in_place_detached(nonce, &associated_data(header, stream), &mut plaintext, tag.into())
        .map_err(|_| EncryptionError::Authentication { stream: stream.to_owned() })?;
    assert_eq!(plaintext.len() + RECORD_OVERHEAD_BYTES, sealed.len());
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> BucketKey {
        BucketKey::from_bytes([byte; KEY_BYTES])
    }

    #[test]
    fn round_trips_empty_small_and_large_payloads() {
        let key = BucketKey::generate();
        let large: Vec<u8> = (0..(4 << 20) + 7).map(|i: u32| (i * 31 % 251) as u8).collect();
        for plaintext in [&b""[..], b"x", b"order 17: 3 apples\n", &[0u8, 0xff, b'\n', 0][..], &large] {
            let sealed = encrypt_record(&key, "orders", plaintext);
            assert_eq!(sealed.len(), plaintext.len() + RECORD_OVERHEAD_BYTES);
            assert_eq!(sealed[0], RECORD_VERSION);
            assert_eq!(sealed[1..9], key.id().0);
            assert_eq!(decrypt_record(&key, "orders", &sealed).unwrap(), plaintext);
        }
        // The ciphertext does not carry the plaintext in the clear.
        let sealed = encrypt_record(&key, "orders", &large);
        assert_ne!(sealed[HEADER_BYTES..HEADER_BYTES + large.len()], large[..]);
    }

    #[test]
    fn changing_any_byte_or_the_length_fails() {
        let key = key(1);
        let sealed = encrypt_record(&key, "orders", b"pay 10 to alice");
        for i in 0..sealed.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = sealed.clone();
                bad[i] ^= flip;
                let err = decrypt_record(&key, "orders", &bad).unwrap_err();
                match i {
                    0 => assert!(matches!(err, EncryptionError::UnknownVersion { .. }), "byte {i}: {err}"),
                    1..=8 => assert!(matches!(err, EncryptionError::WrongKey { .. }), "byte {i}: {err}"),
                    _ => assert!(matches!(err, EncryptionError::Authentication { .. }), "byte {i}: {err}"),
                }
            }
        }
        for len in 0..sealed.len() {
            let err = decrypt_record(&key, "orders", &sealed[..len]).unwrap_err();
            if len < RECORD_OVERHEAD_BYTES {
                assert!(matches!(err, EncryptionError::TooShort { len: l } if l == len), "{len}: {err}");
            } else {
                assert!(matches!(err, EncryptionError::Authentication { .. }), "{len}: {err}");
            }
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(decrypt_record(&key, "orders", &longer), Err(EncryptionError::Authentication { .. })));
    }

    #[test]
    fn a_record_does_not_open_in_another_stream() {
        let key = key(2);
        let sealed = encrypt_record(&key, "orders", b"pay 10 to alice");
        for other in ["orders2", "order", "Orders", ""] {
            let err = decrypt_record(&key, other, &sealed).unwrap_err();
            assert!(matches!(err, EncryptionError::Authentication { .. }), "{other}: {err}");
            assert!(err.to_string().contains("another stream"), "{err}");
        }
    }

    #[test]
    fn the_wrong_key_names_both_key_ids() {
        let (mine, theirs) = (BucketKey::generate(), BucketKey::generate());
        assert_ne!(mine.id(), theirs.id());
        let sealed = encrypt_record(&theirs, "orders", b"secret");
        let err = decrypt_record(&mine, "orders", &sealed).unwrap_err();
        assert!(
            matches!(err, EncryptionError::WrongKey { record, have } if record == theirs.id() && have == mine.id())
        );
        assert_eq!(err.to_string(), format!("record encrypted with key {}, you have {}", theirs.id(), mine.id()));
        // A different key whose id was forged into the header still fails, on the tag.
        let mut forged = sealed.clone();
        forged[1..9].copy_from_slice(&mine.id().0);
        assert!(matches!(decrypt_record(&mine, "orders", &forged), Err(EncryptionError::Authentication { .. })));
    }

    #[test]
    fn every_encryption_draws_a_new_nonce() {
        let key = key(3);
        let sealed: Vec<Vec<u8>> = (0..64).map(|_| encrypt_record(&key, "orders", b"same plaintext")).collect();
        let nonces: std::collections::HashSet<&[u8]> = sealed.iter().map(|s| &s[9..HEADER_BYTES]).collect();
        assert_eq!(nonces.len(), sealed.len());
        let ciphertexts: std::collections::HashSet<&[u8]> = sealed.iter().map(|s| &s[HEADER_BYTES..]).collect();
        assert_eq!(ciphertexts.len(), sealed.len());
    }

    #[test]
    fn other_versions_and_short_input_are_refused_with_clear_errors() {
        let key = key(4);
        let mut sealed = encrypt_record(&key, "orders", b"x");
        sealed[0] = 2;
        let err = decrypt_record(&key, "orders", &sealed).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        let err = decrypt_record(&key, "orders", b"plain text record").unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
    }

    /// Golden record: the format must not change under version 1. The key id comes from the
    /// blake3 crate; the ciphertext and tag were computed independently (Python: HChaCha20
    /// written out by hand and checked against the test vector of draft-irtf-cfrg-xchacha-03
    /// section 2.2.1, then the `cryptography` package's IETF ChaCha20-Poly1305 with the subkey
    /// and nonce `0000 || nonce[16..24]`), over the same associated data.
    #[test]
    fn golden_record_version_1() {
        let key = key(7);
        let nonce: [u8; NONCE_BYTES] = std::array::from_fn(|i| i as u8);
        let sealed = seal_with_nonce(&key, "orders", b"hello, ddc", nonce);
        assert_eq!(key.id().to_string(), GOLDEN_KEY_ID);
        assert_eq!(hex::encode(&sealed), GOLDEN_RECORD);
        let golden = hex::decode(GOLDEN_RECORD).unwrap();
        assert_eq!(decrypt_record(&key, "orders", &golden).unwrap(), b"hello, ddc");
    }

    const GOLDEN_KEY_ID: &str = "c464d139b06b6c9b";
    const GOLDEN_RECORD: &str = concat!(
        "01",
        "c464d139b06b6c9b",
        "000102030405060708090a0b0c0d0e0f1011121314151617",
        "c072c7e995307bc141a4",
        "f89974a2292274cc67d22029961471d2",
    );

    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.bucket-key");
        let key = BucketKey::generate();
        key.write_new(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() == 65 && text.ends_with('\n'), "{text:?}");
        assert_eq!(BucketKey::read(&path).unwrap().id(), key.id());
        let sealed = encrypt_record(&key, "orders", b"across a key file");
        assert_eq!(decrypt_record(&BucketKey::read(&path).unwrap(), "orders", &sealed).unwrap(), b"across a key file");

        // Never overwritten.
        let err = BucketKey::generate().write_new(&path).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        assert_eq!(BucketKey::read(&path).unwrap().id(), key.id());

        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = BucketKey::read(&path).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{mode:o}: {err}");
        }

        let bad = dir.path().join("bad.bucket-key");
        for content in [String::new(), "abc\n".to_owned(), "zz".repeat(32), "ab".repeat(33)] {
            let _ = std::fs::remove_file(&bad);
            std::fs::write(&bad, &content).unwrap();
            std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
            let err = BucketKey::read(&bad).unwrap_err();
            assert!(err.to_string().contains("does not hold a key"), "{content:?}: {err}");
        }
        assert!(BucketKey::read(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = key(0xab);
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("BucketKey({})", key.id()));
        assert!(!shown.contains("abab"));
    }
}
