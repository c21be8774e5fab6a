//! A blocking reference client for the wire protocol (plain `std::net`).
//!
//! One [`Client`] is one TCP connection. The simple calls ([`Client::produce`],
//! [`Client::fetch`], ...) send one request and wait for its response.
//! Pipelining is explicit: [`Client::send`] returns the request id at once and
//! [`Client::recv`] returns the next response, whichever request it answers.
//!
//! [`Client::connect_authenticated`] first runs the handshake of
//! `ddc_auth::handshake` (ClientHello, NodeHello, ClientAuth, each the whole
//! payload of one frame). From then on every frame, both ways, carries
//! `message | 16-byte session tag` as its payload, and a frame whose tag does
//! not verify closes the connection. Without an identity nothing changes:
//! the frames are byte for byte those of an unauthenticated client.
//!
//! An authenticated client also acknowledges what it receives, as Cere's
//! activity capture does: after every fetch answer it sends a
//! [`UsageAck`](Request::UsageAck), a `ddc_auth::usage::ConsumerAck` signed
//! with its key that counts the bytes (the answer's `batches`) and fetch
//! answers received so far in this session for the stream's bucket. The
//! acknowledgment is not waited for: its answer is consumed by the next
//! [`Client::recv`], and a refusal is kept for [`Client::flush_usage_acks`].

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use ddc_auth::account::{Account, Keypair};
use ddc_auth::handshake::{ClientHandshake, HandshakeError, Session, NODE_HELLO_BYTES, SESSION_ID_BYTES};
use ddc_auth::usage::ConsumerAck;
use flatbuffers::FlatBufferBuilder;

use crate::batch::{batches, encode_records};
use crate::frame::{encode_frame_into, FrameHeader, FRAME_HEADER_BYTES};
use crate::message::{decode_response, encode_request_frame_envelope, Request, Response, StreamInfo};
use crate::wire::{AckLevel, ErrorCode};
use crate::FormatError;

/// Largest response frame the client accepts.
pub const RESPONSE_BYTES_MAX: u32 = (64 << 20) + (1 << 20);

/// Largest frame the client accepts while the handshake runs: a NodeHello
/// or a short refusal.
const HANDSHAKE_FRAME_BYTES_MAX: u32 = 64 << 10;

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("bad response from server: {0}")]
    Format(#[from] FormatError),
    #[error("server refused the request ({code:?}): {message}")]
    Server { code: ErrorCode, message: String },
    #[error("unexpected response: {0}")]
    Unexpected(String),
    // No `#[from]`: that would also make the handshake error the source,
    // and error chains would print it twice.
    #[error("handshake: {0}")]
    Handshake(HandshakeError),
    /// A frame of an authenticated connection was altered, injected,
    /// replayed or reordered; the client closed the connection.
    #[error(
        "frame {sequence} failed its session tag (altered, injected, replayed or out of order); connection closed"
    )]
    BadTag { sequence: u64 },
}

impl From<HandshakeError> for ClientError {
    fn from(e: HandshakeError) -> ClientError {
        ClientError::Handshake(e)
    }
}

impl ClientError {
    /// The server's error code, if the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Records fetched from a stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fetched {
    /// `(offset, record)` for each record at or after the requested offset.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Offset to ask for next.
    pub next_offset: u64,
    pub high_watermark: u64,
}

/// One connection to a shard server.
pub struct Client {
    stream: TcpStream,
    fbb: FlatBufferBuilder<'static>,
    out: Vec<u8>,
    next_request_id: u64,
    frame_bytes_max: u32,
    /// Present once the handshake is done: every frame is tagged.
    session: Option<Session>,
    /// Present once the handshake is done: fetch answers are acknowledged.
    acks: Option<UsageAcks>,
}

/// The consumer side of usage acknowledgments on one authenticated connection.
struct UsageAcks {
    me: Keypair,
    node: Account,
    session: [u8; SESSION_ID_BYTES],
    /// Sequence number of the last acknowledgment sent.
    seq: u64,
    /// Per bucket: bytes and fetch answers received in this session.
    received: HashMap<u64, (u64, u64)>,
    /// Request ids of acknowledgments whose answer has not been read.
    pending: HashSet<u64>,
    /// Why the node refused acknowledgments, if it did.
    refused: Vec<String>,
}

impl Client {
    pub fn connect<A: ToSocketAddrs>(addr: A) -> Result<Client, ClientError> {
        Client::from_stream(TcpStream::connect(addr)?)
    }

    /// Connect, giving up after `timeout` (an unreachable address otherwise
    /// blocks for the kernel's SYN retries, minutes).
    pub fn connect_timeout(addr: &std::net::SocketAddr, timeout: Duration) -> Result<Client, ClientError> {
        Client::from_stream(TcpStream::connect_timeout(addr, timeout)?)
    }

    /// A client over an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Result<Client, ClientError> {
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            fbb: FlatBufferBuilder::with_capacity(64 * 1024),
            out: Vec::with_capacity(64 * 1024),
            next_request_id: 1,
            // A fetch response holds at least one whole batch, which may be as
            // large as the server's largest request frame (up to 64 MiB).
            frame_bytes_max: RESPONSE_BYTES_MAX,
            session: None,
            acks: None,
        })
    }

    /// Connect and run the handshake as `me`; returns the client and the
    /// node's account. With `expected_node`, any other node is refused.
    /// `timeout` bounds the connect and each handshake read.
    pub fn connect_authenticated(
        addr: &SocketAddr,
        timeout: Duration,
        me: &Keypair,
        expected_node: Option<&Account>,
    ) -> Result<(Client, Account), ClientError> {
        let mut client = Client::connect_timeout(addr, timeout)?;
        client.stream.set_read_timeout(Some(timeout))?;
        let node = client.handshake(me, expected_node)?;
        client.stream.set_read_timeout(None)?;
        Ok((client, node))
    }

    /// The session id of an authenticated connection (what usage acknowledgments name).
    pub fn session_id(&self) -> Option<[u8; SESSION_ID_BYTES]> {
        self.acks.as_ref().map(|a| a.session)
    }

    /// Whether frames on this connection carry session tags.
    pub fn is_authenticated(&self) -> bool {
        self.session.is_some()
    }

    fn handshake(&mut self, me: &Keypair, expected_node: Option<&Account>) -> Result<Account, ClientError> {
        assert!(self.session.is_none() && self.next_request_id == 1, "the handshake opens a fresh connection");
        let (state, hello) = ClientHandshake::start();
        self.write_frame(&hello)?;
        let node_hello = self.read_frame(HANDSHAKE_FRAME_BYTES_MAX)?;
        if !(node_hello.len() == NODE_HELLO_BYTES && node_hello.starts_with(b"DDH2")) {
            // A node that will not run the handshake says why in an ordinary response.
            match decode_response(&node_hello) {
                Ok((_, Response::Error { code, message })) => return Err(ClientError::Server { code, message }),
                Ok((_, other)) => return Err(ClientError::Unexpected(format!("{other:?} instead of a NodeHello"))),
                // Not a response either: `finish` names what was wrong with it.
                Err(_) => {}
            }
        }
        let (auth, node, session) = state.finish(&node_hello, me, expected_node)?;
        self.write_frame(&auth)?;
        // The node answers nothing; a refusal of the ClientAuth arrives as the first frame `recv` reads.
        self.acks = Some(UsageAcks {
            me: me.clone(),
            node,
            session: session.id(),
            seq: 0,
            received: HashMap::new(),
            pending: HashSet::new(),
            refused: Vec::new(),
        });
        self.session = Some(session);
        Ok(node)
    }

    fn write_frame(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.out.clear();
        encode_frame_into(payload, &mut self.out);
        Ok(self.stream.write_all(&self.out)?)
    }

    /// Read one frame and check its header and CRC; returns the payload.
    fn read_frame(&mut self, payload_bytes_max: u32) -> Result<Vec<u8>, ClientError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.stream.read_exact(&mut header)?;
        let parsed = FrameHeader::decode(&header, payload_bytes_max)?;
        let mut payload = vec![0u8; parsed.payload_len as usize];
        self.stream.read_exact(&mut payload)?;
        parsed.verify_payload(&header, &payload)?;
        Ok(payload)
    }

    /// Check and strip the session tag at the end of `payload`. A frame that
    /// fails closes the connection: the two sides' counters no longer agree.
    fn open_tagged(&mut self, payload: &mut Vec<u8>) -> Result<(), ClientError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        let sequence = session.frames_received();
        match crate::session::open_payload(session, payload) {
            Ok(()) => Ok(()),
            Err(e) => {
                // A node that refuses the ClientAuth answers with an untagged
                // error (request id 0) in place of the first tagged frame.
                let refusal = match (sequence, decode_response(payload)) {
                    (0, Ok((0, Response::Error { code, message }))) => Some(ClientError::Server { code, message }),
                    _ => None,
                };
                let _ = self.stream.shutdown(Shutdown::Both);
                Err(refusal.unwrap_or(match e {
                    HandshakeError::BadTag { sequence } => ClientError::BadTag { sequence },
                    other => ClientError::Handshake(other),
                }))
            }
        }
    }

    /// Bound how long a blocking read may wait (None: forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        Ok(self.stream.set_read_timeout(timeout)?)
    }

    /// Send a request without waiting; returns its request id.
    pub fn send(&mut self, request: &Request<'_>) -> Result<u64, ClientError> {
        self.send_envelope(request, false)
    }

    /// [`Client::send`] with the envelope's `forwarded` flag, which nodes set
    /// when they pass a client's request on. A node that requires
    /// authentication refuses it from anyone but a cluster member.
    pub fn send_envelope(&mut self, request: &Request<'_>, forwarded: bool) -> Result<u64, ClientError> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.out.clear();
        encode_request_frame_envelope(&mut self.fbb, id, forwarded, request, &mut self.out);
        if let Some(session) = self.session.as_mut() {
            crate::session::seal_frame(session, &mut self.out, 0);
        }
        self.stream.write_all(&self.out)?;
        Ok(id)
    }

    /// Write bytes as they are (for tests that send hostile input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        Ok(self.stream.write_all(bytes)?)
    }

    /// Receive the next response, whichever request it answers. Answers to
    /// usage acknowledgments the client sent on its own are consumed here.
    pub fn recv(&mut self) -> Result<(u64, Response), ClientError> {
        loop {
            let (id, response) = self.recv_one()?;
            if let Some(acks) = self.acks.as_mut() {
                if acks.pending.remove(&id) {
                    if let Response::Error { message, .. } = response {
                        acks.refused.push(message);
                    }
                    continue;
                }
            }
            return Ok((id, response));
        }
    }

    /// Sign and send (without waiting) the acknowledgment of a fetch answer
    /// of `bytes` batch bytes from `stream`.
    fn acknowledge_fetch(&mut self, stream: &str, bytes: u64) -> Result<(), ClientError> {
        let Some(acks) = self.acks.as_mut() else { return Ok(()) };
        let bucket = crate::name::bucket_of(stream).unwrap_or(0);
        let received = acks.received.entry(bucket).or_default();
        received.0 += bytes;
        received.1 += 1;
        acks.seq += 1;
        let ack = ConsumerAck::sign(&acks.me, bucket, acks.node, acks.session, acks.seq, received.0, received.1);
        let encoded = ack.encode();
        let id = self.send(&Request::UsageAck { ack: &encoded })?;
        if let Some(acks) = self.acks.as_mut() {
            acks.pending.insert(id);
        }
        Ok(())
    }

    /// Wait for the answers to every usage acknowledgment sent so far and
    /// return the node's reasons for those it refused (empty: all kept).
    pub fn flush_usage_acks(&mut self) -> Result<Vec<String>, ClientError> {
        while self.acks.as_ref().is_some_and(|a| !a.pending.is_empty()) {
            let (id, response) = self.recv_one()?;
            if let Some(acks) = self.acks.as_mut() {
                if acks.pending.remove(&id) {
                    if let Response::Error { message, .. } = response {
                        acks.refused.push(message);
                    }
                } else {
                    return Err(ClientError::Unexpected(format!("answer to request {id} while waiting for acks")));
                }
            }
        }
        Ok(self.acks.as_mut().map(|a| std::mem::take(&mut a.refused)).unwrap_or_default())
    }

    fn recv_one(&mut self) -> Result<(u64, Response), ClientError> {
        let mut payload = self.read_frame(self.frame_bytes_max)?;
        if self.session.is_some() {
            self.open_tagged(&mut payload)?;
        }
        Ok(decode_response(&payload)?)
    }

    /// Send one request and wait for its response; a server error becomes `Err`.
    pub fn call(&mut self, request: &Request<'_>) -> Result<Response, ClientError> {
        let id = self.send(request)?;
        let (got, response) = self.recv()?;
        if got != id && got != 0 {
            return Err(ClientError::Unexpected(format!("response for request {got}, expected {id}")));
        }
        match response {
            Response::Error { code, message } => Err(ClientError::Server { code, message }),
            other => Ok(other),
        }
    }

    /// Append records to a stream with durable acknowledgment; returns the first record's offset.
    pub fn produce(&mut self, stream: &str, records: &[&[u8]]) -> Result<u64, ClientError> {
        let body = encode_records(records.iter().copied());
        let count = u32::try_from(records.len()).map_err(|_| ClientError::Unexpected("too many records".into()))?;
        self.produce_body(stream, &body, count, AckLevel::Durable)
    }

    /// Append an encoded batch body (see [`crate::batch::encode_records`]).
    pub fn produce_body(
        &mut self,
        stream: &str,
        body: &[u8],
        record_count: u32,
        ack: AckLevel,
    ) -> Result<u64, ClientError> {
        match self.call(&Request::Produce { stream, records: body, record_count, ack })? {
            Response::Produce { base_offset, .. } => Ok(base_offset),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Fetch raw batches starting with the one that holds `offset`.
    pub fn fetch_raw(
        &mut self,
        stream: &str,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<(Vec<u8>, u64), ClientError> {
        match self.call(&Request::Fetch { stream, offset, max_bytes, max_wait_ms })? {
            Response::Fetch { batches, high_watermark, .. } => {
                self.acknowledge_fetch(stream, batches.len() as u64)?;
                Ok((batches, high_watermark))
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Fetch records at or after `offset`, verifying every batch checksum.
    pub fn fetch(
        &mut self,
        stream: &str,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<Fetched, ClientError> {
        let (raw, high_watermark) = self.fetch_raw(stream, offset, max_bytes, max_wait_ms)?;
        let mut fetched = Fetched { records: Vec::new(), next_offset: offset, high_watermark };
        for batch in batches(&raw) {
            let batch = batch?;
            for (o, record) in batch.records() {
                if o >= offset {
                    fetched.records.push((o, record.to_vec()));
                }
            }
            fetched.next_offset = fetched.next_offset.max(batch.header.next_offset());
        }
        Ok(fetched)
    }

    pub fn create_stream(&mut self, stream: &str) -> Result<bool, ClientError> {
        match self.call(&Request::CreateStream { stream })? {
            Response::CreateStream { created } => Ok(created),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub fn list_streams(&mut self) -> Result<Vec<String>, ClientError> {
        match self.call(&Request::ListStreams)? {
            Response::ListStreams { streams } => Ok(streams),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub fn stream_info(&mut self, stream: &str) -> Result<StreamInfo, ClientError> {
        match self.call(&Request::StreamInfo { stream })? {
            Response::StreamInfo(info) => Ok(info),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Present a grant chain (`ddc_auth::grant::GrantChain` encoding) for the
    /// rest of the connection; returns the bucket, the operation bits the
    /// chain gives this client and when it expires (Unix ms).
    pub fn present_grants(&mut self, chain: &[u8]) -> Result<(u64, u16, u64), ClientError> {
        match self.call(&Request::PresentGrants { chain })? {
            Response::PresentGrants { bucket, operations, expires_ms } => Ok((bucket, operations, expires_ms)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The node's signed usage report (`ddc_auth::usage::UsageReport`
    /// encoding) for one bucket, or every bucket with `None`.
    pub fn usage(&mut self, bucket: Option<u64>) -> Result<Vec<u8>, ClientError> {
        match self.call(&Request::Usage { bucket })? {
            Response::Usage { report } => Ok(report),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// An anchor proof (`ddc_anchor::era::AnchorProof` encoding): of the
    /// segment holding `offset` of `stream`, or with `stream` None of
    /// `bucket`'s latest anchored usage.
    pub fn proof(&mut self, stream: Option<&str>, offset: u64, bucket: u64) -> Result<Vec<u8>, ClientError> {
        match self.call(&Request::Proof { stream, offset, bucket })? {
            Response::Proof { proof } => Ok(proof),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Round trip; returns the server's version string.
    pub fn ping(&mut self) -> Result<String, ClientError> {
        match self.call(&Request::Ping { nonce: 1 })? {
            Response::Ping { server_version, .. } => Ok(server_version),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use ddc_auth::handshake::{NodeHandshake, TAG_BYTES};

    use super::*;
    use crate::frame::decode_frame;
    use crate::message::encode_request_frame;
    use crate::message::{decode_request, encode_response_frame};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        stream.read_exact(&mut header).unwrap();
        let parsed = FrameHeader::decode(&header, RESPONSE_BYTES_MAX).unwrap();
        let mut payload = vec![0u8; parsed.payload_len as usize];
        stream.read_exact(&mut payload).unwrap();
        parsed.verify_payload(&header, &payload).unwrap();
        payload
    }

    fn write_frame(stream: &mut TcpStream, payload: &[u8]) {
        let mut out = Vec::new();
        encode_frame_into(payload, &mut out);
        stream.write_all(&out).unwrap();
    }

    /// The bytes of an untagged response message (no frame header).
    fn response_message(request_id: u64, response: &Response) -> Vec<u8> {
        let mut out = Vec::new();
        encode_response_frame(&mut FlatBufferBuilder::new(), request_id, response, &mut out);
        out.split_off(FRAME_HEADER_BYTES)
    }

    fn refusal(message: &str) -> Vec<u8> {
        response_message(0, &Response::Error { code: ErrorCode::BadRequest, message: message.into() })
    }

    /// How the fake node behaves after the ClientHello.
    #[derive(Clone, Copy)]
    enum Node {
        /// Answers `pings` tagged pings; with `tamper`, flips a bit of the first response's tag.
        Serve { pings: usize, tamper: bool },
        /// Has no identity: refuses the ClientHello with an untagged error.
        NoIdentity,
        /// Refuses the ClientAuth with an untagged error and closes.
        RefuseAuth,
        /// Sends its NodeHello and closes.
        HelloOnly,
    }

    /// A node on a local port playing the server side of the wire convention.
    fn fake_node(node: Keypair, client: Account, behaviour: Node) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let hello = read_frame(&mut stream);
            if let Node::NoIdentity = behaviour {
                write_frame(&mut stream, &refusal("this node has no identity"));
                return;
            }
            let (state, node_hello) = NodeHandshake::answer(&hello, &node).unwrap();
            write_frame(&mut stream, &node_hello);
            if let Node::HelloOnly = behaviour {
                return;
            }
            let (seen, mut session) = state.finish(&read_frame(&mut stream)).unwrap();
            assert_eq!(seen, client);
            let Node::Serve { pings, tamper } = behaviour else {
                write_frame(&mut stream, &refusal("account not allowed"));
                return;
            };
            for i in 0..pings {
                let mut payload = read_frame(&mut stream);
                let tag: [u8; TAG_BYTES] = payload.split_off(payload.len() - TAG_BYTES).try_into().unwrap();
                session.open(&payload, &tag).unwrap();
                let (id, request) = decode_request(&payload).unwrap();
                let Request::Ping { nonce } = request else { panic!("expected a ping, got {request:?}") };
                let mut message = response_message(id, &Response::Ping { nonce, server_version: "fake".into() });
                let mut tag = session.seal(&message);
                if tamper && i == 0 {
                    tag[3] ^= 0x10;
                }
                message.extend_from_slice(&tag);
                write_frame(&mut stream, &message);
            }
        });
        (addr, thread)
    }

    #[test]
    fn authenticated_pings_are_tagged_both_ways() {
        let (node, me) = (Keypair::generate(), Keypair::generate());
        let node_account = node.account();
        let (addr, thread) = fake_node(node, me.account(), Node::Serve { pings: 3, tamper: false });
        let (mut client, seen) = Client::connect_authenticated(&addr, TIMEOUT, &me, Some(&node_account)).unwrap();
        assert_eq!(seen, node_account);
        assert!(client.is_authenticated());
        for _ in 0..3 {
            assert_eq!(client.ping().unwrap(), "fake");
        }
        thread.join().unwrap();
    }

    #[test]
    fn a_tampered_response_tag_is_refused_and_closes_the_connection() {
        let (node, me) = (Keypair::generate(), Keypair::generate());
        let (addr, thread) = fake_node(node, me.account(), Node::Serve { pings: 1, tamper: true });
        let (mut client, _) = Client::connect_authenticated(&addr, TIMEOUT, &me, None).unwrap();
        let err = client.ping().unwrap_err();
        assert!(matches!(err, ClientError::BadTag { sequence: 0 }), "{err}");
        assert!(err.to_string().contains("frame 0 failed its session tag"), "{err}");
        assert!(client.ping().is_err(), "the connection is closed after a bad tag");
        thread.join().unwrap();
    }

    #[test]
    fn an_unexpected_node_is_refused() {
        let (node, me, expected) = (Keypair::generate(), Keypair::generate(), Keypair::generate());
        let (addr, thread) = fake_node(node, me.account(), Node::HelloOnly);
        let err = Client::connect_authenticated(&addr, TIMEOUT, &me, Some(&expected.account())).err().unwrap();
        assert!(matches!(err, ClientError::Handshake(HandshakeError::UnexpectedNode { .. })), "{err}");
        thread.join().unwrap();
    }

    #[test]
    fn a_node_without_identity_explains_its_refusal() {
        let (node, me) = (Keypair::generate(), Keypair::generate());
        let (addr, thread) = fake_node(node, me.account(), Node::NoIdentity);
        let err = Client::connect_authenticated(&addr, TIMEOUT, &me, None).err().unwrap();
        assert!(matches!(&err, ClientError::Server { message, .. } if message == "this node has no identity"), "{err}");
        thread.join().unwrap();
    }

    #[test]
    fn a_refused_client_auth_surfaces_on_the_first_recv() {
        let (node, me) = (Keypair::generate(), Keypair::generate());
        let (addr, thread) = fake_node(node, me.account(), Node::RefuseAuth);
        let (mut client, _) = Client::connect_authenticated(&addr, TIMEOUT, &me, None).unwrap();
        let err = client.ping().unwrap_err();
        assert!(matches!(&err, ClientError::Server { message, .. } if message == "account not allowed"), "{err}");
        thread.join().unwrap();
    }

    #[test]
    fn without_identity_frames_are_unchanged() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = vec![0u8; 256];
            let n = stream.read(&mut got).unwrap();
            got.truncate(n);
            got
        });
        let mut client = Client::connect_timeout(&addr, TIMEOUT).unwrap();
        assert!(!client.is_authenticated());
        client.send(&Request::Ping { nonce: 9 }).unwrap();
        let got = thread.join().unwrap();
        let mut expected = Vec::new();
        encode_request_frame(&mut FlatBufferBuilder::new(), 1, &Request::Ping { nonce: 9 }, &mut expected);
        assert_eq!(got, expected);
        assert!(decode_frame(&got, 1024).unwrap().is_some());
    }
}
