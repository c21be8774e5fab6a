//! Starting and stopping the node: one glommio executor per core, each with
//! its engine, its listener on the shared port and its end of the mesh.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use ddc_engine::storage::dma::DmaStorage;
use ddc_engine::Engine;

use crate::admin::CorePhase;
use crate::config::NodeConfig;
use crate::conn::serve_connection;
use crate::dispatch::CoreState;
use crate::router::{build_mesh, serve_incoming, Router};

/// How many executors to run for `configured` (0 = one per CPU).
pub fn core_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

/// Raise the soft limit of open files to the hard limit (each connection is a
/// file descriptor), and warn when even that cannot hold `server.connections_max`
/// connections next to the node's own files.
fn raise_open_files_limit(connections_max: usize) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write and read the struct passed; no other memory.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    let needed = connections_max as u64 + 1024;
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_files_limit = limit.rlim_cur,
            connections_max,
            "the open files limit cannot hold server.connections_max connections plus 1024 for the node's \
             own files; raise LimitNOFILE / ulimit -n or lower server.connections_max"
        );
    }
}

/// Reports a core's start to `run`: Ok once it serves, Err if it failed, and
/// (from `Drop`) Err if it went away, panicking included, before either.
struct StartReport {
    core: usize,
    tx: Option<std::sync::mpsc::Sender<(usize, Result<(), String>)>>,
}

impl StartReport {
    fn send(&mut self, result: Result<(), String>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((self.core, result));
        }
    }
}

impl Drop for StartReport {
    fn drop(&mut self) {
        self.send(Err("stopped before it was ready".into()));
    }
}

/// Run the node until `stop` becomes true; then flush, close and return.
pub fn run(config: NodeConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    config.validate()?;
    raise_open_files_limit(config.server.connections_max);
    let cores = core_count(config.cores);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data directory {}", config.data_dir.display()))?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let key_file = config.identity_file();
    if config.identity_is_generated() && !key_file.exists() {
        let key = ddc_auth::account::Keypair::generate();
        key.write_new(&key_file).with_context(|| format!("create the node key {}", key_file.display()))?;
        tracing::info!(account = %key.account(), path = %key_file.display(), "created a node key");
    }
    // Every core binds with SO_REUSEPORT, which would let a second node of the
    // same user share the port silently; refuse to start next to a listener.
    // A node that was just killed can keep its listener for a moment while
    // the kernel tears down its io_uring (pending accepts hold the socket).
    let mut waited = Duration::ZERO;
    while let Some(line) = listener_on(config.listen.port()) {
        if waited >= Duration::from_secs(5) {
            anyhow::bail!("listen on {}: address in use by another listening socket ({line})", config.listen);
        }
        std::thread::sleep(Duration::from_millis(100));
        waited += Duration::from_millis(100);
    }
    let cluster = crate::cluster::ClusterSetup::load(&config)?;
    // Anchoring: the era store (read by core 0) and the thread that submits eras.
    let anchoring = match &config.anchor.chain_url {
        Some(_) => Some(Arc::new(
            crate::anchoring::Anchoring::open(&config.data_dir, config.anchor.clone()).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    // The admin endpoint comes up before the cores, so /ready can say they are starting.
    let view = Arc::new(crate::admin::NodeView::new(&config, cores, cluster.as_ref(), anchoring.clone(), stop.clone()));
    let admin = crate::admin::start(&config, &view)?;
    let submitter = match &anchoring {
        Some(a) => {
            let key = ddc_auth::account::Keypair::read(&config.identity_file()).context("node key for anchoring")?;
            Some(crate::anchoring::spawn_submitter(a.clone(), key, stop.clone()).context("start the anchor thread")?)
        }
        None => None,
    };
    let mesh = build_mesh(cores, 1024);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for (core, ends) in mesh.into_iter().enumerate() {
        let config = config.clone();
        let cluster = cluster.clone();
        let stop = stop.clone();
        let anchoring = if core == 0 { anchoring.clone() } else { None };
        let report = StartReport { core, tx: Some(ready_tx.clone()) };
        let view = view.clone();
        let placement = if cores <= cpus { Placement::Fixed(core) } else { Placement::Unbound };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("core-{core}"))
            .io_memory(config.server.io_memory_bytes)
            .spawn(move || async move {
                let started = Started { core, cores, view: view.clone() };
                let result = serve_core(started, config, cluster, anchoring, ends, stop.clone(), report).await;
                let phase = if result.is_ok() { CorePhase::Stopped } else { CorePhase::Failed };
                view.cores[core].set_state(phase);
                if let Err(e) = &result {
                    stop.store(true, Ordering::SeqCst);
                    tracing::error!(core, error = %format!("{e:#}"), "core failed");
                }
                result
            })
            .map_err(|e| anyhow::anyhow!("start executor for core {core}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut started = 0;
    for (core, result) in ready_rx.iter().take(cores) {
        match result {
            Ok(()) => started += 1,
            Err(e) => {
                tracing::error!(core, error = %e, "core did not start; stopping the node");
                stop.store(true, Ordering::SeqCst);
            }
        }
    }
    if started == cores {
        tracing::info!(listen = %config.listen, cores, data_dir = %config.data_dir.display(), "shard-server ready");
    }
    let mut first_error = None;
    // The cores stop on `stop`; so does the anchor thread.
    let _stop_submitter = StopOnDrop(stop.clone());
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(anyhow::anyhow!("executor panicked: {e:?}"))),
        }
    }
    stop.store(true, Ordering::SeqCst);
    if let Some(s) = submitter {
        let _ = s.join();
    }
    // Last: the endpoint answers /ready with 503 while the cores flush.
    if let Some(admin) = admin {
        admin.shutdown();
    }
    match first_error {
        Some(e) => Err(e),
        None if started < cores => Err(anyhow::anyhow!("the node did not start")),
        None => {
            tracing::info!("shard-server stopped cleanly");
            Ok(())
        }
    }
}

/// A listening TCP socket on `port` (any address), from /proc/net/tcp{,6}.
fn listener_on(port: u16) -> Option<String> {
    const LISTEN: &str = "0A";
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { continue };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                return Some(format!("{table}: {local}"));
            }
        }
    }
    None
}

/// Hold an exclusive lock on the data directory for the process's lifetime:
/// two nodes writing the same segments would corrupt them.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!("data directory {} is in use by another shard-server ({e})", dir.display());
    }
    Ok(file)
}

/// Sets the stop flag when dropped (an early return stops the anchor thread too).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Which core this is, of how many, and the admin endpoint's view of it.
struct Started {
    core: usize,
    cores: usize,
    view: Arc<crate::admin::NodeView>,
}

async fn serve_core(
    Started { core, cores, view }: Started,
    config: NodeConfig,
    cluster: Option<crate::cluster::ClusterSetup>,
    anchoring: Option<Arc<crate::anchoring::Anchoring>>,
    ends: crate::router::MeshEnds,
    stop: Arc<AtomicBool>,
    mut report: StartReport,
) -> anyhow::Result<()> {
    // Connect the mesh first: every core reaches this point, whatever fails later.
    let (router, incoming) = Router::connect(core, ends).await;
    let engine = match Engine::open(DmaStorage::new(), config.log_config(), core, cores).await {
        Ok(e) => e,
        Err(e) => {
            let e = anyhow::anyhow!("core {core}: open data directory: {e}");
            report.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    view.cores[core].set_engine(engine.stats());
    let identity = match ddc_auth::account::Keypair::read(&config.identity_file()) {
        Ok(k) => Some(Rc::new(k)),
        Err(e) => {
            engine.close().await;
            let e = anyhow::anyhow!("core {core}: node key: {e}");
            report.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    let cluster = match &cluster {
        Some(setup) => match crate::cluster::ClusterCore::open(setup, &config, core, cores, identity.clone()).await {
            Ok(c) => Some(Rc::new(c)),
            Err(e) => {
                engine.close().await;
                let e = anyhow::anyhow!("core {core}: open cluster state: {e:#}");
                report.send(Err(format!("{e:#}")));
                return Err(e);
            }
        },
        None => None,
    };
    let opened = crate::buckets::Buckets::open(config.auth.buckets_file.clone()).and_then(|buckets| {
        let usage = crate::usage::CoreUsage::open(&config.data_dir, core, cores, config.usage.journal_compact_bytes)?;
        Ok((buckets, usage))
    });
    let (buckets, usage) = match opened {
        Ok(o) => o,
        Err(e) => {
            engine.close().await;
            let e = anyhow::anyhow!("core {core}: {e}");
            report.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    let state = Rc::new(CoreState {
        engine: engine.clone(),
        frame_bytes_max: config.server.frame_bytes_max,
        fetch_wait_max_ms: config.server.fetch_wait_max_ms,
        frame_read_timeout: Duration::from_millis(config.server.frame_read_timeout_ms),
        payload_budget: Rc::new(glommio::sync::Semaphore::new(config.server.core_payload_bytes_max)),
        connections: crate::connections::Connections::new(
            config.server.connections_max.div_ceil(cores),
            config.server.core_response_bytes_max,
            view.cores[core].counters.clone(),
        ),
        cluster: cluster.clone(),
        identity: identity.clone(),
        auth_required: config.auth.required,
        buckets,
        usage: std::cell::RefCell::new(usage),
        anchoring: anchoring.clone(),
        counters: view.cores[core].counters.clone(),
    });
    serve_incoming(incoming, state.clone());
    let router = Rc::new(router);
    let listener = match TcpListener::bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            engine.close().await;
            let e = anyhow::anyhow!("core {core}: listen on {}: {e}", config.listen);
            report.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    report.send(Ok(()));
    let observer = crate::admin::snapshot::CoreObserver::new(core, view.clone());
    observer.serving(&state);
    let in_flight_max = config.server.in_flight_max;
    let accept = async {
        loop {
            match listener.accept().await {
                Ok(conn) => {
                    let (state, router) = (state.clone(), router.clone());
                    state.counters.connections_accepted.fetch_add(1, Ordering::Relaxed);
                    glommio::spawn_local(async move {
                        let counters = state.counters.clone();
                        serve_connection(conn, state, router, in_flight_max).await;
                        counters.connections_closed.fetch_add(1, Ordering::Relaxed);
                    })
                    .detach();
                }
                Err(e) => {
                    // EMFILE and friends: log, back off, keep serving existing connections.
                    tracing::warn!(core, error = %e, "accept failed");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    let housekeeping = async {
        let mut ticks = 0u64;
        let buckets_every = (config.auth.buckets_reload_ms / 100).max(1);
        let write_stall_timeout = Duration::from_millis(config.server.write_stall_timeout_ms);
        let usage_every = (config.usage.sync_interval_ms / 100).max(1);
        let mut next_era_end = anchoring.as_ref().map(|a| a.next_era_end(crate::access::now_ms()));
        while !stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            ticks += 1;
            observer.tick(&state);
            if ticks.is_multiple_of(10) {
                engine.tick().await;
            }
            state.connections.evict_stalled(write_stall_timeout);
            state.connections.relieve_pressure();
            if ticks.is_multiple_of(buckets_every) {
                state.buckets.reload_if_changed();
            }
            if ticks.is_multiple_of(usage_every) {
                sync_usage(&state).await;
            }
            if let (Some(a), Some(end)) = (&anchoring, next_era_end) {
                if crate::access::now_ms() >= end {
                    match crate::anchoring::build_era(&state, &router, a).await {
                        Ok(Some(era)) => tracing::info!(era, "era committed; anchoring"),
                        Ok(None) => tracing::debug!("era had nothing new; skipped"),
                        Err(e) => tracing::error!(error = %e, "era not built; trying again next era"),
                    }
                    next_era_end = Some(end.max(crate::access::now_ms()) + a.settings.era_ms);
                }
            }
            if let Some(cluster) = &cluster {
                let every = (cluster.settings.coding_interval_ms / 100).max(1);
                if ticks.is_multiple_of(every) {
                    crate::cluster::tick(&state, cluster).await;
                }
            }
        }
    };
    futures_lite::future::or(accept, housekeeping).await;
    drop(listener);
    tracing::info!(core, "stopping: flushing streams");
    if let Some(cluster) = &cluster {
        cluster.close();
    }
    engine.close().await;
    if let Err(e) = state.usage.borrow().sync() {
        tracing::error!(core, error = %e, "usage journal fdatasync at shutdown failed");
    }
    Ok(())
}

/// fdatasync the core's usage journal on the blocking pool (the reactor keeps serving).
async fn sync_usage(state: &CoreState) {
    let handle = match state.usage.borrow().sync_handle() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "usage journal: no descriptor to sync");
            return;
        }
    };
    if let Err(e) = glommio::executor().spawn_blocking(move || handle.sync_data()).await {
        // After a failed fdatasync the kernel may have dropped the dirty pages: stop accounting.
        let disk_full = e.raw_os_error() == Some(libc::ENOSPC);
        state.usage.borrow_mut().fail(format!("fdatasync: {e}"), disk_full);
    }
}
