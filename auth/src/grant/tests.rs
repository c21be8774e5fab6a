//! Tests of buckets, grants and chains: each rule of `authorize` has a test
//! that breaks exactly that rule.

use std::collections::HashSet;

use super::*;

/// A fixed "now" for the tests, in Unix ms.
const NOW: u64 = 1_750_000_000_000;
const HOUR_MS: u64 = 3_600_000;
const BUCKET_ID: u64 = 7;

fn key(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

fn owner() -> Keypair {
    key(1)
}

fn private_bucket() -> Bucket {
    Bucket { id: BUCKET_ID, owner: owner().account(), public: false }
}

fn public_bucket() -> Bucket {
    Bucket { public: true, ..private_bucket() }
}

fn terms(subject: &Keypair, operations: Operations, may_delegate: bool) -> GrantTerms {
    GrantTerms {
        bucket: BUCKET_ID,
        subject: subject.account(),
        operations,
        not_before_ms: 0,
        expires_ms: NOW + HOUR_MS,
        may_delegate,
    }
}

fn never_revoked(_: &GrantId) -> bool {
    false
}

fn check(bucket: &Bucket, chain: &GrantChain, requester: &Keypair, operations: Operations) -> Result<(), Refusal> {
    authorize(bucket, chain, requester.account(), operations, NOW, &never_revoked)
}

fn chain(links: &[Grant]) -> GrantChain {
    GrantChain::new(links.to_vec()).unwrap()
}

/// owner (1) -> alice (2) -> bob (3) -> carol (4), each link allowing
/// delegation and read + write, each expiring a little earlier.
fn three_links() -> (GrantChain, [Keypair; 3]) {
    let (alice, bob, carol) = (key(2), key(3), key(4));
    let g1 = Grant::issue(&owner(), terms(&alice, Operations::ALL, true));
    let g2 = Grant::issue(&alice, GrantTerms { expires_ms: NOW + HOUR_MS - 1, ..terms(&bob, Operations::ALL, true) });
    let g3 = Grant::issue(&bob, GrantTerms { expires_ms: NOW + HOUR_MS - 2, ..terms(&carol, Operations::ALL, false) });
    (chain(&[g1, g2, g3]), [alice, bob, carol])
}

#[test]
fn owner_reads_and_writes_without_a_chain() {
    for bucket in [private_bucket(), public_bucket()] {
        for op in [Operations::READ, Operations::WRITE, Operations::ALL] {
            check(&bucket, &GrantChain::empty(), &owner(), op).unwrap();
        }
    }
}

#[test]
fn a_stranger_without_a_grant_is_refused_on_a_private_bucket() {
    let err = check(&private_bucket(), &GrantChain::empty(), &key(9), Operations::READ).unwrap_err();
    assert!(matches!(err, Refusal::NoGrant { bucket: BUCKET_ID, missing: Operations::READ, .. }), "{err}");
    assert!(err.to_string().starts_with("missing permission read on bucket 7: "), "{err}");
}

#[test]
fn a_direct_grant_gives_its_subject_exactly_its_operations() {
    let alice = key(2);
    let read_only = chain(&[Grant::issue(&owner(), terms(&alice, Operations::READ, false))]);
    check(&private_bucket(), &read_only, &alice, Operations::READ).unwrap();
    let err = check(&private_bucket(), &read_only, &alice, Operations::WRITE).unwrap_err();
    assert_eq!(err.to_string(), "missing permission write on bucket 7: the grants allow read");
    let err = check(&private_bucket(), &read_only, &alice, Operations::ALL).unwrap_err();
    assert!(matches!(err, Refusal::MissingPermission { missing: Operations::WRITE, .. }), "{err}");

    let read_write = chain(&[Grant::issue(&owner(), terms(&alice, Operations::ALL, false))]);
    for op in [Operations::READ, Operations::WRITE, Operations::ALL] {
        check(&private_bucket(), &read_write, &alice, op).unwrap();
    }
}

#[test]
fn a_chain_of_three_links_authorizes_its_last_subject_only() {
    let (chain3, [alice, bob, carol]) = three_links();
    check(&private_bucket(), &chain3, &carol, Operations::ALL).unwrap();
    let effective = verify_chain(&private_bucket(), &chain3, NOW, &never_revoked).unwrap();
    assert_eq!(
        effective,
        EffectiveGrant {
            bucket: BUCKET_ID,
            subject: carol.account(),
            operations: Operations::ALL,
            not_before_ms: 0,
            expires_ms: NOW + HOUR_MS - 2,
        }
    );
    // The middle subjects use their own prefix of the chain, not the whole.
    for (requester, prefix) in [(&alice, 1), (&bob, 2)] {
        assert!(matches!(
            check(&private_bucket(), &chain3, requester, Operations::READ),
            Err(Refusal::WrongSubject { links: 3, .. })
        ));
        check(&private_bucket(), &chain(&chain3.links()[..prefix]), requester, Operations::READ).unwrap();
    }
}

#[test]
fn the_requester_must_be_the_last_subject() {
    let (chain3, [_, _, carol]) = three_links();
    let mallory = key(9);
    let err = check(&private_bucket(), &chain3, &mallory, Operations::READ).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("requester {} is not the subject {} of grant 3 of 3, the last one", mallory.account(), carol.account())
    );
}

#[test]
fn a_forged_signature_is_refused() {
    let mallory = key(9);
    // Mallory signs a grant to herself and puts the owner's name on it.
    let mut forged = Grant::issue(&mallory, terms(&mallory, Operations::ALL, false));
    forged.issuer = owner().account();
    let err = check(&private_bucket(), &chain(&[forged]), &mallory, Operations::READ).unwrap_err();
    assert_eq!(err.to_string(), format!("signature of grant 1 of 1 (issuer {}) is not valid", owner().account()));
    // Random bytes for a signature.
    let mut random = Grant::issue(&owner(), terms(&mallory, Operations::ALL, false));
    random.signature = rand::random::<[[u8; 32]; 2]>().concat().try_into().unwrap();
    assert!(matches!(
        check(&private_bucket(), &chain(&[random]), &mallory, Operations::READ),
        Err(Refusal::BadSignature { link: 1, links: 1, .. })
    ));
    // A valid link 1 does not vouch for a forged link 2.
    let (chain3, [_, _, carol]) = three_links();
    let mut links = chain3.links().to_vec();
    links[1].signature[5] ^= 1;
    let chain3 = chain(&links);
    let err = check(&private_bucket(), &chain3, &carol, Operations::READ).unwrap_err();
    assert!(err.to_string().starts_with("signature of grant 2 of 3 "), "{err}");
}

/// For the identity point (a small-order key), `R = identity, S = 0` passes
/// plain (cofactorless) ed25519 verification for every message. A grant to
/// such a key with delegation allowed must not let anyone extend the chain.
#[test]
fn a_small_order_key_cannot_be_used_to_forge_a_link() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = Account(identity);
    let mallory = key(9);
    let g1 = Grant::issue(&owner(), GrantTerms { subject: weak, ..terms(&mallory, Operations::ALL, true) });
    let mut forged = Grant::issue(&mallory, terms(&mallory, Operations::ALL, false));
    forged.issuer = weak;
    forged.signature = [0; 64];
    forged.signature[0] = 1;
    // Plain verification, which is what this test guards against, accepts it.
    use ed25519_dalek::Verifier;
    let plain = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    assert!(plain.verify(&forged.signing_message(), &ed25519_dalek::Signature::from_bytes(&forged.signature)).is_ok());
    let err = check(&private_bucket(), &chain(&[g1, forged]), &mallory, Operations::WRITE).unwrap_err();
    assert!(matches!(err, Refusal::BadSignature { link: 2, links: 2, .. }), "{err}");
}

/// Flipping any single bit of any link of a valid chain makes it either
/// undecodable or refused: every field is covered by the signature.
#[test]
fn every_bit_of_every_link_is_protected() {
    let (chain3, [_, _, carol]) = three_links();
    check(&private_bucket(), &chain3, &carol, Operations::ALL).unwrap();
    let bytes = chain3.encode();
    for position in GRANT_CHAIN_HEADER_BYTES..bytes.len() {
        for bit in 0..8 {
            let mut tampered = bytes.clone();
            tampered[position] ^= 1 << bit;
            match GrantChain::decode(&tampered) {
                Err(_) => {}
                Ok(decoded) => {
                    assert!(
                        check(&private_bucket(), &decoded, &carol, Operations::READ).is_err(),
                        "byte {position} bit {bit} flipped is still accepted"
                    );
                }
            }
        }
    }
}

#[test]
fn each_field_changed_after_signing_is_refused() {
    let alice = key(2);
    let good = Grant::issue(&owner(), terms(&alice, Operations::READ, false));
    type Change = (&'static str, fn(&mut Grant));
    let changes: [Change; 9] = [
        ("bucket", |g| g.bucket += 1),
        ("issuer", |g| g.issuer = key(8).account()),
        ("subject", |g| g.subject = key(8).account()),
        ("operations", |g| g.operations = Operations::ALL),
        ("not_before_ms", |g| g.not_before_ms = 1),
        ("expires_ms", |g| g.expires_ms += 1),
        ("may_delegate", |g| g.may_delegate = true),
        ("nonce", |g| g.nonce[15] ^= 0x80),
        ("signature", |g| g.signature[63] ^= 0x01),
    ];
    for (field, change) in changes {
        let mut tampered = good;
        change(&mut tampered);
        assert!(!tampered.signature_is_valid(), "{field} changed, signature still valid");
        let bucket = Bucket { id: tampered.bucket, ..private_bucket() };
        let requester = Account(tampered.subject.0);
        let result = authorize(&bucket, &chain(&[tampered]), requester, Operations::READ, NOW, &never_revoked);
        assert!(matches!(result, Err(Refusal::BadSignature { .. })), "{field}: {result:?}");
    }
    // A version this node does not check is refused by name, before the signature.
    let mut tampered = good;
    tampered.version = 2;
    assert!(matches!(
        check(&private_bucket(), &chain(&[tampered]), &alice, Operations::READ),
        Err(Refusal::UnsupportedVersion { link: 1, links: 1, version: 2 })
    ));
}

#[test]
fn an_expired_grant_is_refused_from_its_expiry_on() {
    let alice = key(2);
    let grant = Grant::issue(&owner(), GrantTerms { expires_ms: NOW, ..terms(&alice, Operations::READ, false) });
    let one = chain(&[grant]);
    authorize(&private_bucket(), &one, alice.account(), Operations::READ, NOW - 1, &never_revoked).unwrap();
    let err = check(&private_bucket(), &one, &alice, Operations::READ).unwrap_err();
    assert_eq!(err.to_string(), format!("grant 1 of 1 expired at {NOW} (Unix ms; now {NOW})"));

    // An expired middle link breaks the chain for everyone after it.
    let (chain3, [_, _, carol]) = three_links();
    let later = NOW + HOUR_MS - 1;
    let err = authorize(&private_bucket(), &chain3, carol.account(), Operations::READ, later, &never_revoked);
    assert!(matches!(err, Err(Refusal::Expired { link: 2, links: 3, .. })), "{err:?}");
}

#[test]
fn a_grant_is_refused_before_its_not_before() {
    let alice = key(2);
    let start = NOW + 1000;
    let grant = Grant::issue(&owner(), GrantTerms { not_before_ms: start, ..terms(&alice, Operations::READ, false) });
    let one = chain(&[grant]);
    let err = check(&private_bucket(), &one, &alice, Operations::READ).unwrap_err();
    assert_eq!(err.to_string(), format!("grant 1 of 1 is not valid before {start} (Unix ms; now {NOW})"));
    authorize(&private_bucket(), &one, alice.account(), Operations::READ, start, &never_revoked).unwrap();
}

#[test]
fn a_delegate_cannot_widen_operations() {
    let (alice, bob) = (key(2), key(3));
    let g1 = Grant::issue(&owner(), terms(&alice, Operations::READ, true));
    let g2 = Grant::issue(&alice, terms(&bob, Operations::ALL, false));
    let err = check(&private_bucket(), &chain(&[g1, g2]), &bob, Operations::READ).unwrap_err();
    assert_eq!(err.to_string(), "grant 2 of 2 allows read,write, more than the read of grant 1");
    // Narrowing is fine.
    let g1 = Grant::issue(&owner(), terms(&alice, Operations::ALL, true));
    let g2 = Grant::issue(&alice, terms(&bob, Operations::READ, false));
    let narrowed = chain(&[g1, g2]);
    check(&private_bucket(), &narrowed, &bob, Operations::READ).unwrap();
    assert!(matches!(
        check(&private_bucket(), &narrowed, &bob, Operations::WRITE),
        Err(Refusal::MissingPermission { missing: Operations::WRITE, granted: Operations::READ, .. })
    ));
}

#[test]
fn a_delegate_cannot_extend_the_expiry() {
    let (alice, bob) = (key(2), key(3));
    let g1 = Grant::issue(&owner(), terms(&alice, Operations::ALL, true));
    let g2 = Grant::issue(&alice, GrantTerms { expires_ms: g1.expires_ms + 1, ..terms(&bob, Operations::ALL, false) });
    let err = check(&private_bucket(), &chain(&[g1, g2]), &bob, Operations::READ).unwrap_err();
    assert!(matches!(err, Refusal::ExtendsExpiry { link: 2, links: 2, .. }), "{err}");
    assert!(err.to_string().starts_with("grant 2 of 2 expires at "), "{err}");
    // The same expiry as the parent is allowed.
    let g2 = Grant::issue(&alice, terms(&bob, Operations::ALL, false));
    check(&private_bucket(), &chain(&[g1, g2]), &bob, Operations::READ).unwrap();
}

#[test]
fn a_grant_without_may_delegate_cannot_be_delegated() {
    let (alice, bob, carol) = (key(2), key(3), key(4));
    let g1 = Grant::issue(&owner(), terms(&alice, Operations::ALL, false));
    let g2 = Grant::issue(&alice, terms(&bob, Operations::READ, false));
    let err = check(&private_bucket(), &chain(&[g1, g2]), &bob, Operations::READ).unwrap_err();
    assert_eq!(err.to_string(), "grant 1 of 2 does not allow delegation, yet grant 2 is issued by its subject");
    // may_delegate reaches one step only: bob's grant did not allow it either.
    let g1 = Grant::issue(&owner(), terms(&alice, Operations::ALL, true));
    let g2 = Grant::issue(&alice, terms(&bob, Operations::READ, false));
    let g3 = Grant::issue(&bob, terms(&carol, Operations::READ, false));
    assert!(matches!(
        check(&private_bucket(), &chain(&[g1, g2, g3]), &carol, Operations::READ),
        Err(Refusal::DelegationNotAllowed { link: 3, links: 3 })
    ));
}

#[test]
fn links_must_connect_issuer_to_parent_subject() {
    let (alice, bob, mallory) = (key(2), key(3), key(9));
    let g1 = Grant::issue(&owner(), terms(&alice, Operations::ALL, true));
    // Mallory issues the second link as if she were alice.
    let g2 = Grant::issue(&mallory, terms(&bob, Operations::READ, false));
    let err = check(&private_bucket(), &chain(&[g1, g2]), &bob, Operations::READ).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("grant 2 of 2: issuer {} is not the subject {} of grant 1", mallory.account(), alice.account())
    );
    // And the first link must come from the owner.
    let g1 = Grant::issue(&mallory, terms(&bob, Operations::READ, false));
    let err = check(&private_bucket(), &chain(&[g1]), &bob, Operations::READ).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("grant 1 of 1: issuer {} is not the owner {} of bucket 7", mallory.account(), owner().account())
    );
}

#[test]
fn every_link_must_be_for_the_bucket() {
    let (alice, bob) = (key(2), key(3));
    let g1 = Grant::issue(&owner(), terms(&alice, Operations::ALL, true));
    let g2 = Grant::issue(&alice, GrantTerms { bucket: 8, ..terms(&bob, Operations::READ, false) });
    let links = chain(&[g1, g2]);
    let err = check(&private_bucket(), &links, &bob, Operations::READ).unwrap_err();
    assert_eq!(err.to_string(), "grant 2 of 2 is for bucket 8, not bucket 7");
    // Nor does the chain work on bucket 8, which the owner never granted.
    let bucket8 = Bucket { id: 8, ..private_bucket() };
    assert!(matches!(
        check(&bucket8, &links, &bob, Operations::READ),
        Err(Refusal::WrongBucket { link: 1, found: 7, bucket: 8, .. })
    ));
}

#[test]
fn a_revoked_link_refuses_the_whole_chain() {
    let (chain3, [_, _, carol]) = three_links();
    for revoked_link in 0..3 {
        let revoked: HashSet<GrantId> = [chain3.links()[revoked_link].id()].into();
        let result =
            authorize(&private_bucket(), &chain3, carol.account(), Operations::READ, NOW, &|id| revoked.contains(id));
        let err = result.unwrap_err();
        assert!(matches!(err, Refusal::Revoked { link, links: 3, .. } if link == revoked_link + 1), "{err}");
        assert!(err.to_string().ends_with(" is revoked"), "{err}");
    }
    // Revoking an unrelated grant changes nothing.
    let other = Grant::issue(&owner(), terms(&carol, Operations::ALL, false));
    let revoked: HashSet<GrantId> = [other.id()].into();
    authorize(&private_bucket(), &chain3, carol.account(), Operations::READ, NOW, &|id| revoked.contains(id)).unwrap();
}

#[test]
fn ids_name_the_signed_content() {
    let alice = key(2);
    let a = Grant::issue(&owner(), terms(&alice, Operations::READ, false));
    let b = Grant::issue(&owner(), terms(&alice, Operations::READ, false));
    assert_ne!(a.id(), b.id(), "fresh nonces make re-issued grants distinct");
    let mut resigned = a;
    resigned.signature = [0; 64];
    assert_eq!(resigned.id(), a.id(), "the id does not depend on the signature bytes");
    assert_eq!(a.id().to_string().len(), 64);
}

#[test]
fn a_public_bucket_is_readable_by_anyone_but_writable_only_through_grants() {
    let stranger = key(9);
    check(&public_bucket(), &GrantChain::empty(), &stranger, Operations::READ).unwrap();
    let err = check(&public_bucket(), &GrantChain::empty(), &stranger, Operations::WRITE).unwrap_err();
    assert!(err.to_string().starts_with("missing permission write on bucket 7: "), "{err}");
    // Asking for read and write without a grant names only the missing write.
    let err = check(&public_bucket(), &GrantChain::empty(), &stranger, Operations::ALL).unwrap_err();
    assert!(matches!(err, Refusal::NoGrant { missing: Operations::WRITE, .. }), "{err}");

    let writer = chain(&[Grant::issue(&owner(), terms(&stranger, Operations::WRITE, false))]);
    check(&public_bucket(), &writer, &stranger, Operations::ALL).unwrap();
    // A read-only grant adds nothing to a public bucket.
    let reader = chain(&[Grant::issue(&owner(), terms(&stranger, Operations::READ, false))]);
    assert!(matches!(
        check(&public_bucket(), &reader, &stranger, Operations::WRITE),
        Err(Refusal::MissingPermission { missing: Operations::WRITE, .. })
    ));
}

#[test]
fn grants_and_chains_round_trip() {
    let (chain3, _) = three_links();
    for grant in chain3.links() {
        assert_eq!(Grant::decode(&grant.encode()).unwrap(), *grant);
    }
    let bytes = chain3.encode();
    assert_eq!(bytes.len(), GRANT_CHAIN_HEADER_BYTES + 3 * GRANT_BYTES);
    assert_eq!(&bytes[..4], &[3, 0, 0, 0]);
    assert_eq!(GrantChain::decode(&bytes).unwrap(), chain3);
    assert_eq!(GrantChain::decode(&GrantChain::empty().encode()).unwrap(), GrantChain::empty());
}

/// The expected bytes were computed independently from the layout in
/// docs/SECURITY.md, with Python's `struct` and `cryptography` (Ed25519,
/// deterministic signatures), not with this code.
#[test]
fn golden_grant_encoding() {
    let grant = Grant::issue_with_nonce(
        &key(1),
        GrantTerms {
            bucket: 7,
            subject: key(2).account(),
            operations: Operations::ALL,
            not_before_ms: 1_700_000_000_000,
            expires_ms: 1_800_000_000_000,
            may_delegate: true,
        },
        std::array::from_fn(|i| i as u8),
    );
    let expected = "010103000000000007000000000000008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c\
                    8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b3940068e5cf8b01000000505c18a3010000\
                    000102030405060708090a0b0c0d0e0f34f7e873cf004067c26903ad5d1cb509714ddd98669103e813a8a79142267357\
                    c5e3d41d330330658c843171d43166290ce4c0d7c4f5cf5fc723f3db908e0405";
    assert_eq!(hex::encode(grant.encode()), expected);
    assert_eq!(Grant::decode(&hex::decode(expected).unwrap()).unwrap(), grant);
}

#[test]
fn decode_refuses_non_canonical_grants() {
    let good = Grant::issue(&owner(), terms(&key(2), Operations::READ, false)).encode();
    let with = |offset: usize, value: u8| {
        let mut bytes = good;
        bytes[offset] = value;
        Grant::decode(&bytes)
    };
    assert_eq!(with(0, 2), Err(GrantFormatError::UnsupportedVersion { found: 2, supported: 1 }));
    assert_eq!(with(0, 0), Err(GrantFormatError::UnsupportedVersion { found: 0, supported: 1 }));
    assert_eq!(with(1, 0x02), Err(GrantFormatError::UnknownFlags { flags: 0x02 }));
    assert_eq!(with(2, 0x04), Err(GrantFormatError::UnknownOperations { bits: 0x04 }));
    assert_eq!(with(3, 0x80), Err(GrantFormatError::UnknownOperations { bits: 0x8001 }));
    for offset in 4..8 {
        assert_eq!(with(offset, 9), Err(GrantFormatError::NonZeroReserved { offset, value: 9 }));
    }
    for len in [0, 1, GRANT_BYTES - 1, GRANT_BYTES + 1] {
        let mut bytes = good.to_vec();
        bytes.resize(len, 0);
        assert_eq!(Grant::decode(&bytes), Err(GrantFormatError::WrongLength { expected: GRANT_BYTES, actual: len }));
    }
}

#[test]
fn decode_refuses_malformed_chains() {
    let (chain3, _) = three_links();
    let bytes = chain3.encode();
    for len in 0..bytes.len() {
        assert!(GrantChain::decode(&bytes[..len]).is_err(), "a chain cut to {len} bytes decodes");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(GrantChain::decode(&longer), Err(GrantFormatError::ChainLength { links: 3, .. })));
    let mut reserved = bytes.clone();
    reserved[2] = 1;
    assert_eq!(GrantChain::decode(&reserved), Err(GrantFormatError::NonZeroReserved { offset: 2, value: 1 }));
    let mut bad_link = bytes.clone();
    bad_link[GRANT_CHAIN_HEADER_BYTES + GRANT_BYTES] = 9; // version of link 2
    let err = GrantChain::decode(&bad_link).unwrap_err();
    assert_eq!(
        err.to_string(),
        "link 2 of the grant chain: grant version 9 is not supported (this node reads version 1)"
    );
    // The refusal a node would send for it.
    assert!(Refusal::from(err).to_string().starts_with("malformed grant chain: link 2 "));
}

#[test]
fn chains_are_bounded() {
    let alice = key(2);
    let grant = Grant::issue(&owner(), terms(&alice, Operations::READ, true));
    let full = GrantChain::new(vec![grant; GRANT_CHAIN_LINKS_MAX]).unwrap();
    assert_eq!(full.encode().len(), GRANT_CHAIN_BYTES_MAX);
    assert!(matches!(
        full.clone().extended(grant),
        Err(GrantFormatError::TooManyLinks { links: 9, max: GRANT_CHAIN_LINKS_MAX })
    ));
    assert!(GrantChain::new(vec![grant; GRANT_CHAIN_LINKS_MAX + 1]).is_err());
    let mut nine = full.encode();
    nine[0] = 9;
    nine.extend_from_slice(&grant.encode());
    assert_eq!(GrantChain::decode(&nine), Err(GrantFormatError::TooManyLinks { links: 9, max: 8 }));
    nine[0] = 255;
    assert!(GrantChain::decode(&nine).is_err());
}

#[test]
fn garbage_never_panics_and_is_never_authorized() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6772616e74);
    let (valid, [_, _, carol]) = three_links();
    let valid_bytes = valid.encode();
    for _ in 0..20_000 {
        let bytes: Vec<u8> = if rng.gen_bool(0.5) {
            let len = rng.gen_range(0..GRANT_CHAIN_BYTES_MAX + 8);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            // A valid chain with a few random bytes changed: it gets past the
            // length checks, so the signatures are what refuses it.
            let mut bytes = valid_bytes.clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] = rng.gen();
            }
            bytes
        };
        let _ = Grant::decode(&bytes);
        let Ok(decoded) = GrantChain::decode(&bytes) else { continue };
        // A change may write back the byte that was there.
        if decoded != valid {
            assert!(check(&private_bucket(), &decoded, &carol, Operations::READ).is_err());
        }
    }
}

#[test]
fn operations_display_and_bits() {
    assert_eq!(Operations::NONE.to_string(), "none");
    assert_eq!(Operations::READ.to_string(), "read");
    assert_eq!((Operations::READ | Operations::WRITE).to_string(), "read,write");
    assert_eq!(Operations::ALL & Operations::WRITE, Operations::WRITE);
    assert_eq!(Operations::from_bits(3), Some(Operations::ALL));
    assert_eq!(Operations::from_bits(4), None);
    assert!(Operations::ALL.contains(Operations::READ));
    assert!(!Operations::READ.contains(Operations::ALL));
    assert!(Operations::READ.contains(Operations::NONE));
    assert_eq!(Operations::ALL.difference(Operations::READ), Operations::WRITE);
}
