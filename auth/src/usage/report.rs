//! [`UsageReport`]: a node's signed export of the usage it accounted, with
//! consumers' acknowledgments as evidence, to be anchored on chain later.
//!
//! A report states each bucket's [`CustomerUsage`], the node's total
//! [`NodeUsage`] (the field-wise sum, so the chain need not trust the node's
//! arithmetic) and the latest [`ConsumerAck`]s the node kept. Decoding checks
//! every rule [`UsageReport::sign`] follows, so a decoded report is always one
//! the node signed and is internally consistent. Whether the stated usage is
//! true is for whoever reads the report to judge; the acknowledgments are the
//! evidence for reads.
//!
//! # Encoding
//!
//! A report with `b` buckets and `a` acknowledgments is
//! `56 + 40·b + 32 + 184·a + 64` bytes, integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic, `"DDCU"` ([`USAGE_REPORT_MAGIC`]) |
//! | 4 | version, 1 |
//! | 5..8 | reserved, zero |
//! | 8..40 | node account (ed25519 public key) that signs |
//! | 40..48 | generated_ms (`u64`, Unix ms) |
//! | 48..52 | bucket count `b` (`u32`, at most 2^20) |
//! | 52..56 | acknowledgment count `a` (`u32`, at most 2^20) |
//! | 56.. | `b` bucket entries of 40 bytes: bucket id (`u64`), then its [`CustomerUsage`] (32 bytes); ids strictly increasing |
//! | then 32 | node usage, the field-wise sum of the bucket usages ([`NodeUsage`]) |
//! | then `184·a` | `a` acknowledgments, each [`CONSUMER_ACK_BYTES`] as [`ConsumerAck::encode`], naming this node, sorted by bucket, consumer, session nonce, `request_seq` (then the whole encoding), no two the same |
//! | last 64 | ed25519 signature by the node |
//!
//! The node signs [`USAGE_REPORT_SIGNING_DOMAIN`] (`"ddc usage report v1"`,
//! 19 bytes) followed by every byte before the signature. The domain keeps
//! the signature from being valid as any other message the node key signs.
//! Every byte is either checked by the decoder or covered by the signature,
//! and the counts are checked against their limits and the length before
//! anything is allocated.
//!
//! ```
//! use ddc_auth::account::Keypair;
//! use ddc_auth::usage::{ConsumerAck, CustomerUsage, UsageReport};
//!
//! let node = Keypair::generate();
//! let consumer = Keypair::generate();
//! let ack = ConsumerAck::sign(&consumer, 7, node.account(), [1; 16], 1, 4096, 1);
//! let usage = CustomerUsage { transferred_bytes: 4096, number_of_gets: 1, ..CustomerUsage::default() };
//! let report = UsageReport::sign(&node, 1_700_000_000_000, vec![(7, usage)], vec![ack]).unwrap();
//! let decoded = UsageReport::decode(&report.encode()).unwrap();
//! assert_eq!(decoded.bucket(7), Some(&usage));
//! assert_eq!(decoded.node_usage.transferred_bytes, 4096);
//! ```

use std::cmp::Ordering;

use super::{
    read_array, read_u64, ConsumerAck, CustomerUsage, NodeUsage, UsageError, CONSUMER_ACK_BYTES, CONSUMER_ACK_VERSION,
    USAGE_BYTES,
};
use crate::account::{Account, Keypair};

/// The first four bytes of every encoded [`UsageReport`].
pub const USAGE_REPORT_MAGIC: &[u8; 4] = b"DDCU";

/// Prefix of the message a node signs to export its usage.
pub const USAGE_REPORT_SIGNING_DOMAIN: &[u8; 19] = b"ddc usage report v1";

const OFFSET_MAGIC: usize = 0;
const OFFSET_VERSION: usize = 4;
const OFFSET_RESERVED: usize = 5;
const OFFSET_NODE: usize = 8;
const OFFSET_GENERATED: usize = 40;
const OFFSET_BUCKET_COUNT: usize = 48;
const OFFSET_ACK_COUNT: usize = 52;
const HEADER_BYTES: usize = 56;
const BUCKET_ENTRY_BYTES: usize = 8 + USAGE_BYTES;
const SIGNATURE_BYTES: usize = 64;

const _: () = assert!(OFFSET_VERSION == OFFSET_MAGIC + USAGE_REPORT_MAGIC.len());
const _: () = assert!(OFFSET_RESERVED == OFFSET_VERSION + 1);
const _: () = assert!(OFFSET_NODE == OFFSET_RESERVED + 3);
const _: () = assert!(OFFSET_GENERATED == OFFSET_NODE + 32);
const _: () = assert!(OFFSET_BUCKET_COUNT == OFFSET_GENERATED + 8);
const _: () = assert!(OFFSET_ACK_COUNT == OFFSET_BUCKET_COUNT + 4);
const _: () = assert!(HEADER_BYTES == OFFSET_ACK_COUNT + 4);
const _: () = assert!(BUCKET_ENTRY_BYTES == 40);
const _: () = assert!(UsageReport::BYTES_MIN == HEADER_BYTES + USAGE_BYTES + SIGNATURE_BYTES);
// The longest report's length fits in a u32, so length arithmetic on counts
// within the limits cannot overflow a usize on any supported platform.
const _: () = assert!(
    (HEADER_BYTES + USAGE_BYTES + SIGNATURE_BYTES) as u64
        + (UsageReport::BUCKETS_MAX * BUCKET_ENTRY_BYTES) as u64
        + (UsageReport::ACKS_MAX * CONSUMER_ACK_BYTES) as u64
        <= u32::MAX as u64
);

/// A node's signed statement of the usage it accounted, per bucket, with the
/// consumers' acknowledgments it kept as evidence. The module documentation
/// describes the encoding.
///
/// Build one with [`UsageReport::sign`] or [`UsageReport::decode`]; both
/// uphold every rule of the encoding. The fields are public so callers can
/// read them; a report changed afterwards is refused when decoded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    /// The node that accounted the usage and signs the report.
    pub node: Account,
    /// When the report was produced, Unix ms.
    pub generated_ms: u64,
    /// Usage per bucket id, ids strictly increasing.
    pub buckets: Vec<(u64, CustomerUsage)>,
    /// The field-wise sum of the bucket usages.
    pub node_usage: NodeUsage,
    /// Consumers' latest acknowledgments, each naming [`Self::node`], in
    /// the order [`UsageReport::sign`] sorts them.
    pub acks: Vec<ConsumerAck>,
    /// The node's ed25519 signature over [`USAGE_REPORT_SIGNING_DOMAIN`] and
    /// every encoded byte before it.
    pub signature: [u8; 64],
}

impl UsageReport {
    /// The report encoding version this module writes and accepts.
    pub const VERSION: u8 = 1;
    /// Most bucket entries a report may have.
    pub const BUCKETS_MAX: usize = 1 << 20;
    /// Most acknowledgments a report may have.
    pub const ACKS_MAX: usize = 1 << 20;
    /// Bytes of a report with no bucket and no acknowledgment.
    pub const BYTES_MIN: usize = 152;

    /// Build and sign a report as `node`. Buckets are sorted by id and
    /// acknowledgments into the encoding's order; `node_usage` is their sum.
    ///
    /// Refuses more than [`Self::BUCKETS_MAX`] buckets or [`Self::ACKS_MAX`]
    /// acknowledgments, a bucket id given twice, a sum that overflows, an
    /// acknowledgment that names another node, has an unknown version or does
    /// not verify, and an acknowledgment given twice.
    pub fn sign(
        node: &Keypair,
        generated_ms: u64,
        mut buckets: Vec<(u64, CustomerUsage)>,
        mut acks: Vec<ConsumerAck>,
    ) -> Result<UsageReport, UsageError> {
        let account = node.account();
        check_counts(buckets.len(), acks.len())?;
        buckets.sort_unstable_by_key(|&(id, _)| id);
        if let Some(pair) = buckets.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(UsageError::DuplicateBucket { bucket: pair[0].0 });
        }
        let node_usage = sum(&buckets)?;
        for ack in &acks {
            check_ack(account, ack)?;
        }
        acks.sort_unstable_by(ack_order);
        if let Some(pair) = acks.windows(2).find(|pair| pair[0] == pair[1]) {
            let ack = &pair[0];
            return Err(UsageError::DuplicateAck {
                bucket: ack.bucket,
                consumer: ack.consumer,
                request_seq: ack.request_seq,
            });
        }
        let mut report = UsageReport { node: account, generated_ms, buckets, node_usage, acks, signature: [0; 64] };
        let mut message = Vec::with_capacity(USAGE_REPORT_SIGNING_DOMAIN.len() + report.encoded_bytes());
        message.extend_from_slice(USAGE_REPORT_SIGNING_DOMAIN);
        report.encode_unsigned(&mut message);
        report.signature = node.sign(&message);
        debug_assert!(account.verify(&message, &report.signature));
        Ok(report)
    }

    /// The usage of bucket `id`, if the report lists it.
    pub fn bucket(&self, id: u64) -> Option<&CustomerUsage> {
        let index = self.buckets.binary_search_by_key(&id, |&(bucket, _)| bucket).ok()?;
        Some(&self.buckets[index].1)
    }

    /// The encoding described in the module documentation.
    ///
    /// # Panics
    ///
    /// If the fields were changed to hold more than [`Self::BUCKETS_MAX`]
    /// buckets or [`Self::ACKS_MAX`] acknowledgments.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_bytes());
        self.encode_unsigned(&mut out);
        out.extend_from_slice(&self.signature);
        assert_eq!(out.len(), self.encoded_bytes());
        out
    }

    /// Decode a report and check all of it. In order: the length is at least
    /// [`Self::BYTES_MIN`]; magic, version and reserved bytes; the counts are
    /// within their limits and match the length exactly; the node's
    /// signature; bucket ids strictly increase; the node usage is the sum of
    /// the bucket usages; every acknowledgment decodes, names the node and
    /// verifies, and the acknowledgments are in order without repeats.
    ///
    /// The node's signature is checked before any acknowledgment's, so bytes
    /// the node did not sign cost one verification, not one per
    /// acknowledgment.
    pub fn decode(bytes: &[u8]) -> Result<UsageReport, UsageError> {
        if bytes.len() < Self::BYTES_MIN {
            return Err(UsageError::ReportTooShort { actual: bytes.len(), minimum: Self::BYTES_MIN });
        }
        let magic: [u8; 4] = read_array(bytes, OFFSET_MAGIC);
        if &magic != USAGE_REPORT_MAGIC {
            return Err(UsageError::NotAUsageReport { found: magic });
        }
        if bytes[OFFSET_VERSION] != Self::VERSION {
            return Err(UsageError::UnknownReportVersion(bytes[OFFSET_VERSION]));
        }
        for (offset, &value) in bytes.iter().enumerate().take(OFFSET_NODE).skip(OFFSET_RESERVED) {
            if value != 0 {
                return Err(UsageError::ReportReservedNotZero { offset, value });
            }
        }
        let bucket_count = read_count(bytes, OFFSET_BUCKET_COUNT);
        let ack_count = read_count(bytes, OFFSET_ACK_COUNT);
        check_counts(bucket_count, ack_count)?;
        let expected = encoded_bytes(bucket_count, ack_count);
        if bytes.len() != expected {
            return Err(UsageError::WrongLength { expected, actual: bytes.len() });
        }

        let node = Account(read_array(bytes, OFFSET_NODE));
        let signature_at = expected - SIGNATURE_BYTES;
        let signature: [u8; 64] = read_array(bytes, signature_at);
        let mut message = Vec::with_capacity(USAGE_REPORT_SIGNING_DOMAIN.len() + signature_at);
        message.extend_from_slice(USAGE_REPORT_SIGNING_DOMAIN);
        message.extend_from_slice(&bytes[..signature_at]);
        if !node.verify(&message, &signature) {
            return Err(UsageError::BadReportSignature { node });
        }
        drop(message);

        let mut buckets: Vec<(u64, CustomerUsage)> = Vec::with_capacity(bucket_count);
        let buckets_end = HEADER_BYTES + bucket_count * BUCKET_ENTRY_BYTES;
        for entry in bytes[HEADER_BYTES..buckets_end].chunks_exact(BUCKET_ENTRY_BYTES) {
            let id = read_u64(entry, 0);
            if let Some(&(previous, _)) = buckets.last() {
                match id.cmp(&previous) {
                    Ordering::Greater => {}
                    Ordering::Equal => return Err(UsageError::DuplicateBucket { bucket: id }),
                    Ordering::Less => return Err(UsageError::BucketsOutOfOrder { previous, got: id }),
                }
            }
            buckets.push((id, CustomerUsage::decode(&entry[8..])?));
        }
        let node_usage = NodeUsage::decode(&bytes[buckets_end..buckets_end + USAGE_BYTES])?;
        let summed = sum(&buckets)?;
        if node_usage != summed {
            return Err(UsageError::NodeUsageMismatch { stated: node_usage, summed });
        }

        let mut acks: Vec<ConsumerAck> = Vec::with_capacity(ack_count);
        let acks_at = buckets_end + USAGE_BYTES;
        for (index, chunk) in bytes[acks_at..signature_at].chunks_exact(CONSUMER_ACK_BYTES).enumerate() {
            let ack = ConsumerAck::decode(chunk)?;
            check_ack(node, &ack)?;
            if let Some(previous) = acks.last() {
                match ack_order(previous, &ack) {
                    Ordering::Less => {}
                    Ordering::Equal => {
                        return Err(UsageError::DuplicateAck {
                            bucket: ack.bucket,
                            consumer: ack.consumer,
                            request_seq: ack.request_seq,
                        })
                    }
                    Ordering::Greater => return Err(UsageError::AcksOutOfOrder { index }),
                }
            }
            acks.push(ack);
        }

        assert_eq!(buckets.len(), bucket_count);
        assert_eq!(acks.len(), ack_count);
        let report =
            UsageReport { node, generated_ms: read_u64(bytes, OFFSET_GENERATED), buckets, node_usage, acks, signature };
        debug_assert_eq!(report.encode(), bytes, "decoding is the inverse of encoding");
        Ok(report)
    }

    fn encoded_bytes(&self) -> usize {
        encoded_bytes(self.buckets.len(), self.acks.len())
    }

    /// Appends every byte of the encoding before the signature to `out`.
    fn encode_unsigned(&self, out: &mut Vec<u8>) {
        assert!(self.buckets.len() <= Self::BUCKETS_MAX, "sign and decode bound the bucket count");
        assert!(self.acks.len() <= Self::ACKS_MAX, "sign and decode bound the ack count");
        let start = out.len();
        out.extend_from_slice(USAGE_REPORT_MAGIC);
        out.push(Self::VERSION);
        out.extend_from_slice(&[0; OFFSET_NODE - OFFSET_RESERVED]);
        out.extend_from_slice(&self.node.0);
        out.extend_from_slice(&self.generated_ms.to_le_bytes());
        out.extend_from_slice(&count_bytes(self.buckets.len()));
        out.extend_from_slice(&count_bytes(self.acks.len()));
        assert_eq!(out.len() - start, HEADER_BYTES);
        for (id, usage) in &self.buckets {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&usage.encode());
        }
        out.extend_from_slice(&self.node_usage.encode());
        for ack in &self.acks {
            out.extend_from_slice(&ack.encode());
        }
        assert_eq!(out.len() - start, self.encoded_bytes() - SIGNATURE_BYTES);
    }
}

/// Bytes of a report with these counts; the counts must be within the
/// limits, which keeps the arithmetic from overflowing.
fn encoded_bytes(bucket_count: usize, ack_count: usize) -> usize {
    assert!(bucket_count <= UsageReport::BUCKETS_MAX && ack_count <= UsageReport::ACKS_MAX);
    UsageReport::BYTES_MIN + bucket_count * BUCKET_ENTRY_BYTES + ack_count * CONSUMER_ACK_BYTES
}

fn check_counts(bucket_count: usize, ack_count: usize) -> Result<(), UsageError> {
    if bucket_count > UsageReport::BUCKETS_MAX {
        return Err(UsageError::TooManyBuckets { count: bucket_count, max: UsageReport::BUCKETS_MAX });
    }
    if ack_count > UsageReport::ACKS_MAX {
        return Err(UsageError::TooManyAcks { count: ack_count, max: UsageReport::ACKS_MAX });
    }
    Ok(())
}

fn read_count(bytes: &[u8], at: usize) -> usize {
    // A u32 always fits: usize is at least 32 bits on every target Rust
    // supports with std, and the limits are checked right after.
    u32::from_le_bytes(read_array(bytes, at)) as usize
}

fn count_bytes(count: usize) -> [u8; 4] {
    let count = u32::try_from(count).expect("counts are bounded by BUCKETS_MAX and ACKS_MAX");
    count.to_le_bytes()
}

/// The field-wise sum of the bucket usages, or [`UsageError::Overflow`].
fn sum(buckets: &[(u64, CustomerUsage)]) -> Result<NodeUsage, UsageError> {
    buckets.iter().try_fold(NodeUsage::default(), |total, (_, usage)| {
        total.add(&NodeUsage {
            transferred_bytes: usage.transferred_bytes,
            stored_bytes: usage.stored_bytes,
            number_of_puts: usage.number_of_puts,
            number_of_gets: usage.number_of_gets,
        })
    })
}

/// The rules an acknowledgment in a report of `node` follows, checked in the
/// same order as [`super::AckLedger::accept`].
fn check_ack(node: Account, ack: &ConsumerAck) -> Result<(), UsageError> {
    if ack.node != node {
        return Err(UsageError::WrongNode { expected: node, named: ack.node });
    }
    if ack.version != CONSUMER_ACK_VERSION {
        return Err(UsageError::UnknownVersion(ack.version));
    }
    if !ack.verify() {
        return Err(UsageError::BadSignature { consumer: ack.consumer });
    }
    Ok(())
}

/// The order of acknowledgments in a report: by bucket, consumer, session
/// nonce and `request_seq`, then by the whole encoding so that two different
/// acknowledgments with the same key (which an honest consumer never signs)
/// still have one order.
fn ack_order(a: &ConsumerAck, b: &ConsumerAck) -> Ordering {
    (a.bucket, a.consumer, a.session_nonce, a.request_seq)
        .cmp(&(b.bucket, b.consumer, b.session_nonce, b.request_seq))
        .then_with(|| a.encode().cmp(&b.encode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Keypair, Keypair) {
        (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]))
    }

    fn usage(transferred_bytes: u64, stored_bytes: u64, number_of_puts: u64, number_of_gets: u64) -> CustomerUsage {
        CustomerUsage { transferred_bytes, stored_bytes, number_of_puts, number_of_gets }
    }

    /// A report with two buckets (given out of order) and one ack.
    fn sample(node: &Keypair, consumer: &Keypair) -> UsageReport {
        let ack = ConsumerAck::sign(consumer, 9, node.account(), [4; 16], 3, 4096, 2);
        UsageReport::sign(
            node,
            1_700_000_000_123,
            vec![(9, usage(4096, 0, 0, 2)), (3, usage(10, 1 << 30, 5, 1))],
            vec![ack],
        )
        .unwrap()
    }

    /// Replace the signature of encoded report bytes with a fresh one by `key`
    /// over the (possibly altered) bytes before it.
    fn resign(key: &Keypair, bytes: &mut [u8]) {
        let signature_at = bytes.len() - SIGNATURE_BYTES;
        let mut message = USAGE_REPORT_SIGNING_DOMAIN.to_vec();
        message.extend_from_slice(&bytes[..signature_at]);
        bytes[signature_at..].copy_from_slice(&key.sign(&message));
    }

    #[test]
    fn round_trips_and_follows_the_layout() {
        let (node, consumer) = keys();
        let report = sample(&node, &consumer);
        assert_eq!(report.buckets.iter().map(|&(id, _)| id).collect::<Vec<_>>(), vec![3, 9]);
        assert_eq!(
            report.node_usage,
            NodeUsage { transferred_bytes: 4106, stored_bytes: 1 << 30, number_of_puts: 5, number_of_gets: 3 }
        );
        assert_eq!(report.bucket(9), Some(&usage(4096, 0, 0, 2)));
        assert_eq!(report.bucket(4), None);

        let bytes = report.encode();
        assert_eq!(bytes.len(), 56 + 2 * 40 + 32 + CONSUMER_ACK_BYTES + 64);
        assert_eq!(&bytes[0..4], b"DDCU");
        assert_eq!(&bytes[4..8], &[1, 0, 0, 0]);
        assert_eq!(&bytes[8..40], &node.account().0);
        assert_eq!(&bytes[40..48], &1_700_000_000_123u64.to_le_bytes());
        assert_eq!(&bytes[48..56], &[2, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&bytes[56..64], &3u64.to_le_bytes());
        assert_eq!(&bytes[136..168], &report.node_usage.encode());
        assert_eq!(&bytes[168..352], &report.acks[0].encode());
        let mut message = b"ddc usage report v1".to_vec();
        message.extend_from_slice(&bytes[..352]);
        assert!(node.account().verify(&message, &report.signature));

        assert_eq!(UsageReport::decode(&bytes), Ok(report));
        let empty = UsageReport::sign(&node, 0, Vec::new(), Vec::new()).unwrap();
        assert_eq!(empty.encode().len(), UsageReport::BYTES_MIN);
        assert_eq!(UsageReport::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn acks_are_sorted_whatever_the_order_given() {
        let (node, consumer) = keys();
        let other = Keypair::from_seed([5; 32]);
        let acks = vec![
            ConsumerAck::sign(&consumer, 2, node.account(), [1; 16], 1, 10, 1),
            ConsumerAck::sign(&other, 1, node.account(), [2; 16], 7, 10, 1),
            ConsumerAck::sign(&consumer, 1, node.account(), [2; 16], 7, 10, 1),
            ConsumerAck::sign(&consumer, 1, node.account(), [1; 16], 9, 10, 1),
        ];
        let mut reversed = acks.clone();
        reversed.reverse();
        let forward = UsageReport::sign(&node, 5, Vec::new(), acks).unwrap();
        let backward = UsageReport::sign(&node, 5, Vec::new(), reversed).unwrap();
        assert_eq!(forward.encode(), backward.encode());
        assert!(forward.acks.windows(2).all(|pair| ack_order(&pair[0], &pair[1]) == Ordering::Less));
        assert_eq!(UsageReport::decode(&forward.encode()), Ok(forward));
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let (node, consumer) = keys();
        let bytes = sample(&node, &consumer).encode();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(UsageReport::decode(&flipped).is_err(), "bit {bit} flipped and still decodes");
        }
    }

    #[test]
    fn truncated_and_extended_bytes_are_refused() {
        let (node, consumer) = keys();
        let bytes = sample(&node, &consumer).encode();
        for length in 0..bytes.len() {
            assert!(UsageReport::decode(&bytes[..length]).is_err(), "{length} bytes decode");
        }
        assert_eq!(
            UsageReport::decode(&bytes[..100]),
            Err(UsageError::ReportTooShort { actual: 100, minimum: UsageReport::BYTES_MIN })
        );
        assert_eq!(
            UsageReport::decode(&bytes[..bytes.len() - 1]),
            Err(UsageError::WrongLength { expected: bytes.len(), actual: bytes.len() - 1 })
        );
        let mut extended = bytes.clone();
        extended.push(0);
        assert_eq!(
            UsageReport::decode(&extended),
            Err(UsageError::WrongLength { expected: bytes.len(), actual: bytes.len() + 1 })
        );
    }

    #[test]
    fn header_fields_are_checked() {
        let (node, consumer) = keys();
        let bytes = sample(&node, &consumer).encode();
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(UsageReport::decode(&magic), Err(UsageError::NotAUsageReport { found: *b"XDCU" }));
        let mut version = bytes.clone();
        version[4] = 2;
        assert_eq!(UsageReport::decode(&version), Err(UsageError::UnknownReportVersion(2)));
        let mut reserved = bytes.clone();
        reserved[7] = 3;
        assert_eq!(UsageReport::decode(&reserved), Err(UsageError::ReportReservedNotZero { offset: 7, value: 3 }));
    }

    #[test]
    fn counts_over_the_limits_are_refused_before_allocating() {
        let (node, _) = keys();
        let mut bytes = UsageReport::sign(&node, 0, Vec::new(), Vec::new()).unwrap().encode();
        bytes[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            UsageReport::decode(&bytes),
            Err(UsageError::TooManyBuckets { count: u32::MAX as usize, max: UsageReport::BUCKETS_MAX })
        );
        bytes[48..52].copy_from_slice(&0u32.to_le_bytes());
        bytes[52..56].copy_from_slice(&((1u32 << 20) + 1).to_le_bytes());
        assert_eq!(
            UsageReport::decode(&bytes),
            Err(UsageError::TooManyAcks { count: (1 << 20) + 1, max: UsageReport::ACKS_MAX })
        );
        // Within the limits, a count the bytes do not hold is a length error.
        bytes[52..56].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert!(matches!(UsageReport::decode(&bytes), Err(UsageError::WrongLength { .. })));
    }

    #[test]
    fn duplicate_bucket_ids_are_refused() {
        let (node, _) = keys();
        assert_eq!(
            UsageReport::sign(
                &node,
                0,
                vec![(4, usage(1, 0, 0, 0)), (2, usage(1, 0, 0, 0)), (4, usage(2, 0, 0, 0))],
                Vec::new()
            ),
            Err(UsageError::DuplicateBucket { bucket: 4 })
        );
        // By hand: the second entry's id set to the first's, re-signed.
        let report =
            UsageReport::sign(&node, 0, vec![(4, usage(1, 0, 0, 0)), (6, usage(1, 0, 0, 0))], Vec::new()).unwrap();
        let mut bytes = report.encode();
        bytes[96..104].copy_from_slice(&4u64.to_le_bytes());
        resign(&node, &mut bytes);
        assert_eq!(UsageReport::decode(&bytes), Err(UsageError::DuplicateBucket { bucket: 4 }));
        bytes[96..104].copy_from_slice(&3u64.to_le_bytes());
        resign(&node, &mut bytes);
        assert_eq!(UsageReport::decode(&bytes), Err(UsageError::BucketsOutOfOrder { previous: 4, got: 3 }));
    }

    #[test]
    fn node_usage_that_is_not_the_sum_is_refused() {
        let (node, consumer) = keys();
        let report = sample(&node, &consumer);
        let mut bytes = report.encode();
        let stated = NodeUsage { number_of_gets: report.node_usage.number_of_gets + 1, ..report.node_usage };
        bytes[136..168].copy_from_slice(&stated.encode());
        resign(&node, &mut bytes);
        assert_eq!(
            UsageReport::decode(&bytes),
            Err(UsageError::NodeUsageMismatch { stated, summed: report.node_usage })
        );
    }

    #[test]
    fn overflow_is_refused() {
        let (node, _) = keys();
        let full = usage(0, u64::MAX, 0, 0);
        let one = usage(0, 1, 0, 0);
        assert_eq!(
            UsageReport::sign(&node, 0, vec![(1, full), (2, one)], Vec::new()),
            Err(UsageError::Overflow { field: "stored_bytes" })
        );
        // By hand: bucket usages that overflow when summed, whatever the
        // stated node usage.
        let report = UsageReport::sign(&node, 0, vec![(1, full), (2, CustomerUsage::default())], Vec::new()).unwrap();
        let mut bytes = report.encode();
        bytes[96 + 8..96 + 40].copy_from_slice(&one.encode());
        resign(&node, &mut bytes);
        assert_eq!(UsageReport::decode(&bytes), Err(UsageError::Overflow { field: "stored_bytes" }));
    }

    #[test]
    fn acks_for_another_node_or_forged_are_refused() {
        let (node, consumer) = keys();
        let elsewhere = Keypair::from_seed([3; 32]).account();
        let ack = ConsumerAck::sign(&consumer, 1, elsewhere, [0; 16], 1, 10, 1);
        assert_eq!(
            UsageReport::sign(&node, 0, Vec::new(), vec![ack]),
            Err(UsageError::WrongNode { expected: node.account(), named: elsewhere })
        );
        let readdressed = ConsumerAck { node: node.account(), ..ack };
        assert_eq!(
            UsageReport::sign(&node, 0, Vec::new(), vec![readdressed]),
            Err(UsageError::BadSignature { consumer: consumer.account() })
        );
        // By hand: a report whose ack names another node, signed by the node.
        let mut bytes = sample(&node, &consumer).encode();
        bytes[168 + 16..168 + 48].copy_from_slice(&elsewhere.0);
        resign(&node, &mut bytes);
        assert_eq!(
            UsageReport::decode(&bytes),
            Err(UsageError::WrongNode { expected: node.account(), named: elsewhere })
        );
        // And one whose ack's counters were changed after the consumer signed.
        let mut bytes = sample(&node, &consumer).encode();
        bytes[168 + 104] ^= 1;
        resign(&node, &mut bytes);
        assert_eq!(UsageReport::decode(&bytes), Err(UsageError::BadSignature { consumer: consumer.account() }));
    }

    #[test]
    fn duplicate_and_unsorted_acks_are_refused() {
        let (node, consumer) = keys();
        let first = ConsumerAck::sign(&consumer, 1, node.account(), [0; 16], 1, 10, 1);
        let second = ConsumerAck::sign(&consumer, 2, node.account(), [0; 16], 1, 10, 1);
        assert_eq!(
            UsageReport::sign(&node, 0, Vec::new(), vec![second, first, second]),
            Err(UsageError::DuplicateAck { bucket: 2, consumer: consumer.account(), request_seq: 1 })
        );
        let mut bytes = UsageReport::sign(&node, 0, Vec::new(), vec![first, second]).unwrap().encode();
        let acks_at = UsageReport::BYTES_MIN - SIGNATURE_BYTES;
        bytes[acks_at..acks_at + CONSUMER_ACK_BYTES].copy_from_slice(&second.encode());
        bytes[acks_at + CONSUMER_ACK_BYTES..acks_at + 2 * CONSUMER_ACK_BYTES].copy_from_slice(&first.encode());
        resign(&node, &mut bytes);
        assert_eq!(UsageReport::decode(&bytes), Err(UsageError::AcksOutOfOrder { index: 1 }));
        bytes[acks_at + CONSUMER_ACK_BYTES..acks_at + 2 * CONSUMER_ACK_BYTES].copy_from_slice(&second.encode());
        resign(&node, &mut bytes);
        assert_eq!(
            UsageReport::decode(&bytes),
            Err(UsageError::DuplicateAck { bucket: 2, consumer: consumer.account(), request_seq: 1 })
        );
    }

    #[test]
    fn a_report_signed_by_another_key_is_refused() {
        let (node, consumer) = keys();
        let impostor = Keypair::from_seed([7; 32]);
        // Everything else valid for `node`, but signed by the impostor.
        let mut bytes = sample(&node, &consumer).encode();
        resign(&impostor, &mut bytes);
        assert_eq!(UsageReport::decode(&bytes), Err(UsageError::BadReportSignature { node: node.account() }));
        // The impostor's own report relabelled as the node's.
        let mut bytes = UsageReport::sign(&impostor, 0, vec![(1, usage(1, 2, 3, 4))], Vec::new()).unwrap().encode();
        bytes[8..40].copy_from_slice(&node.account().0);
        assert_eq!(UsageReport::decode(&bytes), Err(UsageError::BadReportSignature { node: node.account() }));
    }
}
