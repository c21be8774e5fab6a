//! Self-tests of the simulated disk (`storage::sim`): its crash model,
//! O_DIRECT rules and fault injection behave as documented.

use std::io;
use std::path::Path;
use std::rc::Rc;

use ddc_engine::storage::sim::{CrashMode, SimBuf, SimFile, SimStorage};
use ddc_engine::storage::{IoBuf, Storage, StorageFile};
use futures_lite::future::block_on;

fn buf(sim: &SimStorage, len: usize, fill: u8) -> Rc<SimBuf> {
    let mut b = sim.alloc_buf(len);
    b.as_mut_slice().fill(fill);
    Rc::new(b)
}

fn errno(r: io::Result<impl std::fmt::Debug>) -> i32 {
    r.expect_err("expected an error").raw_os_error().expect("a raw OS error")
}

/// A disk with `/d` durable and a synced, empty file `/d/f`.
async fn disk(seed: u64) -> (SimStorage, SimFile) {
    let sim = SimStorage::new(seed);
    sim.set_alignment(512);
    sim.mkdir_durable(Path::new("/d"));
    let f = sim.create_file(Path::new("/d/f")).await.unwrap();
    sim.sync_dir(Path::new("/d")).await.unwrap();
    (sim, f)
}

#[test]
fn directory_entries_are_durable_only_after_sync_dir() {
    block_on(async {
        let sim = SimStorage::new(1);
        sim.mkdir_durable(Path::new("/d"));
        let a = sim.create_file(Path::new("/d/a")).await.unwrap();
        a.write_at(buf(&sim, 4096, 1), 0).await.unwrap();
        a.sync_data().await.unwrap();
        sim.create_dir_all(Path::new("/d/sub")).await.unwrap();
        assert_eq!(sim.list_dir(Path::new("/d")).await.unwrap(), vec!["a", "sub"]);
        sim.crash_with(0, CrashMode::KeepAll);
        assert!(sim.list_dir(Path::new("/d")).await.unwrap().is_empty(), "nothing was dir-synced");

        let a = sim.create_file(Path::new("/d/a")).await.unwrap();
        a.write_at(buf(&sim, 4096, 2), 0).await.unwrap();
        a.sync_data().await.unwrap();
        sim.sync_dir(Path::new("/d")).await.unwrap();
        sim.remove_file(Path::new("/d/a")).await.unwrap();
        sim.crash_with(0, CrashMode::LoseUnsynced);
        assert_eq!(sim.list_dir(Path::new("/d")).await.unwrap(), vec!["a"], "the removal was not dir-synced");
        assert_eq!(sim.durable_bytes(Path::new("/d/a")).unwrap(), vec![2; 4096]);

        // A file in a directory whose own entry was never synced is lost with it.
        sim.create_dir_all(Path::new("/d/x")).await.unwrap();
        sim.create_file(Path::new("/d/x/f")).await.unwrap();
        sim.sync_dir(Path::new("/d/x")).await.unwrap();
        sim.crash_with(0, CrashMode::KeepAll);
        assert!(sim.list_dir(Path::new("/d/x")).await.unwrap().is_empty());
        assert!(matches!(sim.create_file(Path::new("/d/x/f")).await, Err(e) if e.raw_os_error() == Some(libc::ENOENT)));
    });
}

#[test]
fn small_files_are_atomic_and_durable() {
    block_on(async {
        let sim = SimStorage::new(2);
        sim.mkdir_durable(Path::new("/d"));
        sim.write_small_durably(Path::new("/d/m"), b"one").await.unwrap();
        sim.write_small_durably(Path::new("/d/m"), b"two").await.unwrap();
        sim.crash(7);
        assert_eq!(sim.read_small(Path::new("/d/m")).await.unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(sim.read_small(Path::new("/d/none")).await.unwrap(), None);
    });
}

#[test]
fn o_direct_rules_and_sizes() {
    block_on(async {
        let (sim, f) = disk(3).await;
        assert_eq!(f.alignment(), 512);
        assert_eq!(errno(f.write_at(buf(&sim, 512, 1), 100).await), libc::EINVAL);
        assert_eq!(errno(f.write_at(buf(&sim, 100, 1), 0).await), libc::EINVAL);
        sim.set_alignment(4096);
        assert_eq!(errno(f.write_at(buf(&sim, 512, 1), 0).await), libc::EINVAL);
        f.write_at(buf(&sim, 4096, 1), 4096).await.unwrap();
        assert_eq!(f.size().await.unwrap(), 8192);
        assert_eq!(f.read_at(0, 10).await.unwrap(), vec![0; 10], "the hole reads as zeros");
        assert_eq!(f.read_at(8000, 1000).await.unwrap().len(), 192, "short read at the end");
        assert!(f.read_at(9000, 10).await.unwrap().is_empty());
        f.preallocate(1 << 20).await.unwrap();
        assert_eq!(f.size().await.unwrap(), 8192, "preallocation keeps the size");
        f.truncate(5000).await.unwrap();
        assert_eq!(f.size().await.unwrap(), 5000);
        assert_eq!(sim.stats().bytes_used, 8192, "truncation releases the preallocation");
    });
}

#[test]
fn sync_data_decides_what_survives() {
    block_on(async {
        let (sim, f) = disk(4).await;
        f.write_at(buf(&sim, 1024, 1), 0).await.unwrap();
        f.sync_data().await.unwrap();
        f.write_at(buf(&sim, 1024, 2), 512).await.unwrap();
        assert_eq!(f.read_at(0, 2048).await.unwrap()[600], 2, "reads see unsynced writes");
        sim.crash_with(0, CrashMode::LoseUnsynced);
        assert!(f.read_at(0, 1).await.is_err(), "old handles are stale");
        assert_eq!(sim.durable_bytes(Path::new("/d/f")).unwrap(), vec![1; 1024]);
        let f = sim.open_file(Path::new("/d/f")).await.unwrap();
        f.write_at(buf(&sim, 1024, 3), 512).await.unwrap();
        sim.crash_with(0, CrashMode::KeepAll);
        let mut want = vec![1; 512];
        want.extend(vec![3; 1024]);
        assert_eq!(sim.durable_bytes(Path::new("/d/f")).unwrap(), want);
    });
}

#[test]
fn old_storage_handles_are_stale_after_a_crash() {
    block_on(async {
        let (sim, _f) = disk(5).await;
        let old = sim.clone();
        sim.crash(1);
        assert_eq!(errno(old.create_file(Path::new("/d/g")).await), libc::EBADF);
        assert_eq!(errno(old.list_dir(Path::new("/d")).await), libc::EBADF);
        sim.create_file(Path::new("/d/g")).await.unwrap();
        sim.clone().create_file(Path::new("/d/h")).await.unwrap();
    });
}

/// Unsynced writes persist out of order and torn at sector granularity.
#[test]
fn random_crashes_reorder_and_tear_writes() {
    let mut reordered = false;
    let mut torn = false;
    for seed in 0..200 {
        block_on(async {
            let (sim, f) = disk(seed).await;
            f.write_at(buf(&sim, 2048, 1), 0).await.unwrap();
            f.write_at(buf(&sim, 2048, 2), 2048).await.unwrap();
            sim.crash(seed);
            let bytes = sim.durable_bytes(Path::new("/d/f")).unwrap();
            let sector = |i: usize| bytes.get(i * 512).copied().unwrap_or(0);
            let first: Vec<u8> = (0..4).map(sector).collect();
            let second: Vec<u8> = (4..8).map(sector).collect();
            if first.iter().all(|&b| b == 0) && second.contains(&2) {
                reordered = true;
            }
            if first.contains(&1) && first.contains(&0) {
                torn = true;
            }
            // Whatever persisted is whole sectors of what was written.
            for (i, chunk) in bytes.chunks(512).enumerate() {
                let v = chunk[0];
                assert!(chunk.iter().all(|&b| b == v), "sector {i} mixes bytes (seed {seed})");
                assert!(v == 0 || v == if i < 4 { 1 } else { 2 }, "sector {i} holds {v} (seed {seed})");
            }
        });
    }
    assert!(reordered, "some crash kept the later write but not the earlier");
    assert!(torn, "some crash tore a write");
}

#[test]
fn same_seed_same_disk() {
    let run = |seed| {
        block_on(async {
            let (sim, f) = disk(seed).await;
            for i in 0..8u64 {
                f.write_at(buf(&sim, 1024, i as u8 + 1), i * 1024).await.unwrap();
            }
            sim.crash(seed);
            sim.durable_bytes(Path::new("/d/f")).unwrap()
        })
    };
    assert_eq!(run(9), run(9));
    assert!((0..20).map(run).collect::<std::collections::BTreeSet<_>>().len() > 1);
}

#[test]
fn injected_eio_and_fsyncgate() {
    block_on(async {
        let (sim, f) = disk(6).await;
        sim.fail_write(2);
        f.write_at(buf(&sim, 512, 1), 0).await.unwrap();
        assert_eq!(errno(f.write_at(buf(&sim, 512, 2), 512).await), libc::EIO);
        f.write_at(buf(&sim, 512, 3), 1024).await.unwrap();

        // A failed fsync: the next one succeeds but does not persist what the failed one lost.
        let (sim, f) = disk(7).await;
        f.write_at(buf(&sim, 4096, 1), 0).await.unwrap();
        sim.fail_sync(1);
        assert_eq!(errno(f.sync_data().await), libc::EIO);
        f.sync_data().await.unwrap();
        assert_eq!(f.read_at(0, 4096).await.unwrap(), vec![1; 4096], "reads still see the data");
        let durable = sim.durable_bytes(Path::new("/d/f")).unwrap();
        sim.crash_with(0, CrashMode::KeepAll);
        assert_eq!(sim.durable_bytes(Path::new("/d/f")).unwrap(), durable, "the retry persisted nothing");
        assert_eq!(sim.stats().faults_fired, 1);
    });
}

#[test]
fn space_budget_gives_enospc() {
    block_on(async {
        let (sim, f) = disk(8).await;
        sim.set_space_budget(Some(16 << 10));
        f.write_at(buf(&sim, 8192, 1), 0).await.unwrap();
        assert_eq!(errno(f.preallocate(32 << 10).await), libc::ENOSPC);
        f.preallocate(16 << 10).await.unwrap();
        f.write_at(buf(&sim, 8192, 1), 8192).await.unwrap();
        assert_eq!(errno(f.write_at(buf(&sim, 512, 1), 16 << 10).await), libc::ENOSPC);
        assert_eq!(errno(sim.write_small_durably(Path::new("/d/m"), b"x").await), libc::ENOSPC);
        f.truncate(4096).await.unwrap();
        sim.write_small_durably(Path::new("/d/m"), b"x").await.unwrap();
    });
}

#[test]
fn power_off_fails_everything_until_the_crash() {
    block_on(async {
        let (sim, f) = disk(9).await;
        sim.power_off_after(2);
        f.write_at(buf(&sim, 512, 1), 0).await.unwrap();
        assert_eq!(errno(f.sync_data().await), libc::EIO);
        assert!(sim.is_powered_off());
        assert_eq!(errno(sim.list_dir(Path::new("/d")).await), libc::EIO);
        sim.crash_with(0, CrashMode::LoseUnsynced);
        assert!(!sim.is_powered_off());
        assert_eq!(sim.durable_bytes(Path::new("/d/f")).unwrap(), Vec::<u8>::new());
    });
}

#[test]
fn corrupted_and_misdirected_writes() {
    block_on(async {
        let (sim, f) = disk(10).await;
        f.write_at(buf(&sim, 4096, 0), 0).await.unwrap();
        sim.corrupt_write(1);
        f.write_at(buf(&sim, 1024, 5), 0).await.unwrap();
        let got = f.read_at(0, 1024).await.unwrap();
        assert_eq!(got.iter().filter(|&&b| b != 5).count(), 1, "exactly one byte differs");
        sim.misdirect_write(1);
        f.write_at(buf(&sim, 512, 7), 2048).await.unwrap();
        let got = f.read_at(0, 4096).await.unwrap();
        assert!(got[2048..2560].iter().all(|&b| b == 0), "nothing landed where it was aimed");
        assert_eq!(got.iter().filter(|&&b| b == 7).count(), 512, "it landed elsewhere");
        f.sync_data().await.unwrap();
        sim.corrupt_byte(Path::new("/d/f"), 3000, 0x80).unwrap();
        assert_eq!(f.read_at(3000, 1).await.unwrap(), vec![0x80]);
    });
}
