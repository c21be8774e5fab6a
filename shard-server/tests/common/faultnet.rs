//! FAULT INJECTION (test tool only, never used by the server): a TCP proxy
//! that sits on one network link between two real processes and can be told,
//! at any moment, to misbehave the way a network does.
//!
//! A [`Link`] listens on its own loopback port and forwards every connection
//! it accepts to one target address, byte for byte, in both directions. Its
//! [`Fault`] can be changed while connections are open:
//!
//! - [`Fault::Pass`]: forward everything at once (a healthy link);
//! - [`Fault::Drop`]: a partition. Connections are still accepted, and bytes
//!   are read and thrown away, in both directions; nothing is ever refused or
//!   reset, so the processes on either side only find out through their own
//!   timeouts. A TCP connection cannot skip bytes, so when the link heals
//!   ([`Fault::Pass`] again) every connection that lost bytes is reset: the
//!   same end as a real partition that outlasts TCP's retransmissions;
//! - [`Fault::Delay`]: a slow link. Every chunk is held for the given time
//!   before it is passed on (latency, not a bandwidth limit; order is kept);
//! - [`Fault::Reset`]: every open connection is reset (RST) at once, and each
//!   new one is reset as soon as it is accepted: a peer whose process is gone.
//!
//! Threads, not async: two per direction per connection (a reader that
//! stamps each chunk with the time it may leave, a writer that waits for that
//! time), all blocking, and all ended by shutting the sockets down when the
//! link is dropped. Counters say what the link did, for the tests' reports.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What a [`Link`] does to the bytes that cross it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Drop,
    Delay(Duration),
    Reset,
}

/// What a link has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub connections: u64,
    pub bytes_forwarded: u64,
    pub bytes_dropped: u64,
    pub connections_reset: u64,
}

/// Both sockets of one proxied connection, so the link can reset them.
struct Proxied {
    client: TcpStream,
    upstream: TcpStream,
    /// Bytes of this connection were thrown away (it is reset when the link heals).
    lost: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

struct Shared {
    target: SocketAddr,
    fault: Mutex<Fault>,
    connections: Mutex<Vec<Proxied>>,
    stopping: AtomicBool,
    accepted: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    reset: AtomicU64,
}

/// One proxied link: `address()` forwards to the target given to [`Link::start`].
pub struct Link {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Link {
    /// Listen on a fresh loopback port and forward what arrives there to `target`.
    pub fn start(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind 127.0.0.1:0");
        let address = listener.local_addr().expect("fault proxy: local address");
        let shared = Arc::new(Shared {
            target,
            fault: Mutex::new(Fault::Pass),
            connections: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reset: AtomicU64::new(0),
        });
        let accepting = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("faultnet-accept-{}", address.port()))
            .spawn(move || accept_loop(listener, accepting))
            .expect("fault proxy: spawn acceptor");
        Link { address, shared, acceptor: Some(acceptor) }
    }

    /// Where to connect to go through this link.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn fault(&self) -> Fault {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change what the link does, from now on (and to open connections).
    pub fn set(&self, fault: Fault) {
        let before = std::mem::replace(&mut *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()), fault);
        let mut connections = self.shared.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|c| !c.closed.load(Ordering::Relaxed));
        for c in connections.iter() {
            // A partition that heals leaves connections with holes in their byte streams; a
            // reset leaves none at all.
            let healed_with_holes = before == Fault::Drop && fault != Fault::Drop && c.lost.load(Ordering::Relaxed);
            if fault == Fault::Reset || healed_with_holes {
                reset(&self.shared, c);
            }
        }
    }

    pub fn stats(&self) -> LinkStats {
        let s = &self.shared;
        LinkStats {
            connections: s.accepted.load(Ordering::Relaxed),
            bytes_forwarded: s.forwarded.load(Ordering::Relaxed),
            bytes_dropped: s.dropped.load(Ordering::Relaxed),
            connections_reset: s.reset.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        // Wake the blocking accept, then close every connection so the pumps end.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        for c in self.shared.connections.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.upstream.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Close a socket with an RST rather than a FIN (SO_LINGER with a zero timeout).
fn abort(socket: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket this process owns, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = socket.shutdown(Shutdown::Both);
}

fn reset(shared: &Shared, c: &Proxied) {
    if !c.closed.swap(true, Ordering::Relaxed) {
        shared.reset.fetch_add(1, Ordering::Relaxed);
    }
    abort(&c.client);
    abort(&c.upstream);
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let fault = *shared.fault.lock().unwrap_or_else(|e| e.into_inner());
        if fault == Fault::Reset {
            shared.reset.fetch_add(1, Ordering::Relaxed);
            abort(&client);
            continue;
        }
        // The target is down: close, as a refused connect would end.
        let Ok(upstream) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(2)) else {
            abort(&client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let lost = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let clones = (client.try_clone(), upstream.try_clone(), upstream.try_clone(), client.try_clone());
        let (Ok(client_read), Ok(upstream_write), Ok(upstream_read), Ok(client_write)) = clones else {
            abort(&client);
            continue;
        };
        pump(client_read, upstream_write, shared.clone(), lost.clone(), closed.clone());
        pump(upstream_read, client_write, shared.clone(), lost.clone(), closed.clone());
        let mut connections = shared.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|c| !c.closed.load(Ordering::Relaxed));
        connections.push(Proxied { client, upstream, lost, closed });
    }
}

/// Move bytes from `from` to `to` under the link's current fault, on two threads.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>, lost: Arc<AtomicBool>, closed: Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer_closed = closed.clone();
    thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        writer_closed.store(true, Ordering::Relaxed);
        let _ = to.shutdown(Shutdown::Write);
    });
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let fault = *shared.fault.lock().unwrap_or_else(|e| e.into_inner());
            let due = match fault {
                Fault::Pass => Instant::now(),
                Fault::Delay(d) => Instant::now() + d,
                Fault::Drop => {
                    shared.dropped.fetch_add(n as u64, Ordering::Relaxed);
                    lost.store(true, Ordering::Relaxed);
                    continue;
                }
                Fault::Reset => break,
            };
            shared.forwarded.fetch_add(n as u64, Ordering::Relaxed);
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
        closed.store(true, Ordering::Relaxed);
        // Dropping `tx` lets the writer finish what is queued, then close its side.
    });
}
