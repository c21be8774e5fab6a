//! The connection handshake (ddc-auth `handshake`): the three messages'
//! parsers, reached through the pure entry points each side calls with the
//! peer's bytes.
//!
//! - `NodeHandshake::answer(input, node)`: the input as a ClientHello;
//! - `ClientHandshake::finish(input, client, ..)`: the input as a NodeHello,
//!   with and without an expected node;
//! - `NodeHandshake::finish(input)`: the input as a ClientAuth, after a
//!   genuine ClientHello (for 100-byte inputs, with a genuine exchange);
//! - split: the first `CLIENT_HELLO_BYTES` as a ClientHello to `answer`, the
//!   rest as the ClientAuth to that handshake's `finish`.
//!
//! Keys are fixed (`fixed::NODE`, `fixed::READER` as the client); ephemeral
//! keys are random, as in the crate, so no fuzzed NodeHello or ClientAuth can
//! carry a valid signature: the target checks that they are refused cleanly.
//!
//! Invariants checked: nothing panics; a NodeHello `answer` writes has the
//! documented layout and names the node; a fuzzed NodeHello or ClientAuth is
//! never accepted; after them a genuine handshake still completes and the
//! two sessions agree; a session refuses a fuzzed frame tag.
#![no_main]

use ddc_auth::handshake::{
    ClientHandshake, NodeHandshake, Session, CLIENT_AUTH_BYTES, CLIENT_HELLO_BYTES, NODE_HELLO_BYTES, TAG_BYTES,
};
use ddc_fuzz::fixed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (node, client) = (&*fixed::NODE, &*fixed::READER);

    if let Ok((_, hello)) = NodeHandshake::answer(data, node) {
        assert_eq!(data.len(), CLIENT_HELLO_BYTES);
        assert_eq!(&hello[..4], b"DDH2");
        assert_eq!(hello[4..36], node.account().0);
        assert_eq!(hello.len(), NODE_HELLO_BYTES);
    }

    let (c, _) = ClientHandshake::start();
    assert!(c.finish(data, client, Some(&node.account())).is_err(), "a fuzzed node hello was accepted");
    // Key exchanges are slow under ASan: the paths below that cost several
    // run only for the one length that gets past the message's length check.
    if data.len() == NODE_HELLO_BYTES {
        let (c, _) = ClientHandshake::start();
        assert!(c.finish(data, client, None).is_err(), "a fuzzed node hello was accepted");
    }

    if data.len() == CLIENT_AUTH_BYTES {
        // The fuzzed ClientAuth to a genuine node handshake.
        let (_, client_hello) = ClientHandshake::start();
        let (n, _) = NodeHandshake::answer(&client_hello, node).expect("a genuine client hello is answered");
        assert!(n.finish(data).is_err(), "a fuzzed client auth was accepted");

        // A genuine exchange still completes, and its sessions refuse a fuzzed tag.
        let (c, client_hello) = ClientHandshake::start();
        let (n, node_hello) = NodeHandshake::answer(&client_hello, node).expect("a genuine client hello is answered");
        let (auth, node_seen, client_session) =
            c.finish(&node_hello, client, Some(&node.account())).expect("a genuine node hello is accepted");
        assert_eq!(node_seen, node.account());
        assert_eq!(auth.len(), CLIENT_AUTH_BYTES);
        check_sessions(n, &auth, client_session, data);
    }

    if data.len() >= CLIENT_HELLO_BYTES {
        let (hello, rest) = data.split_at(CLIENT_HELLO_BYTES);
        if let Ok((n, _)) = NodeHandshake::answer(hello, node) {
            assert!(n.finish(rest).is_err(), "a fuzzed client auth was accepted");
        }
    }
});

/// Complete the node side with the genuine `auth`, then check both sessions
/// agree on a frame and refuse the fuzzed tag (the input's first 16 bytes).
fn check_sessions(n: NodeHandshake, auth: &[u8], mut client: Session, data: &[u8]) {
    let (client_seen, mut node) = n.finish(auth).expect("a genuine client auth is accepted");
    assert_eq!(client_seen, fixed::READER.account());
    assert_eq!(client.id(), node.id());
    let tag = client.seal(data);
    node.open(data, &tag).expect("a genuine frame tag is accepted");
    if let Some(fuzzed) = data.first_chunk::<TAG_BYTES>() {
        let genuine = client.seal(data);
        if *fuzzed != genuine {
            assert!(node.open(data, fuzzed).is_err(), "a fuzzed frame tag was accepted");
        }
    }
}
