//! Shared helpers for the integration tests (a port of the helpers of Go gaio's `aio_test.go`,
//! research/gaio.md §3.1, plus what a Rust suite needs on top):
//!
//! - `backend_tests!`: write a test body once, run it on every backend (`epoll::name`,
//!   `uring::name`);
//! - [`build`] / [`watcher_for`]: the ONE place that decides whether the io_uring half runs or
//!   skips;
//! - [`echo_server`] (per-connection buffers, unlike Go's shared ones) and [`hangup_server`];
//! - [`wait_until`]: a bounded loop over `wait_io_timeout` that panics with a clear message
//!   after its limit, so no test can hang; [`expect_quiet`]; [`Probe`], a barrier through the
//!   watcher's loop thread;
//! - `/proc/self/fd` and `/proc/self/task` inspection, `RLIMIT_NOFILE`, a xorshift PRNG.
//!
//! Every test file includes this module with `#[macro_use] mod util;` and uses only part of it.
#![allow(dead_code, unused_macros)]

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gaio::{Backend, Buffer, Builder, Conn, Error, OpResult, OpType, Watcher};

/// Writes each test body once and instantiates it per backend:
///
/// ```ignore
/// backend_tests! {
///     /// doc
///     fn echo_tiny(backend) { ... }
/// }
/// ```
/// generates `fn echo_tiny(backend: Backend)` plus `mod epoll { #[test] fn echo_tiny() }` and
/// `mod uring { #[test] fn echo_tiny() }`, so each case is reported under its backend's name.
/// A body gets its watchers from [`watcher_for`], [`build`] or [`echo_server`], which return
/// `None` (after printing why) when the backend cannot run here; the body then returns.
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* fn $name:ident($backend:ident) $body:block )*) => {
        $(
            $(#[$meta])*
            fn $name($backend: ::gaio::Backend) $body
        )*

        mod epoll {
            $(
                #[test]
                fn $name() {
                    super::$name(::gaio::Backend::Epoll)
                }
            )*
        }

        mod uring {
            $(
                #[test]
                fn $name() {
                    super::$name(::gaio::Backend::Uring)
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Backend selection: the one place that decides run or skip.
// ---------------------------------------------------------------------------------------------

/// `/proc/sys/kernel/io_uring_disabled`: `Some("0")` when io_uring is allowed for everyone,
/// `None` when the file does not exist (kernels before 6.6).
pub fn io_uring_disabled() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Builds a watcher with `builder` forced to `backend`, or `None` (with a printed reason) when
/// the backend legitimately cannot run on this machine. Any other failure panics.
///
/// The io_uring half of the suite:
/// - `/proc/sys/kernel/io_uring_disabled` exists and is not "0": io_uring is switched off by
///   the administrator; skip.
/// - it is "0": io_uring must work, so `BackendUnavailable` FAILS the test. (Before the
///   io_uring backend existed this case skipped with "io_uring backend not built yet"; now
///   that it exists, a machine that enables io_uring must run it.)
/// - the file does not exist (kernels before 6.6): try; `BackendUnavailable` skips, since such
///   a kernel can lack io_uring or have it blocked by seccomp.
///
/// A crate built without its `io-uring` cargo feature (`cargo test --no-default-features`)
/// has no io_uring backend at all ([`Backend::compiled_in`] is false): the io_uring half
/// skips, provided the refusal names the feature (any other `BackendUnavailable` there
/// still goes by the rules above).
///
/// `GAIO_BACKEND=epoll|uring` restricts the suite to that backend (the other half skips).
pub fn build<C: Send + 'static>(backend: Backend, builder: Builder) -> Option<Watcher<C>> {
    // GAIO_BACKEND=epoll or =uring runs only that half of the suite (DESIGN.md: tests honour
    // it); unset or "auto" runs both.
    match Backend::from_env() {
        Ok(Backend::Auto) => {}
        Ok(only) if only != backend => {
            eprintln!("skipped: GAIO_BACKEND={only} selects the other backend");
            return None;
        }
        Ok(_) => {}
        Err(e) => panic!("{e}"),
    }
    let disabled = io_uring_disabled();
    if backend == Backend::Uring {
        if let Some(v) = disabled.as_deref() {
            if v != "0" {
                eprintln!("skipped: io_uring is disabled by the kernel (io_uring_disabled={v})");
                return None;
            }
        }
    }
    match builder.backend(backend).build::<C>() {
        Ok(w) => {
            assert_eq!(w.backend(), backend, "the watcher runs on another backend");
            Some(w)
        }
        Err(Error::BackendUnavailable(why))
            if backend == Backend::Uring
                && !backend.compiled_in()
                && why.contains("cargo feature io-uring") =>
        {
            eprintln!("skipped: {why}");
            None
        }
        Err(Error::BackendUnavailable(why)) if backend == Backend::Uring => {
            if disabled.as_deref() == Some("0") {
                panic!(
                    "io_uring is enabled on this machine (kernel.io_uring_disabled=0) but the \
                     uring backend is unavailable: {why}"
                );
            }
            eprintln!("skipped: io_uring backend unavailable here ({why})");
            None
        }
        Err(e) => panic!("building a {backend} watcher failed: {e}"),
    }
}

/// A watcher with the default configuration (3 × 64 KiB swap buffers) on `backend`, or
/// `None` when the backend cannot run here (see [`build`]).
pub fn watcher_for<C: Send + 'static>(backend: Backend) -> Option<Watcher<C>> {
    build(backend, Watcher::builder())
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A loopback listener with a large backlog (Go's `net.ListenTCP("tcp", "localhost:0")`).
pub fn listen() -> TcpListener {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&addr.into()).expect("bind 127.0.0.1:0");
    s.listen(4096).expect("listen");
    s.into()
}

/// Connects to `addr` with a bounded wait.
pub fn dial(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A connected loopback TCP pair: `(client, server side)`.
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let ln = TcpListener::bind("127.0.0.1:0").expect("bind");
    let c = dial(ln.local_addr().unwrap());
    let (s, _) = ln.accept().expect("accept");
    (c, s)
}

/// Wakes a thread blocked in accept(2) on `ln` (or a duplicate of it): on Linux, shutting a
/// listening socket down makes a pending and every later accept fail with EINVAL.
fn wake_acceptor(ln: &TcpListener) {
    // SAFETY: shutdown(2) on a descriptor we own; no memory is passed.
    unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(ln), libc::SHUT_RDWR) };
}

/// Accepts on `ln` until `stop`, handing each stream to `f`; returns when `f` returns false.
/// An accept error (other than EINTR) before `stop` is returned.
fn accept_loop(
    ln: TcpListener,
    stop: Arc<AtomicBool>,
    mut f: impl FnMut(TcpStream) -> bool,
) -> std::io::Result<()> {
    loop {
        match ln.accept() {
            Ok((s, _)) => {
                if stop.load(Ordering::Acquire) || !f(s) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                if stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                return Err(e);
            }
        }
    }
}

/// Go's `echoServer(t, bufsize)`: a server watcher on its own threads that echoes every
/// connection, ping-pong (one read of up to `bufsize` bytes, then one write of what it read).
///
/// Unlike Go, each connection has its own buffer (Go shares one `rbuf`/`wbuf` between all
/// connections, a data race once there are several). The buffer moves between the read and the
/// write without copying. Go also pins the server's poller (`SetPollerAffinity(0)` then `(1)`,
/// errors ignored); that is left out here, it only constrains scheduling.
///
/// Dropping it closes the watcher (which closes every server-side connection) and joins both
/// threads.
pub struct EchoServer {
    pub addr: SocketAddr,
    watcher: Arc<Watcher<()>>,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    /// A duplicate of the listener, to wake the acceptor with `shutdown`.
    listener: TcpListener,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Why a server thread gave up, if one did (a test waiting on the echo can stop early).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }
}

fn record(failure: &Mutex<Option<String>>, what: String) {
    eprintln!("echo server: {what}");
    failure.lock().unwrap().get_or_insert(what);
}

/// Starts an [`EchoServer`] on `backend`, or `None` when that backend cannot run here.
pub fn echo_server(backend: Backend, bufsize: usize) -> Option<EchoServer> {
    assert!(bufsize > 0);
    let w: Watcher<()> = watcher_for(backend)?;
    let w = Arc::new(w);
    let ln = listen();
    let addr = ln.local_addr().unwrap();
    let listener = ln.try_clone().expect("dup listener");
    let stop = Arc::new(AtomicBool::new(false));
    let failure = Arc::new(Mutex::new(None));

    let acceptor = {
        let (w, stop, failure) = (w.clone(), stop.clone(), failure.clone());
        std::thread::Builder::new()
            .name("echo-accept".into())
            .spawn(move || {
                let res = accept_loop(ln, stop, |s| {
                    let conn = match w.watch(&s) {
                        Ok(c) => c,
                        Err(Error::WatcherClosed) => return false,
                        Err(e) => {
                            record(&failure, format!("watch: {e}"));
                            return false;
                        }
                    };
                    drop(s); // the watcher holds its own descriptor
                    match w.read((), &conn, Some(vec![0; bufsize])) {
                        Ok(_) => true,
                        Err(e) if matches!(e.error, Error::WatcherClosed) => false,
                        Err(e) => {
                            record(&failure, format!("first read: {}", e.error));
                            false
                        }
                    }
                });
                if let Err(e) = res {
                    record(&failure, format!("accept: {e}"));
                }
            })
            .expect("spawn echo-accept")
    };

    let server = {
        let (w, failure) = (w.clone(), failure.clone());
        std::thread::Builder::new()
            .name("echo-serve".into())
            .spawn(move || loop {
                let batch = match w.wait_io() {
                    Ok(b) => b,
                    Err(Error::WatcherClosed) => return,
                    Err(e) => return record(&failure, format!("wait_io: {e}")),
                };
                for res in batch {
                    if res.error.is_some() {
                        // EOF, a reset, or ClosedPipe at shutdown: release the connection,
                        // as Go's echo server does.
                        let _ = w.free(&res.conn);
                        continue;
                    }
                    let conn = res.conn;
                    let Some(mut buf) = res.buffer.into_vec() else {
                        return record(&failure, "a result without the server's buffer".into());
                    };
                    let submitted = match res.op {
                        OpType::Read => {
                            buf.truncate(res.size);
                            w.write((), &conn, buf)
                        }
                        _ => {
                            buf.resize(bufsize, 0);
                            w.read((), &conn, Some(buf))
                        }
                    };
                    match submitted {
                        Ok(_) => {}
                        Err(e) if matches!(e.error, Error::WatcherClosed) => return,
                        Err(e) => record(&failure, format!("submit: {}", e.error)),
                    }
                }
            })
            .expect("spawn echo-serve")
    };

    Some(EchoServer {
        addr,
        watcher: w,
        stop,
        failure,
        listener,
        threads: vec![acceptor, server],
    })
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        wake_acceptor(&self.listener);
        let _ = self.watcher.close();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Go's `hangupServer`: accepts connections and keeps them open, never reading or writing.
pub struct HangupServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    listener: TcpListener,
    thread: Option<JoinHandle<()>>,
}

pub fn hangup_server() -> HangupServer {
    let ln = listen();
    let addr = ln.local_addr().unwrap();
    let listener = ln.try_clone().expect("dup listener");
    let stop = Arc::new(AtomicBool::new(false));
    let conns = Arc::new(Mutex::new(Vec::new()));
    let thread = {
        let (stop, conns) = (stop.clone(), conns.clone());
        std::thread::spawn(move || {
            let res = accept_loop(ln, stop, |s| {
                conns.lock().unwrap().push(s);
                true
            });
            if let Err(e) = res {
                eprintln!("hangup server: accept: {e}");
            }
        })
    };
    HangupServer {
        addr,
        stop,
        conns,
        listener,
        thread: Some(thread),
    }
}

impl Drop for HangupServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        wake_acceptor(&self.listener);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.conns.lock().unwrap().clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Bounded waiting
// ---------------------------------------------------------------------------------------------

/// Hands every result to `on_result` until it returns `true`, and returns the results left in
/// that last batch. Panics with `what` if `limit` passes first: no test can hang here.
pub fn wait_until<C: Send + 'static>(
    w: &Watcher<C>,
    limit: Duration,
    what: impl Display,
    on_result: impl FnMut(OpResult<C>) -> bool,
) -> Vec<OpResult<C>> {
    wait_until_or(w, limit, what, || None, on_result)
}

/// The one result of the one request outstanding on `w`, within 10 s; fails if none comes
/// or more than one does in that batch.
pub fn one<C: Send + 'static>(w: &Watcher<C>, what: &str) -> OpResult<C> {
    let mut got = None;
    let rest = wait_until(w, Duration::from_secs(10), what, |r| {
        got = Some(r);
        true
    });
    assert!(rest.is_empty(), "more than one result: {rest:?}");
    got.unwrap()
}

/// [`wait_until`] that also gives up (panics) as soon as `abort` returns a reason, checked at
/// least every 100 ms (for example a helper thread that failed).
pub fn wait_until_or<C: Send + 'static>(
    w: &Watcher<C>,
    limit: Duration,
    what: impl Display,
    mut abort: impl FnMut() -> Option<String>,
    mut on_result: impl FnMut(OpResult<C>) -> bool,
) -> Vec<OpResult<C>> {
    let start = Instant::now();
    let mut seen = 0usize;
    loop {
        let Some(left) = limit.checked_sub(start.elapsed()) else {
            panic!("timed out after {limit:?} waiting for {what} ({seen} results seen)");
        };
        if let Some(why) = abort() {
            panic!("gave up waiting for {what} ({seen} results seen): {why}");
        }
        let mut batch = w
            .wait_io_timeout(left.min(Duration::from_millis(100)))
            .unwrap_or_else(|e| panic!("wait_io while waiting for {what}: {e}"));
        while let Some(res) = batch.next() {
            seen += 1;
            if on_result(res) {
                return batch.collect();
            }
        }
    }
}

/// Asserts that no result arrives within `quiet` (used after every expected result was
/// collected, to check that nothing comes twice).
pub fn expect_quiet<C: Send + 'static>(w: &Watcher<C>, quiet: Duration) {
    let batch = w.wait_io_timeout(quiet).expect("wait_io");
    assert!(batch.is_empty(), "unexpected results: {batch:?}");
}

/// Polls `cond` every millisecond until it holds, panicking after `limit`. Only for kernel
/// state that gives no notification (a joined thread leaving `/proc/self/task`).
pub fn eventually(limit: Duration, what: impl Display, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A barrier through the watcher's loop thread: the loop thread handles its messages (frees,
/// handle drops, cancels) in order, so once it has answered a `cancel` sent after some `free`
/// or handle drop, it has processed that free or drop too, and their results are queued no
/// later than the cancelled request's. The cancelled request is a read with no data there: it
/// waits at the loop (a request that can complete at once completes on the submitting thread
/// and never reaches it).
pub struct Probe {
    pub conn: Conn,
    _peer: UnixStream,
}

impl Probe {
    pub fn new<C: Send + 'static>(w: &Watcher<C>) -> Probe {
        let (a, peer) = UnixStream::pair().expect("socketpair");
        let conn = w.watch(&a).expect("watch probe");
        drop(a);
        Probe { conn, _peer: peer }
    }

    /// Round-trips a cancel through the loop thread; returns the other results seen meanwhile.
    pub fn sync<C: Send + 'static>(&mut self, w: &Watcher<C>, ctx: C) -> Vec<OpResult<C>> {
        let id = w
            .read(ctx, &self.conn, Some(vec![0u8; 1]))
            .unwrap_or_else(|e| panic!("probe read refused: {}", e.error));
        assert!(
            w.cancel(id).expect("probe cancel"),
            "the probe read was not pending"
        );
        let mut others = Vec::new();
        let mut rest = wait_until(w, Duration::from_secs(10), "the probe read", |res| {
            if res.id == id {
                assert!(
                    matches!(res.error, Some(gaio::Error::Canceled)),
                    "probe read: {res:?}"
                );
                true
            } else {
                others.push(res);
                false
            }
        });
        others.append(&mut rest);
        others
    }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

pub fn is_deadline(e: &Option<Error>) -> bool {
    matches!(e, Some(Error::Deadline))
}

pub fn is_closed_pipe(e: &Option<Error>) -> bool {
    matches!(e, Some(Error::ClosedPipe))
}

/// The user buffer of a result (panics on a swap slice or none).
pub fn user_buf(b: Buffer) -> Vec<u8> {
    match b {
        Buffer::User(v) => v,
        other => panic!("expected the caller's buffer back, got {other:?}"),
    }
}

/// The user buffer of a result, by reference (panics on a swap slice or none).
pub fn user_buf_ref(b: &Buffer) -> &Vec<u8> {
    match b {
        Buffer::User(v) => v,
        other => panic!("expected the caller's buffer back, got {other:?}"),
    }
}

/// The OS error number of a result's error, if it is an [`Error::Io`].
pub fn errno_of(e: &Option<Error>) -> Option<i32> {
    e.as_ref().and_then(Error::raw_os_error)
}

// ---------------------------------------------------------------------------------------------
// Process inspection: fds, threads, CPUs, limits
// ---------------------------------------------------------------------------------------------

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are fresh descriptors that nothing else owns.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// True when this test has the process to itself: cargo-nextest's process per test, or the
/// child [`own_process`] starts.
pub fn in_own_process() -> bool {
    std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test")
        || std::env::var_os("GAIO_OWN_PROCESS").is_some()
}

/// How long [`own_process`] lets the child run one test before it kills it and fails.
const OWN_PROCESS_LIMIT: Duration = Duration::from_secs(600);

/// True when this test runs in a process of its own, which the fd/thread counting and
/// affinity tests need: under cargo-nextest (a process per test), or in the child this
/// function starts. Otherwise (plain `cargo test`, many tests in one process) it re-runs this
/// one test alone in a child process of the same test binary (`<test> --exact
/// --include-ignored --test-threads=1`, with `GAIO_OWN_PROCESS=1`), waits for it (at most
/// [`OWN_PROCESS_LIMIT`], then kills it), prints its output, panics unless it ran the test
/// and passed, and returns `false`: the caller then returns, its body having run in the child.
///
/// `test` names the test in messages; the child is told which test to run by the name libtest
/// gives the test's thread (`epoll::no_leak_after_free`).
pub fn own_process(test: &str) -> bool {
    if in_own_process() {
        return true;
    }
    let thread = std::thread::current();
    let name = match thread.name() {
        Some(n) if n != "main" => n.to_string(),
        _ => panic!(
            "{test} needs a process of its own and cannot tell its libtest name to re-run \
             itself in one (run with `cargo nextest run`, or as libtest does, on a named thread)"
        ),
    };
    let child = std::process::Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            &name,
            "--exact",
            "--include-ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("GAIO_OWN_PROCESS", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{test}: cannot start its own process: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(OWN_PROCESS_LIMIT) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{test}: waiting for its own process: {e}")),
        Err(_) => {
            // SAFETY: kill(2) on the child we started and have not reaped (the waiting
            // thread reaps it once it dies).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{test}: its own process ran longer than {OWN_PROCESS_LIMIT:?}; killed");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{test} failed in its own process ({})",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test}: its own process did not run it (filter {name:?})"
    );
    false
}

/// Open descriptors of this process with what they point at. Includes the directory handle
/// used to list them, consistently, so compare two snapshots rather than absolute numbers.
pub fn open_fds() -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let e = e.expect("fd entry");
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let target = std::fs::read_link(e.path())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        out.insert(fd, target);
    }
    out
}

pub fn fd_count() -> usize {
    open_fds().len()
}

/// Asserts that the open fds are `expected` in number, listing the difference to `before`
/// if not.
pub fn assert_fds(before: &BTreeMap<i32, String>, expected: usize, when: &str) {
    let now = open_fds();
    if now.len() != expected {
        let added: Vec<_> = now
            .iter()
            .filter(|(fd, t)| before.get(fd) != Some(t))
            .collect();
        let removed: Vec<_> = before
            .iter()
            .filter(|(fd, t)| now.get(fd) != Some(t))
            .collect();
        panic!(
            "{when}: {} fds open, expected {expected} (before: {}); added {added:?}, \
             removed {removed:?}",
            now.len(),
            before.len()
        );
    }
}

/// Whether descriptor number `fd` is open.
pub fn fd_is_open(fd: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists()
}

/// This process's threads as `(tid, name)`.
pub fn threads() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let e = e.expect("task entry");
        let Ok(tid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // A thread can exit between the listing and the read.
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
            out.push((tid, comm.trim().to_string()));
        }
    }
    out.sort();
    out
}

/// The watcher threads of this process: `gaio-poller` and `gaio-loop` (epoll), `gaio-uring`
/// (io_uring, one thread that is poller and loop at once).
pub fn gaio_threads() -> Vec<(i32, String)> {
    threads()
        .into_iter()
        .filter(|(_, n)| n.starts_with("gaio-"))
        .collect()
}

/// Names of the threads `set_poller_affinity` and `set_loop_affinity` pin on `backend`.
pub fn thread_names(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Uring => ("gaio-uring", "gaio-uring"),
        _ => ("gaio-poller", "gaio-loop"),
    }
}

/// How many threads one watcher on `backend` runs.
pub fn threads_per_watcher(backend: Backend) -> usize {
    match backend {
        Backend::Uring => 1,
        _ => 2,
    }
}

/// `Cpus_allowed_list` of thread `tid` ("0", "1", "0-1", …).
pub fn cpus_allowed_list(tid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .unwrap_or_else(|e| panic!("status of thread {tid}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_else(|| panic!("no Cpus_allowed_list for thread {tid}"))
        .trim()
        .to_string()
}

/// The number of CPU ids of this machine (configured CPUs), which is what the library checks
/// ids against. Go's `runtime.NumCPU()` (CPUs of the affinity mask) is the same here.
pub fn cpu_count() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    assert!(n > 0, "sysconf(_SC_NPROCESSORS_CONF) failed");
    n as usize
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu < CPU_SETSIZE`, inside `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Serialises the tests that open thousands of descriptors when several run in one process
/// (plain `cargo test` runs a file's tests on parallel threads; under nextest each test has a
/// process of its own and this never waits). Hold the guard for the whole test.
pub fn many_fds_guard() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns `(soft, hard)` afterwards.
pub fn raise_nofile() -> (libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit; raising the soft limit up to the hard one is allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim = want;
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Raises `RLIMIT_NOFILE` and checks that `conns` more descriptors fit (plus those open now
/// and a margin). If not, prints the reason and returns false: the caller skips.
pub fn fds_available(conns: usize) -> bool {
    let (soft, hard) = raise_nofile();
    let needed = (conns + fd_count() + 64) as libc::rlim_t;
    if soft < needed {
        eprintln!("skipped: RLIMIT_NOFILE hard limit {hard} < needed {needed}");
        return false;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// xorshift64: test data without a `rand` dependency (Go uses crypto/rand; the content only has
/// to be hard to echo back by accident).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        let n = tail.len();
        tail.copy_from_slice(&self.next_u64().to_le_bytes()[..n]);
    }
}

/// `n` pseudo-random bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    XorShift::new(seed).fill(&mut v);
    v
}

/// Byte `j` of the message of connection `i` in the parallel tests: distinct per connection
/// and per position, so a byte delivered to the wrong connection or offset is caught.
pub fn pattern(i: usize, j: usize) -> u8 {
    (i.wrapping_mul(131) ^ j.wrapping_mul(7) ^ (j >> 8)) as u8
}

pub fn message(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| pattern(i, j)).collect()
}

/// Index of the first differing byte of two equal-length slices.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

// ---------------------------------------------------------------------------------------------
// Client connections held by a child process
// ---------------------------------------------------------------------------------------------

/// The client ends of many loopback connections, held by a child process: this test binary
/// run again as its `client_process` test. The parent's descriptor limit then covers only the
/// watcher's side: 10 000 connections need 10 000 descriptors here and 10 000 there, within
/// the 20 000 hard limit of the machine this suite was written on.
///
/// A test file that uses it declares the entry point the child runs, at the crate root:
///
/// ```ignore
/// #[test]
/// #[ignore = "helper process for the many-connection tests, started by them"]
/// fn client_process() {
///     util::client_process_main();
/// }
/// ```
///
/// Protocol: the child connects `n` times to the address and prints `connected <n>`; then it
/// reads commands from its stdin, one per line:
/// - `send`: writes `payload` bytes of 0x5a on every connection, then prints `sent`;
/// - `echo <round>`: writes [`message`]`(i + round, payload)` on connection `i`, for every
///   connection, then reads `payload` bytes back from each and compares them; prints
///   `echoed <n>`, or exits non-zero with the reason on stderr;
/// - end of input (the parent dropped this value, or died): it drops every connection and
///   exits.
///
/// Every wait, in the child and here, is bounded.
pub struct ChildClients {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildClients {
    /// Starts the child and waits (up to 60 s) until its `n` connections to `addr` are up.
    pub fn connect(addr: SocketAddr, n: usize, payload: usize) -> ChildClients {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["client_process", "--exact", "--ignored", "--nocapture"])
            .env("GAIO_CLIENT_ADDR", addr.to_string())
            .env("GAIO_CLIENT_N", n.to_string())
            .env("GAIO_CLIENT_PAYLOAD", payload.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the client process");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut c = ChildClients { child, lines };
        c.expect_line("connected", Duration::from_secs(60));
        c
    }

    /// Waits up to `limit` for an output line starting with `prefix` (libtest's own lines are
    /// skipped) and returns it; panics if the child exits or the time passes first.
    pub fn expect_line(&mut self, prefix: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let left = limit.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!("the client process did not print {prefix:?} within {limit:?}")
            });
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the client process did not print {prefix:?} within {limit:?}")
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    panic!("the client process exited before printing {prefix:?}: {status:?}")
                }
            }
        }
    }

    fn command(&mut self, cmd: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{cmd}").expect("command to the client process");
        stdin.flush().expect("command to the client process");
    }

    /// Tells the child to send its payload on every connection (does not wait).
    pub fn send(&mut self) {
        self.command("send");
    }

    /// One echo round (see the type's documentation); returns once every connection has its
    /// bytes back, verified, and panics if that takes longer than `limit`.
    pub fn echo(&mut self, round: usize, limit: Duration) {
        self.command(&format!("echo {round}"));
        self.expect_line("echoed", limit);
    }
}

impl Drop for ChildClients {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of the child process of [`ChildClients`]. Does nothing when run without the
/// parent's environment (for example by `cargo test -- --ignored`).
pub fn client_process_main() {
    use std::io::{BufRead, Write};
    let Ok(addr) = std::env::var("GAIO_CLIENT_ADDR") else {
        return;
    };
    raise_nofile();
    let env = |k: &str| -> usize { std::env::var(k).unwrap().parse().unwrap() };
    let (n, payload) = (env("GAIO_CLIENT_N"), env("GAIO_CLIENT_PAYLOAD"));
    let addr: SocketAddr = addr.parse().unwrap();
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("client {i} of {n}: connect: {e}"))
        })
        .collect();
    for c in &conns {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    }
    let say = |s: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{s}").unwrap();
        out.flush().unwrap();
    };
    say(format!("connected {n}"));
    let stdin = std::io::stdin();
    let mut cmd = String::new();
    while stdin.lock().read_line(&mut cmd).unwrap_or(0) > 0 {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            ["send"] => {
                let bytes = vec![0x5a; payload];
                for c in &mut conns {
                    c.write_all(&bytes).unwrap();
                }
                say("sent".into());
            }
            ["echo", round] => {
                let round: usize = round.parse().unwrap();
                for (i, c) in conns.iter_mut().enumerate() {
                    c.write_all(&message(i + round, payload))
                        .unwrap_or_else(|e| panic!("client {i}: write: {e}"));
                }
                let mut back = vec![0u8; payload];
                for (i, c) in conns.iter_mut().enumerate() {
                    c.read_exact(&mut back)
                        .unwrap_or_else(|e| panic!("client {i}: echo: {e}"));
                    if let Some(k) = first_difference(&back, &message(i + round, payload)) {
                        panic!("client {i}, round {round}: wrong byte at offset {k}");
                    }
                }
                say(format!("echoed {n}"));
            }
            other => panic!("client process: unknown command {other:?}"),
        }
        cmd.clear();
    }
    // End of input: the parent is done; dropping `conns` closes every connection.
}

// ---------------------------------------------------------------------------------------------
// Faults and process state
// ---------------------------------------------------------------------------------------------

/// Closes `s` with an RST instead of a FIN (`SO_LINGER` of zero, then close): the peer's
/// pending and later calls fail with `ECONNRESET` or `EPIPE`.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(s);
}

/// This process's resident set size (`VmRSS` of `/proc/self/status`), in KiB.
pub fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The current `RLIMIT_NOFILE` as `(soft, hard)`.
pub fn nofile() -> (libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    (lim.rlim_cur, lim.rlim_max)
}

/// Sets the soft `RLIMIT_NOFILE` (the hard one unchanged). Only in a test that owns its
/// process: it applies to every thread.
pub fn set_nofile_soft(soft: libc::rlim_t) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: nofile().1,
    };
    // SAFETY: `lim` is a valid rlimit; lowering the soft limit is always allowed.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// The kernel thread id of the calling thread.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The scheduler state letter of thread `tid` of this process (`R` running, `S` sleeping in
/// an interruptible wait such as a futex, …), from `/proc/self/task/<tid>/stat`.
pub fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

// ---------------------------------------------------------------------------------------------
// Model tests
// ---------------------------------------------------------------------------------------------

/// The proptest configuration the model tests share: failures persisted in `regressions` (a
/// path, `concat!(env!("CARGO_MANIFEST_DIR"), "/tests/…")`; its seeds are replayed first on
/// every run), bounded shrinking, and `default_cases` cases unless `PROPTEST_CASES` says
/// otherwise.
pub fn model_config(
    regressions: &'static str,
    default_cases: u32,
) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, FileFailurePersistence};
    let mut cfg = Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        max_shrink_iters: 1024,
        max_shrink_time: 150_000,
        ..Config::default()
    };
    if std::env::var("PROPTEST_CASES").is_err() {
        cfg.cases = default_cases;
    }
    cfg
}
