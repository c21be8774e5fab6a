//! The status page in a real browser, and the Grafana dashboard against real
//! scrapes.
//!
//! A 3-node cluster (`ddc cluster up`, real processes) takes a produce, one
//! node is SIGKILLed, and Debian's chromium, headless, renders another node's
//! status page: the DOM it built must name the node, list all three members
//! with the killed one down, and the stream; its screenshot must be a real
//! 1280x1024 picture. The browser test skips, saying so, when chromium is not
//! installed, unless `DDC_REQUIRE_BROWSER=1` (set by `./test.sh` once it has
//! installed chromium).
//!
//! `docs/grafana-dashboard.json` must parse, import anywhere (every query on
//! the `${DS_PROMETHEUS}` input), and query only metric names that
//! docs/OPERATIONS.md documents and that a live cluster node, or an anchoring
//! node, actually exposes.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::local_cluster::{ddc_ok as ddc, free_base_port, KillOnDrop};
use common::{http_get, run_with_timeout, wait_until, Node};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one chromium run may take (it starts in about 2 s here).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the cluster may take to show a change (probes every 2 s, snapshots every second).
const SHOW_TIMEOUT: Duration = Duration::from_secs(30);

/// One member of a local cluster, as `cluster-state.json` lists it.
struct Member {
    id: String,
    address: SocketAddr,
    http: SocketAddr,
}

/// A local cluster started with `ddc cluster up --nodes 3`; SIGKILLed when dropped.
struct Cluster {
    root: PathBuf,
    members: Vec<Member>,
    _guard: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = tempfile::Builder::new().prefix("ddc-status-page-").tempdir().unwrap();
        let root = dir.path().join("cluster");
        let guard = KillOnDrop(root.clone());
        let base = free_base_port(3).to_string();
        ddc(&["cluster", "up", "--nodes", "3", "--data-dir", root.to_str().unwrap(), "--base-port", &base]);
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("cluster-state.json")).unwrap()).unwrap();
        let members = state["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| Member {
                id: n["id"].as_str().unwrap().to_owned(),
                address: n["address"].as_str().unwrap().parse().unwrap(),
                http: n["http"].as_str().expect("cluster up gives every node an admin endpoint").parse().unwrap(),
            })
            .collect();
        Cluster { root, members, _guard: guard, _dir: dir }
    }

    fn root(&self) -> &str {
        self.root.to_str().unwrap()
    }

    /// Produce `count` records to `stream` through member `via`.
    fn produce(&self, via: usize, stream: &str, count: usize) {
        let mut client = ddc_formats::client::Client::connect(self.members[via].address).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let records: Vec<Vec<u8>> = (0..count).map(|i| format!("{stream} record {i}").into_bytes()).collect();
        client.produce(stream, &records.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
    }

    /// Member `i`'s `/status.json`.
    fn status(&self, i: usize) -> serde_json::Value {
        let (code, body) = http_get(self.members[i].http, "/status.json");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status.json parses")
    }

    /// The state member `i` shows for member `of` ("this node", "up", "down", "unknown").
    fn state_seen(&self, i: usize, of: usize) -> String {
        let status = self.status(i);
        let members = status["cluster"]["members"].as_array().expect("a cluster node lists its members");
        let m = members.iter().find(|m| m["id"] == self.members[of].id.as_str());
        m.and_then(|m| m["state"].as_str()).unwrap_or_default().to_owned()
    }

    fn down(self) {
        ddc(&["cluster", "down", "--data-dir", self.root()]);
    }
}

/// Chromium ([`CHROMIUM`], else `chromium` on the PATH, as `./test.sh` finds it), or `None`
/// (after saying why) when it is not installed and not required.
fn browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path).map(|dir| dir.join("chromium"));
    if let Some(found) = std::iter::once(PathBuf::from(CHROMIUM)).chain(on_path).find(|p| p.is_file()) {
        return Some(found);
    }
    let message =
        format!("skipping: neither {CHROMIUM} nor chromium on the PATH; install chromium (./test.sh does) to run the browser test");
    if std::env::var("DDC_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{message} (DDC_REQUIRE_BROWSER=1 requires it)");
    }
    eprintln!("{message}");
    None
}

/// Run headless chromium with a fresh profile and `args`; fails the test unless it exits 0 in time.
fn run_browser(chromium: &Path, args: &[String]) -> std::process::Output {
    let profile = tempfile::Builder::new().prefix("ddc-chromium-").tempdir().unwrap();
    let mut cmd = Command::new(chromium);
    // These flags keep it off the network (this machine has none) and let it run as root.
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args);
    let out = run_with_timeout(cmd, b"", BROWSER_TIMEOUT);
    assert!(
        out.status.success(),
        "chromium {args:?} failed with {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `<tr>...</tr>` of the DOM that contains `needle`.
fn row_with<'a>(dom: &'a str, needle: &str) -> &'a str {
    let at = dom.find(needle).unwrap_or_else(|| panic!("the page has no {needle:?}:\n{dom}"));
    let start = dom[..at].rfind("<tr>").unwrap_or_else(|| panic!("{needle:?} is not in a table row:\n{dom}"));
    let end = at + dom[at..].find("</tr>").unwrap_or_else(|| panic!("unclosed row around {needle:?}:\n{dom}"));
    &dom[start..end]
}

#[test]
fn a_browser_shows_a_killed_member_down_on_the_status_page() {
    let Some(chromium) = browser() else { return };
    let cluster = Cluster::up();
    cluster.produce(0, "orders", 25);
    // Node 0 holds the stream (replication 3: every member does) and sees everyone up.
    wait_until("node 0 listing orders and seeing every member up", SHOW_TIMEOUT, || {
        let status = cluster.status(0);
        let listed = status["streams"].as_array().unwrap().iter().any(|s| s["name"] == "orders");
        listed && cluster.state_seen(0, 1) == "up" && cluster.state_seen(0, 2) == "up"
    });
    ddc(&["cluster", "stop-node", "--data-dir", cluster.root(), "--node", "2", "--kill"]);
    wait_until("node 0 showing node 2 down", SHOW_TIMEOUT, || cluster.state_seen(0, 2) == "down");
    let account = cluster.status(0)["node"]["account"].as_str().expect("the node's account").to_owned();
    let url = format!("http://{}/", cluster.members[0].http);

    // The DOM chromium built from the page.
    let out = run_browser(&chromium, &["--dump-dom".to_owned(), url.clone()]);
    let dom = String::from_utf8(out.stdout).expect("the DOM is UTF-8");
    // The parser inserts <tbody> into every table: this is the browser's DOM, not the bytes served.
    assert!(dom.contains("<tbody>"), "not a parsed DOM:\n{dom}");
    let me = &cluster.members[0].id;
    assert!(dom.contains(&format!("<title>shard-server {}</title>", &me[..8])), "title names the node:\n{dom}");
    assert!(row_with(&dom, "<th>node id</th>").contains(&format!("<code>{me}</code>")), "node id:\n{dom}");
    assert!(row_with(&dom, "<th>account</th>").contains(&format!("<code>{account}</code>")), "account:\n{dom}");
    assert!(row_with(&dom, "<th>state</th>").contains(">ready<"), "node 0 is ready:\n{dom}");
    // Every member, each in its row, with the state this node sees.
    let expected =
        [(0, "<td class=\"ok\">this node</td>"), (1, "<td class=\"ok\">up</td>"), (2, "<td class=\"bad\">down")];
    for (i, state) in expected {
        let m = &cluster.members[i];
        let row = row_with(&dom, &format!("title=\"{}\"", m.id));
        assert!(row.contains(&format!(">{}</code>", &m.id[..8])), "member {i} by short id: {row}");
        assert!(row.contains(&format!("<td>{}</td>", m.address)), "member {i}'s address: {row}");
        assert!(row.contains(state), "member {i} should show {state:?}: {row}");
    }
    // The killed one with why: its address refused the probes.
    let dead = row_with(&dom, &format!("title=\"{}\"", cluster.members[2].id));
    assert!(dead.contains("unreachable"), "the down member's last error: {dead}");
    let orders = row_with(&dom, "<td>orders</td>");
    assert!(orders.contains("<td>25</td>"), "orders with its high watermark: {orders}");

    // A screenshot: a PNG of the window's size with something drawn in it.
    let shots = tempfile::Builder::new().prefix("ddc-screenshot-").tempdir().unwrap();
    let png_path = shots.path().join("page.png");
    run_browser(
        &chromium,
        &[format!("--screenshot={}", png_path.display()), "--window-size=1280,1024".to_owned(), url],
    );
    let png = std::fs::read(&png_path).unwrap_or_else(|e| panic!("chromium wrote no {}: {e}", png_path.display()));
    assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]), "PNG signature");
    assert_eq!(png.get(12..16), Some(&b"IHDR"[..]), "IHDR first");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 1024), "the window size");
    // A blank page of that size compresses to about 7 KB; this page's text and tables to about 100 KB.
    assert!(png.len() > 30_000, "screenshot of {} bytes: nearly blank?", png.len());
    eprintln!("DOM {} bytes, screenshot {} bytes", dom.len(), png.len());
    cluster.down();
}

/// Metric names (`ddc_...`) in the sample lines of an exposition.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn scrape_names(http: SocketAddr) -> BTreeSet<String> {
    let (code, body) = http_get(http, "/metrics");
    assert_eq!(code, 200, "{body}");
    sample_names(&body)
}

/// The `ddc_...` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("ddc_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_documented_and_scraped() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let text = std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("grafana-dashboard.json parses");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 38, "Grafana 10 schema");
    let operations = std::fs::read_to_string(docs.join("OPERATIONS.md")).unwrap();
    let metrics_section =
        &operations[operations.find("\n## Metrics\n").expect("OPERATIONS.md has a Metrics section")..];
    let metrics_section =
        &metrics_section[..metrics_section[1..].find("\n## ").map_or(metrics_section.len(), |end| end + 1)];

    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel id of {title:?} repeats");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} queries no ddc metric");
            for name in names {
                // Histograms are documented by family, queried by series.
                let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
                let documented = [Some(name.as_str()), family]
                    .into_iter()
                    .flatten()
                    .any(|n| metrics_section.contains(&format!("`{n}`")));
                assert!(documented, "{title}: {name} is not in docs/OPERATIONS.md, Metrics");
                used.insert(name);
            }
        }
    }
    for wanted in ["ddc_peer_up", "ddc_fsync_duration_seconds_bucket", "ddc_replication_lag_records"] {
        assert!(used.contains(wanted), "the dashboard shows {wanted}");
    }

    // What real nodes expose: every member of a cluster that replicated a stream and
    // answered an error (some series exist only on a leader, once they occurred, or after
    // the first peer probe) ...
    let cluster = Cluster::up();
    cluster.produce(1, "orders", 10);
    let mut client = ddc_formats::client::Client::connect(cluster.members[0].address).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    client.fetch("orders", 1_000_000, 1 << 20, 0).expect_err("a fetch past the end is refused");
    let mut scraped = BTreeSet::new();
    wait_until("every metric but anchoring's in the cluster's scrapes", SHOW_TIMEOUT, || {
        scraped = cluster.members.iter().flat_map(|m| scrape_names(m.http)).collect();
        used.iter().filter(|n| !n.starts_with("ddc_anchor_")).all(|n| scraped.contains(n))
    });
    // ... and a node that anchors (to a chain that is not there: the anchoring gauges exist anyway).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let anchoring = Node::start_with_config(&format!("[anchor]\nchain_url = \"ws://{closed}\"\nera_ms = 1000\n"));
    scraped.extend(scrape_names(anchoring.http_addr));
    let missing: Vec<&String> = used.difference(&scraped).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics no node exposes: {missing:?}\nscraped: {scraped:?}");
    eprintln!("{} metric names in the dashboard, all among {} scraped", used.len(), scraped.len());
    cluster.down();
}
