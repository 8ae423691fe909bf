//! Heap allocations per operation at steady state, on both backends (issue 5: "the target is
//! zero allocations per read or write with caller buffers").
//!
//! ```text
//! cargo bench --bench allocs                    # 100 000 operations per case, about a minute
//! cargo bench --bench allocs -- --quick         # 5 000 per case, a few seconds
//! cargo bench --bench allocs -- --ops 20000 --only write,read --traces 64
//! ```
//!
//! A counting `#[global_allocator]` (wrapping `System`) counts every allocation, reallocation
//! and the bytes asked for, from every thread of the process, while a window is open. Each
//! case sets up a watcher on one backend and a connected loopback pair (or a file), warms up
//! with [`WARMUP`] operations (slabs, queues and result batches reach their size), then counts
//! over `--ops` operations, one in flight at a time, each waited for with `wait_io` and its
//! buffer reused for the next. The other end of the socket is a plain `std` socket on a thread
//! whose loop does not allocate (it drains, floods, or echoes through one fixed buffer), so
//! the count is the library's: its submit path (where reads and writes that can complete at
//! once do), its loop thread (epoll) or ring thread (io_uring), the epoll file threads, and
//! `wait_io`.
//!
//! Cases: `write` (4 KiB caller `Vec`), `read` (4 KiB caller `Vec`, data already there),
//! `read_full` (4 KiB), `swap-read` (a read into the swap buffers, its `SwapSlice` dropped),
//! `echo` (a 64-byte write then a read that waits for the echo: the read is armed before data
//! arrives), `echo-deadline` (the same with `write_timeout`/`read_timeout`, so the timer path
//! runs), `read_at`/`write_at` (4 KiB at rotating offsets of a 4 MiB file in the page cache,
//! kept in `target/tmp`), and `accept-connect` (a `connect` and an `accept` on the same
//! watcher, both connections freed; fewer operations, as each leaves a TIME_WAIT socket).
//!
//! When a count is not zero, a second, shorter window captures a backtrace for each of the
//! first `--traces` allocations (inside the allocator, with a reentrancy guard so that the
//! capture's own allocations are neither counted nor traced) and reports the library call
//! sites: the innermost frame in `src/`, the function it called, and the `src/` frames above.
//!
//! Output: a table on stdout; a full run also writes `benches/results/allocs.md` (`--out`) and
//! `target/bench-results/allocs.json` (`--json`). With no argument at all (as `cargo test
//! --benches` runs it) it is a `--quick` smoke test. A watchdog ends a run that overruns.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::example::workloads::{set_phase, spawn_watchdog, BenchResult};
use common::example::Args;
use common::results::{BenchFile, Better, ImplResult, Workload};
use common::run_info::{self, CpuSnapshot};
use common::{cli, outputs};
use gaio::{Backend, Buffer, Conn, OpResult, OpType, Watcher};

// ------------------------------------------------------------------------------------------
// The counting allocator
// ------------------------------------------------------------------------------------------

/// `System`, counting what happens while [`COUNTING`] is set.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Backtraces still to capture in the current window.
static TRACES_LEFT: AtomicUsize = AtomicUsize::new(0);
/// The captured backtraces (unresolved: symbols are looked up after the window).
static TRACES: Mutex<Vec<Backtrace>> = Mutex::new(Vec::new());

thread_local! {
    /// Set while this thread is inside the allocator's own bookkeeping (capturing a
    /// backtrace allocates): such allocations are not counted and not traced.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn note(&self, realloc: bool, bytes: usize) {
        if !COUNTING.load(Ordering::Relaxed) {
            return;
        }
        // A thread whose TLS is gone (exiting) counts, but is not traced.
        let in_hook = IN_HOOK.try_with(Cell::get).unwrap_or(false);
        if in_hook {
            return;
        }
        if realloc {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
        } else {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
        let take = TRACES_LEFT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if take && IN_HOOK.try_with(|h| h.set(true)).is_ok() {
            let bt = Backtrace::force_capture();
            if let Ok(mut traces) = TRACES.lock() {
                traces.push(bt);
            }
            let _ = IN_HOOK.try_with(|h| h.set(false));
        }
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping around it only
// touches atomics, a thread-local flag, and (guarded by that flag against recursion) a
// mutex-protected vector.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note(false, layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note(false, layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note(true, new_size);
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What one window counted.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    allocs: u64,
    reallocs: u64,
    bytes: u64,
}

/// Opens a counting window (capturing backtraces of its first `traces` allocations).
fn open_window(traces: usize) {
    ALLOCS.store(0, Ordering::SeqCst);
    REALLOCS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    TRACES_LEFT.store(traces, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
}

fn close_window() -> Counts {
    COUNTING.store(false, Ordering::SeqCst);
    TRACES_LEFT.store(0, Ordering::SeqCst);
    Counts {
        allocs: ALLOCS.load(Ordering::SeqCst),
        reallocs: REALLOCS.load(Ordering::SeqCst),
        bytes: BYTES.load(Ordering::SeqCst),
    }
}

// ------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------

/// Operations before the window opens.
const WARMUP: usize = 1000;
/// Longest wait for one result.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// The size of the caller buffers.
const BUF: usize = 4096;
/// The echo message.
const ECHO: usize = 64;
/// The file the file cases use.
const FILE_SIZE: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Write,
    Read,
    ReadFull,
    SwapRead,
    Echo,
    EchoDeadline,
    ReadAt,
    WriteAt,
    AcceptConnect,
}

impl Case {
    const ALL: [Case; 9] = [
        Case::Write,
        Case::Read,
        Case::ReadFull,
        Case::SwapRead,
        Case::Echo,
        Case::EchoDeadline,
        Case::ReadAt,
        Case::WriteAt,
        Case::AcceptConnect,
    ];

    fn key(self) -> &'static str {
        match self {
            Case::Write => "write",
            Case::Read => "read",
            Case::ReadFull => "read_full",
            Case::SwapRead => "swap-read",
            Case::Echo => "echo",
            Case::EchoDeadline => "echo-deadline",
            Case::ReadAt => "read_at",
            Case::WriteAt => "write_at",
            Case::AcceptConnect => "accept-connect",
        }
    }

    /// What one counted operation is.
    fn title(self) -> &'static str {
        match self {
            Case::Write => "write, 4 KiB caller Vec",
            Case::Read => "read, 4 KiB caller Vec (data ready)",
            Case::ReadFull => "read_full, 4 KiB caller Vec",
            Case::SwapRead => "read into the swap buffers, SwapSlice dropped",
            Case::Echo => "echo round trip: write 64 B + read (armed before data)",
            Case::EchoDeadline => "echo round trip with write_timeout + read_timeout",
            Case::ReadAt => "read_at, 4 KiB caller Vec, file in the page cache",
            Case::WriteAt => "write_at, 4 KiB caller Vec, file in the page cache",
            Case::AcceptConnect => "accept + connect on one watcher, both freed",
        }
    }

    /// Operations counted, out of `ops` for the socket cases.
    fn ops(self, ops: usize) -> usize {
        match self {
            // Each leaves a TIME_WAIT socket behind; a few thousand are plenty.
            Case::AcceptConnect => ops.min(2000),
            _ => ops,
        }
    }
}

/// Runs `op` [`WARMUP`] times, then `n` times in a counting window; if that counted
/// anything, `trace_ops` more times in a window capturing the first `traces` backtraces.
fn count(
    n: usize,
    traces: usize,
    mut op: impl FnMut() -> BenchResult<()>,
) -> BenchResult<(Counts, Vec<Backtrace>)> {
    for _ in 0..WARMUP.min(n) {
        op()?;
    }
    open_window(0);
    let mut failed = Ok(());
    for _ in 0..n {
        if let Err(e) = op() {
            failed = Err(e);
            break;
        }
    }
    let counts = close_window();
    failed?;
    let mut bts = Vec::new();
    if counts.allocs + counts.reallocs > 0 && traces > 0 {
        TRACES
            .lock()
            .map_err(|_| "trace list poisoned")?
            .reserve(traces);
        open_window(traces);
        let mut failed = Ok(());
        for _ in 0..(n / 10).max(traces) {
            if let Err(e) = op() {
                failed = Err(e);
                break;
            }
        }
        close_window();
        failed?;
        bts = std::mem::take(&mut *TRACES.lock().map_err(|_| "trace list poisoned")?);
    }
    Ok((counts, bts))
}

/// Waits for exactly one result and hands it to `f`.
fn one<T>(
    w: &Watcher<()>,
    what: &'static str,
    f: impl FnOnce(OpResult<()>) -> BenchResult<T>,
) -> BenchResult<T> {
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let mut batch = w
            .wait_io_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|e| format!("{what}: wait_io: {e}"))?;
        if let Some(res) = batch.next() {
            if !batch.is_empty() {
                return Err(format!("{what}: more results than requests"));
            }
            return f(res);
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: no result within {OP_TIMEOUT:?}"));
        }
    }
}

/// The buffer of a successful result, or the error.
fn ok_vec(res: OpResult<()>, what: &'static str) -> BenchResult<(Vec<u8>, usize)> {
    if let Some(e) = res.error {
        return Err(format!("{what}: {e}"));
    }
    let size = res.size;
    match res.buffer {
        Buffer::User(v) => Ok((v, size)),
        other => Err(format!("{what}: unexpected buffer {other:?}")),
    }
}

/// What the plain-socket peer thread does, through one fixed buffer.
#[derive(Clone, Copy)]
enum PeerRole {
    /// Reads and discards until EOF.
    Drain,
    /// Writes until the socket is shut down.
    Flood,
    /// Echoes whatever arrives.
    Echo,
}

/// A connected pair: the watched end and the peer thread on the other.
struct Pair {
    conn: Conn,
    /// A handle on the peer's socket, to shut it down (which ends the peer's loop).
    peer_sock: TcpStream,
    peer: Option<JoinHandle<()>>,
}

impl Pair {
    fn new(w: &Watcher<()>, role: PeerRole) -> BenchResult<Pair> {
        let ln = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let addr = ln.local_addr().map_err(|e| format!("local_addr: {e}"))?;
        let peer = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let (ours, _) = ln.accept().map_err(|e| format!("accept: {e}"))?;
        let _ = peer.set_nodelay(true);
        let _ = ours.set_nodelay(true);
        let conn = w.watch(&ours).map_err(|e| format!("watch: {e}"))?;
        let peer_sock = peer.try_clone().map_err(|e| format!("try_clone: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("peer".into())
            .spawn(move || peer_loop(peer, role))
            .map_err(|e| format!("spawn: {e}"))?;
        Ok(Pair {
            conn,
            peer_sock,
            peer: Some(thread),
        })
    }

    fn end(mut self, w: &Watcher<()>) {
        let _ = w.free(&self.conn);
        let _ = self.peer_sock.shutdown(Shutdown::Both);
        if let Some(t) = self.peer.take() {
            let _ = t.join();
        }
    }
}

/// The peer's loop: no allocation inside it (one stack buffer; errors end it).
fn peer_loop(mut s: TcpStream, role: PeerRole) {
    let mut buf = [0u8; 64 * 1024];
    match role {
        PeerRole::Drain => while matches!(s.read(&mut buf), Ok(n) if n > 0) {},
        PeerRole::Flood => while s.write(&buf).is_ok() {},
        PeerRole::Echo => loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if s.write_all(&buf[..n]).is_err() {
                return;
            }
        },
    }
}

/// Runs one case on `w`; returns its counts and backtraces.
fn run_case(
    w: &Watcher<()>,
    case: Case,
    n: usize,
    traces: usize,
    file: &Path,
) -> BenchResult<(Counts, Vec<Backtrace>)> {
    match case {
        Case::Write => {
            let pair = Pair::new(w, PeerRole::Drain)?;
            let mut buf = Some(vec![7u8; BUF]);
            let r = count(n, traces, || {
                let b = buf.take().ok_or("write: no buffer")?;
                w.write((), &pair.conn, b)
                    .map_err(|e| format!("write: {e}"))?;
                let (v, size) = one(w, "write", |r| ok_vec(r, "write"))?;
                if size != BUF {
                    return Err(format!("write: {size} of {BUF} bytes"));
                }
                buf = Some(v);
                Ok(())
            });
            pair.end(w);
            r
        }
        Case::Read | Case::ReadFull => {
            let pair = Pair::new(w, PeerRole::Flood)?;
            let mut buf = Some(vec![0u8; BUF]);
            let full = case == Case::ReadFull;
            let r = count(n, traces, || {
                let b = buf.take().ok_or("read: no buffer")?;
                let submitted = if full {
                    w.read_full((), &pair.conn, b, None)
                } else {
                    w.read((), &pair.conn, Some(b))
                };
                submitted.map_err(|e| format!("read: {e}"))?;
                let (v, size) = one(w, "read", |r| ok_vec(r, "read"))?;
                if size == 0 || (full && size != BUF) {
                    return Err(format!("read: {size} bytes"));
                }
                buf = Some(v);
                Ok(())
            });
            pair.end(w);
            r
        }
        Case::SwapRead => {
            let pair = Pair::new(w, PeerRole::Flood)?;
            let r = count(n, traces, || {
                w.read((), &pair.conn, None)
                    .map_err(|e| format!("swap read: {e}"))?;
                one(w, "swap read", |res| match (&res.error, &res.buffer) {
                    (None, Buffer::Swap(s)) if !s.is_empty() => Ok(()),
                    _ => Err(format!("swap read: {res:?}")),
                })
                // The result, and with it the SwapSlice, is dropped here.
            });
            pair.end(w);
            r
        }
        Case::Echo | Case::EchoDeadline => {
            let pair = Pair::new(w, PeerRole::Echo)?;
            let deadlines = case == Case::EchoDeadline;
            let mut wbuf = Some(vec![1u8; ECHO]);
            let mut rbuf = Some(vec![0u8; ECHO]);
            let r = count(n, traces, || {
                let wb = wbuf.take().ok_or("echo: no write buffer")?;
                let far = Instant::now() + Duration::from_secs(60);
                let submitted = if deadlines {
                    w.write_timeout((), &pair.conn, wb, far)
                } else {
                    w.write((), &pair.conn, wb)
                };
                submitted.map_err(|e| format!("echo write: {e}"))?;
                let (v, _) = one(w, "echo write", |r| ok_vec(r, "echo write"))?;
                wbuf = Some(v);
                // Read until the whole message is back (usually one read).
                let mut got = 0;
                while got < ECHO {
                    let rb = rbuf.take().ok_or("echo: no read buffer")?;
                    let submitted = if deadlines {
                        w.read_timeout((), &pair.conn, Some(rb), far)
                    } else {
                        w.read((), &pair.conn, Some(rb))
                    };
                    submitted.map_err(|e| format!("echo read: {e}"))?;
                    let (v, size) = one(w, "echo read", |r| ok_vec(r, "echo read"))?;
                    got += size;
                    rbuf = Some(v);
                }
                Ok(())
            });
            pair.end(w);
            r
        }
        Case::ReadAt | Case::WriteAt => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(file)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let conn = w.watch(&f).map_err(|e| format!("watch file: {e}"))?;
            drop(f);
            let mut buf = Some(vec![3u8; BUF]);
            let mut offset = 0u64;
            let write = case == Case::WriteAt;
            let r = count(n, traces, || {
                let b = buf.take().ok_or("file: no buffer")?;
                let submitted = if write {
                    w.write_at((), &conn, b, offset, None)
                } else {
                    w.read_at((), &conn, b, offset, None)
                };
                submitted.map_err(|e| format!("{}: {e}", case.key()))?;
                let (v, size) = one(w, "file op", |r| ok_vec(r, "file op"))?;
                if size != BUF {
                    return Err(format!("{}: {size} of {BUF} bytes", case.key()));
                }
                buf = Some(v);
                offset = (offset + BUF as u64) % FILE_SIZE;
                Ok(())
            });
            let _ = w.free(&conn);
            r
        }
        Case::AcceptConnect => {
            let ln = common::example::listen(SocketAddr::from(([127, 0, 0, 1], 0)))
                .map_err(|e| format!("listen: {e}"))?;
            let addr = ln.local_addr().map_err(|e| format!("local_addr: {e}"))?;
            let lconn = w.watch(&ln).map_err(|e| format!("watch listener: {e}"))?;
            drop(ln);
            let r = count(n, traces, || {
                w.accept((), &lconn).map_err(|e| format!("accept: {e}"))?;
                w.connect((), addr, None)
                    .map_err(|e| format!("connect: {e}"))?;
                let mut left = 2;
                let deadline = Instant::now() + OP_TIMEOUT;
                while left > 0 {
                    let batch = w
                        .wait_io_timeout(deadline.saturating_duration_since(Instant::now()))
                        .map_err(|e| format!("accept/connect: wait_io: {e}"))?;
                    for res in batch {
                        left -= 1;
                        if let Some(e) = &res.error {
                            return Err(format!("{:?}: {e}", res.op));
                        }
                        match res.op {
                            OpType::Accept => {
                                let c = res.accepted.ok_or("accept without a connection")?;
                                let _ = w.free(&c);
                            }
                            _ => {
                                let _ = w.free(&res.conn);
                            }
                        }
                    }
                    if left > 0 && Instant::now() >= deadline {
                        return Err("accept/connect: no result in time".into());
                    }
                }
                Ok(())
            });
            let _ = w.free(&lconn);
            r
        }
    }
}

/// The file of the file cases: [`FILE_SIZE`] bytes in `target/tmp` (reused).
fn prepare_file() -> BenchResult<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gaio-bench-allocs");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("data");
    let ok = std::fs::metadata(&path).is_ok_and(|m| m.len() == FILE_SIZE);
    if !ok {
        let mut f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let block = vec![0x5au8; 1 << 20];
        for _ in 0..FILE_SIZE / block.len() as u64 {
            f.write_all(&block)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(path)
}

// ------------------------------------------------------------------------------------------
// Call sites
// ------------------------------------------------------------------------------------------

/// One captured allocation, reduced to the library's part of its stack.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    /// The innermost `src/` frame: `src/file.rs:line (function)`, or where it came from when
    /// no library frame is on the stack.
    at: String,
    /// The function that frame called (the allocating one: `Box::new`, `Vec::push`, ...).
    via: String,
    /// The `src/` frames above it, innermost first.
    callers: Vec<String>,
}

/// A frame of a resolved backtrace: function, and `file:line` when known.
struct Frame {
    func: String,
    at: Option<String>,
}

/// Parses `Backtrace`'s text (`  N: function` lines, each optionally followed by `at
/// file:line:col`; inlined functions repeat without a number).
fn frames(bt: &Backtrace) -> Vec<Frame> {
    let text = format!("{bt}");
    let mut out: Vec<Frame> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(loc) = t.strip_prefix("at ") {
            if let Some(f) = out.last_mut() {
                // Drop the column.
                let loc = match loc.rsplit_once(':') {
                    Some((fl, col)) if col.chars().all(|c| c.is_ascii_digit()) => fl,
                    _ => loc,
                };
                f.at = Some(loc.to_string());
            }
        } else if !t.is_empty() {
            let func = match t.split_once(": ") {
                Some((n, f)) if n.chars().all(|c| c.is_ascii_digit()) => f,
                _ => t,
            };
            out.push(Frame {
                func: func.to_string(),
                at: None,
            });
        }
    }
    out
}

/// The path of `at` relative to the project when it is in the library's `src/`.
fn library_path(at: &str) -> Option<String> {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let rel = at
        .strip_prefix(manifest)
        .map(|r| r.trim_start_matches('/'))
        .or_else(|| at.strip_prefix("./"))
        .unwrap_or(at);
    rel.starts_with("src/").then(|| rel.to_string())
}

/// Strips the generic arguments and hash from a function name, for short reports.
fn short_fn(f: &str) -> String {
    let f = match f.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 => head,
        _ => f,
    };
    f.to_string()
}

fn site(bt: &Backtrace) -> Site {
    let fs = frames(bt);
    // Skip the allocator's own frames and everything inside std's capture.
    let lib: Vec<usize> = fs
        .iter()
        .enumerate()
        .filter(|(_, f)| f.at.as_deref().and_then(library_path).is_some())
        .map(|(i, _)| i)
        .collect();
    let fmt = |f: &Frame| {
        format!(
            "{} ({})",
            f.at.as_deref().and_then(library_path).unwrap_or_default(),
            short_fn(&f.func)
        )
    };
    match lib.first() {
        Some(&i) => Site {
            at: fmt(&fs[i]),
            via: i
                .checked_sub(1)
                .map(|j| short_fn(&fs[j].func))
                .unwrap_or_default(),
            callers: lib[1..].iter().take(4).map(|&j| fmt(&fs[j])).collect(),
        },
        None => {
            // Not through the library: name the first frame outside the allocator and std.
            let outside = fs
                .iter()
                .find(|f| {
                    !f.func.contains("alloc")
                        && !f.func.starts_with("std::")
                        && !f.func.starts_with("core::")
                        && !f.func.contains("Counting")
                        && !f.func.contains("backtrace")
                })
                .map(|f| {
                    format!(
                        "{} ({})",
                        f.at.clone().unwrap_or_default(),
                        short_fn(&f.func)
                    )
                })
                .unwrap_or_else(|| "unknown".into());
            Site {
                at: format!("outside the library: {outside}"),
                via: String::new(),
                callers: Vec::new(),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Options, run, report
// ------------------------------------------------------------------------------------------

const USAGE: &str = "\
usage: cargo bench --bench allocs [-- OPTIONS]

Heap allocations per operation at steady state on both backends, with the call sites of the
first allocations traced.

options:
  --quick                  5000 operations per case (the default with no argument at all)
  --ops N                  operations per case (100 to 10000000; default 100000)
  --traces K               allocations traced per case (default 32)
  --only LIST              comma-separated cases: write, read, read_full, swap-read, echo,
                           echo-deadline, read_at, write_at, accept-connect (default all)
  --out PATH               write the report here (default benches/results/allocs.md)
  --json PATH              write the results file here (default
                           target/bench-results/allocs.json)
  -h, --help               print this help";

struct Options {
    quick: bool,
    ops: Option<usize>,
    traces: usize,
    only: Vec<Case>,
    out: Option<String>,
    json: Option<String>,
}

fn parse_args() -> BenchResult<Options> {
    let mut o = Options {
        // Run with no argument at all (cargo test --benches, --all-targets): a smoke test.
        quick: run_info::no_arguments(),
        ops: None,
        traces: 32,
        only: Case::ALL.to_vec(),
        out: None,
        json: None,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--quick" => {
                o.quick = true;
            }
            "--ops" => o.ops = Some(args.parse_within(&flag, 100..=10_000_000)?),
            "--traces" => o.traces = args.parse(&flag)?,
            "--only" => {
                let list = args.value(&flag)?;
                o.only = cli::pick(&list, "--only", USAGE, &Case::ALL, Case::key)?;
            }
            "--out" => o.out = Some(args.value(&flag)?),
            "--json" => o.json = Some(args.value(&flag)?),
            other => cli::other_flag(other, USAGE)?,
        }
    }
    Ok(o)
}

const BACKENDS: [(Backend, &str); 2] = [
    (Backend::Epoll, "gaio-epoll"),
    (Backend::Uring, "gaio-uring"),
];

/// One case on one backend.
struct Measured {
    ops: usize,
    counts: Counts,
    /// Call sites of the traced allocations, with how many of the traces each took.
    sites: BTreeMap<Site, usize>,
    traced: usize,
}

impl Measured {
    fn per_op(&self) -> f64 {
        (self.counts.allocs + self.counts.reallocs) as f64 / self.ops as f64
    }
}

fn run(o: Options) -> BenchResult<()> {
    let ops = o.ops.unwrap_or(if o.quick { 5_000 } else { 100_000 });
    // Generous: a slow op takes 100 µs here; tracing adds a tenth and the symbol lookups.
    spawn_watchdog(
        "allocs",
        Duration::from_secs(60) + Duration::from_micros(300) * (ops * o.only.len() * 2) as u32,
    );
    let file = prepare_file()?;
    let load_from = CpuSnapshot::take();
    // [case][backend]
    let mut results: Vec<[Option<Measured>; 2]> = Vec::new();
    for &case in &o.only {
        let mut row: [Option<Measured>; 2] = [None, None];
        for (bi, (backend, name)) in BACKENDS.iter().enumerate() {
            set_phase(case.key());
            let w: Watcher<()> = Watcher::builder()
                .backend(*backend)
                .build()
                .map_err(|e| format!("cannot start a {backend} watcher: {e}"))?;
            let n = case.ops(ops);
            let (counts, bts) = run_case(&w, case, n, o.traces, &file)?;
            w.close().map_err(|e| format!("close: {e}"))?;
            drop(w);
            let mut sites = BTreeMap::new();
            for bt in &bts {
                *sites.entry(site(bt)).or_insert(0) += 1;
            }
            let m = Measured {
                ops: n,
                counts,
                sites,
                traced: bts.len(),
            };
            println!(
                "{:<15} {:<10} {:>9.3} allocs/op ({} allocs + {} reallocs, {} bytes over {} ops)",
                case.key(),
                name,
                m.per_op(),
                counts.allocs,
                counts.reallocs,
                counts.bytes,
                n
            );
            row[bi] = Some(m);
        }
        results.push(row);
    }
    let other = CpuSnapshot::other_since(load_from);
    let file = BenchFile {
        bench: "allocs".into(),
        date: run_info::utc_now(),
        kernel: run_info::kernel_release(),
        cores: run_info::cores(),
        command: run_info::command("allocs"),
        other_load: run_info::other_load_text(other, &[]),
        workloads: workloads(&o.only, &results),
        notes: Vec::new(),
    };
    let md = report(&file, ops, &o.only, &results);
    println!("\n{md}");
    outputs::write_report("allocs", !o.quick, o.out.as_deref(), &md)?;
    outputs::write_results(!o.quick, o.json.as_deref(), &file)
}

fn workloads(cases: &[Case], results: &[[Option<Measured>; 2]]) -> Vec<Workload> {
    cases
        .iter()
        .zip(results)
        .map(|(case, row)| {
            let per = |f: &dyn Fn(&Measured) -> f64| -> BTreeMap<String, serde_json::Value> {
                BACKENDS
                    .iter()
                    .zip(row)
                    .filter_map(|((_, name), m)| {
                        m.as_ref().map(|m| (name.to_string(), f(m).into()))
                    })
                    .collect()
            };
            Workload {
                name: case.title().into(),
                metric: "allocations per op".into(),
                better: Better::Lower,
                results: BACKENDS
                    .iter()
                    .zip(row)
                    .filter_map(|((_, name), m)| {
                        m.as_ref().map(|m| ImplResult {
                            imp: name.to_string(),
                            median: m.per_op(),
                            rounds: vec![m.per_op()],
                        })
                    })
                    .collect(),
                extra: BTreeMap::from([
                    (
                        "reallocations per op".into(),
                        per(&|m| m.counts.reallocs as f64 / m.ops as f64),
                    ),
                    (
                        "bytes per op".into(),
                        per(&|m| m.counts.bytes as f64 / m.ops as f64),
                    ),
                    ("ops".into(), per(&|m| m.ops as f64)),
                ]),
            }
        })
        .collect()
}

fn report(
    file: &BenchFile,
    ops: usize,
    cases: &[Case],
    results: &[[Option<Measured>; 2]],
) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# Heap allocations per operation at steady state\n");
    let _ = writeln!(
        r,
        "`{}`: {}, kernel {}, {} cores. Other load: {}.\n",
        file.command,
        file.date,
        file.kernel,
        file.cores,
        file.other_load
            .as_deref()
            .unwrap_or("unknown (/proc/stat unreadable)")
    );
    let _ = writeln!(
        r,
        "Allocations (`alloc`, `alloc_zeroed` and `realloc` calls) from every thread of the \
         process, counted over {ops} operations per case (fewer for accept-connect) after \
         {WARMUP} of warm-up, one operation in flight, divided by the operations. The target \
         is 0 for reads and writes with caller buffers.\n"
    );
    let _ = writeln!(
        r,
        "| case | what one operation is | gaio-epoll allocs/op | gaio-uring allocs/op | bytes/op epoll | bytes/op uring |"
    );
    let _ = writeln!(r, "|---|---|---:|---:|---:|---:|");
    for (case, row) in cases.iter().zip(results) {
        let cell = |m: &Option<Measured>, f: &dyn Fn(&Measured) -> String| {
            m.as_ref().map_or("-".into(), f)
        };
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} |",
            case.key(),
            case.title(),
            cell(&row[0], &|m| format!("{:.3}", m.per_op())),
            cell(&row[1], &|m| format!("{:.3}", m.per_op())),
            cell(&row[0], &|m| format!(
                "{:.0}",
                m.counts.bytes as f64 / m.ops as f64
            )),
            cell(&row[1], &|m| format!(
                "{:.0}",
                m.counts.bytes as f64 / m.ops as f64
            )),
        );
    }
    let _ = writeln!(r, "\n## Where the allocations come from\n");
    let _ = writeln!(
        r,
        "For each case that allocated, the first allocations of a second, shorter window were \
         traced; each line is a call site in the library (the innermost `src/` frame, the \
         function it called, and the `src/` frames above it), with the share of the traces \
         it took.\n"
    );
    let mut any = false;
    for (case, row) in cases.iter().zip(results) {
        for ((_, name), m) in BACKENDS.iter().zip(row) {
            let Some(m) = m else { continue };
            if m.sites.is_empty() {
                continue;
            }
            any = true;
            let _ = writeln!(
                r,
                "**{} on {name}** ({:.3} allocs/op; {} traced):\n",
                case.key(),
                m.per_op(),
                m.traced
            );
            let mut sites: Vec<(&Site, &usize)> = m.sites.iter().collect();
            sites.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (s, n) in sites {
                let via = if s.via.is_empty() {
                    String::new()
                } else {
                    format!(" via `{}`", s.via)
                };
                let callers = if s.callers.is_empty() {
                    String::new()
                } else {
                    format!(", from {}", s.callers.join(" <- "))
                };
                let _ = writeln!(r, "- {n}/{}: `{}`{via}{callers}", m.traced, s.at);
            }
            let _ = writeln!(r);
        }
    }
    if !any {
        let _ = writeln!(r, "None: no case allocated.");
    }
    r
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allocs: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
