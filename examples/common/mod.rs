//! Code shared by the examples: the echo server (its accept thread or `accept` requests, and
//! its `wait_io` loop),
//! listener setup, raising `RLIMIT_NOFILE`, and flag parsing on top of `lexopt`; and, in
//! [`workloads`], the verifying echo clients (stream, burst, ping-pong, idle).
//!
//! `echo-server.rs`, `push-server.rs` and `echo-bench.rs` include this file with `mod common;`
//! (it is not an example of its own: Cargo only builds `examples/*.rs` and
//! `examples/*/main.rs`); the benches include it with `#[path]` through `benches/common`. Each
//! user needs part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs,
};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gaio::{Buffer, Conn, Error, OpResult, OpType, Watcher};

pub mod udp;
pub mod workloads;

/// Listen backlog. `std::net::TcpListener::bind` uses 128, too small for thousands of clients
/// dialling at once (a full accept queue drops SYNs, and the client retries a second later);
/// the kernel caps this at `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds a TCP listener with `SO_REUSEADDR` (so a restarted server can rebind while old
/// connections sit in TIME_WAIT) and a large backlog.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock.into())
}

/// Resolves `HOST:PORT` (a name like `localhost:7000` or an address) to its first address.
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (every connection is a descriptor, and
/// the usual soft limit of 1024 is far too low for a server) and returns the soft limit now in
/// force. If raising fails, the old soft limit is returned: the program still runs, with fewer
/// connections.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which is valid and properly aligned.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    #[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
    Ok(u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX))
}

/// What every server example does first: raises `RLIMIT_NOFILE` (saying so on stderr when few
/// descriptors are allowed), then starts a watcher from `builder`, on `backend` if given (else
/// the builder's choice: `GAIO_BACKEND`, or auto).
pub fn server_watcher<C: Send + 'static>(
    builder: gaio::Builder,
    backend: Option<gaio::Backend>,
) -> Result<Watcher<C>, String> {
    match raise_nofile_limit() {
        Ok(n) if n < 4096 => eprintln!("note: only {n} descriptors allowed (RLIMIT_NOFILE)"),
        Ok(_) => {}
        Err(e) => eprintln!("note: cannot read RLIMIT_NOFILE: {e}"),
    }
    let builder = match backend {
        Some(b) => builder.backend(b),
        None => builder,
    };
    builder
        .build()
        .map_err(|e| format!("cannot start the watcher: {e}"))
}

/// Whether an operation error is an ordinary way for a connection to end (the peer closed or
/// reset it, or we freed it), as opposed to something worth logging.
pub fn is_normal_close(err: &Error) -> bool {
    match err {
        Error::Eof | Error::ClosedPipe | Error::ConnClosed | Error::WatcherClosed => true,
        Error::Io(_) => matches!(
            err.raw_os_error(),
            Some(libc::ECONNRESET | libc::EPIPE | libc::ETIMEDOUT | libc::ECONNABORTED)
        ),
        _ => false,
    }
}

// ------------------------------------------------------------------------------------------
// Echo server
// ------------------------------------------------------------------------------------------

/// Where the echo server reads into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Reads without a buffer land in the watcher's swap buffers (Go gaio's `Read(ctx, conn,
    /// nil)`), and the `SwapSlice` is written straight back (no copy, as Go writes its swap
    /// buffer back); its space returns when the write completes. An idle connection holds no
    /// buffer at all.
    Swap,
    /// Each connection owns one buffer of this many bytes: the read fills it, the very same
    /// `Vec` is written back (no copy) and then reused for the next read. Costs the buffer per
    /// connection, idle or not.
    PerConn(usize),
}

impl FromStr for ReadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "swap" => Ok(ReadMode::Swap),
            "conn" => Ok(ReadMode::PerConn(64 * 1024)),
            _ => Err(format!("read mode {s:?} (expected swap or conn)")),
        }
    }
}

impl std::fmt::Display for ReadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadMode::Swap => f.write_str("swap buffers"),
            ReadMode::PerConn(n) => write!(f, "a {n}-byte buffer per connection"),
        }
    }
}

/// How the echo server accepts connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptMode {
    /// A plain `std` accept loop on a thread of its own hands each connection to the watcher
    /// (Go gaio's example; the default).
    Thread,
    /// The listener is watched too, and the connections arrive as results of
    /// [`Watcher::accept`] requests ([`ACCEPTS_IN_FLIGHT`] outstanding) on the echo loop
    /// itself: the whole server is one `wait_io` loop.
    Watcher,
}

impl FromStr for AcceptMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "thread" => Ok(AcceptMode::Thread),
            "watcher" => Ok(AcceptMode::Watcher),
            _ => Err(format!("accept mode {s:?} (expected thread or watcher)")),
        }
    }
}

impl std::fmt::Display for AcceptMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcceptMode::Thread => f.write_str("an accept thread"),
            AcceptMode::Watcher => write!(
                f,
                "accept requests on the echo loop ({ACCEPTS_IN_FLIGHT} outstanding)"
            ),
        }
    }
}

/// Accept requests kept outstanding on the listener in [`AcceptMode::Watcher`]: each accepted
/// connection is replaced by a new request at once, and several outstanding let one readiness
/// edge (or one batch of io_uring completions) bring in several connections.
pub const ACCEPTS_IN_FLIGHT: usize = 4;

/// How long a failed accept request waits before it is submitted again, when it failed for
/// lack of descriptors or memory (the connection waits in the backlog meanwhile).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Counters the echo server keeps, readable from any thread.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Connections accepted and handed to the watcher.
    pub accepted: AtomicU64,
    /// Connections freed (peer closed, error, or shutdown).
    pub closed: AtomicU64,
    /// Bytes echoed (completed writes).
    pub bytes: AtomicU64,
    /// Connections that ended with an error other than EOF or a reset (logged to stderr).
    pub errors: AtomicU64,
}

/// An echo server: new TCP connections reach a gaio [`Watcher`] (from an accept thread, or
/// as results of `accept` requests, see [`AcceptMode`]), and one thread runs the `wait_io`
/// loop that echoes every read back with a write and reads again once the write is done (one
/// operation in flight per connection, so a client that stops reading just stops being read
/// from: no unbounded queue of writes).
pub struct EchoServer {
    watcher: Arc<Watcher<()>>,
    addr: SocketAddr,
    stats: Arc<EchoStats>,
    stop: Arc<AtomicBool>,
    /// A duplicate of the listening socket, to wake the accept thread at shutdown (thread
    /// mode only).
    wake: Option<TcpListener>,
    accept: Option<JoinHandle<()>>,
    serve: Option<JoinHandle<Result<(), Error>>>,
}

impl EchoServer {
    /// Starts the accept thread and the echo loop thread on `listener` and `watcher`
    /// ([`AcceptMode::Thread`]). With `verbose`, connection openings and closings are logged
    /// to stderr.
    pub fn start(
        listener: TcpListener,
        watcher: Watcher<()>,
        mode: ReadMode,
        verbose: bool,
    ) -> io::Result<EchoServer> {
        EchoServer::start_with(listener, watcher, mode, AcceptMode::Thread, verbose)
    }

    /// [`start`](EchoServer::start) with a choice of how connections are accepted. With
    /// [`AcceptMode::Watcher`] there is no accept thread: the watcher takes the listener over
    /// and the echo loop thread is the whole server.
    pub fn start_with(
        listener: TcpListener,
        watcher: Watcher<()>,
        mode: ReadMode,
        accept_mode: AcceptMode,
        verbose: bool,
    ) -> io::Result<EchoServer> {
        let addr = listener.local_addr()?;
        let watcher = Arc::new(watcher);
        let stats = Arc::new(EchoStats::default());
        let stop = Arc::new(AtomicBool::new(false));

        if accept_mode == AcceptMode::Watcher {
            // Linux copies TCP_NODELAY from the listener to every socket it accepts, so this
            // does what the accept thread's per-connection set_nodelay does.
            socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
            let lconn = watcher.watch(&listener)?;
            // The watcher keeps its own descriptor of the listener; ours is not needed.
            drop(listener);
            for _ in 0..ACCEPTS_IN_FLIGHT {
                watcher.accept((), &lconn)?;
            }
            let serve = {
                let (w, stats) = (watcher.clone(), stats.clone());
                std::thread::Builder::new()
                    .name("echo-loop".into())
                    .spawn(move || echo_loop(&w, mode, &stats, verbose, Some(lconn)))?
            };
            return Ok(EchoServer {
                watcher,
                addr,
                stats,
                stop,
                wake: None,
                accept: None,
                serve: Some(serve),
            });
        }

        let wake = listener.try_clone()?;
        let serve = {
            let (w, stats) = (watcher.clone(), stats.clone());
            std::thread::Builder::new()
                .name("echo-loop".into())
                .spawn(move || echo_loop(&w, mode, &stats, verbose, None))?
        };
        let accept = {
            let (w, stats, stop) = (watcher.clone(), stats.clone(), stop.clone());
            std::thread::Builder::new()
                .name("echo-accept".into())
                .spawn(move || accept_loop(listener, &w, mode, &stats, &stop, verbose))?
        };
        Ok(EchoServer {
            watcher,
            addr,
            stats,
            stop,
            wake: Some(wake),
            accept: Some(accept),
            serve: Some(serve),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters (a shared handle, still readable after `shutdown`).
    pub fn stats(&self) -> Arc<EchoStats> {
        self.stats.clone()
    }

    /// The backend the server's watcher runs on.
    pub fn backend(&self) -> gaio::Backend {
        self.watcher.backend()
    }

    /// Blocks until the echo loop ends, which only happens if `wait_io` fails; a server that
    /// runs until it is killed never returns from here.
    pub fn wait(mut self) -> Result<(), Error> {
        match self.serve.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Io(io::Error::other("the echo loop panicked"))),
            None => Ok(()),
        }
    }

    /// Stops accepting, closes the watcher (which closes every connection), and joins both
    /// threads. Returns the echo loop's outcome.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop_threads()
    }

    fn stop_threads(&mut self) -> Result<(), Error> {
        self.stop.store(true, Ordering::Release);
        // Every pending read completes with ClosedPipe, then wait_io reports WatcherClosed
        // and the echo loop returns.
        let closed = self.watcher.close();
        let served = match self.serve.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Io(io::Error::other("the echo loop panicked"))),
            None => Ok(()),
        };
        // The accept thread sits in a blocking accept(). shutdown(2) on the listening socket
        // makes that accept fail at once (Linux: EINVAL); the thread then sees `stop`.
        if let (Some(t), Some(wake)) = (self.accept.take(), &self.wake) {
            let woken = socket2::SockRef::from(wake)
                .shutdown(Shutdown::Read)
                .is_ok()
                || TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1))
                    .is_ok();
            if woken {
                let _ = t.join();
            }
            // Otherwise leave it: it exits at its next accept, and holds nothing but the
            // listener.
        }
        closed.and(served)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if self.serve.is_some() {
            let _ = self.stop_threads();
        }
    }
}

/// Where to connect to reach a listener bound to `addr` (an unspecified address such as
/// `0.0.0.0` is reachable through loopback).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Accepts connections until `stop` is set or the watcher closes, hands each to the watcher
/// and submits its first read. Runs on its own thread: gaio submissions may come from any
/// thread.
fn accept_loop(
    listener: TcpListener,
    w: &Watcher<()>,
    mode: ReadMode,
    stats: &EchoStats,
    stop: &AtomicBool,
    verbose: bool,
) {
    for incoming in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let stream = match incoming {
            Ok(s) => s,
            Err(e) => {
                match e.raw_os_error() {
                    // Out of descriptors or memory: the connection waits in the backlog; back
                    // off instead of spinning on the same error.
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        eprintln!("accept: {e}; retrying in 100 ms");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    // The client gave up before we accepted, or a signal: nothing to report.
                    Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => {}
                    _ => {
                        eprintln!("accept: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        // Echo replies are small and latency-bound: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let conn = match w.watch(&stream) {
            Ok(c) => c,
            Err(Error::WatcherClosed) => break,
            Err(e) => {
                eprintln!("watch {peer:?}: {e}");
                continue;
            }
        };
        // The watcher owns its own duplicate of the descriptor; close ours now.
        drop(stream);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        if verbose {
            eprintln!("conn {:#x}: accepted from {peer:?}", conn.key());
        }
        let buf = match mode {
            ReadMode::Swap => None,
            ReadMode::PerConn(n) => Some(vec![0u8; n]),
        };
        if let Err(e) = w.read((), &conn, buf) {
            // Only possible when the watcher is closing.
            let _ = w.free(&conn);
            stats.closed.fetch_add(1, Ordering::Relaxed);
            if matches!(e.error, Error::WatcherClosed) {
                break;
            }
        }
    }
}

/// The echo loop: one thread, one `wait_io` loop, one operation in flight per connection.
/// With `listener` (the watched listening socket, [`AcceptMode::Watcher`]) it also serves the
/// `accept` requests on it, keeping [`ACCEPTS_IN_FLIGHT`] outstanding. Returns `Ok` once the
/// watcher is closed and every result is drained.
fn echo_loop(
    w: &Watcher<()>,
    mode: ReadMode,
    stats: &EchoStats,
    verbose: bool,
    listener: Option<Conn>,
) -> Result<(), Error> {
    // Accept requests that failed for lack of resources, to submit again at `retry_at`.
    let mut parked = Parked::default();
    loop {
        let waited = match parked.retry_at {
            Some(at) => w.wait_io_timeout(at.saturating_duration_since(Instant::now())),
            None => w.wait_io(),
        };
        let batch = match waited {
            Ok(b) => b,
            Err(Error::WatcherClosed) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let (Some(lconn), Some(at)) = (&listener, parked.retry_at) {
            if Instant::now() >= at {
                parked.retry_at = None;
                for _ in 0..std::mem::take(&mut parked.count) {
                    submit_accept(w, lconn, &mut parked);
                }
            }
        }
        for res in batch {
            if res.op == OpType::Accept {
                accepted(w, res, mode, stats, verbose, &mut parked);
                continue;
            }
            if let Some(err) = &res.error {
                end_conn(w, &res, err, stats, verbose);
                continue;
            }
            match res.op {
                OpType::Read => echo_back(w, res, stats),
                OpType::Write => {
                    stats.bytes.fetch_add(res.size as u64, Ordering::Relaxed);
                    let next = match mode {
                        // The written swap slice is dropped here: its space goes back.
                        ReadMode::Swap => None,
                        // Reuse the buffer that was just written as the next read buffer.
                        ReadMode::PerConn(n) => res.buffer.into_vec().map(|mut v| {
                            v.resize(n, 0);
                            v
                        }),
                    };
                    if let Err(e) = w.read((), &res.conn, next) {
                        // ConnClosed or WatcherClosed: nothing left to do for this one.
                        if !matches!(e.error, Error::WatcherClosed) {
                            free(w, &res.conn, stats);
                        }
                    }
                }
                // OpType is non_exhaustive; this loop only submits reads and writes.
                _ => free(w, &res.conn, stats),
            }
        }
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

/// Submits an accept request on the listener; parks it if the submission is refused for any
/// reason but the watcher closing.
fn submit_accept(w: &Watcher<()>, lconn: &Conn, parked: &mut Parked) {
    if let Err(e) = w.accept((), lconn) {
        if !matches!(e.error, Error::WatcherClosed | Error::ConnClosed) {
            eprintln!("accept: submission refused: {}; retrying", e.error);
            parked.park();
        }
    }
}

/// An accept request completed: start the new connection's first read, and put a new accept
/// request in its place (at once, or after [`ACCEPT_RETRY`] if it failed for lack of
/// descriptors or memory, or for an unexpected reason).
fn accepted(
    w: &Watcher<()>,
    res: OpResult<()>,
    mode: ReadMode,
    stats: &EchoStats,
    verbose: bool,
    parked: &mut Parked,
) {
    let lconn = &res.conn;
    match (res.error, res.accepted) {
        (None, Some(conn)) => {
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            if verbose {
                eprintln!("conn {:#x}: accepted", conn.key());
            }
            let buf = match mode {
                ReadMode::Swap => None,
                ReadMode::PerConn(n) => Some(vec![0u8; n]),
            };
            if w.read((), &conn, buf).is_err() {
                // Only possible when the watcher is closing.
                free(w, &conn, stats);
            }
            submit_accept(w, lconn, parked);
        }
        // Our own shutdown: the listener is gone, nothing to resubmit.
        (Some(Error::ClosedPipe | Error::WatcherClosed | Error::ConnClosed), _) => {}
        (Some(e), _) => match e.raw_os_error() {
            // Out of descriptors or memory: the connection waits in the backlog; retry later
            // instead of spinning on the same error.
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                eprintln!("accept: {e}; retrying in {} ms", ACCEPT_RETRY.as_millis());
                parked.park();
            }
            // The client gave up before we accepted, or a signal: nothing to report.
            Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => {
                submit_accept(w, lconn, parked)
            }
            _ => {
                eprintln!("accept: {e}; retrying in {} ms", ACCEPT_RETRY.as_millis());
                parked.park();
            }
        },
        (None, None) => {
            eprintln!("accept: completed without a connection; retrying");
            submit_accept(w, lconn, parked);
        }
    }
}

/// Writes what a read received back to its sender: the very buffer the read filled, no copy
/// (a swap slice goes back as it is and returns its space when the write's result is dropped,
/// as Go's gaio writes its swap buffer back).
fn echo_back(w: &Watcher<()>, res: OpResult<()>, stats: &EchoStats) {
    let OpResult {
        conn, buffer, size, ..
    } = res;
    let out = match buffer {
        // Caller buffer: write the same Vec back, cut to the bytes received.
        Buffer::User(mut v) => {
            v.truncate(size);
            Buffer::User(v)
        }
        // Swap slice: exactly the bytes received.
        Buffer::Swap(slice) => Buffer::Swap(slice),
        // Nothing received (or a file request's aligned buffer, which an echo never sees).
        _ => Buffer::None,
    };
    if out.is_empty() {
        // A read without data and without error should not happen; read again.
        if w.read((), &conn, None).is_err() {
            free(w, &conn, stats);
        }
        return;
    }
    // A swap slice holds its whole swap buffer until the write completes: a client that sends
    // but never reads would pin it, and with all of them pinned every swap read waits. The
    // deadline bounds that: the write then ends with `Deadline` and the connection is freed.
    let deadline = Instant::now() + WRITE_DEADLINE;
    if let Err(e) = w.write_timeout((), &conn, out, deadline) {
        if !matches!(e.error, Error::WatcherClosed) {
            free(w, &conn, stats);
        }
    }
}

/// Longest an echo write may wait for its client to read (see `echo_back`).
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// A read or write ended with `err`: log it unless it is an ordinary close, then free.
fn end_conn(w: &Watcher<()>, res: &OpResult<()>, err: &Error, stats: &EchoStats, verbose: bool) {
    if matches!(err, Error::ClosedPipe | Error::WatcherClosed) {
        // Our own free or the shutdown: already accounted for.
        return;
    }
    let normal = is_normal_close(err);
    if !normal {
        stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    if verbose || !normal {
        eprintln!(
            "conn {:#x}: {:?} ended: {err}; closing",
            res.conn.key(),
            res.op
        );
    }
    free(w, &res.conn, stats);
}

/// Frees a connection once, counting it.
fn free(w: &Watcher<()>, conn: &gaio::Conn, stats: &EchoStats) {
    if !conn.is_freed() && w.free(conn).is_ok() {
        stats.closed.fetch_add(1, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------------------------------
// Argument parsing (lexopt underneath; the flags keep their names in messages)
// ------------------------------------------------------------------------------------------

/// The process arguments as flags (`--flag value`, `--flag=value`, `-v`), read by `lexopt`.
/// A flag that takes no value refuses one (`--quick=yes`) when the next flag is asked for.
pub struct Args {
    p: lexopt::Parser,
}

/// One flag, by the name it was given with: `--addr`, `-v`.
pub struct Flag {
    pub name: String,
}

impl Args {
    /// The process arguments, without the program name.
    pub fn from_env() -> Args {
        Args {
            p: lexopt::Parser::from_env(),
        }
    }

    /// The next flag, or `None` at the end. A bare word (not a flag) is an error.
    pub fn next_flag(&mut self) -> Result<Option<Flag>, String> {
        let name = match self.p.next().map_err(|e| e.to_string())? {
            None => return Ok(None),
            Some(lexopt::Arg::Long(l)) => format!("--{l}"),
            Some(lexopt::Arg::Short(c)) => format!("-{c}"),
            Some(lexopt::Arg::Value(v)) => return Err(format!("unexpected argument {v:?}")),
        };
        Ok(Some(Flag { name }))
    }

    /// The value of `flag`: inline (`--flag=v`) or the next argument.
    pub fn value(&mut self, flag: &Flag) -> Result<String, String> {
        let v = self
            .p
            .value()
            .map_err(|_| format!("{} needs a value", flag.name))?;
        v.into_string()
            .map_err(|v| format!("{} {v:?}: not UTF-8", flag.name))
    }

    /// The value of `flag`, parsed.
    pub fn parse<T: FromStr>(&mut self, flag: &Flag) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.value(flag)?;
        v.parse().map_err(|e| format!("{} {v:?}: {e}", flag.name))
    }

    /// The value of `flag`, parsed, and refused outside `range`.
    pub fn parse_within<T>(
        &mut self,
        flag: &Flag,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, String>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let v: T = self.parse(flag)?;
        if !range.contains(&v) {
            return Err(format!(
                "{} {v}: expected {} to {}",
                flag.name,
                range.start(),
                range.end()
            ));
        }
        Ok(v)
    }
}
