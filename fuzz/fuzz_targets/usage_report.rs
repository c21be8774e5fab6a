//! Usage reports (ddc-auth `usage::UsageReport`): `UsageReport::decode` on
//! arbitrary bytes.
//!
//! The node's signature covers every byte, and the fuzzer cannot forge one,
//! so the checks after it (bucket order, the node usage sum, each
//! acknowledgment) are reached through the seeds: reports signed by
//! `fixed::NODE` that break one rule each.
//!
//! Invariants checked:
//! - the decoder never panics, and refuses counts above its limits before
//!   allocating;
//! - a report that decodes re-encodes to exactly its bytes and holds to every
//!   rule `UsageReport::sign` follows: bucket ids strictly increase, the node
//!   usage is their sum, every acknowledgment names the node and verifies,
//!   acknowledgments are in order without repeats;
//! - `bucket(id)` finds every listed bucket.
#![no_main]

use ddc_auth::usage::{NodeUsage, UsageReport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = UsageReport::decode(data) else { return };
    assert_eq!(report.encode(), data, "usage report does not re-encode to its bytes");
    assert!(report.buckets.windows(2).all(|pair| pair[0].0 < pair[1].0), "bucket ids do not increase");
    let mut sum = NodeUsage::default();
    for (id, usage) in &report.buckets {
        assert_eq!(report.bucket(*id), Some(usage));
        let as_node = NodeUsage {
            transferred_bytes: usage.transferred_bytes,
            stored_bytes: usage.stored_bytes,
            number_of_puts: usage.number_of_puts,
            number_of_gets: usage.number_of_gets,
        };
        sum = sum.add(&as_node).expect("a decoded report's bucket usages sum without overflow");
    }
    assert_eq!(sum, report.node_usage);
    for ack in &report.acks {
        assert_eq!(ack.node, report.node);
        assert!(ack.verify());
    }
    assert!(report.acks.windows(2).all(|pair| pair[0] != pair[1]), "a repeated acknowledgment");
});
