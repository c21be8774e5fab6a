//! Who may do what on one connection, and what the connection used.
//!
//! The decision follows docs/SECURITY.md "Authorization": a connection's
//! account is proven by the handshake; a stream's bucket is in its name
//! (`b<id>.<name>`, [`bucket_of`]); the bucket's owner and public flag come
//! from the registry ([`crate::buckets`]); everything else needs a grant
//! chain presented on the connection. The chain's signatures are checked
//! once, when it is presented; each request then checks the result against
//! the operation it needs, the clock and the registry's revocations, so the
//! per-request cost is a few hash lookups.
//!
//! Authorization is enforced when `auth.required` is set. Without it the
//! node is open (development mode), but usage is still accounted.
//!
//! Usage is accounted by the node the client talks to (the entry node): a
//! request another member forwarded was accounted there and is not counted
//! again. A produce adds its record bytes to `transferred_bytes` and
//! `stored_bytes` and one put; a fetch answer adds its batch bytes to
//! `transferred_bytes` and one get. Refused and failed requests add nothing.

use std::collections::HashMap;

use ddc_auth::account::Account;
use ddc_auth::grant::{verify_chain, EffectiveGrant, GrantChain, GrantId, Operations, Refusal};
use ddc_auth::handshake::SESSION_ID_BYTES;
use ddc_auth::usage::{AckLedger, ConsumerAck, CustomerUsage};
use ddc_cluster::membership::NodeId;
use ddc_formats::message::{Request, Response};
use ddc_formats::name::bucket_of;
use ddc_formats::wire::ErrorCode;

use crate::dispatch::{error_response, CoreState};

/// Bucket 0 holds the usage of streams in no bucket (nodes without `auth.required`).
pub const NO_BUCKET: u64 = 0;

/// A chain presented on this connection, checked.
struct Presented {
    effective: EffectiveGrant,
    ids: Vec<GrantId>,
}

/// One connection's identity, grants and served totals.
#[derive(Default)]
pub struct ConnAccess {
    account: Option<Account>,
    session: Option<[u8; SESSION_ID_BYTES]>,
    grants: HashMap<u64, Presented>,
    /// Per bucket: fetch-answer bytes and answers sent on this connection.
    served: HashMap<u64, (u64, u64)>,
    ledger: Option<AckLedger>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn denied(message: impl Into<String>) -> Response {
    error_response(ErrorCode::PermissionDenied, message)
}

/// The operations a request needs on its stream's bucket; None for requests
/// that name no stream or are decided elsewhere.
fn needed<'a>(request: &Request<'a>) -> Option<(&'a str, Operations)> {
    match *request {
        Request::Produce { stream, .. } | Request::CreateStream { stream } | Request::Seal { stream } => {
            Some((stream, Operations::WRITE))
        }
        Request::Fetch { stream, .. } | Request::StreamInfo { stream } => Some((stream, Operations::READ)),
        Request::Proof { stream: Some(stream), .. } => Some((stream, Operations::READ)),
        _ => None,
    }
}

/// Requests only cluster members may send.
fn is_node_to_node(request: &Request<'_>) -> bool {
    matches!(request, Request::Replicate { .. } | Request::PutShard { .. } | Request::GetShard { .. })
}

impl ConnAccess {
    /// The handshake proved `account`; `session` names the session in usage acknowledgments.
    pub fn authenticated(&mut self, account: Account, session: [u8; SESSION_ID_BYTES], node: Option<Account>) {
        self.account = Some(account);
        self.session = Some(session);
        self.ledger = node.map(AckLedger::new);
    }

    pub fn account(&self) -> Option<Account> {
        self.account
    }

    /// Whether this connection's account is a member of the cluster or this node itself.
    fn is_member(&self, state: &CoreState) -> bool {
        let Some(account) = self.account else { return false };
        if state.identity.as_ref().is_some_and(|k| k.account() == account) {
            return true;
        }
        state.cluster.as_ref().is_some_and(|c| c.membership.member(&NodeId(account.0)).is_some())
    }

    /// Decide whether this connection may send `request`. `Err` is the
    /// refusal to answer with; nothing has been done yet.
    pub fn check(&self, state: &CoreState, request: &Request<'_>, forwarded: bool) -> Result<(), Response> {
        // A failed usage journal (typically a full disk) stops writes, which could not be
        // billed; reads keep being served, as a full disk promises, and their usage is lost
        // (the failure is logged once).
        if matches!(request, Request::Produce { .. }) {
            if let Some((reason, disk_full)) = state.usage.borrow().failure() {
                let code = if disk_full { ErrorCode::StorageFull } else { ErrorCode::Internal };
                return Err(error_response(
                    code,
                    format!("usage accounting failed ({reason}); this node refuses produce until restarted"),
                ));
            }
        }
        if !state.auth_required {
            return Ok(());
        }
        let who = || self.account.map_or("an unauthenticated connection".to_owned(), |a| a.to_string());
        if is_node_to_node(request) || forwarded {
            if self.is_member(state) {
                return Ok(());
            }
            let what = if forwarded { "forwarded request" } else { "node-to-node request" };
            return Err(denied(format!("{what} refused: {} is not a member of this cluster", who())));
        }
        match *request {
            Request::Usage { bucket: Some(id) } | Request::Proof { stream: None, bucket: id, .. } => {
                let owner = state.buckets.current().get(id).map(|e| e.bucket.owner);
                if self.is_member(state) || (owner.is_some() && owner == self.account) {
                    return Ok(());
                }
                return Err(denied(format!("usage of bucket {id} is shown to its owner and cluster members only")));
            }
            Request::Usage { bucket: None } if !self.is_member(state) => {
                return Err(denied("usage of every bucket is shown to cluster members only; name a bucket you own"));
            }
            _ => {}
        }
        let Some((stream, operations)) = needed(request) else { return Ok(()) };
        let Some(bucket) = bucket_of(stream) else {
            return Err(denied(format!(
                "stream {stream:?} is in no bucket: this node requires authentication, so streams are named \
                 b<bucket>.<name> (docs/SECURITY.md)"
            )));
        };
        self.allows(state, bucket, operations, now_ms())
    }

    /// Whether the connection's account may do `operations` on `bucket` now.
    fn allows(&self, state: &CoreState, bucket: u64, operations: Operations, now: u64) -> Result<(), Response> {
        let registry = state.buckets.current();
        let Some(entry) = registry.get(bucket) else {
            return Err(denied(format!("bucket {bucket} is not registered on this node (auth.buckets_file)")));
        };
        let Some(account) = self.account else {
            return Err(error_response(ErrorCode::Unauthenticated, "this request needs an authenticated connection"));
        };
        if account == entry.bucket.owner {
            return Ok(());
        }
        let missing = if entry.bucket.public { operations.difference(Operations::READ) } else { operations };
        if missing.is_empty() {
            return Ok(());
        }
        let Some(presented) = self.grants.get(&bucket) else {
            return Err(denied(Refusal::NoGrant { bucket, requester: account, missing }.to_string()));
        };
        let effective = &presented.effective;
        if let Some(id) = presented.ids.iter().find(|id| entry.revoked.contains(id)) {
            return Err(denied(format!("missing permission {missing} on bucket {bucket}: grant {id} is revoked")));
        }
        if now >= effective.expires_ms {
            return Err(denied(format!(
                "missing permission {missing} on bucket {bucket}: the presented grants expired at {} (Unix ms; now {now})",
                effective.expires_ms
            )));
        }
        if now < effective.not_before_ms {
            return Err(denied(format!(
                "missing permission {missing} on bucket {bucket}: the presented grants are not valid before {} \
                 (Unix ms; now {now})",
                effective.not_before_ms
            )));
        }
        if !effective.operations.contains(missing) {
            return Err(denied(
                Refusal::MissingPermission {
                    bucket,
                    missing: missing.difference(effective.operations),
                    granted: effective.operations,
                }
                .to_string(),
            ));
        }
        Ok(())
    }

    /// Whether a stream may be listed to this connection (it may read it).
    pub fn may_list(&self, state: &CoreState, stream: &str) -> bool {
        if !state.auth_required {
            return true;
        }
        bucket_of(stream).is_some_and(|b| self.allows(state, b, Operations::READ, now_ms()).is_ok())
    }

    /// `PresentGrants`: check the chain for its bucket and keep what it gives this account.
    pub fn present_grants(&mut self, state: &CoreState, chain: &[u8]) -> Response {
        let Some(account) = self.account else {
            return error_response(ErrorCode::Unauthenticated, "grants are presented on an authenticated connection");
        };
        let chain = match GrantChain::decode(chain) {
            Ok(c) => c,
            Err(e) => return error_response(ErrorCode::BadRequest, format!("malformed grant chain: {e}")),
        };
        let Some(first) = chain.links().first() else {
            return error_response(ErrorCode::BadRequest, "the grant chain has no link");
        };
        let registry = state.buckets.current();
        let Some(entry) = registry.get(first.bucket) else {
            return denied(format!("bucket {} is not registered on this node (auth.buckets_file)", first.bucket));
        };
        let effective = match verify_chain(&entry.bucket, &chain, now_ms(), &|id| entry.revoked.contains(id)) {
            Ok(e) => e,
            Err(refusal) => return denied(refusal.to_string()),
        };
        if effective.subject != account {
            let refusal = Refusal::WrongSubject { links: chain.len(), requester: account, subject: effective.subject };
            return denied(refusal.to_string());
        }
        let ids = chain.links().iter().map(|g| g.id()).collect();
        self.grants.insert(effective.bucket, Presented { effective, ids });
        Response::PresentGrants {
            bucket: effective.bucket,
            operations: effective.operations.bits(),
            expires_ms: effective.expires_ms,
        }
    }

    /// `UsageAck`: keep a consumer's acknowledgment of what this connection served as evidence.
    pub fn usage_ack(&mut self, state: &CoreState, bytes: &[u8]) -> Response {
        let (Some(account), Some(session), Some(ledger)) = (self.account, self.session, self.ledger.as_mut()) else {
            return error_response(
                ErrorCode::Unauthenticated,
                "usage acknowledgments need an authenticated connection",
            );
        };
        let ack = match ConsumerAck::decode(bytes) {
            Ok(a) => a,
            Err(e) => return error_response(ErrorCode::BadRequest, format!("usage acknowledgment: {e}")),
        };
        if ack.consumer != account {
            return denied(format!(
                "usage acknowledgment signed for {}, but this connection is {account}",
                ack.consumer
            ));
        }
        if ack.session_nonce != session {
            return denied("usage acknowledgment names another session than this connection's");
        }
        let (bytes_served, gets_served) = self.served.get(&ack.bucket).copied().unwrap_or_default();
        if let Err(e) = ledger.accept(&ack, bytes_served, gets_served) {
            return denied(format!("usage acknowledgment refused: {e}"));
        }
        if let Err(e) = state.usage.borrow_mut().record_ack(&ack) {
            tracing::error!(error = %e, "could not keep a usage acknowledgment");
            return error_response(ErrorCode::Internal, format!("usage acknowledgment not kept: {e}"));
        }
        Response::UsageAck
    }

    /// Account a served request: called with its answer before the answer is
    /// sent, so usage that was answered is durable against a crash of the process.
    pub fn account_usage(&mut self, state: &CoreState, request: &Request<'_>, response: &Response, forwarded: bool) {
        if forwarded {
            return; // the entry node accounted it
        }
        let (stream, delta) = match (request, response) {
            (Request::Produce { stream, records, .. }, Response::Produce { .. }) => {
                let bytes = records.len() as u64;
                (
                    stream,
                    CustomerUsage {
                        transferred_bytes: bytes,
                        stored_bytes: bytes,
                        number_of_puts: 1,
                        ..Default::default()
                    },
                )
            }
            (Request::Fetch { stream, .. }, Response::Fetch { batches, .. }) => {
                let bytes = batches.len() as u64;
                (stream, CustomerUsage { transferred_bytes: bytes, number_of_gets: 1, ..Default::default() })
            }
            _ => return,
        };
        let bucket = bucket_of(stream).unwrap_or(NO_BUCKET);
        if delta.number_of_gets > 0 {
            let served = self.served.entry(bucket).or_default();
            served.0 += delta.transferred_bytes;
            served.1 += 1;
        }
        if state.usage.borrow().failure().is_some() {
            return; // the journal failed (logged once); reads go on unaccounted
        }
        if let Err(e) = state.usage.borrow_mut().record(bucket, &delta) {
            // The request was served; its answer stays true. Its usage is lost, loudly, and
            // `check` refuses the next billable request.
            tracing::error!(bucket, error = %e, "usage not recorded");
        }
    }
}
