//! Grants (ddc-auth `grant`): `Grant::decode` and `GrantChain::decode` on
//! arbitrary bytes, then `verify_chain` and `authorize` on every chain that
//! decodes.
//!
//! The chain is checked for bucket `fixed::BUCKET` owned by `fixed::OWNER` at
//! `fixed::NOW_MS`, with a revocation set of the links whose nonce starts with
//! `fixed::REVOKED_NONCE_BYTE`. The fuzzer cannot forge signatures, so the
//! refusals after the signature check are reached through the seeds, which
//! are validly signed chains that break one rule each.
//!
//! Invariants checked:
//! - neither decoder panics;
//! - a grant or chain that decodes re-encodes to exactly its bytes, and each
//!   link of a chain decodes on its own;
//! - `verify_chain` and `authorize` never panic on a decoded chain;
//! - a chain `verify_chain` accepts starts at the owner, ends at its last
//!   subject and gives exactly the last link's operations and expiry;
//! - the owner is always authorized; the last subject is authorized for an
//!   operation exactly when the chain verifies and allows it.
#![no_main]

use ddc_auth::grant::{authorize, verify_chain, Bucket, Grant, GrantChain, GrantId, Operations, GRANT_BYTES};
use ddc_fuzz::fixed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(grant) = Grant::decode(data) {
        assert_eq!(&grant.encode()[..], data, "grant does not re-encode to its bytes");
        let _ = grant.signature_is_valid();
    }

    let Ok(chain) = GrantChain::decode(data) else { return };
    assert_eq!(chain.encode(), data, "grant chain does not re-encode to its bytes");
    for (link, grant) in chain.links().iter().enumerate() {
        let at = 4 + link * GRANT_BYTES;
        assert_eq!(Grant::decode(&data[at..at + GRANT_BYTES]).as_ref(), Ok(grant));
    }
    check_access(&chain);
});

fn check_access(chain: &GrantChain) {
    let owner = fixed::OWNER.account();
    let revoked: Vec<GrantId> =
        chain.links().iter().filter(|g| g.nonce[0] == fixed::REVOKED_NONCE_BYTE).map(Grant::id).collect();
    let is_revoked = |id: &GrantId| revoked.contains(id);
    let private = Bucket { id: fixed::BUCKET, owner, public: false };
    let public = Bucket { public: true, ..private };

    let verified = verify_chain(&private, chain, fixed::NOW_MS, &is_revoked);
    if let Ok(effective) = &verified {
        let (first, last) = (&chain.links()[0], &chain.links()[chain.len() - 1]);
        assert_eq!(first.issuer, owner);
        assert_eq!(effective.bucket, fixed::BUCKET);
        assert_eq!(effective.subject, last.subject);
        assert_eq!(effective.operations, last.operations);
        assert_eq!(effective.expires_ms, last.expires_ms);
        assert!(effective.not_before_ms <= fixed::NOW_MS && fixed::NOW_MS < effective.expires_ms);
    }
    assert_eq!(verify_chain(&public, chain, fixed::NOW_MS, &is_revoked), verified, "publicity changed verify_chain");

    let subject = chain.links().last().map(|g| g.subject);
    for operations in [Operations::READ, Operations::WRITE, Operations::ALL] {
        for bucket in [&private, &public] {
            assert_eq!(authorize(bucket, chain, owner, operations, fixed::NOW_MS, &is_revoked), Ok(()));
            let Some(subject) = subject.filter(|&s| s != owner) else { continue };
            let needed = if bucket.public { operations.difference(Operations::READ) } else { operations };
            let allowed = authorize(bucket, chain, subject, operations, fixed::NOW_MS, &is_revoked).is_ok();
            let expected =
                needed.is_empty() || verified.as_ref().is_ok_and(|effective| effective.operations.contains(needed));
            assert_eq!(allowed, expected, "authorize({operations}) disagrees with verify_chain: {verified:?}");
        }
        // Someone who is neither the owner nor the last subject gets nothing a grant is needed for.
        let stranger = fixed::STRANGER.account();
        if subject != Some(stranger) {
            assert!(authorize(&private, chain, stranger, operations, fixed::NOW_MS, &is_revoked).is_err());
        }
    }
}
