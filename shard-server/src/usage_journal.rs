//! A durable per-core journal of usage accounting: per-bucket [`CustomerUsage`]
//! totals and the latest [`ConsumerAck`] of every session, as evidence.
//!
//! Totals must be exact for billing. Every change is written with one
//! `write(2)` (page cache) before [`UsageJournal::record`] returns, so a
//! killed process loses nothing. `fdatasync` runs on a timer the caller drives
//! ([`UsageJournal::sync_handle`]); what was written since the last completed
//! `fdatasync` is the window a power loss can lose. The journal is plain std
//! I/O, no glommio: the caller decides which thread blocks on it.
//!
//! # Files
//!
//! In the journal's directory:
//!
//! - `usage-<generation, 20 digits>.log`: an append-only record log. Only the
//!   newest generation is written to.
//! - `usage.snapshot`: totals and kept acks as of the start of its generation.
//! - `usage.snapshot.tmp`: a snapshot being written; deleted on open.
//!
//! The journal's state is the snapshot (empty if absent, generation 0) plus
//! every log of generation `>=` the snapshot's, replayed in order. Those logs
//! must be consecutive and start at the snapshot's generation.
//!
//! # Byte layout
//!
//! Integers are little-endian. A checksum is the first 8 bytes of the BLAKE3
//! hash of the bytes it covers.
//!
//! Log header, 32 bytes, written and `fdatasync`ed when the log is created:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | magic `ddcuslog` |
//! | 8..12 | format version `u32`, 1 |
//! | 12..16 | reserved, zero |
//! | 16..24 | generation `u64`, equal to the one in the file name |
//! | 24..32 | checksum of bytes `0..24` |
//!
//! Then records, back to back:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..2 | magic `UJ` |
//! | 2 | kind: 1 = usage delta, 2 = consumer ack |
//! | 3 | reserved, zero |
//! | 4..8 | body length `u32`: 40 for a delta, 184 for an ack |
//! | 8..8+len | body |
//! | 8+len..16+len | checksum of bytes `0..8+len` |
//!
//! A delta body is the bucket `u64` then [`CustomerUsage::encode`] (32 bytes),
//! 56 bytes a record; it is added to the bucket's total. An ack body is
//! [`ConsumerAck::encode`] (184 bytes), 200 bytes a record; it replaces the
//! kept ack of its [`AckSession`] if its `request_seq` is greater.
//!
//! Snapshot:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | magic `ddcusnap` |
//! | 8..12 | format version `u32`, 1 |
//! | 12..16 | reserved, zero |
//! | 16..24 | generation `u64`: the first log to replay on top |
//! | 24..32 | bucket count `n` |
//! | 32..40 | ack count `m` |
//! | 40.. | `n` × (bucket `u64`, [`CustomerUsage`] 32 bytes), buckets strictly increasing |
//! | | `m` × [`ConsumerAck`] 184 bytes, sessions strictly increasing by (bucket, consumer, node, nonce) |
//! | last 8 | checksum of every byte before it |
//!
//! # Compaction
//!
//! When the live log (header included) is longer than `compact_bytes`, the
//! next record first compacts. With `g` the live generation:
//!
//! 1. `fdatasync` log `g`, so no older log can have a torn tail later;
//! 2. create log `g+1` with its header, `fdatasync` it and the directory;
//! 3. write the snapshot `{g+1, totals, acks}` to `usage.snapshot.tmp`, `fdatasync`;
//! 4. rename it over `usage.snapshot`;
//! 5. `fsync` the directory; from here records go to log `g+1`;
//! 6. delete logs older than `g+1` (a failure is only logged: open deletes them).
//!
//! A crash before step 4 reaches the disk leaves the old snapshot: logs `g`
//! (complete) and `g+1` (empty, its header possibly torn) are replayed, and
//! appending continues in `g+1`. A crash after it leaves the new snapshot,
//! which already holds everything of log `g`; open deletes log `g`. Either
//! way nothing is lost or counted twice.
//!
//! # Recovery
//!
//! Only the newest log can have been cut by a power loss while being written.
//! A record starting at offset `x` of the newest log is a torn tail, truncated
//! away with a warning, if the file ends before the record does, if its
//! checksum fails and it ends exactly at the end of the file, or if every byte
//! from `x` on is zero (the size reached the disk before the data). A newest
//! log no longer than its header whose header fails its checksum is rewritten
//! empty (a crash while creating it). Anything else that does not decode (bad
//! checksum with more bytes after it, unknown kind, a gap in generations, a
//! counter overflow) is an error naming the file and byte offset: the node
//! refuses to start rather than bill wrongly.
//!
//! # Failures
//!
//! A failed write, `fdatasync` or compaction is sticky: the journal refuses
//! every later call with [`UsageJournalError::Poisoned`] until it is reopened
//! (recovery then drops a partly written record). `fdatasync` run by the
//! caller on a [`UsageJournal::sync_handle`] cannot poison the journal, so the
//! caller must treat its failure the same way. Take a fresh handle for every
//! sync: after a compaction, an older handle points at a retired log.
//!
//! # Version history
//!
//! - 1: the layout above.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ddc_auth::account::Account;
use ddc_auth::usage::{AckSession, ConsumerAck, CustomerUsage, UsageError, CONSUMER_ACK_BYTES, USAGE_BYTES};

const FORMAT_VERSION: u32 = 1;
const CHECKSUM_BYTES: usize = 8;

const LOG_MAGIC: &[u8; 8] = b"ddcuslog";
const LOG_HEADER_BYTES: usize = 32;

const RECORD_MAGIC: &[u8; 2] = b"UJ";
const RECORD_HEADER_BYTES: usize = 8;
const KIND_DELTA: u8 = 1;
const KIND_ACK: u8 = 2;
const DELTA_BODY_BYTES: usize = 8 + USAGE_BYTES;
const ACK_BODY_BYTES: usize = CONSUMER_ACK_BYTES;
const DELTA_RECORD_BYTES: usize = RECORD_HEADER_BYTES + DELTA_BODY_BYTES + CHECKSUM_BYTES;
const ACK_RECORD_BYTES: usize = RECORD_HEADER_BYTES + ACK_BODY_BYTES + CHECKSUM_BYTES;

const SNAPSHOT_MAGIC: &[u8; 8] = b"ddcusnap";
const SNAPSHOT_HEADER_BYTES: usize = 40;
const SNAPSHOT_BUCKET_BYTES: usize = 8 + USAGE_BYTES;
const SNAPSHOT_NAME: &str = "usage.snapshot";
const SNAPSHOT_TMP_NAME: &str = "usage.snapshot.tmp";

const _: () = assert!(LOG_HEADER_BYTES == 8 + 4 + 4 + 8 + CHECKSUM_BYTES);
const _: () = assert!(DELTA_RECORD_BYTES == 56);
const _: () = assert!(ACK_RECORD_BYTES == 200);
const _: () = assert!(SNAPSHOT_HEADER_BYTES == 8 + 4 + 4 + 8 + 8 + 8);

/// Why the journal could not be opened or written. Every variant names the
/// file and the byte offset concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsageJournalError {
    /// An I/O call failed.
    #[error("usage journal {}: byte {offset}: {op} failed: {source}", .file.display())]
    Io {
        /// The file (or directory) operated on.
        file: PathBuf,
        /// The offset written or read at; the file's length for syncs.
        offset: u64,
        /// What was being done.
        op: &'static str,
        /// The error from the OS.
        source: io::Error,
    },
    /// Stored bytes do not match their checksum.
    #[error("usage journal {}: byte {offset}: checksum {actual:#018x} does not match the stored {expected:#018x}", .file.display())]
    ChecksumMismatch {
        /// The file holding the bytes.
        file: PathBuf,
        /// Where the checksummed record or header starts.
        offset: u64,
        /// The stored checksum.
        expected: u64,
        /// The checksum of the bytes read.
        actual: u64,
    },
    /// A record has a kind this code does not know.
    #[error("usage journal {}: byte {offset}: unknown record kind {kind}", .file.display())]
    UnknownKind {
        /// The log holding the record.
        file: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// The kind byte read.
        kind: u8,
    },
    /// Stored bytes break a rule of the format.
    #[error("usage journal {}: byte {offset}: {reason}", .file.display())]
    Corrupted {
        /// The file holding the bytes, or the missing file.
        file: PathBuf,
        /// Where the broken field or record starts.
        offset: u64,
        /// The rule broken.
        reason: String,
    },
    /// A counter would overflow, or an ack does not encode and decode.
    #[error("usage journal {}: byte {offset}: {source}", .file.display())]
    Usage {
        /// The log read, or the live log when recording.
        file: PathBuf,
        /// Where the record starts, or would have started.
        offset: u64,
        /// The rule broken.
        source: UsageError,
    },
    /// An earlier write, sync or compaction failed; reopen the journal.
    #[error("usage journal {}: byte {offset}: an earlier write or sync failed; reopen to recover", .file.display())]
    Poisoned {
        /// The live log.
        file: PathBuf,
        /// Its length as last known.
        offset: u64,
    },
}

type Error = UsageJournalError;

fn io_error<'a>(file: &'a Path, offset: u64, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io { file: file.to_path_buf(), offset, op, source }
}

fn corrupted(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupted { file: file.to_path_buf(), offset, reason: reason.into() }
}

/// Sessions ordered by (bucket, consumer, node, nonce), so `acks()` and
/// snapshots are deterministic.
type SessionKey = (u64, Account, Account, [u8; 16]);

fn session_key(session: &AckSession) -> SessionKey {
    (session.bucket, session.consumer, session.node, session.session_nonce)
}

/// What the journal holds; the snapshot and the logs both rebuild it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    totals: BTreeMap<u64, CustomerUsage>,
    acks: BTreeMap<SessionKey, ConsumerAck>,
}

impl State {
    fn total_after(&self, bucket: u64, delta: &CustomerUsage) -> Result<CustomerUsage, UsageError> {
        self.totals.get(&bucket).copied().unwrap_or_default().add(delta)
    }

    /// True if `ack` would replace the kept ack of its session.
    fn supersedes(&self, ack: &ConsumerAck) -> bool {
        match self.acks.get(&session_key(&AckSession::of(ack))) {
            Some(kept) => ack.request_seq > kept.request_seq,
            None => true,
        }
    }

    fn keep_ack(&mut self, ack: &ConsumerAck) {
        if self.supersedes(ack) {
            self.acks.insert(session_key(&AckSession::of(ack)), *ack);
        }
    }
}

/// Steps of a compaction, named so tests can stop one after a given step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompactionStep {
    LiveLogSynced,
    NextLogCreated,
    SnapshotTmpWritten,
    SnapshotRenamed,
    DirectorySynced,
}

#[cfg(test)]
#[derive(Debug, Default)]
struct Faults {
    /// Fail the compaction right after this step, as if the process died.
    crash_after: Option<CompactionStep>,
    /// Write only this many bytes of the next record, then fail.
    short_write_bytes: Option<usize>,
}

/// The usage journal of one core. See the module docs for the format.
#[derive(Debug)]
pub struct UsageJournal {
    dir: PathBuf,
    compact_bytes: u64,
    state: State,
    /// The oldest log still on disk; compaction deletes it up to the live one.
    oldest_generation: u64,
    generation: u64,
    log: File,
    log_path: PathBuf,
    log_bytes: u64,
    /// Set by a failed write, sync or compaction; a `Cell` so `sync(&self)` can set it.
    poisoned: Cell<bool>,
    #[cfg(test)]
    faults: Faults,
}

impl UsageJournal {
    /// Open or create the journal in `dir` (created with parents), replaying what is there.
    /// `compact_bytes`: when the live log file grows past this, the next record triggers compaction.
    pub fn open(dir: &Path, compact_bytes: u64) -> Result<UsageJournal, UsageJournalError> {
        fs::create_dir_all(dir).map_err(io_error(dir, 0, "create directory"))?;
        let mut generations = Vec::new();
        let mut snapshot_found = false;
        let mut directory_changed = false;
        for entry in fs::read_dir(dir).map_err(io_error(dir, 0, "list directory"))? {
            let name = entry.map_err(io_error(dir, 0, "list directory"))?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == SNAPSHOT_NAME {
                snapshot_found = true;
            } else if name == SNAPSHOT_TMP_NAME {
                // An unfinished compaction; the old snapshot and logs are whole.
                let path = dir.join(name);
                fs::remove_file(&path).map_err(io_error(&path, 0, "remove"))?;
                directory_changed = true;
            } else if let Some(generation) = parse_log_name(name) {
                generations.push(generation);
            }
        }
        generations.sort_unstable();

        let snapshot_path = dir.join(SNAPSHOT_NAME);
        let (snapshot_generation, mut state) = if snapshot_found {
            let bytes = fs::read(&snapshot_path).map_err(io_error(&snapshot_path, 0, "read"))?;
            decode_snapshot(&bytes, &snapshot_path)?
        } else {
            (0, State::default())
        };

        // Logs older than the snapshot are already in it: a compaction ended
        // before deleting them.
        let first_live = generations.partition_point(|&g| g < snapshot_generation);
        for &generation in &generations[..first_live] {
            let path = dir.join(log_name(generation));
            fs::remove_file(&path).map_err(io_error(&path, 0, "remove"))?;
            directory_changed = true;
        }
        let generations = &generations[first_live..];
        if generations.first().copied().unwrap_or(snapshot_generation) != snapshot_generation
            || (snapshot_found && generations.is_empty())
        {
            return Err(corrupted(
                &dir.join(log_name(snapshot_generation)),
                0,
                format!("log generation {snapshot_generation} is missing; the snapshot (or, without one, the first log) starts there"),
            ));
        }
        for pair in generations.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(corrupted(
                    &dir.join(log_name(pair[0] + 1)),
                    0,
                    format!("log generation {} is missing between {} and {}", pair[0] + 1, pair[0], pair[1]),
                ));
            }
        }

        let mut live = None;
        for (index, &generation) in generations.iter().enumerate() {
            let path = dir.join(log_name(generation));
            let newest = index + 1 == generations.len();
            live = Some((generation, replay_log(&path, generation, newest, &mut state)?));
        }
        let (generation, log_path, log, log_bytes) = match live {
            Some((generation, Replayed::Records { valid_bytes })) => {
                let path = dir.join(log_name(generation));
                let log = OpenOptions::new().append(true).open(&path).map_err(io_error(&path, 0, "open"))?;
                let length = log.metadata().map_err(io_error(&path, 0, "stat"))?.len();
                if length > valid_bytes {
                    // replay_log has logged why the tail is dropped.
                    log.set_len(valid_bytes).map_err(io_error(&path, valid_bytes, "truncate torn tail"))?;
                    log.sync_data().map_err(io_error(&path, valid_bytes, "fdatasync"))?;
                }
                (generation, path, log, valid_bytes)
            }
            Some((generation, Replayed::TornHeader)) => {
                let path = dir.join(log_name(generation));
                fs::remove_file(&path).map_err(io_error(&path, 0, "remove log with torn header"))?;
                let (log, path) = create_log(dir, generation)?;
                (generation, path, log, LOG_HEADER_BYTES as u64)
            }
            None => {
                assert!(!snapshot_found && snapshot_generation == 0);
                let (log, path) = create_log(dir, 0)?;
                (0, path, log, LOG_HEADER_BYTES as u64)
            }
        };
        if directory_changed {
            sync_dir(dir)?;
        }
        Ok(UsageJournal {
            dir: dir.to_path_buf(),
            compact_bytes,
            state,
            oldest_generation: snapshot_generation,
            generation,
            log,
            log_path,
            log_bytes,
            poisoned: Cell::new(false),
            #[cfg(test)]
            faults: Faults::default(),
        })
    }

    /// Add `delta` to bucket's totals: the record is written (one write_all) before returning.
    /// On a write error the in-memory totals are unchanged and the error returned (caller refuses the request).
    pub fn record(&mut self, bucket: u64, delta: &CustomerUsage) -> Result<(), UsageJournalError> {
        self.check_not_poisoned()?;
        let total = self.state.total_after(bucket, delta).map_err(|source| Error::Usage {
            file: self.log_path.clone(),
            offset: self.log_bytes,
            source,
        })?;
        self.compact_if_due()?;
        let mut body = [0u8; DELTA_BODY_BYTES];
        body[..8].copy_from_slice(&bucket.to_le_bytes());
        body[8..].copy_from_slice(&delta.encode());
        self.append(&frame::<DELTA_RECORD_BYTES>(KIND_DELTA, &body))?;
        self.state.totals.insert(bucket, total);
        Ok(())
    }

    /// Keep `ack` as the latest evidence of its AckSession (caller already checked it with AckLedger rules).
    /// Replaces the kept ack of the same session only if request_seq is greater.
    pub fn record_ack(&mut self, ack: &ConsumerAck) -> Result<(), UsageJournalError> {
        self.check_not_poisoned()?;
        if !self.state.supersedes(ack) {
            return Ok(());
        }
        let body = ack.encode();
        // Replay decodes this; an ack it would refuse must not reach the disk.
        ConsumerAck::decode(&body).map_err(|source| Error::Usage {
            file: self.log_path.clone(),
            offset: self.log_bytes,
            source,
        })?;
        self.compact_if_due()?;
        self.append(&frame::<ACK_RECORD_BYTES>(KIND_ACK, &body))?;
        self.state.keep_ack(ack);
        Ok(())
    }

    /// Totals per bucket.
    pub fn totals(&self) -> &BTreeMap<u64, CustomerUsage> {
        &self.state.totals
    }

    /// Latest ack per session (deterministic order).
    pub fn acks(&self) -> Vec<ConsumerAck> {
        self.state.acks.values().copied().collect()
    }

    /// The kept ack of a session, if any.
    pub fn latest_ack(&self, session: &AckSession) -> Option<&ConsumerAck> {
        self.state.acks.get(&session_key(session))
    }

    /// A duplicate of the log file descriptor for fdatasync off the reactor thread.
    /// Take a fresh one for every sync: compaction retires the log it points at.
    pub fn sync_handle(&self) -> std::io::Result<std::fs::File> {
        self.log.try_clone()
    }

    /// fdatasync now (used at shutdown and in tests).
    pub fn sync(&self) -> Result<(), UsageJournalError> {
        self.check_not_poisoned()?;
        // After a failed fdatasync the kernel may have dropped the dirty pages
        // (fsyncgate): a retry could succeed with data lost.
        self.log.sync_data().inspect_err(|_| self.poisoned.set(true)).map_err(io_error(
            &self.log_path,
            self.log_bytes,
            "fdatasync",
        ))
    }

    fn check_not_poisoned(&self) -> Result<(), Error> {
        if self.poisoned.get() {
            return Err(Error::Poisoned { file: self.log_path.clone(), offset: self.log_bytes });
        }
        Ok(())
    }

    fn append(&mut self, record: &[u8]) -> Result<(), Error> {
        let offset = self.log_bytes;
        match self.write_record(record) {
            Ok(()) => {
                self.log_bytes += record.len() as u64;
                Ok(())
            }
            Err(source) => {
                // Part of the record may be in the file: appending after it
                // would put garbage mid-log. Reopening truncates it.
                self.poisoned.set(true);
                Err(Error::Io { file: self.log_path.clone(), offset, op: "append record", source })
            }
        }
    }

    fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(bytes) = self.faults.short_write_bytes.take() {
            self.log.write_all(&record[..bytes.min(record.len())])?;
            return Err(io::Error::other("injected short write"));
        }
        self.log.write_all(record)
    }

    fn compact_if_due(&mut self) -> Result<(), Error> {
        if self.log_bytes <= self.compact_bytes || self.log_bytes <= LOG_HEADER_BYTES as u64 {
            return Ok(());
        }
        self.compact().inspect_err(|_| self.poisoned.set(true))
    }

    fn compact(&mut self) -> Result<(), Error> {
        let next = self.generation.checked_add(1).expect("log generation overflows u64");
        self.log.sync_data().map_err(io_error(&self.log_path, self.log_bytes, "fdatasync"))?;
        self.crash_point(CompactionStep::LiveLogSynced)?;

        let (next_log, next_path) = create_log(&self.dir, next)?;
        self.crash_point(CompactionStep::NextLogCreated)?;

        let snapshot = encode_snapshot(next, &self.state);
        let tmp_path = self.dir.join(SNAPSHOT_TMP_NAME);
        let mut tmp = File::create(&tmp_path).map_err(io_error(&tmp_path, 0, "create"))?;
        tmp.write_all(&snapshot).map_err(io_error(&tmp_path, 0, "write"))?;
        tmp.sync_all().map_err(io_error(&tmp_path, snapshot.len() as u64, "fsync"))?;
        drop(tmp);
        self.crash_point(CompactionStep::SnapshotTmpWritten)?;

        let snapshot_path = self.dir.join(SNAPSHOT_NAME);
        fs::rename(&tmp_path, &snapshot_path).map_err(io_error(&snapshot_path, 0, "rename snapshot"))?;
        self.crash_point(CompactionStep::SnapshotRenamed)?;
        sync_dir(&self.dir)?;
        self.crash_point(CompactionStep::DirectorySynced)?;

        self.log = next_log;
        self.log_path = next_path;
        self.log_bytes = LOG_HEADER_BYTES as u64;
        self.generation = next;
        for generation in self.oldest_generation..next {
            let path = self.dir.join(log_name(generation));
            if let Err(error) = fs::remove_file(&path) {
                // The snapshot already covers it; the next open deletes it.
                tracing::warn!(file = %path.display(), %error, "could not delete a compacted usage log");
            }
        }
        self.oldest_generation = next;
        tracing::debug!(generation = next, buckets = self.state.totals.len(), "usage journal compacted");
        Ok(())
    }

    fn crash_point(&self, step: CompactionStep) -> Result<(), Error> {
        #[cfg(test)]
        if self.faults.crash_after == Some(step) {
            return Err(Error::Io {
                file: self.dir.clone(),
                offset: 0,
                op: "compaction",
                source: io::Error::other(format!("injected crash after {step:?}")),
            });
        }
        let _ = step;
        Ok(())
    }
}

fn log_name(generation: u64) -> String {
    format!("usage-{generation:020}.log")
}

fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("usage-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let mut out = [0u8; CHECKSUM_BYTES];
    out.copy_from_slice(&blake3::hash(bytes).as_bytes()[..CHECKSUM_BYTES]);
    out
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(le)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut le = [0u8; 4];
    le.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(le)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir, 0, "fsync directory"))
}

fn encode_log_header(generation: u64) -> [u8; LOG_HEADER_BYTES] {
    let mut out = [0u8; LOG_HEADER_BYTES];
    out[0..8].copy_from_slice(LOG_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&generation.to_le_bytes());
    let sum = checksum(&out[..24]);
    out[24..].copy_from_slice(&sum);
    out
}

/// Create log `generation` with its header, durable (file and directory
/// entry) before it is returned.
fn create_log(dir: &Path, generation: u64) -> Result<(File, PathBuf), Error> {
    let path = dir.join(log_name(generation));
    let mut log = OpenOptions::new().append(true).create_new(true).open(&path).map_err(io_error(&path, 0, "create"))?;
    log.write_all(&encode_log_header(generation)).map_err(io_error(&path, 0, "write header"))?;
    log.sync_data().map_err(io_error(&path, 0, "fdatasync"))?;
    sync_dir(dir)?;
    Ok((log, path))
}

/// One record's framing: header, `body`, checksum.
fn frame<const N: usize>(kind: u8, body: &[u8]) -> [u8; N] {
    assert_eq!(N, RECORD_HEADER_BYTES + body.len() + CHECKSUM_BYTES);
    let mut out = [0u8; N];
    out[0..2].copy_from_slice(RECORD_MAGIC);
    out[2] = kind;
    out[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
    out[RECORD_HEADER_BYTES..N - CHECKSUM_BYTES].copy_from_slice(body);
    let sum = checksum(&out[..N - CHECKSUM_BYTES]);
    out[N - CHECKSUM_BYTES..].copy_from_slice(&sum);
    debug_assert!(matches!(parse_record(&out), Ok((_, n)) if n == N));
    out
}

#[derive(Debug)]
enum Entry {
    Delta { bucket: u64, delta: CustomerUsage },
    Ack(ConsumerAck),
}

/// Why bytes at a record offset are not a record.
#[derive(Debug)]
enum Flaw {
    /// The bytes end before the record does.
    Short,
    Header(&'static str),
    Kind(u8),
    Checksum {
        expected: u64,
        actual: u64,
        extent: usize,
    },
    Decode(UsageError),
}

impl Flaw {
    fn into_error(self, file: &Path, offset: u64) -> Error {
        match self {
            Flaw::Short => corrupted(file, offset, "record cut short by the end of a log that is not the newest"),
            Flaw::Header(reason) => corrupted(file, offset, reason),
            Flaw::Kind(kind) => Error::UnknownKind { file: file.to_path_buf(), offset, kind },
            Flaw::Checksum { expected, actual, .. } => {
                Error::ChecksumMismatch { file: file.to_path_buf(), offset, expected, actual }
            }
            Flaw::Decode(source) => Error::Usage { file: file.to_path_buf(), offset, source },
        }
    }

    /// Why the flawed bytes `rest` (to the end of the newest log) can be a
    /// write cut by a power loss, or `None` if they cannot.
    fn torn_tail(&self, rest: &[u8]) -> Option<&'static str> {
        match self {
            Flaw::Short => Some("record cut short by the end of the file"),
            Flaw::Checksum { extent, .. } if *extent == rest.len() => Some("last record fails its checksum"),
            _ if rest.iter().all(|&b| b == 0) => Some("zero-filled tail"),
            _ => None,
        }
    }
}

/// The record at the start of `rest`, and its length.
fn parse_record(rest: &[u8]) -> Result<(Entry, usize), Flaw> {
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(Flaw::Short);
    }
    if &rest[0..2] != RECORD_MAGIC {
        return Err(Flaw::Header("record magic is not UJ"));
    }
    let kind = rest[2];
    let body_bytes = match kind {
        KIND_DELTA => DELTA_BODY_BYTES,
        KIND_ACK => ACK_BODY_BYTES,
        other => return Err(Flaw::Kind(other)),
    };
    if rest[3] != 0 {
        return Err(Flaw::Header("reserved record byte is not zero"));
    }
    if le_u32(rest, 4) as usize != body_bytes {
        return Err(Flaw::Header("record length does not match its kind"));
    }
    let extent = RECORD_HEADER_BYTES + body_bytes + CHECKSUM_BYTES;
    if rest.len() < extent {
        return Err(Flaw::Short);
    }
    let summed = extent - CHECKSUM_BYTES;
    let expected = le_u64(rest, summed);
    let actual = u64::from_le_bytes(checksum(&rest[..summed]));
    if expected != actual {
        return Err(Flaw::Checksum { expected, actual, extent });
    }
    let body = &rest[RECORD_HEADER_BYTES..summed];
    let entry = match kind {
        KIND_DELTA => {
            Entry::Delta { bucket: le_u64(body, 0), delta: CustomerUsage::decode(&body[8..]).map_err(Flaw::Decode)? }
        }
        _ => Entry::Ack(ConsumerAck::decode(body).map_err(Flaw::Decode)?),
    };
    Ok((entry, extent))
}

#[derive(Debug)]
enum Replayed {
    /// Records up to `valid_bytes` applied; anything after is a torn tail.
    Records { valid_bytes: u64 },
    /// The newest log holds no more than a torn header.
    TornHeader,
}

/// Apply log `generation` at `path` to `state`. Only the `newest` log may end
/// in a torn tail or header.
fn replay_log(path: &Path, generation: u64, newest: bool, state: &mut State) -> Result<Replayed, Error> {
    let bytes = fs::read(path).map_err(io_error(path, 0, "read"))?;
    let header_summed = LOG_HEADER_BYTES - CHECKSUM_BYTES;
    let header_intact =
        bytes.len() >= LOG_HEADER_BYTES && checksum(&bytes[..header_summed]) == bytes[header_summed..LOG_HEADER_BYTES];
    if !header_intact {
        if newest && bytes.len() <= LOG_HEADER_BYTES {
            tracing::warn!(file = %path.display(), bytes = bytes.len(), "usage log header torn while creating the log; rewriting it");
            return Ok(Replayed::TornHeader);
        }
        if bytes.len() < LOG_HEADER_BYTES {
            return Err(corrupted(path, 0, format!("log is {} bytes, shorter than its header", bytes.len())));
        }
        return Err(Error::ChecksumMismatch {
            file: path.to_path_buf(),
            offset: 0,
            expected: le_u64(&bytes, header_summed),
            actual: u64::from_le_bytes(checksum(&bytes[..header_summed])),
        });
    }
    if &bytes[0..8] != LOG_MAGIC {
        return Err(corrupted(path, 0, "not a usage log (bad magic)"));
    }
    let version = le_u32(&bytes, 8);
    if version != FORMAT_VERSION || le_u32(&bytes, 12) != 0 {
        return Err(corrupted(path, 8, format!("unknown log version {version}")));
    }
    let named = le_u64(&bytes, 16);
    if named != generation {
        return Err(corrupted(path, 16, format!("header says generation {named}, the file name {generation}")));
    }

    let mut at = LOG_HEADER_BYTES;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (entry, length) = match parse_record(rest) {
            Ok(parsed) => parsed,
            Err(flaw) => match flaw.torn_tail(rest) {
                Some(reason) if newest => {
                    tracing::warn!(
                        file = %path.display(),
                        offset = at,
                        dropped_bytes = rest.len(),
                        reason,
                        "truncating torn tail of usage log"
                    );
                    break;
                }
                _ => return Err(flaw.into_error(path, at as u64)),
            },
        };
        match entry {
            Entry::Delta { bucket, delta } => {
                let total = state.total_after(bucket, &delta).map_err(|source| Error::Usage {
                    file: path.to_path_buf(),
                    offset: at as u64,
                    source,
                })?;
                state.totals.insert(bucket, total);
            }
            Entry::Ack(ack) => state.keep_ack(&ack),
        }
        at += length;
    }
    assert!(at <= bytes.len());
    Ok(Replayed::Records { valid_bytes: at as u64 })
}

fn encode_snapshot(generation: u64, state: &State) -> Vec<u8> {
    let length = SNAPSHOT_HEADER_BYTES
        + state.totals.len() * SNAPSHOT_BUCKET_BYTES
        + state.acks.len() * CONSUMER_ACK_BYTES
        + CHECKSUM_BYTES;
    let mut out = Vec::with_capacity(length);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(state.totals.len() as u64).to_le_bytes());
    out.extend_from_slice(&(state.acks.len() as u64).to_le_bytes());
    for (bucket, usage) in &state.totals {
        out.extend_from_slice(&bucket.to_le_bytes());
        out.extend_from_slice(&usage.encode());
    }
    for ack in state.acks.values() {
        out.extend_from_slice(&ack.encode());
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum);
    assert_eq!(out.len(), length);
    out
}

/// The generation and state a snapshot holds.
fn decode_snapshot(bytes: &[u8], file: &Path) -> Result<(u64, State), Error> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES + CHECKSUM_BYTES {
        return Err(corrupted(file, 0, format!("snapshot is {} bytes, shorter than its header", bytes.len())));
    }
    let summed = bytes.len() - CHECKSUM_BYTES;
    let expected = le_u64(bytes, summed);
    let actual = u64::from_le_bytes(checksum(&bytes[..summed]));
    if expected != actual {
        return Err(Error::ChecksumMismatch { file: file.to_path_buf(), offset: summed as u64, expected, actual });
    }
    if &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(corrupted(file, 0, "not a usage snapshot (bad magic)"));
    }
    let version = le_u32(bytes, 8);
    if version != FORMAT_VERSION || le_u32(bytes, 12) != 0 {
        return Err(corrupted(file, 8, format!("unknown snapshot version {version}")));
    }
    let generation = le_u64(bytes, 16);
    let buckets = le_u64(bytes, 24);
    let acks = le_u64(bytes, 32);
    let length = buckets
        .checked_mul(SNAPSHOT_BUCKET_BYTES as u64)
        .zip(acks.checked_mul(CONSUMER_ACK_BYTES as u64))
        .and_then(|(b, a)| b.checked_add(a))
        .and_then(|n| n.checked_add((SNAPSHOT_HEADER_BYTES + CHECKSUM_BYTES) as u64));
    if length != Some(bytes.len() as u64) {
        return Err(corrupted(
            file,
            24,
            format!("{buckets} buckets and {acks} acks do not fill {} bytes", bytes.len()),
        ));
    }

    let mut state = State::default();
    let mut at = SNAPSHOT_HEADER_BYTES;
    for _ in 0..buckets {
        let bucket = le_u64(bytes, at);
        if state.totals.last_key_value().is_some_and(|(&last, _)| last >= bucket) {
            return Err(corrupted(file, at as u64, format!("bucket {bucket} out of order")));
        }
        let usage = CustomerUsage::decode(&bytes[at + 8..at + SNAPSHOT_BUCKET_BYTES])
            .map_err(|source| Error::Usage { file: file.to_path_buf(), offset: at as u64, source })?;
        state.totals.insert(bucket, usage);
        at += SNAPSHOT_BUCKET_BYTES;
    }
    for _ in 0..acks {
        let ack = ConsumerAck::decode(&bytes[at..at + CONSUMER_ACK_BYTES]).map_err(|source| Error::Usage {
            file: file.to_path_buf(),
            offset: at as u64,
            source,
        })?;
        let key = session_key(&AckSession::of(&ack));
        if state.acks.last_key_value().is_some_and(|(last, _)| *last >= key) {
            return Err(corrupted(file, at as u64, "ack sessions out of order"));
        }
        state.acks.insert(key, ack);
        at += CONSUMER_ACK_BYTES;
    }
    assert_eq!(at, summed);
    Ok((generation, state))
}

#[cfg(test)]
mod tests;
