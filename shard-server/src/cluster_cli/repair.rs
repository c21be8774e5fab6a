//! `ddc repair` and `ddc seal`.
//!
//! Repair is done by the nodes: each one checks the sealed segments it leads
//! and rebuilds their missing or corrupt shards. This module only asks every
//! member at once and adds up what they report. A member that is down cannot
//! repair what it leads; that counts as an error of the run, so that a
//! repair that left work undone never looks complete.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ddc_formats::message::{RepairReport, Request, Response};

use super::{Cluster, ClusterMember, PING_TIMEOUT};

/// What one member's repair came to.
#[derive(Debug, Clone)]
pub struct NodeRepair {
    pub member: ClusterMember,
    /// The node's report, or why there is none (down, refused, timed out).
    pub outcome: Result<RepairReport, String>,
    pub elapsed: Duration,
}

/// Progress of a repair run, in the order it happens.
#[derive(Debug, Clone)]
pub enum RepairEvent {
    /// The member answered its ping and is repairing.
    Started(ClusterMember),
    Finished(NodeRepair),
}

/// Ask every member to repair the segments it leads (of `stream`, or of all
/// streams), all at once; `timeout` bounds each member's answer (`None`:
/// wait as long as it takes). `on_event` sees progress as it happens, on the
/// calling thread. Returns each member's outcome (in member order) and the
/// sum, whose `errors` also name every member without a report.
pub fn repair(
    cluster: &Cluster,
    stream: Option<&str>,
    timeout: Option<Duration>,
    mut on_event: impl FnMut(&RepairEvent),
) -> (Vec<NodeRepair>, RepairReport) {
    let (tx, rx) = mpsc::channel::<RepairEvent>();
    let mut done: Vec<NodeRepair> = std::thread::scope(|scope| {
        for member in &cluster.members {
            let tx = tx.clone();
            scope.spawn(move || {
                let t0 = Instant::now();
                let outcome = repair_one(member, stream, timeout, &tx);
                let _ = tx.send(RepairEvent::Finished(NodeRepair {
                    member: member.clone(),
                    outcome,
                    elapsed: t0.elapsed(),
                }));
            });
        }
        drop(tx);
        let mut done = Vec::with_capacity(cluster.members.len());
        // Ends when every thread has finished and dropped its sender.
        for event in rx {
            on_event(&event);
            if let RepairEvent::Finished(result) = event {
                done.push(result);
            }
        }
        done
    });
    let order = |m: &ClusterMember| cluster.members.iter().position(|c| c.id == m.id);
    done.sort_by_key(|r| order(&r.member));
    let mut total = RepairReport::default();
    for r in &done {
        let who = format!("{} ({})", r.member.label, r.member.address);
        match &r.outcome {
            Ok(report) => {
                let mut report = report.clone();
                report.errors = report.errors.iter().map(|e| format!("{who}: {e}")).collect();
                total.add(report);
            }
            Err(e) => total.errors.push(format!("{who}: {e}")),
        }
    }
    (done, total)
}

fn repair_one(
    member: &ClusterMember,
    stream: Option<&str>,
    timeout: Option<Duration>,
    events: &mpsc::Sender<RepairEvent>,
) -> Result<RepairReport, String> {
    let (mut client, _version) = super::ping(member.address, PING_TIMEOUT).map_err(|e| {
        format!("down ({}): the segments it leads were not repaired", super::explain(&e, Some(PING_TIMEOUT)))
    })?;
    let _ = events.send(RepairEvent::Started(member.clone()));
    client.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    match client.call(&Request::Repair { stream }) {
        Ok(Response::Repair(report)) => Ok(report),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(super::explain(&e, timeout)),
    }
}

/// One line about a finished member, for progress output.
pub fn describe(r: &NodeRepair) -> String {
    let who = format!("{} {} {}", r.member.label, r.member.id.short(), r.member.address);
    match &r.outcome {
        Ok(report) => format!(
            "{who}: done in {:.1}s: {} segments checked, {} shards missing, {} corrupt, {} rebuilt, {} errors",
            r.elapsed.as_secs_f64(),
            report.segments_checked,
            report.shards_missing,
            report.shards_corrupt,
            report.shards_rebuilt,
            report.errors.len()
        ),
        Err(e) => format!("{who}: FAILED after {:.1}s: {e}", r.elapsed.as_secs_f64()),
    }
}

/// Seal `stream`'s open segment on the node at `server` now. Returns the
/// sealed segment's base offset, or `None` if the open segment held no
/// records (nothing to seal).
pub fn seal(server: &str, stream: &str, timeout: Duration) -> anyhow::Result<Option<u64>> {
    let address: SocketAddr = server
        .to_socket_addrs()
        .with_context(|| format!("resolve {server}"))?
        .next()
        .with_context(|| format!("{server} resolves to no address"))?;
    let mut client = super::connect(address, PING_TIMEOUT.max(Duration::from_secs(5)), Some(timeout))
        .with_context(|| format!("connect to {server} (is shard-server running?)"))?;
    match client.call(&Request::Seal { stream }) {
        Ok(Response::Seal { sealed_base_offset }) => Ok(sealed_base_offset),
        Ok(other) => anyhow::bail!("unexpected answer {other:?}"),
        Err(e) => anyhow::bail!("seal {stream} on {server}: {}", super::explain(&e, Some(timeout))),
    }
}
