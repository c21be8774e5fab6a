//! One stream on one core: the append path, the group-commit flusher, reads.
//!
//! Appends never wait on I/O to get their offset: `append` validates the
//! records, assigns offsets and copies the batch into an aligned direct-I/O
//! buffer without an await in between, so batches land in offset order. A
//! per-stream flusher task writes whatever is buffered, issues one fdatasync
//! for all of it (group commit) and then publishes the new high watermark;
//! the appends it covers are acknowledged from that. Readers see only what
//! an fdatasync covered.
//!
//! **Invariant:** a failed write or fsync fences the stream: no further write
//! is accepted (buffered, unsynced batches are failed, not retried) until the
//! node restarts and recovery decides what is on disk.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ddc_formats::batch::{validate_records, BatchHeader, BATCH_HEADER_BYTES};
use ddc_formats::message::{SegmentInfo, StreamInfo};
use ddc_formats::segment::{encode_index, IndexEntry, RecoveryPoint, SealManifest, SegmentHeader};
use ddc_formats::wire::AckLevel;

use crate::config::LogConfig;
use crate::error::{EngineError, Result};
use crate::segment::{index_path, recovery_point_path, seal_path, Segment};
use crate::signal::Signal;
use crate::stats::StreamStats;
use crate::storage::{align_down, align_up, IoBuf, Storage, StorageFile};

/// Every buffer and write is aligned to this; it is a multiple of any
/// O_DIRECT logical block size we run on (512 or 4096).
pub const BLOCK_BYTES: u64 = 4096;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A buffer of bytes destined for file positions `[start, start + len)`.
struct Chunk<B> {
    start: u64,
    buf: B,
    len: usize,
}

/// Write-side state of one segment that still has bytes to flush.
pub(crate) struct SegWriter<S: Storage> {
    pub(crate) seg: Rc<Segment<S>>,
    full: VecDeque<Chunk<S::Buf>>,
    cur: Option<Chunk<S::Buf>>,
    /// The bytes `[align_down(end), end)` while `cur` is None: the partial
    /// last block, which the next buffer must start with.
    carry: Vec<u8>,
    /// Bytes appended to the segment so far (header included).
    pub(crate) end: u64,
    /// One past the last offset appended.
    end_offset: u64,
    /// End position of what the flusher has already taken.
    taken_end: u64,
    taken_offset: u64,
    pub(crate) batch_count: u64,
    /// `batch_count` when the flusher last took the buffers (batches per group commit, for stats).
    taken_batches: u64,
    last_index_pos: Option<u64>,
}

impl<S: Storage> SegWriter<S> {
    /// A writer for a brand-new segment: its header is the first thing to flush.
    pub(crate) fn fresh(seg: Rc<Segment<S>>) -> SegWriter<S> {
        let header = SegmentHeader { base_offset: seg.base_offset, created_ms: seg.created_ms }.encode();
        let end = header.len() as u64;
        SegWriter {
            full: VecDeque::new(),
            cur: None,
            carry: header.to_vec(),
            end,
            end_offset: seg.base_offset,
            // The header alone is not worth a flush: it goes out with the first batch.
            taken_end: end,
            taken_offset: seg.base_offset,
            batch_count: 0,
            taken_batches: 0,
            last_index_pos: None,
            seg,
        }
    }

    /// A writer that continues a recovered segment whose first `end` bytes are durable.
    pub(crate) fn resume(
        seg: Rc<Segment<S>>,
        end: u64,
        end_offset: u64,
        batch_count: u64,
        tail_block: Vec<u8>,
    ) -> SegWriter<S> {
        assert_eq!(tail_block.len() as u64, end - align_down(end, BLOCK_BYTES));
        let last_index_pos = seg.index.borrow().last().map(|e| e.position);
        SegWriter {
            full: VecDeque::new(),
            cur: None,
            carry: tail_block,
            end,
            end_offset,
            taken_end: end,
            taken_offset: end_offset,
            batch_count,
            taken_batches: batch_count,
            last_index_pos,
            seg,
        }
    }

    fn has_untaken(&self) -> bool {
        self.end > self.taken_end
    }

    /// Copy one batch into the buffers.
    fn push(&mut self, storage: &S, config: &LogConfig, header: &BatchHeader, body: &[u8]) {
        let need = header.batch_len();
        let fits = self.cur.as_ref().is_some_and(|c| c.len + need <= c.buf.as_slice().len());
        if !fits {
            if let Some(c) = self.cur.take() {
                let tail_from = (align_down(self.end, BLOCK_BYTES) - c.start) as usize;
                self.carry = c.buf.as_slice()[tail_from..c.len].to_vec();
                self.full.push_back(c);
            }
            let start = align_down(self.end, BLOCK_BYTES);
            debug_assert_eq!(start + self.carry.len() as u64, self.end);
            let cap = (config.write_buffer_bytes as u64).max(align_up((self.carry.len() + need) as u64, BLOCK_BYTES));
            let mut buf = storage.alloc_buf(cap as usize);
            buf.as_mut_slice()[..self.carry.len()].copy_from_slice(&self.carry);
            self.cur = Some(Chunk { start, buf, len: self.carry.len() });
            self.carry.clear();
        }
        let cur = self.cur.as_mut().expect("a buffer with room was just ensured");
        debug_assert_eq!(cur.start + cur.len as u64, self.end);
        let slice = cur.buf.as_mut_slice();
        slice[cur.len..cur.len + BATCH_HEADER_BYTES].copy_from_slice(&header.encode());
        slice[cur.len + BATCH_HEADER_BYTES..cur.len + need].copy_from_slice(body);
        cur.len += need;
        let position = self.end;
        let index_due = match self.last_index_pos {
            None => true,
            Some(last) => position - last >= config.index_interval_bytes,
        };
        if index_due {
            self.seg.index.borrow_mut().push(IndexEntry { offset: header.base_offset, position });
            self.last_index_pos = Some(position);
        }
        self.end += need as u64;
        self.end_offset = header.next_offset();
        self.batch_count += 1;
    }

    /// Hand every buffered byte to the flusher.
    fn take(&mut self) -> FlushWork<S> {
        let mut chunks: Vec<Chunk<S::Buf>> = self.full.drain(..).collect();
        if let Some(c) = self.cur.take() {
            let tail_from = (align_down(self.end, BLOCK_BYTES) - c.start) as usize;
            self.carry = c.buf.as_slice()[tail_from..c.len].to_vec();
            chunks.push(c);
        }
        let bytes = (self.end - self.taken_end) as usize;
        self.taken_end = self.end;
        self.taken_offset = self.end_offset;
        let batches = self.batch_count - self.taken_batches;
        self.taken_batches = self.batch_count;
        FlushWork {
            seg: self.seg.clone(),
            chunks,
            end: self.end,
            end_offset: self.end_offset,
            bytes,
            batches,
            batch_count: self.batch_count,
        }
    }
}

struct FlushWork<S: Storage> {
    seg: Rc<Segment<S>>,
    chunks: Vec<Chunk<S::Buf>>,
    end: u64,
    end_offset: u64,
    bytes: usize,
    /// Batches first taken by this flush.
    batches: u64,
    batch_count: u64,
}

pub(crate) struct Writer<S: Storage> {
    pub(crate) next_offset: u64,
    pub(crate) active: SegWriter<S>,
    rolled: VecDeque<SegWriter<S>>,
    /// Appended bytes not yet durable; appends wait while it is over the limit.
    unflushed_bytes: usize,
    /// Admission tickets: appends are admitted in arrival order even when
    /// they have to wait for room (pipelined produces keep their order).
    next_ticket: u64,
    admitted_ticket: u64,
    /// Tickets whose append was dropped while waiting; skipped when their turn comes.
    abandoned_tickets: std::collections::BTreeSet<u64>,
}

impl<S: Storage> Writer<S> {
    fn pass_turn(&mut self) {
        self.admitted_ticket += 1;
        while self.abandoned_tickets.remove(&self.admitted_ticket) {
            self.admitted_ticket += 1;
        }
    }
}

/// Gives up an admission ticket if the append future is dropped while waiting.
struct Ticket<'a, S: Storage> {
    stream: &'a Stream<S>,
    ticket: u64,
    passed: bool,
}

impl<S: Storage> Ticket<'_, S> {
    fn pass(&mut self) {
        if !self.passed {
            self.passed = true;
            let mut w = self.stream.w.borrow_mut();
            debug_assert_eq!(w.admitted_ticket, self.ticket);
            w.pass_turn();
            drop(w);
            self.stream.progress.notify();
        }
    }
}

impl<S: Storage> Drop for Ticket<'_, S> {
    fn drop(&mut self) {
        if !self.passed {
            let mut w = self.stream.w.borrow_mut();
            if w.admitted_ticket == self.ticket {
                w.pass_turn();
            } else {
                w.abandoned_tickets.insert(self.ticket);
            }
            drop(w);
            self.stream.progress.notify();
        }
    }
}

/// What a read returns.
#[derive(Debug, Clone, Default)]
pub struct ReadOut {
    /// Whole batches, back to back, the first holding the requested offset.
    pub batches: Vec<u8>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// Why a stream refuses writes.
#[derive(Debug, Clone)]
struct Fence {
    reason: String,
    storage_full: bool,
}

/// One stream, owned by one core.
pub struct Stream<S: Storage> {
    pub name: String,
    pub(crate) dir: PathBuf,
    storage: S,
    config: Rc<LogConfig>,
    pub(crate) segments: RefCell<BTreeMap<u64, Rc<Segment<S>>>>,
    pub(crate) w: RefCell<Writer<S>>,
    high_watermark: Cell<u64>,
    written_offset: Cell<u64>,
    log_start: Cell<u64>,
    fence: RefCell<Option<Fence>>,
    /// Durable progress, fencing and closing.
    progress: Signal,
    /// Wakes the flusher.
    work: Signal,
    dir_durable: Cell<bool>,
    closing: Cell<bool>,
    flusher: RefCell<Option<glommio::Task<()>>>,
    /// The last recovery point written (segment base, durable length).
    recovery_point: Cell<Option<(u64, u64)>>,
    /// Counters an operator reads from another thread (see [`crate::stats`]).
    stats: Arc<StreamStats>,
}

impl<S: Storage> Stream<S> {
    /// Build a stream from recovered state and start its flusher.
    #[expect(
        clippy::too_many_arguments,
        reason = "crate-internal constructor called from two places with recovered state"
    )]
    pub(crate) fn start(
        name: String,
        dir: PathBuf,
        storage: S,
        config: Rc<LogConfig>,
        segments: BTreeMap<u64, Rc<Segment<S>>>,
        active: SegWriter<S>,
        dir_durable: bool,
        fence: Option<String>,
    ) -> Rc<Stream<S>> {
        let next_offset = active.end_offset;
        let log_start = segments.keys().next().copied().unwrap_or(next_offset);
        let stats = Arc::new(StreamStats::new(&name));
        let stream = Rc::new(Stream {
            stats,
            name,
            dir,
            storage,
            config,
            segments: RefCell::new(segments),
            w: RefCell::new(Writer {
                next_offset,
                active,
                rolled: VecDeque::new(),
                unflushed_bytes: 0,
                next_ticket: 0,
                admitted_ticket: 0,
                abandoned_tickets: std::collections::BTreeSet::new(),
            }),
            recovery_point: Cell::new(None),
            high_watermark: Cell::new(next_offset),
            written_offset: Cell::new(next_offset),
            log_start: Cell::new(log_start),
            fence: RefCell::new(fence.map(|reason| Fence { reason, storage_full: false })),
            progress: Signal::default(),
            work: Signal::default(),
            dir_durable: Cell::new(dir_durable),
            closing: Cell::new(false),
            flusher: RefCell::new(None),
        });
        let task = glommio::spawn_local(run_flusher(stream.clone()));
        *stream.flusher.borrow_mut() = Some(task);
        stream
    }

    /// A new, empty stream (no files yet; the directory is made on first flush or `make_durable`).
    pub(crate) fn create(name: String, storage: S, config: Rc<LogConfig>) -> Rc<Stream<S>> {
        let dir = config.streams_dir().join(&name);
        let seg = Rc::new(Segment::new(&dir, 0, now_ms()));
        let mut segments = BTreeMap::new();
        segments.insert(0, seg.clone());
        Stream::start(name, dir, storage, config, segments, SegWriter::fresh(seg), false, None)
    }

    /// This stream's counters, shared with whoever reports them.
    pub fn stats(&self) -> &Arc<StreamStats> {
        &self.stats
    }

    /// One past the last durable offset.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.get()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log_start.get()
    }

    /// Why writes are refused, if they are.
    pub fn fenced_reason(&self) -> Option<String> {
        self.fence.borrow().as_ref().map(|f| f.reason.clone())
    }

    fn fenced_error(&self) -> Option<EngineError> {
        self.fence.borrow().as_ref().map(|f| EngineError::WritesFenced {
            stream: self.name.clone(),
            reason: f.reason.clone(),
            storage_full: f.storage_full,
        })
    }

    /// Append one batch; resolves when `ack` is satisfied. Returns the base offset.
    pub async fn append(&self, records: &[u8], record_count: u32, ack: AckLevel) -> Result<u64> {
        self.append_inner(records, record_count, ack, None).await
    }

    /// Append one batch that must start at `base_offset` (a follower copying
    /// its leader's log). Refused with [`EngineError::OffsetMismatch`], and
    /// nothing written, when the log's next offset at admission differs.
    pub async fn append_at(&self, base_offset: u64, records: &[u8], record_count: u32, ack: AckLevel) -> Result<u64> {
        self.append_inner(records, record_count, ack, Some(base_offset)).await
    }

    /// The offset the next admitted append will get.
    pub fn next_offset(&self) -> u64 {
        self.w.borrow().next_offset
    }

    async fn append_inner(&self, records: &[u8], record_count: u32, ack: AckLevel, at: Option<u64>) -> Result<u64> {
        let need = BATCH_HEADER_BYTES + records.len();
        if need > self.config.batch_bytes_max {
            return Err(EngineError::InvalidRecords(format!(
                "batch of {need} bytes exceeds the maximum of {}",
                self.config.batch_bytes_max
            )));
        }
        validate_records(records, record_count).map_err(|e| EngineError::InvalidRecords(e.to_string()))?;
        let mut ticket = {
            let mut w = self.w.borrow_mut();
            w.next_ticket += 1;
            Ticket { stream: self, ticket: w.next_ticket - 1, passed: false }
        };
        // Backpressure: wait for our turn and for room, but always admit into an empty pipeline.
        self.progress
            .wait_for(|| {
                let w = self.w.borrow();
                let room = w.unflushed_bytes == 0 || w.unflushed_bytes + need <= self.config.unflushed_bytes_max;
                let turn = w.admitted_ticket == ticket.ticket;
                ((turn && room) || self.fence.borrow().is_some() || self.closing.get()).then_some(())
            })
            .await;
        // Pass the turn on whatever happens next, so later appends are not stuck behind a refused one.
        if self.w.borrow().admitted_ticket == ticket.ticket {
            ticket.pass();
        }
        if let Some(e) = self.fenced_error() {
            return Err(e);
        }
        if self.closing.get() {
            return Err(EngineError::ShuttingDown);
        }
        let (base, end_offset) = {
            let mut w = self.w.borrow_mut();
            if let Some(expected) = at {
                if expected != w.next_offset {
                    return Err(EngineError::OffsetMismatch {
                        stream: self.name.clone(),
                        expected,
                        next: w.next_offset,
                    });
                }
            }
            if w.active.batch_count > 0 && w.active.end + need as u64 > self.config.segment_bytes_max {
                self.roll(&mut w);
            }
            let base = w.next_offset;
            let header = BatchHeader::new(base, record_count, records, now_ms());
            w.active.push(&self.storage, &self.config, &header, records);
            w.next_offset = header.next_offset();
            w.unflushed_bytes += need;
            (base, w.next_offset)
        };
        self.work.notify();
        let acked = match ack {
            AckLevel::WrittenNotSynced => &self.written_offset,
            _ => &self.high_watermark,
        };
        let outcome = self
            .progress
            .wait_for(|| if acked.get() >= end_offset { Some(Ok(base)) } else { self.fenced_error().map(Err) })
            .await;
        if outcome.is_ok() {
            self.stats.appended(at.is_some(), record_count, need);
        }
        outcome
    }

    /// Start a new active segment; the old one is sealed by the flusher.
    fn roll(&self, w: &mut Writer<S>) {
        let seg = Rc::new(Segment::new(&self.dir, w.next_offset, now_ms()));
        self.segments.borrow_mut().insert(seg.base_offset, seg.clone());
        let old = std::mem::replace(&mut w.active, SegWriter::fresh(seg));
        w.rolled.push_back(old);
    }

    /// Roll the active segment if it holds batches and is older than the configured age.
    pub fn roll_if_aged(&self, now_ms: u64) {
        if self.fence.borrow().is_some() || self.closing.get() {
            return;
        }
        let mut w = self.w.borrow_mut();
        if w.active.batch_count > 0 && now_ms.saturating_sub(w.active.seg.created_ms) >= self.config.segment_age_max_ms
        {
            self.roll(&mut w);
            drop(w);
            self.work.notify();
        }
    }

    /// Roll the active segment now if it holds batches (used by tests and tools).
    pub fn roll_now(&self) {
        let mut w = self.w.borrow_mut();
        if w.active.batch_count > 0 && self.fence.borrow().is_none() {
            self.roll(&mut w);
            drop(w);
            self.work.notify();
        }
    }

    /// Make the stream's directory durable (explicit create).
    pub async fn make_durable(&self) -> Result<()> {
        self.ensure_dir().await
    }

    async fn ensure_dir(&self) -> Result<()> {
        if self.dir_durable.get() {
            return Ok(());
        }
        self.storage
            .create_dir_all(&self.dir)
            .await
            .map_err(|e| EngineError::io(format!("create {}", self.dir.display()), &e))?;
        let parent = self.config.streams_dir();
        self.storage.sync_dir(&parent).await.map_err(|e| EngineError::io(format!("fsync {}", parent.display()), &e))?;
        self.dir_durable.set(true);
        Ok(())
    }

    async fn ensure_file(&self, seg: &Segment<S>) -> Result<Rc<S::File>> {
        if let Some(f) = seg.file() {
            return Ok(f);
        }
        self.ensure_dir().await?;
        let ctx = |what: &str| format!("{what} {}", seg.path.display());
        let file = self.storage.create_file(&seg.path).await.map_err(|e| EngineError::io(ctx("create"), &e))?;
        assert!(
            BLOCK_BYTES.is_multiple_of(file.alignment()),
            "device block size {} does not divide {BLOCK_BYTES}",
            file.alignment()
        );
        if self.config.preallocate {
            file.preallocate(self.config.segment_bytes_max)
                .await
                .map_err(|e| EngineError::io(ctx("preallocate"), &e))?;
        }
        // The header goes to disk, synced, before any batch is written: then a
        // damaged header next to a valid batch can only be corruption, never a
        // torn first write.
        let header = SegmentHeader { base_offset: seg.base_offset, created_ms: seg.created_ms }.encode();
        let mut block = self.storage.alloc_buf(BLOCK_BYTES as usize);
        block.as_mut_slice().fill(0);
        block.as_mut_slice()[..header.len()].copy_from_slice(&header);
        file.write_at(Rc::new(block), 0).await.map_err(|e| EngineError::io(ctx("write header of"), &e))?;
        file.sync_data().await.map_err(|e| EngineError::io(ctx("fdatasync"), &e))?;
        self.storage
            .sync_dir(&self.dir)
            .await
            .map_err(|e| EngineError::io(format!("fsync {}", self.dir.display()), &e))?;
        let file = Rc::new(file);
        seg.set_file(file.clone());
        Ok(file)
    }

    fn has_work(&self) -> bool {
        let w = self.w.borrow();
        !w.rolled.is_empty() || w.active.has_untaken()
    }

    /// One group commit: write everything buffered for the oldest segment with
    /// work, fdatasync once, publish. Seals a rolled segment once it is durable.
    async fn flush_once(&self) -> Result<()> {
        let (work, seal_after) = {
            let mut w = self.w.borrow_mut();
            if let Some(mut rolled) = w.rolled.pop_front() {
                (rolled.take(), true)
            } else {
                (w.active.take(), false)
            }
        };
        let file = self.ensure_file(&work.seg).await?;
        let mut written = Vec::with_capacity(work.chunks.len());
        for mut chunk in work.chunks {
            let aligned = align_up(chunk.len as u64, BLOCK_BYTES) as usize;
            // Buffers are not zeroed at allocation; the padding that goes to disk is.
            chunk.buf.as_mut_slice()[chunk.len..aligned].fill(0);
            chunk.buf.trim(aligned);
            let buf = Rc::new(chunk.buf);
            file.write_at(buf.clone(), chunk.start)
                .await
                .map_err(|e| EngineError::io(format!("write {} at {}", work.seg.path.display(), chunk.start), &e))?;
            written.push((chunk.start, buf, chunk.len));
        }
        self.written_offset.set(self.written_offset.get().max(work.end_offset));
        self.progress.notify();
        work.seg.hash_in_background(written);
        let sync_started = std::time::Instant::now();
        file.sync_data().await.map_err(|e| EngineError::io(format!("fdatasync {}", work.seg.path.display()), &e))?;
        self.stats.committed(sync_started.elapsed(), work.bytes, work.batches);
        work.seg.durable_len.set(work.end);
        work.seg.durable_next_offset.set(work.end_offset);
        self.high_watermark.set(self.high_watermark.get().max(work.end_offset));
        {
            let mut w = self.w.borrow_mut();
            w.unflushed_bytes -= work.bytes;
        }
        self.progress.notify();
        if seal_after {
            self.seal(&work.seg, &file, work.end, work.end_offset, work.batch_count).await?;
        }
        Ok(())
    }

    async fn seal(
        &self,
        seg: &Segment<S>,
        file: &S::File,
        data_len: u64,
        next_offset: u64,
        batch_count: u64,
    ) -> Result<()> {
        write_seal(&self.storage, &self.dir, seg, file, data_len, next_offset, batch_count).await?;
        tracing::debug!(stream = %self.name, base = seg.base_offset, next_offset, data_len, "segment sealed");
        Ok(())
    }

    fn fence_with(&self, error: EngineError) {
        let storage_full = matches!(error, EngineError::StorageFull(_));
        tracing::error!(stream = %self.name, %error, "write path failed; stream refuses writes until recovered");
        *self.fence.borrow_mut() = Some(Fence { reason: error.to_string(), storage_full });
        let mut w = self.w.borrow_mut();
        w.rolled.clear();
        let _ = w.active.take();
        w.unflushed_bytes = 0;
        drop(w);
        self.progress.notify();
    }

    /// Persist the open segment's durable position if it moved since the last
    /// time (called periodically, never on the append path).
    pub async fn write_recovery_point(&self) -> Result<()> {
        let open = {
            let segments = self.segments.borrow();
            segments.values().rev().find(|s| !s.is_sealed() && s.durable_next_offset.get() > s.base_offset).map(|s| {
                RecoveryPoint {
                    segment_base: s.base_offset,
                    durable_len: s.durable_len.get(),
                    next_offset: s.durable_next_offset.get(),
                }
            })
        };
        let Some(point) = open else { return Ok(()) };
        if self.recovery_point.get() == Some((point.segment_base, point.durable_len)) {
            return Ok(());
        }
        let path = recovery_point_path(&self.dir);
        self.storage
            .write_small_durably(&path, &point.encode())
            .await
            .map_err(|e| EngineError::io(format!("write {}", path.display()), &e))?;
        self.recovery_point.set(Some((point.segment_base, point.durable_len)));
        Ok(())
    }

    /// Stop accepting appends, flush what is buffered, stop the flusher.
    pub async fn close(&self) {
        self.closing.set(true);
        self.work.notify();
        self.progress.notify();
        let task = self.flusher.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
    }

    /// Wait until data beyond `offset` is durable, up to `timeout`. True if there is.
    pub async fn wait_for_data(&self, offset: u64, timeout: Duration) -> bool {
        self.progress
            .wait_for_timeout(|| (self.high_watermark.get() > offset || self.closing.get()).then_some(()), timeout)
            .await
            .is_some()
            && self.high_watermark.get() > offset
    }

    /// Read whole batches starting with the one that holds `offset`, about `max_bytes` of them
    /// (at least one whole batch when any is available).
    pub async fn read(&self, offset: u64, max_bytes: u32) -> Result<ReadOut> {
        let high_watermark = self.high_watermark.get();
        let log_start_offset = self.log_start.get();
        let mut out = ReadOut { batches: Vec::new(), high_watermark, log_start_offset };
        if offset < log_start_offset || offset > high_watermark {
            return Err(EngineError::OffsetOutOfRange {
                stream: self.name.clone(),
                offset,
                log_start: log_start_offset,
                next: high_watermark,
            });
        }
        if offset == high_watermark {
            return Ok(out);
        }
        let seg = {
            let segments = self.segments.borrow();
            segments.range(..=offset).next_back().map(|(_, s)| s.clone())
        };
        let seg = seg.ok_or_else(|| EngineError::Io(format!("no segment holds offset {offset}")))?;
        let file = seg.file_for_read(&self.storage).await?;
        let end_limit = seg.durable_len.get();
        let max_bytes = max_bytes.max(1) as usize;
        let (mut pos, indexed_offset) = seg.position_for(offset);
        // The first batch at an indexed position must start at the indexed
        // offset; a batch in the wrong place is corruption, not data.
        let mut expected_base: Option<u64> = Some(indexed_offset);
        let corrupted = |position: u64, end: u64, reason: String| EngineError::Corrupted {
            stream: self.name.clone(),
            segment_base: seg.base_offset,
            position,
            end,
            reason,
        };
        let mut want = (max_bytes as u64 + self.config.index_interval_bytes).min(end_limit.saturating_sub(pos));
        'reading: while pos < end_limit && out.batches.len() < max_bytes {
            let want_now = want.min(end_limit - pos);
            let bytes = file
                .read_at(pos, want_now as usize)
                .await
                .map_err(|e| EngineError::io(format!("read {} at {pos}", seg.path.display()), &e))?;
            if (bytes.len() as u64) < want_now {
                let short_at = pos + bytes.len() as u64;
                return Err(corrupted(short_at, end_limit, "file is shorter than its durable length".into()));
            }
            let mut at = 0usize;
            loop {
                if at + BATCH_HEADER_BYTES > bytes.len() {
                    break;
                }
                let batch_pos = pos + at as u64;
                let header = match BatchHeader::decode(&bytes[at..]) {
                    Ok(h) => h,
                    Err(e) if out.batches.is_empty() => return Err(corrupted(batch_pos, end_limit, e.to_string())),
                    Err(_) => break 'reading,
                };
                if let Some(expected) = expected_base {
                    if header.base_offset != expected {
                        let reason = format!("batch claims offset {}, expected {expected}", header.base_offset);
                        if out.batches.is_empty() {
                            return Err(corrupted(batch_pos, end_limit, reason));
                        }
                        break 'reading;
                    }
                }
                let len = header.batch_len();
                if batch_pos + len as u64 > end_limit {
                    let reason = format!("batch of {len} bytes runs past the durable end {end_limit}");
                    if out.batches.is_empty() {
                        return Err(corrupted(batch_pos, end_limit, reason));
                    }
                    break 'reading;
                }
                if at + len > bytes.len() {
                    // Read again from this batch with enough room for it.
                    want = (len as u64).max(max_bytes.saturating_sub(out.batches.len()) as u64);
                    pos = batch_pos;
                    continue 'reading;
                }
                // A batch wholly before the requested offset is only stepped
                // over: its header checksum already vouches for its length, so
                // a damaged body there does not hide the intact batches after it.
                let skipped = header.next_offset() <= offset;
                if skipped {
                    expected_base = Some(header.next_offset());
                    at += len;
                    continue;
                }
                if let Err(e) = header.verify_body(&bytes[at + BATCH_HEADER_BYTES..at + len]) {
                    if out.batches.is_empty() {
                        return Err(corrupted(batch_pos, batch_pos + len as u64, e.to_string()));
                    }
                    break 'reading;
                }
                expected_base = Some(header.next_offset());
                if header.next_offset() > offset {
                    if !out.batches.is_empty() && out.batches.len() + len > max_bytes {
                        break 'reading;
                    }
                    out.batches.extend_from_slice(&bytes[at..at + len]);
                }
                at += len;
                if out.batches.len() >= max_bytes {
                    break 'reading;
                }
            }
            if at == 0 {
                // Not even one batch header fits before the durable end: the
                // durable length points into the middle of a batch.
                if out.batches.is_empty() {
                    return Err(corrupted(
                        pos,
                        end_limit,
                        format!("{} bytes before the durable end do not hold a whole batch", end_limit - pos),
                    ));
                }
                break;
            }
            pos += at as u64;
            want = (max_bytes.saturating_sub(out.batches.len()) as u64 + BATCH_HEADER_BYTES as u64).max(BLOCK_BYTES);
        }
        Ok(out)
    }

    /// The bytes of a sealed segment that its BLAKE3 root covers (header and
    /// batches), checked against the root. Errors if `base` is not a sealed segment.
    pub async fn read_sealed(&self, base: u64) -> Result<(SealManifest, Vec<u8>)> {
        let seg = self.segments.borrow().get(&base).cloned();
        let seg = seg.ok_or_else(|| EngineError::OffsetOutOfRange {
            stream: self.name.clone(),
            offset: base,
            log_start: self.log_start.get(),
            next: self.high_watermark.get(),
        })?;
        let manifest = seg.seal.get().ok_or_else(|| EngineError::Io(format!("segment {base} is not sealed")))?;
        let file = seg.file_for_read(&self.storage).await?;
        let mut bytes = Vec::with_capacity(manifest.data_len as usize);
        const CHUNK: u64 = 4 << 20;
        while (bytes.len() as u64) < manifest.data_len {
            let pos = bytes.len() as u64;
            let want = CHUNK.min(manifest.data_len - pos) as usize;
            let chunk = file
                .read_at(pos, want)
                .await
                .map_err(|e| EngineError::io(format!("read {} at {pos}", seg.path.display()), &e))?;
            if chunk.len() < want {
                return Err(EngineError::Corrupted {
                    stream: self.name.clone(),
                    segment_base: base,
                    position: pos + chunk.len() as u64,
                    end: manifest.data_len,
                    reason: "sealed segment file is shorter than its manifest says".into(),
                });
            }
            bytes.extend_from_slice(&chunk);
            glommio::yield_if_needed().await;
        }
        if *blake3::hash(&bytes).as_bytes() != manifest.root {
            return Err(EngineError::Corrupted {
                stream: self.name.clone(),
                segment_base: base,
                position: 0,
                end: manifest.data_len,
                reason: "sealed segment does not match its BLAKE3 root".into(),
            });
        }
        Ok((manifest, bytes))
    }

    /// Delete sealed segments that end at or below `offset` (their data is kept
    /// elsewhere, e.g. erasure-coded across the cluster). The open segment is
    /// never deleted. Returns how many were deleted; the log then starts at the
    /// first remaining segment.
    pub async fn drop_sealed_below(&self, offset: u64) -> Result<usize> {
        let doomed: Vec<Rc<Segment<S>>> = {
            let active_base = self.w.borrow().active.seg.base_offset;
            let mut rolled: Vec<u64> = self.w.borrow().rolled.iter().map(|r| r.seg.base_offset).collect();
            rolled.push(active_base);
            self.segments
                .borrow()
                .values()
                .filter(|s| !rolled.contains(&s.base_offset) && s.seal.get().is_some_and(|m| m.next_offset <= offset))
                .cloned()
                .collect()
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        {
            let mut segments = self.segments.borrow_mut();
            for seg in &doomed {
                segments.remove(&seg.base_offset);
            }
            let start = segments.keys().next().copied().unwrap_or(self.high_watermark.get());
            self.log_start.set(start);
        }
        // The .log goes first: recovery only looks for .log files, so a crash
        // part way leaves at most orphan .idx/.seal files, never a gap.
        for seg in &doomed {
            seg.close_file();
            for path in
                [seg.path.clone(), index_path(&self.dir, seg.base_offset), seal_path(&self.dir, seg.base_offset)]
            {
                match self.storage.remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(EngineError::io(format!("remove {}", path.display()), &e)),
                }
            }
        }
        self.storage
            .sync_dir(&self.dir)
            .await
            .map_err(|e| EngineError::io(format!("sync {}", self.dir.display()), &e))?;
        Ok(doomed.len())
    }

    /// A description of the stream for `StreamInfo`.
    pub fn info(&self, core: u16) -> StreamInfo {
        let segments = self
            .segments
            .borrow()
            .values()
            .map(|s| {
                let seal = s.seal.get();
                SegmentInfo {
                    base_offset: s.base_offset,
                    next_offset: s.durable_next_offset.get(),
                    size_bytes: s.durable_len.get(),
                    sealed: seal.is_some(),
                    root: seal.map(|m| m.root),
                }
            })
            .collect();
        StreamInfo {
            stream: self.name.clone(),
            first_offset: self.log_start.get(),
            next_offset: self.w.borrow().next_offset,
            high_watermark: self.high_watermark.get(),
            segments,
            core,
            fenced_reason: self.fenced_reason(),
        }
    }
}

/// Seal a durable segment: drop its preallocation past the data, then write
/// its index and, last, its manifest (the manifest's rename is the commit point).
pub(crate) async fn write_seal<S: Storage>(
    storage: &S,
    dir: &std::path::Path,
    seg: &Segment<S>,
    file: &S::File,
    data_len: u64,
    next_offset: u64,
    batch_count: u64,
) -> Result<SealManifest> {
    let ctx = |what: &str, e: &std::io::Error| EngineError::io(format!("{what} {}", seg.path.display()), e);
    file.truncate(align_up(data_len, BLOCK_BYTES)).await.map_err(|e| ctx("truncate", &e))?;
    file.sync_data().await.map_err(|e| ctx("fdatasync", &e))?;
    seg.hash_settled().await;
    let root = seg.finish_hash(data_len);
    let index = encode_index(&seg.index.borrow());
    let idx = index_path(dir, seg.base_offset);
    storage.write_small_durably(&idx, &index).await.map_err(|e| ctx("write index for", &e))?;
    let manifest =
        SealManifest { base_offset: seg.base_offset, next_offset, data_len, batch_count, sealed_ms: now_ms(), root };
    let path = seal_path(dir, seg.base_offset);
    storage.write_small_durably(&path, &manifest.encode()).await.map_err(|e| ctx("write seal for", &e))?;
    seg.seal.set(Some(manifest));
    Ok(manifest)
}

async fn run_flusher<S: Storage>(stream: Rc<Stream<S>>) {
    loop {
        stream.work.wait_for(|| (stream.has_work() || stream.closing.get()).then_some(())).await;
        if stream.fence.borrow().is_some() {
            if stream.closing.get() {
                break;
            }
            // Nothing more will be written; park until closing.
            stream.work.wait_for(|| stream.closing.get().then_some(())).await;
            break;
        }
        if !stream.has_work() {
            break; // closing with nothing buffered
        }
        if let Err(e) = stream.flush_once().await {
            stream.fence_with(e);
        }
    }
    // Release file handles of segments that are not being written.
    for seg in stream.segments.borrow().values() {
        if seg.is_sealed() {
            seg.close_file();
        }
    }
}
