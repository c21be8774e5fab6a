//! Authenticated connections against the real daemon (docs/SECURITY.md,
//! "Connection handshake"): with `auth.required` a node refuses clients that
//! do not authenticate, tags every frame of those that do, closes a
//! connection on an altered, injected or replayed frame, and in a cluster
//! accepts node-to-node requests only from members (nodes authenticate to
//! each other too).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ddc_auth::account::{Account, Keypair};
use ddc_auth::handshake::{ClientHandshake, Session, TAG_BYTES};
use ddc_formats::client::Client;
use ddc_formats::frame::{encode_frame_into, FrameHeader, FRAME_HEADER_BYTES};
use ddc_formats::message::{decode_response, encode_request_frame, Request, Response};
use flatbuffers::FlatBufferBuilder;

use common::Node;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A node with its own key; bucket 1 is owned by `owner`.
fn node_with_auth(dir: &std::path::Path, required: bool, owner: &Account) -> (Node, Keypair) {
    let key_path = dir.join("node.key");
    let key = Keypair::generate();
    key.write_new(&key_path).unwrap();
    let buckets = dir.join("buckets.toml");
    std::fs::write(&buckets, format!("[[bucket]]\nid = 1\nowner = \"{owner}\"\n")).unwrap();
    let config = format!("[auth]\nrequired = {required}\nnode_key_file = {key_path:?}\nbuckets_file = {buckets:?}\n");
    (Node::start_with_config(&config), key)
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    s.read_exact(&mut header)?;
    let parsed = FrameHeader::decode(&header, 64 << 20).map_err(std::io::Error::other)?;
    let mut payload = vec![0u8; parsed.payload_len as usize];
    s.read_exact(&mut payload)?;
    parsed.verify_payload(&header, &payload).map_err(std::io::Error::other)?;
    Ok(payload)
}

fn write_frame(s: &mut TcpStream, payload: &[u8]) {
    let mut frame = Vec::new();
    encode_frame_into(payload, &mut frame);
    s.write_all(&frame).unwrap();
}

/// A raw handshake over a plain socket; returns the socket and the session.
fn raw_session(addr: SocketAddr, me: &Keypair, node: &Account) -> (TcpStream, Session) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (pending, hello) = ClientHandshake::start();
    write_frame(&mut s, &hello);
    let node_hello = read_frame(&mut s).unwrap();
    let (auth, seen, session) = pending.finish(&node_hello, me, Some(node)).unwrap();
    assert_eq!(&seen, node);
    write_frame(&mut s, &auth);
    (s, session)
}

fn ping_payload(id: u64) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_request_frame(&mut FlatBufferBuilder::new(), id, &Request::Ping { nonce: id }, &mut frame);
    frame[FRAME_HEADER_BYTES..].to_vec()
}

fn tagged(session: &mut Session, message: &[u8]) -> Vec<u8> {
    let mut body = message.to_vec();
    body.extend_from_slice(&session.seal(message));
    body
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn a_node_that_requires_auth_refuses_strangers_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let me = Keypair::generate();
    let (node, key) = node_with_auth(dir.path(), true, &me.account());
    let node_account = key.account();

    // No handshake: refused with a clear error, connection closed.
    let mut plain = Client::connect(node.addr).unwrap();
    plain.set_read_timeout(Some(TIMEOUT)).unwrap();
    let err = plain.ping().unwrap_err();
    assert!(err.to_string().contains("requires authentication"), "{err}");

    // The client library: authenticate, then every call works and is tagged.
    let (mut client, seen) = Client::connect_authenticated(&node.addr, TIMEOUT, &me, Some(&node_account)).unwrap();
    assert_eq!(seen, node_account);
    client.produce("b1.secured", &[b"one", b"two"]).unwrap();
    let fetched = client.fetch("b1.secured", 0, 1 << 20, 0).unwrap();
    assert_eq!(fetched.records.len(), 2);
    // Expecting another node's account: refused before anything is sent.
    let other = Keypair::generate().account();
    assert!(Client::connect_authenticated(&node.addr, TIMEOUT, &me, Some(&other)).is_err());

    // Raw frames: a correctly tagged ping is answered with a tagged response.
    let (mut s, mut session) = raw_session(node.addr, &me, &node_account);
    let first = tagged(&mut session, &ping_payload(1));
    write_frame(&mut s, &first);
    let response = read_frame(&mut s).unwrap();
    let (message, tag) = response.split_at(response.len() - TAG_BYTES);
    session.open(message, tag.try_into().unwrap()).unwrap();
    assert!(matches!(decode_response(message).unwrap(), (1, Response::Ping { nonce: 1, .. })));
    // Replaying that frame: the connection is closed.
    write_frame(&mut s, &first);
    assert!(closed(&mut s), "a replayed frame was accepted");

    // An altered frame (one bit of the message) closes the connection.
    let (mut s, mut session) = raw_session(node.addr, &me, &node_account);
    let mut altered = tagged(&mut session, &ping_payload(2));
    altered[10] ^= 1;
    write_frame(&mut s, &altered);
    assert!(closed(&mut s), "an altered frame was accepted");

    // An injected, untagged frame after the handshake closes the connection.
    let (mut s, _session) = raw_session(node.addr, &me, &node_account);
    write_frame(&mut s, &ping_payload(3));
    assert!(closed(&mut s), "an untagged frame was accepted in a session");

    // The node still serves everyone else.
    let (mut again, _) = Client::connect_authenticated(&node.addr, TIMEOUT, &me, None).unwrap();
    again.ping().unwrap();
}

#[test]
fn auth_is_optional_unless_required() {
    let dir = tempfile::tempdir().unwrap();
    let (node, key) = node_with_auth(dir.path(), false, &Keypair::generate().account());
    let mut plain = Client::connect(node.addr).unwrap();
    plain.produce("open", &[b"x"]).unwrap();
    let me = Keypair::generate();
    let (mut client, seen) = Client::connect_authenticated(&node.addr, TIMEOUT, &me, None).unwrap();
    assert_eq!(seen, key.account());
    assert_eq!(client.fetch("open", 0, 4096, 0).unwrap().records.len(), 1);
}

#[test]
fn a_node_without_a_configured_key_creates_one_and_keeps_it() {
    let mut node = Node::start();
    let key_file = node.data_dir.join("node.key");
    let key = Keypair::read(&key_file).expect("the node created its key, mode 0600");
    let me = Keypair::generate();
    let (_, seen) = Client::connect_authenticated(&node.addr, TIMEOUT, &me, None).unwrap();
    assert_eq!(seen, key.account());
    node.kill();
    node.launch();
    let (_, again) = Client::connect_authenticated(&node.addr, TIMEOUT, &me, Some(&key.account())).unwrap();
    assert_eq!(again, key.account(), "the same identity across restarts");
}
