//! Echo benchmark: the main job, in one command.
//!
//! ```text
//! cargo run --release --example echo-bench                  # about 12 s
//! cargo run --release --example echo-bench -- --quick       # a few seconds, for CI
//! ```
//!
//! It starts the echo server of `examples/echo-server.rs` (the same code, from
//! `examples/common/mod.rs`) on a gaio [`Watcher`] of its own, in this process, and drives it
//! over loopback TCP with three workloads. Every echoed byte is checked; any mismatch, error or
//! timeout makes it exit non-zero with a message that says what went wrong.
//!
//! 1. **stream**: one connection, 64 KiB writes of a pseudo-random pattern for `--secs`
//!    seconds (5 by default), echoed and compared byte by byte: MB/s of verified bytes. The
//!    client here is two plain threads with blocking sockets (a writer and a reader).
//! 2. **burst**: 8192 connections at once (gaio's `Test8k`), each writing 1 KiB of its own
//!    pattern and reading it back: total time, and how much of it was spent connecting.
//! 3. **ping-pong**: 1000 connections, each sending a 64-byte request and waiting for its echo
//!    before sending the next, for `--secs` seconds after a short warm-up: requests/s and the
//!    p50/p99/max latency of every request (from submitting the write to seeing the full echo).
//!
//! The burst and ping-pong clients run on a second gaio `Watcher` (`read_full` with a deadline
//! for every echo), so thousands of connections need no thread each.
//!
//! After each workload it closes every client connection and waits (bounded) until the
//! process's descriptor count (`/proc/self/fd`) is back where it was before: the echo server
//! freed every connection, and neither watcher left a descriptor behind.
//!
//! Against an outside server:
//!
//! ```text
//! target/release/examples/echo-server --addr 127.0.0.1:7000 &
//! target/release/examples/echo-bench --connect 127.0.0.1:7000 --server-pid $! --quick
//! ```
//!
//! `--connect HOST:PORT` runs the same client workloads against that server instead of the
//! in-process one. `--server-pid PID` then watches `/proc/PID/fd`: after each workload, once the
//! client has closed all its connections, the server's descriptor count must return to its
//! value from before the workloads within a few seconds ("no fd left behind"). `.ci/outside-client.sh`
//! runs exactly this.
//!
//! Other options: `--quick` (1 s phases, 1024 burst and 100 ping-pong connections; under
//! 10 s in all), `--secs N` (stream and ping-pong duration), `--burst-conns N`,
//! `--pingpong-conns N`, `--backend epoll|uring|auto` (both watchers; default `GAIO_BACKEND`,
//! else auto), `--read swap|conn` (how the in-process server reads; see `echo-server`).
//!
//! The soft `RLIMIT_NOFILE` is raised to the hard limit; if that still cannot hold the burst
//! (two descriptors per connection in-process: client and server), the burst uses fewer
//! connections and says so. A watchdog ends the run with exit code 3 if it overruns its time
//! budget, so the benchmark never hangs.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Args, EchoServer, ReadMode};
use gaio::{Backend, Builder, Conn, OpType, Watcher};

const USAGE: &str = "\
usage: echo-bench [--quick] [--secs N] [--connect HOST:PORT] [--server-pid PID]
                  [--burst-conns N] [--pingpong-conns N] [--backend epoll|uring|auto]
                  [--read swap|conn]";

/// Size of one stream write.
const STREAM_CHUNK: usize = 64 * 1024;
/// Period of the stream pattern: a prime, so that no chunk boundary ever lines up with it and a
/// lost, repeated or reordered chunk always shows up as a mismatch.
const PATTERN_PERIOD: usize = 1_048_573;
/// Upper bound on stream bytes, whatever the duration.
const STREAM_MAX_BYTES: u64 = 256 << 30;
/// Burst message size.
const BURST_MSG: usize = 1024;
/// Ping-pong message size.
const PP_MSG: usize = 64;
/// Upper bound on ping-pong requests, whatever the duration (bounds the latency vector too).
const PP_MAX_REQUESTS: u64 = 20_000_000;
/// Longest wait for any single connect or for progress on a blocking socket.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the descriptor counts to return to their baseline after a workload.
const FD_SETTLE: Duration = Duration::from_secs(5);
/// Descriptors kept aside for everything that is not a connection (stdio, listener, watchers).
const FD_RESERVE: u64 = 64;

type BenchResult<T> = Result<T, String>;

// ------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------

struct Options {
    quick: bool,
    secs: Option<f64>,
    connect: Option<SocketAddr>,
    server_pid: Option<u32>,
    burst_conns: Option<usize>,
    pp_conns: Option<usize>,
    backend: Option<Backend>,
    read: ReadMode,
}

fn parse_args() -> BenchResult<Options> {
    let mut o = Options {
        quick: false,
        secs: None,
        connect: None,
        server_pid: None,
        burst_conns: None,
        pp_conns: None,
        backend: None,
        read: ReadMode::Swap,
    };
    let mut args = Args::from_env();
    while let Some(mut flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--quick" => {
                args.no_value(&flag)?;
                o.quick = true;
            }
            "--secs" => {
                let s: f64 = args.parse(&mut flag)?;
                if !(0.1..=600.0).contains(&s) {
                    return Err(format!("--secs {s}: expected 0.1 to 600"));
                }
                o.secs = Some(s);
            }
            "--connect" => o.connect = Some(common::resolve(&args.value(&mut flag)?)?),
            "--server-pid" => o.server_pid = Some(args.parse(&mut flag)?),
            "--burst-conns" => {
                o.burst_conns = Some(positive(args.parse(&mut flag)?, "--burst-conns")?)
            }
            "--pingpong-conns" => {
                o.pp_conns = Some(positive(args.parse(&mut flag)?, "--pingpong-conns")?)
            }
            "--backend" => o.backend = Some(args.parse(&mut flag)?),
            "--read" => o.read = args.parse(&mut flag)?,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn positive(n: usize, flag: &str) -> BenchResult<usize> {
    if n == 0 {
        Err(format!("{flag} must be at least 1"))
    } else {
        Ok(n)
    }
}

/// What the run will do, after options and the descriptor limit are applied.
struct Plan {
    stream_secs: Duration,
    burst_conns: usize,
    burst_timeout: Duration,
    pp_conns: usize,
    pp_secs: Duration,
    pp_warmup: Duration,
    notes: Vec<String>,
}

impl Plan {
    fn new(o: &Options, fd_limit: u64) -> Plan {
        let secs = Duration::from_secs_f64(o.secs.unwrap_or(if o.quick { 1.0 } else { 5.0 }));
        let mut plan = Plan {
            stream_secs: secs,
            burst_conns: o.burst_conns.unwrap_or(if o.quick { 1024 } else { 8192 }),
            burst_timeout: Duration::from_secs(if o.quick { 5 } else { 10 }),
            pp_conns: o.pp_conns.unwrap_or(if o.quick { 100 } else { 1000 }),
            pp_secs: secs,
            pp_warmup: Duration::from_millis(if o.quick { 200 } else { 500 }),
            notes: Vec::new(),
        };
        // In-process, each connection costs two descriptors here: the client's and the
        // server's. Against an outside server, one.
        let per_conn: u64 = if o.connect.is_some() { 1 } else { 2 };
        let fit =
            usize::try_from(fd_limit.saturating_sub(FD_RESERVE) / per_conn).unwrap_or(usize::MAX);
        for (name, n) in [
            ("burst", &mut plan.burst_conns),
            ("ping-pong", &mut plan.pp_conns),
        ] {
            if *n > fit {
                plan.notes.push(format!(
                    "note: RLIMIT_NOFILE is {fd_limit}, too low for {} {name} connections \
                     ({per_conn} descriptors each); using {fit}",
                    *n
                ));
                *n = fit.max(1);
            }
        }
        plan
    }

    /// The most the whole run may take before the watchdog ends it: the timed phases plus
    /// 20 s for dialling, the burst and the descriptor checks (which take about 1 s on a
    /// 2-core machine). Each phase also has its own, tighter, timeout.
    fn budget(&self) -> Duration {
        self.stream_secs + self.pp_warmup + self.pp_secs + Duration::from_secs(20)
    }
}

// ------------------------------------------------------------------------------------------
// Progress, watchdog, environment
// ------------------------------------------------------------------------------------------

/// The phase the run is in, for the watchdog's message.
static PHASE: Mutex<&str> = Mutex::new("start");

fn set_phase(name: &'static str) {
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = name;
}

/// Ends the process with exit code 3 if the run is still going after `budget`.
fn spawn_watchdog(budget: Duration) {
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            std::thread::sleep(budget);
            let phase = *PHASE.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "echo-bench: FAIL: the run did not finish within {:.0} s (stuck in {phase})",
                budget.as_secs_f64()
            );
            std::process::exit(3);
        });
    if let Err(e) = spawned {
        eprintln!("echo-bench: note: no watchdog ({e}); relying on per-phase timeouts");
    }
}

/// Prints a progress line at most once a second.
struct Progress {
    start: Instant,
    last: Instant,
}

impl Progress {
    fn new(start: Instant) -> Progress {
        Progress {
            start,
            last: Instant::now(),
        }
    }

    fn say(&mut self, msg: std::fmt::Arguments<'_>) {
        self.last = Instant::now();
        println!("[{:5.1}s] {msg}", self.start.elapsed().as_secs_f64());
        let _ = io::stdout().flush();
    }

    /// Like `say`, but only if a second has passed since the last line.
    fn tick(&mut self, msg: impl FnOnce() -> String) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.say(format_args!("{}", msg()));
        }
    }
}

/// Current UTC time as `YYYY-MM-DD HH:MM:SS UTC`, without a date crate.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Descriptors open in process `pid` (this process for `None`).
fn count_fds(pid: Option<u32>) -> io::Result<usize> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}/fd"),
        None => "/proc/self/fd".to_string(),
    };
    Ok(std::fs::read_dir(dir)?.count())
}

/// A process whose descriptors are watched: its label and its count before the workloads.
struct FdWatch {
    label: String,
    pid: Option<u32>,
    baseline: usize,
}

impl FdWatch {
    fn new(label: String, pid: Option<u32>) -> BenchResult<FdWatch> {
        let baseline =
            count_fds(pid).map_err(|e| format!("cannot count the descriptors of {label}: {e}"))?;
        Ok(FdWatch {
            label,
            pid,
            baseline,
        })
    }

    /// Waits (bounded) until the count is back at the baseline; fails with both numbers if not.
    fn settle(&self, after: &str) -> BenchResult<usize> {
        let until = Instant::now() + FD_SETTLE;
        loop {
            let n = count_fds(self.pid)
                .map_err(|e| format!("cannot count the descriptors of {}: {e}", self.label))?;
            if n <= self.baseline {
                return Ok(n);
            }
            if Instant::now() >= until {
                return Err(format!(
                    "descriptor leak after {after}: {} has {n} open descriptors {:.0} s after \
                     every client connection was closed, {} before the workloads",
                    self.label,
                    FD_SETTLE.as_secs_f64(),
                    self.baseline
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ------------------------------------------------------------------------------------------
// Patterns
// ------------------------------------------------------------------------------------------

/// SplitMix64: a tiny, good-enough pseudo-random generator for test data.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with pseudo-random bytes from `seed`.
fn fill_random(buf: &mut [u8], seed: u64) {
    let mut state = seed;
    for chunk in buf.chunks_mut(8) {
        let r = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
}

/// The stream pattern: byte `i` of the stream is `pattern[i % PATTERN_PERIOD]`. The vector
/// holds one extra chunk so that any chunk is one contiguous slice.
fn stream_pattern() -> Vec<u8> {
    let mut p = vec![0u8; PATTERN_PERIOD + STREAM_CHUNK];
    fill_random(&mut p[..PATTERN_PERIOD], 0x5EED_F00D_57E4);
    p.copy_within(..STREAM_CHUNK, PATTERN_PERIOD);
    p
}

/// The 1 KiB burst message of connection `i`: its index, then bytes seeded by it.
fn burst_message(i: u32) -> Vec<u8> {
    let mut m = vec![0u8; BURST_MSG];
    m[..4].copy_from_slice(&i.to_le_bytes());
    fill_random(&mut m[4..], 0xB0_0000 + u64::from(i));
    m
}

/// Ping-pong request `seq` of connection `i`: index, sequence number, then seeded bytes, so
/// that an echo sent to the wrong connection or a stale echo never matches.
fn pp_request(i: u32, seq: u64, out: &mut [u8]) {
    out[..4].copy_from_slice(&i.to_le_bytes());
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    fill_random(&mut out[12..], (u64::from(i) << 40) ^ seq);
}

/// Where two byte strings first differ, for error messages.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(p) => format!("byte {p}: expected {:#04x}, got {:#04x}", a[p], b[p]),
        None => format!("lengths {} and {}", a.len(), b.len()),
    }
}

// ------------------------------------------------------------------------------------------
// Workload 1: stream
// ------------------------------------------------------------------------------------------

struct StreamResult {
    bytes: u64,
    elapsed: Duration,
}

/// One connection: a writer thread sends 64 KiB chunks of the pattern for `secs`; this thread
/// reads the echo and compares every byte with what was sent at that offset.
fn stream(addr: SocketAddr, secs: Duration, progress: &mut Progress) -> BenchResult<StreamResult> {
    let pattern = Arc::new(stream_pattern());
    let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("stream: cannot connect to {addr}: {e}"))?;
    let setup = |s: &TcpStream| -> io::Result<()> {
        s.set_nodelay(true)?;
        // Short read timeout: the reader wakes up to check on the writer and on the clock.
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        s.set_write_timeout(Some(IO_TIMEOUT))
    };
    setup(&sock).map_err(|e| format!("stream: socket options: {e}"))?;
    let mut wsock = sock
        .try_clone()
        .map_err(|e| format!("stream: cannot clone the socket: {e}"))?;

    let written = Arc::new(AtomicU64::new(0));
    let writer_done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let writer = {
        let (pattern, written, done) = (pattern.clone(), written.clone(), writer_done.clone());
        std::thread::Builder::new()
            .name("stream-writer".into())
            .spawn(move || -> io::Result<()> {
                let end = start + secs;
                let mut off: u64 = 0;
                let result = loop {
                    if Instant::now() >= end || off >= STREAM_MAX_BYTES {
                        break Ok(());
                    }
                    let p = (off % PATTERN_PERIOD as u64) as usize;
                    if let Err(e) = wsock.write_all(&pattern[p..p + STREAM_CHUNK]) {
                        break Err(e);
                    }
                    off += STREAM_CHUNK as u64;
                    written.store(off, Ordering::Release);
                };
                done.store(true, Ordering::Release);
                result
            })
            .map_err(|e| format!("stream: cannot start the writer thread: {e}"))?
    };

    let mut rsock = sock;
    let read_result = (|| -> BenchResult<u64> {
        let mut buf = vec![0u8; STREAM_CHUNK];
        let mut got: u64 = 0;
        let mut last_progress = Instant::now();
        let hard_end = start + secs + IO_TIMEOUT;
        loop {
            // Read `done` before `written`: once done is seen, written is final.
            let done = writer_done.load(Ordering::Acquire);
            let sent = written.load(Ordering::Acquire);
            if done && got == sent {
                return Ok(got);
            }
            if done && got > sent {
                return Err(format!("stream: {got} bytes echoed, but only {sent} sent"));
            }
            if Instant::now() >= hard_end {
                return Err(format!(
                    "stream: timed out with {got} of {sent} bytes echoed"
                ));
            }
            let n = match rsock.read(&mut buf) {
                Ok(0) => {
                    return Err(format!(
                        "stream: the server closed the connection after echoing {got} of \
                         {sent} bytes"
                    ))
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if last_progress.elapsed() >= IO_TIMEOUT {
                        return Err(format!(
                            "stream: no echo for {:.0} s ({got} of {sent} bytes echoed)",
                            IO_TIMEOUT.as_secs_f64()
                        ));
                    }
                    continue;
                }
                Err(e) => return Err(format!("stream: read after {got} bytes: {e}")),
            };
            last_progress = Instant::now();
            let p = (got % PATTERN_PERIOD as u64) as usize;
            let expected = &pattern[p..p + n];
            if expected != &buf[..n] {
                return Err(format!(
                    "stream: echoed data differs from what was sent at stream offset {got}: {}",
                    first_difference(expected, &buf[..n])
                ));
            }
            got += n as u64;
            progress.tick(|| {
                format!(
                    "stream: {:.0} MB echoed and verified ({:.0} MB/s)",
                    got as f64 / 1e6,
                    got as f64 / 1e6 / start.elapsed().as_secs_f64()
                )
            });
        }
    })();
    let elapsed = start.elapsed();
    // Unblock the writer if we stopped early, then collect it.
    if read_result.is_err() {
        let _ = rsock.shutdown(Shutdown::Both);
    }
    let writer_result = writer.join();
    let bytes = read_result?;
    match writer_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("stream: write failed: {e}")),
        Err(_) => return Err("stream: the writer thread panicked".into()),
    }
    drop(rsock);
    Ok(StreamResult { bytes, elapsed })
}

// ------------------------------------------------------------------------------------------
// Client watcher helpers
// ------------------------------------------------------------------------------------------

fn client_watcher(backend: Option<Backend>) -> BenchResult<Watcher<u32>> {
    let mut b: Builder = Watcher::builder();
    if let Some(be) = backend {
        b = b.backend(be);
    }
    b.build()
        .map_err(|e| format!("cannot start the client watcher: {e}"))
}

/// Connects, and hands the connection to the client watcher.
fn dial(w: &Watcher<u32>, addr: SocketAddr, what: &str, i: usize) -> BenchResult<Conn> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("{what}: connection {i}: cannot connect to {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    let conn = w
        .watch(&s)
        .map_err(|e| format!("{what}: connection {i}: watch: {e}"))?;
    drop(s); // the watcher holds its own descriptor
    Ok(conn)
}

/// Frees every connection and closes the watcher (which joins its threads and closes every
/// descriptor it held).
fn close_clients(w: Watcher<u32>, conns: impl IntoIterator<Item = Conn>) -> BenchResult<()> {
    for c in conns {
        w.free(&c).map_err(|e| format!("free: {e}"))?;
    }
    w.close()
        .map_err(|e| format!("closing the client watcher: {e}"))
}

// ------------------------------------------------------------------------------------------
// Workload 2: burst
// ------------------------------------------------------------------------------------------

struct BurstResult {
    conns: usize,
    connect: Duration,
    total: Duration,
}

/// `n` connections open at once, each writing its own 1 KiB and reading it back with
/// `read_full`. Connections are dialled one after the other (as gaio's `Test8k` does); each
/// submits its write and read at once, so echoes flow while later connections are dialled.
fn burst(
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
    backend: Option<Backend>,
    progress: &mut Progress,
) -> BenchResult<BurstResult> {
    let w = client_watcher(backend)?;
    let start = Instant::now();
    let deadline = start + timeout;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        if Instant::now() >= deadline {
            return Err(format!(
                "burst: timed out after dialling {i} of {n} connections"
            ));
        }
        let conn = dial(&w, addr, "burst", i)?;
        let ctx = i as u32;
        w.write(ctx, &conn, burst_message(ctx))
            .map_err(|e| format!("burst: connection {i}: write refused: {e}"))?;
        w.read_full(ctx, &conn, vec![0u8; BURST_MSG], Some(deadline))
            .map_err(|e| format!("burst: connection {i}: read refused: {e}"))?;
        conns.push(conn);
        progress.tick(|| format!("burst: {} of {n} connections open", i + 1));
    }
    let connect = start.elapsed();
    progress.say(format_args!(
        "burst: {n} connections open in {:.2} s; collecting echoes",
        connect.as_secs_f64()
    ));

    let mut echoed = vec![false; n];
    let (mut reads, mut writes) = (0usize, 0usize);
    // Each connection yields exactly two results; the count bound keeps the loop finite even
    // if results were duplicated (which is checked and reported).
    let mut results = 0usize;
    while reads < n || writes < n {
        if Instant::now() >= deadline + Duration::from_secs(1) {
            return Err(format!(
                "burst: timed out: {reads} of {n} echoes verified, {writes} of {n} writes done"
            ));
        }
        let batch = w
            .wait_io_timeout(Duration::from_millis(200))
            .map_err(|e| format!("burst: wait_io: {e}"))?;
        for res in batch {
            results += 1;
            let i = res.context as usize;
            if let Some(err) = &res.error {
                return Err(format!(
                    "burst: connection {i}: {:?} failed after {} bytes: {err}",
                    res.op, res.size
                ));
            }
            match res.op {
                OpType::Write => writes += 1,
                OpType::Read => {
                    let got = res.data();
                    let expected = burst_message(res.context);
                    if got != expected.as_slice() {
                        return Err(format!(
                            "burst: connection {i}: the echo differs from what was sent: {}",
                            first_difference(&expected, got)
                        ));
                    }
                    if std::mem::replace(&mut echoed[i], true) {
                        return Err(format!("burst: connection {i}: two read results"));
                    }
                    reads += 1;
                }
                other => return Err(format!("burst: unexpected result type {other:?}")),
            }
        }
        if results > 2 * n {
            return Err(format!(
                "burst: {results} results for {n} connections (2 each)"
            ));
        }
        progress.tick(|| format!("burst: {reads} of {n} echoes verified"));
    }
    let total = start.elapsed();
    close_clients(w, conns)?;
    Ok(BurstResult {
        conns: n,
        connect,
        total,
    })
}

// ------------------------------------------------------------------------------------------
// Workload 3: ping-pong
// ------------------------------------------------------------------------------------------

struct PingPongResult {
    conns: usize,
    requests: u64,
    window: Duration,
    /// Latencies of the requests completed in the measured window, sorted, in nanoseconds.
    latencies: Vec<u64>,
}

impl PingPongResult {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        Duration::from_nanos(self.latencies[idx])
    }
}

/// One ping-pong connection's state: its buffers travel with its two operations and come back
/// in their results.
struct PpConn {
    conn: Conn,
    wbuf: Option<Vec<u8>>,
    rbuf: Option<Vec<u8>>,
    seq: u64,
    sent: Instant,
    /// Results still to come for the current request (write + read).
    outstanding: u8,
}

/// Sends connection `i`'s next request: the write, and a `read_full` of its echo.
fn pp_send(w: &Watcher<u32>, c: &mut PpConn, i: u32, deadline: Instant) -> BenchResult<()> {
    c.seq += 1;
    let mut wbuf = c.wbuf.take().unwrap_or_else(|| vec![0u8; PP_MSG]);
    pp_request(i, c.seq, &mut wbuf);
    let mut rbuf = c.rbuf.take().unwrap_or_else(|| vec![0u8; PP_MSG]);
    rbuf.fill(0);
    c.sent = Instant::now();
    w.write(i, &c.conn, wbuf)
        .map_err(|e| format!("ping-pong: connection {i}: write refused: {e}"))?;
    w.read_full(i, &c.conn, rbuf, Some(deadline))
        .map_err(|e| format!("ping-pong: connection {i}: read refused: {e}"))?;
    c.outstanding = 2;
    Ok(())
}

fn pingpong(
    addr: SocketAddr,
    n: usize,
    warmup: Duration,
    secs: Duration,
    backend: Option<Backend>,
    progress: &mut Progress,
) -> BenchResult<PingPongResult> {
    let w = client_watcher(backend)?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(PpConn {
            conn: dial(&w, addr, "ping-pong", i)?,
            wbuf: None,
            rbuf: None,
            seq: 0,
            sent: Instant::now(),
            outstanding: 0,
        });
    }
    let t0 = Instant::now();
    let measure_from = t0 + warmup;
    let stop_at = measure_from + secs;
    // Every echo must arrive within this; a slower one fails the run with Deadline.
    let read_deadline = stop_at + IO_TIMEOUT;
    for (i, c) in conns.iter_mut().enumerate() {
        pp_send(&w, c, i as u32, read_deadline)?;
    }
    progress.say(format_args!(
        "ping-pong: {n} connections open; {:.1} s warm-up, then {:.1} s measured",
        warmup.as_secs_f64(),
        secs.as_secs_f64()
    ));

    let mut latencies: Vec<u64> = Vec::with_capacity(1 << 20);
    let mut in_flight = n;
    let mut sent_total: u64 = n as u64;
    let mut measured: u64 = 0;
    let mut expected = [0u8; PP_MSG];
    while in_flight > 0 {
        if Instant::now() >= read_deadline + Duration::from_secs(1) {
            return Err(format!(
                "ping-pong: timed out with {in_flight} of {n} connections still waiting"
            ));
        }
        let batch = w
            .wait_io_timeout(Duration::from_millis(100))
            .map_err(|e| format!("ping-pong: wait_io: {e}"))?;
        for res in batch {
            let i = res.context;
            let Some(c) = conns.get_mut(i as usize) else {
                return Err(format!("ping-pong: result for unknown connection {i}"));
            };
            if let Some(err) = &res.error {
                return Err(format!(
                    "ping-pong: connection {i}, request {}: {:?} failed after {} bytes: {err}",
                    c.seq, res.op, res.size
                ));
            }
            if c.outstanding == 0 {
                return Err(format!(
                    "ping-pong: connection {i}: a result nobody waited for"
                ));
            }
            match res.op {
                OpType::Write => c.wbuf = res.buffer.into_vec(),
                OpType::Read => {
                    let now = Instant::now();
                    pp_request(i, c.seq, &mut expected);
                    let got = res.data();
                    if got != expected {
                        return Err(format!(
                            "ping-pong: connection {i}, request {}: the echo differs: {}",
                            c.seq,
                            first_difference(&expected, got)
                        ));
                    }
                    if now >= measure_from && now <= stop_at {
                        measured += 1;
                        latencies.push(now.duration_since(c.sent).as_nanos() as u64);
                    }
                    c.rbuf = res.buffer.into_vec();
                }
                other => return Err(format!("ping-pong: unexpected result type {other:?}")),
            }
            c.outstanding -= 1;
            if c.outstanding == 0 {
                if Instant::now() < stop_at && sent_total < PP_MAX_REQUESTS {
                    pp_send(&w, c, i, read_deadline)?;
                    sent_total += 1;
                } else {
                    in_flight -= 1;
                }
            }
        }
        progress.tick(|| {
            let now = Instant::now();
            if now < measure_from {
                format!("ping-pong: warming up, {sent_total} requests sent")
            } else {
                let t = now.min(stop_at).duration_since(measure_from).as_secs_f64();
                format!(
                    "ping-pong: {measured} requests verified in {t:.1} s ({:.0} k/s)",
                    measured as f64 / t.max(1e-9) / 1e3
                )
            }
        });
    }
    let window = stop_at.min(Instant::now()).duration_since(measure_from);
    latencies.sort_unstable();
    close_clients(w, conns.into_iter().map(|c| c.conn))?;
    Ok(PingPongResult {
        conns: n,
        requests: measured,
        window,
        latencies,
    })
}

// ------------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------------

fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn run(o: Options) -> BenchResult<()> {
    let fd_limit = common::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let plan = Plan::new(&o, fd_limit);
    spawn_watchdog(plan.budget());

    // The server: in-process on a watcher of its own, or outside.
    let server = match o.connect {
        Some(_) => None,
        None => {
            let mut b = Watcher::builder();
            if let Some(be) = o.backend {
                b = b.backend(be);
            }
            let sw: Watcher<()> = b
                .build()
                .map_err(|e| format!("cannot start the server watcher: {e}"))?;
            let ln = common::listen("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
                .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
            Some(
                EchoServer::start(ln, sw, o.read, false)
                    .map_err(|e| format!("cannot start the echo server: {e}"))?,
            )
        }
    };
    let addr = match (&server, o.connect) {
        (Some(s), _) => s.addr(),
        (None, Some(a)) => a,
        (None, None) => unreachable!("either in-process or --connect"),
    };
    // Which backend the clients get (the same rule as the server's).
    let client_backend = client_watcher(o.backend)?.backend();

    let start = Instant::now();
    let mut progress = Progress::new(start);
    println!("gaio echo-bench");
    println!("  date     {}", utc_now());
    println!("  kernel   {}", kernel_release());
    println!(
        "  cores    {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    match &server {
        Some(s) => println!(
            "  backend  {} (server: in-process on {addr}, reads into {}; clients: {client_backend})",
            s.backend(),
            o.read
        ),
        None => println!(
            "  backend  clients {client_backend}; server outside at {addr}{}",
            o.server_pid.map_or(String::new(), |p| format!(" (pid {p})"))
        ),
    }
    println!(
        "  plan     {}: stream {:.1} s; burst {} conns x {BURST_MSG} B; ping-pong {} conns x \
         {PP_MSG} B for {:.1} s (+{:.1} s warm-up)",
        if o.quick { "quick" } else { "full" },
        plan.stream_secs.as_secs_f64(),
        plan.burst_conns,
        plan.pp_conns,
        plan.pp_secs.as_secs_f64(),
        plan.pp_warmup.as_secs_f64()
    );
    println!("  fd limit {fd_limit}");
    for note in &plan.notes {
        println!("  {note}");
    }
    println!();

    // Descriptor counts to return to after each workload: this process (client side, and the
    // server too when in-process) and the outside server if its pid is known.
    let mut watches = vec![FdWatch::new(
        if server.is_some() {
            "this process (client and server)".to_string()
        } else {
            "this process (client)".to_string()
        },
        None,
    )?];
    if let Some(pid) = o.server_pid {
        watches.push(FdWatch::new(format!("the server (pid {pid})"), Some(pid))?);
    }
    let settle = |after: &str| -> BenchResult<Vec<usize>> {
        watches.iter().map(|w| w.settle(after)).collect()
    };

    set_phase("stream");
    progress.say(format_args!(
        "stream: 1 connection, {} KiB writes",
        STREAM_CHUNK / 1024
    ));
    let st = stream(addr, plan.stream_secs, &mut progress)?;
    progress.say(format_args!(
        "stream: done, {:.0} MB verified; waiting for descriptors to settle",
        st.bytes as f64 / 1e6
    ));
    set_phase("descriptor check after stream");
    settle("stream")?;

    set_phase("burst");
    progress.say(format_args!(
        "burst: dialling {} connections",
        plan.burst_conns
    ));
    let bu = burst(
        addr,
        plan.burst_conns,
        plan.burst_timeout,
        o.backend,
        &mut progress,
    )?;
    progress.say(format_args!(
        "burst: done in {:.2} s; waiting for descriptors to settle",
        bu.total.as_secs_f64()
    ));
    set_phase("descriptor check after burst");
    settle("burst")?;

    set_phase("ping-pong");
    progress.say(format_args!(
        "ping-pong: dialling {} connections",
        plan.pp_conns
    ));
    let pp = pingpong(
        addr,
        plan.pp_conns,
        plan.pp_warmup,
        plan.pp_secs,
        o.backend,
        &mut progress,
    )?;
    progress.say(format_args!(
        "ping-pong: done, {} requests verified; waiting for descriptors to settle",
        pp.requests
    ));
    set_phase("descriptor check after ping-pong");
    let fds_after = settle("ping-pong")?;

    // In-process, the server's own books must balance too: every connection it accepted
    // (the stream, the burst, the ping-pong) was freed by its loop on EOF.
    set_phase("server shutdown");
    let server_line = match server {
        Some(s) => {
            let expected = 1 + bu.conns as u64 + pp.conns as u64;
            let stats = s.stats();
            // Read the counters once both server threads are joined.
            s.shutdown().map_err(|e| format!("echo server: {e}"))?;
            let (acc, closed, errors) = (
                stats.accepted.load(Ordering::Relaxed),
                stats.closed.load(Ordering::Relaxed),
                stats.errors.load(Ordering::Relaxed),
            );
            let echoed = stats.bytes.load(Ordering::Relaxed);
            if acc != expected || closed != expected || errors != 0 {
                return Err(format!(
                    "echo server: accepted {acc}, freed {closed}, {errors} errors; expected \
                     {expected} accepted and freed, no errors"
                ));
            }
            Some(format!(
                "{acc} connections accepted and freed, {:.0} MB echoed, 0 errors",
                echoed as f64 / 1e6
            ))
        }
        None => None,
    };

    // The table.
    let mbps = st.bytes as f64 / 1e6 / st.elapsed.as_secs_f64();
    let rate = pp.requests as f64 / pp.window.as_secs_f64().max(1e-9);
    println!();
    println!("{:<34} result", "workload");
    println!("{:-<34} {:-<60}", "", "");
    println!(
        "{:<34} {mbps:.0} MB/s ({:.0} MB echoed and verified in {:.2} s)",
        format!("stream    1 conn x {} KiB writes", STREAM_CHUNK / 1024),
        st.bytes as f64 / 1e6,
        st.elapsed.as_secs_f64()
    );
    println!(
        "{:<34} {:.2} s total ({:.2} s of it dialling; {} KiB verified)",
        format!("burst     {} conns x {} KiB", bu.conns, BURST_MSG / 1024),
        bu.total.as_secs_f64(),
        bu.connect.as_secs_f64(),
        bu.conns * BURST_MSG / 1024
    );
    println!(
        "{:<34} {:.1} k req/s, latency p50 {}, p99 {}, max {} ({} requests in {:.2} s)",
        format!("ping-pong {} conns x {PP_MSG} B", pp.conns),
        rate / 1e3,
        fmt_ms(pp.percentile(0.50)),
        fmt_ms(pp.percentile(0.99)),
        fmt_ms(
            pp.latencies
                .last()
                .map_or(Duration::ZERO, |&n| Duration::from_nanos(n))
        ),
        pp.requests,
        pp.window.as_secs_f64()
    );
    let fd_summary: Vec<String> = watches
        .iter()
        .zip(&fds_after)
        .map(|(w, after)| format!("{}: {} -> {after}", w.label, w.baseline))
        .collect();
    println!("{:<34} ok, {}", "descriptors", fd_summary.join("; "));
    if let Some(line) = server_line {
        println!("{:<34} ok, {line}", "echo server");
    }
    println!();
    println!(
        "PASS: every echoed byte verified, no descriptor left behind ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = io::stdout().flush();
            eprintln!("echo-bench: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
