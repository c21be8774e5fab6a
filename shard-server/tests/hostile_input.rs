//! Hostile input over raw TCP against the real `shard-server` binary:
//! garbage, oversized frame headers, bad checksums, payloads that fail the
//! flatbuffers verifier, truncated frames. Each case checks the error code,
//! whether the connection is closed or keeps serving (docs/PROTOCOL.md,
//! "Errors and when the connection closes"), and that the server still
//! serves a normal client afterwards.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::{assert_closed, read_all, read_frame, Node};
use ddc_formats::batch::encode_records;
use ddc_formats::frame::{encode_frame_into, FRAME_BYTES_MAX_DEFAULT, FRAME_HEADER_BYTES};
use ddc_formats::message::{encode_request_frame, encode_response_frame, Request, Response};
use ddc_formats::wire::{self, AckLevel, Body, ErrorCode};
use flatbuffers::FlatBufferBuilder;
use rand::{Rng, RngCore, SeedableRng};

fn request_frame(id: u64, request: &Request<'_>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let mut out = Vec::new();
    encode_request_frame(&mut fbb, id, request, &mut out);
    out
}

fn ping_frame(id: u64, nonce: u64) -> Vec<u8> {
    request_frame(id, &Request::Ping { nonce })
}

/// A frame header announcing `len` payload bytes (checksum arbitrary: the length is checked first).
fn header_announcing(len: u32) -> [u8; FRAME_HEADER_BYTES] {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[0..4].copy_from_slice(b"DDCF");
    h[4] = 1;
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h[12..16].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    h
}

/// Read one frame; it must be an error with `code` and request id 0.
fn expect_error(stream: &mut TcpStream, code: ErrorCode, what: &str) -> String {
    match read_frame(stream) {
        Ok(Some((0, Response::Error { code: got, message }))) => {
            assert_eq!(got, code, "{what}: {message}");
            message
        }
        other => panic!("{what}: expected an error response {code:?} with request id 0, got {other:?}"),
    }
}

/// A ping on this raw connection is answered.
fn expect_ping(stream: &mut TcpStream, id: u64, what: &str) {
    stream.write_all(&ping_frame(id, id * 3)).unwrap();
    match read_frame(stream) {
        Ok(Some((got, Response::Ping { nonce, .. }))) => {
            assert_eq!((got, nonce), (id, id * 3), "{what}");
        }
        other => panic!("{what}: the connection should keep serving, ping got {other:?}"),
    }
}

/// The server is alive and a fresh, well-behaved client gets full service.
fn assert_serves(node: &mut Node, what: &str) {
    node.assert_alive();
    let mut client = node.client();
    client.ping().unwrap_or_else(|e| panic!("after {what}: ping failed: {e}"));
    let base = client.produce("after-hostile", &[what.as_bytes()]).unwrap();
    let all = read_all(&mut client, "after-hostile");
    assert_eq!(all[base as usize], what.as_bytes());
}

#[test]
fn garbage_bytes_get_an_error_and_the_connection_closes() {
    let mut node = Node::start();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a72_6261_6765);
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("HTTP request".into(), b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        (
            "TLS client hello".into(),
            [&[0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03][..], &[0u8; 64][..]].concat(),
        ),
        ("all zeros".into(), vec![0u8; 4096]),
        ("all ones".into(), vec![0xffu8; 100]),
        ("lower-case magic".into(), [b"ddcf".as_slice(), &[1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]].concat()),
    ];
    for i in 0..20 {
        let mut junk = vec![0u8; rng.gen_range(FRAME_HEADER_BYTES..8192)];
        rng.fill_bytes(&mut junk);
        if &junk[..4] == b"DDCF" {
            junk[0] = b'X';
        }
        cases.push((format!("random junk {i}"), junk));
    }
    for (what, bytes) in &cases {
        let mut s = node.raw();
        s.write_all(bytes).unwrap();
        expect_error(&mut s, ErrorCode::UnsupportedVersion, what);
        assert_closed(&mut s);
        assert_serves(&mut node, what);
    }
}

#[test]
fn bad_version_flags_or_reserved_bytes_close_the_connection() {
    let mut node = Node::start();
    let good = ping_frame(1, 1);
    let cases: [(&str, usize, u8, ErrorCode); 5] = [
        ("version 0", 4, 0, ErrorCode::UnsupportedVersion),
        ("version 2", 4, 2, ErrorCode::UnsupportedVersion),
        ("flags 1", 5, 1, ErrorCode::BadRequest),
        ("reserved byte 6", 6, 1, ErrorCode::BadRequest),
        ("reserved byte 7", 7, 0x80, ErrorCode::BadRequest),
    ];
    for (what, at, value, code) in cases {
        let mut frame = good.clone();
        frame[at] = value;
        // A valid ping right behind the bad frame is never answered.
        frame.extend_from_slice(&ping_frame(2, 2));
        let mut s = node.raw();
        s.write_all(&frame).unwrap();
        expect_error(&mut s, code, what);
        assert_closed(&mut s);
        assert_serves(&mut node, what);
    }
}

/// Send only a header announcing `len`; the error must come back without any
/// payload byte sent (so the server did not wait to read, or allocate, it).
fn assert_refused_before_payload(node: &mut Node, len: u32, what: &str) {
    let mut s = node.raw();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    s.write_all(&header_announcing(len)).unwrap();
    let message = expect_error(&mut s, ErrorCode::FrameTooLarge, what);
    assert!(t0.elapsed() < Duration::from_secs(5), "{what}: refusal took {:?}", t0.elapsed());
    assert!(message.contains(&len.to_string()), "{what}: message should name the length: {message}");
    assert_closed(&mut s);
    assert_serves(node, what);
}

#[test]
fn oversized_frame_header_is_refused_before_reading_the_payload() {
    let mut node = Node::start();
    let rss_before = rss_kib(node.pid());
    for len in [FRAME_BYTES_MAX_DEFAULT + 1, 100 << 20, u32::MAX] {
        for _ in 0..5 {
            assert_refused_before_payload(&mut node, len, &format!("payload_len {len}"));
        }
    }
    let rss_after = rss_kib(node.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "15 refused frames of >= 16 MiB grew the server's RSS from {rss_before} KiB to {rss_after} KiB"
    );
    // The largest allowed header is not refused: the server waits for its payload.
    let mut s = node.raw();
    s.write_all(&header_announcing(FRAME_BYTES_MAX_DEFAULT)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut byte = [0u8; 1];
    let r = std::io::Read::read(&mut s, &mut byte);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "a header of exactly frame_bytes_max must be accepted (server waits for the payload), got {r:?}"
    );
    drop(s);
    assert_serves(&mut node, "a frame of exactly the maximum, abandoned");
}

#[test]
fn configured_frame_bytes_max_is_enforced() {
    let mut node = Node::start_with_config("[server]\nframe_bytes_max = 65536\n");
    for len in [65537, 65536 * 2, 16 << 20] {
        assert_refused_before_payload(&mut node, len, &format!("payload_len {len} over a 64 KiB limit"));
    }
    // A real produce request just over the limit: its header alone is refused.
    let big = vec![b'b'; 70_000];
    let body = encode_records([big.as_slice()]);
    let frame = request_frame(
        7,
        &Request::Produce { stream: "limited", records: &body, record_count: 1, ack: AckLevel::Durable },
    );
    assert!(frame.len() - FRAME_HEADER_BYTES > 65536);
    let mut s = node.raw();
    s.write_all(&frame[..FRAME_HEADER_BYTES]).unwrap();
    expect_error(&mut s, ErrorCode::FrameTooLarge, "70 kB produce");
    assert_closed(&mut s);
    // Just under the limit works, on a connection that keeps serving.
    let small = vec![b's'; 60_000];
    let mut client = node.client();
    for _ in 0..4 {
        client.produce("limited", &[small.as_slice()]).unwrap();
    }
    for i in 0..40 {
        client.produce("limited", &[format!("small-{i}").as_bytes()]).unwrap();
    }
    // Fetch responses are capped to fit the configured frame size: at least
    // one whole batch, but not everything at once.
    let fetched = client.fetch_raw("limited", 0, 16 << 20, 0).unwrap();
    assert!(!fetched.0.is_empty());
    assert!(fetched.0.len() <= 65536, "fetch returned {} bytes of batches with frame_bytes_max 65536", fetched.0.len());
    let all = read_all(&mut client, "limited");
    assert_eq!(all.len(), 44);
    assert_eq!(all[3], small);
    assert_serves(&mut node, "frame_bytes_max 65536");
}

#[test]
fn bad_checksum_gets_checksum_mismatch_and_closes() {
    let mut node = Node::start();
    let good = ping_frame(1, 1);
    let payload_at = FRAME_HEADER_BYTES + 4;
    for (what, at) in [
        ("checksum byte 12", 12usize),
        ("checksum byte 15", 15),
        ("payload byte", payload_at),
        ("last payload byte", good.len() - 1),
    ] {
        let mut frame = good.clone();
        frame[at] ^= 0x01;
        frame.extend_from_slice(&ping_frame(2, 2)); // never read or answered
        let mut s = node.raw();
        s.write_all(&frame).unwrap();
        expect_error(&mut s, ErrorCode::ChecksumMismatch, what);
        assert_closed(&mut s);
        assert_serves(&mut node, what);
    }
}

#[test]
fn requests_read_before_a_bad_frame_are_still_answered() {
    let mut node = Node::start();
    let mut client = node.client();
    client.create_stream("slow-one").unwrap();
    // A long-poll that is still running when the bad frame arrives, a produce, then garbage.
    let mut bytes =
        request_frame(10, &Request::Fetch { stream: "slow-one", offset: 0, max_bytes: 1024, max_wait_ms: 700 });
    let body = encode_records([b"before-the-bad-frame".as_slice()]);
    bytes.extend(request_frame(
        11,
        &Request::Produce { stream: "slow-two", records: &body, record_count: 1, ack: AckLevel::Durable },
    ));
    let mut bad = ping_frame(12, 12);
    bad[14] ^= 0xff;
    bytes.extend(bad);
    let mut s = node.raw();
    s.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    while let Some(frame) = read_frame(&mut s).expect("read until close") {
        got.push(frame);
    }
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 3, "long-poll, produce and the error, then close: {got:?}");
    assert!(
        got.iter().any(|(id, r)| *id == 0 && matches!(r, Response::Error { code: ErrorCode::ChecksumMismatch, .. })),
        "{got:?}"
    );
    assert!(got.iter().any(|(id, r)| *id == 10 && matches!(r, Response::Fetch { .. })), "{got:?}");
    assert!(got.iter().any(|(id, r)| *id == 11 && matches!(r, Response::Produce { base_offset: 0, .. })), "{got:?}");
    assert_eq!(read_all(&mut client, "slow-two"), vec![b"before-the-bad-frame".to_vec()]);
    assert_serves(&mut node, "pipelined bad frame");
}

/// A Message whose body is a ProduceRequest table without its required fields.
fn produce_without_required_fields(id: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let start = fbb.start_table();
    fbb.push_slot::<u32>(wire::ProduceRequest::VT_RECORD_COUNT, 1, 0);
    let table = fbb.end_table(start);
    let body = flatbuffers::WIPOffset::<flatbuffers::UnionWIPOffset>::new(table.value());
    let message = wire::Message::create(
        &mut fbb,
        &wire::MessageArgs { request_id: id, body_type: Body::ProduceRequest, body: Some(body), forwarded: false },
    );
    fbb.finish(message, None);
    let mut out = Vec::new();
    encode_frame_into(fbb.finished_data(), &mut out);
    out
}

/// A ProduceRequest with an ack level the protocol does not define.
fn produce_with_ack(id: u64, ack: u8) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let records = fbb.create_vector(&encode_records([b"x".as_slice()]));
    let stream = fbb.create_string("ack-stream");
    let body = wire::ProduceRequest::create(
        &mut fbb,
        &wire::ProduceRequestArgs { stream: Some(stream), records: Some(records), record_count: 1, ack: AckLevel(ack) },
    );
    let message = wire::Message::create(
        &mut fbb,
        &wire::MessageArgs {
            request_id: id,
            body_type: Body::ProduceRequest,
            body: Some(body.as_union_value()),
            forwarded: false,
        },
    );
    fbb.finish(message, None);
    let mut out = Vec::new();
    encode_frame_into(fbb.finished_data(), &mut out);
    out
}

/// A Message with an explicit body type tag and a (possibly meaningless) table.
fn message_with_tag(id: u64, tag: u8) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let start = fbb.start_table();
    let table = fbb.end_table(start);
    let body = flatbuffers::WIPOffset::<flatbuffers::UnionWIPOffset>::new(table.value());
    let start = fbb.start_table();
    fbb.push_slot_always::<u64>(wire::Message::VT_REQUEST_ID, id);
    fbb.push_slot_always(wire::Message::VT_BODY, body);
    fbb.push_slot_always::<u8>(wire::Message::VT_BODY_TYPE, tag);
    let message = fbb.end_table(start);
    fbb.finish(message, None);
    let mut out = Vec::new();
    encode_frame_into(fbb.finished_data(), &mut out);
    out
}

#[test]
fn intact_frames_with_invalid_messages_get_an_error_and_the_connection_keeps_serving() {
    let mut node = Node::start();
    let mut s = node.raw();
    let mut next_id = 100u64;
    // Verifier failures answer with request id 0 (no id can be trusted). Messages that
    // pass the verifier but make no sense are answered with id 0 (docs/PROTOCOL.md) or,
    // since 58ca3dd, with the message's own request id: both are accepted here.
    let mut check = |s: &mut TcpStream, what: &str, frame: Vec<u8>, codes: &[ErrorCode]| {
        s.write_all(&frame).unwrap();
        match read_frame(s) {
            Ok(Some((id, Response::Error { code, message }))) => {
                assert!(codes.contains(&code), "{what}: got {code:?} ({message}), expected one of {codes:?}");
                let allowed: &[u64] = if code == ErrorCode::MalformedMessage { &[0] } else { &[0, 5, 6, 7, 9] };
                assert!(allowed.contains(&id), "{what}: {code:?} answered with request id {id}");
            }
            other => panic!("{what}: expected an error response, got {other:?}"),
        }
        next_id += 1;
        expect_ping(s, next_id, what);
    };
    let malformed = [ErrorCode::MalformedMessage];
    let frame_of = |payload: &[u8]| {
        let mut out = Vec::new();
        encode_frame_into(payload, &mut out);
        out
    };
    check(&mut s, "empty payload", frame_of(b""), &malformed);
    check(&mut s, "text payload", frame_of(b"this is not a flatbuffer at all"), &malformed);
    check(&mut s, "root offset past the end", frame_of(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]), &malformed);
    check(&mut s, "required fields missing", produce_without_required_fields(5), &malformed);
    // Verified flatbuffers that are not requests: BadRequest.
    let bad_request = [ErrorCode::BadRequest];
    let mut fbb = FlatBufferBuilder::new();
    let mut response_frame = Vec::new();
    encode_response_frame(&mut fbb, 9, &Response::Ping { nonce: 1, server_version: "me".into() }, &mut response_frame);
    check(&mut s, "a response sent as a request", response_frame, &bad_request);
    check(&mut s, "ack level 7", produce_with_ack(6, 7), &bad_request);
    check(&mut s, "ack level 255", produce_with_ack(6, 255), &bad_request);
    check(&mut s, "unknown body tag 200", message_with_tag(7, 200), &bad_request);
    check(&mut s, "explicit body tag 0", message_with_tag(7, 0), &bad_request);
    // Random payloads in intact frames: always an error, the connection stays usable.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x006d_616c_666f_726d);
    for i in 0..200 {
        let mut payload = vec![0u8; rng.gen_range(0..512)];
        rng.fill_bytes(&mut payload);
        check(
            &mut s,
            &format!("random payload {i}"),
            frame_of(&payload),
            &[ErrorCode::MalformedMessage, ErrorCode::BadRequest],
        );
    }
    // Valid requests on the same connection still work.
    s.write_all(&request_frame(77, &Request::CreateStream { stream: "still-fine" })).unwrap();
    assert!(matches!(read_frame(&mut s), Ok(Some((77, Response::CreateStream { created: true })))));
    drop(s);
    assert_serves(&mut node, "invalid messages");
}

#[test]
fn truncated_frames_and_abrupt_disconnects_leave_the_server_serving() {
    let mut node = Node::start();
    let full = {
        let body = encode_records([vec![b'z'; 5000].as_slice()]);
        request_frame(
            3,
            &Request::Produce { stream: "truncated", records: &body, record_count: 1, ack: AckLevel::Durable },
        )
    };
    let cuts =
        [1usize, 7, FRAME_HEADER_BYTES - 1, FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + 1, full.len() / 2, full.len() - 1];
    for cut in cuts {
        for how in ["close", "shutdown-write", "reset"] {
            let mut s = node.raw();
            s.write_all(&full[..cut]).unwrap();
            match how {
                "close" => drop(s),
                "shutdown-write" => {
                    s.shutdown(Shutdown::Write).unwrap();
                    // Half a frame then EOF: closed without an error frame.
                    assert!(matches!(read_frame(&mut s), Ok(None) | Err(_)));
                }
                _ => {
                    // SO_LINGER 0: close sends RST.
                    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                    // SAFETY: setsockopt on a valid socket with a properly sized struct.
                    let rc = unsafe {
                        libc::setsockopt(
                            std::os::fd::AsRawFd::as_raw_fd(&s),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            &linger as *const libc::linger as *const libc::c_void,
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        )
                    };
                    assert_eq!(rc, 0);
                    drop(s);
                }
            }
        }
        assert_serves(&mut node, &format!("frames cut at {cut}"));
    }
    // None of the truncated produces was appended (the stream was never even created).
    let r = node.client().stream_info("truncated");
    assert_eq!(r.err().and_then(|e| e.code()), Some(ErrorCode::UnknownStream));
    // A stalled half-frame does not block other clients.
    let mut stalled = node.raw();
    stalled.write_all(&full[..full.len() / 2]).unwrap();
    assert_serves(&mut node, "a stalled half frame");
    // When the rest arrives, the request completes normally.
    stalled.write_all(&full[full.len() / 2..]).unwrap();
    assert!(matches!(read_frame(&mut stalled), Ok(Some((3, Response::Produce { base_offset: 0, record_count: 1 })))));
}

#[test]
fn half_close_answers_everything_already_sent_then_closes() {
    let node = Node::start();
    let mut s = node.raw();
    let mut bytes = Vec::new();
    for i in 1..=20u64 {
        if i % 2 == 0 {
            let body = encode_records([format!("half-close-{i}").as_bytes()]);
            bytes.extend(request_frame(
                i,
                &Request::Produce { stream: "half-close", records: &body, record_count: 1, ack: AckLevel::Durable },
            ));
        } else {
            bytes.extend(ping_frame(i, i));
        }
    }
    s.write_all(&bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut ids = Vec::new();
    while let Some((id, response)) = read_frame(&mut s).expect("responses, then a clean close") {
        assert!(!matches!(response, Response::Error { .. }), "{id}: {response:?}");
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    assert_eq!(read_all(&mut node.client(), "half-close").len(), 10);
}

#[test]
fn many_hostile_connections_at_once() {
    let mut node = Node::start();
    let addr = node.addr;
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                for _ in 0..20 {
                    let Ok(mut s) = TcpStream::connect(addr) else { continue };
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut junk = vec![0u8; rng.gen_range(1..2048)];
                    rng.fill_bytes(&mut junk);
                    if rng.gen_bool(0.5) {
                        // A valid header and a junk payload with a correct checksum.
                        let mut framed = Vec::new();
                        encode_frame_into(&junk, &mut framed);
                        junk = framed;
                    }
                    let _ = s.write_all(&junk);
                    if rng.gen_bool(0.5) {
                        // Half-close and read whatever comes back until the server closes.
                        let _ = s.shutdown(Shutdown::Write);
                        let mut sink = Vec::new();
                        let _ = std::io::Read::read_to_end(&mut s, &mut sink);
                    }
                }
            })
        })
        .collect();
    // Meanwhile a well-behaved client keeps getting served.
    let mut client = node.client();
    for i in 0..50 {
        client.produce("calm", &[format!("calm-{i}").as_bytes()]).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(read_all(&mut client, "calm").len(), 50);
    assert_serves(&mut node, "many hostile connections");
}

/// Resident set size of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Connections that announce an allowed but large frame and then send nothing
/// must not stop the server from serving everyone else. Each such header
/// reserves `payload_len` from its core's `core_payload_bytes_max` budget
/// before the payload is read, and nothing ever times the read out.
#[test]
fn stalled_large_frames_do_not_starve_other_clients() {
    let mut node = Node::start_with_config("[server]\nframe_bytes_max = 65536\ncore_payload_bytes_max = 131072\n");
    // SO_REUSEPORT spreads connections over both cores; 16 stalled headers of
    // 64 KiB cover both cores' 128 KiB budgets many times over.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut s = node.raw();
        s.write_all(&header_announcing(65536)).unwrap();
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..8 {
        let mut client = ddc_formats::client::Client::connect(node.addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if let Err(e) = client.ping() {
            panic!("connection {i}: ping not answered while 16 connections stall half-sent frames: {e}");
        }
    }
    drop(stalled);
    assert_serves(&mut node, "stalled large frames");
}

/// Connections past `server.connections_max` are answered `Overloaded` (request id 0)
/// and closed; the ones admitted are served; closing them frees their slots.
#[test]
fn connections_past_the_limit_get_overloaded_and_slots_come_back() {
    // 2 cores: 4 connections per core. SO_REUSEPORT spreads connections by hash, so a
    // core may see more or fewer than half of them; at most 8 can be admitted.
    let mut node = Node::start_with_config("[server]\nconnections_max = 8\n");
    let mut conns: Vec<TcpStream> = (0..24).map(|_| node.raw()).collect();
    let (mut served, mut refused) = (0, 0);
    for (i, s) in conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&ping_frame(7, i as u64));
        match read_frame(s) {
            Ok(Some((7, Response::Ping { .. }))) => served += 1,
            Ok(Some((0, Response::Error { code: ErrorCode::Overloaded, message }))) => {
                assert!(message.contains("server.connections_max"), "{message}");
                assert_closed(s);
                refused += 1;
            }
            other => panic!("connection {i}: expected a pong or Overloaded, got {other:?}"),
        }
    }
    assert_eq!(served + refused, 24);
    assert!((1..=8).contains(&served), "{served} connections served with a limit of 8");
    assert!(refused >= 16, "{refused} refused");
    // The admitted connections keep being served.
    for s in conns.iter_mut() {
        if s.write_all(&ping_frame(8, 0)).is_ok() {
            if let Ok(Some((8, r))) = read_frame(s) {
                assert!(matches!(r, Response::Ping { .. }), "{r:?}");
            }
        }
    }
    drop(conns);
    // Their slots come back once the node has seen them close.
    common::wait_until("connection slots freed", Duration::from_secs(10), || {
        ddc_formats::client::Client::connect(node.addr).and_then(|mut c| c.ping()).is_ok()
    });
    assert_serves(&mut node, "connection limit");
}

/// Clients that pipeline large fetches and never read the answers ("slow
/// readers") must not grow the node's memory with their number, nor stop a
/// client that reads from being served: each connection's waiting answers are
/// bounded, all of a core's together by `server.core_response_bytes_max`, and
/// connections whose writer makes no progress are closed when others wait.
#[test]
fn slow_readers_are_closed_and_memory_stays_bounded() {
    let mut node = Node::start_with_config(
        "[server]\nframe_bytes_max = 1048576\ncore_response_bytes_max = 4194304\nwrite_stall_timeout_ms = 3000\n",
    );
    let mut client = node.client();
    let record = vec![0x5au8; 60 << 10];
    for _ in 0..8 {
        client.produce("big", &[&record[..]; 16]).unwrap();
    }
    let fetches: Vec<u8> = (0..64u64)
        .flat_map(|i| {
            request_frame(
                i + 1,
                &Request::Fetch { stream: "big", offset: (i % 8) * 16, max_bytes: 1 << 20, max_wait_ms: 0 },
            )
        })
        .collect();
    let rss_before = rss_kib(node.pid());
    let mut slow = Vec::new();
    for _ in 0..64 {
        let s = node.raw();
        s.set_nonblocking(true).unwrap();
        let mut sent = 0;
        while sent < fetches.len() {
            match (&s).write(&fetches[sent..]) {
                Ok(n) => sent += n,
                Err(_) => break, // the node stopped reading: backpressure
            }
        }
        slow.push(s);
    }
    // A client that reads keeps getting whole answers while they hog the node.
    let mut peak = 0;
    for round in 0..3 {
        let mut reader = node.client();
        reader.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let all = read_all(&mut reader, "big");
        assert_eq!(all.len(), 128, "round {round}");
        assert!(all.iter().all(|r| r[..] == record[..]), "round {round}: a record came back altered");
        peak = peak.max(rss_kib(node.pid()));
    }
    // The node closes the slow readers (under pressure, or after write_stall_timeout_ms).
    common::wait_until("slow readers closed", Duration::from_secs(20), || {
        node.log().contains("stopped reading their answers")
    });
    peak = peak.max(rss_kib(node.pid()));
    // 64 connections x 64 pipelined MiB would be 4 GiB unbounded (80 MiB per connection
    // was the old bound: 5 GiB); the core budgets allow 2 x 4 MiB plus working copies.
    assert!(peak < rss_before + 200 * 1024, "RSS grew from {rss_before} KiB to {peak} KiB");
    drop(slow);
    assert_serves(&mut node, "slow readers");
}

/// A client that drips a frame's payload a byte at a time is closed once
/// `server.frame_read_timeout_ms` has passed since the frame's header, however
/// steadily it drips: the timeout is for the whole payload, not per read.
#[test]
fn slow_drip_frames_are_cut_off_at_the_frame_read_timeout() {
    let mut node = Node::start_with_config("[server]\nframe_read_timeout_ms = 1000\n");
    let mut s = node.raw();
    s.write_all(&header_announcing(4096)).unwrap();
    let started = Instant::now();
    let mut dripped = 0;
    while started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        if s.write_all(&[0x42]).is_err() {
            break;
        }
        dripped += 1;
        if dripped > 4096 {
            panic!("the whole payload was dripped in without the connection being closed");
        }
    }
    // The node closed it: writes fail (reset) or a read sees the end.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_closed(&mut s);
    assert!(dripped < 100, "{dripped} bytes dripped over {:?} before the close", started.elapsed());
    assert_serves(&mut node, "slow drip");
}
