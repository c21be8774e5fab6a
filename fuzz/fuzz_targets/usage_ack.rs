//! Consumer acknowledgments and usage records (ddc-auth `usage`):
//! `ConsumerAck::decode`, `CustomerUsage::decode` and `NodeUsage::decode` on
//! arbitrary bytes, and `AckLedger::accept` on a run of acknowledgments.
//!
//! The whole input is tried as one acknowledgment and as one usage record;
//! then it is cut into `CONSUMER_ACK_BYTES` pieces, each decoded and offered
//! in turn to the ledger of `fixed::NODE`, which served `fixed::SERVED_BYTES`
//! and `fixed::SERVED_GETS` in every session.
//!
//! Invariants checked:
//! - no decoder panics, nor `verify` or `accept`;
//! - whatever decodes re-encodes to exactly its bytes;
//! - the ledger keeps an acknowledgment exactly when `accept` says so: after
//!   `Ok` it is the session's latest, after `Err` the session's latest is
//!   unchanged; an accepted acknowledgment verifies and names the node.
#![no_main]

use ddc_auth::usage::{AckLedger, ConsumerAck, CustomerUsage, NodeUsage, CONSUMER_ACK_BYTES};
use ddc_fuzz::fixed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ack) = ConsumerAck::decode(data) {
        assert_eq!(&ack.encode()[..], data, "consumer ack does not re-encode to its bytes");
        let _ = ack.verify();
        let usage = ack.usage();
        assert_eq!((usage.transferred_bytes, usage.number_of_gets), (ack.cumulative_bytes, ack.cumulative_gets));
    }
    if let Ok(usage) = CustomerUsage::decode(data) {
        assert_eq!(&usage.encode()[..], data, "customer usage does not re-encode to its bytes");
        let _ = usage.add(&usage);
    }
    if let Ok(usage) = NodeUsage::decode(data) {
        assert_eq!(&usage.encode()[..], data, "node usage does not re-encode to its bytes");
    }

    let node = fixed::NODE.account();
    let mut ledger = AckLedger::new(node);
    for piece in data.chunks_exact(CONSUMER_ACK_BYTES) {
        let Ok(ack) = ConsumerAck::decode(piece) else { continue };
        let before = ledger.latest(ack.bucket, ack.consumer, ack.session_nonce).copied();
        match ledger.accept(&ack, fixed::SERVED_BYTES, fixed::SERVED_GETS) {
            Ok(()) => {
                assert!(ack.verify() && ack.node == node);
                assert!(ack.cumulative_bytes <= fixed::SERVED_BYTES && ack.cumulative_gets <= fixed::SERVED_GETS);
                if let Some(before) = before {
                    assert!(ack.request_seq > before.request_seq);
                    assert!(ack.cumulative_bytes >= before.cumulative_bytes);
                    assert!(ack.cumulative_gets >= before.cumulative_gets);
                }
                assert_eq!(ledger.latest(ack.bucket, ack.consumer, ack.session_nonce), Some(&ack));
            }
            Err(_) => {
                let after = ledger.latest(ack.bucket, ack.consumer, ack.session_nonce).copied();
                assert_eq!(after, before, "a refused ack changed the ledger");
            }
        }
    }
});
