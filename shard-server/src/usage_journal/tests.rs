//! Tests of the usage journal: layout, torn tails, corruption, compaction crash points, a seeded model.

use super::*;

use ddc_auth::usage::CONSUMER_ACK_VERSION;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn usage(transferred_bytes: u64, stored_bytes: u64, number_of_puts: u64, number_of_gets: u64) -> CustomerUsage {
    CustomerUsage { transferred_bytes, stored_bytes, number_of_puts, number_of_gets }
}

/// An ack with a made-up signature: the journal keeps evidence, it does
/// not check it.
fn ack(bucket: u64, consumer: u8, nonce: u8, request_seq: u64) -> ConsumerAck {
    ConsumerAck {
        version: CONSUMER_ACK_VERSION,
        bucket,
        node: Account([7; 32]),
        consumer: Account([consumer; 32]),
        session_nonce: [nonce; 16],
        request_seq,
        cumulative_bytes: request_seq * 100,
        cumulative_gets: request_seq,
        signature: [request_seq as u8; 64],
    }
}

/// What the journal should hold, kept in memory.
#[derive(Default)]
struct Model(State);

impl Model {
    fn record(&mut self, bucket: u64, delta: &CustomerUsage) {
        let total = self.0.total_after(bucket, delta).unwrap();
        self.0.totals.insert(bucket, total);
    }

    fn record_ack(&mut self, ack: &ConsumerAck) {
        self.0.keep_ack(ack);
    }

    fn check(&self, journal: &UsageJournal) {
        assert_eq!(journal.totals(), &self.0.totals);
        assert_eq!(journal.acks(), self.0.acks.values().copied().collect::<Vec<_>>());
    }
}

fn logs(dir: &Path) -> Vec<u64> {
    let mut generations: Vec<u64> =
        fs::read_dir(dir).unwrap().filter_map(|e| parse_log_name(e.unwrap().file_name().to_str().unwrap())).collect();
    generations.sort_unstable();
    generations
}

fn newest_log(dir: &Path) -> PathBuf {
    dir.join(log_name(*logs(dir).last().unwrap()))
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

fn delta_record(bucket: u64, delta: &CustomerUsage) -> [u8; DELTA_RECORD_BYTES] {
    let mut body = [0u8; DELTA_BODY_BYTES];
    body[..8].copy_from_slice(&bucket.to_le_bytes());
    body[8..].copy_from_slice(&delta.encode());
    frame(KIND_DELTA, &body)
}

#[test]
fn totals_and_acks_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core-0/usage");
    let mut model = Model::default();
    {
        let mut journal = UsageJournal::open(&path, 1 << 20).unwrap();
        for i in 0..100u64 {
            let delta = usage(i * 10, i, 1, i % 3);
            journal.record(i % 7, &delta).unwrap();
            model.record(i % 7, &delta);
        }
        for a in [ack(1, 1, 1, 3), ack(1, 2, 1, 1), ack(2, 1, 9, 4)] {
            journal.record_ack(&a).unwrap();
            model.record_ack(&a);
        }
        model.check(&journal);
        // No sync: a killed process loses nothing written to the page cache.
    }
    let journal = UsageJournal::open(&path, 1 << 20).unwrap();
    model.check(&journal);
    assert_eq!(journal.latest_ack(&AckSession::of(&ack(2, 1, 9, 0))), Some(&ack(2, 1, 9, 4)));
    assert_eq!(journal.latest_ack(&AckSession::of(&ack(3, 1, 9, 0))), None);
    let expected = LOG_HEADER_BYTES + 100 * DELTA_RECORD_BYTES + 3 * ACK_RECORD_BYTES;
    assert_eq!(fs::metadata(newest_log(&path)).unwrap().len(), expected as u64);
    journal.sync().unwrap();
    journal.sync_handle().unwrap().sync_data().unwrap();
}

#[test]
fn record_layout_is_as_documented() {
    let record = delta_record(0x0102, &usage(1, 2, 3, 4));
    assert_eq!(&record[0..8], &[b'U', b'J', 1, 0, 40, 0, 0, 0]);
    assert_eq!(&record[8..16], &0x0102u64.to_le_bytes());
    assert_eq!(&record[16..48], &usage(1, 2, 3, 4).encode());
    assert_eq!(&record[48..56], &blake3::hash(&record[..48]).as_bytes()[..8]);
    let header = encode_log_header(5);
    assert_eq!(&header[0..8], b"ddcuslog");
    assert_eq!(&header[16..24], &5u64.to_le_bytes());
}

#[test]
fn torn_tail_is_dropped_and_appending_continues() {
    let full = delta_record(1, &usage(1000, 0, 0, 1));
    let mut bad_checksum = full;
    bad_checksum[20] ^= 1;
    let tails: [&[u8]; 5] = [&full[..3], &full[..30], &full[..55], &[0u8; 300], &bad_checksum];
    for tail in tails {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::default();
        let mut journal = UsageJournal::open(dir.path(), 1 << 20).unwrap();
        for i in 0..10 {
            journal.record(i, &usage(i, 1, 1, 0)).unwrap();
            model.record(i, &usage(i, 1, 1, 0));
        }
        drop(journal);
        append_bytes(&newest_log(dir.path()), tail);

        let mut journal = UsageJournal::open(dir.path(), 1 << 20).unwrap();
        model.check(&journal);
        let length = (LOG_HEADER_BYTES + 10 * DELTA_RECORD_BYTES) as u64;
        assert_eq!(fs::metadata(newest_log(dir.path())).unwrap().len(), length, "tail {tail:?}");
        journal.record(3, &usage(5, 5, 5, 5)).unwrap();
        model.record(3, &usage(5, 5, 5, 5));
        drop(journal);
        model.check(&UsageJournal::open(dir.path(), 1 << 20).unwrap());
    }
}

#[test]
fn failed_write_leaves_totals_unchanged_and_poisons_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let mut journal = UsageJournal::open(dir.path(), 1 << 20).unwrap();
    journal.record(1, &usage(10, 0, 1, 0)).unwrap();
    model.record(1, &usage(10, 0, 1, 0));
    journal.faults.short_write_bytes = Some(20);
    let error = journal.record(1, &usage(99, 0, 1, 0)).unwrap_err();
    assert!(matches!(error, Error::Io { op: "append record", offset: 88, .. }), "{error}");
    model.check(&journal);
    assert!(matches!(journal.record(2, &usage(1, 0, 0, 0)), Err(Error::Poisoned { .. })));
    assert!(matches!(journal.record_ack(&ack(1, 1, 1, 1)), Err(Error::Poisoned { .. })));
    assert!(matches!(journal.sync(), Err(Error::Poisoned { .. })));
    drop(journal);
    let mut journal = UsageJournal::open(dir.path(), 1 << 20).unwrap();
    model.check(&journal);
    journal.record(2, &usage(1, 0, 0, 0)).unwrap();
    model.record(2, &usage(1, 0, 0, 0));
    drop(journal);
    model.check(&UsageJournal::open(dir.path(), 1 << 20).unwrap());
}

#[test]
fn corruption_mid_log_is_refused_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = UsageJournal::open(dir.path(), 1 << 20).unwrap();
    for i in 0..5 {
        journal.record(i, &usage(1, 1, 1, 1)).unwrap();
    }
    drop(journal);
    let log = newest_log(dir.path());
    let pristine = fs::read(&log).unwrap();
    let second = LOG_HEADER_BYTES + DELTA_RECORD_BYTES;

    let mut flipped = pristine.clone();
    flipped[second + 20] ^= 0x40;
    fs::write(&log, &flipped).unwrap();
    let error = UsageJournal::open(dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(error, Error::ChecksumMismatch { offset, .. } if offset == second as u64), "{error}");
    let message = error.to_string();
    assert!(message.contains(&log.display().to_string()) && message.contains("byte 88"), "{message}");

    let mut unknown = pristine.clone();
    unknown[second + 2] = 9;
    fs::write(&log, &unknown).unwrap();
    let error = UsageJournal::open(dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(error, Error::UnknownKind { kind: 9, offset: 88, .. }), "{error}");
    assert!(error.to_string().contains(&log.display().to_string()));

    // The same damage in the last record, still followed by bytes, is refused too.
    let mut followed = pristine.clone();
    let last = pristine.len() - DELTA_RECORD_BYTES;
    followed[last + 30] ^= 1;
    followed.extend_from_slice(&[1, 2, 3]);
    fs::write(&log, &followed).unwrap();
    let error = UsageJournal::open(dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(error, Error::ChecksumMismatch { offset, .. } if offset == last as u64), "{error}");

    let mut header = pristine.clone();
    header[17] ^= 1;
    fs::write(&log, &header).unwrap();
    let error = UsageJournal::open(dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(error, Error::ChecksumMismatch { offset: 0, .. }), "{error}");

    fs::write(&log, &pristine).unwrap();
    assert_eq!(UsageJournal::open(dir.path(), 1 << 20).unwrap().totals().len(), 5);
}

#[test]
fn torn_tail_of_an_older_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = UsageJournal::open(dir.path(), 1 << 20).unwrap();
    journal.record(1, &usage(1, 0, 0, 0)).unwrap();
    drop(journal);
    append_bytes(&dir.path().join(log_name(0)), &[b'U', b'J', 1]);
    create_log(dir.path(), 1).unwrap();
    let error = UsageJournal::open(dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(error, Error::Corrupted { offset: 88, .. }), "{error}");
    assert!(error.to_string().contains(&log_name(0)), "{error}");
}

#[test]
fn overflow_is_refused_when_recording_and_replaying() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = UsageJournal::open(dir.path(), 1 << 20).unwrap();
    journal.record(1, &usage(u64::MAX, 0, 0, 0)).unwrap();
    let error = journal.record(1, &usage(1, 0, 0, 0)).unwrap_err();
    assert!(matches!(error, Error::Usage { source: UsageError::Overflow { .. }, .. }), "{error}");
    assert_eq!(journal.totals()[&1], usage(u64::MAX, 0, 0, 0));
    // Not an I/O failure: the journal keeps working.
    journal.record(2, &usage(1, 0, 0, 0)).unwrap();
    drop(journal);

    // A log that overflows (it cannot be written through the API) is refused.
    append_bytes(&newest_log(dir.path()), &delta_record(1, &usage(1, 0, 0, 0)));
    let error = UsageJournal::open(dir.path(), 1 << 20).unwrap_err();
    let offset = (LOG_HEADER_BYTES + 2 * DELTA_RECORD_BYTES) as u64;
    assert!(
        matches!(error, Error::Usage { source: UsageError::Overflow { field: "transferred_bytes" }, offset: o, .. } if o == offset),
        "{error}"
    );
}

#[test]
fn ack_replacement_keeps_the_higher_request_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = UsageJournal::open(dir.path(), 1 << 20).unwrap();
    let session = AckSession::of(&ack(1, 1, 1, 0));
    journal.record_ack(&ack(1, 1, 1, 5)).unwrap();
    let length = fs::metadata(newest_log(dir.path())).unwrap().len();
    journal.record_ack(&ack(1, 1, 1, 3)).unwrap();
    journal.record_ack(&ack(1, 1, 1, 5)).unwrap();
    // Acks that replace nothing are not written.
    assert_eq!(fs::metadata(newest_log(dir.path())).unwrap().len(), length);
    assert_eq!(journal.latest_ack(&session), Some(&ack(1, 1, 1, 5)));
    journal.record_ack(&ack(1, 1, 1, 6)).unwrap();
    journal.record_ack(&ack(1, 1, 2, 1)).unwrap();
    assert_eq!(journal.latest_ack(&session), Some(&ack(1, 1, 1, 6)));
    drop(journal);
    // An older ack in the log, after a newer one, does not win on replay.
    append_bytes(&newest_log(dir.path()), &frame::<ACK_RECORD_BYTES>(KIND_ACK, &ack(1, 1, 1, 4).encode()));
    let journal = UsageJournal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(journal.latest_ack(&session), Some(&ack(1, 1, 1, 6)));
    assert_eq!(journal.acks(), vec![ack(1, 1, 1, 6), ack(1, 1, 2, 1)]);

    // An ack replay would refuse is not written.
    let mut journal = journal;
    let bad = ConsumerAck { version: 2, ..ack(9, 9, 9, 1) };
    assert!(matches!(journal.record_ack(&bad), Err(Error::Usage { source: UsageError::UnknownVersion(2), .. })));
    assert_eq!(journal.acks().len(), 2);
}

#[test]
fn compaction_keeps_totals_and_acks_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let mut journal = UsageJournal::open(dir.path(), 1000).unwrap();
    for i in 0..200u64 {
        let delta = usage(i, 2 * i, 1, i % 2);
        journal.record(i % 13, &delta).unwrap();
        model.record(i % 13, &delta);
        if i % 5 == 0 {
            let a = ack(i % 3, 1, (i % 4) as u8, i);
            journal.record_ack(&a).unwrap();
            model.record_ack(&a);
        }
        assert!(journal.log_bytes <= 1000 + ACK_RECORD_BYTES as u64);
    }
    model.check(&journal);
    assert!(journal.generation > 5, "compacted {} times", journal.generation);
    assert_eq!(logs(dir.path()), vec![journal.generation]);
    assert!(dir.path().join(SNAPSHOT_NAME).exists());
    assert!(!dir.path().join(SNAPSHOT_TMP_NAME).exists());
    drop(journal);
    model.check(&UsageJournal::open(dir.path(), 1000).unwrap());
}

/// Fill a journal until its next record compacts.
fn journal_due_for_compaction(dir: &Path, model: &mut Model) -> UsageJournal {
    let mut journal = UsageJournal::open(dir, 500).unwrap();
    // Check after every record: a compaction restarts the log, so
    // checking after a pair could miss the moment it is due.
    for i in 0.. {
        if journal.log_bytes > 500 {
            break;
        }
        if i % 2 == 0 {
            journal.record(i % 4, &usage(i, 1, 1, 0)).unwrap();
            model.record(i % 4, &usage(i, 1, 1, 0));
        } else {
            journal.record_ack(&ack(i % 3, 1, 1, i + 1)).unwrap();
            model.record_ack(&ack(i % 3, 1, 1, i + 1));
        }
    }
    journal
}

#[test]
fn crash_at_each_compaction_step_neither_loses_nor_double_counts() {
    let steps = [
        CompactionStep::LiveLogSynced,
        CompactionStep::NextLogCreated,
        CompactionStep::SnapshotTmpWritten,
        CompactionStep::SnapshotRenamed,
        CompactionStep::DirectorySynced,
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::default();
        // Two rounds, so the crash also hits a compaction over a snapshot.
        for round in 0..2u64 {
            let mut journal = journal_due_for_compaction(dir.path(), &mut model);
            journal.faults.crash_after = Some(step);
            assert!(journal.record(9, &usage(1, 1, 1, 1)).is_err(), "{step:?}");
            assert!(matches!(journal.record(9, &usage(1, 1, 1, 1)), Err(Error::Poisoned { .. })));
            model.check(&journal);
            drop(journal);

            let mut journal = UsageJournal::open(dir.path(), 500).unwrap();
            model.check(&journal);
            assert!(!dir.path().join(SNAPSHOT_TMP_NAME).exists());
            // Records after recovery land once, whichever log is live.
            for i in 0..30 {
                journal.record(20 + round, &usage(i, 0, 1, 0)).unwrap();
                model.record(20 + round, &usage(i, 0, 1, 0));
            }
            model.check(&journal);
            assert_eq!(logs(dir.path()).len(), 1, "{step:?}: a later compaction deletes every older log");
            drop(journal);
            model.check(&UsageJournal::open(dir.path(), 500).unwrap());
        }
    }
}

#[test]
fn crash_leftovers_written_by_hand_are_recovered() {
    // Torn snapshot.tmp, and a next log whose header was cut or never hit the disk.
    let leftovers: [(&str, &[u8]); 4] = [
        (SNAPSHOT_TMP_NAME, b"ddcusnap garbage"),
        ("next-log", &[]),
        ("next-log", b"ddcus"),
        ("next-log", &[0u8; LOG_HEADER_BYTES]),
    ];
    for (name, bytes) in leftovers {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::default();
        let journal = journal_due_for_compaction(dir.path(), &mut model);
        let next = journal.generation + 1;
        drop(journal);
        let name = if name == "next-log" { log_name(next) } else { name.to_string() };
        fs::write(dir.path().join(&name), bytes).unwrap();

        let mut journal = UsageJournal::open(dir.path(), 500).unwrap();
        model.check(&journal);
        journal.record(5, &usage(1, 2, 3, 4)).unwrap();
        model.record(5, &usage(1, 2, 3, 4));
        drop(journal);
        model.check(&UsageJournal::open(dir.path(), 500).unwrap());
    }
}

#[test]
fn missing_or_corrupt_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let mut journal = journal_due_for_compaction(dir.path(), &mut model);
    journal.record(1, &usage(1, 1, 1, 1)).unwrap();
    let live = journal.generation;
    assert_eq!(live, 1);
    drop(journal);

    let snapshot = dir.path().join(SNAPSHOT_NAME);
    let pristine = fs::read(&snapshot).unwrap();
    let mut flipped = pristine.clone();
    flipped[45] ^= 1;
    fs::write(&snapshot, &flipped).unwrap();
    let error = UsageJournal::open(dir.path(), 500).unwrap_err();
    assert!(matches!(error, Error::ChecksumMismatch { .. }), "{error}");
    assert!(error.to_string().contains(SNAPSHOT_NAME), "{error}");
    fs::write(&snapshot, &pristine).unwrap();

    // The log the snapshot starts at is gone.
    let log = dir.path().join(log_name(live));
    let log_bytes = fs::read(&log).unwrap();
    fs::remove_file(&log).unwrap();
    let error = UsageJournal::open(dir.path(), 500).unwrap_err();
    assert!(matches!(error, Error::Corrupted { .. }) && error.to_string().contains(&log_name(live)), "{error}");
    // A gap in generations.
    fs::write(&log, &log_bytes).unwrap();
    fs::write(dir.path().join(log_name(live + 2)), encode_log_header(live + 2)).unwrap();
    let error = UsageJournal::open(dir.path(), 500).unwrap_err();
    assert!(error.to_string().contains(&log_name(live + 1)), "{error}");
    fs::remove_file(dir.path().join(log_name(live + 2))).unwrap();
    // A log renamed to another generation.
    fs::rename(&log, dir.path().join(log_name(live + 1))).unwrap();
    fs::copy(dir.path().join(log_name(live + 1)), &log).unwrap();
    let error = UsageJournal::open(dir.path(), 500).unwrap_err();
    assert!(matches!(error, Error::Corrupted { offset: 16, .. }), "{error}");
    fs::remove_file(dir.path().join(log_name(live + 1))).unwrap();

    model.record(1, &usage(1, 1, 1, 1));
    model.check(&UsageJournal::open(dir.path(), 500).unwrap());
}

/// Thousands of random records with small compactions, crashes in
/// compaction, torn tails and reopens, against an in-memory model.
#[test]
fn random_operations_match_the_model() {
    let mut rng = StdRng::seed_from_u64(0x05a6e);
    let dir = tempfile::tempdir().unwrap();
    let compact_bytes = 1500;
    let mut model = Model::default();
    let mut journal = UsageJournal::open(dir.path(), compact_bytes).unwrap();
    let mut reopens = 0;
    let mut compactions = 0;
    let mut last_generation = 0;
    for _ in 0..6000 {
        match rng.gen_range(0..100) {
            0..=69 => {
                let bucket = rng.gen_range(0..16);
                let delta = usage(rng.gen_range(0..1 << 20), rng.gen_range(0..1 << 10), rng.gen_range(0..2), 1);
                journal.record(bucket, &delta).unwrap();
                model.record(bucket, &delta);
            }
            70..=89 => {
                let a = ack(rng.gen_range(0..4), rng.gen_range(0..3), rng.gen_range(0..3), rng.gen_range(0..50));
                journal.record_ack(&a).unwrap();
                model.record_ack(&a);
            }
            90..=93 => journal.sync().unwrap(),
            94..=96 => {
                // Crash during the compaction that the next record may start.
                let steps = [
                    CompactionStep::LiveLogSynced,
                    CompactionStep::NextLogCreated,
                    CompactionStep::SnapshotTmpWritten,
                    CompactionStep::SnapshotRenamed,
                    CompactionStep::DirectorySynced,
                ];
                journal.faults.crash_after = Some(steps[rng.gen_range(0..steps.len())]);
                let delta = usage(1, 1, 1, 1);
                if journal.record(3, &delta).is_ok() {
                    model.record(3, &delta);
                }
                drop(journal);
                journal = UsageJournal::open(dir.path(), compact_bytes).unwrap();
                reopens += 1;
            }
            _ => {
                // Killed, perhaps in the middle of an unanswered write.
                drop(journal);
                if rng.gen_bool(0.5) {
                    let record = delta_record(rng.gen_range(0..16), &usage(7, 7, 7, 7));
                    append_bytes(&newest_log(dir.path()), &record[..rng.gen_range(1..record.len())]);
                }
                journal = UsageJournal::open(dir.path(), compact_bytes).unwrap();
                reopens += 1;
            }
        }
        if journal.generation != last_generation {
            compactions += 1;
            last_generation = journal.generation;
        }
        model.check(&journal);
    }
    drop(journal);
    model.check(&UsageJournal::open(dir.path(), compact_bytes).unwrap());
    assert!(reopens > 200 && compactions > 100, "{reopens} reopens, {compactions} compactions");
}
