//! One core's open client connections: the connection limit, the core's
//! response-memory budget, and the eviction of clients that stop reading.
//!
//! Memory a connection can pin is bounded three ways:
//!
//! - request payloads: the core's `server.core_payload_bytes_max` (conn.rs);
//! - responses waiting to be written: each connection's own 80 MiB, and *all*
//!   connections of the core together `server.core_response_bytes_max`;
//! - the number of connections: `server.connections_max` per node, split
//!   evenly over the cores. A connection past it gets `Overloaded` and is closed.
//!
//! A client that sends requests and never reads the answers ("slow reader")
//! holds response memory until its answers are written. Its writer is
//! *stalled* while a write to its socket has made no progress. Stalled
//! connections are shut down after `server.write_stall_timeout_ms`, and sooner
//! — after [`PRESSURE_STALL`] — when another connection is waiting for
//! response memory, so slow readers cannot starve clients that do read.
//!
//! Everything here is core-local (`Rc`, `Cell`): no locks, nothing shared
//! between cores.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddc_engine::signal::Signal;
use glommio::sync::{Semaphore, StaticPermit};

use crate::admin::CoreCounters;

/// Under memory pressure, a writer stalled this long is evicted.
pub const PRESSURE_STALL: Duration = Duration::from_secs(1);

/// A writer stuck this long keeps its connection's requests out of the queue
/// for response memory (checked every housekeeping tick).
pub const BLOCKED_AFTER: Duration = Duration::from_millis(200);

/// One open connection as the registry sees it.
pub struct ConnHandle {
    fd: RawFd,
    /// When the write in progress started; None while the writer is idle.
    writing_since: Cell<Option<Instant>>,
    evicted: Cell<bool>,
    /// Nothing more will be written to this connection (evicted, or its writer
    /// failed): its requests waiting for response memory give up their place.
    finished: Cell<bool>,
    /// Its writer has been stuck for [`BLOCKED_AFTER`]: its requests stay out of the
    /// queue for response memory until the writer moves again.
    blocked: Cell<bool>,
    /// Notified when `finished` or `blocked` changes.
    signal: Signal,
}

impl ConnHandle {
    /// The writer starts writing (call before each socket write).
    pub fn write_started(&self) {
        self.writing_since.set(Some(Instant::now()));
    }

    /// The write finished (the socket took the bytes).
    pub fn write_done(&self) {
        self.writing_since.set(None);
        if self.blocked.replace(false) {
            self.signal.notify();
        }
    }

    /// True once the registry shut this connection down.
    pub fn was_evicted(&self) -> bool {
        self.evicted.get()
    }

    /// Nothing more will be written to this connection.
    pub fn finish(&self) {
        self.finished.set(true);
        self.signal.notify();
    }

    fn stalled_for(&self, now: Instant) -> Duration {
        self.writing_since.get().map(|t| now.saturating_duration_since(t)).unwrap_or_default()
    }
}

/// Keeps a connection in its core's registry; dropping it removes the connection.
/// Drop it before the socket closes (the registry shuts sockets down by fd).
pub struct Registration {
    id: u64,
    pub handle: Rc<ConnHandle>,
    registry: Rc<Connections>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.open.borrow_mut().remove(&self.id);
    }
}

/// One core's connections.
pub struct Connections {
    max: usize,
    next_id: Cell<u64>,
    open: RefCell<HashMap<u64, Rc<ConnHandle>>>,
    /// Response bytes all of this core's connections may have waiting.
    response_budget: Rc<Semaphore>,
    response_bytes: u64,
    /// Answers waiting for response memory right now.
    waiting: Cell<usize>,
    /// Where refusals and evictions are counted (read by the admin endpoint).
    counters: Arc<CoreCounters>,
}

impl Connections {
    /// `max`: this core's share of `server.connections_max`; `response_bytes`: `server.core_response_bytes_max`.
    pub fn new(max: usize, response_bytes: u64, counters: Arc<CoreCounters>) -> Rc<Connections> {
        Rc::new(Connections {
            max,
            next_id: Cell::new(0),
            open: RefCell::default(),
            response_budget: Rc::new(Semaphore::new(response_bytes)),
            response_bytes,
            waiting: Cell::new(0),
            counters,
        })
    }

    /// Admit a new connection on socket `fd`, or refuse it (Err: this core's limit).
    pub fn register(self: &Rc<Self>, fd: RawFd) -> Result<Registration, usize> {
        if self.open.borrow().len() >= self.max {
            self.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            return Err(self.max);
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let handle = Rc::new(ConnHandle {
            fd,
            writing_since: Cell::new(None),
            evicted: Cell::new(false),
            finished: Cell::new(false),
            blocked: Cell::new(false),
            signal: Signal::default(),
        });
        self.open.borrow_mut().insert(id, handle.clone());
        Ok(Registration { id, handle, registry: self.clone() })
    }

    /// Shut down every connection whose writer has been stalled for at least
    /// `stalled_for`. Its pending reads and writes fail, the connection task
    /// ends, and what it held (response memory, in-flight slots) is released.
    pub fn evict_stalled(&self, stalled_for: Duration) -> usize {
        let now = Instant::now();
        let mut n = 0;
        for conn in self.open.borrow().values() {
            if !conn.evicted.get() && conn.writing_since.get().is_some() && conn.stalled_for(now) >= stalled_for {
                conn.evicted.set(true);
                conn.finish();
                // SAFETY: `fd` is the socket of a connection still in the registry, and a
                // connection leaves the registry before its socket is closed, so the fd
                // still names that socket. shutdown(2) neither closes nor frees the fd.
                unsafe { libc::shutdown(conn.fd, libc::SHUT_RDWR) };
                n += 1;
            }
        }
        if n > 0 {
            self.counters.connections_evicted.fetch_add(n as u64, Ordering::Relaxed);
            tracing::warn!(
                connections = n,
                stalled_s = stalled_for.as_secs_f64(),
                "closed connections that stopped reading their answers"
            );
        }
        n
    }

    /// Reserve `bytes` of the core's response memory for an answer on `conn`
    /// (a reservation larger than the whole budget takes the whole budget).
    ///
    /// Fairness: waiters queue in order, but a connection whose writer is
    /// blocked (its client is not reading) keeps its requests out of the queue
    /// until the writer moves, so clients that read are not stuck behind
    /// clients that do not. While anyone waits, the housekeeping tick evicts
    /// writers stalled for [`PRESSURE_STALL`] and releases their memory; the
    /// waiters of an evicted or failed connection leave for good (None).
    pub async fn reserve_response(&self, bytes: u64, conn: Option<&ConnHandle>) -> Option<StaticPermit> {
        let bytes = bytes.min(self.response_bytes);
        let Some(conn) = conn else {
            return self.response_budget.clone().acquire_static_permit(bytes).await.ok();
        };
        loop {
            if !conn.blocked.get() && !conn.finished.get() {
                if let Ok(p) = self.response_budget.try_acquire_static_permit(bytes) {
                    return Some(p);
                }
            }
            self.waiting.set(self.waiting.get() + 1);
            let _waiting = WaitingGuard(&self.waiting);
            conn.signal.wait_for(|| (conn.finished.get() || !conn.blocked.get()).then_some(())).await;
            if conn.finished.get() {
                return None;
            }
            let acquire = async { self.response_budget.clone().acquire_static_permit(bytes).await.ok() };
            let leave = async {
                conn.signal.wait_for(|| (conn.finished.get() || conn.blocked.get()).then_some(())).await;
                None
            };
            if let Some(p) = futures_lite::future::or(acquire, leave).await {
                // Granted while the connection finished: hand the memory back.
                return (!conn.finished.get()).then_some(p);
            }
            if conn.finished.get() {
                return None;
            }
        }
    }

    /// Called every housekeeping tick: mark writers stuck for [`BLOCKED_AFTER`]
    /// as blocked, and if answers wait for response memory, evict the writers
    /// stalled for [`PRESSURE_STALL`].
    pub fn relieve_pressure(&self) {
        let now = Instant::now();
        for conn in self.open.borrow().values() {
            if !conn.blocked.get() && conn.stalled_for(now) >= BLOCKED_AFTER {
                conn.blocked.set(true);
                conn.signal.notify();
            }
        }
        if self.waiting.get() > 0 {
            self.evict_stalled(PRESSURE_STALL);
        }
    }
}

/// Counts a waiter for response memory while it waits.
struct WaitingGuard<'a>(&'a Cell<usize>);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::get;

    #[test]
    fn limit_counts_and_deregistration() {
        glommio::LocalExecutor::default().run(async {
            let conns = Connections::new(2, 1 << 20, Arc::default());
            let a = conns.register(-1).unwrap();
            let b = conns.register(-1).unwrap();
            assert_eq!(conns.register(-1).err(), Some(2));
            drop(a);
            let _c = conns.register(-1).unwrap();
            drop(b);
            let counters = &conns.counters;
            assert_eq!(
                (conns.open.borrow().len(), get(&counters.connections_refused), get(&counters.connections_evicted)),
                (1, 1, 0)
            );
        });
    }

    #[test]
    fn only_writers_stalled_long_enough_are_evicted() {
        glommio::LocalExecutor::default().run(async {
            // Real sockets, so shutdown(2) has something to act on.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            let conns = Connections::new(8, 1 << 20, Arc::default());
            use std::os::fd::AsRawFd;
            let idle = conns.register(client.as_raw_fd()).unwrap();
            let stalled = conns.register(server.as_raw_fd()).unwrap();
            stalled.handle.writing_since.set(Some(Instant::now() - Duration::from_secs(5)));
            assert_eq!(conns.evict_stalled(Duration::from_secs(10)), 0, "stalled 5 s is under the 10 s limit");
            assert_eq!(conns.evict_stalled(Duration::from_secs(2)), 1);
            assert!(stalled.handle.was_evicted() && !idle.handle.was_evicted());
            assert_eq!(conns.evict_stalled(Duration::from_secs(2)), 0, "evicted once");
            // The evicted socket is shut down: the peer reads EOF.
            let mut buf = [0u8; 1];
            assert_eq!(std::io::Read::read(&mut &client, &mut buf).unwrap(), 0);
            assert_eq!(get(&conns.counters.connections_evicted), 1);
        });
    }

    #[test]
    fn waiters_of_a_finished_connection_leave_the_queue() {
        glommio::LocalExecutor::default().run(async {
            let conns = Connections::new(8, 100, Arc::default());
            let slow = conns.register(-1).unwrap();
            let good = conns.register(-1).unwrap();
            let held = conns.reserve_response(100, Some(&slow.handle)).await.unwrap();
            let (c1, h1) = (conns.clone(), slow.handle.clone());
            let slow_waiter = glommio::spawn_local(async move { c1.reserve_response(60, Some(&h1)).await.is_some() });
            glommio::timer::sleep(Duration::from_millis(10)).await;
            let (c2, h2) = (conns.clone(), good.handle.clone());
            let good_waiter = glommio::spawn_local(async move { c2.reserve_response(60, Some(&h2)).await.is_some() });
            glommio::timer::sleep(Duration::from_millis(10)).await;
            // The slow connection is finished: its waiter gives up its place at the head of the
            // queue, and the memory it held goes to the good connection's waiter.
            slow.handle.finish();
            drop(held);
            assert!(!slow_waiter.await);
            assert!(good_waiter.await);
        });
    }

    #[test]
    fn reserve_waits_until_budget_is_returned() {
        glommio::LocalExecutor::default().run(async {
            let conns = Connections::new(8, 100, Arc::default());
            let held = conns.reserve_response(80, None).await.unwrap();
            let conns2 = conns.clone();
            let waiter = glommio::spawn_local(async move { conns2.reserve_response(50, None).await.is_some() });
            glommio::timer::sleep(Duration::from_millis(50)).await;
            drop(held);
            assert!(waiter.await);
        });
    }
}
