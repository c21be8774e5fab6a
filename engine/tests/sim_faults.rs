//! Crash and fault tests of the log on the simulated disk (`storage::sim`).
//!
//! Each seed drives concurrent writers through the public API (group commit,
//! both ack levels, reads, rolls), crashes at a random point, reopens, and
//! checks the recovered log against a model of what was sent and acknowledged:
//!
//! - (a) every batch acknowledged `Durable` is present with identical bytes at its offset;
//! - (b) the log is a gap-free run of offsets `0..hw`, each batch one that some
//!   append sent (with the offset it was given), none that an earlier recovery dropped;
//! - (c) reads only return batches that pass their checksums (walked with `batches`);
//! - (d) after recovery, appends continue at `hw`.
//!
//! `DDC_SIM_SEEDS=<n>` runs `n` seeds per test (soak); `DDC_SIM_SEED=<s>` replays
//! exactly one seed, with a trace of the storage operations printed on failure.
//! A failing seed is printed with the command that replays it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ddc_engine::storage::sim::{CrashMode, SimStorage};
use ddc_engine::{Engine, EngineError, LogConfig, Stream};
use ddc_formats::batch::{batches, encode_records, records, BatchHeader, BATCH_HEADER_BYTES};
use ddc_formats::segment::SEGMENT_HEADER_BYTES;
use ddc_formats::wire::AckLevel;
use futures_lite::future::yield_now;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Eng = Rc<Engine<SimStorage>>;
type Strm = Rc<Stream<SimStorage>>;

const DATA_DIR: &str = "/sim";
const STREAMS: [&str; 2] = ["alpha", "beta"];

// ---------------------------------------------------------------- harness

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

thread_local! {
    /// The test and seed running on this thread, and its disk (for the trace).
    static CURRENT: RefCell<Option<(&'static str, u64, Option<SimStorage>)>> = const { RefCell::new(None) };
}

thread_local! {
    /// Counters of what the seeds exercised, printed at the end of a test.
    static COUNTS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

fn bump(what: &'static str, n: u64) {
    COUNTS.with(|c| *c.borrow_mut().entry(what).or_insert(0) += n);
}

fn replaying() -> bool {
    std::env::var_os("DDC_SIM_SEED").is_some()
}

fn seeds(default_count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("DDC_SIM_SEED") {
        return vec![s.trim().parse().expect("DDC_SIM_SEED must be a u64")];
    }
    let n = std::env::var("DDC_SIM_SEEDS")
        .ok()
        .map(|v| v.trim().parse().expect("DDC_SIM_SEEDS must be a count"))
        .unwrap_or(default_count);
    (0..n).collect()
}

fn print_trace() {
    CURRENT.with(|c| {
        if let Ok(c) = c.try_borrow() {
            if let Some((_, _, Some(sim))) = c.as_ref() {
                let trace = sim.take_trace();
                if !trace.is_empty() {
                    eprintln!("---- last storage operations ----");
                    for line in trace.iter().skip(trace.len().saturating_sub(300)) {
                        eprintln!("  {line}");
                    }
                }
            }
        }
    });
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let current = CURRENT.with(|c| c.try_borrow().ok().and_then(|c| c.as_ref().map(|(t, s, _)| (*t, *s))));
            if let Some((test, seed)) = current {
                print_trace();
                eprintln!("\n==== {test}: panic at seed {seed}; replay: DDC_SIM_SEED={seed} cargo test -p ddc-engine --test sim_faults {test}\n");
            }
            prev(info);
        }));
    });
}

/// Register the disk of the running seed (its trace is printed on failure).
fn register_sim(sim: &SimStorage) {
    if replaying() {
        sim.set_trace(true);
    }
    CURRENT.with(|c| {
        if let Some(cur) = c.borrow_mut().as_mut() {
            cur.2 = Some(sim.clone());
        }
    });
}

/// Run `f` for every seed on one glommio executor; fail with the seed and a replay command.
fn run_seeds<F, Fut>(test: &'static str, default_count: u64, f: F)
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    install_panic_hook();
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move {
            let started = Instant::now();
            let list = seeds(default_count);
            for &seed in &list {
                CURRENT.with(|c| *c.borrow_mut() = Some((test, seed, None)));
                if let Err(e) = within(Duration::from_secs(120), || "the seed".into(), f(seed)).await.and_then(|r| r) {
                    print_trace();
                    panic!("{test} failed at seed {seed}: {e}\nreplay: DDC_SIM_SEED={seed} cargo test -p ddc-engine --test sim_faults {test}");
                }
                CURRENT.with(|c| *c.borrow_mut() = None);
            }
            let counts = COUNTS.with(|c| std::mem::take(&mut *c.borrow_mut()));
            eprintln!("{test}: {} seed(s) in {:.2?}; {counts:?}", list.len(), started.elapsed());
        })
        .expect("executor")
        .join()
        .expect("a seed failed (see above)");
}

fn small_config(rng: &mut StdRng) -> LogConfig {
    let mut c = LogConfig::new(DATA_DIR);
    c.segment_bytes_max = [16u64 << 10, 32 << 10, 64 << 10][rng.gen_range(0..3)];
    c.write_buffer_bytes = 8 << 10;
    c.index_interval_bytes = 1 << 10;
    c.unflushed_bytes_max = [8usize << 10, 32 << 10, 1 << 20][rng.gen_range(0..3)];
    // 4 KiB is smaller than the big batches (see
    // `regression_read_of_batch_longer_than_twice_read_chunk_hangs`).
    c.read_chunk_bytes = [4usize << 10, 16 << 10, 256 << 10][rng.gen_range(0..3)];
    c.preallocate = rng.gen_bool(0.5);
    c
}

/// A fresh disk with `<data_dir>/streams` already durable.
///
/// The engine creates `streams/` but never fsyncs its parent; see
/// `regression_streams_dir_creation_is_not_fsynced` for that bug. Pre-creating
/// it here (as an operator's setup would) keeps the other tests about the rest.
fn new_sim(seed: u64, rng: &mut StdRng) -> SimStorage {
    let sim = SimStorage::new(seed ^ 0x51f7_d15c);
    sim.set_alignment(if rng.gen_bool(0.5) { 512 } else { 4096 });
    sim.set_max_yields(rng.gen_range(0..=3));
    sim.mkdir_durable(&Path::new(DATA_DIR).join("streams"));
    register_sim(&sim);
    sim
}

fn random_crash_mode(rng: &mut StdRng) -> CrashMode {
    match rng.gen_range(0..10) {
        0 => CrashMode::TornTail,
        1 => CrashMode::LoseUnsynced,
        2 => CrashMode::KeepAll,
        _ => CrashMode::Random,
    }
}

/// `fut`, or an error if it takes longer than `limit` (a hang).
async fn within<T>(limit: Duration, what: impl FnOnce() -> String, fut: impl Future<Output = T>) -> Result<T, String> {
    let done = async { Ok(fut.await) };
    let hang = async {
        glommio::timer::sleep(limit).await;
        Err(())
    };
    futures_lite::future::or(done, hang).await.map_err(|()| format!("{} did not finish within {limit:?}", what()))
}

/// Wait for the tasks, failing if they do not finish (a liveness bug).
async fn join_all(tasks: Vec<glommio::Task<()>>) -> Result<(), String> {
    let all = async {
        for t in tasks {
            t.await;
        }
        Ok(())
    };
    let hang = async {
        glommio::timer::sleep(Duration::from_secs(60)).await;
        Err("workload did not finish within 60 s (an append or read hangs)".to_string())
    };
    futures_lite::future::or(all, hang).await
}

/// Let the old engine's tasks run into their (now failing) I/O and exit.
/// Its storage handle is stale after the crash, so nothing it does reaches the disk.
async fn bury(engine: Eng) {
    engine.close().await;
}

// ------------------------------------------------------------------ model

#[derive(Debug)]
struct Sent {
    stream: usize,
    body: Vec<u8>,
    count: u32,
    /// Acknowledged with `AckLevel::Durable`.
    durable_ack: bool,
    /// A read returned it: reads serve only fsync-covered data, so it must survive crashes.
    served: bool,
    /// The offset it was given, once an ack or a read revealed it.
    offset: Option<u64>,
    /// A recovery did not find it: it must never appear again.
    dead: bool,
}

struct Model {
    sent: BTreeMap<u64, Sent>,
    next_id: u64,
    /// Per stream: base offset -> batch id, as acknowledged or observed.
    at: Vec<BTreeMap<u64, u64>>,
}

fn batch_id(body: &[u8]) -> Option<u64> {
    let first = records(body).next()?;
    let digits = first.split(|b| *b == b':').next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Model {
    fn new() -> Model {
        Model { sent: BTreeMap::new(), next_id: 0, at: vec![BTreeMap::new(); STREAMS.len()] }
    }

    /// A new batch for stream `s`: records `"<id>:<i>:"` plus filler.
    fn make_batch(&mut self, s: usize, rng: &mut StdRng, size: BatchSize) -> (u64, Vec<u8>, u32) {
        let id = self.next_id;
        self.next_id += 1;
        let count = match size {
            BatchSize::Huge(_) => 1,
            _ => rng.gen_range(1..=6u32),
        };
        let recs: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let mut r = format!("{id}:{i}:").into_bytes();
                let n = match size {
                    BatchSize::Small => rng.gen_range(0..400),
                    BatchSize::Big => rng.gen_range(1000..6000),
                    BatchSize::Huge(n) => n,
                };
                let salt = (id as u8).wrapping_mul(29).wrapping_add(i as u8);
                r.extend((0..n).map(|j| salt.wrapping_add((j as u8).wrapping_mul(7))));
                r
            })
            .collect();
        let body = encode_records(recs.iter().map(|r| r.as_slice()));
        self.sent.insert(
            id,
            Sent { stream: s, body: body.clone(), count, durable_ack: false, served: false, offset: None, dead: false },
        );
        (id, body, count)
    }

    fn place(&mut self, s: usize, id: u64, base: u64, what: &str) -> Result<(), String> {
        let sent = self.sent.get_mut(&id).ok_or_else(|| format!("{what}: unknown batch id {id}"))?;
        match sent.offset {
            Some(o) if o != base => {
                return Err(format!("{what}: batch {id} at offset {base}, but it was given offset {o}"))
            }
            _ => sent.offset = Some(base),
        }
        match self.at[s].get(&base) {
            Some(&other) if other != id => {
                return Err(format!(
                    "{what}: stream {} offset {base} holds batch {id}, but batch {other} was given that offset",
                    STREAMS[s]
                ))
            }
            _ => {
                self.at[s].insert(base, id);
            }
        }
        Ok(())
    }

    fn ack(&mut self, s: usize, id: u64, base: u64, durable: bool) -> Result<(), String> {
        self.place(s, id, base, "ack")?;
        let sent = self.sent.get_mut(&id).expect("placed");
        sent.durable_ack |= durable;
        Ok(())
    }

    /// A batch read back from stream `s` at `base`.
    fn observe(&mut self, s: usize, base: u64, count: u32, body: &[u8]) -> Result<(), String> {
        let id = batch_id(body).ok_or_else(|| format!("batch at {base} of {} is not one the test sent", STREAMS[s]))?;
        let sent = self.sent.get(&id).ok_or_else(|| format!("batch at {base} claims id {id}, never sent"))?;
        check!(sent.stream == s, "batch {id} sent to {} appears in {}", STREAMS[sent.stream], STREAMS[s]);
        check!(
            sent.count == count && sent.body == body,
            "batch at {} offset {base} (id {id}) differs from what was sent",
            STREAMS[s]
        );
        check!(!sent.dead, "batch {id} at {} offset {base} reappeared after a recovery had dropped it", STREAMS[s]);
        self.place(s, id, base, "read")?;
        self.sent.get_mut(&id).expect("checked").served = true;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum BatchSize {
    Small,
    Big,
    Huge(usize),
}

/// Check a read's batches: checksums, the first holds `offset`, offsets contiguous, bytes as sent.
/// Returns the next offset after the last batch.
fn verify_read(model: &mut Model, s: usize, bytes: &[u8], offset: u64) -> Result<u64, String> {
    let mut next: Option<u64> = None;
    for b in batches(bytes) {
        let b =
            b.map_err(|e| format!("read of {} at {offset} returned a batch failing its checksum: {e}", STREAMS[s]))?;
        let h = b.header;
        match next {
            None => check!(
                h.base_offset <= offset && offset < h.next_offset(),
                "read of {} at {offset} starts with batch [{}, {})",
                STREAMS[s],
                h.base_offset,
                h.next_offset()
            ),
            Some(n) => check!(
                h.base_offset == n,
                "read of {} at {offset}: batch at {} follows one ending at {n}",
                STREAMS[s],
                h.base_offset
            ),
        }
        model.observe(s, h.base_offset, h.record_count, b.body)?;
        next = Some(h.next_offset());
    }
    next.ok_or_else(|| format!("read of {} at {offset} below the high watermark returned nothing", STREAMS[s]))
}

/// Read the whole stream `0..hw` in random-sized reads; returns batches `(base, next, id)`.
async fn read_all(
    stream: &Strm,
    model: &RefCell<Model>,
    s: usize,
    rng: &mut StdRng,
) -> Result<Vec<(u64, u64, u64)>, String> {
    let hw = stream.high_watermark();
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < hw {
        let max = if rng.gen_bool(0.3) { rng.gen_range(1..200) } else { rng.gen_range(1000..40_000) };
        let read = within(
            Duration::from_secs(10),
            || format!("read of {} at {offset}, max {max}", STREAMS[s]),
            stream.read(offset, max),
        )
        .await?
        .map_err(|e| format!("read of {} at {offset} (hw {hw}): {e}", STREAMS[s]))?;
        let mut m = model.borrow_mut();
        let next = verify_read(&mut m, s, &read.batches, offset)?;
        for b in batches(&read.batches) {
            let b = b.expect("verified");
            if b.header.next_offset() > offset {
                out.push((b.header.base_offset, b.header.next_offset(), batch_id(b.body).expect("verified")));
            }
        }
        offset = next;
    }
    check!(offset == hw, "stream {} reads end at {offset}, past the high watermark {hw}", STREAMS[s]);
    Ok(out)
}

/// After a reopen: check (a), (b), (c) for every stream and update the model.
/// `exact_hw[s]`, when known, is the high watermark recovery must find.
async fn verify_recovered(
    engine: &Eng,
    model: &RefCell<Model>,
    rng: &mut StdRng,
    exact_hw: &[Option<u64>],
) -> Result<Vec<u64>, String> {
    let mut hws = Vec::new();
    for (s, name) in STREAMS.iter().enumerate() {
        let stream = match engine.stream(name) {
            Ok(st) => Some(st),
            Err(EngineError::UnknownStream(_)) => None,
            Err(e) => return Err(format!("stream {name} after recovery: {e}")),
        };
        let (hw, log) = match &stream {
            Some(st) => {
                check!(st.log_start_offset() == 0, "stream {name}: log starts at {}", st.log_start_offset());
                check!(
                    st.fenced_reason().is_none(),
                    "stream {name} is fenced right after recovery: {:?}",
                    st.fenced_reason()
                );
                (st.high_watermark(), read_all(st, model, s, rng).await?)
            }
            None => (0, Vec::new()),
        };
        if let Some(Some(want)) = exact_hw.get(s) {
            check!(hw == *want, "stream {name}: recovered high watermark {hw}, expected exactly {want}");
        }
        let mut m = model.borrow_mut();
        bump("recovered_streams", u64::from(stream.is_some()));
        bump("recovered_batches", log.len() as u64);
        bump("recovered_segments", stream.as_ref().map_or(0, |st| st.info(0).segments.len() as u64));
        let lost = m.sent.iter().filter(|(id, x)| x.stream == s && !x.dead && !log.iter().any(|l| l.2 == **id)).count();
        bump("batches_dropped_by_crash", lost as u64);
        let by_base: BTreeMap<u64, u64> = log.iter().map(|&(b, _, id)| (b, id)).collect();
        let ids: BTreeSet<u64> = log.iter().map(|&(_, _, id)| id).collect();
        check!(ids.len() == log.len(), "stream {name}: a batch appears twice in the recovered log");
        for (&o, &id) in m.at[s].range(..hw) {
            check!(
                by_base.get(&o) == Some(&id),
                "stream {name}: offset {o} was given to batch {id}, recovered log (hw {hw}) has {:?} there",
                by_base.get(&o)
            );
        }
        for (id, sent) in &m.sent {
            if sent.stream == s && (sent.durable_ack || sent.served) {
                let o = sent.offset.expect("acked or read batches have an offset");
                let how = if sent.durable_ack { "acknowledged durable" } else { "served by a read" };
                check!(
                    o + u64::from(sent.count) <= hw,
                    "stream {name}: batch {id} {how} at [{o}, {}) is lost; recovered high watermark {hw}",
                    o + u64::from(sent.count)
                );
            }
        }
        // Everything not recovered is gone for good.
        m.at[s].retain(|&o, _| o < hw);
        for (id, sent) in m.sent.iter_mut() {
            if sent.stream == s && !ids.contains(id) {
                sent.dead = true;
            }
        }
        hws.push(hw);
    }
    Ok(hws)
}

// --------------------------------------------------------------- workload

struct Ctx {
    sim: SimStorage,
    model: RefCell<Model>,
    /// Set when the test crashes the disk under running tasks: their errors are expected.
    crashing: Cell<bool>,
    /// Errors that are acceptable (beyond crashes and power loss).
    tolerate: Cell<Tolerate>,
    violations: RefCell<Vec<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tolerate {
    Nothing,
    /// Appends may fail with WritesFenced; reads must succeed.
    Fenced,
    /// Appends may fail (fenced); reads may report Corrupted (device corruption injected).
    Corruption,
}

impl Ctx {
    fn new(sim: &SimStorage) -> Rc<Ctx> {
        Rc::new(Ctx {
            sim: sim.clone(),
            model: RefCell::new(Model::new()),
            crashing: Cell::new(false),
            tolerate: Cell::new(Tolerate::Nothing),
            violations: RefCell::new(Vec::new()),
        })
    }

    fn power_lost(&self) -> bool {
        self.crashing.get() || self.sim.is_powered_off()
    }

    fn violation(&self, v: String) {
        self.violations.borrow_mut().push(v);
    }

    fn take_violations(&self) -> Result<(), String> {
        let v = std::mem::take(&mut *self.violations.borrow_mut());
        if v.is_empty() {
            Ok(())
        } else {
            Err(v.join("\n"))
        }
    }
}

struct Mix {
    ops: usize,
    /// Out of 100: appends, then reads, then rolls; the rest yield.
    append: u32,
    read: u32,
    roll: u32,
    wns_one_in: u32,
}

async fn worker(ctx: Rc<Ctx>, engine: Eng, streams: Vec<(usize, Strm)>, seed: u64, mix: Mix) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..mix.ops {
        let (s, stream) = &streams[rng.gen_range(0..streams.len())];
        let s = *s;
        let p = rng.gen_range(0..100);
        if p < mix.append {
            let size = if rng.gen_ratio(1, 25) { BatchSize::Big } else { BatchSize::Small };
            let (id, body, count) = ctx.model.borrow_mut().make_batch(s, &mut rng, size);
            let durable = mix.wns_one_in == 0 || !rng.gen_ratio(1, mix.wns_one_in);
            let ack = if durable { AckLevel::Durable } else { AckLevel::WrittenNotSynced };
            match stream.append(&body, count, ack).await {
                Ok(base) => {
                    bump(if durable { "acked_durable" } else { "acked_written" }, 1);
                    if let Err(v) = ctx.model.borrow_mut().ack(s, id, base, durable) {
                        ctx.violation(v);
                    }
                }
                Err(e) => {
                    bump("append_errors", 1);
                    let ok = match (&e, ctx.tolerate.get()) {
                        (EngineError::WritesFenced { .. }, _) => {
                            ctx.power_lost() || ctx.tolerate.get() != Tolerate::Nothing
                        }
                        (EngineError::StorageFull(_), Tolerate::Fenced) => true,
                        _ => false,
                    };
                    if !ok {
                        ctx.violation(format!("append of batch {id} to {} failed: {e}", STREAMS[s]));
                    }
                }
            }
        } else if p < mix.append + mix.read {
            let hw = stream.high_watermark();
            if hw == 0 {
                continue;
            }
            let offset = rng.gen_range(0..hw);
            let max = rng.gen_range(1..20_000);
            let read = within(Duration::from_secs(10), String::new, stream.read(offset, max)).await;
            let Ok(read) = read else {
                ctx.violation(format!("read of {} at {offset}, max {max} did not finish within 10 s", STREAMS[s]));
                continue;
            };
            match read {
                Ok(out) => {
                    bump("reads_ok", 1);
                    if let Err(v) = verify_read(&mut ctx.model.borrow_mut(), s, &out.batches, offset) {
                        ctx.violation(v);
                    }
                }
                Err(EngineError::Corrupted { .. }) if ctx.tolerate.get() == Tolerate::Corruption => {}
                Err(e) if ctx.power_lost() => {
                    let _ = e;
                }
                Err(e) => ctx.violation(format!("read of {} at {offset} (hw {hw}) failed: {e}", STREAMS[s])),
            }
        } else if p < mix.append + mix.read + mix.roll {
            stream.roll_now();
        } else if rng.gen_bool(0.3) {
            // Housekeeping: age rolls and recovery points.
            engine.tick().await;
            bump("ticks", 1);
        } else {
            for _ in 0..rng.gen_range(1..4) {
                yield_now().await;
            }
        }
    }
}

/// Spawn `tasks` workers over `streams`.
fn spawn_workers(
    ctx: &Rc<Ctx>,
    engine: &Eng,
    streams: &[(usize, Strm)],
    rng: &mut StdRng,
    tasks: usize,
    mix: impl Fn(&mut StdRng) -> Mix,
) -> Vec<glommio::Task<()>> {
    (0..tasks)
        .map(|_| glommio::spawn_local(worker(ctx.clone(), engine.clone(), streams.to_vec(), rng.gen(), mix(rng))))
        .collect()
}

fn default_mix(rng: &mut StdRng) -> Mix {
    Mix { ops: rng.gen_range(10..50), append: 70, read: 20, roll: 3, wns_one_in: 8 }
}

/// Open the engine, check the recovered log, and check (d): a probe append lands at `hw`.
async fn reopen(
    sim: &SimStorage,
    config: &LogConfig,
    ctx: &Rc<Ctx>,
    rng: &mut StdRng,
    exact_hw: &[Option<u64>],
) -> Result<(Eng, Vec<u64>), String> {
    let engine = Engine::open(sim.clone(), config.clone(), 0, 1).await.map_err(|e| format!("Engine::open: {e}"))?;
    let hws = verify_recovered(&engine, &ctx.model, rng, exact_hw).await?;
    for (s, name) in STREAMS.iter().enumerate() {
        if rng.gen_bool(0.5) {
            continue;
        }
        let (stream, _) = engine.stream_or_create(name).map_err(|e| format!("stream_or_create {name}: {e}"))?;
        let (id, body, count) = ctx.model.borrow_mut().make_batch(s, rng, BatchSize::Small);
        let base = stream
            .append(&body, count, AckLevel::Durable)
            .await
            .map_err(|e| format!("probe append to {name} after recovery: {e}"))?;
        check!(base == hws[s], "probe append to {name} after recovery landed at {base}, high watermark was {}", hws[s]);
        ctx.model.borrow_mut().ack(s, id, base, true)?;
    }
    Ok((engine, hws))
}

fn open_streams(engine: &Eng) -> Result<Vec<(usize, Strm)>, String> {
    STREAMS
        .iter()
        .enumerate()
        .map(|(s, name)| Ok((s, engine.stream_or_create(name).map_err(|e| format!("{name}: {e}"))?.0)))
        .collect()
}

fn hws(streams: &[(usize, Strm)]) -> Vec<Option<u64>> {
    streams.iter().map(|(_, st)| Some(st.high_watermark())).collect()
}

// ------------------------------------------------------------ model test

/// Random workload, crash at a random point (power cut after N storage
/// operations, crash while tasks run, crash after they finish, or clean
/// close), reopen, check; several epochs per seed.
async fn random_crash_seed(seed: u64) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = new_sim(seed, &mut rng);
    let config = small_config(&mut rng);
    let ctx = Ctx::new(&sim);
    let mut exact: Vec<Option<u64>> = vec![Some(0); STREAMS.len()];
    for _epoch in 0..rng.gen_range(2..=4) {
        if rng.gen_ratio(1, 4) {
            // Power cut during recovery (its truncations, seals, removals): the next one must cope.
            sim.power_off_after(rng.gen_range(1..40));
            let interrupted = Engine::open(sim.clone(), config.clone(), 0, 1).await;
            bump("interrupted_recoveries", u64::from(sim.is_powered_off()));
            sim.crash_with(rng.gen(), random_crash_mode(&mut rng));
            if let Ok(engine) = interrupted {
                bury(engine).await;
            }
        }
        let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &exact).await?;
        let streams = open_streams(&engine)?;
        ctx.crashing.set(false);
        let tasks = rng.gen_range(1..=4);
        let ops_before = sim.stats().ops;
        let style = rng.gen_range(0..10);
        let mode = random_crash_mode(&mut rng);
        bump(
            ["style_power_off", "style_mid_flight", "style_after_tasks", "style_clean_close"][match style {
                0..=3 => 0,
                4..=6 => 1,
                7 | 8 => 2,
                _ => 3,
            }],
            1,
        );
        if style < 4 {
            sim.power_off_after(rng.gen_range(1..=tasks as u64 * 120));
        }
        let workers = spawn_workers(&ctx, &engine, &streams, &mut rng, tasks, default_mix);
        if (4..7).contains(&style) {
            // Crash while the tasks run.
            for _ in 0..rng.gen_range(0..tasks * 150) {
                yield_now().await;
            }
            ctx.crashing.set(true);
            exact = if mode == CrashMode::LoseUnsynced { hws(&streams) } else { vec![None; STREAMS.len()] };
            sim.crash_with(rng.gen(), mode);
            join_all(workers).await?;
        } else {
            join_all(workers).await?;
            if style == 9 && !sim.is_powered_off() {
                engine.close().await;
                exact = hws(&streams);
            } else if mode == CrashMode::LoseUnsynced {
                exact = hws(&streams);
            } else {
                exact = vec![None; STREAMS.len()];
            }
            ctx.crashing.set(true);
            sim.crash_with(rng.gen(), mode);
        }
        ctx.take_violations()?;
        bump("storage_ops", sim.stats().ops - ops_before);
        drop(streams);
        bury(engine).await;
    }
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &exact).await?;
    engine.close().await;
    Ok(())
}

#[test]
fn random_crashes_keep_acknowledged_data() {
    run_seeds("random_crashes_keep_acknowledged_data", 300, random_crash_seed);
}

// ------------------------------------------------------ targeted crashes

/// Durable data first, then a burst of appends (both ack levels) cut by a
/// crash that keeps `mode` of the unsynced writes.
async fn crash_mode_seed(seed: u64, mode: CrashMode) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = new_sim(seed, &mut rng);
    let config = small_config(&mut rng);
    let ctx = Ctx::new(&sim);
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &[Some(0), Some(0)]).await?;
    let streams = open_streams(&engine)?;
    let durable_only =
        |rng: &mut StdRng| Mix { ops: rng.gen_range(5..30), append: 100, read: 0, roll: 0, wns_one_in: 0 };
    join_all(spawn_workers(&ctx, &engine, &streams, &mut rng, 3, durable_only)).await?;
    ctx.take_violations()?;
    let burst = |rng: &mut StdRng| Mix { ops: rng.gen_range(5..30), append: 90, read: 5, roll: 2, wns_one_in: 3 };
    let workers = spawn_workers(&ctx, &engine, &streams, &mut rng, 3, burst);
    for _ in 0..rng.gen_range(0..300) {
        yield_now().await;
    }
    ctx.crashing.set(true);
    let exact = if mode == CrashMode::LoseUnsynced { hws(&streams) } else { vec![None; STREAMS.len()] };
    sim.crash_with(rng.gen(), mode);
    join_all(workers).await?;
    ctx.take_violations()?;
    drop(streams);
    bury(engine).await;
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &exact).await?;
    engine.close().await;
    Ok(())
}

#[test]
fn torn_tail_only() {
    run_seeds("torn_tail_only", 60, |seed| crash_mode_seed(seed, CrashMode::TornTail));
}

#[test]
fn unsynced_writes_lost_synced_kept_exactly() {
    run_seeds("unsynced_writes_lost_synced_kept_exactly", 60, |seed| crash_mode_seed(seed, CrashMode::LoseUnsynced));
}

#[test]
fn every_written_byte_kept() {
    run_seeds("every_written_byte_kept", 30, |seed| crash_mode_seed(seed, CrashMode::KeepAll));
}

// ------------------------------------------------------------ I/O errors

#[derive(Clone, Copy, PartialEq, Eq)]
enum IoFault {
    Write,
    Sync,
}

/// EIO on a write or an fdatasync: appends fail with WritesFenced (and keep
/// failing), no fsync is retried, reads keep serving durable data, and a
/// crash + reopen keeps everything acknowledged.
async fn io_error_seed(seed: u64, fault: IoFault) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = new_sim(seed, &mut rng);
    let config = small_config(&mut rng);
    let ctx = Ctx::new(&sim);
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &[Some(0), Some(0)]).await?;
    let (stream, _) = engine.stream_or_create(STREAMS[0]).map_err(|e| e.to_string())?;
    let streams = vec![(0, stream.clone())];
    let warmup = |rng: &mut StdRng| Mix { ops: rng.gen_range(0..25), append: 85, read: 10, roll: 5, wns_one_in: 0 };
    join_all(spawn_workers(&ctx, &engine, &streams, &mut rng, 3, warmup)).await?;
    ctx.take_violations()?;
    let n = rng.gen_range(1..=4);
    match fault {
        IoFault::Write => sim.fail_write(n),
        IoFault::Sync => sim.fail_sync(n),
    }
    ctx.tolerate.set(Tolerate::Fenced);
    // Each task appends until its first failure, then checks that appends keep failing.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let ctx = ctx.clone();
        let stream = stream.clone();
        let mut trng = StdRng::seed_from_u64(rng.gen());
        tasks.push(glommio::spawn_local(async move {
            let mut failed = false;
            for _ in 0..400 {
                let (id, body, count) = ctx.model.borrow_mut().make_batch(0, &mut trng, BatchSize::Small);
                let durable = !trng.gen_ratio(1, 6);
                let ack = if durable { AckLevel::Durable } else { AckLevel::WrittenNotSynced };
                match stream.append(&body, count, ack).await {
                    Ok(base) => {
                        if failed {
                            ctx.violation(format!("append of batch {id} succeeded after an earlier append failed"));
                        }
                        if let Err(v) = ctx.model.borrow_mut().ack(0, id, base, durable) {
                            ctx.violation(v);
                        }
                    }
                    Err(EngineError::WritesFenced { storage_full: false, .. }) => {
                        if failed {
                            break;
                        }
                        failed = true;
                    }
                    Err(e) => {
                        ctx.violation(format!("append of batch {id} failed with {e}, expected WritesFenced"));
                        break;
                    }
                }
            }
            if !failed {
                ctx.violation("400 appends and none failed after the injected EIO".into());
            }
        }));
    }
    join_all(tasks).await?;
    ctx.take_violations()?;
    check!(sim.stats().faults_fired == 1, "the injected EIO fired {} times", sim.stats().faults_fired);
    check!(stream.fenced_reason().is_some(), "stream not fenced after EIO");
    // Nothing more is synced or acknowledged: no silent fsync retry.
    let syncs = sim.stats().syncs;
    let hw = stream.high_watermark();
    let (id, body, count) = ctx.model.borrow_mut().make_batch(0, &mut rng, BatchSize::Small);
    let late = stream.append(&body, count, AckLevel::Durable).await;
    check!(matches!(late, Err(EngineError::WritesFenced { .. })), "append to a fenced stream: {late:?} (batch {id})");
    for _ in 0..20 {
        yield_now().await;
    }
    check!(sim.stats().syncs == syncs, "a fenced stream issued {} more fdatasync(s)", sim.stats().syncs - syncs);
    check!(
        stream.high_watermark() == hw,
        "high watermark of a fenced stream moved from {hw} to {}",
        stream.high_watermark()
    );
    // Reads still serve what is durable.
    read_all(&stream, &ctx.model, 0, &mut rng).await?;
    ctx.crashing.set(true);
    let mode = random_crash_mode(&mut rng);
    sim.crash_with(rng.gen(), mode);
    drop(streams);
    drop(stream);
    bury(engine).await;
    ctx.tolerate.set(Tolerate::Nothing);
    ctx.crashing.set(false);
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &[None, None]).await?;
    let streams = open_streams(&engine)?;
    join_all(spawn_workers(&ctx, &engine, &streams, &mut rng, 2, default_mix)).await?;
    ctx.take_violations()?;
    engine.close().await;
    Ok(())
}

#[test]
fn eio_on_write_fences_the_stream() {
    run_seeds("eio_on_write_fences_the_stream", 40, |seed| io_error_seed(seed, IoFault::Write));
}

#[test]
fn eio_on_fsync_fences_the_stream_without_retry() {
    run_seeds("eio_on_fsync_fences_the_stream_without_retry", 40, |seed| io_error_seed(seed, IoFault::Sync));
}

// ------------------------------------------------------------------ ENOSPC

/// Fill the disk: appends fail with StorageFull / WritesFenced{storage_full},
/// reads keep working, and after a crash everything acknowledged is there.
async fn enospc_seed(seed: u64, restart_while_full: bool) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = new_sim(seed, &mut rng);
    let config = small_config(&mut rng);
    let ctx = Ctx::new(&sim);
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &[Some(0), Some(0)]).await?;
    let streams = open_streams(&engine)?;
    let used = sim.stats().bytes_used;
    sim.set_space_budget(Some(used + rng.gen_range(8u64 << 10..256 << 10)));
    ctx.tolerate.set(Tolerate::Fenced);
    let mut rounds = 0;
    while streams.iter().any(|(_, st)| st.fenced_reason().is_none()) {
        rounds += 1;
        check!(rounds < 200, "disk budget never ran out");
        let mix = |rng: &mut StdRng| Mix { ops: rng.gen_range(5..30), append: 85, read: 10, roll: 5, wns_one_in: 6 };
        join_all(spawn_workers(&ctx, &engine, &streams, &mut rng, 3, mix)).await?;
        ctx.take_violations()?;
    }
    for (s, st) in &streams {
        let (_, body, count) = ctx.model.borrow_mut().make_batch(*s, &mut rng, BatchSize::Small);
        match st.append(&body, count, AckLevel::Durable).await {
            Err(EngineError::WritesFenced { storage_full: true, .. }) | Err(EngineError::StorageFull(_)) => {}
            other => return Err(format!("append to full {}: {other:?}, expected a storage-full error", STREAMS[*s])),
        }
        read_all(st, &ctx.model, *s, &mut rng).await?;
    }
    ctx.crashing.set(true);
    sim.crash_with(rng.gen(), random_crash_mode(&mut rng));
    drop(streams);
    bury(engine).await;
    ctx.crashing.set(false);
    ctx.tolerate.set(Tolerate::Nothing);
    if restart_while_full {
        // Recovery on a full disk must still serve reads.
        let engine = Engine::open(sim.clone(), config.clone(), 0, 1)
            .await
            .map_err(|e| format!("Engine::open on a full disk: {e}"))?;
        verify_recovered(&engine, &ctx.model, &mut rng, &[None, None]).await?;
        engine.close().await;
        // Crash again so the next open starts from the disk, not this engine's state.
        sim.crash_with(rng.gen(), CrashMode::LoseUnsynced);
    }
    sim.set_space_budget(None);
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &[None, None]).await?;
    let streams = open_streams(&engine)?;
    join_all(spawn_workers(&ctx, &engine, &streams, &mut rng, 2, default_mix)).await?;
    ctx.take_violations()?;
    engine.close().await;
    Ok(())
}

#[test]
fn enospc_reports_storage_full_and_reads_continue() {
    run_seeds("enospc_reports_storage_full_and_reads_continue", 40, |seed| enospc_seed(seed, false));
}

/// Recovery used to fail the whole stream (refusing reads) when
/// re-preallocating its open segment hit ENOSPC (found by seed 38).
#[test]
fn regression_restart_on_a_full_disk_keeps_streams_readable() {
    run_seeds("regression_restart_on_a_full_disk_keeps_streams_readable", 40, |seed| enospc_seed(seed, true));
}

// -------------------------------------------------------------- corruption

/// Batches of a segment file: (position, length, base, next).
fn parse_segment(bytes: &[u8], data_len: usize) -> Vec<(u64, usize, u64, u64)> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + BATCH_HEADER_BYTES <= data_len {
        let h = BatchHeader::decode(&bytes[at..]).expect("valid batch");
        out.push((at as u64, h.batch_len(), h.base_offset, h.next_offset()));
        at += h.batch_len();
    }
    out
}

fn segment_path(name: &str, base: u64) -> PathBuf {
    Path::new(DATA_DIR).join("streams").join(name).join(format!("{base:020}.log"))
}

/// Every offset of the stream read one by one: the damaged batch's offsets
/// must fail with Corrupted covering the damaged byte; others may fail with
/// Corrupted only if the read passes through the damaged batch; no read
/// returns wrong bytes.
async fn check_corrupted_reads(stream: &Strm, ctx: &Rc<Ctx>, damaged: (u64, u64, u64, u64)) -> Result<(), String> {
    let (seg_base, byte_pos, bad_base, bad_next) = damaged;
    let segment_next = stream.info(0).segments.iter().find(|s| s.base_offset == seg_base).map(|s| s.next_offset);
    let mut refused_after = 0;
    let hw = stream.high_watermark();
    let mut offset = 0;
    while offset < hw {
        match within(Duration::from_secs(10), || format!("read at {offset}"), stream.read(offset, 1)).await? {
            Ok(out) => {
                check!(
                    !(bad_base..bad_next).contains(&offset),
                    "read at {offset} in the damaged batch [{bad_base}, {bad_next}) returned data"
                );
                offset = verify_read(&mut ctx.model.borrow_mut(), 0, &out.batches, offset)?;
            }
            Err(EngineError::Corrupted { segment_base, position, end, .. }) => {
                check!(
                    segment_base == seg_base,
                    "read at {offset}: Corrupted in segment {segment_base}, damage is in {seg_base}"
                );
                // A read scans from the sparse index entry before `offset` and verifies every
                // batch on the way, so offsets after the damaged batch (up to the next index
                // entry) are refused too: less available, never wrong.
                check!(
                    offset >= bad_base,
                    "read at {offset}: Corrupted, but the damaged batch is [{bad_base}, {bad_next})"
                );
                check!(
                    segment_next.is_none_or(|n| offset < n),
                    "read at {offset}: Corrupted, but it is past the damaged segment"
                );
                if (bad_base..bad_next).contains(&offset) {
                    check!(
                        position <= byte_pos && byte_pos < end,
                        "read at {offset}: Corrupted [{position}, {end}) misses the damaged byte {byte_pos}"
                    );
                } else {
                    refused_after += 1;
                }
                offset += 1;
            }
            Err(e) => return Err(format!("read at {offset}: {e}")),
        }
    }
    bump("intact_offsets_refused_after_damage", refused_after);
    Ok(())
}

/// A bit flip in synced data of a sealed segment: reads of that batch report
/// Corrupted (never wrong data), before and after a restart.
async fn sealed_corruption_seed(seed: u64) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = new_sim(seed, &mut rng);
    let mut config = small_config(&mut rng);
    config.segment_bytes_max = 16 << 10;
    let ctx = Ctx::new(&sim);
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &[Some(0), Some(0)]).await?;
    let (stream, _) = engine.stream_or_create(STREAMS[0]).map_err(|e| e.to_string())?;
    let streams = vec![(0, stream.clone())];
    while stream.info(0).segments.len() < 4 {
        let mix = |_: &mut StdRng| Mix { ops: 20, append: 100, read: 0, roll: 0, wns_one_in: 0 };
        join_all(spawn_workers(&ctx, &engine, &streams, &mut rng, 2, mix)).await?;
        ctx.take_violations()?;
    }
    let info = stream.info(0);
    let sealed: Vec<_> = info.segments.iter().filter(|s| s.sealed).collect();
    let seg = sealed[rng.gen_range(0..sealed.len())];
    let path = segment_path(STREAMS[0], seg.base_offset);
    let bytes = sim.durable_bytes(&path).ok_or("sealed segment file missing")?;
    let parsed = parse_segment(&bytes, seg.size_bytes as usize);
    let (pos, len, base, next) = parsed[rng.gen_range(0..parsed.len())];
    let byte_pos = pos + rng.gen_range(0..len as u64);
    sim.corrupt_byte(&path, byte_pos, 1 << rng.gen_range(0..8)).map_err(|e| e.to_string())?;
    let damaged = (seg.base_offset, byte_pos, base, next);
    check_corrupted_reads(&stream, &ctx, damaged).await?;
    ctx.crashing.set(true);
    sim.crash_with(rng.gen(), random_crash_mode(&mut rng));
    drop(streams);
    drop(stream);
    bury(engine).await;
    ctx.crashing.set(false);
    let engine = Engine::open(sim.clone(), config.clone(), 0, 1).await.map_err(|e| e.to_string())?;
    let stream =
        engine.stream(STREAMS[0]).map_err(|e| format!("stream with a damaged sealed segment after restart: {e}"))?;
    check_corrupted_reads(&stream, &ctx, damaged).await?;
    engine.close().await;
    Ok(())
}

#[test]
fn corrupted_byte_in_sealed_segment_reads_as_corrupted() {
    run_seeds("corrupted_byte_in_sealed_segment_reads_as_corrupted", 30, sealed_corruption_seed);
}

/// A bit flip in synced data of the open segment followed by `after_bytes`
/// of acknowledged batches (a recovery point written after the first
/// `tick_after` of them, if set); on reopen the stream must be refused as
/// corrupted, and its file left alone — never truncated to the damage.
async fn open_segment_corruption(
    seed: u64,
    config: LogConfig,
    body_bytes: usize,
    after_bytes: u64,
    tick_after: Option<u64>,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = new_sim(seed, &mut rng);
    let ctx = Ctx::new(&sim);
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &[Some(0), Some(0)]).await?;
    let (stream, _) = engine.stream_or_create(STREAMS[0]).map_err(|e| e.to_string())?;
    let (id, body, count) = ctx.model.borrow_mut().make_batch(0, &mut rng, BatchSize::Small);
    let first = stream.append(&body, count, AckLevel::Durable).await.map_err(|e| e.to_string())?;
    ctx.model.borrow_mut().ack(0, id, first, true)?;
    let mut written = 0u64;
    let mut ticked = false;
    while written < after_bytes {
        if tick_after.is_some_and(|t| written >= t) && !ticked {
            engine.tick().await;
            ticked = true;
        }
        let (id, body, count) = ctx.model.borrow_mut().make_batch(0, &mut rng, BatchSize::Huge(body_bytes));
        let base = stream.append(&body, count, AckLevel::Durable).await.map_err(|e| e.to_string())?;
        ctx.model.borrow_mut().ack(0, id, base, true)?;
        written += (body.len() + BATCH_HEADER_BYTES) as u64;
    }
    let info = stream.info(0);
    check!(info.segments.len() == 1, "the test needs one open segment, got {}", info.segments.len());
    let path = segment_path(STREAMS[0], 0);
    let durable_len = sim.durable_bytes(&path).ok_or("segment missing")?.len();
    // Damage the body of the first batch (synced long ago).
    let byte_pos = (SEGMENT_HEADER_BYTES + BATCH_HEADER_BYTES + rng.gen_range(0..body.len().min(64))) as u64;
    sim.corrupt_byte(&path, byte_pos, 0x10).map_err(|e| e.to_string())?;
    ctx.crashing.set(true);
    sim.crash_with(rng.gen(), CrashMode::LoseUnsynced);
    drop(stream);
    bury(engine).await;
    let engine = Engine::open(sim.clone(), config.clone(), 0, 1).await.map_err(|e| e.to_string())?;
    match engine.stream(STREAMS[0]) {
        Err(EngineError::Corrupted { .. }) => {
            let now = sim.durable_bytes(&path).ok_or("segment removed")?.len();
            check!(now == durable_len, "segment of an unrecoverable stream shrank from {durable_len} to {now}");
        }
        Ok(stream) => {
            let hw = stream.high_watermark();
            let acked = ctx
                .model
                .borrow()
                .sent
                .values()
                .filter(|s| s.durable_ack)
                .map(|s| s.offset.unwrap_or(0) + u64::from(s.count))
                .max()
                .unwrap_or(0);
            return Err(format!(
                "corrupted synced byte {byte_pos} of the open segment, {written} acknowledged bytes after it: \
                 recovery accepted the stream with high watermark {hw}, {acked} offsets were acknowledged \
                 (flush window {} bytes)",
                config.flush_window_bytes()
            ));
        }
        Err(e) => return Err(format!("unexpected error: {e}")),
    }
    engine.close().await;
    Ok(())
}

/// One open segment of 1 MiB, flush window ~28 KiB (small `unflushed_bytes_max`
/// and `batch_bytes_max`). Before `batch_bytes_max` existed the window included
/// BATCH_BODY_BYTES_MAX (64 MiB) and this case needed > 64 MiB of data.
fn open_segment_config() -> LogConfig {
    let mut config = LogConfig::new(DATA_DIR);
    config.segment_bytes_max = 1 << 20;
    config.write_buffer_bytes = 8 << 10;
    config.unflushed_bytes_max = 8 << 10;
    config.batch_bytes_max = 16 << 10;
    config.index_interval_bytes = 1 << 10;
    config
}

#[test]
fn corrupted_byte_in_open_segment_beyond_flush_window_is_reported() {
    run_seeds("corrupted_byte_in_open_segment_beyond_flush_window_is_reported", 10, |seed| async move {
        let config = open_segment_config();
        let after = config.flush_window_bytes() + (8 << 10);
        open_segment_corruption(seed, config, 4000, after, None).await
    });
}

/// Within the flush window of the end, but below the durable length a
/// recovery point (written by `Engine::tick`) recorded.
#[test]
fn corrupted_byte_in_open_segment_below_recovery_point_is_reported() {
    run_seeds("corrupted_byte_in_open_segment_below_recovery_point_is_reported", 10, |seed| async move {
        let config = open_segment_config();
        let window = config.flush_window_bytes();
        open_segment_corruption(seed, config, 2000, window / 2, Some(window / 4)).await
    });
}

/// Within the flush window of the end and past the last recovery point:
/// indistinguishable from a torn tail by design, so recovery truncates
/// acknowledged batches. Kept to document the exposure.
#[test]
#[ignore = "engine bug (design limit): synced data damaged within flush_window_bytes of the open segment's end, past its last recovery point, is truncated as a torn tail"]
fn regression_corrupted_byte_in_open_segment_within_flush_window_truncates_acked_data() {
    run_seeds(
        "regression_corrupted_byte_in_open_segment_within_flush_window_truncates_acked_data",
        5,
        |seed| async move {
            let config = open_segment_config();
            let window = config.flush_window_bytes();
            open_segment_corruption(seed, config, 2000, window / 2, None).await
        },
    );
}

/// Device faults (a write landing bit-flipped or at the wrong place): acknowledged
/// data may be lost, but no read ever returns wrong data, and recovery either
/// refuses the stream as corrupted or yields a valid prefix.
async fn device_fault_seed(seed: u64) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = new_sim(seed, &mut rng);
    let config = small_config(&mut rng);
    let ctx = Ctx::new(&sim);
    let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &[Some(0), Some(0)]).await?;
    let streams = open_streams(&engine)?;
    let n = rng.gen_range(1..=30);
    if rng.gen_bool(0.5) {
        sim.corrupt_write(n);
    } else {
        sim.misdirect_write(n);
    }
    ctx.tolerate.set(Tolerate::Corruption);
    join_all(spawn_workers(&ctx, &engine, &streams, &mut rng, 3, default_mix)).await?;
    ctx.take_violations()?;
    ctx.crashing.set(true);
    sim.crash_with(rng.gen(), random_crash_mode(&mut rng));
    drop(streams);
    bury(engine).await;
    ctx.crashing.set(false);
    let engine = Engine::open(sim.clone(), config.clone(), 0, 1).await.map_err(|e| e.to_string())?;
    for (s, name) in STREAMS.iter().enumerate() {
        let stream = match engine.stream(name) {
            Ok(st) => st,
            Err(EngineError::Corrupted { .. }) | Err(EngineError::UnknownStream(_)) => continue,
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let hw = stream.high_watermark();
        let mut offset = 0;
        while offset < hw {
            let max = rng.gen_range(1..20_000);
            match within(Duration::from_secs(10), || format!("read {name} at {offset}"), stream.read(offset, max))
                .await?
            {
                Ok(out) => offset = verify_read(&mut ctx.model.borrow_mut(), s, &out.batches, offset)?,
                Err(EngineError::Corrupted { .. }) => offset += 1,
                Err(e) => return Err(format!("read {name} at {offset}: {e}")),
            }
        }
    }
    engine.close().await;
    Ok(())
}

#[test]
fn misdirected_or_corrupted_writes_never_return_wrong_data() {
    run_seeds("misdirected_or_corrupted_writes_never_return_wrong_data", 60, device_fault_seed);
}

// ------------------------------------------------------------- directories

/// Without pre-created directories: the engine creates `<data_dir>/streams`
/// itself, and it must make that entry durable before relying on it.
#[test]
fn regression_streams_dir_creation_is_not_fsynced() {
    run_seeds("regression_streams_dir_creation_is_not_fsynced", 5, |seed| async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let sim = SimStorage::new(seed);
        sim.mkdir_durable(Path::new(DATA_DIR));
        register_sim(&sim);
        let config = small_config(&mut rng);
        let ctx = Ctx::new(&sim);
        let engine = Engine::open(sim.clone(), config.clone(), 0, 1).await.map_err(|e| e.to_string())?;
        let streams = open_streams(&engine)?;
        let mix = |_: &mut StdRng| Mix { ops: 10, append: 100, read: 0, roll: 0, wns_one_in: 0 };
        join_all(spawn_workers(&ctx, &engine, &streams, &mut rng, 2, mix)).await?;
        ctx.take_violations()?;
        let exact = hws(&streams);
        ctx.crashing.set(true);
        sim.crash_with(rng.gen(), CrashMode::LoseUnsynced);
        drop(streams);
        bury(engine).await;
        let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &exact).await?;
        engine.close().await;
        Ok(())
    });
}

// ------------------------------------------------------------------ reads

/// `Stream::read` used to cap each storage read at `2 * max(read_chunk_bytes,
/// max_bytes)`; a batch longer than that never fit, and the reader re-read
/// the same position forever (found by seed 4 of the random test).
#[test]
fn regression_read_of_batch_longer_than_twice_read_chunk_hangs() {
    run_seeds("regression_read_of_batch_longer_than_twice_read_chunk_hangs", 1, |seed| async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let sim = new_sim(seed, &mut rng);
        let mut config = small_config(&mut rng);
        config.read_chunk_bytes = 4 << 10;
        let ctx = Ctx::new(&sim);
        let (engine, _) = reopen(&sim, &config, &ctx, &mut rng, &[Some(0), Some(0)]).await?;
        let (stream, _) = engine.stream_or_create(STREAMS[0]).map_err(|e| e.to_string())?;
        let (id, body, count) = ctx.model.borrow_mut().make_batch(0, &mut rng, BatchSize::Huge(20 << 10));
        let base = stream.append(&body, count, AckLevel::Durable).await.map_err(|e| e.to_string())?;
        ctx.model.borrow_mut().ack(0, id, base, true)?;
        let read = within(
            Duration::from_secs(5),
            || "read of a 20 KiB batch with read_chunk_bytes 4 KiB".into(),
            stream.read(0, 100),
        )
        .await?
        .map_err(|e| e.to_string())?;
        verify_read(&mut ctx.model.borrow_mut(), 0, &read.batches, 0)?;
        engine.close().await;
        Ok(())
    });
}

// ---------------------------------------------------------- torn creation

/// A new segment's first flush (header and batches in one write) is torn by
/// a crash: the sector holding the segment header may be lost while later
/// sectors with whole batches land. Nothing in it was synced, so nothing was
/// acknowledged durable: recovery must keep the stream (it used to refuse it
/// as corrupted: "the segment holds data, so this is not an interrupted
/// creation"; found by seeds 297 and 2389 of the random test). The engine now
/// writes and syncs the header before any batch, so the header survives.
#[test]
fn regression_torn_first_write_of_a_segment_loses_its_header_sector() {
    run_seeds("regression_torn_first_write_of_a_segment_loses_its_header_sector", 20, |seed| async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let sim = new_sim(seed, &mut rng);
        sim.set_alignment(512);
        let mut config = small_config(&mut rng);
        // Both batches must fit the new segment and the admission limit (else
        // they would wait for a held sync).
        config.segment_bytes_max = 1 << 20;
        config.unflushed_bytes_max = 1 << 20;
        let ctx = Ctx::new(&sim);
        let engine = Engine::open(sim.clone(), config.clone(), 0, 1).await.map_err(|e| e.to_string())?;
        let (stream, _) = engine.stream_or_create(STREAMS[0]).map_err(|e| e.to_string())?;
        for _ in 0..rng.gen_range(1..10) {
            let (id, body, count) = ctx.model.borrow_mut().make_batch(0, &mut rng, BatchSize::Small);
            let base = stream.append(&body, count, AckLevel::Durable).await.map_err(|e| e.to_string())?;
            ctx.model.borrow_mut().ack(0, id, base, true)?;
        }
        let hw = stream.high_watermark();
        stream.roll_now();
        // Let the rolled segment seal (it syncs), then hold data syncs: the
        // batches of the new segment are written but never synced.
        while !stream.info(0).segments.iter().filter(|s| s.base_offset < hw).all(|s| s.sealed) {
            yield_now().await;
        }
        sim.hold_syncs(true);
        // Two batches in that one write: the first ends inside sector 0, the second starts after it.
        let done = Rc::new(Cell::new(0));
        let mut appends = Vec::new();
        for size in [BatchSize::Huge(450), BatchSize::Big] {
            let (id, body, count) = ctx.model.borrow_mut().make_batch(0, &mut rng, size);
            let stream = stream.clone();
            let done = done.clone();
            appends.push((
                id,
                glommio::spawn_local(async move {
                    let r = stream.append(&body, count, AckLevel::WrittenNotSynced).await;
                    done.set(done.get() + 1);
                    r
                }),
            ));
        }
        // Syncs before any batch reached the new segment (creating it, syncing its
        // header first) go through; the first one after that is held.
        let path = segment_path(STREAMS[0], hw);
        let no_batch_yet = || {
            sim.current_bytes(&path)
                .is_none_or(|b| b.get(SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + 4) != Some(b"DDCB".as_slice()))
        };
        for _ in 0..100_000 {
            if done.get() == appends.len() {
                break;
            }
            if sim.syncs_waiting() > 0 && no_batch_yet() {
                sim.pass_held_syncs(1);
            }
            yield_now().await;
        }
        let mut acked = 0;
        for (id, task) in appends {
            match within(Duration::from_secs(10), || "append with held syncs".into(), task).await? {
                Ok(base) => {
                    ctx.model.borrow_mut().ack(0, id, base, false)?;
                    acked += 1;
                }
                Err(e) => return Err(format!("append: {e}")),
            }
        }
        check!(acked == 2 && stream.high_watermark() == hw, "the new batches must be written, not durable");
        ctx.crashing.set(true);
        sim.crash_with(rng.gen(), CrashMode::Random);
        drop(stream);
        bury(engine).await;
        ctx.crashing.set(false);
        let (engine, hws) = reopen(&sim, &config, &ctx, &mut rng, &[None, None]).await?;
        check!(hws[0] >= hw, "recovered {} of {hw}", hws[0]);
        engine.close().await;
        Ok(())
    });
}

// ------------------------------------------------------- misplaced batches

/// A misdirected write leaves a valid, checksummed batch of later offsets
/// where the sparse index says offset 0's batch starts. The reader used not
/// to check the first batch it found against the index entry (or the
/// requested offset), so a read at offset 0 returned the later batch: a
/// consumer would skip the offsets in between. Found by seed 1162 of
/// `misdirected_or_corrupted_writes_never_return_wrong_data` (DDC_SIM_SEEDS=1500).
#[test]
fn regression_misplaced_batch_is_returned_for_another_offset() {
    run_seeds("regression_misplaced_batch_is_returned_for_another_offset", 5, |seed| async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let sim = new_sim(seed, &mut rng);
        let mut config = small_config(&mut rng);
        config.segment_bytes_max = 1 << 20;
        let ctx = Ctx::new(&sim);
        let engine = Engine::open(sim.clone(), config.clone(), 0, 1).await.map_err(|e| e.to_string())?;
        let (stream, _) = engine.stream_or_create(STREAMS[0]).map_err(|e| e.to_string())?;
        for i in 0..20 {
            let size = if i == 0 { BatchSize::Huge(8000) } else { BatchSize::Small };
            let (id, body, count) = ctx.model.borrow_mut().make_batch(0, &mut rng, size);
            let base = stream.append(&body, count, AckLevel::Durable).await.map_err(|e| e.to_string())?;
            ctx.model.borrow_mut().ack(0, id, base, true)?;
        }
        let path = segment_path(STREAMS[0], 0);
        let bytes = sim.durable_bytes(&path).ok_or("segment missing")?;
        let info = stream.info(0);
        let batches = parse_segment(&bytes, info.segments[0].size_bytes as usize);
        // A later batch no longer than the first lands on top of the first.
        let (first_pos, first_len, _, _) = batches[0];
        let &(pos, len, base, next) = batches[1..].iter().find(|b| b.1 <= first_len).ok_or("no batch short enough")?;
        sim.overwrite(&path, first_pos, &bytes[pos as usize..pos as usize + len]).map_err(|e| e.to_string())?;
        match stream.read(0, 1).await {
            Err(EngineError::Corrupted { .. }) => {}
            Ok(out) => {
                verify_read(&mut ctx.model.borrow_mut(), 0, &out.batches, 0)
                    .map_err(|e| format!("{e} (the batch of [{base}, {next}) was copied over offset 0's)"))?;
            }
            Err(e) => return Err(e.to_string()),
        }
        engine.close().await;
        Ok(())
    });
}
