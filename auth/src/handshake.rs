//! The connection handshake and the session that binds every later frame to
//! it. Pure state machines: the caller moves the bytes.
//!
//! **Status:** built and tested here; not yet run by the node or the clients
//! (docs/SECURITY.md says what is enforced today).
//!
//! Three messages, in the SIGMA style (ephemeral Diffie-Hellman, each side
//! signs the transcript with its long-term ed25519 key):
//!
//! ```text
//! client -> node   ClientHello  "DDH1" | client ephemeral X25519 public key (32)
//! node -> client   NodeHello    "DDH2" | node account (32) | node ephemeral (32) | node signature (64)
//! client -> node   ClientAuth   "DDH3" | client account (32) | client signature (64)
//! ```
//!
//! With `th1 = BLAKE3("ddc handshake v1" | ClientHello | node account | node ephemeral)`
//! the node signs `"ddc node auth v1" | th1`; with
//! `th2 = BLAKE3(th1 | client account)` the client signs `"ddc client auth v1" | th2`.
//! Both sides then derive, from the X25519 shared secret and `th2`, one key per
//! direction (`blake3::derive_key` with contexts "ddc session v1 client to node"
//! and "ddc session v1 node to client").
//!
//! After the handshake every frame carries a 16-byte tag: the first 16 bytes
//! of `BLAKE3-keyed(direction key, sequence number (u64 LE) | payload)`. Each
//! side counts the frames it sends and receives, so an injected, altered,
//! replayed, reordered or dropped frame fails its tag.
//!
//! What this gives: the node knows the client holds the private key of the
//! account it names, and the client knows the same of the node; a man in the
//! middle who holds neither key can read the handshake but cannot complete it
//! with either side, and cannot touch a later frame. Signatures are checked
//! once per connection. What it does not give: confidentiality of the
//! frames (they are authenticated, not encrypted; record payloads can be
//! encrypted by the client, see `crate::encryption`), and forward secrecy
//! of nothing beyond what the ephemeral keys give.

use x25519_dalek::{EphemeralSecret, PublicKey};

use crate::account::{Account, Keypair};

pub const CLIENT_HELLO_BYTES: usize = 4 + 32;
pub const NODE_HELLO_BYTES: usize = 4 + 32 + 32 + 64;
pub const CLIENT_AUTH_BYTES: usize = 4 + 32 + 64;
pub const TAG_BYTES: usize = 16;

/// Bytes of a session id ([`Session::id`]).
pub const SESSION_ID_BYTES: usize = 16;

const CLIENT_HELLO_MAGIC: [u8; 4] = *b"DDH1";
const NODE_HELLO_MAGIC: [u8; 4] = *b"DDH2";
const CLIENT_AUTH_MAGIC: [u8; 4] = *b"DDH3";

/// Why a handshake or a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("{what}: expected {expected} bytes starting with {magic}, got {got} bytes")]
    Malformed { what: &'static str, expected: usize, magic: &'static str, got: usize },
    #[error("the node's signature over the handshake is not valid")]
    BadNodeSignature,
    #[error("the client's signature over the handshake is not valid")]
    BadClientSignature,
    #[error("the node is {found}, expected {expected}")]
    UnexpectedNode { found: String, expected: String },
    #[error("the key exchange produced no shared secret (a low-order public key)")]
    WeakKey,
    #[error("frame {sequence}: its tag does not match (altered, injected, replayed or out of order)")]
    BadTag { sequence: u64 },
}

fn check_len(what: &'static str, magic: &'static str, bytes: &[u8], expected: usize) -> Result<(), HandshakeError> {
    if bytes.len() != expected || bytes[..4] != *magic.as_bytes() {
        return Err(HandshakeError::Malformed { what, expected, magic, got: bytes.len() });
    }
    Ok(())
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn transcript1(client_hello: &[u8], node: &Account, node_eph: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"ddc handshake v1");
    h.update(client_hello);
    h.update(&node.0);
    h.update(node_eph);
    *h.finalize().as_bytes()
}

fn transcript2(th1: &[u8; 32], client: &Account) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(th1);
    h.update(&client.0);
    *h.finalize().as_bytes()
}

fn signed(label: &[u8], th: &[u8; 32]) -> Vec<u8> {
    let mut m = label.to_vec();
    m.extend_from_slice(th);
    m
}

/// The client's side, between sending ClientHello and receiving NodeHello.
pub struct ClientHandshake {
    eph: EphemeralSecret,
    hello: [u8; CLIENT_HELLO_BYTES],
}

impl ClientHandshake {
    /// Start a handshake: returns the state and the ClientHello to send.
    pub fn start() -> (ClientHandshake, [u8; CLIENT_HELLO_BYTES]) {
        let eph = EphemeralSecret::random_from_rng(rand::rngs::OsRng);
        let mut hello = [0u8; CLIENT_HELLO_BYTES];
        hello[..4].copy_from_slice(&CLIENT_HELLO_MAGIC);
        hello[4..].copy_from_slice(PublicKey::from(&eph).as_bytes());
        (ClientHandshake { eph, hello }, hello)
    }

    /// Check the node's hello (and, if given, that it is the expected node);
    /// returns the ClientAuth to send, the node's account and the session.
    pub fn finish(
        self,
        node_hello: &[u8],
        me: &Keypair,
        expected_node: Option<&Account>,
    ) -> Result<([u8; CLIENT_AUTH_BYTES], Account, Session), HandshakeError> {
        check_len("node hello", "DDH2", node_hello, NODE_HELLO_BYTES)?;
        let node = Account(array(&node_hello[4..36]));
        let node_eph: [u8; 32] = array(&node_hello[36..68]);
        let sig: [u8; 64] = array(&node_hello[68..132]);
        if let Some(expected) = expected_node {
            if *expected != node {
                return Err(HandshakeError::UnexpectedNode { found: node.to_ss58(), expected: expected.to_ss58() });
            }
        }
        let th1 = transcript1(&self.hello, &node, &node_eph);
        if !node.verify(&signed(b"ddc node auth v1", &th1), &sig) {
            return Err(HandshakeError::BadNodeSignature);
        }
        let client = me.account();
        let th2 = transcript2(&th1, &client);
        let mut auth = [0u8; CLIENT_AUTH_BYTES];
        auth[..4].copy_from_slice(&CLIENT_AUTH_MAGIC);
        auth[4..36].copy_from_slice(&client.0);
        auth[36..].copy_from_slice(&me.sign(&signed(b"ddc client auth v1", &th2)));
        let shared = self.eph.diffie_hellman(&PublicKey::from(node_eph));
        if !shared.was_contributory() {
            return Err(HandshakeError::WeakKey);
        }
        Ok((auth, node, Session::new(shared.as_bytes(), &th2, Side::Client)))
    }
}

/// The node's side, between sending NodeHello and receiving ClientAuth.
pub struct NodeHandshake {
    shared: [u8; 32],
    th1: [u8; 32],
}

impl NodeHandshake {
    /// Answer a ClientHello: returns the state and the NodeHello to send.
    pub fn answer(
        client_hello: &[u8],
        node: &Keypair,
    ) -> Result<(NodeHandshake, [u8; NODE_HELLO_BYTES]), HandshakeError> {
        check_len("client hello", "DDH1", client_hello, CLIENT_HELLO_BYTES)?;
        let client_eph: [u8; 32] = array(&client_hello[4..36]);
        let eph = EphemeralSecret::random_from_rng(rand::rngs::OsRng);
        let eph_pub = PublicKey::from(&eph);
        let account = node.account();
        let th1 = transcript1(client_hello, &account, eph_pub.as_bytes());
        let shared = eph.diffie_hellman(&PublicKey::from(client_eph));
        if !shared.was_contributory() {
            return Err(HandshakeError::WeakKey);
        }
        let mut hello = [0u8; NODE_HELLO_BYTES];
        hello[..4].copy_from_slice(&NODE_HELLO_MAGIC);
        hello[4..36].copy_from_slice(&account.0);
        hello[36..68].copy_from_slice(eph_pub.as_bytes());
        hello[68..].copy_from_slice(&node.sign(&signed(b"ddc node auth v1", &th1)));
        Ok((NodeHandshake { shared: *shared.as_bytes(), th1 }, hello))
    }

    /// Check the client's proof of its key: returns its account and the session.
    pub fn finish(self, client_auth: &[u8]) -> Result<(Account, Session), HandshakeError> {
        check_len("client auth", "DDH3", client_auth, CLIENT_AUTH_BYTES)?;
        let client = Account(array(&client_auth[4..36]));
        let sig: [u8; 64] = array(&client_auth[36..100]);
        let th2 = transcript2(&self.th1, &client);
        if !client.verify(&signed(b"ddc client auth v1", &th2), &sig) {
            return Err(HandshakeError::BadClientSignature);
        }
        Ok((client, Session::new(&self.shared, &th2, Side::Node)))
    }
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Node,
}

/// Keys and frame counters of an authenticated connection.
pub struct Session {
    send_key: [u8; 32],
    recv_key: [u8; 32],
    sent: u64,
    received: u64,
    id: [u8; SESSION_ID_BYTES],
}

impl Session {
    fn new(shared: &[u8; 32], th2: &[u8; 32], side: Side) -> Session {
        let mut material = shared.to_vec();
        material.extend_from_slice(th2);
        let c2n = blake3::derive_key("ddc session v1 client to node", &material);
        let n2c = blake3::derive_key("ddc session v1 node to client", &material);
        let (send_key, recv_key) = match side {
            Side::Client => (c2n, n2c),
            Side::Node => (n2c, c2n),
        };
        let mut id = [0u8; SESSION_ID_BYTES];
        id.copy_from_slice(&blake3::derive_key("ddc session v1 id", &material)[..SESSION_ID_BYTES]);
        Session { send_key, recv_key, sent: 0, received: 0, id }
    }

    /// Names this session to both sides (derived from the handshake, so a
    /// third party cannot choose it): consumers' usage acknowledgments carry
    /// it as their session nonce.
    pub fn id(&self) -> [u8; SESSION_ID_BYTES] {
        self.id
    }

    fn tag(key: &[u8; 32], sequence: u64, payload: &[u8]) -> [u8; TAG_BYTES] {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(&sequence.to_le_bytes());
        h.update(payload);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&h.finalize().as_bytes()[..TAG_BYTES]);
        tag
    }

    /// Frames received and checked so far (the next one's sequence number).
    pub fn frames_received(&self) -> u64 {
        self.received
    }

    /// The tag for the next frame this side sends.
    pub fn seal(&mut self, payload: &[u8]) -> [u8; TAG_BYTES] {
        let tag = Session::tag(&self.send_key, self.sent, payload);
        self.sent += 1;
        tag
    }

    /// Check the next received frame's tag (constant-time compare).
    pub fn open(&mut self, payload: &[u8], tag: &[u8; TAG_BYTES]) -> Result<(), HandshakeError> {
        let expected = Session::tag(&self.recv_key, self.received, payload);
        let diff = expected.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(HandshakeError::BadTag { sequence: self.received });
        }
        self.received += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(client: &Keypair, node: &Keypair) -> (Session, Session, Account, Account) {
        let (c, hello) = ClientHandshake::start();
        let (n, node_hello) = NodeHandshake::answer(&hello, node).unwrap();
        let (auth, node_seen, client_session) = c.finish(&node_hello, client, Some(&node.account())).unwrap();
        let (client_seen, node_session) = n.finish(&auth).unwrap();
        (client_session, node_session, client_seen, node_seen)
    }

    #[test]
    fn both_sides_learn_each_other_and_frames_flow_both_ways() {
        let (client, node) = (Keypair::generate(), Keypair::generate());
        let (mut cs, mut ns, client_seen, node_seen) = handshake(&client, &node);
        assert_eq!(client_seen, client.account());
        assert_eq!(node_seen, node.account());
        assert_eq!(cs.id(), ns.id(), "both sides name the session alike");
        let (other, _, _, _) = handshake(&client, &node);
        assert_ne!(cs.id(), other.id(), "every handshake gives a new session id");
        for i in 0..5u8 {
            let tag = cs.seal(&[i; 10]);
            ns.open(&[i; 10], &tag).unwrap();
            let tag = ns.seal(&[i; 3]);
            cs.open(&[i; 3], &tag).unwrap();
        }
    }

    #[test]
    fn altered_injected_replayed_and_reordered_frames_fail() {
        let (client, node) = (Keypair::generate(), Keypair::generate());
        let (mut cs, mut ns, _, _) = handshake(&client, &node);
        let t0 = cs.seal(b"produce 1");
        let t1 = cs.seal(b"produce 2");
        // Altered payload.
        assert!(ns.open(b"produce X", &t0).is_err());
        // Out of order.
        assert!(ns.open(b"produce 2", &t1).is_err());
        ns.open(b"produce 1", &t0).unwrap();
        // Replayed.
        assert!(ns.open(b"produce 1", &t0).is_err());
        ns.open(b"produce 2", &t1).unwrap();
        // Injected with a made-up tag, or a tag of the other direction.
        assert!(ns.open(b"evil", &[0; 16]).is_err());
        let reflected = ns.seal(b"response");
        assert!(ns.open(b"response", &reflected).is_err());
    }

    #[test]
    fn a_man_in_the_middle_cannot_complete_either_side() {
        let (client, node, mallory) = (Keypair::generate(), Keypair::generate(), Keypair::generate());
        // Mallory answers the client as herself: the client expecting the node refuses.
        let (c, hello) = ClientHandshake::start();
        let (_m, fake) = NodeHandshake::answer(&hello, &mallory).unwrap();
        assert!(matches!(c.finish(&fake, &client, Some(&node.account())), Err(HandshakeError::UnexpectedNode { .. })));
        // Mallory relays the node's hello but swaps in her own ephemeral key: the signature breaks.
        let (c, hello) = ClientHandshake::start();
        let (_n, mut relayed) = NodeHandshake::answer(&hello, &node).unwrap();
        relayed[40] ^= 1;
        assert_eq!(c.finish(&relayed, &client, None).err(), Some(HandshakeError::BadNodeSignature));
        // Mallory replays an old ClientAuth of the client to a new node handshake: refused.
        let (c1, hello1) = ClientHandshake::start();
        let (n1, nh1) = NodeHandshake::answer(&hello1, &node).unwrap();
        let (old_auth, _, _) = c1.finish(&nh1, &client, None).unwrap();
        n1.finish(&old_auth).unwrap();
        let (_c2, hello2) = ClientHandshake::start();
        let (n2, _) = NodeHandshake::answer(&hello2, &node).unwrap();
        assert_eq!(n2.finish(&old_auth).err(), Some(HandshakeError::BadClientSignature));
        // Claiming another account without its key: refused.
        let (c3, hello3) = ClientHandshake::start();
        let (n3, nh3) = NodeHandshake::answer(&hello3, &node).unwrap();
        let (mut auth, _, _) = c3.finish(&nh3, &mallory, None).unwrap();
        auth[4..36].copy_from_slice(&client.account().0);
        assert_eq!(n3.finish(&auth).err(), Some(HandshakeError::BadClientSignature));
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        let node = Keypair::generate();
        for len in [0, 3, 4, 35, 36, 37, 100, 132, 200] {
            let junk = vec![0x41u8; len];
            let _ = NodeHandshake::answer(&junk, &node);
            let (c, _) = ClientHandshake::start();
            let _ = c.finish(&junk, &node, None);
        }
        // A low-order (all-zero) ephemeral key gives no shared secret.
        let mut zero = [0u8; CLIENT_HELLO_BYTES];
        zero[..4].copy_from_slice(b"DDH1");
        assert_eq!(NodeHandshake::answer(&zero, &node).err(), Some(HandshakeError::WeakKey));
    }
}
