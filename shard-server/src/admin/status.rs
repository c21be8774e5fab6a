//! `GET /status.json` and `GET /`: the node's state as one JSON object, and
//! the same [`StatusReport`] rendered as a small HTML page (no script, no
//! external asset; every value escaped).

use std::fmt::Write;
use std::sync::Arc;

use serde::Serialize;

use super::snapshot::{PeerView, ShardView, StreamView};
use super::{get, CorePhase, NodeView};
use crate::access::now_ms;

/// Anchors listed on the status page, most recent first.
const ANCHORS_LISTED: usize = 10;

/// Everything the status page shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub node: NodeStatus,
    pub cluster: Option<ClusterStatus>,
    pub cores: Vec<CoreStatus>,
    /// Every stream of every core, by name.
    pub streams: Vec<StreamView>,
    pub anchoring: Option<AnchorState>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub version: &'static str,
    pub account: Option<String>,
    pub node_id: Option<String>,
    pub listen: String,
    pub http_listen: Option<String>,
    pub cores: usize,
    pub data_dir: String,
    pub started_unix_ms: u64,
    pub uptime_s: u64,
    pub ready: bool,
    pub not_ready_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub k: u8,
    pub n: u8,
    pub replication_total: u8,
    pub min_insync_replicas: u8,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub id: String,
    pub address: String,
    /// "this node", "up", "down" or "unknown" (not probed yet).
    pub state: &'static str,
    pub probe: Option<PeerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CoreStatus {
    pub core: usize,
    /// "starting", "serving", "failed" or "stopped".
    pub phase: &'static str,
    pub snapshot_unix_ms: u64,
    pub connections_open: u64,
    pub usage_journal_failure: Option<String>,
    pub shards: Option<ShardView>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AnchorState {
    pub chain_url: Option<String>,
    pub era_ms: u64,
    /// Eras committed here, not yet anchored.
    pub backlog_eras: u64,
    pub last_committed_era: Option<u64>,
    pub last_anchored_era: Option<u64>,
    pub last_anchored_block: Option<u32>,
    /// The most recent eras, newest first.
    pub recent: Vec<AnchorEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnchorEntry {
    pub era: u64,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    pub block_number: Option<u32>,
    pub block_hash: Option<String>,
    pub extrinsic_index: Option<u32>,
    /// Plancks, as a decimal string (a u128).
    pub fee: Option<String>,
    /// `http.block_explorer_url` filled in, for anchored eras.
    pub explorer_url: Option<String>,
}

fn phase_name(p: CorePhase) -> &'static str {
    match p {
        CorePhase::Starting => "starting",
        CorePhase::Serving => "serving",
        CorePhase::Failed => "failed",
        CorePhase::Stopped => "stopped",
    }
}

/// Copy what the era store says about anchoring (holding its lock only for that).
pub fn anchor_state(anchoring: &crate::anchoring::Anchoring, recent: usize) -> AnchorState {
    let store = anchoring.store.lock().unwrap_or_else(|p| p.into_inner());
    let eras = store.eras();
    let anchored = eras.iter().rev().find(|(_, e)| e.receipt.is_some());
    let entries: Vec<(u64, u64, u64, Option<ddc_anchor::chain::submit::Receipt>)> = eras
        .iter()
        .rev()
        .take(recent)
        .map(|(&n, e)| (n, e.record.fields.start_ms, e.record.fields.end_ms, e.receipt))
        .collect();
    let state = AnchorState {
        chain_url: anchoring.settings.chain_url.clone(),
        era_ms: anchoring.settings.era_ms,
        backlog_eras: eras.values().filter(|e| e.receipt.is_none()).count() as u64,
        last_committed_era: eras.keys().next_back().copied(),
        last_anchored_era: anchored.map(|(&n, _)| n),
        last_anchored_block: anchored.and_then(|(_, e)| e.receipt.map(|r| r.block_number)),
        recent: Vec::new(),
    };
    drop(store);
    AnchorState {
        recent: entries
            .into_iter()
            .map(|(era, start, end, receipt)| AnchorEntry {
                era,
                start_unix_ms: start,
                end_unix_ms: end,
                block_number: receipt.map(|r| r.block_number),
                block_hash: receipt.map(|r| format!("0x{}", hex::encode(r.block_hash))),
                extrinsic_index: receipt.map(|r| r.extrinsic_index),
                fee: receipt.map(|r| r.fee.to_string()),
                explorer_url: None,
            })
            .collect(),
        ..state
    }
}

/// Percent-encode everything but unreserved characters (RFC 3986), for a URL's query.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The explorer link of a block: the template with `{chain_url}` and `{block}` filled in.
pub fn explorer_url(template: &str, chain_url: &str, block_hash: &str) -> String {
    template.replace("{chain_url}", &percent_encode(chain_url)).replace("{block}", &percent_encode(block_hash))
}

/// Gather the report: static facts, every core's last snapshot, anchoring.
pub fn report(view: &Arc<NodeView>) -> StatusReport {
    let info = view.info();
    let readiness = view.readiness();
    let snapshots: Vec<_> = view.cores.iter().map(|c| c.snapshot()).collect();
    let probes: Vec<PeerView> = snapshots.first().map(|s| s.peers.clone()).unwrap_or_default();
    let cluster = info.code.map(|(k, n, replication_total, min_insync_replicas)| ClusterStatus {
        k,
        n,
        replication_total,
        min_insync_replicas,
        members: info
            .members
            .iter()
            .map(|m| {
                let probe = probes.iter().find(|p| p.id == m.id).cloned();
                let state = match (m.is_me, probe.as_ref().and_then(|p| p.up)) {
                    (true, _) => "this node",
                    (false, Some(true)) => "up",
                    (false, Some(false)) => "down",
                    (false, None) => "unknown",
                };
                MemberStatus { id: m.id.clone(), address: m.address.to_string(), state, probe }
            })
            .collect(),
    });
    let cores = view
        .cores
        .iter()
        .zip(&snapshots)
        .enumerate()
        .map(|(core, (slot, snap))| CoreStatus {
            core,
            phase: phase_name(slot.state()),
            snapshot_unix_ms: snap.taken_unix_ms,
            connections_open: get(&slot.counters.connections_accepted)
                .saturating_sub(get(&slot.counters.connections_closed)),
            usage_journal_failure: snap.usage_journal_failure.clone(),
            shards: snap.shards.clone(),
        })
        .collect();
    let mut streams: Vec<StreamView> = snapshots.iter().flat_map(|s| s.streams.iter().cloned()).collect();
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    let anchoring = view.anchoring.as_ref().map(|a| {
        let mut state = anchor_state(a, ANCHORS_LISTED);
        let chain = state.chain_url.clone().unwrap_or_default();
        for entry in &mut state.recent {
            entry.explorer_url = entry.block_hash.as_ref().map(|h| explorer_url(&info.block_explorer_url, &chain, h));
        }
        state
    });
    StatusReport {
        node: NodeStatus {
            version: info.version,
            account: info.account.clone(),
            node_id: info.node_id.clone(),
            listen: info.listen.to_string(),
            http_listen: info.http_listen.map(|a| a.to_string()),
            cores: info.cores,
            data_dir: info.data_dir.clone(),
            started_unix_ms: info.started_unix_ms,
            uptime_s: view.uptime().as_secs(),
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err(),
        },
        cluster,
        cores,
        streams,
        anchoring,
    }
}

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(now: u64, then: Option<u64>) -> String {
    match then {
        Some(t) if t > 0 => duration(now.saturating_sub(t) / 1000) + " ago",
        _ => "never".to_owned(),
    }
}

fn duration(mut s: u64) -> String {
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    s %= 60;
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), |v| esc(&v.to_string()))
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

const STYLE: &str =
    "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-size:.9em}th{background:#f0f0f0}\
.bad{color:#b00;font-weight:bold}.ok{color:#070}code{font-family:monospace,monospace;font-size:.9em}";

/// The status page.
pub fn html(report: &StatusReport, refresh_s: u32) -> String {
    let now = now_ms();
    let mut h = String::with_capacity(16 << 10);
    let n = &report.node;
    let title = n.node_id.as_deref().map(short).or(n.account.as_deref()).unwrap_or("node");
    let _ =
        write!(h, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>shard-server {}</title>", esc(title));
    if refresh_s > 0 {
        let _ = write!(h, "<meta http-equiv=\"refresh\" content=\"{refresh_s}\">");
    }
    let _ = writeln!(h, "<style>{STYLE}</style></head><body>\n<h1>shard-server {}</h1>", esc(title));
    let ready = match &n.not_ready_reason {
        None => "<span class=\"ok\">ready</span>".to_owned(),
        Some(r) => format!("<span class=\"bad\">not ready: {}</span>", esc(r)),
    };
    let _ = writeln!(
        h,
        "<table><tr><th>state</th><td>{ready}</td></tr><tr><th>node id</th><td><code>{}</code></td></tr>\
         <tr><th>account</th><td><code>{}</code></td></tr><tr><th>version</th><td>{}</td></tr>\
         <tr><th>listen</th><td>{}</td></tr><tr><th>admin HTTP</th><td>{}</td></tr><tr><th>cores</th><td>{}</td></tr>\
         <tr><th>data directory</th><td><code>{}</code></td></tr><tr><th>uptime</th><td>{}</td></tr></table>",
        opt(&n.node_id),
        opt(&n.account),
        esc(n.version),
        esc(&n.listen),
        opt(&n.http_listen),
        n.cores,
        esc(&n.data_dir),
        duration(n.uptime_s),
    );
    h.push_str("<p><a href=\"/metrics\">metrics</a> · <a href=\"/status.json\">status.json</a> · <a href=\"/health\">health</a> · <a href=\"/ready\">ready</a></p>\n");
    if let Some(c) = &report.cluster {
        let _ = writeln!(
            h,
            "<h2>Cluster</h2><p>k={} n={} replication={} min_insync={}; members as this node sees them (a ping every 2 s):</p>\
             <table><tr><th>node</th><th>address</th><th>state</th><th>last answer</th><th>round trip</th><th>last error</th></tr>",
            c.k, c.n, c.replication_total, c.min_insync_replicas
        );
        for m in &c.members {
            let class = match m.state {
                "down" => "bad",
                "up" | "this node" => "ok",
                _ => "",
            };
            let p = m.probe.as_ref();
            let error = p.and_then(|p| {
                p.last_error.as_ref().map(|e| format!("{} ({})", esc(e), ago(now, p.last_error_unix_ms)))
            });
            let timed_out = if p.is_some_and(|p| p.recently_failed) { " (connect timed out recently)" } else { "" };
            let _ = writeln!(
                h,
                "<tr><td><code title=\"{}\">{}</code></td><td>{}</td><td class=\"{class}\">{}{timed_out}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.id),
                esc(short(&m.id)),
                esc(&m.address),
                m.state,
                if m.is_me() { "-".to_owned() } else { ago(now, p.and_then(|p| p.last_ok_unix_ms)) },
                p.and_then(|p| p.rtt_micros).map_or("-".to_owned(), |r| format!("{:.1} ms", r as f64 / 1e3)),
                error.unwrap_or_else(|| "-".to_owned()),
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Cores</h2><table><tr><th>core</th><th>phase</th><th>connections</th><th>snapshot</th><th>shards held</th><th>damaged</th><th>repair backlog</th><th>problem</th></tr>\n");
    for c in &report.cores {
        let s = c.shards.as_ref();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
            c.core,
            c.phase,
            c.connections_open,
            ago(now, Some(c.snapshot_unix_ms)),
            s.map_or("-".to_owned(), |s| opt(&s.held)),
            s.map_or("-".to_owned(), |s| s.damaged.to_string()),
            s.map_or("-".to_owned(), |s| s.repair_backlog.to_string()),
            c.usage_journal_failure.as_ref().map_or(String::new(), |f| format!("usage journal failed: {}", esc(f))),
        );
    }
    h.push_str("</table>\n");
    for c in &report.cores {
        for d in c.shards.iter().flat_map(|s| &s.damaged_listed) {
            let _ = writeln!(
                h,
                "<p class=\"bad\">damaged shard {} of {} segment {}: {}</p>",
                d.index,
                esc(&d.stream),
                d.base_offset,
                esc(&d.reason)
            );
        }
    }
    streams_html(&mut h, report, now);
    if let Some(a) = &report.anchoring {
        anchors_html(&mut h, a, now);
    }
    let _ = writeln!(h, "<p>as of {} (Unix ms); cores publish their state once a second.</p></body></html>", now);
    h
}

impl MemberStatus {
    fn is_me(&self) -> bool {
        self.state == "this node"
    }
}

fn streams_html(h: &mut String, report: &StatusReport, now: u64) {
    let _ = writeln!(
        h,
        "<h2>Streams ({})</h2><table><tr><th>stream</th><th>core</th><th>role</th><th>first offset</th><th>high watermark</th>\
         <th>next offset</th><th>segments open / sealed</th><th>bytes</th><th>followers (lag in records)</th><th>problem</th></tr>",
        report.streams.len()
    );
    for s in &report.streams {
        let followers: Vec<String> = s
            .followers
            .iter()
            .map(|f| {
                let state = if f.in_sync {
                    "in sync"
                } else if f.connected {
                    "lagging"
                } else {
                    "unreachable"
                };
                format!("<code>{}</code> {} ({})", esc(short(&f.id)), state, opt(&f.lag_records))
            })
            .collect();
        let problem = s
            .writes_fenced
            .as_ref()
            .map(|r| format!("writes fenced: {}", esc(r)))
            .or(s.recovery_failed.as_ref().map(|r| format!("failed recovery: {}", esc(r))))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
            esc(&s.name),
            s.core,
            s.role,
            s.first_offset,
            s.high_watermark,
            s.next_offset,
            s.segments_open,
            s.segments_sealed,
            s.log_bytes,
            if followers.is_empty() { "-".to_owned() } else { followers.join("<br>") },
            problem,
        );
    }
    h.push_str("</table>\n");
    let coded: Vec<&StreamView> = report.streams.iter().filter(|s| !s.redundancy.is_empty()).collect();
    if coded.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Segment redundancy</h2><p>Coded segments of the streams this node leads (the most recent, and every degraded one). \
         Healthy shards are as the last repair pass found them.</p><table><tr><th>stream</th><th>segment</th><th>bytes</th><th>k / n</th>\
         <th>healthy</th><th>checked</th></tr>\n",
    );
    for s in coded {
        for r in &s.redundancy {
            let (healthy, class) = match r.healthy {
                Some(x) if x < r.k => (format!("{x} of {} (unreadable)", r.n), "bad"),
                Some(x) if x < r.n => (format!("{x} of {} (degraded)", r.n), "bad"),
                Some(x) => (format!("{x} of {}", r.n), "ok"),
                None => (format!("{} of {} when placed", r.n, r.n), ""),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}..{}</td><td>{}</td><td>{} / {}</td><td class=\"{class}\">{healthy}</td><td>{}</td></tr>",
                esc(&s.name),
                r.base_offset,
                r.next_offset,
                r.segment_bytes,
                r.k,
                r.n,
                if r.checked_unix_ms.is_some() { ago(now, r.checked_unix_ms) } else { "not since start".to_owned() },
            );
        }
    }
    h.push_str("</table>\n");
}

fn anchors_html(h: &mut String, a: &AnchorState, now: u64) {
    let _ = writeln!(
        h,
        "<h2>Anchoring</h2><p>chain {} · era {} · last anchored era {} in block {} · {} era(s) waiting to be anchored</p>\
         <table><tr><th>era</th><th>ended</th><th>block</th><th>block hash</th><th>extrinsic</th><th>fee (plancks)</th></tr>",
        opt(&a.chain_url),
        duration(a.era_ms / 1000),
        opt(&a.last_anchored_era),
        opt(&a.last_anchored_block),
        a.backlog_eras,
    );
    for e in &a.recent {
        let hash = match (&e.block_hash, &e.explorer_url) {
            (Some(hash), Some(url)) => format!("<a href=\"{}\"><code>{}</code></a>", esc(url), esc(hash)),
            (Some(hash), None) => format!("<code>{}</code>", esc(hash)),
            _ => "not anchored yet".to_owned(),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{hash}</td><td>{}</td><td>{}</td></tr>",
            e.era,
            ago(now, Some(e.end_unix_ms)),
            opt(&e.block_number),
            opt(&e.extrinsic_index),
            opt(&e.fee),
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_links_are_escaped() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
        let url = explorer_url(crate::config::BLOCK_EXPLORER_URL_DEFAULT, "ws://127.0.0.1:8000", "0xab");
        assert_eq!(url, "https://polkadot.js.org/apps/?rpc=ws%3A%2F%2F127.0.0.1%3A8000#/explorer/query/0xab");
        assert_eq!(duration(3725), "1h 2m");
        assert_eq!(duration(59), "59s");
    }
}
