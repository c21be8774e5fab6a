//! Buckets, grants and usage against the real daemon over real TCP
//! (docs/SECURITY.md "Authorization" and "Usage"): every refused request
//! names what is missing and leaves no trace; forged, tampered, replayed,
//! expired, revoked and over-delegated grants are refused; usage totals are
//! exactly what a scripted workload did, across SIGKILL and restart, and the
//! consumers' signed acknowledgments are kept as evidence.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ddc_auth::account::{Account, Keypair};
use ddc_auth::grant::{Grant, GrantChain, GrantTerms, Operations};
use ddc_auth::usage::{CustomerUsage, UsageReport};
use ddc_formats::client::{Client, ClientError};
use ddc_formats::message::{Request, Response};
use ddc_formats::wire::ErrorCode;

use common::{wait_until, Node};

const TIMEOUT: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

struct Setup {
    node: Node,
    node_key: Keypair,
    owner: Keypair,
    buckets: PathBuf,
}

/// Bucket 1 private and bucket 2 public, both owned by `owner`.
fn buckets_toml(owner: &Account, revoked: &[String]) -> String {
    let revoked: Vec<String> = revoked.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[bucket]]\nid = 1\nowner = \"{owner}\"\nrevoked_grants = [{}]\n\n[[bucket]]\nid = 2\nowner = \"{owner}\"\npublic = true\n",
        revoked.join(", ")
    )
}

fn start(required: bool) -> Setup {
    let mut node = Node::new();
    let owner = Keypair::generate();
    let node_key = Keypair::generate();
    let key_path = node.dir().join("node.key");
    node_key.write_new(&key_path).unwrap();
    let buckets = node.dir().join("buckets.toml");
    std::fs::write(&buckets, buckets_toml(&owner.account(), &[])).unwrap();
    node.set_config(Some(&format!(
        "cores = 2\n[server]\nio_memory_bytes = 1048576\n[auth]\nrequired = {required}\nnode_key_file = {key_path:?}\n\
         buckets_file = {buckets:?}\nbuckets_reload_ms = 100\n"
    )));
    node.launch();
    Setup { node, node_key, owner, buckets }
}

impl Setup {
    fn connect(&self, me: &Keypair) -> Client {
        let (c, _) =
            Client::connect_authenticated(&self.node.addr, TIMEOUT, me, Some(&self.node_key.account())).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c
    }

    fn revoke(&self, ids: &[String]) {
        let tmp = self.buckets.with_extension("tmp");
        std::fs::write(&tmp, buckets_toml(&self.owner.account(), ids)).unwrap();
        std::fs::rename(&tmp, &self.buckets).unwrap();
    }
}

fn grant(
    issuer: &Keypair,
    bucket: u64,
    to: &Keypair,
    operations: Operations,
    expires_ms: u64,
    delegate: bool,
) -> Grant {
    let terms =
        GrantTerms { bucket, subject: to.account(), operations, not_before_ms: 0, expires_ms, may_delegate: delegate };
    Grant::issue(issuer, terms)
}

fn chain(links: &[Grant]) -> Vec<u8> {
    GrantChain::new(links.to_vec()).unwrap().encode()
}

/// The refusal a call got: its code and message.
fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Server { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn denied<T: std::fmt::Debug>(result: Result<T, ClientError>, expect: &str) {
    let (code, message) = refused(result);
    assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
    assert!(message.contains(expect), "expected {expect:?} in {message:?}");
}

#[test]
fn every_request_is_authorized_and_refusals_leave_no_trace() {
    let s = start(true);
    let hour = now_ms() + 3_600_000;
    let (alice, bob, mallory) = (Keypair::generate(), Keypair::generate(), Keypair::generate());
    let mut owner = s.connect(&s.owner);
    let mut alice_c = s.connect(&alice);

    // No grant: produce, create, seal, fetch and info refused, naming the permission; nothing created.
    denied(alice_c.produce("b1.orders", &[b"x"]), "missing permission write on bucket 1");
    denied(alice_c.create_stream("b1.orders"), "missing permission write on bucket 1");
    denied(alice_c.call(&Request::Seal { stream: "b1.orders" }), "missing permission write");
    denied(alice_c.fetch("b1.orders", 0, 4096, 0), "missing permission read on bucket 1");
    denied(alice_c.stream_info("b1.orders"), "missing permission read");
    assert_eq!(refused(owner.stream_info("b1.orders")).0, ErrorCode::UnknownStream, "a refused produce created it");
    assert!(owner.list_streams().unwrap().is_empty());
    // Streams in no bucket, and unregistered buckets, are refused too.
    denied(owner.produce("orders", &[b"x"]), "in no bucket");
    denied(owner.produce("b9.orders", &[b"x"]), "bucket 9 is not registered");
    // A client setting the `forwarded` flag to skip authorization is refused.
    let id = alice_c
        .send_envelope(
            &Request::Produce {
                stream: "b1.orders",
                records: &[],
                record_count: 0,
                ack: ddc_formats::wire::AckLevel::Durable,
            },
            true,
        )
        .unwrap();
    match alice_c.recv().unwrap() {
        (got, Response::Error { code: ErrorCode::PermissionDenied, message }) if got == id => {
            assert!(message.contains("not a member"), "{message}")
        }
        other => panic!("forwarded request from a client: {other:?}"),
    }

    // The owner writes; Alice gets a read grant and reads, but still may not write.
    owner.produce("b1.orders", &[b"one", b"two"]).unwrap();
    let alice_read = grant(&s.owner, 1, &alice, Operations::READ, hour, false);
    let (bucket, ops, expires) = alice_c.present_grants(&chain(&[alice_read])).unwrap();
    assert_eq!((bucket, ops, expires), (1, Operations::READ.bits(), hour));
    assert_eq!(alice_c.fetch("b1.orders", 0, 4096, 0).unwrap().records.len(), 2);
    denied(alice_c.produce("b1.orders", &[b"x"]), "missing permission write on bucket 1: the grants allow read");
    assert_eq!(alice_c.list_streams().unwrap(), vec!["b1.orders".to_owned()]);
    assert_eq!(owner.stream_info("b1.orders").unwrap().next_offset, 2, "refused writes appended nothing");

    // Forged: Mallory signs a grant for a bucket she does not own.
    let mut mallory_c = s.connect(&mallory);
    let forged = grant(&mallory, 1, &mallory, Operations::ALL, hour, false);
    denied(mallory_c.present_grants(&chain(&[forged])), "is not the owner");
    // Tampered: Alice's grant with the operations widened after signing.
    let mut tampered = chain(&[alice_read]);
    tampered[4 + 2] |= Operations::WRITE.bits() as u8;
    denied(alice_c.present_grants(&tampered), "signature of grant 1 of 1");
    // Replayed: Mallory presents Alice's chain.
    denied(mallory_c.present_grants(&chain(&[alice_read])), "is not the subject");
    denied(mallory_c.fetch("b1.orders", 0, 4096, 0), "missing permission read");
    // Expired before presenting.
    let stale = grant(&s.owner, 1, &mallory, Operations::READ, now_ms() - 1, false);
    denied(mallory_c.present_grants(&chain(&[stale])), "expired");
    // Garbage is a bad request, and the connection keeps serving.
    assert_eq!(refused(mallory_c.present_grants(&[1, 2, 3])).0, ErrorCode::BadRequest);
    mallory_c.ping().unwrap();

    // Delegation: without may_delegate, Alice's grant to Bob is refused.
    let mut bob_c = s.connect(&bob);
    let to_bob = grant(&alice, 1, &bob, Operations::READ, hour, false);
    denied(bob_c.present_grants(&chain(&[alice_read, to_bob])), "does not allow delegation");
    // With it: Bob may get read, but not write (wider) nor a later expiry.
    let alice_delegating = grant(&s.owner, 1, &alice, Operations::READ, hour, true);
    let wider = grant(&alice, 1, &bob, Operations::ALL, hour, false);
    denied(bob_c.present_grants(&chain(&[alice_delegating, wider])), "more than the read");
    let longer = grant(&alice, 1, &bob, Operations::READ, hour + 1, false);
    denied(bob_c.present_grants(&chain(&[alice_delegating, longer])), "after grant 1");
    bob_c.present_grants(&chain(&[alice_delegating, to_bob])).unwrap();
    assert_eq!(bob_c.fetch("b1.orders", 0, 4096, 0).unwrap().records.len(), 2);

    // A short grant works until it expires, then the same connection is refused.
    let carol = Keypair::generate();
    let mut carol_c = s.connect(&carol);
    let expires = now_ms() + 1500;
    carol_c.present_grants(&chain(&[grant(&s.owner, 1, &carol, Operations::READ, expires, false)])).unwrap();
    assert_eq!(carol_c.fetch("b1.orders", 0, 4096, 0).unwrap().records.len(), 2);
    std::thread::sleep(Duration::from_millis(expires.saturating_sub(now_ms()) + 50));
    denied(carol_c.fetch("b1.orders", 0, 4096, 0), "expired");

    // Revoking Alice's delegating grant in the registry cuts off Bob's chain too, without a restart.
    s.revoke(&[alice_delegating.id().to_string()]);
    wait_until("revocation in force", TIMEOUT, || bob_c.fetch("b1.orders", 0, 4096, 0).is_err());
    denied(bob_c.fetch("b1.orders", 0, 4096, 0), "is revoked");
    // Each core reloads the registry on its own clock, so a new connection (which may land on
    // the other core) sees the revocation within one reload interval.
    wait_until("revocation in force on every core", TIMEOUT, || {
        (0..6).all(|_| s.connect(&bob).present_grants(&chain(&[alice_delegating, to_bob])).is_err())
    });
    denied(s.connect(&bob).present_grants(&chain(&[alice_delegating, to_bob])), "is revoked");
    // Alice's plain read grant was not revoked.
    assert_eq!(alice_c.fetch("b1.orders", 0, 4096, 0).unwrap().records.len(), 2);

    // A public bucket: anyone reads, nobody but the owner (or a grantee) writes.
    owner.produce("b2.news", &[b"hello"]).unwrap();
    assert_eq!(mallory_c.fetch("b2.news", 0, 4096, 0).unwrap().records.len(), 1);
    denied(mallory_c.produce("b2.news", &[b"spam"]), "missing permission write on bucket 2");
    let writer = grant(&s.owner, 2, &mallory, Operations::WRITE, hour, false);
    mallory_c.present_grants(&chain(&[writer])).unwrap();
    mallory_c.produce("b2.news", &[b"granted"]).unwrap();

    // Usage is shown to the bucket's owner and to the node itself only.
    denied(mallory_c.usage(Some(1)), "owner and cluster members");
    denied(mallory_c.usage(None), "cluster members only");
    UsageReport::decode(&owner.usage(Some(1)).unwrap()).unwrap();
    let mut as_node = s.connect(&s.node_key);
    UsageReport::decode(&as_node.usage(None).unwrap()).unwrap();
    drop(as_node);
    let mut s = s;
    s.node.assert_alive();
}

/// What a scripted workload must have been accounted.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    usage: CustomerUsage,
    fetched_bytes: u64,
}

fn produce_batches(client: &mut Client, stream: &str, batches: usize, seed: usize, expected: &mut Expected) {
    for i in 0..batches {
        let records: Vec<Vec<u8>> =
            (0..(1 + (i + seed) % 7)).map(|r| vec![b'a' + (r % 26) as u8; 10 + (i * 13 + r) % 300]).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let body_len = ddc_formats::batch::encode_records(refs.iter().copied()).len() as u64;
        client.produce(stream, &refs).unwrap();
        expected.usage.transferred_bytes += body_len;
        expected.usage.stored_bytes += body_len;
        expected.usage.number_of_puts += 1;
    }
}

fn fetch_all(client: &mut Client, stream: &str, expected: &mut Expected) {
    let mut offset = 0;
    loop {
        let (raw, hw) = client.fetch_raw(stream, offset, 2048, 0).unwrap();
        expected.usage.transferred_bytes += raw.len() as u64;
        expected.usage.number_of_gets += 1;
        expected.fetched_bytes += raw.len() as u64;
        let mut next = offset;
        for batch in ddc_formats::batch::batches(&raw) {
            next = next.max(batch.unwrap().header.next_offset());
        }
        if next >= hw || next == offset {
            break;
        }
        offset = next;
    }
    assert!(client.flush_usage_acks().unwrap().is_empty(), "the node refused an acknowledgment");
}

fn usage_of(s: &Setup, bucket: u64) -> UsageReport {
    let mut c = s.connect(&s.owner);
    let report = UsageReport::decode(&c.usage(Some(bucket)).unwrap()).unwrap();
    assert_eq!(report.node, s.node_key.account(), "signed by the node");
    report
}

fn assert_usage(report: &UsageReport, bucket: u64, expected: &Expected) {
    assert_eq!(report.bucket(bucket).copied().unwrap_or_default(), expected.usage, "bucket {bucket}");
}

#[test]
fn usage_is_exact_across_concurrency_sigkill_and_restart_with_acks_as_evidence() {
    let mut s = start(true);
    let reader = Keypair::generate();
    let read_grant = chain(&[grant(&s.owner, 1, &reader, Operations::READ, now_ms() + 3_600_000, false)]);

    // Four producers at once on two streams of bucket 1 (two cores), one on bucket 2.
    let mut expected = Expected::default();
    let mut expected2 = Expected::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    let mut c = s.connect(&s.owner);
                    let mut e = Expected::default();
                    produce_batches(&mut c, &format!("b1.s{}", t % 2), 40, t, &mut e);
                    e
                })
            })
            .collect();
        for h in handles {
            let e = h.join().unwrap();
            expected.usage = expected.usage.add(&e.usage).unwrap();
        }
    });
    produce_batches(&mut s.connect(&s.owner), "b2.other", 5, 0, &mut expected2);
    // A reader fetches everything, acknowledging as it goes.
    let mut r = s.connect(&reader);
    r.present_grants(&read_grant).unwrap();
    let mut reader_expected = Expected::default();
    fetch_all(&mut r, "b1.s0", &mut reader_expected);
    fetch_all(&mut r, "b1.s1", &mut reader_expected);
    expected.usage = expected.usage.add(&reader_expected.usage).unwrap();
    // Refused requests cost nothing.
    let stranger = Keypair::generate();
    assert!(s.connect(&stranger).fetch("b1.s0", 0, 4096, 0).is_err());

    let report = usage_of(&s, 1);
    assert_usage(&report, 1, &expected);
    let ack = report.acks.iter().find(|a| a.consumer == reader.account()).expect("the reader's acknowledgment is kept");
    assert_eq!((ack.bucket, ack.cumulative_bytes), (1, reader_expected.fetched_bytes));
    assert_eq!(ack.cumulative_gets, reader_expected.usage.number_of_gets);
    drop(r);

    // SIGKILL: nothing answered is lost, nothing is counted twice.
    s.node.kill();
    s.node.launch();
    let report = usage_of(&s, 1);
    assert_usage(&report, 1, &expected);
    assert!(report
        .acks
        .iter()
        .any(|a| a.consumer == reader.account() && a.cumulative_bytes == reader_expected.fetched_bytes));
    assert_usage(&usage_of(&s, 2), 2, &expected2);

    // The workload goes on after the restart and the totals keep adding up.
    produce_batches(&mut s.connect(&s.owner), "b1.s0", 10, 99, &mut expected);
    let mut r = s.connect(&reader);
    r.present_grants(&read_grant).unwrap();
    let mut again = Expected::default();
    fetch_all(&mut r, "b1.s0", &mut again);
    expected.usage = expected.usage.add(&again.usage).unwrap();
    s.node.kill();
    s.node.launch();
    let mut node_c = s.connect(&s.node_key);
    let all = UsageReport::decode(&node_c.usage(None).unwrap()).unwrap();
    assert_usage(&all, 1, &expected);
    assert_usage(&all, 2, &expected2);
    assert_eq!(all.node_usage.number_of_puts, expected.usage.number_of_puts + expected2.usage.number_of_puts);
    assert_eq!(all.acks.iter().filter(|a| a.consumer == reader.account()).count(), 2, "one per session");

    // `ddc usage` shows the same numbers, checked against the node's signature.
    let out = s.node.ddc_ok(&["--identity", key_file(&s, &s.owner).to_str().unwrap(), "usage", "1", "--json"], b"");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["buckets"]["1"]["number_of_puts"], expected.usage.number_of_puts);
    assert_eq!(json["buckets"]["1"]["transferred_bytes"], expected.usage.transferred_bytes);
}

fn key_file(s: &Setup, key: &Keypair) -> PathBuf {
    let path: &Path = s.node.dir();
    let path = path.join(format!("{}.key", key.account().to_hex()));
    if !path.exists() {
        key.write_new(&path).unwrap();
    }
    path
}

#[test]
fn an_acknowledgment_for_more_than_was_served_or_for_another_session_is_refused() {
    let s = start(false);
    let consumer = Keypair::generate();
    let mut c = s.connect(&consumer);
    let mut owner = s.connect(&s.owner);
    owner.produce("b1.t", &[b"abc"]).unwrap();
    let (raw, _) = c.fetch_raw("b1.t", 0, 4096, 0).unwrap();
    assert!(c.flush_usage_acks().unwrap().is_empty());
    let node = s.node_key.account();
    let mine = c.session_id().unwrap();
    // More than the node served on this connection: refused (the client's own acks were 1..=1).
    let inflated = ddc_auth::usage::ConsumerAck::sign(&consumer, 1, node, mine, 2, raw.len() as u64 + 1, 1);
    denied(c.call(&Request::UsageAck { ack: &inflated.encode() }), "the node served");
    // A replay of an earlier sequence number: refused.
    let replay = ddc_auth::usage::ConsumerAck::sign(&consumer, 1, node, mine, 1, raw.len() as u64, 1);
    denied(c.call(&Request::UsageAck { ack: &replay.encode() }), "not after");
    let session = [9u8; 16];
    let forged = ddc_auth::usage::ConsumerAck::sign(&consumer, 1, node, session, 10, raw.len() as u64, 1);
    denied(c.call(&Request::UsageAck { ack: &forged.encode() }), "another session");
    // Signed by someone else for this connection's account: refused.
    let other = Keypair::generate();
    let wrong = ddc_auth::usage::ConsumerAck::sign(&other, 1, node, session, 10, 1, 1);
    denied(c.call(&Request::UsageAck { ack: &wrong.encode() }), "signed for");
}
