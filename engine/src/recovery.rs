//! Recovery: rebuild a stream's state from its files after any stop.
//!
//! Sealed segments are trusted through their manifest and index (a missing
//! or damaged index is rebuilt by scanning). The open segment is scanned
//! batch by batch, checking both checksums and offset continuity; the scan
//! stops at the first batch that fails. What follows is either a torn tail
//! (writes that no fdatasync covered, so never acknowledged) and is
//! truncated, or — if a valid batch appears further than the flush window
//! beyond the stop — damage to synced data, which is reported and never
//! truncated away.

use std::collections::BTreeMap;
use std::rc::Rc;

use ddc_formats::batch::{BatchHeader, BATCH_HEADER_BYTES, BATCH_MAGIC};
use ddc_formats::segment::{
    decode_index, encode_index, IndexEntry, RecoveryPoint, SealManifest, SegmentHeader, SEGMENT_HEADER_BYTES,
};

use crate::config::LogConfig;
use crate::error::{EngineError, Result};
use crate::segment::{index_path, parse_log_name, recovery_point_path, seal_path, Segment};
use crate::storage::{align_down, align_up, IoBuf, Storage, StorageFile};
use crate::stream::{write_seal, SegWriter, Stream, BLOCK_BYTES};

const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// What a scan of a segment file found.
pub struct ScanOutcome {
    pub header: Option<SegmentHeader>,
    /// End of the last valid batch (or of the header).
    pub valid_end: u64,
    pub next_offset: u64,
    pub batch_count: u64,
    pub index: Vec<IndexEntry>,
    pub hasher: blake3::Hasher,
    pub file_size: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stop_reason: Option<String>,
}

/// Scan a segment file from its header, up to `limit` bytes (or the file size).
pub async fn scan_segment<F: StorageFile>(
    file: &F,
    base: u64,
    limit: Option<u64>,
    index_interval_bytes: u64,
) -> Result<ScanOutcome> {
    let io = |what: &str, e: std::io::Error| EngineError::io(format!("scan segment {base}: {what}"), &e);
    let file_size = file.size().await.map_err(|e| io("size", e))?;
    let end = limit.unwrap_or(file_size).min(file_size);
    let mut outcome = ScanOutcome {
        header: None,
        valid_end: 0,
        next_offset: base,
        batch_count: 0,
        index: Vec::new(),
        hasher: blake3::Hasher::new(),
        file_size,
        stop_reason: None,
    };
    let head = file.read_at(0, SEGMENT_HEADER_BYTES).await.map_err(|e| io("read header", e))?;
    match SegmentHeader::decode(&head) {
        Ok(h) if h.base_offset == base => outcome.header = Some(h),
        Ok(h) => {
            outcome.stop_reason = Some(format!("segment header says base {}, file name says {base}", h.base_offset));
            return Ok(outcome);
        }
        Err(e) => {
            outcome.stop_reason = Some(format!("segment header: {e}"));
            return Ok(outcome);
        }
    }
    outcome.hasher.update(&head);
    outcome.valid_end = SEGMENT_HEADER_BYTES as u64;
    // `buf` holds file bytes from position `buf_pos`; `at` indexes into it.
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = outcome.valid_end;
    let mut last_index_pos: Option<u64> = None;
    loop {
        let pos = outcome.valid_end;
        let at = (pos - buf_pos) as usize;
        // Make sure a header, then the whole batch, is in `buf` (or learn the file ends first).
        let mut needed = BATCH_HEADER_BYTES;
        let header = loop {
            if buf.len() - at < needed {
                let read_from = buf_pos + buf.len() as u64;
                if read_from >= end {
                    if pos < end {
                        outcome.stop_reason =
                            Some(format!("partial batch at {pos}: {} bytes before end {end}", end - pos));
                    }
                    return Ok(outcome);
                }
                let want = SCAN_CHUNK_BYTES.max(needed - (buf.len() - at)).min((end - read_from) as usize);
                let more = file.read_at(read_from, want).await.map_err(|e| io("read", e))?;
                if more.is_empty() {
                    outcome.stop_reason = Some(format!("file ends at {read_from}"));
                    return Ok(outcome);
                }
                buf.extend_from_slice(&more);
                continue;
            }
            match BatchHeader::decode(&buf[at..]) {
                Ok(h) if needed == BATCH_HEADER_BYTES => {
                    needed = h.batch_len();
                    if buf.len() - at < needed {
                        continue;
                    }
                    break h;
                }
                Ok(h) => break h,
                Err(e) => {
                    outcome.stop_reason = Some(format!("at {pos}: {e}"));
                    return Ok(outcome);
                }
            }
        };
        let batch = &buf[at..at + header.batch_len()];
        if let Err(e) = header.verify_body(&batch[BATCH_HEADER_BYTES..]) {
            outcome.stop_reason = Some(format!("at {pos}: {e}"));
            return Ok(outcome);
        }
        if header.base_offset != outcome.next_offset {
            outcome.stop_reason =
                Some(format!("at {pos}: batch claims offset {}, expected {}", header.base_offset, outcome.next_offset));
            return Ok(outcome);
        }
        outcome.hasher.update(batch);
        let due = last_index_pos.is_none_or(|last| pos - last >= index_interval_bytes);
        if due {
            outcome.index.push(IndexEntry { offset: header.base_offset, position: pos });
            last_index_pos = Some(pos);
        }
        outcome.valid_end = pos + header.batch_len() as u64;
        outcome.next_offset = header.next_offset();
        outcome.batch_count += 1;
        // Drop consumed bytes now and then so the buffer stays small.
        let consumed = (outcome.valid_end - buf_pos) as usize;
        if consumed > SCAN_CHUNK_BYTES {
            buf.drain(..consumed);
            buf_pos = outcome.valid_end;
        }
    }
}

/// Is there a valid batch (at or beyond `expected_offset`) further than
/// `window` bytes past `stop`? If so, the bytes at `stop` were once synced
/// and the damage is corruption, not a torn tail.
async fn valid_batch_beyond<F: StorageFile>(
    file: &F,
    stop: u64,
    file_size: u64,
    window: u64,
    expected_offset: u64,
) -> Result<Option<u64>> {
    let mut pos = stop.saturating_add(window);
    while pos + BATCH_HEADER_BYTES as u64 <= file_size {
        let want = (SCAN_CHUNK_BYTES as u64 + BATCH_HEADER_BYTES as u64).min(file_size - pos) as usize;
        let bytes = file.read_at(pos, want).await.map_err(|e| EngineError::io("corruption probe", &e))?;
        if bytes.len() < BATCH_HEADER_BYTES {
            break;
        }
        for i in 0..=bytes.len() - BATCH_HEADER_BYTES {
            if bytes[i..i + 4] == BATCH_MAGIC {
                if let Ok(h) = BatchHeader::decode(&bytes[i..]) {
                    if h.base_offset >= expected_offset {
                        return Ok(Some(pos + i as u64));
                    }
                }
            }
        }
        pos += (bytes.len() - BATCH_HEADER_BYTES + 1) as u64;
    }
    Ok(None)
}

/// Cut the file at `valid_end`: zero the rest of its last block, drop whole blocks after it.
async fn truncate_tail<S: Storage>(storage: &S, file: &S::File, valid_end: u64) -> Result<()> {
    let io = |what: &str, e: std::io::Error| EngineError::io(format!("truncate torn tail: {what}"), &e);
    let block_start = align_down(valid_end, BLOCK_BYTES);
    if valid_end > block_start {
        let keep = (valid_end - block_start) as usize;
        let old = file.read_at(block_start, keep).await.map_err(|e| io("read", e))?;
        let mut block = storage.alloc_buf(BLOCK_BYTES as usize);
        block.as_mut_slice().fill(0);
        block.as_mut_slice()[..keep].copy_from_slice(&old[..keep]);
        file.write_at(Rc::new(block), block_start).await.map_err(|e| io("write", e))?;
    }
    file.truncate(align_up(valid_end, BLOCK_BYTES)).await.map_err(|e| io("truncate", e))?;
    file.sync_data().await.map_err(|e| io("fdatasync", e))?;
    Ok(())
}

/// Open a stream from its directory.
pub async fn open_stream<S: Storage>(name: &str, storage: &S, config: &Rc<LogConfig>) -> Result<Rc<Stream<S>>> {
    let dir = config.streams_dir().join(name);
    let corrupted = |segment_base: u64, position: u64, end: u64, reason: String| EngineError::Corrupted {
        stream: name.to_owned(),
        segment_base,
        position,
        end,
        reason,
    };
    let io = |what: String, e: std::io::Error| EngineError::io(what, &e);
    let entries = storage.list_dir(&dir).await.map_err(|e| io(format!("list {}", dir.display()), e))?;
    for tmp in entries.iter().filter(|n| n.ends_with(".tmp")) {
        storage.remove_file(&dir.join(tmp)).await.map_err(|e| io(format!("remove {tmp}"), e))?;
    }
    let mut bases: Vec<u64> = entries.iter().filter_map(|n| parse_log_name(n)).collect();
    bases.sort_unstable();
    let mut segments: BTreeMap<u64, Rc<Segment<S>>> = BTreeMap::new();
    let mut active: Option<SegWriter<S>> = None;
    let mut expected_next: Option<u64> = None;
    let window = config.flush_window_bytes();
    let recovery_point = match storage
        .read_small(&recovery_point_path(&dir))
        .await
        .map_err(|e| io(format!("read recovery point of {name}"), e))?
    {
        Some(bytes) => match RecoveryPoint::decode(&bytes) {
            Ok(rp) => Some(rp),
            Err(e) => {
                // Written atomically, so this is damage; recovery just loses the extra check.
                tracing::warn!(stream = name, error = %e, "recovery point unreadable; ignoring it");
                None
            }
        },
        None => None,
    };
    if let Some(rp) = recovery_point {
        if !bases.contains(&rp.segment_base) {
            return Err(corrupted(
                rp.segment_base,
                0,
                rp.durable_len,
                format!("segment file is missing, but {} bytes of it were durable", rp.durable_len),
            ));
        }
    }
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        if let Some(expected) = expected_next {
            if base != expected {
                return Err(corrupted(
                    base,
                    0,
                    0,
                    format!("segment starts at offset {base}, previous one ends at {expected}"),
                ));
            }
        }
        let seal =
            match storage.read_small(&seal_path(&dir, base)).await.map_err(|e| io(format!("read seal {base}"), e))? {
                Some(bytes) => match SealManifest::decode(&bytes) {
                    Ok(m) if m.base_offset == base => Some(m),
                    Ok(_) | Err(_) => {
                        tracing::warn!(stream = name, base, "seal manifest unreadable; rescanning the segment");
                        None
                    }
                },
                None => None,
            };
        if let Some(manifest) = seal {
            let seg = Rc::new(Segment::new(&dir, base, manifest.sealed_ms));
            seg.seal.set(Some(manifest));
            seg.durable_len.set(manifest.data_len);
            seg.durable_next_offset.set(manifest.next_offset);
            let index = match storage
                .read_small(&index_path(&dir, base))
                .await
                .map_err(|e| io(format!("read index {base}"), e))?
            {
                Some(bytes) => decode_index(&bytes).ok(),
                None => None,
            };
            let index = match index {
                Some(index) => index,
                None => {
                    let file = storage
                        .open_file(&seg.path)
                        .await
                        .map_err(|e| io(format!("open {}", seg.path.display()), e))?;
                    let scan = scan_segment(&file, base, Some(manifest.data_len), config.index_interval_bytes).await?;
                    if scan.valid_end != manifest.data_len {
                        tracing::error!(stream = name, base, at = scan.valid_end, reason = ?scan.stop_reason, "sealed segment is damaged; reads of the damaged range will fail");
                    }
                    let path = index_path(&dir, base);
                    storage
                        .write_small_durably(&path, &encode_index(&scan.index))
                        .await
                        .map_err(|e| io(format!("write rebuilt index {}", path.display()), e))?;
                    tracing::info!(stream = name, base, entries = scan.index.len(), "rebuilt missing index");
                    scan.index
                }
            };
            *seg.index.borrow_mut() = index;
            segments.insert(base, seg);
            expected_next = Some(manifest.next_offset);
            if last {
                let fresh = Rc::new(Segment::new(&dir, manifest.next_offset, crate::stream::now_ms()));
                segments.insert(fresh.base_offset, fresh.clone());
                active = Some(SegWriter::fresh(fresh));
            }
            continue;
        }
        let file = storage
            .open_file(&crate::segment::log_path(&dir, base))
            .await
            .map_err(|e| io(format!("open segment {base}"), e))?;
        let scan = scan_segment(&file, base, None, config.index_interval_bytes).await?;
        // Bytes of this segment a recovery point proves were durable (and so acknowledged).
        let proven_durable = recovery_point.filter(|rp| rp.segment_base == base).map_or(0, |rp| rp.durable_len);
        let Some(header) = scan.header else {
            let batch_inside = valid_batch_beyond(&file, SEGMENT_HEADER_BYTES as u64, scan.file_size, 0, base).await?;
            if last && proven_durable == 0 && batch_inside.is_none() {
                // Created, but its first flush never completed: nothing in it was acknowledged.
                tracing::warn!(stream = name, base, reason = ?scan.stop_reason, "removing segment file whose first write did not complete");
                drop(file);
                storage
                    .remove_file(&crate::segment::log_path(&dir, base))
                    .await
                    .map_err(|e| io(format!("remove segment {base}"), e))?;
                storage.sync_dir(&dir).await.map_err(|e| io(format!("fsync {}", dir.display()), e))?;
                let fresh = Rc::new(Segment::new(&dir, base, crate::stream::now_ms()));
                segments.insert(base, fresh.clone());
                active = Some(SegWriter::fresh(fresh));
                expected_next = Some(base);
                continue;
            }
            return Err(corrupted(
                base,
                0,
                SEGMENT_HEADER_BYTES as u64,
                format!(
                    "{} (the segment holds data, so this is not an interrupted creation)",
                    scan.stop_reason.unwrap_or_default()
                ),
            ));
        };
        // The block holding the end of the valid data: its bytes past the end
        // must be zero (our own padding) unless a write was torn.
        let block_start = align_down(scan.valid_end, BLOCK_BYTES);
        let block = file
            .read_at(block_start, (align_up(scan.valid_end, BLOCK_BYTES) - block_start) as usize)
            .await
            .map_err(|e| io(format!("read tail of segment {base}"), e))?;
        let keep = (scan.valid_end - block_start) as usize;
        let dirty_tail = scan.file_size > align_up(scan.valid_end, BLOCK_BYTES)
            || block.get(keep..).is_some_and(|rest| rest.iter().any(|&b| b != 0));
        if scan.valid_end < proven_durable {
            let stop = scan.stop_reason.clone().unwrap_or_else(|| "the file ends".into());
            return Err(corrupted(
                base,
                scan.valid_end,
                proven_durable,
                format!("{stop}; the recovery point proves {proven_durable} bytes were durable"),
            ));
        }
        if dirty_tail {
            let stop = scan.stop_reason.clone().unwrap_or_default();
            if !last {
                return Err(corrupted(
                    base,
                    scan.valid_end,
                    scan.file_size,
                    format!("{stop}; a later segment exists, so this one was fully synced"),
                ));
            }
            if let Some(at) =
                valid_batch_beyond(&file, scan.valid_end, scan.file_size, window, scan.next_offset).await?
            {
                return Err(corrupted(
                    base,
                    scan.valid_end,
                    at,
                    format!(
                        "{stop}; a valid batch follows at {at}, beyond the flush window, so this is not a torn tail"
                    ),
                ));
            }
            tracing::warn!(
                stream = name,
                base,
                valid_end = scan.valid_end,
                dropped_bytes = scan.file_size - scan.valid_end,
                reason = %stop,
                "truncating torn tail (writes no fdatasync covered)"
            );
            truncate_tail(storage, &file, scan.valid_end).await?;
        }
        let seg = Rc::new(Segment::new(&dir, base, header.created_ms));
        seg.durable_len.set(scan.valid_end);
        seg.durable_next_offset.set(scan.next_offset);
        *seg.index.borrow_mut() = scan.index;
        seg.set_hash(scan.hasher, scan.valid_end);
        segments.insert(base, seg.clone());
        expected_next = Some(scan.next_offset);
        if last {
            if config.preallocate {
                // Best effort: on a full disk the stream still opens and serves reads.
                if let Err(e) = file.preallocate(config.segment_bytes_max).await {
                    tracing::warn!(stream = name, base, error = %e, "could not preallocate the open segment");
                }
            }
            let tail = block[..keep].to_vec();
            seg.set_file(Rc::new(file));
            active = Some(SegWriter::resume(seg, scan.valid_end, scan.next_offset, scan.batch_count, tail));
        } else {
            // Rolled but its seal never landed: seal it now.
            write_seal(storage, &dir, &seg, &file, scan.valid_end, scan.next_offset, scan.batch_count).await?;
            tracing::info!(stream = name, base, "sealed segment whose seal was interrupted");
        }
    }
    let active = match active {
        Some(a) => a,
        None => {
            let fresh = Rc::new(Segment::new(&dir, 0, crate::stream::now_ms()));
            segments.insert(0, fresh.clone());
            SegWriter::fresh(fresh)
        }
    };
    Ok(Stream::start(name.to_owned(), dir, storage.clone(), config.clone(), segments, active, true, None))
}
