//! End-to-end tests of the real `shard-server` binary (2 cores, own port and
//! data directory each) through the blocking client library and the `ddc` CLI.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{read_all, wait_until, ChildGuard, Node};
use ddc_engine::owner_core;
use ddc_formats::batch::encode_records;
use ddc_formats::client::ClientError;
use ddc_formats::message::{Request, Response};
use ddc_formats::wire::{AckLevel, ErrorCode};

/// A stream name with `prefix` that core `core` (of 2) owns.
fn name_on_core(prefix: &str, core: usize) -> String {
    (0..).map(|i| format!("{prefix}-{i}")).find(|n| owner_core(n, 2) == core).unwrap()
}

fn records(prefix: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| format!("{prefix}-record-{i:06}-{}", "x".repeat(i % 37)).into_bytes()).collect()
}

fn refs(records: &[Vec<u8>]) -> Vec<&[u8]> {
    records.iter().map(|r| r.as_slice()).collect()
}

fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(e) => e.code().unwrap_or_else(|| panic!("expected a server error, got {e}")),
        Ok(v) => panic!("expected a server error, got {v:?}"),
    }
}

#[test]
fn produce_and_fetch_round_trip_through_the_client_library() {
    let node = Node::start();
    let mut client = node.client();
    for core in 0..2 {
        let stream = name_on_core("roundtrip", core);
        let mut expected = Vec::new();
        // Batches of several sizes, including an empty record and a 100 KiB one.
        for (i, size) in [1usize, 7, 100, 3, 250].into_iter().enumerate() {
            let batch = records(&stream, expected.len()..expected.len() + size);
            let base = client.produce(&stream, &refs(&batch)).unwrap();
            assert_eq!(base, expected.len() as u64, "batch {i} base offset");
            expected.extend(batch);
        }
        let odd: Vec<Vec<u8>> = vec![Vec::new(), vec![0u8; 100 << 10], vec![0xff, 0, b'\n', 0]];
        let base = client.produce(&stream, &refs(&odd)).unwrap();
        assert_eq!(base, expected.len() as u64);
        expected.extend(odd);
        // WrittenNotSynced acks too (readable once durable).
        let body = encode_records([b"written-ack".as_slice()]);
        let base = client.produce_body(&stream, &body, 1, AckLevel::WrittenNotSynced).unwrap();
        assert_eq!(base, expected.len() as u64);
        expected.push(b"written-ack".to_vec());
        wait_until("written-ack record becomes durable", Duration::from_secs(10), || {
            client.stream_info(&stream).unwrap().high_watermark == expected.len() as u64
        });

        assert_eq!(read_all(&mut client, &stream), expected, "{stream}");
        // Fetch from the middle of a batch: records below the offset are skipped.
        let fetched = client.fetch(&stream, 3, 1 << 20, 0).unwrap();
        assert_eq!(fetched.records[0], (3, expected[3].clone()));
        // A tiny max_bytes still returns at least one whole batch.
        let fetched = client.fetch(&stream, 0, 1, 0).unwrap();
        assert_eq!(fetched.records, vec![(0, expected[0].clone())]);
        assert_eq!(fetched.next_offset, 1);
        assert_eq!(fetched.high_watermark, expected.len() as u64);

        let info = client.stream_info(&stream).unwrap();
        assert_eq!(info.stream, stream);
        assert_eq!(info.core as usize, core);
        assert_eq!(info.first_offset, 0);
        assert_eq!(info.next_offset, expected.len() as u64);
        assert_eq!(info.high_watermark, expected.len() as u64);
        assert_eq!(info.fenced_reason, None);
    }
}

#[test]
fn ddc_cli_produce_consume_streams_info() {
    let node = Node::start();
    let stream = "cli-orders";
    // 2500 lines in batches of 1000 (several requests in flight), CRLF stripped, empty lines kept.
    let mut lines: Vec<String> = (0..2500).map(|i| format!("order {i} {}", "#".repeat(i % 11))).collect();
    lines[5] = String::new();
    let mut input = String::new();
    for (i, l) in lines.iter().enumerate() {
        input.push_str(l);
        input.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
    }
    let out = node.ddc(&["produce", stream], input.as_bytes());
    assert!(out.status.success(), "ddc produce: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("produced 2500 records to cli-orders, offsets 0..2500"), "stderr: {stderr}");

    // A second produce with small batches and written acks continues the offsets.
    let out = node.ddc(&["produce", stream, "--batch", "3", "--ack", "written"], b"tail-a\ntail-b\ntail-c\ntail-d\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("offsets 2500..2504"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines.extend(["tail-a", "tail-b", "tail-c", "tail-d"].map(String::from));

    // --file input.
    let file = node.dir().join("input.txt");
    std::fs::write(&file, "from-file-1\nfrom-file-2").unwrap();
    let out = node.ddc(&["produce", stream, "--file", file.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lines.extend(["from-file-1", "from-file-2"].map(String::from));
    wait_until("written acks become durable", Duration::from_secs(10), || {
        node.client().stream_info(stream).unwrap().high_watermark == lines.len() as u64
    });

    // consume everything
    let all = node.ddc_ok(&["consume", stream], b"");
    assert_eq!(all.lines().collect::<Vec<_>>(), lines);
    // --from/--count
    let some = node.ddc_ok(&["consume", stream, "--from", "10", "--count", "5"], b"");
    assert_eq!(some.lines().collect::<Vec<_>>(), lines[10..15].to_vec());
    // --from in a later batch, --offsets, --count past the end stops at the end.
    let some = node.ddc_ok(&["consume", stream, "--from", "2498", "--count", "100", "--offsets"], b"");
    let expected: Vec<String> = (2498..lines.len()).map(|o| format!("{o}\t{}", lines[o])).collect();
    assert_eq!(some.lines().collect::<Vec<_>>(), expected);
    // From the tail: nothing.
    let none = node.ddc_ok(&["consume", stream, "--from", &lines.len().to_string()], b"");
    assert_eq!(none, "");

    // The client library sees the same records.
    let mut client = node.client();
    let stored = read_all(&mut client, stream);
    assert_eq!(stored, lines.iter().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>());

    // create / streams / info / ping
    assert_eq!(node.ddc_ok(&["create", "cli-empty"], b"").trim(), "created cli-empty");
    assert_eq!(node.ddc_ok(&["create", "cli-empty"], b"").trim(), "cli-empty already exists");
    let other = name_on_core("cli-other", 1 - client.stream_info(stream).unwrap().core as usize);
    node.ddc_ok(&["produce", &other], b"x\n");
    let streams = node.ddc_ok(&["streams"], b"");
    let mut want = vec!["cli-empty".to_owned(), stream.to_owned(), other.clone()];
    want.sort();
    assert_eq!(streams.lines().collect::<Vec<_>>(), want);

    let info = node.ddc_ok(&["info", stream], b"");
    assert!(info.contains("stream        cli-orders"), "{info}");
    assert!(info.contains(&format!("offsets       0 .. {n} (next {n})", n = lines.len())), "{info}");
    let core = owner_core(stream, 2);
    assert!(info.contains(&format!("owning core   {core}")), "{info}");
    assert!(info.contains("segments      1"), "{info}");
    let json: serde_json::Value = serde_json::from_str(node.ddc_ok(&["info", stream, "--json"], b"").trim()).unwrap();
    assert_eq!(json["stream"], "cli-orders");
    assert_eq!(json["high_watermark"], lines.len() as u64);
    assert_eq!(json["next_offset"], lines.len() as u64);
    assert_eq!(json["first_offset"], 0);
    assert_eq!(json["core"], core as u64);
    assert_eq!(json["segments"].as_array().unwrap().len(), 1);
    assert_eq!(json["segments"][0]["sealed"], false);
    assert!(node.ddc_ok(&["ping"], b"").contains("answered"));

    // Failures exit with code 1 and say why.
    let out = node.ddc(&["info", "no-such-stream"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UnknownStream"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = node.ddc(&["produce", "bad/name"], b"a\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidStreamName"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node.ddc(&["consume", stream, "--from", "999999"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OffsetOutOfRange"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node.ddc(&["consume"], b"");
    assert_eq!(out.status.code(), Some(2), "usage error");
    // No server at all: exit 1, not a hang.
    let dead = format!("127.0.0.1:{}", common::free_port());
    let out = common::run_with_timeout(
        {
            let mut c = std::process::Command::new(common::DDC_BIN);
            c.args(["--server", &dead, "ping"]);
            c
        },
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn pipelined_requests_are_answered_by_id_possibly_out_of_order() {
    let node = Node::start();
    let mut setup = node.client();
    let streams = [name_on_core("pipe", 0), name_on_core("pipe", 1), name_on_core("pipe-b", 0)];
    let idle = name_on_core("pipe-idle", 1);
    setup.create_stream(&idle).unwrap();

    #[derive(Debug)]
    enum Sent {
        Produce { stream: usize, records: Vec<Vec<u8>> },
        Ping { nonce: u64 },
        LongPoll,
    }
    let mut client = node.client();
    let mut sent: HashMap<u64, Sent> = HashMap::new();
    // Request 1 is a long-poll on an idle stream: everything after it must overtake it.
    let id = client.send(&Request::Fetch { stream: &idle, offset: 0, max_bytes: 1 << 20, max_wait_ms: 3000 }).unwrap();
    sent.insert(id, Sent::LongPoll);
    for i in 0..99u64 {
        if i % 4 == 3 {
            let nonce = 1000 + i;
            let id = client.send(&Request::Ping { nonce }).unwrap();
            sent.insert(id, Sent::Ping { nonce });
        } else {
            let stream = (i % 3) as usize;
            let recs = records(&format!("p{i}"), 0..(1 + i as usize % 5));
            let body = encode_records(recs.iter().map(|r| r.as_slice()));
            let id = client
                .send(&Request::Produce {
                    stream: &streams[stream],
                    records: &body,
                    record_count: recs.len() as u32,
                    ack: AckLevel::Durable,
                })
                .unwrap();
            sent.insert(id, Sent::Produce { stream, records: recs });
        }
    }
    assert_eq!(sent.len(), 100);
    let mut order = Vec::new();
    let mut acked: Vec<BTreeMap<u64, Vec<Vec<u8>>>> = vec![BTreeMap::new(); 3];
    for _ in 0..100 {
        let (id, response) = client.recv().unwrap();
        order.push(id);
        match (sent.remove(&id).unwrap_or_else(|| panic!("unknown or repeated response id {id}")), response) {
            (Sent::Produce { stream, records }, Response::Produce { base_offset, record_count }) => {
                assert_eq!(record_count as usize, records.len());
                assert!(acked[stream].insert(base_offset, records).is_none(), "two batches acked at {base_offset}");
            }
            (Sent::Ping { nonce }, Response::Ping { nonce: got, .. }) => assert_eq!(got, nonce),
            (Sent::LongPoll, Response::Fetch { batches, high_watermark, .. }) => {
                assert!(batches.is_empty());
                assert_eq!(high_watermark, 0);
            }
            (req, resp) => panic!("request {id} {req:?} got {resp:?}"),
        }
    }
    assert!(sent.is_empty());
    assert_eq!(*order.last().unwrap(), 1, "the long-poll (request 1) answers last: {order:?}");
    assert_ne!(order, (1..=100).collect::<Vec<_>>());
    // Acknowledged batches tile each stream from 0 and are stored exactly there.
    for (i, stream) in streams.iter().enumerate() {
        let stored = read_all(&mut setup, stream);
        let mut next = 0u64;
        for (&base, recs) in &acked[i] {
            assert_eq!(base, next, "{stream}: acked batches must tile the stream");
            for (k, r) in recs.iter().enumerate() {
                assert_eq!(&stored[base as usize + k], r);
            }
            next += recs.len() as u64;
        }
        assert_eq!(next, stored.len() as u64);
    }
    // The connection keeps serving after the burst.
    assert!(client.ping().is_ok());
}

#[test]
fn long_poll_fetch_returns_as_soon_as_another_connection_produces() {
    let node = Node::start();
    let mut producer = node.client();
    for core in 0..2 {
        for round in 0..2 {
            let stream = name_on_core(&format!("longpoll{round}"), core);
            // Round 0: empty stream (offset 0); round 1: at the tail of a stream with data.
            let tail = if round == 0 {
                producer.create_stream(&stream).unwrap();
                0
            } else {
                producer.produce(&stream, &[b"a", b"b", b"c"]).unwrap();
                3
            };
            let mut waiter = node.client();
            let s = stream.clone();
            let (tx, rx) = mpsc::channel();
            let t = std::thread::spawn(move || {
                let t0 = Instant::now();
                let fetched = waiter.fetch(&s, tail, 1 << 20, 20_000);
                tx.send(()).unwrap();
                (fetched, t0.elapsed())
            });
            std::thread::sleep(Duration::from_millis(300));
            assert!(rx.try_recv().is_err(), "{stream}: the fetch returned before anything was produced");
            let produced_at = Instant::now();
            let base = producer.produce(&stream, &[b"wake-up"]).unwrap();
            assert_eq!(base, tail);
            let (fetched, elapsed) = t.join().unwrap();
            let latency = produced_at.elapsed();
            let fetched = fetched.unwrap();
            assert_eq!(fetched.records, vec![(tail, b"wake-up".to_vec())]);
            assert_eq!(fetched.high_watermark, tail + 1);
            assert!(elapsed >= Duration::from_millis(250), "{stream}: returned after {elapsed:?}");
            assert!(latency < Duration::from_secs(3), "{stream}: woke {latency:?} after the produce (wait was 20 s)");
        }
    }
}

#[test]
fn long_poll_fetch_returns_empty_after_the_wait() {
    let node = Node::start();
    let mut client = node.client();
    for core in 0..2 {
        let stream = name_on_core("quiet", core);
        client.produce(&stream, &[b"only"]).unwrap();
        let t0 = Instant::now();
        let fetched = client.fetch(&stream, 1, 1 << 20, 600).unwrap();
        let elapsed = t0.elapsed();
        assert!(fetched.records.is_empty());
        assert_eq!(fetched.high_watermark, 1);
        assert_eq!(fetched.next_offset, 1);
        assert!(elapsed >= Duration::from_millis(550), "returned after {elapsed:?}, asked to wait 600 ms");
        assert!(elapsed < Duration::from_secs(5), "returned after {elapsed:?}, asked to wait 600 ms");
        // Without a wait, at once.
        let t0 = Instant::now();
        assert!(client.fetch(&stream, 1, 1 << 20, 0).unwrap().records.is_empty());
        assert!(t0.elapsed() < Duration::from_secs(2), "a fetch without wait took {:?}", t0.elapsed());
    }
}

#[test]
fn long_poll_wait_is_capped_by_fetch_wait_max_ms() {
    let node = Node::start_with_config("[server]\nfetch_wait_max_ms = 300\n");
    let mut client = node.client();
    client.create_stream("capped").unwrap();
    let t0 = Instant::now();
    let fetched = client.fetch("capped", 0, 1 << 20, 20_000).unwrap();
    let elapsed = t0.elapsed();
    assert!(fetched.records.is_empty());
    assert!(elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(5), "waited {elapsed:?}");
}

#[test]
fn ddc_consume_follow_sees_records_produced_after_it_started() {
    let node = Node::start();
    let stream = "follow-me";
    let mut client = node.client();
    client.produce(stream, &[b"before-0", b"before-1"]).unwrap();
    let mut cmd = node.ddc_command(&["consume", stream, "--follow", "--offsets"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = ChildGuard(cmd.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let next_line =
        |what: &str| rx.recv_timeout(Duration::from_secs(15)).unwrap_or_else(|_| panic!("no line for {what}"));
    assert_eq!(next_line("before-0"), "0\tbefore-0");
    assert_eq!(next_line("before-1"), "1\tbefore-1");
    // Let it settle into long-polling at the tail, then produce from elsewhere.
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.0.try_wait().unwrap().is_none(), "--follow must keep running at the tail");
    let mut expected = 2u64;
    for round in 0..3 {
        let recs: Vec<Vec<u8>> = (0..5).map(|i| format!("after-{round}-{i}").into_bytes()).collect();
        client.produce(stream, &refs(&recs)).unwrap();
        for r in &recs {
            assert_eq!(next_line("a record produced later"), format!("{expected}\t{}", String::from_utf8_lossy(r)));
            expected += 1;
        }
        std::thread::sleep(Duration::from_millis(1300));
    }
    assert!(child.0.try_wait().unwrap().is_none());
}

#[test]
fn streams_on_both_cores_are_all_listed() {
    let node = Node::start();
    let mut client = node.client();
    let names: Vec<String> = (0..48).map(|i| format!("many.{i:02}_x-{}", i * 7919 % 1000)).collect();
    let on_core: Vec<usize> = names.iter().map(|n| owner_core(n, 2)).collect();
    assert!(on_core.contains(&0) && on_core.contains(&1), "the names must spread over both cores");
    for (i, name) in names.iter().enumerate() {
        if i % 3 == 0 {
            assert!(client.create_stream(name).unwrap());
        } else {
            client.produce(name, &[name.as_bytes()]).unwrap();
        }
    }
    let mut want = names.clone();
    want.sort();
    // From several connections (which SO_REUSEPORT may land on either core).
    for _ in 0..6 {
        let listed = node.client().list_streams().unwrap();
        assert_eq!(listed, want);
    }
    for (i, name) in names.iter().enumerate() {
        let info = client.stream_info(name).unwrap();
        assert_eq!(info.core as usize, on_core[i], "{name}");
        assert_eq!(info.high_watermark, if i % 3 == 0 { 0 } else { 1 }, "{name}");
    }
}

#[test]
fn create_stream_then_stream_info() {
    let node = Node::start();
    let mut client = node.client();
    for core in 0..2 {
        let stream = name_on_core("created", core);
        assert!(client.create_stream(&stream).unwrap(), "first create creates");
        assert!(!client.create_stream(&stream).unwrap(), "second create finds it");
        let info = client.stream_info(&stream).unwrap();
        assert_eq!(info.stream, stream);
        assert_eq!((info.first_offset, info.next_offset, info.high_watermark), (0, 0, 0));
        assert_eq!(info.core as usize, core);
        assert!(info.segments.iter().all(|s| !s.sealed && s.base_offset == 0));
        assert!(node.data_dir.join("streams").join(&stream).is_dir(), "explicit create makes the directory durable");
        let fetched = client.fetch(&stream, 0, 1 << 20, 0).unwrap();
        assert!(fetched.records.is_empty());
        assert_eq!(fetched.high_watermark, 0);
        assert_eq!(client.produce(&stream, &[b"first"]).unwrap(), 0);
        assert!(!client.create_stream(&stream).unwrap());
        let info = client.stream_info(&stream).unwrap();
        assert_eq!((info.next_offset, info.high_watermark), (1, 1));
    }
}

#[test]
fn sigterm_exits_zero_and_restart_keeps_all_data() {
    // Small segments so the data spans sealed segments too.
    let mut node = Node::new();
    node.set_config(Some("[log]\nsegment_bytes_max = 65536\n"));
    node.launch();
    let mut client = node.client();
    let names: Vec<String> = (0..8).map(|i| format!("restart-{i}")).collect();
    let mut expected: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let mut all = Vec::new();
        let batches = if i == 0 { 250 } else { 5 + i };
        for b in 0..batches {
            let recs = records(&format!("{name}-{b}"), 0..(1 + (b * 13) % 40));
            let base = client.produce(name, &refs(&recs)).unwrap();
            assert_eq!(base, all.len() as u64);
            all.extend(recs);
        }
        expected.insert(name.clone(), all);
    }
    client.create_stream("restart-empty").unwrap();
    expected.insert("restart-empty".into(), Vec::new());
    let segments_before = client.stream_info("restart-0").unwrap().segments;
    assert!(segments_before.len() >= 3, "restart-0 should span several 64 KiB segments: {segments_before:?}");

    // A long-poll in progress and an idle connection must not hold up shutdown.
    let mut waiter = node.client();
    let mut poller =
        Some(std::thread::spawn(move || waiter.fetch("restart-empty", 0, 1 << 20, 25_000).map(|f| f.records.len())));
    let _idle = node.raw();
    std::thread::sleep(Duration::from_millis(200));
    drop(client);

    for round in 0..2 {
        let t0 = Instant::now();
        let status = node.terminate();
        assert_eq!(status.code(), Some(0), "round {round}: exit status {status}\n{}", node.log());
        assert!(t0.elapsed() < Duration::from_secs(10), "round {round}: shutdown took {:?}", t0.elapsed());
        assert!(node.log().contains("stopped cleanly"), "{}", node.log());
        if let Some(poller) = poller.take() {
            // The long-poll got an answer or a closed connection, not a hang.
            let _ = poller.join().unwrap();
        }
        node.launch();
        let mut client = node.client();
        let mut want: Vec<String> = expected.keys().cloned().collect();
        want.sort();
        assert_eq!(client.list_streams().unwrap(), want, "round {round}");
        for (name, recs) in &expected {
            assert_eq!(&read_all(&mut client, name), recs, "round {round}: {name}");
            let info = client.stream_info(name).unwrap();
            assert_eq!(info.high_watermark, recs.len() as u64);
        }
        let segments_after = client.stream_info("restart-0").unwrap().segments;
        let sealed_before: Vec<_> = segments_before.iter().filter(|s| s.sealed).collect();
        for s in &sealed_before {
            assert!(segments_after.contains(s), "round {round}: sealed segment {s:?} changed: {segments_after:?}");
            assert!(s.root.is_some());
        }
        // Appends continue at the old end.
        for name in ["restart-0", "restart-3", "restart-empty"] {
            let recs = records(&format!("{name}-after-{round}"), 0..3);
            let base = client.produce(name, &refs(&recs)).unwrap();
            let all = expected.get_mut(name).unwrap();
            assert_eq!(base, all.len() as u64, "{name}");
            all.extend(recs);
        }
    }
}

#[test]
fn errors_have_the_right_code_and_the_connection_keeps_serving() {
    let node = Node::start();
    let mut client = node.client();
    for core in 0..2 {
        let stream = name_on_core("errors", core);
        client.produce(&stream, &[b"r0", b"r1"]).unwrap();
        let long = "n".repeat(201);
        for bad in ["", "bad/name", "..", ".hidden", "sp ace", "é", long.as_str(), "nul\0"] {
            assert_eq!(code_of(client.produce(bad, &[b"x"])), ErrorCode::InvalidStreamName, "produce {bad:?}");
            assert_eq!(code_of(client.fetch(bad, 0, 1024, 0)), ErrorCode::InvalidStreamName, "fetch {bad:?}");
            assert_eq!(code_of(client.create_stream(bad)), ErrorCode::InvalidStreamName, "create {bad:?}");
            assert_eq!(code_of(client.stream_info(bad)), ErrorCode::InvalidStreamName, "info {bad:?}");
            assert!(client.ping().is_ok());
        }
        let unknown = name_on_core("never-produced", core);
        assert_eq!(code_of(client.fetch(&unknown, 0, 1024, 0)), ErrorCode::UnknownStream);
        assert_eq!(code_of(client.fetch(&unknown, 0, 1024, 200)), ErrorCode::UnknownStream);
        assert_eq!(code_of(client.stream_info(&unknown)), ErrorCode::UnknownStream);
        assert!(client.ping().is_ok());

        for offset in [3, 4, 1000, u64::MAX] {
            assert_eq!(code_of(client.fetch(&stream, offset, 1024, 0)), ErrorCode::OffsetOutOfRange, "offset {offset}");
            assert_eq!(
                code_of(client.fetch(&stream, offset, 1024, 100)),
                ErrorCode::OffsetOutOfRange,
                "offset {offset}"
            );
        }
        assert!(client.ping().is_ok());

        let two = encode_records([b"a".as_slice(), b"b".as_slice()]);
        let invalid: Vec<(&str, Vec<u8>, u32)> = vec![
            ("count says 3, body holds 2", two.clone(), 3),
            ("count says 1, body holds 2", two.clone(), 1),
            ("count 0, empty body", Vec::new(), 0),
            ("count 1, empty body", Vec::new(), 1),
            ("cut length prefix", two[..two.len() - 3].to_vec(), 2),
            ("record longer than body", vec![9, 0, 0, 0, b'x'], 1),
            ("huge length", vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3], 1),
        ];
        for (what, body, count) in &invalid {
            for ack in [AckLevel::Durable, AckLevel::WrittenNotSynced] {
                let r = client.produce_body(&stream, body, *count, ack);
                assert_eq!(code_of(r), ErrorCode::InvalidRecords, "{what}");
            }
            // Invalid records to a stream that does not exist yet.
            let fresh = name_on_core(&format!("errors-fresh-{core}"), core);
            assert_eq!(
                code_of(client.produce_body(&fresh, body, *count, AckLevel::Durable)),
                ErrorCode::InvalidRecords,
                "{what}"
            );
            assert!(client.ping().is_ok());
        }
        // Nothing was appended by the refused requests; appends continue at 2.
        assert_eq!(client.stream_info(&stream).unwrap().high_watermark, 2);
        assert_eq!(client.produce(&stream, &[b"r2"]).unwrap(), 2);
        assert_eq!(read_all(&mut client, &stream), vec![b"r0".to_vec(), b"r1".to_vec(), b"r2".to_vec()]);
    }
    // The same errors pipelined, each answered with its own request id.
    let mut ids = BTreeSet::new();
    let bad_records = encode_records([b"a".as_slice()]);
    ids.insert(
        client
            .send(&Request::Produce { stream: "x/y", records: &bad_records, record_count: 1, ack: AckLevel::Durable })
            .unwrap(),
    );
    ids.insert(client.send(&Request::Fetch { stream: "nope-nope", offset: 0, max_bytes: 10, max_wait_ms: 0 }).unwrap());
    ids.insert(
        client
            .send(&Request::Produce {
                stream: "ok-stream",
                records: &bad_records,
                record_count: 5,
                ack: AckLevel::Durable,
            })
            .unwrap(),
    );
    let ping_id = client.send(&Request::Ping { nonce: 5 }).unwrap();
    let mut got = BTreeMap::new();
    for _ in 0..4 {
        let (id, resp) = client.recv().unwrap();
        got.insert(id, resp);
    }
    assert!(matches!(got.remove(&ping_id), Some(Response::Ping { nonce: 5, .. })));
    let codes: Vec<ErrorCode> = ids
        .iter()
        .map(|id| match got.remove(id) {
            Some(Response::Error { code, .. }) => code,
            other => panic!("request {id}: {other:?}"),
        })
        .collect();
    assert_eq!(codes, vec![ErrorCode::InvalidStreamName, ErrorCode::UnknownStream, ErrorCode::InvalidRecords]);
    assert!(client.ping().is_ok());
}

/// Cold starts with 2 cores must all come up. Regression test for the
/// startup race in `common::KNOWN_STARTUP_RACE` (both cores shared one
/// `.direct-io-probe` file; about a quarter of starts hung; fixed in 3723eeb).
#[test]
fn every_two_core_start_becomes_ready() {
    let mut failures = Vec::new();
    for i in 0..20 {
        let mut node = Node::new();
        node.spawn();
        match node.try_ready(Duration::from_secs(10)) {
            common::StartOutcome::Ready => {}
            other => failures.push(format!(
                "start {i}: {other:?}: {}",
                node.log().lines().find(|l| l.contains("panicked")).unwrap_or("(no panic logged)")
            )),
        }
    }
    assert!(failures.is_empty(), "{} of 20 starts failed:\n{}", failures.len(), failures.join("\n"));
}

/// A restart on the same address right after a stop, with a client still
/// connected, must work (operators restart in place). See
/// `common::KNOWN_RESTART_PORT_BUG`; the other tests restart on a fresh port.
#[test]
fn restart_on_the_same_port_with_a_client_still_connected() {
    for crash in [false, true] {
        let mut node = Node::new();
        node.keep_port = true;
        node.launch();
        let mut client = node.client();
        client.produce("same-port", &[b"x"]).unwrap();
        if crash {
            node.kill();
        } else {
            assert_eq!(node.terminate().code(), Some(0));
        }
        node.launch(); // regression: this used to exit 1, "Address already in use"
        assert_eq!(read_all(&mut node.client(), "same-port"), vec![b"x".to_vec()]);
        drop(client);
    }
}

/// Two nodes must not share a port: every core binds with SO_REUSEPORT, so a
/// second node of the same user would otherwise silently take half the
/// connections. The second one refuses to start, naming the address.
#[test]
fn a_second_node_on_the_same_port_refuses_to_start() {
    let first = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shard-server"))
        .args(["--listen", &first.addr.to_string(), "--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--cores", "2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "second node must exit 1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("address in use"), "{stderr}");
    // The first node never noticed.
    first.client().ping().unwrap();
}

/// Two nodes must not share a data directory.
#[test]
fn a_second_node_on_the_same_data_dir_refuses_to_start() {
    let first = Node::start();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shard-server"))
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port()), "--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&first.data_dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another shard-server"), "{stderr}");
}
