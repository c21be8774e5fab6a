//! One core's usage accounting: its journals, and the signed reports built
//! from them (docs/SECURITY.md "Usage").
//!
//! Each core writes its own journal (`<data_dir>/usage/core-<n>/`, see
//! [`crate::usage_journal`]), so accounting takes no lock shared between
//! cores. A node restarted with fewer cores still reads the journals of the
//! cores it no longer runs: core `c` also opens `core-<i>` for every
//! existing `i` with `i % cores == c`, and adds them into its reports
//! (it writes only its own).

use std::collections::BTreeMap;
use std::path::Path;

use ddc_auth::usage::{ConsumerAck, CustomerUsage, UsageReport};
use ddc_formats::message::Response;
use ddc_formats::wire::ErrorCode;

use crate::dispatch::{error_response, CoreState};
use crate::usage_journal::{UsageJournal, UsageJournalError};

pub struct CoreUsage {
    own: UsageJournal,
    /// Journals of cores this node no longer runs, read only.
    inherited: Vec<UsageJournal>,
    /// Why accounting stopped working, once it has, and whether the disk is
    /// full: the core then refuses produces (reads go on, unaccounted).
    failed: Option<(String, bool)>,
}

impl CoreUsage {
    pub fn open(data_dir: &Path, core: usize, cores: usize, compact_bytes: u64) -> Result<CoreUsage, String> {
        let root = data_dir.join("usage");
        let open = |i: usize| {
            let dir = root.join(format!("core-{i}"));
            UsageJournal::open(&dir, compact_bytes).map_err(|e| format!("usage journal {}: {e}", dir.display()))
        };
        let own = open(core)?;
        let mut inherited = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&root) {
            let mut others: Vec<usize> = entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("core-")?.parse().ok())
                .filter(|&i: &usize| i >= cores && i % cores == core)
                .collect();
            others.sort_unstable();
            for i in others {
                inherited.push(open(i)?);
            }
        }
        Ok(CoreUsage { own, inherited, failed: None })
    }

    pub fn record(&mut self, bucket: u64, delta: &CustomerUsage) -> Result<(), UsageJournalError> {
        let result = self.own.record(bucket, delta);
        if let Err(e) = &result {
            self.fail(e.to_string(), is_disk_full(e));
        }
        result
    }

    pub fn record_ack(&mut self, ack: &ConsumerAck) -> Result<(), UsageJournalError> {
        let result = self.own.record_ack(ack);
        if let Err(e) = &result {
            self.fail(e.to_string(), is_disk_full(e));
        }
        result
    }

    /// Stop accounting for good (until restart): a write or fdatasync failed.
    pub fn fail(&mut self, reason: String, disk_full: bool) {
        if self.failed.is_none() {
            tracing::error!(%reason, "usage journal failed; this core refuses produce until restarted, and serves reads unaccounted");
            self.failed = Some((reason, disk_full));
        }
    }

    /// Why accounting failed, if it did, and whether the disk is full.
    pub fn failure(&self) -> Option<(&str, bool)> {
        self.failed.as_ref().map(|(r, full)| (r.as_str(), *full))
    }

    fn journals(&self) -> impl Iterator<Item = &UsageJournal> {
        std::iter::once(&self.own).chain(&self.inherited)
    }

    /// Totals per bucket over this core's journals (all buckets, or one).
    pub fn totals(&self, bucket: Option<u64>) -> Result<BTreeMap<u64, CustomerUsage>, String> {
        let mut out: BTreeMap<u64, CustomerUsage> = BTreeMap::new();
        for journal in self.journals() {
            for (&b, usage) in journal.totals() {
                if bucket.is_some_and(|want| want != b) {
                    continue;
                }
                let sum = out.entry(b).or_default();
                *sum = sum.add(usage).map_err(|e| format!("bucket {b}: {e}"))?;
            }
        }
        Ok(out)
    }

    /// The acknowledgments kept (all buckets, or one).
    pub fn acks(&self, bucket: Option<u64>) -> Vec<ConsumerAck> {
        self.journals().flat_map(|j| j.acks()).filter(|a| bucket.is_none_or(|b| a.bucket == b)).collect()
    }

    /// Descriptors for an fdatasync of every journal written to.
    pub fn sync_handle(&self) -> std::io::Result<std::fs::File> {
        self.own.sync_handle()
    }

    pub fn sync(&self) -> Result<(), UsageJournalError> {
        self.own.sync()
    }
}

fn is_disk_full(e: &UsageJournalError) -> bool {
    matches!(e, UsageJournalError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
}

/// `Usage` on one core: a report of this core's share, signed by the node.
pub fn core_report(state: &CoreState, bucket: Option<u64>) -> Response {
    let usage = state.usage.borrow();
    let totals = match usage.totals(bucket) {
        Ok(t) => t,
        Err(e) => return error_response(ErrorCode::Internal, format!("usage totals: {e}")),
    };
    sign(state, totals.into_iter().collect(), usage.acks(bucket))
}

fn sign(state: &CoreState, buckets: Vec<(u64, CustomerUsage)>, acks: Vec<ConsumerAck>) -> Response {
    let Some(identity) = &state.identity else {
        return error_response(ErrorCode::Internal, "this node has no key to sign usage reports with");
    };
    match UsageReport::sign(identity, crate::access::now_ms(), buckets, acks) {
        Ok(report) => Response::Usage { report: report.encode() },
        Err(e) => error_response(ErrorCode::Internal, format!("usage report: {e}")),
    }
}

/// Combine the per-core reports of `Usage` into one, signed again.
pub fn merge_reports(state: &CoreState, reports: &[Vec<u8>]) -> Response {
    let mut buckets: BTreeMap<u64, CustomerUsage> = BTreeMap::new();
    let mut acks = Vec::new();
    for bytes in reports {
        let report = match UsageReport::decode(bytes) {
            Ok(r) => r,
            Err(e) => return error_response(ErrorCode::Internal, format!("a core's usage report: {e}")),
        };
        for (b, usage) in report.buckets {
            let sum = buckets.entry(b).or_default();
            *sum = match sum.add(&usage) {
                Ok(s) => s,
                Err(e) => return error_response(ErrorCode::Internal, format!("bucket {b}: {e}")),
            };
        }
        acks.extend(report.acks);
    }
    sign(state, buckets.into_iter().collect(), acks)
}
