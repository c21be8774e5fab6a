//! Usage records and consumers' signed acknowledgments of what a node served.
//!
//! Two things live here, both pure (no I/O, no clock, no network):
//!
//! - [`CustomerUsage`] and [`NodeUsage`], the four counters Cere's chain uses
//!   for billing (`transferred_bytes`, `stored_bytes`, `number_of_puts`,
//!   `number_of_gets`), with checked addition and a fixed 32-byte encoding.
//!   Addition fails with [`UsageError::Overflow`] rather than saturating:
//!   a saturated counter would silently bill the wrong amount.
//! - [`ConsumerAck`], a consumer's signed, cumulative acknowledgment of the
//!   bytes and gets it received from one node in one session, as in Cere's
//!   activity capture, and [`AckLedger`], which keeps the latest acceptable
//!   acknowledgment per session as evidence of service.
//!
//! # Acknowledgment encoding
//!
//! An acknowledgment is [`CONSUMER_ACK_BYTES`] bytes, integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 | version, 1 |
//! | 1..8 | reserved, zero |
//! | 8..16 | bucket id (`u64`) |
//! | 16..48 | node account (ed25519 public key) that served |
//! | 48..80 | consumer account that signs |
//! | 80..96 | session nonce, 16 bytes |
//! | 96..104 | request_seq (`u64`) |
//! | 104..112 | cumulative_bytes (`u64`) |
//! | 112..120 | cumulative_gets (`u64`) |
//! | 120..184 | ed25519 signature by the consumer |
//!
//! The consumer signs [`CONSUMER_ACK_SIGNING_DOMAIN`] (`"ddc consumer ack v1"`,
//! 19 bytes) followed by bytes `0..120`. The domain keeps the signature from
//! being valid as a grant or handshake message. Decoding refuses an unknown
//! version and non-zero reserved bytes, so every byte of an acknowledgment is
//! either checked by the decoder or covered by the signature.
//!
//! ```
//! use ddc_auth::account::Keypair;
//! use ddc_auth::usage::{AckLedger, ConsumerAck};
//!
//! let node = Keypair::generate().account();
//! let consumer = Keypair::generate();
//! let ack = ConsumerAck::sign(&consumer, 7, node, [1; 16], 1, 4096, 1);
//! let mut ledger = AckLedger::new(node);
//! ledger.accept(&ConsumerAck::decode(&ack.encode()).unwrap(), 4096, 1).unwrap();
//! assert_eq!(ledger.latest(7, consumer.account(), [1; 16]), Some(&ack));
//! ```

use std::collections::HashMap;

use crate::account::{Account, Keypair};

mod report;
pub use report::{UsageReport, USAGE_REPORT_MAGIC, USAGE_REPORT_SIGNING_DOMAIN};

/// Bytes of one encoded [`CustomerUsage`] or [`NodeUsage`].
pub const USAGE_BYTES: usize = 32;

/// The acknowledgment encoding version this module writes and accepts.
pub const CONSUMER_ACK_VERSION: u8 = 1;

/// Bytes of one encoded [`ConsumerAck`].
pub const CONSUMER_ACK_BYTES: usize = 184;

/// Bytes of an encoded acknowledgment covered by its signature (all but the
/// signature itself).
pub const CONSUMER_ACK_SIGNED_BYTES: usize = 120;

/// Prefix of every message a consumer signs to acknowledge usage.
pub const CONSUMER_ACK_SIGNING_DOMAIN: &[u8; 19] = b"ddc consumer ack v1";

const _: () = assert!(USAGE_BYTES == 4 * 8);
const _: () = assert!(CONSUMER_ACK_SIGNED_BYTES == 1 + 7 + 8 + 32 + 32 + 16 + 8 + 8 + 8);
const _: () = assert!(CONSUMER_ACK_BYTES == CONSUMER_ACK_SIGNED_BYTES + 64);

/// Why a usage record or acknowledgment was refused. Each variant names the
/// rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// Adding two usage records would overflow a `u64` counter.
    #[error("usage counter {field} overflows u64")]
    Overflow {
        /// The counter that overflowed.
        field: &'static str,
    },
    /// The bytes given to a decoder have the wrong length.
    #[error("expected {expected} bytes, got {actual}")]
    WrongLength {
        /// The length the encoding has.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
    /// The acknowledgment has a version this code does not know.
    #[error("unknown consumer ack version {0}, expected {CONSUMER_ACK_VERSION}")]
    UnknownVersion(u8),
    /// Reserved bytes of the acknowledgment are not zero.
    #[error("reserved bytes of a consumer ack are not zero")]
    ReservedNotZero,
    /// The signature is not the consumer's over this acknowledgment.
    #[error("consumer ack signature does not verify for {consumer}")]
    BadSignature {
        /// The account the acknowledgment claims signed it.
        consumer: Account,
    },
    /// The acknowledgment names another node than the one keeping the ledger.
    #[error("consumer ack names node {named}, this node is {expected}")]
    WrongNode {
        /// This node.
        expected: Account,
        /// The node the acknowledgment names.
        named: Account,
    },
    /// `request_seq` is not greater than that of the acknowledgment kept: a
    /// replay or an older acknowledgment.
    #[error("consumer ack request_seq {got} is not after the kept {last}")]
    SequenceNotIncreasing {
        /// `request_seq` of the kept acknowledgment.
        last: u64,
        /// `request_seq` of the refused one.
        got: u64,
    },
    /// A cumulative counter is lower than in the acknowledgment kept.
    #[error("consumer ack {counter} went down from {last} to {got}")]
    CounterDecreased {
        /// The counter, `cumulative_bytes` or `cumulative_gets`.
        counter: &'static str,
        /// Its value in the kept acknowledgment.
        last: u64,
        /// Its value in the refused one.
        got: u64,
    },
    /// A cumulative counter is more than the node served in the session.
    #[error("consumer ack {counter} is {acked}, but the node served {served} in this session")]
    ExceedsServed {
        /// The counter, `cumulative_bytes` or `cumulative_gets`.
        counter: &'static str,
        /// What the node counted as served.
        served: u64,
        /// What the acknowledgment claims.
        acked: u64,
    },
    /// Two bucket entries of a usage report have the same bucket id.
    #[error("usage report lists bucket {bucket} twice")]
    DuplicateBucket {
        /// The repeated bucket id.
        bucket: u64,
    },
    /// Bucket ids of an encoded usage report are not increasing.
    #[error("usage report lists bucket {got} after bucket {previous}")]
    BucketsOutOfOrder {
        /// The id of the entry before.
        previous: u64,
        /// The id that is not greater.
        got: u64,
    },
    /// A usage report's node usage is not the sum of its bucket usages.
    #[error("usage report states node usage {stated:?}, but its buckets sum to {summed:?}")]
    NodeUsageMismatch {
        /// The node usage the report states.
        stated: NodeUsage,
        /// The field-wise sum of its bucket usages.
        summed: NodeUsage,
    },
    /// A usage report holds the same consumer acknowledgment twice.
    #[error("usage report holds the ack of {consumer} for bucket {bucket}, request_seq {request_seq} twice")]
    DuplicateAck {
        /// The acknowledgment's bucket.
        bucket: u64,
        /// The acknowledgment's consumer.
        consumer: Account,
        /// The acknowledgment's `request_seq`.
        request_seq: u64,
    },
    /// The acknowledgments of an encoded usage report are not in the order
    /// [`UsageReport::sign`] puts them in.
    #[error("consumer ack {index} of a usage report is not after the one before it")]
    AcksOutOfOrder {
        /// Position of the acknowledgment, counting from 0.
        index: usize,
    },
    /// A usage report has more bucket entries than [`UsageReport::BUCKETS_MAX`].
    #[error("usage report has {count} buckets, at most {max} are allowed")]
    TooManyBuckets {
        /// The number of entries.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A usage report has more acknowledgments than [`UsageReport::ACKS_MAX`].
    #[error("usage report has {count} consumer acks, at most {max} are allowed")]
    TooManyAcks {
        /// The number of acknowledgments.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Fewer bytes than the shortest usage report (no bucket, no ack).
    #[error("{actual} bytes are too few for a usage report, which has at least {minimum}")]
    ReportTooShort {
        /// The length that was given.
        actual: usize,
        /// [`UsageReport::BYTES_MIN`].
        minimum: usize,
    },
    /// The bytes do not start with [`USAGE_REPORT_MAGIC`].
    #[error("not a usage report: the first bytes are {found:?}, not \"DDCU\"")]
    NotAUsageReport {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The usage report has a version this code does not know.
    #[error("unknown usage report version {0}, expected {expected}", expected = UsageReport::VERSION)]
    UnknownReportVersion(u8),
    /// A reserved byte of a usage report is not zero.
    #[error("reserved byte {offset} of a usage report is {value}, not zero")]
    ReportReservedNotZero {
        /// Offset of the byte in the report.
        offset: usize,
        /// Its value.
        value: u8,
    },
    /// The usage report's signature is not the node's over the report.
    #[error("usage report signature does not verify for node {node}")]
    BadReportSignature {
        /// The node the report claims signed it.
        node: Account,
    },
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(le)
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn check_length(bytes: &[u8], expected: usize) -> Result<(), UsageError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(UsageError::WrongLength { expected, actual: bytes.len() })
    }
}

/// Defines a usage record type; Cere's `CustomerUsage` and `NodeUsage` have
/// the same fields and rules but must not be mixed up, so they are two types.
macro_rules! usage_record {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Encoded as [`USAGE_BYTES`] bytes: the four counters in field order,
        /// each a little-endian `u64`.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name {
            /// Bytes sent to or received from consumers.
            pub transferred_bytes: u64,
            /// Bytes held in storage.
            pub stored_bytes: u64,
            /// Number of write requests.
            pub number_of_puts: u64,
            /// Number of read requests.
            pub number_of_gets: u64,
        }

        impl $name {
            /// Field-wise sum, or [`UsageError::Overflow`] naming the first
            /// counter that does not fit in a `u64`.
            pub fn add(&self, other: &$name) -> Result<$name, UsageError> {
                let sum = |a: u64, b: u64, field: &'static str| a.checked_add(b).ok_or(UsageError::Overflow { field });
                Ok($name {
                    transferred_bytes: sum(self.transferred_bytes, other.transferred_bytes, "transferred_bytes")?,
                    stored_bytes: sum(self.stored_bytes, other.stored_bytes, "stored_bytes")?,
                    number_of_puts: sum(self.number_of_puts, other.number_of_puts, "number_of_puts")?,
                    number_of_gets: sum(self.number_of_gets, other.number_of_gets, "number_of_gets")?,
                })
            }

            /// The fixed 32-byte encoding.
            pub fn encode(&self) -> [u8; USAGE_BYTES] {
                let mut out = [0u8; USAGE_BYTES];
                out[0..8].copy_from_slice(&self.transferred_bytes.to_le_bytes());
                out[8..16].copy_from_slice(&self.stored_bytes.to_le_bytes());
                out[16..24].copy_from_slice(&self.number_of_puts.to_le_bytes());
                out[24..32].copy_from_slice(&self.number_of_gets.to_le_bytes());
                out
            }

            /// Decode [`Self::encode`]'s output; any other length is refused.
            pub fn decode(bytes: &[u8]) -> Result<$name, UsageError> {
                check_length(bytes, USAGE_BYTES)?;
                Ok($name {
                    transferred_bytes: read_u64(bytes, 0),
                    stored_bytes: read_u64(bytes, 8),
                    number_of_puts: read_u64(bytes, 16),
                    number_of_gets: read_u64(bytes, 24),
                })
            }
        }
    };
}

usage_record!(
    /// What a customer (bucket owner) used, as Cere's `CustomerUsage`.
    CustomerUsage
);

usage_record!(
    /// What a node provided, as Cere's `NodeUsage`.
    NodeUsage
);

/// A consumer's signed acknowledgment of everything it received from one node
/// in one session so far. Counters are cumulative, so the latest
/// acknowledgment alone is the evidence; losing earlier ones loses nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerAck {
    /// Encoding version, [`CONSUMER_ACK_VERSION`].
    pub version: u8,
    /// The bucket the data was read from.
    pub bucket: u64,
    /// The node that served the data.
    pub node: Account,
    /// The consumer that received it and signs.
    pub consumer: Account,
    /// Identifies the session; counters restart from zero in a new session.
    pub session_nonce: [u8; 16],
    /// Sequence number of the request this acknowledgment follows; strictly
    /// increasing within a session.
    pub request_seq: u64,
    /// Bytes received from the node in this session so far.
    pub cumulative_bytes: u64,
    /// Get requests answered by the node in this session so far.
    pub cumulative_gets: u64,
    /// The consumer's ed25519 signature over [`Self::signing_message`].
    pub signature: [u8; 64],
}

impl ConsumerAck {
    /// Build and sign an acknowledgment as `consumer`.
    pub fn sign(
        consumer: &Keypair,
        bucket: u64,
        node: Account,
        session_nonce: [u8; 16],
        request_seq: u64,
        cumulative_bytes: u64,
        cumulative_gets: u64,
    ) -> ConsumerAck {
        let mut ack = ConsumerAck {
            version: CONSUMER_ACK_VERSION,
            bucket,
            node,
            consumer: consumer.account(),
            session_nonce,
            request_seq,
            cumulative_bytes,
            cumulative_gets,
            signature: [0u8; 64],
        };
        ack.signature = consumer.sign(&ack.signing_message());
        debug_assert!(ack.verify());
        ack
    }

    /// Bytes `0..120` of the encoding: everything but the signature.
    fn signed_fields(&self) -> [u8; CONSUMER_ACK_SIGNED_BYTES] {
        let mut out = [0u8; CONSUMER_ACK_SIGNED_BYTES];
        out[0] = self.version;
        // Bytes 1..8 stay zero (reserved).
        out[8..16].copy_from_slice(&self.bucket.to_le_bytes());
        out[16..48].copy_from_slice(&self.node.0);
        out[48..80].copy_from_slice(&self.consumer.0);
        out[80..96].copy_from_slice(&self.session_nonce);
        out[96..104].copy_from_slice(&self.request_seq.to_le_bytes());
        out[104..112].copy_from_slice(&self.cumulative_bytes.to_le_bytes());
        out[112..120].copy_from_slice(&self.cumulative_gets.to_le_bytes());
        out
    }

    /// The message the consumer signs: [`CONSUMER_ACK_SIGNING_DOMAIN`]
    /// followed by bytes `0..120` of the encoding.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut message = Vec::with_capacity(CONSUMER_ACK_SIGNING_DOMAIN.len() + CONSUMER_ACK_SIGNED_BYTES);
        message.extend_from_slice(CONSUMER_ACK_SIGNING_DOMAIN);
        message.extend_from_slice(&self.signed_fields());
        message
    }

    /// True if the version is known and the signature is the consumer's over
    /// this acknowledgment (checked strictly, see [`Account::verify`]).
    pub fn verify(&self) -> bool {
        self.version == CONSUMER_ACK_VERSION && self.consumer.verify(&self.signing_message(), &self.signature)
    }

    /// The fixed [`CONSUMER_ACK_BYTES`]-byte encoding (see the module docs).
    pub fn encode(&self) -> [u8; CONSUMER_ACK_BYTES] {
        let mut out = [0u8; CONSUMER_ACK_BYTES];
        out[..CONSUMER_ACK_SIGNED_BYTES].copy_from_slice(&self.signed_fields());
        out[CONSUMER_ACK_SIGNED_BYTES..].copy_from_slice(&self.signature);
        out
    }

    /// Decode an acknowledgment. Checks length, version and reserved bytes,
    /// not the signature: call [`Self::verify`] (or [`AckLedger::accept`]).
    pub fn decode(bytes: &[u8]) -> Result<ConsumerAck, UsageError> {
        check_length(bytes, CONSUMER_ACK_BYTES)?;
        if bytes[0] != CONSUMER_ACK_VERSION {
            return Err(UsageError::UnknownVersion(bytes[0]));
        }
        if bytes[1..8].iter().any(|&b| b != 0) {
            return Err(UsageError::ReservedNotZero);
        }
        let ack = ConsumerAck {
            version: bytes[0],
            bucket: read_u64(bytes, 8),
            node: Account(read_array(bytes, 16)),
            consumer: Account(read_array(bytes, 48)),
            session_nonce: read_array(bytes, 80),
            request_seq: read_u64(bytes, 96),
            cumulative_bytes: read_u64(bytes, 104),
            cumulative_gets: read_u64(bytes, 112),
            signature: read_array(bytes, CONSUMER_ACK_SIGNED_BYTES),
        };
        debug_assert_eq!(&ack.encode()[..], bytes);
        Ok(ack)
    }

    /// The acknowledged amounts as a [`CustomerUsage`]: bytes are
    /// `transferred_bytes`, gets are `number_of_gets`; the rest is zero.
    pub fn usage(&self) -> CustomerUsage {
        CustomerUsage {
            transferred_bytes: self.cumulative_bytes,
            stored_bytes: 0,
            number_of_puts: 0,
            number_of_gets: self.cumulative_gets,
        }
    }
}

/// Identifies one session's acknowledgments in an [`AckLedger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckSession {
    /// The bucket read from.
    pub bucket: u64,
    /// The consumer that signs.
    pub consumer: Account,
    /// The node that served.
    pub node: Account,
    /// The session nonce.
    pub session_nonce: [u8; 16],
}

impl AckSession {
    /// The session an acknowledgment belongs to.
    pub fn of(ack: &ConsumerAck) -> AckSession {
        AckSession { bucket: ack.bucket, consumer: ack.consumer, node: ack.node, session_nonce: ack.session_nonce }
    }
}

/// The latest acceptable [`ConsumerAck`] of every session served by one node.
/// It holds no clock and does no I/O; the caller counts what it served.
#[derive(Debug, Clone)]
pub struct AckLedger {
    node: Account,
    latest: HashMap<AckSession, ConsumerAck>,
}

impl AckLedger {
    /// An empty ledger for the node `node`.
    pub fn new(node: Account) -> AckLedger {
        AckLedger { node, latest: HashMap::new() }
    }

    /// Keep `ack` as the session's evidence if it follows every rule:
    /// it names this node, its signature verifies, its `request_seq` is
    /// greater than the kept one's, neither counter is lower than the kept
    /// one's, and neither is more than the node served in that session
    /// (`served_bytes`, `served_gets`, counted by the caller). On refusal
    /// the ledger is unchanged.
    pub fn accept(&mut self, ack: &ConsumerAck, served_bytes: u64, served_gets: u64) -> Result<(), UsageError> {
        if ack.node != self.node {
            return Err(UsageError::WrongNode { expected: self.node, named: ack.node });
        }
        if ack.version != CONSUMER_ACK_VERSION {
            return Err(UsageError::UnknownVersion(ack.version));
        }
        if !ack.verify() {
            return Err(UsageError::BadSignature { consumer: ack.consumer });
        }
        let session = AckSession::of(ack);
        if let Some(last) = self.latest.get(&session) {
            if ack.request_seq <= last.request_seq {
                return Err(UsageError::SequenceNotIncreasing { last: last.request_seq, got: ack.request_seq });
            }
            if ack.cumulative_bytes < last.cumulative_bytes {
                return Err(UsageError::CounterDecreased {
                    counter: "cumulative_bytes",
                    last: last.cumulative_bytes,
                    got: ack.cumulative_bytes,
                });
            }
            if ack.cumulative_gets < last.cumulative_gets {
                return Err(UsageError::CounterDecreased {
                    counter: "cumulative_gets",
                    last: last.cumulative_gets,
                    got: ack.cumulative_gets,
                });
            }
        }
        if ack.cumulative_bytes > served_bytes {
            return Err(UsageError::ExceedsServed {
                counter: "cumulative_bytes",
                served: served_bytes,
                acked: ack.cumulative_bytes,
            });
        }
        if ack.cumulative_gets > served_gets {
            return Err(UsageError::ExceedsServed {
                counter: "cumulative_gets",
                served: served_gets,
                acked: ack.cumulative_gets,
            });
        }
        self.latest.insert(session, *ack);
        Ok(())
    }

    /// The acknowledgment kept for a session of this node, if any.
    pub fn latest(&self, bucket: u64, consumer: Account, session_nonce: [u8; 16]) -> Option<&ConsumerAck> {
        self.latest.get(&AckSession { bucket, consumer, node: self.node, session_nonce })
    }

    /// Every kept acknowledgment, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&AckSession, &ConsumerAck)> {
        self.latest.iter()
    }

    /// Remove a finished session and return its evidence, so the ledger does
    /// not grow without bound.
    pub fn finish_session(&mut self, bucket: u64, consumer: Account, session_nonce: [u8; 16]) -> Option<ConsumerAck> {
        self.latest.remove(&AckSession { bucket, consumer, node: self.node, session_nonce })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 16] = [9; 16];

    fn keys() -> (Keypair, Keypair) {
        (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]))
    }

    #[test]
    fn usage_round_trips_and_encodes_little_endian() {
        let usage = CustomerUsage {
            transferred_bytes: 1,
            stored_bytes: 0x0102,
            number_of_puts: u64::MAX,
            number_of_gets: 0x0807_0605_0403_0201,
        };
        let bytes = usage.encode();
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[8..10], &[2, 1]);
        assert_eq!(&bytes[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(CustomerUsage::decode(&bytes), Ok(usage));
        let node = NodeUsage { transferred_bytes: 5, stored_bytes: 6, number_of_puts: 7, number_of_gets: 8 };
        assert_eq!(NodeUsage::decode(&node.encode()), Ok(node));
        assert_eq!(NodeUsage::decode(&[0; 31]), Err(UsageError::WrongLength { expected: 32, actual: 31 }));
        assert_eq!(NodeUsage::decode(&[0; 33]), Err(UsageError::WrongLength { expected: 32, actual: 33 }));
    }

    #[test]
    fn usage_add_sums_and_refuses_overflow() {
        let a = NodeUsage { transferred_bytes: 1, stored_bytes: 2, number_of_puts: 3, number_of_gets: 4 };
        let b = NodeUsage { transferred_bytes: 10, stored_bytes: 20, number_of_puts: 30, number_of_gets: 40 };
        assert_eq!(
            a.add(&b),
            Ok(NodeUsage { transferred_bytes: 11, stored_bytes: 22, number_of_puts: 33, number_of_gets: 44 })
        );
        let full = CustomerUsage { number_of_puts: u64::MAX, ..CustomerUsage::default() };
        let one = CustomerUsage { number_of_puts: 1, ..CustomerUsage::default() };
        assert_eq!(full.add(&one), Err(UsageError::Overflow { field: "number_of_puts" }));
        let full = CustomerUsage { transferred_bytes: u64::MAX, ..CustomerUsage::default() };
        let one = CustomerUsage { transferred_bytes: 1, ..CustomerUsage::default() };
        assert_eq!(full.add(&one), Err(UsageError::Overflow { field: "transferred_bytes" }));
        assert_eq!(full.add(&CustomerUsage::default()), Ok(full));
    }

    #[test]
    fn ack_round_trips_and_verifies() {
        let (node, consumer) = keys();
        let ack = ConsumerAck::sign(&consumer, 42, node.account(), NONCE, 3, 1 << 40, 17);
        assert!(ack.verify());
        let bytes = ack.encode();
        assert_eq!(bytes.len(), CONSUMER_ACK_BYTES);
        assert_eq!(bytes[0], CONSUMER_ACK_VERSION);
        assert_eq!(&bytes[8..16], &42u64.to_le_bytes());
        assert_eq!(&bytes[16..48], &node.account().0);
        assert_eq!(&bytes[48..80], &consumer.account().0);
        assert_eq!(&bytes[80..96], &NONCE);
        assert_eq!(&bytes[96..104], &3u64.to_le_bytes());
        assert_eq!(&bytes[104..112], &(1u64 << 40).to_le_bytes());
        assert_eq!(&bytes[112..120], &17u64.to_le_bytes());
        assert!(ack.signing_message().starts_with(b"ddc consumer ack v1"));
        let decoded = ConsumerAck::decode(&bytes).unwrap();
        assert_eq!(decoded, ack);
        assert!(decoded.verify());
        assert_eq!(decoded.usage().transferred_bytes, 1 << 40);
        assert_eq!(decoded.usage().number_of_gets, 17);
        assert!(matches!(ConsumerAck::decode(&bytes[1..]), Err(UsageError::WrongLength { .. })));
    }

    #[test]
    fn every_bit_flip_of_an_ack_is_refused() {
        let (node, consumer) = keys();
        let ack = ConsumerAck::sign(&consumer, 42, node.account(), NONCE, 3, 1000, 2);
        let bytes = ack.encode();
        for bit in 0..CONSUMER_ACK_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            if let Ok(decoded) = ConsumerAck::decode(&flipped) {
                assert!(!decoded.verify(), "bit {bit} flipped and still verifies");
                let mut ledger = AckLedger::new(decoded.node);
                assert!(ledger.accept(&decoded, u64::MAX, u64::MAX).is_err(), "bit {bit} accepted");
            }
        }
    }

    #[test]
    fn ledger_accepts_growing_acks_and_keeps_the_latest() {
        let (node, consumer) = keys();
        let mut ledger = AckLedger::new(node.account());
        let first = ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 1, 100, 1);
        let second = ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 2, 100, 1);
        let third = ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 5, 300, 2);
        ledger.accept(&first, 100, 1).unwrap();
        ledger.accept(&second, 100, 1).unwrap();
        ledger.accept(&third, 300, 2).unwrap();
        assert_eq!(ledger.latest(1, consumer.account(), NONCE), Some(&third));
        assert_eq!(ledger.iter().count(), 1);
        // Another session of the same consumer is kept apart and starts afresh.
        let other = ConsumerAck::sign(&consumer, 1, node.account(), [3; 16], 1, 10, 1);
        ledger.accept(&other, 10, 1).unwrap();
        assert_eq!(ledger.iter().count(), 2);
        assert_eq!(ledger.finish_session(1, consumer.account(), NONCE), Some(third));
        assert_eq!(ledger.latest(1, consumer.account(), NONCE), None);
    }

    #[test]
    fn ledger_refuses_replayed_and_older_acks() {
        let (node, consumer) = keys();
        let mut ledger = AckLedger::new(node.account());
        let old = ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 4, 100, 1);
        let new = ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 5, 200, 2);
        ledger.accept(&old, 100, 1).unwrap();
        ledger.accept(&new, 200, 2).unwrap();
        assert_eq!(ledger.accept(&new, 200, 2), Err(UsageError::SequenceNotIncreasing { last: 5, got: 5 }));
        assert_eq!(ledger.accept(&old, 200, 2), Err(UsageError::SequenceNotIncreasing { last: 5, got: 4 }));
        assert_eq!(ledger.latest(1, consumer.account(), NONCE), Some(&new));
    }

    #[test]
    fn ledger_refuses_decreasing_counters() {
        let (node, consumer) = keys();
        let mut ledger = AckLedger::new(node.account());
        ledger.accept(&ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 1, 200, 2), 200, 2).unwrap();
        let fewer_bytes = ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 2, 199, 2);
        assert_eq!(
            ledger.accept(&fewer_bytes, 200, 2),
            Err(UsageError::CounterDecreased { counter: "cumulative_bytes", last: 200, got: 199 })
        );
        let fewer_gets = ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 2, 200, 1);
        assert_eq!(
            ledger.accept(&fewer_gets, 200, 2),
            Err(UsageError::CounterDecreased { counter: "cumulative_gets", last: 2, got: 1 })
        );
    }

    #[test]
    fn ledger_refuses_more_than_served() {
        let (node, consumer) = keys();
        let mut ledger = AckLedger::new(node.account());
        let ack = ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 1, 1001, 3);
        assert_eq!(
            ledger.accept(&ack, 1000, 3),
            Err(UsageError::ExceedsServed { counter: "cumulative_bytes", served: 1000, acked: 1001 })
        );
        assert_eq!(
            ledger.accept(&ack, 1001, 2),
            Err(UsageError::ExceedsServed { counter: "cumulative_gets", served: 2, acked: 3 })
        );
        assert_eq!(ledger.latest(1, consumer.account(), NONCE), None);
        ledger.accept(&ack, 1001, 3).unwrap();
    }

    #[test]
    fn ledger_refuses_acks_for_another_node_and_forged_acks() {
        let (node, consumer) = keys();
        let elsewhere = Keypair::from_seed([3; 32]).account();
        let mut ledger = AckLedger::new(node.account());
        let ack = ConsumerAck::sign(&consumer, 1, elsewhere, NONCE, 1, 10, 1);
        assert_eq!(
            ledger.accept(&ack, 10, 1),
            Err(UsageError::WrongNode { expected: node.account(), named: elsewhere })
        );
        // Re-addressing a valid ack to this node breaks its signature.
        let readdressed = ConsumerAck { node: node.account(), ..ack };
        assert_eq!(ledger.accept(&readdressed, 10, 1), Err(UsageError::BadSignature { consumer: consumer.account() }));
        // An ack signed by someone else in the consumer's name is refused.
        let mut forged = ConsumerAck::sign(&node, 1, node.account(), NONCE, 1, 10, 1);
        forged.consumer = consumer.account();
        assert_eq!(ledger.accept(&forged, 10, 1), Err(UsageError::BadSignature { consumer: consumer.account() }));
        assert_eq!(ledger.iter().count(), 0);
    }

    #[test]
    fn decode_refuses_unknown_version_and_reserved_bytes() {
        let (node, consumer) = keys();
        let bytes = ConsumerAck::sign(&consumer, 1, node.account(), NONCE, 1, 10, 1).encode();
        let mut versioned = bytes;
        versioned[0] = 2;
        assert_eq!(ConsumerAck::decode(&versioned), Err(UsageError::UnknownVersion(2)));
        let mut reserved = bytes;
        reserved[7] = 1;
        assert_eq!(ConsumerAck::decode(&reserved), Err(UsageError::ReservedNotZero));
    }
}
