//! The "Hello, World!" HTTP/1.1 server on one gaio `wait_io` loop: the listener's `accept`
//! requests, every connection's reads and writes, all served by one thread.
//!
//! Each connection has exactly one request in flight, and its state ([`Session`]: the request
//! parser and the response buffer) travels as that request's context, so the loop keeps no
//! table of connections. The cycle per connection:
//!
//! 1. a read into the watcher's swap buffers (an idle connection holds no read buffer); the
//!    parser takes the bytes in place and answers every request they complete, appending the
//!    responses to the connection's one response buffer: all pipelined requests of one read
//!    get one write;
//! 2. that write (the buffer comes back in its result and is reused: no allocation per
//!    request at steady state); then the next read. Nothing is read while a write is pending,
//!    so a client that pipelines without reading is simply not read from (bounded memory);
//! 3. after a response that ends the connection (`Connection: close`, HTTP/1.0 without
//!    keep-alive, a refused request), the write side is shut down and the connection is
//!    drained for at most [`LINGER`] before it is freed: closing with unread bytes would reset
//!    it and could destroy the response on its way to the client.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gaio::{Buffer, Conn, Error, OpResult, OpType, Watcher};

use super::parse::{Next, Parser};
use super::response::{append_error, append_ok};

/// Accept requests kept outstanding on the listener: several let one readiness edge (or one
/// batch of io_uring completions) bring in several connections.
pub const ACCEPTS_IN_FLIGHT: usize = 8;

/// How long a connection that is closing is drained (read and discarded) after its last
/// response, waiting for the client to close first.
pub const LINGER: Duration = Duration::from_secs(2);

/// How long a failed accept request waits before it is submitted again, when it failed for
/// lack of descriptors or memory (the connection waits in the backlog meanwhile).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The context of every request the server submits.
pub enum Ctx {
    /// An accept request on the listener.
    Accept,
    /// A read or write on a connection, carrying the connection's state.
    Conn(Box<Session>),
}

/// One connection's state, moved from each request of the connection to the next.
#[derive(Default)]
pub struct Session {
    parser: Parser,
    /// Responses waiting to be written; between writes, the reused (empty) buffer.
    out: Vec<u8>,
    /// Set once the last response is decided: after its write, shut down and drain until then.
    closing: bool,
    /// While draining: when to stop waiting for the client to close.
    linger_until: Option<Instant>,
}

/// Counters the server keeps, readable from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections freed.
    pub closed: AtomicU64,
    /// Requests answered with a 200.
    pub requests: AtomicU64,
    /// Requests refused (400, 431, 501, 505).
    pub refused: AtomicU64,
    /// Connections that ended with an unexpected error (logged to stderr).
    pub errors: AtomicU64,
}

/// When the loop stops on its own (`None`: never; it then ends only when the watcher closes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// After this many requests answered.
    pub requests: Option<u64>,
    /// At this instant.
    pub until: Option<Instant>,
}

/// Takes `listener` over and runs the server loop on the calling thread until the watcher is
/// closed (`Ok`), a limit is reached (`Ok`), or `wait_io` fails.
pub fn serve(
    w: &Watcher<Ctx>,
    listener: TcpListener,
    stats: &Stats,
    limits: Limits,
) -> Result<(), Error> {
    let lconn = watch_listener(w, listener)?;
    serve_loop(w, &lconn, stats, limits)
}

/// Sets the listener up for the loop: `TCP_NODELAY` (Linux copies it to every accepted
/// socket; responses are small and must not wait for Nagle), taken over by the watcher.
fn watch_listener(w: &Watcher<Ctx>, listener: TcpListener) -> Result<Conn, Error> {
    socket2::SockRef::from(&listener)
        .set_tcp_nodelay(true)
        .map_err(Error::Io)?;
    // The watcher keeps its own descriptor; ours closes at the end of this function.
    w.watch(&listener)
}

/// The `wait_io` loop.
fn serve_loop(w: &Watcher<Ctx>, lconn: &Conn, stats: &Stats, limits: Limits) -> Result<(), Error> {
    let mut parked = Parked::default();
    for _ in 0..ACCEPTS_IN_FLIGHT {
        submit_accept(w, lconn, &mut parked);
    }
    loop {
        if limits
            .requests
            .is_some_and(|n| stats.requests.load(Ordering::Relaxed) >= n)
        {
            return Ok(());
        }
        let now = Instant::now();
        if limits.until.is_some_and(|t| now >= t) {
            return Ok(());
        }
        // Wake for the earlier of the run's end and a parked accept's retry.
        let wake = match (limits.until, parked.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let waited = match wake {
            Some(at) => w.wait_io_timeout(at.saturating_duration_since(now)),
            None => w.wait_io(),
        };
        let batch = match waited {
            Ok(b) => b,
            Err(Error::WatcherClosed) => return Ok(()),
            Err(e) => return Err(e),
        };
        if parked.retry_at.is_some_and(|at| Instant::now() >= at) {
            parked.retry_at = None;
            for _ in 0..std::mem::take(&mut parked.count) {
                submit_accept(w, lconn, &mut parked);
            }
        }
        for res in batch {
            match res.op {
                OpType::Accept => accepted(w, res, stats, &mut parked),
                OpType::Read => on_read(w, res, stats),
                OpType::Write => on_write(w, res, stats),
                // Nothing else is ever submitted.
                _ => free(w, &res.conn, stats),
            }
        }
    }
}

/// A read completed: answer what it completed, or keep draining a closing connection.
fn on_read(w: &Watcher<Ctx>, res: OpResult<Ctx>, stats: &Stats) {
    let OpResult {
        context,
        conn,
        buffer,
        size,
        error,
        ..
    } = res;
    let Ctx::Conn(mut s) = context else {
        return free(w, &conn, stats);
    };
    if let Some(err) = error {
        // The client closed (or reset), our drain ran out of time, or the shutdown.
        if s.linger_until.is_none() {
            note_end(&conn, &err, stats);
        }
        return free(w, &conn, stats);
    }
    if let Some(until) = s.linger_until {
        // Draining: discard, read on until the client closes or time is up.
        drop(buffer);
        if let Err(e) = w.read_timeout(Ctx::Conn(s), &conn, None, until) {
            refused(w, &conn, &e.error, stats);
        }
        return;
    }
    let data = match &buffer {
        Buffer::Swap(slice) => &slice[..size.min(slice.len())],
        Buffer::User(v) => &v[..size.min(v.len())],
        _ => &[][..],
    };
    let Session { parser, out, .. } = &mut *s;
    let mut answered = 0;
    let next = parser.feed(data, |req| {
        append_ok(out, &req);
        answered += 1;
    });
    // The swap space is reusable as soon as the bytes are parsed.
    drop(buffer);
    stats.requests.fetch_add(answered, Ordering::Relaxed);
    match next {
        Ok(Next::Read) => {}
        Ok(Next::Close) => s.closing = true,
        Err(e) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            append_error(&mut s.out, e);
            s.closing = true;
        }
    }
    if s.out.is_empty() {
        // No request completed yet: read on.
        if let Err(e) = w.read(Ctx::Conn(s), &conn, None) {
            refused(w, &conn, &e.error, stats);
        }
        return;
    }
    let out = std::mem::take(&mut s.out);
    if let Err(e) = w.write(Ctx::Conn(s), &conn, out) {
        refused(w, &conn, &e.error, stats);
    }
}

/// A write completed: read the next requests, or start closing.
fn on_write(w: &Watcher<Ctx>, res: OpResult<Ctx>, stats: &Stats) {
    let OpResult {
        context,
        conn,
        buffer,
        error,
        ..
    } = res;
    let Ctx::Conn(mut s) = context else {
        return free(w, &conn, stats);
    };
    if let Some(err) = error {
        note_end(&conn, &err, stats);
        return free(w, &conn, stats);
    }
    // Keep the buffer (and its capacity) for the next responses.
    if let Some(mut v) = buffer.into_vec() {
        v.clear();
        s.out = v;
    }
    let submitted = if s.closing {
        // Tell the client we are done, then wait (bounded) for it to close its side, so that
        // our close never resets a connection whose response is still on its way.
        if shutdown_write(&conn).is_err() {
            return free(w, &conn, stats);
        }
        let until = Instant::now() + LINGER;
        s.linger_until = Some(until);
        w.read_timeout(Ctx::Conn(s), &conn, None, until)
    } else {
        w.read(Ctx::Conn(s), &conn, None)
    };
    if let Err(e) = submitted {
        refused(w, &conn, &e.error, stats);
    }
}

/// Shuts the write side of a connection down (a FIN after the last response).
fn shutdown_write(conn: &Conn) -> io::Result<()> {
    // SAFETY: shutdown(2) takes plain integers and touches no memory. The descriptor is the
    // watcher's own and stays open while we hold `conn` unfreed with no request pending on
    // it; shutdown neither reads, writes nor closes it.
    if unsafe { libc::shutdown(conn.raw_fd(), libc::SHUT_WR) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An accept request completed: start the new connection's first read and put a new accept
/// request in its place (at once, or after [`ACCEPT_RETRY`] if it failed for lack of
/// descriptors or memory).
fn accepted(w: &Watcher<Ctx>, res: OpResult<Ctx>, stats: &Stats, parked: &mut Parked) {
    let lconn = &res.conn;
    match (res.error, res.accepted) {
        (None, Some(conn)) => {
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let session = Box::<Session>::default();
            if w.read(Ctx::Conn(session), &conn, None).is_err() {
                // Only when the watcher is closing.
                free(w, &conn, stats);
            }
            submit_accept(w, lconn, parked);
        }
        // Our own shutdown: the listener is gone, nothing to resubmit.
        (Some(Error::ClosedPipe | Error::WatcherClosed | Error::ConnClosed), _) => {}
        (Some(e), _) => match e.raw_os_error() {
            // The client gave up before we accepted, or a signal: accept the next one.
            Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => {
                submit_accept(w, lconn, parked)
            }
            // Out of descriptors or memory (or anything unexpected): the connection waits in
            // the backlog; retry later instead of spinning on the same error.
            _ => {
                eprintln!("accept: {e}; retrying in {} ms", ACCEPT_RETRY.as_millis());
                parked.park();
            }
        },
        (None, None) => submit_accept(w, lconn, parked),
    }
}

/// Accept requests waiting to be submitted again.
#[derive(Default)]
struct Parked {
    count: usize,
    retry_at: Option<Instant>,
}

impl Parked {
    fn park(&mut self) {
        self.count += 1;
        self.retry_at
            .get_or_insert_with(|| Instant::now() + ACCEPT_RETRY);
    }
}

/// Submits an accept request; parks it if refused for any reason but the watcher closing.
fn submit_accept(w: &Watcher<Ctx>, lconn: &Conn, parked: &mut Parked) {
    if let Err(e) = w.accept(Ctx::Accept, lconn) {
        if !matches!(e.error, Error::WatcherClosed | Error::ConnClosed) {
            eprintln!("accept: submission refused: {}; retrying", e.error);
            parked.park();
        }
    }
}

/// A submission on a connection was refused: only when the watcher is closing, or the
/// connection is already freed. Free it (once) unless the whole watcher is going.
fn refused(w: &Watcher<Ctx>, conn: &Conn, err: &Error, stats: &Stats) {
    if !matches!(err, Error::WatcherClosed) {
        free(w, conn, stats);
    }
}

/// Counts a connection ended by an error that is not an ordinary close, and logs it.
fn note_end(conn: &Conn, err: &Error, stats: &Stats) {
    let ordinary = match err {
        Error::Eof | Error::ClosedPipe | Error::ConnClosed | Error::WatcherClosed => true,
        Error::Io(_) => matches!(
            err.raw_os_error(),
            Some(libc::ECONNRESET | libc::EPIPE | libc::ETIMEDOUT)
        ),
        _ => false,
    };
    if !ordinary {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("conn {:#x}: ended with {err}", conn.key());
    }
}

/// Frees a connection once, counting it.
fn free(w: &Watcher<Ctx>, conn: &Conn, stats: &Stats) {
    if !conn.is_freed() && w.free(conn).is_ok() {
        stats.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The server on a thread of its own, for tests and benches: [`serve`] until
/// [`shutdown`](HttpServer::shutdown) closes the watcher.
pub struct HttpServer {
    watcher: Arc<Watcher<Ctx>>,
    addr: SocketAddr,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl HttpServer {
    /// Takes `listener` over and starts the loop thread.
    pub fn start(listener: TcpListener, watcher: Watcher<Ctx>) -> io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let watcher = Arc::new(watcher);
        let lconn = watch_listener(&watcher, listener)?;
        let stats = Arc::new(Stats::default());
        let thread = {
            let (w, stats) = (watcher.clone(), stats.clone());
            std::thread::Builder::new()
                .name("http-loop".into())
                .spawn(move || serve_loop(&w, &lconn, &stats, Limits::default()))?
        };
        Ok(HttpServer {
            watcher,
            addr,
            stats,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters (a shared handle, still readable after `shutdown`).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The backend its watcher runs on.
    pub fn backend(&self) -> gaio::Backend {
        self.watcher.backend()
    }

    /// Closes the watcher (which ends every connection) and joins the loop; returns its
    /// outcome.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        let closed = self.watcher.close();
        let served = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Io(io::Error::other("the server loop panicked"))),
            None => Ok(()),
        };
        closed.and(served)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}
