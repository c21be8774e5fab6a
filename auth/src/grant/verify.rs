//! The access decision: a bucket, a chain, a requester and a clock in; `Ok`
//! or a [`Refusal`] naming what failed out.

use super::{Grant, GrantChain, GrantFormatError, GrantId, Operations, GRANT_VERSION};
use crate::account::Account;

/// A bucket as the node knows it: the unit of ownership and access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket id, as on the chain.
    pub id: u64,
    /// The account that owns the bucket and roots every grant chain.
    pub owner: Account,
    /// Whether anyone may read the bucket without a grant.
    pub public: bool,
}

/// Why [`authorize`] refused a request. Links are numbered from 1, the
/// owner's grant being link 1, and each message names the link and the fact
/// that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The requester is not the owner and needs a grant, but gave none.
    #[error("missing permission {missing} on bucket {bucket}: {requester} is not its owner and presented no grant")]
    NoGrant { bucket: u64, requester: Account, missing: Operations },
    /// The chain is valid but does not allow all that was asked.
    #[error("missing permission {missing} on bucket {bucket}: the grants allow {granted}")]
    MissingPermission { bucket: u64, missing: Operations, granted: Operations },
    /// [`verify_chain`] was given no link.
    #[error("no grant presented for bucket {bucket}")]
    EmptyChain { bucket: u64 },
    /// A link of a version this node does not check.
    #[error("grant {link} of {links}: version {version} is not supported")]
    UnsupportedVersion { link: usize, links: usize, version: u8 },
    /// A link whose signature is not its issuer's.
    #[error("signature of grant {link} of {links} (issuer {issuer}) is not valid")]
    BadSignature { link: usize, links: usize, issuer: Account },
    /// A link for another bucket.
    #[error("grant {link} of {links} is for bucket {found}, not bucket {bucket}")]
    WrongBucket { link: usize, links: usize, found: u64, bucket: u64 },
    /// The first link is not issued by the bucket owner.
    #[error("grant 1 of {links}: issuer {issuer} is not the owner {owner} of bucket {bucket}")]
    IssuerNotOwner { links: usize, issuer: Account, owner: Account, bucket: u64 },
    /// A link not issued by the subject of the link before it.
    #[error("grant {link} of {links}: issuer {issuer} is not the subject {parent_subject} of grant {}", .link - 1)]
    BrokenChain { link: usize, links: usize, issuer: Account, parent_subject: Account },
    /// A link whose parent does not allow delegation.
    #[error("grant {} of {links} does not allow delegation, yet grant {link} is issued by its subject", .link - 1)]
    DelegationNotAllowed { link: usize, links: usize },
    /// A link that allows an operation its parent does not.
    #[error("grant {link} of {links} allows {operations}, more than the {parent_operations} of grant {}", .link - 1)]
    WidensOperations { link: usize, links: usize, operations: Operations, parent_operations: Operations },
    /// A link that expires after its parent.
    #[error(
        "grant {link} of {links} expires at {expires_ms} (Unix ms), after grant {}, which expires at {parent_expires_ms}",
        .link - 1
    )]
    ExtendsExpiry { link: usize, links: usize, expires_ms: u64, parent_expires_ms: u64 },
    /// A link in the caller's revocation set.
    #[error("grant {link} of {links} (id {id}) is revoked")]
    Revoked { link: usize, links: usize, id: GrantId },
    /// A link not valid yet.
    #[error("grant {link} of {links} is not valid before {not_before_ms} (Unix ms; now {now_ms})")]
    NotYetValid { link: usize, links: usize, not_before_ms: u64, now_ms: u64 },
    /// A link past its expiry.
    #[error("grant {link} of {links} expired at {expires_ms} (Unix ms; now {now_ms})")]
    Expired { link: usize, links: usize, expires_ms: u64, now_ms: u64 },
    /// The requester is not the subject the chain ends at.
    #[error("requester {requester} is not the subject {subject} of grant {links} of {links}, the last one")]
    WrongSubject { links: usize, requester: Account, subject: Account },
    /// The chain could not be decoded.
    #[error("malformed grant chain: {0}")]
    Malformed(#[from] GrantFormatError),
}

/// What a verified chain gives its last subject: the intersection of the
/// links' rights and validity windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveGrant {
    /// The bucket every link is for.
    pub bucket: u64,
    /// The subject of the last link.
    pub subject: Account,
    /// The operations every link allows.
    pub operations: Operations,
    /// The latest `not_before_ms` of the links.
    pub not_before_ms: u64,
    /// The earliest `expires_ms` of the links.
    pub expires_ms: u64,
}

/// Check every link of a non-empty chain for `bucket` at `now_ms` and return
/// what it gives its last subject. For each link, in order: version,
/// signature, bucket, issuer (the owner for link 1, the parent's subject
/// after), the parent allows delegation, operations and expiry within the
/// parent's, not revoked, valid at `now_ms`. The first failure is returned.
///
/// It does not look at who asks; [`authorize`] does. A caller that keeps the
/// result for a while must still consult its revocation set and the expiry.
pub fn verify_chain(
    bucket: &Bucket,
    chain: &GrantChain,
    now_ms: u64,
    revoked: &dyn Fn(&GrantId) -> bool,
) -> Result<EffectiveGrant, Refusal> {
    let links = chain.len();
    let Some(first) = chain.links().first() else { return Err(Refusal::EmptyChain { bucket: bucket.id }) };
    let mut effective = EffectiveGrant {
        bucket: bucket.id,
        subject: first.subject,
        operations: Operations::ALL,
        not_before_ms: 0,
        expires_ms: u64::MAX,
    };
    let mut parent: Option<&Grant> = None;
    for (index, grant) in chain.links().iter().enumerate() {
        let link = index + 1;
        if grant.version != GRANT_VERSION {
            return Err(Refusal::UnsupportedVersion { link, links, version: grant.version });
        }
        // The signature comes before every other check: the fields of a grant
        // that does not verify say nothing, and naming one of them would mislead.
        if !grant.signature_is_valid() {
            return Err(Refusal::BadSignature { link, links, issuer: grant.issuer });
        }
        if grant.bucket != bucket.id {
            return Err(Refusal::WrongBucket { link, links, found: grant.bucket, bucket: bucket.id });
        }
        match parent {
            None => {
                if grant.issuer != bucket.owner {
                    return Err(Refusal::IssuerNotOwner {
                        links,
                        issuer: grant.issuer,
                        owner: bucket.owner,
                        bucket: bucket.id,
                    });
                }
            }
            Some(parent) => {
                if grant.issuer != parent.subject {
                    return Err(Refusal::BrokenChain {
                        link,
                        links,
                        issuer: grant.issuer,
                        parent_subject: parent.subject,
                    });
                }
                if !parent.may_delegate {
                    return Err(Refusal::DelegationNotAllowed { link, links });
                }
                if !parent.operations.contains(grant.operations) {
                    return Err(Refusal::WidensOperations {
                        link,
                        links,
                        operations: grant.operations,
                        parent_operations: parent.operations,
                    });
                }
                if grant.expires_ms > parent.expires_ms {
                    return Err(Refusal::ExtendsExpiry {
                        link,
                        links,
                        expires_ms: grant.expires_ms,
                        parent_expires_ms: parent.expires_ms,
                    });
                }
            }
        }
        let id = grant.id();
        if revoked(&id) {
            return Err(Refusal::Revoked { link, links, id });
        }
        if now_ms < grant.not_before_ms {
            return Err(Refusal::NotYetValid { link, links, not_before_ms: grant.not_before_ms, now_ms });
        }
        if now_ms >= grant.expires_ms {
            return Err(Refusal::Expired { link, links, expires_ms: grant.expires_ms, now_ms });
        }
        effective.subject = grant.subject;
        effective.operations = effective.operations.intersection(grant.operations);
        effective.not_before_ms = effective.not_before_ms.max(grant.not_before_ms);
        effective.expires_ms = effective.expires_ms.min(grant.expires_ms);
        parent = Some(grant);
    }
    // Narrowing was enforced link by link, so the last link holds the result.
    assert_eq!(Some(effective.operations), chain.links().last().map(|g| g.operations));
    assert_eq!(Some(effective.expires_ms), chain.links().last().map(|g| g.expires_ms));
    assert!(effective.not_before_ms <= now_ms && now_ms < effective.expires_ms);
    Ok(effective)
}

/// Decide whether `requester` may do `operations` on `bucket` at `now_ms`.
///
/// The owner may do anything, whatever the chain. On a public bucket, reading
/// needs no grant. Everything else needs `chain` to pass [`verify_chain`], to
/// end at `requester`, and to allow every operation asked for that the bucket
/// does not allow to anyone. A chain is ignored when no grant is needed.
///
/// `requester` must be proven by the caller (a signature by its key over a
/// fresh challenge), never taken from the request: the subject binding is
/// what makes a grant useless to anyone who merely copies it. `revoked` says
/// whether the node has revoked a grant; pass `&|_| false` for none.
///
/// # Panics
///
/// If `operations` is empty: every request asks for something, and the node,
/// not the client, maps a request to its operations.
pub fn authorize(
    bucket: &Bucket,
    chain: &GrantChain,
    requester: Account,
    operations: Operations,
    now_ms: u64,
    revoked: &dyn Fn(&GrantId) -> bool,
) -> Result<(), Refusal> {
    assert!(!operations.is_empty(), "a request asks for at least one operation");
    if requester == bucket.owner {
        return Ok(());
    }
    let needed = if bucket.public { operations.difference(Operations::READ) } else { operations };
    if needed.is_empty() {
        return Ok(());
    }
    let Some(last) = chain.links().last() else {
        return Err(Refusal::NoGrant { bucket: bucket.id, requester, missing: needed });
    };
    // Checked before the signatures: it is cheap and the most common mistake.
    if last.subject != requester {
        return Err(Refusal::WrongSubject { links: chain.len(), requester, subject: last.subject });
    }
    let effective = verify_chain(bucket, chain, now_ms, revoked)?;
    assert_eq!(effective.subject, requester);
    if !effective.operations.contains(needed) {
        return Err(Refusal::MissingPermission {
            bucket: bucket.id,
            missing: needed.difference(effective.operations),
            granted: effective.operations,
        });
    }
    Ok(())
}
