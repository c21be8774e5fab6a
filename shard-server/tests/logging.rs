//! Structured logs of the real `shard-server` process: with `--log-json`
//! every stderr line is a JSON object, and the lines about a request carry
//! its connection (`core`, `conn`, `peer`) and, at debug level, the request
//! (`request_id`, `stream`), also when another core serves it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, SERVER_BIN, START_TIMEOUT};
use ddc_formats::client::Client;
use ddc_formats::message::{Request, Response};
use ddc_formats::wire::ErrorCode;
use serde_json::Value;

/// A `shard-server` started with extra flags and its stderr in a file; killed on drop.
struct LoggingNode {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggingNode {
    fn start(flags: &[&str], rust_log: Option<&str>) -> LoggingNode {
        let dir = tempfile::Builder::new().prefix("ddc-logging-").tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(SERVER_BIN);
        cmd.args(["--listen", &addr, "--http-listen", "127.0.0.1:0", "--cores", "2", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(flags)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd.spawn().expect("spawn shard-server");
        let mut node = LoggingNode { child, addr, log, _dir: dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut client) = Client::connect(node.addr.as_str()) {
                client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                if client.ping().is_ok() {
                    return node;
                }
            }
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("shard-server exited with {status}:\n{}", node.log_text());
            }
            assert!(Instant::now() < deadline, "shard-server did not answer in time:\n{}", node.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn client(&self) -> Client {
        let client = Client::connect(self.addr.as_str()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        client
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait for the clean stop (so every line is written), return the log's lines as JSON.
    fn stop_and_parse(mut self) -> Vec<Value> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "shard-server did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        parse_lines(&self.log)
    }
}

impl Drop for LoggingNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every line must be one JSON object: a text line would break log shippers.
fn parse_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}")))
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// The span named `name` among the line's spans (outermost first).
fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

/// Send one request on its own, return its frame id and answer.
fn call(client: &mut Client, request: &Request<'_>) -> (u64, Response) {
    let id = client.send(request).unwrap();
    let (answered, response) = client.recv().unwrap();
    assert_eq!(answered, id);
    (id, response)
}

#[test]
fn debug_json_lines_carry_connection_and_request_ids() {
    let node = LoggingNode::start(&["--log-json", "--log-level", "debug"], None);
    let mut client = node.client();
    let (refused_id, response) = call(&mut client, &Request::StreamInfo { stream: "no-such-stream" });
    assert!(matches!(response, Response::Error { code: ErrorCode::UnknownStream, .. }), "{response:?}");
    // Several streams, so that some belong to the other core (the request travels there).
    let names: Vec<String> = (0..6).map(|i| format!("logged-{i}")).collect();
    let created: Vec<(u64, &str)> = names
        .iter()
        .map(|name| {
            let (id, response) = call(&mut client, &Request::CreateStream { stream: name });
            assert!(matches!(response, Response::CreateStream { created: true }), "{response:?}");
            (id, name.as_str())
        })
        .collect();
    drop(client);
    let lines = node.stop_and_parse();

    let refused = lines
        .iter()
        .find(|l| message(l) == "request refused" && l["span"]["stream"] == "no-such-stream")
        .unwrap_or_else(|| panic!("no 'request refused' line for the unknown stream in {lines:#?}"));
    assert_eq!(refused["level"], "DEBUG");
    assert_eq!(refused["fields"]["code"], "UnknownStream");
    assert_eq!(refused["span"]["name"], "request");
    assert_eq!(refused["span"]["request_id"], refused_id);
    let conn = span(refused, "conn").expect("the request span sits inside the connection's span");
    let (conn_id, core) = (conn["conn"].as_u64().unwrap(), conn["core"].as_u64().unwrap());
    assert!(conn_id >= 1 && core < 2, "{conn}");
    assert!(conn["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{conn}");

    // The engine logs each creation on the stream's owner core; the line still names the request.
    let mut owner_cores = std::collections::HashSet::new();
    for (id, name) in created {
        let line = lines
            .iter()
            .find(|l| message(l) == "created stream" && l["fields"]["stream"] == name)
            .unwrap_or_else(|| panic!("no 'created stream' line for {name}"));
        assert_eq!(line["span"]["request_id"], id, "{line}");
        assert_eq!(line["span"]["stream"], name, "{line}");
        let conn = span(line, "conn").unwrap();
        assert_eq!((conn["conn"].as_u64(), conn["core"].as_u64()), (Some(conn_id), Some(core)), "{line}");
        owner_cores.insert(line["fields"]["core"].as_u64().unwrap());
    }
    assert_eq!(owner_cores.len(), 2, "six streams all hashed to one core; pick other names");
}

#[test]
fn info_level_keeps_the_connection_span_and_leaves_out_request_spans() {
    let node = LoggingNode::start(&["--log-json"], None);
    let mut client = node.client();
    let (_, response) = call(&mut client, &Request::CreateStream { stream: "quiet" });
    assert!(matches!(response, Response::CreateStream { created: true }), "{response:?}");
    let (_, response) = call(&mut client, &Request::StreamInfo { stream: "no-such-stream" });
    assert!(matches!(response, Response::Error { .. }), "{response:?}");
    drop(client);
    let lines = node.stop_and_parse();
    assert!(lines.iter().all(|l| l["level"] != "DEBUG"), "debug lines at the default level");
    assert!(!lines.iter().any(|l| message(l) == "request refused"));
    let created = lines.iter().find(|l| message(l) == "created stream").expect("a 'created stream' line");
    assert!(span(created, "conn").is_some(), "{created}");
    assert!(span(created, "request").is_none(), "{created}");
}

#[test]
fn rust_log_overrides_the_log_level_flag() {
    // RUST_LOG wins over --log-level: warn hides the info lines a start writes.
    let node = LoggingNode::start(&["--log-json", "--log-level", "debug"], Some("warn"));
    let lines_before_stop = node.log_text();
    let lines = node.stop_and_parse();
    assert!(lines.iter().all(|l| l["level"] == "WARN" || l["level"] == "ERROR"), "{lines_before_stop}");
    assert!(!lines.iter().any(|l| message(l) == "shard-server ready"));
}
