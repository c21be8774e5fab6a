//! `GET /metrics`: every metric in the Prometheus text exposition format
//! 0.0.4, written by `prometheus-client` from values read at scrape time.
//!
//! Nothing is registered ahead of time: a [`Collector`] reads the cores'
//! counters and snapshots when asked. Counter names get `_total` from the
//! encoder. Every family is listed, with its labels and meaning, in
//! docs/OPERATIONS.md ("Metrics"); keep the two in step.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use ddc_engine::stats::{HistogramValues, StreamStats};
use ddc_formats::wire::ErrorCode;

use super::snapshot::CoreSnapshot;
use super::{get, AuthFailure, FrameRefusal, NodeView, ERROR_CODE_SLOTS};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;
type Fmt = Result<(), std::fmt::Error>;

/// The whole exposition, now.
pub fn render(view: &Arc<NodeView>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector(view.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a label or name.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "metrics could not be encoded");
    }
    out
}

struct NodeCollector(Arc<NodeView>);

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let view = &self.0;
        let snapshots: Vec<Arc<CoreSnapshot>> = view.cores.iter().map(|c| c.snapshot()).collect();
        let streams: Vec<(usize, Arc<StreamStats>)> = view
            .cores
            .iter()
            .enumerate()
            .flat_map(|(core, slot)| {
                slot.engine().map(|e| e.streams()).unwrap_or_default().into_iter().map(move |s| (core, s))
            })
            .collect();
        process(&mut encoder, view)?;
        traffic(&mut encoder, view, &streams)?;
        commits(&mut encoder, view, &streams)?;
        stream_state(&mut encoder, &snapshots)?;
        connections(&mut encoder, view)?;
        if view.info().code.is_some() {
            cluster(&mut encoder, view, &snapshots)?;
        }
        if let Some(anchoring) = &view.anchoring {
            anchor(&mut encoder, anchoring)?;
        }
        Ok(())
    }
}

fn core_label(core: usize) -> Labels {
    vec![("core", core.to_string())]
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, u64)]) -> Fmt {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family.encode_family(labels)?.encode_counter::<NoLabelSet, u64, u64>(value, None)?;
    }
    Ok(())
}

fn gauge<V: EncodeGaugeValue>(enc: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, V)]) -> Fmt {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

/// A histogram whose stored values are divided by `scale` (microseconds to seconds: 1e6).
fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, HistogramValues)],
    scale: f64,
) -> Fmt {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .map(|&b| b as f64 / scale)
            .chain(std::iter::once(f64::INFINITY))
            .zip(h.counts.iter().copied())
            .collect();
        family.encode_family(labels)?.encode_histogram::<NoLabelSet>(
            h.sum as f64 / scale,
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

fn process(enc: &mut DescriptorEncoder, view: &NodeView) -> Fmt {
    let info = view.info();
    gauge(
        enc,
        "ddc_build_info",
        "Always 1; the version of shard-server in a label.",
        &[(vec![("version", info.version.to_owned())], 1u64)],
    )?;
    gauge(
        enc,
        "ddc_start_time_seconds",
        "When the process started, Unix time in seconds.",
        &[(vec![], info.started_unix_ms as f64 / 1e3)],
    )?;
    gauge(enc, "ddc_uptime_seconds", "Seconds since the process started.", &[(vec![], view.uptime().as_secs_f64())])?;
    gauge(enc, "ddc_cores", "Executors (cores) the node runs.", &[(vec![], info.cores as u64)])?;
    let ready = u64::from(view.readiness().is_ok());
    gauge(
        enc,
        "ddc_ready",
        "1 when every core serves and the node is not stopping (what /ready answers 200 for).",
        &[(vec![], ready)],
    )
}

/// Appends and fetches, per stream and per core.
fn traffic(enc: &mut DescriptorEncoder, view: &NodeView, streams: &[(usize, Arc<StreamStats>)]) -> Fmt {
    type Field = fn(&StreamStats) -> &std::sync::atomic::AtomicU64;
    let families: [(&str, &str, &str, Field); 6] = [
        (
            "ddc_stream_append_records",
            "ddc_core_append_records",
            "Records appended as new batches (produces served by this node's log).",
            |s| &s.appended_records,
        ),
        (
            "ddc_stream_append_bytes",
            "ddc_core_append_bytes",
            "Bytes appended as new batches: batch headers and records, as the batches take them in the log.",
            |s| &s.appended_bytes,
        ),
        (
            "ddc_stream_replica_append_records",
            "ddc_core_replica_append_records",
            "Records appended as a follower, copied from the stream's leader.",
            |s| &s.replicated_records,
        ),
        (
            "ddc_stream_replica_append_bytes",
            "ddc_core_replica_append_bytes",
            "Bytes (batch headers included) appended as a follower.",
            |s| &s.replicated_bytes,
        ),
        (
            "ddc_stream_fetch_records",
            "ddc_core_fetch_records",
            "Records sent in fetch answers read from this node's log (whole batches).",
            |s| &s.fetched_records,
        ),
        (
            "ddc_stream_fetch_bytes",
            "ddc_core_fetch_bytes",
            "Bytes (batch headers included) sent in fetch answers read from this node's log.",
            |s| &s.fetched_bytes,
        ),
    ];
    for (stream_name, core_name, help, field) in families {
        let per_stream: Vec<(Labels, u64)> = streams
            .iter()
            .map(|(core, s)| (vec![("stream", s.name.clone()), ("core", core.to_string())], get(field(s))))
            .collect();
        counter(enc, stream_name, help, &per_stream)?;
        let per_core: Vec<(Labels, u64)> = (0..view.cores.len())
            .map(|core| {
                (core_label(core), streams.iter().filter(|(c, _)| *c == core).map(|(_, s)| get(field(s))).sum())
            })
            .collect();
        counter(enc, core_name, &format!("{help} Sum over the core's streams."), &per_core)?;
    }
    Ok(())
}

/// Group commits: fdatasync latency and size, per core.
fn commits(enc: &mut DescriptorEncoder, view: &NodeView, streams: &[(usize, Arc<StreamStats>)]) -> Fmt {
    let per_core = |pick: fn(&StreamStats) -> HistogramValues| -> Vec<(Labels, HistogramValues)> {
        (0..view.cores.len())
            .map(|core| {
                let mut sum = HistogramValues::default();
                for (_, s) in streams.iter().filter(|(c, _)| *c == core) {
                    sum.add(&pick(s));
                }
                if sum.counts.is_empty() {
                    // No stream yet: empty buckets with the right bounds.
                    sum = pick(&StreamStats::new(""));
                }
                (core_label(core), sum)
            })
            .collect()
    };
    histogram(
        enc,
        "ddc_fsync_duration_seconds",
        "Latency of the fdatasync of each group commit (the wait every durable append shares).",
        &per_core(|s| s.fsync_micros.values()),
        1e6,
    )?;
    histogram(
        enc,
        "ddc_group_commit_bytes",
        "Bytes written by each group commit (one fdatasync).",
        &per_core(|s| s.commit_bytes.values()),
        1.0,
    )?;
    histogram(
        enc,
        "ddc_group_commit_batches",
        "Batches made durable by each group commit (one fdatasync).",
        &per_core(|s| s.commit_batches.values()),
        1.0,
    )
}

/// Streams and segments, from the cores' snapshots.
fn stream_state(enc: &mut DescriptorEncoder, snapshots: &[Arc<CoreSnapshot>]) -> Fmt {
    let streams = || snapshots.iter().flat_map(|s| s.streams.iter().filter(|v| v.recovery_failed.is_none()));
    let labels = |name: &str, core: usize| vec![("stream", name.to_owned()), ("core", core.to_string())];
    gauge(
        enc,
        "ddc_streams",
        "Streams the core holds (as of its last snapshot, at most 1 s old).",
        &snapshots.iter().map(|s| (core_label(s.core), s.streams.len() as u64)).collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "ddc_stream_high_watermark",
        "One past the stream's last durable offset.",
        &streams().map(|v| (labels(&v.name, v.core), v.high_watermark)).collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "ddc_stream_log_bytes",
        "Durable bytes of the stream's segments on this node.",
        &streams().map(|v| (labels(&v.name, v.core), v.log_bytes)).collect::<Vec<_>>(),
    )?;
    let mut segments = Vec::new();
    for v in streams() {
        for (state, n) in [("open", v.segments_open), ("sealed", v.segments_sealed)] {
            let mut l = labels(&v.name, v.core);
            l.push(("state", state.to_owned()));
            segments.push((l, n));
        }
    }
    gauge(enc, "ddc_stream_segments", "Segments of the stream on this node, open or sealed.", &segments)?;
    let mut per_core = Vec::new();
    for s in snapshots {
        for (state, n) in [
            ("open", s.streams.iter().map(|v| v.segments_open).sum::<u64>()),
            ("sealed", s.streams.iter().map(|v| v.segments_sealed).sum()),
        ] {
            per_core.push((vec![("core", s.core.to_string()), ("state", state.to_owned())], n));
        }
    }
    gauge(enc, "ddc_segments", "Segments on this core, open or sealed.", &per_core)?;
    let fenced: Vec<(Labels, u64)> = snapshots
        .iter()
        .flat_map(|s| s.streams.iter())
        .map(|v| (labels(&v.name, v.core), u64::from(v.writes_fenced.is_some() || v.recovery_failed.is_some())))
        .collect();
    gauge(enc, "ddc_stream_writes_fenced", "1 when the stream refuses writes (a failed write or fsync, a full disk, failed recovery) until the node restarts.", &fenced)?;
    gauge(
        enc,
        "ddc_usage_journal_failed",
        "1 when the core's usage journal failed (a full disk): the core refuses produces until restarted.",
        &snapshots
            .iter()
            .map(|s| (core_label(s.core), u64::from(s.usage_journal_failure.is_some())))
            .collect::<Vec<_>>(),
    )
}

fn connections(enc: &mut DescriptorEncoder, view: &NodeView) -> Fmt {
    let per_core = |f: &dyn Fn(&super::CoreCounters) -> u64| -> Vec<(Labels, u64)> {
        view.cores.iter().enumerate().map(|(core, slot)| (core_label(core), f(&slot.counters))).collect()
    };
    counter(
        enc,
        "ddc_connections_accepted",
        "TCP connections accepted (clients and other nodes).",
        &per_core(&|c| get(&c.connections_accepted)),
    )?;
    counter(enc, "ddc_connections_closed", "TCP connections closed.", &per_core(&|c| get(&c.connections_closed)))?;
    counter(
        enc,
        "ddc_connections_refused",
        "Connections refused at server.connections_max (answered Overloaded and closed).",
        &per_core(&|c| get(&c.connections_refused)),
    )?;
    counter(
        enc,
        "ddc_connections_evicted",
        "Connections closed because their client stopped reading the answers (server.write_stall_timeout_ms, or 1 s when answer memory is short).",
        &per_core(&|c| get(&c.connections_evicted)),
    )?;
    gauge(
        enc,
        "ddc_connections_open",
        "TCP connections open now.",
        &per_core(&|c| get(&c.connections_accepted).saturating_sub(get(&c.connections_closed))),
    )?;
    let mut refused = Vec::new();
    let mut auth = Vec::new();
    let mut errors = Vec::new();
    for (core, slot) in view.cores.iter().enumerate() {
        for why in FrameRefusal::ALL {
            refused.push((
                vec![("core", core.to_string()), ("reason", why.label().to_owned())],
                slot.counters.frames_refused(why),
            ));
        }
        for why in AuthFailure::ALL {
            auth.push((
                vec![("core", core.to_string()), ("reason", why.label().to_owned())],
                slot.counters.auth_failures(why),
            ));
        }
        for (code, n) in slot.counters.error_responses().into_iter().enumerate().filter(|(_, n)| *n > 0) {
            let name = match code {
                c if c == ERROR_CODE_SLOTS - 1 => "other".to_owned(),
                c => ErrorCode(c as u16).variant_name().map_or_else(|| format!("code_{c}"), str::to_owned),
            };
            errors.push((vec![("core", core.to_string()), ("code", name)], n));
        }
    }
    counter(enc, "ddc_frames_refused", "Frames refused before reaching a request handler, by reason (oversized, bad_header, checksum, incomplete, invalid_message).", &refused)?;
    counter(enc, "ddc_auth_failures", "Authentication and authorization failures, by reason (handshake_failed, handshake_required, session_tag, permission_denied, unauthenticated).", &auth)?;
    counter(
        enc,
        "ddc_error_responses",
        "Error answers sent, by error code (only codes that occurred are listed).",
        &errors,
    )
}

fn cluster(enc: &mut DescriptorEncoder, view: &NodeView, snapshots: &[Arc<CoreSnapshot>]) -> Fmt {
    let shard_gauge = |f: &dyn Fn(&super::snapshot::ShardView) -> Option<u64>| -> Vec<(Labels, u64)> {
        snapshots.iter().filter_map(|s| s.shards.as_ref().and_then(f).map(|n| (core_label(s.core), n))).collect()
    };
    gauge(enc, "ddc_shards_held", "Shard files this core holds (counted every 5 s).", &shard_gauge(&|s| s.held))?;
    gauge(
        enc,
        "ddc_shards_damaged",
        "Local shards whose last check (store, read or scrub) failed.",
        &shard_gauge(&|s| Some(s.damaged)),
    )?;
    gauge(
        enc,
        "ddc_repair_backlog_shards",
        "Shards of segments this node leads that the last repair pass found missing or corrupt and could not rebuild.",
        &shard_gauge(&|s| Some(s.repair_backlog)),
    )?;
    let per_core = |f: &dyn Fn(&CoreSnapshot) -> u64| -> Vec<(Labels, u64)> {
        snapshots.iter().map(|s| (core_label(s.core), f(s))).collect()
    };
    gauge(
        enc,
        "ddc_coded_segments",
        "Erasure-coded segments of the streams this node leads.",
        &per_core(&|s| s.streams.iter().map(|v| v.coded_segments).sum()),
    )?;
    gauge(
        enc,
        "ddc_degraded_segments",
        "Coded segments of led streams with fewer than n healthy shards at the last repair pass.",
        &per_core(&|s| s.streams.iter().map(|v| v.degraded_segments).sum()),
    )?;
    let counters = |f: &dyn Fn(&super::CoreCounters) -> u64| -> Vec<(Labels, u64)> {
        view.cores.iter().enumerate().map(|(core, slot)| (core_label(core), f(&slot.counters))).collect()
    };
    counter(enc, "ddc_scrub_passes", "Scrub passes over the local shards.", &counters(&|c| get(&c.scrub_passes)))?;
    counter(
        enc,
        "ddc_scrub_damaged_shards",
        "Damaged local shards the scrubber found (each pass counts what it finds).",
        &counters(&|c| get(&c.scrub_damaged_found)),
    )?;
    counter(
        enc,
        "ddc_repair_passes",
        "Repair passes (background, after each scrub, and asked for with ddc repair).",
        &counters(&|c| get(&c.repair_passes)),
    )?;
    counter(
        enc,
        "ddc_repair_segments_checked",
        "Coded segments repair passes checked.",
        &counters(&|c| get(&c.repair_segments_checked)),
    )?;
    let mut found = Vec::new();
    for (core, slot) in view.cores.iter().enumerate() {
        found.push((
            vec![("core", core.to_string()), ("kind", "missing".to_owned())],
            get(&slot.counters.repair_shards_missing),
        ));
        found.push((
            vec![("core", core.to_string()), ("kind", "corrupt".to_owned())],
            get(&slot.counters.repair_shards_corrupt),
        ));
    }
    counter(enc, "ddc_repair_shards_found", "Shards repair passes found missing or corrupt on their holders.", &found)?;
    counter(
        enc,
        "ddc_repair_shards_rebuilt",
        "Shards repair rebuilt and stored.",
        &counters(&|c| get(&c.repair_shards_rebuilt)),
    )?;
    counter(
        enc,
        "ddc_repair_errors",
        "Shards repair could not rebuild or store.",
        &counters(&|c| get(&c.repair_errors)),
    )?;
    let mut lag = Vec::new();
    let mut in_sync = Vec::new();
    for v in snapshots.iter().flat_map(|s| s.streams.iter()) {
        for f in &v.followers {
            let labels = vec![("stream", v.name.clone()), ("follower", f.id.clone())];
            if let Some(l) = f.lag_records {
                lag.push((labels.clone(), l));
            }
            in_sync.push((labels, u64::from(f.in_sync)));
        }
    }
    gauge(
        enc,
        "ddc_replication_lag_records",
        "Led streams: records the follower lacks (leader high watermark minus what the follower acknowledged).",
        &lag,
    )?;
    gauge(
        enc,
        "ddc_replica_in_sync",
        "Led streams: 1 when the follower is in sync (counts toward min_insync_replicas).",
        &in_sync,
    )?;
    let peers: Vec<_> = snapshots.first().map(|s| s.peers.clone()).unwrap_or_default();
    let up: Vec<(Labels, u64)> = peers
        .iter()
        .filter_map(|p| p.up.map(|up| (vec![("peer", p.id.clone()), ("address", p.address.clone())], u64::from(up))))
        .collect();
    gauge(
        enc,
        "ddc_peer_up",
        "1 when the member answered this node's last probe (a ping every 2 s), 0 when it did not.",
        &up,
    )?;
    let rtt: Vec<(Labels, f64)> = peers
        .iter()
        .filter(|p| p.up == Some(true))
        .filter_map(|p| p.rtt_micros.map(|r| (vec![("peer", p.id.clone())], r as f64 / 1e6)))
        .collect();
    gauge(enc, "ddc_peer_probe_rtt_seconds", "Round trip of the last answered probe of each member.", &rtt)
}

fn anchor(enc: &mut DescriptorEncoder, anchoring: &crate::anchoring::Anchoring) -> Fmt {
    let state = super::status::anchor_state(anchoring, 0);
    gauge(
        enc,
        "ddc_anchor_backlog_eras",
        "Eras committed on this node but not yet anchored on the chain.",
        &[(vec![], state.backlog_eras)],
    )?;
    gauge(
        enc,
        "ddc_anchor_last_committed_era",
        "The last era committed (0: none yet).",
        &[(vec![], state.last_committed_era.unwrap_or(0))],
    )?;
    gauge(
        enc,
        "ddc_anchor_last_anchored_era",
        "The last era anchored on the chain (0: none yet).",
        &[(vec![], state.last_anchored_era.unwrap_or(0))],
    )?;
    gauge(
        enc,
        "ddc_anchor_last_anchored_block",
        "Block number that holds the last anchored era (0: none yet).",
        &[(vec![], u64::from(state.last_anchored_block.unwrap_or(0)))],
    )
}
