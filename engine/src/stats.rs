//! Counters and histograms of the log, kept as relaxed atomics.
//!
//! The engine lives on one core and is not `Send`; an operator's view of it
//! (the server's metrics endpoint) runs on another thread. So every stream
//! owns a [`StreamStats`] behind an `Arc`, updated on its own core with
//! relaxed atomic adds (no lock, no cross-core cache traffic beyond the line
//! itself), and the engine lists those `Arc`s in its [`EngineStats`] when a
//! stream is first opened or created. A reader takes the list's lock once
//! per scrape, never per request, and sums what it needs.
//!
//! **Boundary:** nothing here knows a metrics format; the server renders
//! these numbers (Prometheus text, JSON). Reads are not a consistent snapshot
//! across fields: each value is exact, but two values read one after the
//! other may straddle an append.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Upper bounds (microseconds) of the group-commit `fdatasync` latency buckets.
pub const FSYNC_MICROS_BUCKETS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];
/// Upper bounds (bytes) of the bytes-per-group-commit buckets.
pub const COMMIT_BYTES_BUCKETS: [u64; 10] =
    [4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864, 268_435_456, 1_073_741_824];
/// Upper bounds of the batches-per-group-commit buckets.
pub const COMMIT_BATCHES_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram with fixed bucket bounds: one relaxed add per bucket hit, one for the sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// `counts[i]` counts observations `<= bounds[i]` (and above the bound before); the last slot
    /// counts everything above the largest bound.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramValues {
    /// The bucket upper bounds; the last bucket of `counts` has no bound (+Inf).
    pub bounds: Vec<u64>,
    /// Per bucket, not cumulative; one longer than `bounds`.
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl HistogramValues {
    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Add another histogram with the same bounds (summing cores or streams).
    pub fn add(&mut self, other: &HistogramValues) {
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        assert_eq!(self.bounds, other.bounds, "histograms with different buckets cannot be added");
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must increase");
        Histogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }

    pub fn observe(&self, value: u64) {
        let slot = self.bounds.partition_point(|&bound| bound < value);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn values(&self) -> HistogramValues {
        HistogramValues {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// What one stream did since the process started.
#[derive(Debug)]
pub struct StreamStats {
    pub name: String,
    /// Records and bytes (batch header included: what the batch takes in the log)
    /// appended as new batches (`Stream::append`: produces on this node).
    pub appended_records: AtomicU64,
    pub appended_bytes: AtomicU64,
    /// The same for batches copied from a leader at fixed offsets (`Stream::append_at`).
    pub replicated_records: AtomicU64,
    pub replicated_bytes: AtomicU64,
    /// Records and bytes (whole batches, headers included) sent to clients; the server
    /// counts them with [`StreamStats::fetched`], since the engine's reads also serve replication.
    pub fetched_records: AtomicU64,
    pub fetched_bytes: AtomicU64,
    /// Latency of each group commit's `fdatasync`, in microseconds.
    pub fsync_micros: Histogram,
    /// Bytes written by each group commit.
    pub commit_bytes: Histogram,
    /// Batches made durable by each group commit.
    pub commit_batches: Histogram,
}

impl StreamStats {
    pub fn new(name: &str) -> StreamStats {
        StreamStats {
            name: name.to_owned(),
            appended_records: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            replicated_records: AtomicU64::new(0),
            replicated_bytes: AtomicU64::new(0),
            fetched_records: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            fsync_micros: Histogram::new(&FSYNC_MICROS_BUCKETS),
            commit_bytes: Histogram::new(&COMMIT_BYTES_BUCKETS),
            commit_batches: Histogram::new(&COMMIT_BATCHES_BUCKETS),
        }
    }

    pub(crate) fn appended(&self, replica: bool, records: u32, bytes: usize) {
        let (r, b) = if replica {
            (&self.replicated_records, &self.replicated_bytes)
        } else {
            (&self.appended_records, &self.appended_bytes)
        };
        r.fetch_add(u64::from(records), Ordering::Relaxed);
        b.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Count a read answered to a client: `batches` as sent (whole batches, back to back).
    pub fn fetched(&self, batches: &[u8]) {
        let (records, bytes) = count_records(batches);
        self.fetched_records.fetch_add(records, Ordering::Relaxed);
        self.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn committed(&self, fsync: std::time::Duration, bytes: usize, batches: u64) {
        self.fsync_micros.observe(u64::try_from(fsync.as_micros()).unwrap_or(u64::MAX));
        self.commit_bytes.observe(bytes as u64);
        self.commit_batches.observe(batches);
    }
}

/// Records and bytes in `batches` (whole batches back to back, as reads return
/// them). Walks the batch headers only; stops at the first header that does not
/// decode (reads only return verified batches, so that is the end).
pub fn count_records(batches: &[u8]) -> (u64, u64) {
    use ddc_formats::batch::{BatchHeader, BATCH_HEADER_BYTES};
    let (mut records, mut pos) = (0u64, 0usize);
    while pos + BATCH_HEADER_BYTES <= batches.len() {
        let Ok(header) = BatchHeader::decode(&batches[pos..pos + BATCH_HEADER_BYTES]) else { break };
        records += u64::from(header.record_count);
        pos += header.batch_len();
    }
    (records, pos.min(batches.len()) as u64)
}

/// The stats of every stream one engine (core) has opened or created.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Appended once per stream, when the engine first holds it; read per scrape.
    streams: Mutex<Vec<Arc<StreamStats>>>,
}

impl EngineStats {
    pub(crate) fn register(&self, stats: Arc<StreamStats>) {
        self.lock().push(stats);
    }

    /// Every stream's stats, in registration order.
    pub fn streams(&self) -> Vec<Arc<StreamStats>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<StreamStats>>> {
        // The list is only ever pushed to: a panic elsewhere cannot leave it half-updated.
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_values_up_to_their_bound() {
        let h = Histogram::new(&[10, 100]);
        for v in [0, 10, 11, 100, 101, 5000] {
            h.observe(v);
        }
        let v = h.values();
        assert_eq!(v.counts, [2, 2, 2]);
        assert_eq!(v.count(), 6);
        assert_eq!(v.sum, 5222);
        let mut total = HistogramValues::default();
        total.add(&v);
        total.add(&v);
        assert_eq!(total.counts, [4, 4, 4]);
    }

    #[test]
    fn records_are_counted_from_batch_headers() {
        use ddc_formats::batch::{encode_records, BatchHeader};
        let mut bytes = Vec::new();
        let mut expected_bytes = 0;
        for (base, n) in [(0u64, 3u32), (3, 1)] {
            let body = encode_records((0..n).map(|_| b"abc".as_slice()));
            let header = BatchHeader::new(base, n, &body, 0);
            bytes.extend_from_slice(&header.encode());
            bytes.extend_from_slice(&body);
            expected_bytes += header.batch_len() as u64;
        }
        assert_eq!(count_records(&bytes), (4, expected_bytes));
        assert_eq!(count_records(&[]), (0, 0));
    }
}
