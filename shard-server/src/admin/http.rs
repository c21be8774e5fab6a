//! A small HTTP/1.1 server for the admin endpoint: GET and HEAD only, one
//! request per connection, every answer with `Connection: close`.
//!
//! Built for robustness rather than speed (a scraper asks every few seconds):
//! - the request head must arrive whole within [`HEAD_TIMEOUT`] and fit in
//!   [`HEAD_BYTES_MAX`] (408 and 431 otherwise), so a slow or endless sender
//!   holds a connection for a bounded time;
//! - at most [`CONNECTIONS_MAX`] connections are handled at once, each on a
//!   short-lived thread; past that a connection gets 503 at once;
//! - anything that is not a well-formed request line gets 400, another
//!   method 405, an unknown path 404; a panic while answering gets 500 and
//!   the server goes on;
//! - after answering, the server stops writing, reads and discards what the
//!   client still sends for a moment, then closes, so a client that sent more
//!   than the head still gets its answer instead of a reset.
//!
//! The accept loop polls the listener with a timeout, so [`Server::shutdown`]
//! takes effect within [`POLL_INTERVAL`].

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The whole request head (request line and headers) must arrive within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
pub const HEAD_BYTES_MAX: usize = 8192;
/// Connections handled at once.
pub const CONNECTIONS_MAX: usize = 16;
/// Writing an answer may take this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After answering: how long, and how much, to read and discard before closing.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES_MAX: usize = 1 << 20;
/// How often the accept loop checks for shutdown.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A parsed request: what the router needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The target's path, without the query.
    pub path: String,
    pub query: Option<String>,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub allow: Option<&'static str>,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, content_type, body: body.into(), allow: None }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body.into())
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    TooLarge,
    TimedOut,
    /// The client closed or reset before a whole head arrived: nobody to answer.
    Gone,
}

/// Read up to the blank line that ends the head, within `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream.set_read_timeout(Some(left)).map_err(|_| HeadError::Gone)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Gone),
        };
        // Only the new bytes (and the 3 before them) can complete the terminator.
        let scan_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&head[scan_from..]) {
            head.truncate(scan_from + end);
            return Ok(head);
        }
        if head.len() > HEAD_BYTES_MAX {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Where the head ends (index just past its terminating blank line), accepting bare LFs.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parse a request head. Err is the answer to give.
pub fn parse_head(head: &[u8]) -> Result<Request, Reply> {
    let bad = |why: &str| Reply::text(400, format!("bad request: {why}\n"));
    let text = std::str::from_utf8(head).map_err(|_| bad("the request head is not UTF-8"))?;
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected `METHOD /path HTTP/1.1`"));
    };
    if !version.starts_with("HTTP/1.") || version.len() != 8 {
        return Err(bad("only HTTP/1.0 and HTTP/1.1 are spoken here"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("the method is not a token"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("the target must be a path starting with /"));
    }
    for header in text.lines().skip(1).filter(|l| !l.is_empty()) {
        if !header.contains(':') {
            return Err(bad("a header line has no colon"));
        }
    }
    if method != "GET" && method != "HEAD" {
        let mut reply = Reply::text(405, format!("method {method} not allowed: this endpoint is read-only\n"));
        reply.allow = Some("GET, HEAD");
        return Err(reply);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    Ok(Request { method: method.to_owned(), path: path.to_owned(), query })
}

fn write_reply(stream: &mut TcpStream, reply: &Reply, head_only: bool) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    if let Some(allow) = reply.allow {
        out.extend_from_slice(format!("Allow: {allow}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&reply.body);
    }
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.write_all(&out)?;
    stream.flush()
}

/// Stop writing, then read and drop what the client still sends (bounded), so closing does not reset.
fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut sink = [0u8; 4096];
    while drained < LINGER_BYTES_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// Serve one connection: read the head, answer, close.
fn serve_connection(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_nodelay(true);
    let reply = match read_head(&mut stream, Instant::now() + HEAD_TIMEOUT) {
        Ok(head) => match parse_head(&head) {
            Ok(request) => {
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&request)));
                let reply = answer.unwrap_or_else(|_| Reply::text(500, "internal error while answering\n"));
                let _ = write_reply(&mut stream, &reply, request.method == "HEAD");
                linger_close(stream);
                return;
            }
            Err(reply) => reply,
        },
        Err(HeadError::TooLarge) => Reply::text(431, format!("request head larger than {HEAD_BYTES_MAX} bytes\n")),
        Err(HeadError::TimedOut) => Reply::text(408, format!("request head not received within {HEAD_TIMEOUT:?}\n")),
        Err(HeadError::Gone) => return,
    };
    let _ = write_reply(&mut stream, &reply, false);
    linger_close(stream);
}

/// The running server; stops (within [`POLL_INTERVAL`]) on [`Server::shutdown`] or drop.
pub struct Server {
    pub local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serve `listener` on a thread of its own, answering each request with `handler`.
    pub fn spawn(listener: TcpListener, handler: Arc<Handler>) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("admin-http".into())
                .spawn(move || accept_loop(listener, handler, &stop))?
        };
        Ok(Server { local_addr, stop, thread: Some(thread) })
    }

    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Decrements the count of connections in hand when a handler thread ends, however it ends.
struct InHand(Arc<AtomicUsize>);

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, handler: Arc<Handler>, stop: &AtomicBool) {
    let in_hand = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let mut poll = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for a descriptor the listener owns, for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, POLL_INTERVAL.as_millis() as libc::c_int) };
        if ready <= 0 {
            continue; // timeout, or EINTR
        }
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: say so, back off, keep going.
                    tracing::warn!(error = %e, "admin HTTP: accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            };
            if stream.set_nonblocking(false).is_err() {
                continue;
            }
            if in_hand.fetch_add(1, Ordering::SeqCst) >= CONNECTIONS_MAX {
                in_hand.fetch_sub(1, Ordering::SeqCst);
                let mut stream = stream;
                let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                let _ = write_reply(&mut stream, &Reply::text(503, "too many admin connections; try again\n"), false);
                continue;
            }
            let guard = InHand(in_hand.clone());
            let handler = handler.clone();
            let spawned = std::thread::Builder::new().name("admin-http-conn".into()).spawn(move || {
                let _guard = guard;
                serve_connection(stream, &*handler);
            });
            if let Err(e) = spawned {
                // The closure (and its guard) were dropped: the count is right again.
                tracing::warn!(error = %e, "admin HTTP: cannot start a connection thread");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_strictly() {
        let r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_deref()), ("GET", "/metrics", Some("x=1")));
        assert_eq!(parse_head(b"HEAD / HTTP/1.0\n\n").unwrap().path, "/");
        assert_eq!(parse_head(b"POST / HTTP/1.1\r\n\r\n").unwrap_err().status, 405);
        assert_eq!(parse_head(b"POST / HTTP/1.1\r\n\r\n").unwrap_err().allow, Some("GET, HEAD"));
        for garbage in [
            &b"\xff\xfe\x00garbage\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /  HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /\x07 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(garbage).unwrap_err().status, 400, "{garbage:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
