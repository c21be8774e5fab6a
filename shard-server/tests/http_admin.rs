//! The admin HTTP endpoint of a real `shard-server` over real TCP: exact
//! counters after known produces and fetches, an exposition every line of
//! which parses, health and readiness, the status page and its JSON, hostile
//! HTTP that must not stop the endpoint, and a 3-node cluster where a killed
//! node shows as down on the others.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::local_cluster::{ddc_ok as ddc, free_base_port, KillOnDrop};
use common::{read_all, wait_until, Node, SERVER_BIN};
use ddc_formats::batch::{encode_records, BATCH_HEADER_BYTES};
use rand::{Rng, SeedableRng};

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

/// Send `request` as is and read the answer until the server closes.
fn http_raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(request)?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    Ok(Answer { status, headers: headers.to_owned(), body: body.to_owned() })
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    http_raw(addr, format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// One sample of the exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parse `{k="v",...}` (with `\\`, `\"` and `\n` escapes); returns the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = rest.split_once("=\"").ok_or_else(|| format!("no =\" in {rest:?}"))?;
        if !is_metric_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Check the text exposition format line by line: every sample is `name{labels} value`, every
/// family has HELP and TYPE before its samples, histograms have buckets, a +Inf bucket, sum and count.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut help = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let fail = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').ok_or_else(|| fail("HELP without text".into()))?;
            if !is_metric_name(name) || doc.is_empty() || help.insert(name.to_owned(), doc.to_owned()).is_some() {
                return Err(fail("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| fail("TYPE without type".into()))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(fail(format!("unknown type {kind}")));
            }
            if !help.contains_key(name) || types.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(fail("TYPE without HELP before it, or repeated".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(fail("unexpected comment".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(fail)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value_text = rest.strip_prefix(' ').ok_or_else(|| fail("no space before the value".into()))?;
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| fail(format!("value {v:?} is not a number")))?,
        };
        let family = [("_bucket", "histogram"), ("_sum", "histogram"), ("_count", "histogram")]
            .iter()
            .find_map(|(suffix, kind)| {
                name.strip_suffix(suffix).filter(|f| types.get(*f).map(String::as_str) == Some(kind))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(fail(format!("sample of {family} without HELP and TYPE before it")));
        }
        if name.ends_with("_bucket") && family != name && !labels.contains_key("le") {
            return Err(fail("bucket without le".into()));
        }
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    for (family, kind) in &types {
        if kind == "histogram" {
            let has = |suffix: &str| samples.iter().any(|s| s.name == format!("{family}{suffix}"));
            let inf = samples.iter().any(|s| s.name == format!("{family}_bucket") && s.labels["le"] == "+Inf");
            if samples.iter().any(|s| s.name.starts_with(family.as_str())) && !(has("_sum") && has("_count") && inf) {
                return Err(format!("histogram {family} lacks _sum, _count or a +Inf bucket"));
            }
        }
    }
    Ok(samples)
}

fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let answer = get(addr, "/metrics");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.headers.contains("text/plain; version=0.0.4"), "{}", answer.headers);
    parse_exposition(&answer.body).unwrap_or_else(|e| panic!("bad exposition: {e}\n{}", answer.body))
}

/// The sum of `name`'s samples whose labels include every pair of `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

#[test]
fn counters_equal_what_was_produced_and_fetched() {
    let node = Node::start();
    let mut client = node.client();
    // Several streams (spread over the 2 cores), batches of different sizes.
    let plan: [(&str, &[usize]); 3] = [("orders", &[1, 5, 20]), ("payments", &[3]), ("b7.audit", &[2, 2, 7, 1])];
    let mut expected: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new(); // records, bytes, batches
    for (stream, batches) in plan {
        for (b, &count) in batches.iter().enumerate() {
            let records: Vec<Vec<u8>> =
                (0..count).map(|i| format!("{stream}-{b}-{i}-{}", "x".repeat(i * 13)).into_bytes()).collect();
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            client.produce(stream, &refs).unwrap();
            let e = expected.entry(stream).or_default();
            e.0 += count as u64;
            e.1 += (BATCH_HEADER_BYTES + encode_records(refs.iter().copied()).len()) as u64;
            e.2 += 1;
        }
        assert_eq!(read_all(&mut client, stream).len() as u64, expected[stream].0);
    }
    let samples = scrape(node.http_addr);
    let (mut records, mut bytes, mut batches) = (0.0, 0.0, 0.0);
    for (stream, &(r, b, n)) in &expected {
        let this = [("stream", *stream)];
        assert_eq!(sum(&samples, "ddc_stream_append_records_total", &this), r as f64, "{stream}");
        assert_eq!(sum(&samples, "ddc_stream_append_bytes_total", &this), b as f64, "{stream}");
        // Fetches started at batch boundaries from 0 to the end: every batch was sent once.
        assert_eq!(sum(&samples, "ddc_stream_fetch_records_total", &this), r as f64, "{stream}");
        assert_eq!(sum(&samples, "ddc_stream_fetch_bytes_total", &this), b as f64, "{stream}");
        assert_eq!(sum(&samples, "ddc_stream_replica_append_records_total", &this), 0.0, "{stream}");
        (records, bytes, batches) = (records + r as f64, bytes + b as f64, batches + n as f64);
    }
    // Per core: the same totals, split by owner.
    assert_eq!(sum(&samples, "ddc_core_append_records_total", &[]), records);
    assert_eq!(sum(&samples, "ddc_core_append_bytes_total", &[]), bytes);
    assert_eq!(sum(&samples, "ddc_core_fetch_records_total", &[]), records);
    assert_eq!(sum(&samples, "ddc_core_fetch_bytes_total", &[]), bytes);
    // Every appended byte and batch went out in exactly one group commit.
    assert_eq!(sum(&samples, "ddc_group_commit_bytes_sum", &[]), bytes);
    assert_eq!(sum(&samples, "ddc_group_commit_batches_sum", &[]), batches);
    let fsyncs = sum(&samples, "ddc_fsync_duration_seconds_count", &[]);
    assert!(fsyncs > 0.0 && fsyncs <= batches, "fsync count {fsyncs} for {batches} batches");
    assert_eq!(sum(&samples, "ddc_fsync_duration_seconds_bucket", &[("le", "+Inf")]), fsyncs);
    assert!(sum(&samples, "ddc_fsync_duration_seconds_sum", &[]) > 0.0);
    // Process basics.
    assert_eq!(sum(&samples, "ddc_ready", &[]), 1.0);
    assert_eq!(sum(&samples, "ddc_cores", &[]), 2.0);
    assert!(samples.iter().any(|s| s.name == "ddc_build_info" && s.labels["version"] == env!("CARGO_PKG_VERSION")));
    assert!(sum(&samples, "ddc_connections_accepted_total", &[]) >= 2.0);
    // Gauges come from the cores' snapshots (at most a second old).
    wait_until("snapshots with every stream", Duration::from_secs(10), || {
        let s = scrape(node.http_addr);
        expected
            .iter()
            .all(|(stream, &(r, _, _))| sum(&s, "ddc_stream_high_watermark", &[("stream", stream)]) == r as f64)
            && sum(&s, "ddc_stream_segments", &[("state", "open")]) == expected.len() as f64
    });
}

#[test]
fn refused_frames_and_auth_failures_are_counted() {
    let node = Node::start();
    // A frame of garbage: bad header; the node answers with an error and closes.
    let mut raw = node.raw();
    raw.write_all(&[0xAB; 64]).unwrap();
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    wait_until("a bad_header refusal", Duration::from_secs(10), || {
        sum(&scrape(node.http_addr), "ddc_frames_refused_total", &[("reason", "bad_header")]) == 1.0
    });
    let samples = scrape(node.http_addr);
    assert_eq!(sum(&samples, "ddc_frames_refused_total", &[]), 1.0);
    assert_eq!(sum(&samples, "ddc_auth_failures_total", &[]), 0.0);
}

#[test]
fn health_ready_status_page_and_json() {
    let mut node = Node::start();
    let mut client = node.client();
    for stream in ["alpha", "beta-2", "gamma_3"] {
        client.produce(stream, &[b"one", b"two"]).unwrap();
    }
    // Restart and watch readiness from the first moment the endpoint answers: it must go
    // from 503 to 200, never back.
    node.kill();
    node.keep_port = true;
    node.spawn();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "never ready; saw {seen:?}\n{}", node.log());
        match http_raw(node.http_addr, b"GET /ready HTTP/1.1\r\n\r\n") {
            Ok(a) if a.status == 200 => break,
            Ok(a) => {
                assert_eq!(a.status, 503, "{a:?}");
                assert!(a.body.starts_with("not ready: "), "{a:?}");
                seen.push(a.body);
            }
            Err(_) => {} // not listening yet
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("503 answers seen before ready: {} (first: {:?})", seen.len(), seen.first());
    // The endpoint listens before the cores open their logs (fsyncs, stream recovery: tens of
    // ms), and this loop asks every 2 ms: it sees the node not ready (10 to 20 times here).
    assert!(!seen.is_empty(), "never saw /ready answer 503 while the cores started");
    node.wait_ready();
    assert_eq!(get(node.http_addr, "/ready").status, 200);
    let health = get(node.http_addr, "/health");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let json = get(node.http_addr, "/status.json");
    assert_eq!(json.status, 200);
    let status: serde_json::Value = serde_json::from_str(&json.body).expect("status.json parses");
    let account = status["node"]["account"].as_str().expect("the node's account").to_owned();
    assert_eq!(status["node"]["listen"], node.addr.to_string());
    assert_eq!(status["node"]["ready"], true);
    wait_until("every stream in status.json", Duration::from_secs(10), || {
        let s: serde_json::Value = serde_json::from_str(&get(node.http_addr, "/status.json").body).unwrap();
        let names: Vec<&str> = s["streams"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
        names == ["alpha", "beta-2", "gamma_3"]
    });
    let page = get(node.http_addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.headers.contains("text/html"), "{}", page.headers);
    for needle in ["alpha", "beta-2", "gamma_3", account.as_str(), env!("CARGO_PKG_VERSION"), "ready"] {
        assert!(page.body.contains(needle), "status page lacks {needle:?}:\n{}", page.body);
    }
    assert!(!page.body.contains("<script"), "no script on the page");

    // HEAD has the headers and no body; other methods and paths are refused.
    let head = http_raw(node.http_addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert!(head.headers.contains("Content-Length: "), "{}", head.headers);
    let post = http_raw(node.http_addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(post.status, 405);
    assert!(post.headers.contains("Allow: GET, HEAD"), "{}", post.headers);
    assert_eq!(get(node.http_addr, "/no/such/page").status, 404);

    // While the node stops, /ready stops saying 200 (503, or nothing once the process is gone).
    let status = node.terminate();
    assert!(status.success(), "{status}");
    assert!(http_raw(node.http_addr, b"GET /ready HTTP/1.1\r\n\r\n").map_or(true, |a| a.status != 200));
}

/// The admin port of a node whose port is taken: the start fails, naming the key.
#[test]
fn a_taken_http_port_fails_the_start_naming_the_key() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(SERVER_BIN)
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--http-listen", &taken.local_addr().unwrap().to_string(), "--cores", "1", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.listen") && stderr.contains("in use"), "{stderr}");
}

#[test]
fn hostile_http_gets_an_error_or_a_close_and_the_endpoint_keeps_serving() {
    let node = Node::start();
    let addr = node.http_addr;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0b5e_7ab1e);
    let still_serving = || {
        let a = get(addr, "/health");
        assert_eq!(a.status, 200, "{a:?}");
    };
    // Random bytes, then a blank line (a partial head is the slowloris case below).
    for len in [1usize, 17, 300, 4096, 20_000] {
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        bytes.extend_from_slice(b"\r\n\r\n");
        if let Ok(a) = http_raw(addr, &bytes) {
            assert!([400, 431].contains(&a.status), "{len} random bytes: {a:?}");
        }
        still_serving();
    }
    // Protocols that are not HTTP/1.x, and malformed request lines.
    for request in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nthis header has no colon\r\n\r\n",
    ] {
        let a = http_raw(addr, request).unwrap();
        assert_eq!(a.status, 400, "{request:?}: {a:?}");
    }
    // A huge head: refused with 431 (or closed), never served.
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(40)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    if let Ok(a) = http_raw(addr, &huge) {
        assert_eq!(a.status, 431, "{a:?}");
    }
    still_serving();
    // Slowloris: partial heads that never finish. Others are served meanwhile; the
    // partial ones get 408 (or a close) once the head timeout passes.
    let slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sl").unwrap();
            s
        })
        .collect();
    let t0 = Instant::now();
    still_serving();
    assert!(t0.elapsed() < Duration::from_secs(4), "served while others dawdle");
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    // More idle connections than the endpoint handles at once: the extra ones get 503 at
    // once; when the idle ones time out the endpoint serves again.
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(a) = http_raw(addr, b"GET /health HTTP/1.1\r\n\r\n") {
        assert!([200, 503].contains(&a.status), "{a:?}");
    }
    drop(idle);
    wait_until("the endpoint serving after idle connections", Duration::from_secs(15), || {
        http_raw(addr, b"GET /health HTTP/1.1\r\n\r\n").is_ok_and(|a| a.status == 200)
    });
    // The node itself never noticed.
    node.client().ping().unwrap();
    assert_eq!(sum(&scrape(addr), "ddc_ready", &[]), 1.0);
}

fn member_state(status: &serde_json::Value, id: &str) -> String {
    status["cluster"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_killed_member_shows_down_on_the_others() {
    let dir = tempfile::Builder::new().prefix("ddc-http-cluster-").tempdir().unwrap();
    let root: &Path = &dir.path().join("cluster");
    let _guard = KillOnDrop(root.to_path_buf());
    let base = free_base_port(3);
    let root_text = root.to_str().unwrap();
    let up = ddc(&["cluster", "up", "--nodes", "3", "--data-dir", root_text, "--base-port", &base.to_string()]);
    let progress = String::from_utf8_lossy(&up.stderr);
    for i in 0..3u16 {
        let line = format!("node-{i} admin: http://127.0.0.1:{}/", base + 80 + i);
        assert!(progress.contains(&line), "`up` prints {line:?}:\n{progress}");
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("cluster-state.json")).unwrap()).unwrap();
    let nodes: Vec<(String, SocketAddr, SocketAddr)> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap().to_owned();
            (id, n["address"].as_str().unwrap().parse().unwrap(), n["http"].as_str().unwrap().parse().unwrap())
        })
        .collect();
    // Replication shows on the leader (followers in sync) and on the followers (replica appends).
    let mut client = ddc_formats::client::Client::connect(nodes[0].1).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let records: Vec<Vec<u8>> = (0..10).map(|i| format!("record {i}").into_bytes()).collect();
    client.produce("orders", &records.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
    wait_until("two in-sync followers and two replica copies", Duration::from_secs(20), || {
        let scrapes: Vec<Vec<Sample>> = nodes.iter().map(|n| scrape(n.2)).collect();
        let in_sync: f64 = scrapes.iter().map(|s| sum(s, "ddc_replica_in_sync", &[("stream", "orders")])).sum();
        let copies = scrapes
            .iter()
            .filter(|s| sum(s, "ddc_stream_replica_append_records_total", &[("stream", "orders")]) == 10.0)
            .count();
        let leader = scrapes
            .iter()
            .filter(|s| sum(s, "ddc_stream_append_records_total", &[("stream", "orders")]) == 10.0)
            .count();
        in_sync == 2.0 && copies == 2 && leader == 1
    });
    // Every member answers every other's probes.
    for (id, _, http) in &nodes {
        wait_until("every other member up", Duration::from_secs(20), || {
            let s = scrape(*http);
            nodes
                .iter()
                .filter(|(other, _, _)| other != id)
                .all(|(other, _, _)| sum(&s, "ddc_peer_up", &[("peer", other)]) == 1.0)
        });
    }
    ddc(&["cluster", "stop-node", "--data-dir", root_text, "--node", "2", "--kill"]);
    let dead = &nodes[2].0;
    for (_, _, http) in &nodes[..2] {
        wait_until("the killed node shown down", Duration::from_secs(20), || {
            let s = scrape(*http);
            let status: serde_json::Value = serde_json::from_str(&get(*http, "/status.json").body).unwrap();
            s.iter().any(|x| x.name == "ddc_peer_up" && x.labels["peer"] == *dead && x.value == 0.0)
                && member_state(&status, dead) == "down"
        });
        let s = scrape(*http);
        let alive = nodes[..2].iter().find(|(_, _, h)| h != http).map(|n| n.0.clone()).unwrap();
        assert_eq!(sum(&s, "ddc_peer_up", &[("peer", &alive)]), 1.0, "the live member stays up");
        let page = get(*http, "/").body;
        assert!(page.contains(&dead[..8]) && page.contains(">down"), "status page shows the dead member down:\n{page}");
    }
    ddc(&["cluster", "down", "--data-dir", root_text]);
}
