//! A simulated disk: seeded, deterministic, in memory, fault-injecting.
//!
//! **This is a test tool, never the default backend.** Nothing in the node
//! constructs it; tests do, to drive the log through crashes and disk faults
//! that the real [`super::dma::DmaStorage`] cannot produce on demand.
//!
//! Single-threaded (`Rc<RefCell<..>>`): it runs inside a glommio
//! `LocalExecutor` like the real storage, and every operation yields to the
//! executor a seeded random number of times before it completes, so the
//! interleaving of tasks varies with the seed but is the same for a seed.
//!
//! # What a crash leaves behind
//!
//! Each file has `current` bytes (what reads see) and `durable` bytes (what
//! survives a crash), plus the writes and truncations issued since its last
//! `sync_data`. `sync_data` makes them durable. Creating or removing a file
//! or directory changes the *current* namespace; it reaches the *durable*
//! namespace only when the parent directory is synced (`sync_dir`); a file
//! whose directory entry was never synced vanishes in a crash, as does
//! everything under a directory whose own entry was never synced.
//! `write_small_durably` is atomic and durable when it returns `Ok`.
//!
//! [`SimStorage::crash`] produces the post-crash disk: every file starts
//! from its durable bytes and a random subset of its unsynced writes is
//! re-applied — in any combination, not just a prefix, because the device
//! cache may persist out of order — each possibly torn at 512-byte sector
//! granularity. [`CrashMode`] narrows this for targeted tests. After a
//! crash every file handle opened before it, and every `SimStorage` clone
//! made before it (the dead engine's), fails with `EBADF`; a new engine is
//! opened on the handle `crash` was called on.
//!
//! # Faults
//!
//! Armed by the test, deterministic for a seed: `EIO` on the Nth write or
//! Nth `sync_data` from now; `ENOSPC` once allocated bytes would exceed a
//! budget; a write that lands with one bit flipped, or at another aligned
//! position (misdirected); and a power cut after N more operations, from
//! which on every operation fails with `EIO` until [`SimStorage::crash`].
//! [`SimStorage::hold_syncs`] parks every `sync_data` (writes stay unsynced)
//! to freeze the log between a write and its fsync.
//! Errors carry raw OS codes (`libc::EIO`, `libc::ENOSPC`, `libc::EINVAL`)
//! so the engine's error mapping sees what it would see from the kernel.
//!
//! A failed `sync_data` models "fsyncgate": some random part of the unsynced
//! writes reached the disk, the rest never will, and a later `sync_data`
//! succeeds without persisting them (reads still see them). An engine that
//! retries the fsync and then acknowledges loses data in the next crash.
//!
//! O_DIRECT rules are enforced: write positions and lengths must be
//! multiples of [`StorageFile::alignment`] (4096 or 512, configurable), or
//! the write fails with `EINVAL`. Reads may be unaligned (glommio's
//! `DmaFile::read_at` realigns them).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{align_up, IoBuf, Storage, StorageFile};

/// The atomic unit of persistence: a torn write persists some of its sectors.
pub const SECTOR_BYTES: u64 = 512;

/// Operations that may complete without yielding in a row, at most.
pub const FORCED_YIELD_EVERY: u32 = 32;

/// Space is allocated in blocks of this size (for the `ENOSPC` budget).
const ALLOC_BLOCK_BYTES: u64 = 4096;

/// An I/O buffer of the simulated disk (plain memory).
#[derive(Debug, Clone)]
pub struct SimBuf {
    bytes: Vec<u8>,
}

impl IoBuf for SimBuf {
    fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    fn trim(&mut self, len: usize) {
        assert!(len <= self.bytes.len(), "trim can only shrink: {len} > {}", self.bytes.len());
        self.bytes.truncate(len);
    }
}

/// Which unsynced writes a crash keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Each unsynced write independently persists whole, not at all, or torn
    /// (a random subset of its sectors); each unsynced truncation persists or not.
    Random,
    /// Unsynced writes persist in the order they were issued up to a random
    /// point; the write at that point keeps a prefix of its sectors; later ones are lost.
    TornTail,
    /// No unsynced write persists.
    LoseUnsynced,
    /// Every write persists, as if the device cache was flushed just before the crash.
    KeepAll,
}

/// Counters of what the simulated disk has done (since it was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Every storage operation, file or directory.
    pub ops: u64,
    pub writes: u64,
    pub reads: u64,
    /// `sync_data` calls (failed ones included).
    pub syncs: u64,
    /// `sync_data` calls that returned `Ok`.
    pub syncs_ok: u64,
    pub dir_syncs: u64,
    pub crashes: u64,
    /// Armed faults that fired (EIO, corruption, misdirection) and ENOSPC refusals.
    pub faults_fired: u64,
    /// Bytes currently allocated (file sizes and preallocations, in 4 KiB blocks).
    pub bytes_used: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFault {
    Eio,
    Corrupt,
    Misdirect,
}

#[derive(Debug, Clone)]
enum Op {
    Write { pos: u64, data: Vec<u8> },
    Truncate(u64),
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Writes and truncations since the last sync, in issue order.
    pending: Vec<Op>,
    /// Bytes reserved by `preallocate` (beyond the size); dropped by truncate.
    prealloc: u64,
}

impl Inode {
    fn allocated(&self) -> u64 {
        align_up((self.current.len() as u64).max(self.prealloc), ALLOC_BLOCK_BYTES)
    }
}

fn apply(content: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { pos, data } => write_into(content, *pos, data),
        Op::Truncate(len) => content.resize(*len as usize, 0),
    }
}

fn write_into(content: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let pos = pos as usize;
    let end = pos + data.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[pos..end].copy_from_slice(data);
}

/// Persist the sectors of a write for which `keep(i)` says so; the size grows
/// to the end of the last persisted sector, or (`extend`) to the end of the write.
fn apply_sectors(content: &mut Vec<u8>, pos: u64, data: &[u8], extend: bool, mut keep: impl FnMut(usize) -> bool) {
    for (i, sector) in data.chunks(SECTOR_BYTES as usize).enumerate() {
        if keep(i) {
            write_into(content, pos + i as u64 * SECTOR_BYTES, sector);
        }
    }
    let end = (pos as usize) + data.len();
    if extend && content.len() < end {
        content.resize(end, 0);
    }
}

/// The bytes a crash leaves of a file: durable bytes plus some unsynced ops.
fn resolve(inode: &Inode, mode: CrashMode, rng: &mut StdRng) -> Vec<u8> {
    let mut content = inode.durable.clone();
    match mode {
        CrashMode::LoseUnsynced => {}
        CrashMode::KeepAll => {
            for op in &inode.pending {
                apply(&mut content, op);
            }
        }
        CrashMode::TornTail => {
            let cut = rng.gen_range(0..=inode.pending.len());
            for op in &inode.pending[..cut] {
                apply(&mut content, op);
            }
            if let Some(Op::Write { pos, data }) = inode.pending.get(cut) {
                let sectors = data.len().div_ceil(SECTOR_BYTES as usize);
                let kept = rng.gen_range(0..=sectors);
                apply_sectors(&mut content, *pos, data, false, |i| i < kept);
            }
        }
        CrashMode::Random => {
            for op in &inode.pending {
                match op {
                    Op::Truncate(_) => {
                        if rng.gen_bool(0.5) {
                            apply(&mut content, op);
                        }
                    }
                    Op::Write { pos, data } => match rng.gen_range(0..4) {
                        0 => {}
                        1 => apply(&mut content, op),
                        _ => {
                            let extend = rng.gen_bool(0.25);
                            apply_sectors(&mut content, *pos, data, extend, |_| rng.gen_bool(0.5));
                        }
                    },
                }
            }
        }
    }
    content
}

#[derive(Debug, Clone, Default)]
struct Namespace {
    dirs: BTreeSet<PathBuf>,
    files: BTreeMap<PathBuf, u64>,
}

fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p == Path::new("/")
}

fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

impl Namespace {
    fn is_dir(&self, p: &Path) -> bool {
        is_root(p) || self.dirs.contains(p)
    }

    /// The directory and all its ancestors exist.
    fn dir_chain_exists(&self, p: &Path) -> bool {
        p.ancestors().all(|a| self.is_dir(a))
    }
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

struct State {
    rng: StdRng,
    alignment: u64,
    max_yields: u32,
    since_yield: u32,
    generation: u64,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    current: Namespace,
    durable: Namespace,
    /// Faults keyed by the value of `stats.writes` at which they fire.
    write_faults: BTreeMap<u64, WriteFault>,
    /// EIO keyed by the value of `stats.syncs` at which it fires.
    sync_faults: BTreeSet<u64>,
    budget: Option<u64>,
    power_off_at: Option<u64>,
    powered_off: bool,
    /// `sync_data` waits while this is set (until released, a power cut or a crash).
    syncs_held: bool,
    /// Held syncs that may still go through.
    sync_passes: u64,
    /// `sync_data` calls waiting on the hold.
    syncs_waiting: u64,
    stats: SimStats,
    trace: Option<Vec<String>>,
}

impl State {
    /// Count an operation and refuse it if the power is off or the handle is stale.
    fn admit(&mut self, generation: u64) -> io::Result<()> {
        self.stats.ops += 1;
        if self.power_off_at.is_some_and(|at| self.stats.ops >= at) {
            self.power_off_at = None;
            self.powered_off = true;
            self.log(|| "power off".to_string());
        }
        if self.powered_off {
            return Err(err(libc::EIO));
        }
        if generation != self.generation {
            return Err(err(libc::EBADF));
        }
        Ok(())
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(line());
        }
    }

    fn used(&self) -> u64 {
        let live: BTreeSet<u64> = self.current.files.values().copied().collect();
        live.iter().filter_map(|i| self.inodes.get(i)).map(Inode::allocated).sum()
    }

    /// Refuse (ENOSPC) if an inode's allocation growing from `old` to `new` exceeds the budget.
    fn check_space(&mut self, old: u64, new: u64) -> io::Result<()> {
        if let Some(budget) = self.budget {
            if new > old && self.used() - old.min(self.used()) + new > budget {
                self.stats.faults_fired += 1;
                return Err(err(libc::ENOSPC));
            }
        }
        Ok(())
    }

    fn inode(&mut self, ino: u64) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("open handle refers to a live inode")
    }

    fn new_inode(&mut self, inode: Inode) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }
}

/// The simulated disk. Cheap to clone: clones share the same disk.
///
/// A handle belongs to one "boot" of the disk: after [`SimStorage::crash`],
/// only the handle it was called on (and clones made from it afterwards)
/// work; older clones, like the files they opened, fail with `EBADF`, so
/// the engine that was running at the crash cannot touch the new disk.
#[derive(Clone)]
pub struct SimStorage {
    state: Rc<RefCell<State>>,
    generation: Cell<u64>,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage").field("stats", &self.stats()).finish()
    }
}

impl SimStorage {
    /// An empty disk whose choices (interleaving, torn sectors, fault details) follow `seed`.
    /// Alignment 4096, up to 2 yields per operation.
    pub fn new(seed: u64) -> SimStorage {
        SimStorage {
            state: Rc::new(RefCell::new(State {
                rng: StdRng::seed_from_u64(seed),
                alignment: 4096,
                max_yields: 2,
                since_yield: 0,
                generation: 0,
                inodes: BTreeMap::new(),
                next_ino: 1,
                current: Namespace::default(),
                durable: Namespace::default(),
                write_faults: BTreeMap::new(),
                sync_faults: BTreeSet::new(),
                budget: None,
                power_off_at: None,
                powered_off: false,
                syncs_held: false,
                sync_passes: 0,
                syncs_waiting: 0,
                stats: SimStats::default(),
                trace: None,
            })),
            generation: Cell::new(0),
        }
    }

    /// The O_DIRECT alignment files report and writes must respect (512 or 4096).
    pub fn set_alignment(&self, alignment: u64) {
        assert!(alignment == 512 || alignment == 4096, "alignment {alignment}: use 512 or 4096");
        self.state.borrow_mut().alignment = alignment;
    }

    /// Each operation yields to the executor between 0 and `max` times before it completes.
    pub fn set_max_yields(&self, max: u32) {
        self.state.borrow_mut().max_yields = max;
    }

    /// Record every operation (see [`SimStorage::take_trace`]).
    pub fn set_trace(&self, on: bool) {
        self.state.borrow_mut().trace = on.then(Vec::new);
    }

    /// The operations recorded since tracing started or the last call.
    /// Empty if the disk is busy (e.g. called from a panic inside an operation).
    pub fn take_trace(&self) -> Vec<String> {
        match self.state.try_borrow_mut() {
            Ok(mut st) => st.trace.as_mut().map(std::mem::take).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Create a directory and its ancestors, all already durable (as if the
    /// operator made them before the node started).
    pub fn mkdir_durable(&self, path: &Path) {
        let mut st = self.state.borrow_mut();
        for a in path.ancestors().filter(|a| !is_root(a)) {
            st.current.dirs.insert(a.to_owned());
            st.durable.dirs.insert(a.to_owned());
        }
    }

    /// The `n`th `write_at` from now (1 = the next one) fails with `EIO`;
    /// some of its sectors may still reach the (volatile) disk.
    pub fn fail_write(&self, n: u64) {
        self.arm_write(n, WriteFault::Eio);
    }

    /// The `n`th `write_at` from now lands with one bit flipped (and returns `Ok`).
    pub fn corrupt_write(&self, n: u64) {
        self.arm_write(n, WriteFault::Corrupt);
    }

    /// The `n`th `write_at` from now lands at another aligned position of
    /// the same file (and returns `Ok`).
    pub fn misdirect_write(&self, n: u64) {
        self.arm_write(n, WriteFault::Misdirect);
    }

    fn arm_write(&self, n: u64, fault: WriteFault) {
        assert!(n >= 1);
        let mut st = self.state.borrow_mut();
        let at = st.stats.writes + n;
        st.write_faults.insert(at, fault);
    }

    /// The `n`th `sync_data` from now (1 = the next one) fails with `EIO` (fsyncgate semantics).
    pub fn fail_sync(&self, n: u64) {
        assert!(n >= 1);
        let mut st = self.state.borrow_mut();
        let at = st.stats.syncs + n;
        st.sync_faults.insert(at);
    }

    /// Writes, preallocations and small-file writes that would take the
    /// allocated bytes past `budget` fail with `ENOSPC`. `None` removes the limit.
    pub fn set_space_budget(&self, budget: Option<u64>) {
        self.state.borrow_mut().budget = budget;
    }

    /// Cut the power when `n` more operations have been started: that
    /// operation and every later one fail with `EIO` and change nothing,
    /// until [`SimStorage::crash`].
    pub fn power_off_after(&self, n: u64) {
        let mut st = self.state.borrow_mut();
        st.power_off_at = Some(st.stats.ops + n.max(1));
    }

    /// Cut the power now.
    pub fn power_off(&self) {
        let mut st = self.state.borrow_mut();
        st.powered_off = true;
        st.power_off_at = None;
    }

    /// While held, every `sync_data` waits (its writes stay unsynced) until
    /// released, the power is cut, or the disk crashes.
    pub fn hold_syncs(&self, held: bool) {
        let mut st = self.state.borrow_mut();
        st.syncs_held = held;
        st.sync_passes = 0;
    }

    /// Let `n` held syncs (waiting now or later) go through.
    pub fn pass_held_syncs(&self, n: u64) {
        self.state.borrow_mut().sync_passes += n;
    }

    /// How many `sync_data` calls are waiting on the hold.
    pub fn syncs_waiting(&self) -> u64 {
        self.state.borrow().syncs_waiting
    }

    pub fn is_powered_off(&self) -> bool {
        self.state.borrow().powered_off
    }

    pub fn stats(&self) -> SimStats {
        let st = self.state.borrow();
        SimStats { bytes_used: st.used(), ..st.stats }
    }

    /// Crash with [`CrashMode::Random`]; see [`SimStorage::crash_with`].
    pub fn crash(&self, seed: u64) {
        self.crash_with(seed, CrashMode::Random);
    }

    /// Replace the disk by what a power loss leaves of it (choices follow
    /// `seed`), invalidate every open handle, restore power and disarm all
    /// armed faults (the space budget stays).
    pub fn crash_with(&self, seed: u64, mode: CrashMode) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut st = self.state.borrow_mut();
        let dirs: BTreeSet<PathBuf> =
            st.durable.dirs.iter().filter(|d| st.durable.dir_chain_exists(d)).cloned().collect();
        let survivors = Namespace { dirs, files: BTreeMap::new() };
        let mut files = BTreeMap::new();
        let mut inodes = BTreeMap::new();
        let durable_files: Vec<(PathBuf, u64)> = st.durable.files.iter().map(|(p, i)| (p.clone(), *i)).collect();
        for (path, ino) in durable_files {
            if !survivors.dir_chain_exists(parent_of(&path)) {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = inodes.entry(ino) {
                let old = &st.inodes[&ino];
                let content = resolve(old, mode, &mut rng);
                slot.insert(Inode {
                    current: content.clone(),
                    durable: content,
                    pending: Vec::new(),
                    prealloc: old.prealloc,
                });
            }
            files.insert(path, ino);
        }
        let ns = Namespace { dirs: survivors.dirs, files };
        st.current = ns.clone();
        st.durable = ns;
        st.inodes = inodes;
        st.generation += 1;
        self.generation.set(st.generation);
        st.powered_off = false;
        st.power_off_at = None;
        st.syncs_held = false;
        st.sync_passes = 0;
        st.write_faults.clear();
        st.sync_faults.clear();
        st.stats.crashes += 1;
        st.log(|| format!("crash seed={seed} mode={mode:?}"));
    }

    /// Flip bits (`xor`) of the byte at `pos` in both the durable and the
    /// current contents of a file: damage to data already on the platter.
    pub fn corrupt_byte(&self, path: &Path, pos: u64, xor: u8) -> io::Result<()> {
        assert!(xor != 0);
        let mut st = self.state.borrow_mut();
        let ino = *st.current.files.get(path).ok_or_else(|| err(libc::ENOENT))?;
        let inode = st.inode(ino);
        let p = pos as usize;
        if p >= inode.durable.len() || p >= inode.current.len() {
            return Err(err(libc::EINVAL));
        }
        inode.durable[p] ^= xor;
        inode.current[p] ^= xor;
        Ok(())
    }

    /// Replace bytes of a file in both its durable and current contents, as
    /// if they were on the platter (e.g. zeros where a torn write's sector
    /// never landed). The range must lie within the file.
    pub fn overwrite(&self, path: &Path, pos: u64, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        let ino = *st.current.files.get(path).ok_or_else(|| err(libc::ENOENT))?;
        let inode = st.inode(ino);
        let (from, to) = (pos as usize, pos as usize + bytes.len());
        if to > inode.durable.len() || to > inode.current.len() {
            return Err(err(libc::EINVAL));
        }
        inode.durable[from..to].copy_from_slice(bytes);
        inode.current[from..to].copy_from_slice(bytes);
        Ok(())
    }

    /// What reads of a file see now.
    pub fn current_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        st.current.files.get(path).map(|i| st.inodes[i].current.clone())
    }

    /// What of a file would survive a crash that keeps no unsynced write.
    pub fn durable_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        st.durable.files.get(path).map(|i| st.inodes[i].durable.clone())
    }

    /// Paths of all files in the current namespace.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.borrow().current.files.keys().cloned().collect()
    }

    /// Yield to the executor a seeded random number of times (at least once
    /// every [`FORCED_YIELD_EVERY`] operations, so a caller that loops on
    /// storage calls cannot starve the executor: its timers still fire).
    async fn jitter(&self) {
        let n = {
            let mut st = self.state.borrow_mut();
            let max = st.max_yields;
            let mut n = st.rng.gen_range(0..=max);
            st.since_yield += 1;
            if n == 0 && st.since_yield >= FORCED_YIELD_EVERY {
                n = 1;
            }
            if n > 0 {
                st.since_yield = 0;
            }
            n
        };
        for _ in 0..n {
            futures_lite::future::yield_now().await;
        }
    }
}

/// An open file of the simulated disk.
pub struct SimFile {
    sim: SimStorage,
    ino: u64,
    generation: u64,
    path: PathBuf,
}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("generation", &self.generation)
            .finish()
    }
}

impl Storage for SimStorage {
    type File = SimFile;
    type Buf = SimBuf;

    fn alloc_buf(&self, len: usize) -> SimBuf {
        SimBuf { bytes: vec![0; len] }
    }

    async fn create_file(&self, path: &Path) -> io::Result<SimFile> {
        self.jitter().await;
        let mut st = self.state.borrow_mut();
        st.admit(self.generation.get())?;
        if !st.current.dir_chain_exists(parent_of(path)) {
            return Err(err(libc::ENOENT));
        }
        if st.current.files.contains_key(path) || st.current.dirs.contains(path) {
            return Err(err(libc::EEXIST));
        }
        let ino = st.new_inode(Inode::default());
        st.current.files.insert(path.to_owned(), ino);
        st.log(|| format!("create {} ino={ino}", path.display()));
        Ok(SimFile { sim: self.clone(), ino, generation: self.generation.get(), path: path.to_owned() })
    }

    async fn open_file(&self, path: &Path) -> io::Result<SimFile> {
        self.jitter().await;
        let mut st = self.state.borrow_mut();
        st.admit(self.generation.get())?;
        let ino = *st.current.files.get(path).ok_or_else(|| err(libc::ENOENT))?;
        Ok(SimFile { sim: self.clone(), ino, generation: self.generation.get(), path: path.to_owned() })
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.jitter().await;
        let mut st = self.state.borrow_mut();
        st.admit(self.generation.get())?;
        st.current.files.remove(path).ok_or_else(|| err(libc::ENOENT))?;
        st.log(|| format!("remove {}", path.display()));
        Ok(())
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.jitter().await;
        let mut st = self.state.borrow_mut();
        st.admit(self.generation.get())?;
        let mut missing: Vec<PathBuf> =
            path.ancestors().filter(|a| !st.current.is_dir(a)).map(Path::to_owned).collect();
        missing.reverse();
        for dir in missing {
            if st.current.files.contains_key(&dir) {
                return Err(err(libc::ENOTDIR));
            }
            st.log(|| format!("mkdir {}", dir.display()));
            st.current.dirs.insert(dir);
        }
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.jitter().await;
        let mut st = self.state.borrow_mut();
        st.admit(self.generation.get())?;
        if !st.current.dir_chain_exists(path) {
            return Err(err(libc::ENOENT));
        }
        st.stats.dir_syncs += 1;
        let st = &mut *st;
        st.durable.dirs.retain(|d| parent_of(d) != path);
        st.durable.dirs.extend(st.current.dirs.iter().filter(|d| parent_of(d) == path).cloned());
        st.durable.files.retain(|f, _| parent_of(f) != path);
        st.durable
            .files
            .extend(st.current.files.iter().filter(|(f, _)| parent_of(f) == path).map(|(f, i)| (f.clone(), *i)));
        st.log(|| format!("sync_dir {}", path.display()));
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.jitter().await;
        let mut st = self.state.borrow_mut();
        st.admit(self.generation.get())?;
        let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut names: Vec<String> = st.current.dirs.iter().filter(|d| parent_of(d) == path).filter_map(name).collect();
        names.extend(st.current.files.keys().filter(|f| parent_of(f) == path).filter_map(name));
        names.sort();
        Ok(names)
    }

    async fn read_small(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        self.jitter().await;
        let mut st = self.state.borrow_mut();
        st.admit(self.generation.get())?;
        st.stats.reads += 1;
        Ok(st.current.files.get(path).map(|i| st.inodes[i].current.clone()))
    }

    async fn write_small_durably(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.jitter().await;
        let mut st = self.state.borrow_mut();
        st.admit(self.generation.get())?;
        if !st.current.dir_chain_exists(parent_of(path)) {
            return Err(err(libc::ENOENT));
        }
        let old = st.current.files.get(path).map(|i| st.inodes[i].allocated()).unwrap_or(0);
        st.check_space(old, align_up(bytes.len() as u64, ALLOC_BLOCK_BYTES))?;
        let ino =
            st.new_inode(Inode { current: bytes.to_vec(), durable: bytes.to_vec(), pending: Vec::new(), prealloc: 0 });
        st.current.files.insert(path.to_owned(), ino);
        st.durable.files.insert(path.to_owned(), ino);
        st.log(|| format!("write_small_durably {} ({} bytes)", path.display(), bytes.len()));
        Ok(())
    }
}

impl SimFile {
    fn state(&self) -> std::cell::RefMut<'_, State> {
        self.sim.state.borrow_mut()
    }
}

impl StorageFile for SimFile {
    type Buf = SimBuf;

    fn alignment(&self) -> u64 {
        self.sim.state.borrow().alignment
    }

    async fn write_at(&self, buf: Rc<SimBuf>, pos: u64) -> io::Result<()> {
        self.sim.jitter().await;
        let mut st = self.state();
        st.admit(self.generation)?;
        let len = buf.bytes.len() as u64;
        #[allow(clippy::manual_is_multiple_of, reason = "rust-version 1.85")]
        let unaligned = pos % st.alignment != 0 || len % st.alignment != 0;
        if unaligned {
            st.log(|| format!("write {} at {pos} len {len}: EINVAL (unaligned)", self.path.display()));
            return Err(err(libc::EINVAL));
        }
        st.stats.writes += 1;
        let n = st.stats.writes;
        let fault = st.write_faults.remove(&n);
        let (old_alloc, new_alloc, size) = {
            let inode = st.inode(self.ino);
            let size = inode.current.len() as u64;
            let new = align_up(size.max(pos + len).max(inode.prealloc), ALLOC_BLOCK_BYTES);
            (inode.allocated(), new, size)
        };
        if let Err(e) = st.check_space(old_alloc, new_alloc) {
            st.log(|| format!("write {} at {pos} len {len}: ENOSPC", self.path.display()));
            return Err(e);
        }
        let mut data = buf.bytes.clone();
        let mut at = pos;
        match fault {
            None => {}
            Some(WriteFault::Eio) => {
                st.stats.faults_fired += 1;
                // Some sectors may have reached the device cache anyway.
                let keep: Vec<bool> =
                    (0..data.len().div_ceil(SECTOR_BYTES as usize)).map(|_| st.rng.gen_bool(0.5)).collect();
                let inode = st.inode(self.ino);
                for (i, sector) in data.chunks(SECTOR_BYTES as usize).enumerate() {
                    if keep[i] {
                        let op = Op::Write { pos: pos + i as u64 * SECTOR_BYTES, data: sector.to_vec() };
                        apply(&mut inode.current, &op);
                        inode.pending.push(op);
                    }
                }
                st.log(|| format!("write {} at {pos} len {len}: injected EIO", self.path.display()));
                return Err(err(libc::EIO));
            }
            Some(WriteFault::Corrupt) => {
                st.stats.faults_fired += 1;
                let byte = st.rng.gen_range(0..data.len());
                let bit = st.rng.gen_range(0..8);
                data[byte] ^= 1 << bit;
                st.log(|| {
                    format!(
                        "write {} at {pos} len {len}: injected bit flip at {}",
                        self.path.display(),
                        pos + byte as u64
                    )
                });
            }
            Some(WriteFault::Misdirect) => {
                st.stats.faults_fired += 1;
                let align = st.alignment;
                let slots = (size.max(pos + len) / align).max(1);
                let mut target = st.rng.gen_range(0..slots) * align;
                if target == pos {
                    target = if pos >= align { pos - align } else { pos + align };
                }
                at = target;
                st.log(|| format!("write {} at {pos} len {len}: injected misdirection to {at}", self.path.display()));
            }
        }
        let op = Op::Write { pos: at, data };
        let inode = st.inode(self.ino);
        apply(&mut inode.current, &op);
        inode.pending.push(op);
        st.log(|| format!("write {} at {pos} len {len}", self.path.display()));
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        self.sim.jitter().await;
        let mut st = self.state();
        st.admit(self.generation)?;
        st.stats.reads += 1;
        let content = &st.inodes[&self.ino].current;
        let from = (pos as usize).min(content.len());
        let to = from.saturating_add(len).min(content.len());
        Ok(content[from..to].to_vec())
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.sim.jitter().await;
        let mut waiting = false;
        loop {
            let held = {
                let mut st = self.sim.state.borrow_mut();
                let mut held = st.syncs_held && !st.powered_off && st.generation == self.generation;
                if held && st.sync_passes > 0 {
                    st.sync_passes -= 1;
                    held = false;
                }
                if held != waiting {
                    waiting = held;
                    if held {
                        st.syncs_waiting += 1;
                    } else {
                        st.syncs_waiting = st.syncs_waiting.saturating_sub(1);
                    }
                }
                held
            };
            if !held {
                break;
            }
            futures_lite::future::yield_now().await;
        }
        let mut st = self.state();
        st.admit(self.generation)?;
        st.stats.syncs += 1;
        let n = st.stats.syncs;
        if st.sync_faults.remove(&n) {
            st.stats.faults_fired += 1;
            // fsyncgate: part of it reached the disk; the rest never will,
            // and the next sync will not retry it.
            let seed = st.rng.gen();
            let mut rng = StdRng::seed_from_u64(seed);
            let inode = st.inode(self.ino);
            inode.durable = resolve(inode, CrashMode::Random, &mut rng);
            inode.pending.clear();
            st.log(|| format!("sync_data {}: injected EIO", self.path.display()));
            return Err(err(libc::EIO));
        }
        let inode = st.inode(self.ino);
        for op in std::mem::take(&mut inode.pending) {
            apply(&mut inode.durable, &op);
        }
        st.stats.syncs_ok += 1;
        st.log(|| format!("sync_data {}", self.path.display()));
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.sim.jitter().await;
        let mut st = self.state();
        st.admit(self.generation)?;
        let op = Op::Truncate(len);
        let inode = st.inode(self.ino);
        apply(&mut inode.current, &op);
        inode.pending.push(op);
        // Truncation frees every block past the new size, preallocated ones included.
        inode.prealloc = inode.prealloc.min(len);
        st.log(|| format!("truncate {} to {len}", self.path.display()));
        Ok(())
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.sim.jitter().await;
        let mut st = self.state();
        st.admit(self.generation)?;
        let (old, new) = {
            let inode = st.inode(self.ino);
            let new = align_up((inode.current.len() as u64).max(inode.prealloc).max(len), ALLOC_BLOCK_BYTES);
            (inode.allocated(), new)
        };
        if let Err(e) = st.check_space(old, new) {
            st.log(|| format!("preallocate {} to {len}: ENOSPC", self.path.display()));
            return Err(e);
        }
        let inode = st.inode(self.ino);
        inode.prealloc = inode.prealloc.max(len);
        st.log(|| format!("preallocate {} to {len}", self.path.display()));
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        self.sim.jitter().await;
        let mut st = self.state();
        st.admit(self.generation)?;
        Ok(st.inodes[&self.ino].current.len() as u64)
    }
}
