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

use crate::config::NodeConfig;
use crate::conn::serve_connection;
use crate::dispatch::CoreState;
use crate::router::{build_mesh, Router};

/// How many executors to run for `configured` (0 = one per CPU).
pub fn core_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

/// Run the node until `stop` becomes true; then flush, close and return.
pub fn run(config: NodeConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    config.validate()?;
    let cores = core_count(config.cores);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data directory {}", config.data_dir.display()))?;
    // Fail early, with a clear message, if the port is taken.
    drop(std::net::TcpListener::bind(config.listen).with_context(|| format!("listen on {}", config.listen))?);
    let mesh = build_mesh(cores, 1024);
    let ready = Arc::new(std::sync::Barrier::new(cores + 1));
    let mut handles = Vec::new();
    for (core, ends) in mesh.into_iter().enumerate() {
        let config = config.clone();
        let stop = stop.clone();
        let ready = ready.clone();
        let placement = if cores <= cpus { Placement::Fixed(core) } else { Placement::Unbound };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("core-{core}"))
            .io_memory(config.server.io_memory_bytes)
            .spawn(move || async move {
                let result = serve_core(core, cores, config, ends, stop, &ready).await;
                if let Err(e) = &result {
                    tracing::error!(core, error = %format!("{e:#}"), "core failed");
                }
                result
            })
            .map_err(|e| anyhow::anyhow!("start executor for core {core}: {e}"))?;
        handles.push(handle);
    }
    ready.wait();
    tracing::info!(listen = %config.listen, cores, data_dir = %config.data_dir.display(), "shard-server ready");
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(anyhow::anyhow!("executor panicked: {e:?}"))),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            tracing::info!("shard-server stopped cleanly");
            Ok(())
        }
    }
}

async fn serve_core(
    core: usize,
    cores: usize,
    config: NodeConfig,
    ends: crate::router::MeshEnds,
    stop: Arc<AtomicBool>,
    ready: &std::sync::Barrier,
) -> anyhow::Result<()> {
    let engine = Engine::open(DmaStorage::new(), config.log_config(), core, cores).await;
    let engine = match engine {
        Ok(e) => e,
        Err(e) => {
            stop.store(true, Ordering::SeqCst);
            ready.wait();
            return Err(anyhow::anyhow!("core {core}: open data directory: {e}"));
        }
    };
    let state = Rc::new(CoreState {
        engine: engine.clone(),
        frame_bytes_max: config.server.frame_bytes_max,
        fetch_wait_max_ms: config.server.fetch_wait_max_ms,
        payload_budget: Rc::new(glommio::sync::Semaphore::new(config.server.core_payload_bytes_max)),
    });
    let router = Rc::new(Router::connect(core, ends, state.clone()).await);
    let listener = match TcpListener::bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            stop.store(true, Ordering::SeqCst);
            ready.wait();
            engine.close().await;
            return Err(anyhow::anyhow!("core {core}: listen on {}: {e}", config.listen));
        }
    };
    ready.wait();
    let in_flight_max = config.server.in_flight_max;
    let accept = async {
        loop {
            match listener.accept().await {
                Ok(conn) => {
                    glommio::spawn_local(serve_connection(conn, state.clone(), router.clone(), in_flight_max)).detach();
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
        while !stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            ticks += 1;
            if ticks % 10 == 0 {
                engine.tick().await;
            }
        }
    };
    futures_lite::future::or(accept, housekeeping).await;
    drop(listener);
    tracing::info!(core, "stopping: flushing streams");
    engine.close().await;
    Ok(())
}
