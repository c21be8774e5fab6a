//! Buckets and grants: who may read or write the streams of a bucket.
//!
//! Streams live in buckets, as on the Cere chain (`DdcCustomers` buckets): a
//! bucket has a `u64` id, an owner account, and is public or private. The
//! owner may do anything with its bucket. Anyone may read a public bucket.
//! Everything else needs a **grant**: a statement signed by an account that
//! lets another account (the subject) do some operations on one bucket until
//! an expiry time. A grant that allows delegation lets its subject issue
//! grants of its own, so grants form a **chain** from the owner to the
//! requester, like Cere's delegation tokens. Along a chain, rights only
//! narrow: a link cannot allow more operations than its parent, nor outlive
//! it, and only a parent that allows delegation may have a child.
//!
//! [`authorize`] is the single decision: bucket, chain, requester, operation,
//! clock and revocation set in; `Ok` or a [`Refusal`] that names exactly what
//! failed out. It is pure: no I/O, no clock of its own, no state.
//!
//! # What replay protection rests on
//!
//! A grant is a bearer token bound to its subject: anyone who holds the bytes
//! can present them, but [`authorize`] only succeeds for the `requester` that
//! is the last subject of the chain. The caller must therefore establish the
//! requester by proof of its key (the connection handshake), never from
//! the request itself. Replaying someone else's grant then gives
//! nothing without that account's secret key. Grants are not secret and not
//! single-use: a subject may present its chain on every request until the
//! chain expires. Taking a grant back early is done with the revocation set
//! the caller passes in, keyed by [`GrantId`].
//!
//! # Encoding
//!
//! A grant is [`GRANT_BYTES`] bytes, all integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 | version, 1 |
//! | 1 | flags: bit 0 may_delegate, bits 1..8 reserved zero |
//! | 2..4 | operations (`u16`): bit 0 read, bit 1 write, others reserved zero |
//! | 4..8 | reserved, zero |
//! | 8..16 | bucket id (`u64`) |
//! | 16..48 | issuer account (ed25519 public key) |
//! | 48..80 | subject account |
//! | 80..88 | not_before_ms (`u64`, Unix ms, 0 = no lower bound) |
//! | 88..96 | expires_ms (`u64`, Unix ms, first instant it is no longer valid) |
//! | 96..112 | nonce, 16 random bytes |
//! | 112..176 | ed25519 signature by the issuer |
//!
//! The issuer signs [`GRANT_SIGNING_DOMAIN`] (`"ddc grant v1"`, 12 bytes)
//! followed by bytes `0..112`. A chain is a 4-byte header (link count, then
//! three zero bytes) followed by the links in order, owner's grant first, at
//! most [`GRANT_CHAIN_LINKS_MAX`]. `docs/SECURITY.md` is the full spec.

use std::fmt;
use std::ops::{BitAnd, BitOr};

use crate::account::{Account, Keypair};

mod chain;
mod verify;

pub use chain::GrantChain;
pub use verify::{authorize, verify_chain, Bucket, EffectiveGrant, Refusal};

/// The grant encoding version this module writes and accepts.
pub const GRANT_VERSION: u8 = 1;

/// Bytes of one encoded grant.
pub const GRANT_BYTES: usize = 176;

/// Prefix of every message a grant issuer signs. It keeps a grant signature
/// from being valid as any other message an account signs (a handshake, a
/// usage acknowledgment), which use other prefixes.
pub const GRANT_SIGNING_DOMAIN: &[u8; 12] = b"ddc grant v1";

/// Most links a chain may have; the owner's grant counts as one.
pub const GRANT_CHAIN_LINKS_MAX: usize = 8;

/// Bytes of the chain header: the link count and three reserved bytes.
pub const GRANT_CHAIN_HEADER_BYTES: usize = 4;

/// Bytes of the longest encoded chain.
pub const GRANT_CHAIN_BYTES_MAX: usize = GRANT_CHAIN_HEADER_BYTES + GRANT_CHAIN_LINKS_MAX * GRANT_BYTES;

/// Bytes of the message the issuer signs.
pub const GRANT_SIGNING_MESSAGE_BYTES: usize = GRANT_SIGNING_DOMAIN.len() + GRANT_SIGNED_BYTES;

const GRANT_SIGNED_BYTES: usize = OFFSET_SIGNATURE;

const OFFSET_VERSION: usize = 0;
const OFFSET_FLAGS: usize = 1;
const OFFSET_OPERATIONS: usize = 2;
const OFFSET_RESERVED: usize = 4;
const OFFSET_BUCKET: usize = 8;
const OFFSET_ISSUER: usize = 16;
const OFFSET_SUBJECT: usize = 48;
const OFFSET_NOT_BEFORE: usize = 80;
const OFFSET_EXPIRES: usize = 88;
const OFFSET_NONCE: usize = 96;
const OFFSET_SIGNATURE: usize = 112;

const FLAG_MAY_DELEGATE: u8 = 1 << 0;

const _: () = assert!(OFFSET_FLAGS == OFFSET_VERSION + 1);
const _: () = assert!(OFFSET_OPERATIONS == OFFSET_FLAGS + 1);
const _: () = assert!(OFFSET_RESERVED == OFFSET_OPERATIONS + 2);
const _: () = assert!(OFFSET_BUCKET == OFFSET_RESERVED + 4);
const _: () = assert!(OFFSET_ISSUER == OFFSET_BUCKET + 8);
const _: () = assert!(OFFSET_SUBJECT == OFFSET_ISSUER + 32);
const _: () = assert!(OFFSET_NOT_BEFORE == OFFSET_SUBJECT + 32);
const _: () = assert!(OFFSET_EXPIRES == OFFSET_NOT_BEFORE + 8);
const _: () = assert!(OFFSET_NONCE == OFFSET_EXPIRES + 8);
const _: () = assert!(OFFSET_SIGNATURE == OFFSET_NONCE + 16);
const _: () = assert!(GRANT_BYTES == OFFSET_SIGNATURE + 64);
const _: () = assert!(GRANT_CHAIN_LINKS_MAX <= u8::MAX as usize);

/// A set of operations on a bucket. Bits the encoding does not define can
/// never be set, so a set read from outside is always one this version knows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Operations(u16);

impl Operations {
    /// No operation.
    pub const NONE: Operations = Operations(0);
    /// Fetch records, read stream metadata.
    pub const READ: Operations = Operations(1 << 0);
    /// Append records, create streams.
    pub const WRITE: Operations = Operations(1 << 1);
    /// Every operation this version defines.
    pub const ALL: Operations = Operations(Self::READ.0 | Self::WRITE.0);

    const NAMES: [(Operations, &'static str); 2] = [(Self::READ, "read"), (Self::WRITE, "write")];

    /// The bits as encoded in a grant.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The set with these bits, or `None` if a bit names no known operation.
    pub const fn from_bits(bits: u16) -> Option<Operations> {
        if bits & !Self::ALL.0 == 0 {
            Some(Operations(bits))
        } else {
            None
        }
    }

    /// Whether every operation in `other` is in `self`.
    pub const fn contains(self, other: Operations) -> bool {
        self.0 & other.0 == other.0
    }

    /// Operations in either set.
    pub const fn union(self, other: Operations) -> Operations {
        Operations(self.0 | other.0)
    }

    /// Operations in both sets.
    pub const fn intersection(self, other: Operations) -> Operations {
        Operations(self.0 & other.0)
    }

    /// Operations in `self` but not in `other`.
    pub const fn difference(self, other: Operations) -> Operations {
        Operations(self.0 & !other.0)
    }

    /// Whether the set holds no operation.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Operations {
    type Output = Operations;
    fn bitor(self, other: Operations) -> Operations {
        self.union(other)
    }
}

impl BitAnd for Operations {
    type Output = Operations;
    fn bitand(self, other: Operations) -> Operations {
        self.intersection(other)
    }
}

impl fmt::Display for Operations {
    /// Names joined by commas, e.g. `read,write`; `none` for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for (op, name) in Self::NAMES {
            if self.contains(op) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Operations({self})")
    }
}

/// What an issuer grants: everything in a grant except the issuer, nonce and
/// signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantTerms {
    /// The bucket the grant is for.
    pub bucket: u64,
    /// The account the grant is given to.
    pub subject: Account,
    /// What the subject may do.
    pub operations: Operations,
    /// First instant (Unix ms) the grant is valid; 0 for no lower bound.
    pub not_before_ms: u64,
    /// First instant (Unix ms) the grant is no longer valid.
    pub expires_ms: u64,
    /// Whether the subject may issue grants of its own on this one.
    pub may_delegate: bool,
}

/// A signed grant; see the module documentation for its encoding.
///
/// The fields are public so that callers can inspect them; a grant changed
/// after signing no longer verifies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Encoding version; [`GRANT_VERSION`] for grants this module issues.
    pub version: u8,
    /// The bucket the grant is for.
    pub bucket: u64,
    /// The account that signed the grant.
    pub issuer: Account,
    /// The account the grant is given to.
    pub subject: Account,
    /// What the subject may do.
    pub operations: Operations,
    /// First instant (Unix ms) the grant is valid; 0 for no lower bound.
    pub not_before_ms: u64,
    /// First instant (Unix ms) the grant is no longer valid.
    pub expires_ms: u64,
    /// Whether the subject may issue grants of its own on this one.
    pub may_delegate: bool,
    /// Random bytes that make two grants with the same terms distinct, so
    /// each has its own [`GrantId`] and can be revoked on its own.
    pub nonce: [u8; 16],
    /// The issuer's ed25519 signature over [`Grant::signing_message`].
    pub signature: [u8; 64],
}

impl Grant {
    /// Issue a grant signed by `issuer`, with a fresh random nonce.
    pub fn issue(issuer: &Keypair, terms: GrantTerms) -> Grant {
        Grant::issue_with_nonce(issuer, terms, rand::random())
    }

    /// Issue a grant with a given nonce, for reproducible test vectors. Two
    /// grants with the same issuer, terms and nonce have the same [`GrantId`],
    /// so revoking one revokes both.
    pub fn issue_with_nonce(issuer: &Keypair, terms: GrantTerms, nonce: [u8; 16]) -> Grant {
        let mut grant = Grant {
            version: GRANT_VERSION,
            bucket: terms.bucket,
            issuer: issuer.account(),
            subject: terms.subject,
            operations: terms.operations,
            not_before_ms: terms.not_before_ms,
            expires_ms: terms.expires_ms,
            may_delegate: terms.may_delegate,
            nonce,
            signature: [0; 64],
        };
        grant.signature = issuer.sign(&grant.signing_message());
        assert!(grant.signature_is_valid(), "a grant just signed verifies");
        grant
    }

    /// The terms of this grant.
    pub fn terms(&self) -> GrantTerms {
        GrantTerms {
            bucket: self.bucket,
            subject: self.subject,
            operations: self.operations,
            not_before_ms: self.not_before_ms,
            expires_ms: self.expires_ms,
            may_delegate: self.may_delegate,
        }
    }

    fn encode_signed_fields(&self) -> [u8; GRANT_SIGNED_BYTES] {
        let mut out = [0u8; GRANT_SIGNED_BYTES];
        out[OFFSET_VERSION] = self.version;
        out[OFFSET_FLAGS] = if self.may_delegate { FLAG_MAY_DELEGATE } else { 0 };
        out[OFFSET_OPERATIONS..OFFSET_RESERVED].copy_from_slice(&self.operations.bits().to_le_bytes());
        // Bytes OFFSET_RESERVED..OFFSET_BUCKET stay zero.
        out[OFFSET_BUCKET..OFFSET_ISSUER].copy_from_slice(&self.bucket.to_le_bytes());
        out[OFFSET_ISSUER..OFFSET_SUBJECT].copy_from_slice(&self.issuer.0);
        out[OFFSET_SUBJECT..OFFSET_NOT_BEFORE].copy_from_slice(&self.subject.0);
        out[OFFSET_NOT_BEFORE..OFFSET_EXPIRES].copy_from_slice(&self.not_before_ms.to_le_bytes());
        out[OFFSET_EXPIRES..OFFSET_NONCE].copy_from_slice(&self.expires_ms.to_le_bytes());
        out[OFFSET_NONCE..OFFSET_SIGNATURE].copy_from_slice(&self.nonce);
        out
    }

    /// The message the issuer signs: [`GRANT_SIGNING_DOMAIN`] followed by
    /// bytes `0..112` of the encoding. Both parts have fixed lengths, so no
    /// two different grants share a message.
    pub fn signing_message(&self) -> [u8; GRANT_SIGNING_MESSAGE_BYTES] {
        let mut out = [0u8; GRANT_SIGNING_MESSAGE_BYTES];
        out[..GRANT_SIGNING_DOMAIN.len()].copy_from_slice(GRANT_SIGNING_DOMAIN);
        out[GRANT_SIGNING_DOMAIN.len()..].copy_from_slice(&self.encode_signed_fields());
        out
    }

    /// The canonical encoding, [`GRANT_BYTES`] bytes.
    pub fn encode(&self) -> [u8; GRANT_BYTES] {
        let mut out = [0u8; GRANT_BYTES];
        out[..OFFSET_SIGNATURE].copy_from_slice(&self.encode_signed_fields());
        out[OFFSET_SIGNATURE..].copy_from_slice(&self.signature);
        out
    }

    /// Decode exactly one grant. Refuses a wrong length, another version,
    /// unknown flag or operation bits and nonzero reserved bytes, so every
    /// accepted grant has exactly one encoding. The signature is not checked
    /// here; [`authorize`] checks it.
    pub fn decode(bytes: &[u8]) -> Result<Grant, GrantFormatError> {
        let bytes: &[u8; GRANT_BYTES] = bytes
            .try_into()
            .map_err(|_| GrantFormatError::WrongLength { expected: GRANT_BYTES, actual: bytes.len() })?;
        let version = bytes[OFFSET_VERSION];
        if version != GRANT_VERSION {
            return Err(GrantFormatError::UnsupportedVersion { found: version, supported: GRANT_VERSION });
        }
        let flags = bytes[OFFSET_FLAGS];
        if flags & !FLAG_MAY_DELEGATE != 0 {
            return Err(GrantFormatError::UnknownFlags { flags });
        }
        let bits = u16::from_le_bytes([bytes[OFFSET_OPERATIONS], bytes[OFFSET_OPERATIONS + 1]]);
        let operations = Operations::from_bits(bits).ok_or(GrantFormatError::UnknownOperations { bits })?;
        for (offset, &value) in bytes.iter().enumerate().take(OFFSET_BUCKET).skip(OFFSET_RESERVED) {
            if value != 0 {
                return Err(GrantFormatError::NonZeroReserved { offset, value });
            }
        }
        let grant = Grant {
            version,
            bucket: u64::from_le_bytes(array(bytes, OFFSET_BUCKET)),
            issuer: Account(array(bytes, OFFSET_ISSUER)),
            subject: Account(array(bytes, OFFSET_SUBJECT)),
            operations,
            not_before_ms: u64::from_le_bytes(array(bytes, OFFSET_NOT_BEFORE)),
            expires_ms: u64::from_le_bytes(array(bytes, OFFSET_EXPIRES)),
            may_delegate: flags & FLAG_MAY_DELEGATE != 0,
            nonce: array(bytes, OFFSET_NONCE),
            signature: array(bytes, OFFSET_SIGNATURE),
        };
        assert_eq!(&grant.encode(), bytes, "decoding is the inverse of encoding");
        Ok(grant)
    }

    /// Whether the signature is the issuer's over [`Grant::signing_message`].
    ///
    /// Uses strict ed25519 verification, which also refuses small-order
    /// issuer keys: for such a key (the identity point, for one) anyone can
    /// make a signature that plain verification accepts, so a grant to a weak
    /// key with delegation allowed would let anyone extend the chain.
    pub fn signature_is_valid(&self) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.issuer.0) else { return false };
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&self.signing_message(), &signature).is_ok()
    }

    /// The id a revocation set names this grant by.
    pub fn id(&self) -> GrantId {
        GrantId(*blake3::hash(&self.signing_message()).as_bytes())
    }
}

/// `N` bytes of `bytes` from `offset`; the offsets are constants within the
/// fixed-size grant.
fn array<const N: usize>(bytes: &[u8; GRANT_BYTES], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("version", &self.version)
            .field("bucket", &self.bucket)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("operations", &self.operations)
            .field("not_before_ms", &self.not_before_ms)
            .field("expires_ms", &self.expires_ms)
            .field("may_delegate", &self.may_delegate)
            .field("nonce", &hex::encode(self.nonce))
            .field("signature", &hex::encode(self.signature))
            .finish()
    }
}

/// The id of a grant: BLAKE3-256 of its [`Grant::signing_message`].
///
/// The id covers what was granted and the nonce, not the signature bytes, so
/// a second valid signature over the same grant (ed25519 signers may choose
/// their nonce) cannot escape a revocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId(pub [u8; 32]);

impl fmt::Display for GrantId {
    /// 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantId({self})")
    }
}

/// Why bytes are not a grant or a grant chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantFormatError {
    /// Not exactly [`GRANT_BYTES`] bytes.
    #[error("a grant is {expected} bytes, got {actual}")]
    WrongLength { expected: usize, actual: usize },
    /// A version other than [`GRANT_VERSION`].
    #[error("grant version {found} is not supported (this node reads version {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    /// A flag bit other than may_delegate.
    #[error("grant flags {flags:#04x} set bits this version does not define")]
    UnknownFlags { flags: u8 },
    /// An operation bit other than read and write.
    #[error("grant operations {bits:#06x} name operations this version does not define")]
    UnknownOperations { bits: u16 },
    /// A reserved byte (of a grant or of the chain header) that is not zero.
    #[error("byte {offset} is reserved and must be zero, found {value:#04x}")]
    NonZeroReserved { offset: usize, value: u8 },
    /// More than [`GRANT_CHAIN_LINKS_MAX`] links.
    #[error("a grant chain of {links} links is longer than the {max} allowed")]
    TooManyLinks { links: usize, max: usize },
    /// Shorter than the chain header.
    #[error("a grant chain is at least its 4-byte header, got {actual} bytes")]
    ChainTooShort { actual: usize },
    /// A length that does not match the link count of the header.
    #[error("a grant chain of {links} links is {expected} bytes, got {actual}")]
    ChainLength { links: usize, expected: usize, actual: usize },
    /// A link (numbered from 1) that is not a grant.
    #[error("link {link} of the grant chain: {error}")]
    Link { link: usize, error: Box<GrantFormatError> },
}

#[cfg(test)]
mod tests;
