//! The client workloads of the echo benchmarks, shared by `examples/echo-bench.rs` and
//! `benches/compare` so that both drive a server with one implementation, and every echoed
//! byte is verified the same way:
//!
//! - [`stream`]: `conns` connections, each with a writer thread sending 64 KiB chunks of a
//!   pseudo-random pattern and a reader thread comparing every echoed byte;
//! - [`burst`]: `n` connections at once, each echoing one 1 KiB message (gaio's `Test8k`);
//! - [`pingpong`]: `n` connections, each sending 64-byte requests one at a time;
//! - [`idle_open`] / [`idle_verify`]: `n` connections left idle, then one byte echoed on each.
//!
//! Each returns `Err` with a message that says what went wrong (a mismatch, an error, a
//! timeout); every wait is bounded. Also here: the progress printer, the watchdog, and the
//! date and kernel lines of the reports.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gaio::{Backend, Builder, Conn, OpType, Watcher};

/// Size of one stream write.
pub const STREAM_CHUNK: usize = 64 * 1024;
/// Period of the stream pattern: a prime, so that no chunk boundary ever lines up with it and a
/// lost, repeated or reordered chunk always shows up as a mismatch.
pub const PATTERN_PERIOD: usize = 1_048_573;
/// Upper bound on stream bytes (all connections together), whatever the duration.
pub const STREAM_MAX_BYTES: u64 = 256 << 30;
/// Burst message size.
pub const BURST_MSG: usize = 1024;
/// Ping-pong message size.
pub const PP_MSG: usize = 64;
/// Upper bound on ping-pong requests, whatever the duration (bounds the latency vector too).
pub const PP_MAX_REQUESTS: u64 = 20_000_000;
/// Longest wait for any single connect or for progress on a blocking socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A workload's outcome: `Err` says what failed.
pub type BenchResult<T> = Result<T, String>;

// ------------------------------------------------------------------------------------------
// Progress, watchdog, environment
// ------------------------------------------------------------------------------------------

/// The phase the run is in, for the watchdog's message.
static PHASE: Mutex<&str> = Mutex::new("start");

/// Names the phase the run is in, for the watchdog's message.
pub fn set_phase(name: &'static str) {
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = name;
}

/// Ends the process with exit code 3 if the run is still going after `budget`; `prog` names
/// the program in the message.
pub fn spawn_watchdog(prog: &'static str, budget: Duration) {
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            std::thread::sleep(budget);
            let phase = *PHASE.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "{prog}: FAIL: the run did not finish within {:.0} s (stuck in {phase})",
                budget.as_secs_f64()
            );
            std::process::exit(3);
        });
    if let Err(e) = spawned {
        eprintln!("{prog}: note: no watchdog ({e}); relying on per-phase timeouts");
    }
}

/// Prints a progress line (to stdout) at most once a second; a silent one prints nothing.
pub struct Progress {
    start: Instant,
    last: Instant,
    silent: bool,
}

impl Progress {
    /// A progress printer whose lines show the time since `start`.
    pub fn new(start: Instant) -> Progress {
        Progress {
            start,
            last: Instant::now(),
            silent: false,
        }
    }

    /// A progress printer that prints nothing.
    pub fn silent() -> Progress {
        Progress {
            silent: true,
            ..Progress::new(Instant::now())
        }
    }

    /// Prints a line now.
    pub fn say(&mut self, msg: std::fmt::Arguments<'_>) {
        self.last = Instant::now();
        if self.silent {
            return;
        }
        println!("[{:5.1}s] {msg}", self.start.elapsed().as_secs_f64());
        let _ = io::stdout().flush();
    }

    /// Like `say`, but only if a second has passed since the last line.
    pub fn tick(&mut self, msg: impl FnOnce() -> String) {
        if !self.silent && self.last.elapsed() >= Duration::from_secs(1) {
            self.say(format_args!("{}", msg()));
        }
    }
}

/// Current UTC time as `YYYY-MM-DD HH:MM:SS UTC`, without a date crate.
pub fn utc_now() -> String {
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

/// The running kernel's release (`/proc/sys/kernel/osrelease`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

// ------------------------------------------------------------------------------------------
// Patterns
// ------------------------------------------------------------------------------------------

/// SplitMix64: a tiny, good-enough pseudo-random generator for test data.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with pseudo-random bytes from `seed`.
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut state = seed;
    for chunk in buf.chunks_mut(8) {
        let r = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
}

/// The stream pattern: byte `i` of the stream is `pattern[i % PATTERN_PERIOD]`. The vector
/// holds one extra chunk so that any chunk is one contiguous slice.
pub fn stream_pattern() -> Vec<u8> {
    let mut p = vec![0u8; PATTERN_PERIOD + STREAM_CHUNK];
    fill_random(&mut p[..PATTERN_PERIOD], 0x5EED_F00D_57E4);
    p.copy_within(..STREAM_CHUNK, PATTERN_PERIOD);
    p
}

/// The 1 KiB burst message of connection `i`: its index, then bytes seeded by it.
pub fn burst_message(i: u32) -> Vec<u8> {
    let mut m = vec![0u8; BURST_MSG];
    m[..4].copy_from_slice(&i.to_le_bytes());
    fill_random(&mut m[4..], 0xB0_0000 + u64::from(i));
    m
}

/// Ping-pong request `seq` of connection `i`: index, sequence number, then seeded bytes, so
/// that an echo sent to the wrong connection or a stale echo never matches.
pub fn pp_request(i: u32, seq: u64, out: &mut [u8]) {
    out[..4].copy_from_slice(&i.to_le_bytes());
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    fill_random(&mut out[12..], (u64::from(i) << 40) ^ seq);
}

/// Where two byte strings first differ, for error messages.
pub fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(p) => format!("byte {p}: expected {:#04x}, got {:#04x}", a[p], b[p]),
        None => format!("lengths {} and {}", a.len(), b.len()),
    }
}

// ------------------------------------------------------------------------------------------
// Workload 1: stream
// ------------------------------------------------------------------------------------------

/// What the stream workload measured.
pub struct StreamResult {
    /// Bytes echoed and verified, all connections together.
    pub bytes: u64,
    /// From the first write to the last verified byte.
    pub elapsed: Duration,
}

/// Where connection `c` of `conns` starts in the stream pattern. The starts are spread over the
/// period, so that data echoed on the wrong connection never matches. Connection 0 starts at 0.
fn stream_base(c: usize, conns: usize) -> u64 {
    (c * (PATTERN_PERIOD / conns.max(1))) as u64
}

/// What the writer and the reader of one stream connection share.
struct StreamShared {
    /// Bytes written so far.
    written: AtomicU64,
    /// Set once the writer has stopped; `written` is final from then on.
    writer_done: AtomicBool,
}

/// `conns` connections at once. On each, a writer thread sends 64 KiB chunks of the pattern for
/// `secs` and a reader thread reads the echo and compares every byte with what was sent at
/// that offset (connection `c`'s byte `i` is `pattern[(base(c) + i) % PATTERN_PERIOD]`). This
/// thread collects the readers and prints the progress. Bytes/s are those verified, over the
/// time from the first write to the last byte verified.
pub fn stream(
    addr: SocketAddr,
    conns: usize,
    secs: Duration,
    progress: &mut Progress,
) -> BenchResult<StreamResult> {
    let conns = conns.max(1);
    let pattern = Arc::new(stream_pattern());
    let max_per_conn = STREAM_MAX_BYTES / conns as u64;
    // Messages name the connection only when there is more than one.
    let who = |c: usize| {
        if conns == 1 {
            "stream".to_string()
        } else {
            format!("stream: connection {c}")
        }
    };
    let setup = |s: &TcpStream| -> io::Result<()> {
        s.set_nodelay(true)?;
        // Short read timeout: the reader wakes up to check on the writer and on the clock.
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        s.set_write_timeout(Some(IO_TIMEOUT))
    };
    // Each connection: (reader's socket, writer's socket, a handle to shut it down).
    let mut socks = Vec::with_capacity(conns);
    for c in 0..conns {
        let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .map_err(|e| format!("{}: cannot connect to {addr}: {e}", who(c)))?;
        setup(&sock).map_err(|e| format!("{}: socket options: {e}", who(c)))?;
        let clone = || {
            sock.try_clone()
                .map_err(|e| format!("{}: cannot clone the socket: {e}", who(c)))
        };
        let (wsock, ctl) = (clone()?, clone()?);
        socks.push((sock, wsock, ctl));
    }

    let verified = Arc::new(AtomicU64::new(0));
    // Set when one connection failed: the others stop too.
    let abort = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<(usize, BenchResult<u64>, Instant)>();
    let mut writers = Vec::with_capacity(conns);
    let mut readers = Vec::with_capacity(conns);
    let mut controls = Vec::with_capacity(conns);
    let start = Instant::now();
    let mut spawn_error = None;
    for (c, (rsock, wsock, ctl)) in socks.into_iter().enumerate() {
        let shared = Arc::new(StreamShared {
            written: AtomicU64::new(0),
            writer_done: AtomicBool::new(false),
        });
        let base = stream_base(c, conns);
        let writer = {
            let (pattern, shared, abort) = (pattern.clone(), shared.clone(), abort.clone());
            std::thread::Builder::new()
                .name("stream-writer".into())
                .spawn(move || {
                    stream_write(
                        wsock,
                        &pattern,
                        base,
                        start + secs,
                        max_per_conn,
                        &shared,
                        &abort,
                    )
                })
        };
        let reader = {
            let (pattern, verified, abort) = (pattern.clone(), verified.clone(), abort.clone());
            let (who, tx) = (who(c), done_tx.clone());
            std::thread::Builder::new()
                .name("stream-reader".into())
                .spawn(move || {
                    let hard_end = start + secs + IO_TIMEOUT;
                    let r = stream_read(
                        rsock, &who, &pattern, base, hard_end, &shared, &verified, &abort,
                    );
                    let _ = tx.send((c, r, Instant::now()));
                })
        };
        controls.push(ctl);
        match (writer, reader) {
            (Ok(w), Ok(r)) => {
                writers.push(w);
                readers.push(r);
            }
            (w, r) => {
                writers.extend(w.ok());
                readers.extend(r.ok());
                spawn_error = Some("stream: cannot start the writer and reader threads".into());
                break;
            }
        }
    }
    drop(done_tx);

    // Collect the readers; the first failure stops every connection.
    let mut read_error: Option<String> = spawn_error;
    let mut bytes: u64 = 0;
    let mut last_done = start;
    let mut pending = readers.len();
    let stop_all = |controls: &[TcpStream], abort: &AtomicBool| {
        abort.store(true, Ordering::Release);
        for s in controls {
            let _ = s.shutdown(Shutdown::Both);
        }
    };
    if read_error.is_some() {
        stop_all(&controls, &abort);
    }
    while pending > 0 {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok((_, result, at)) => {
                pending -= 1;
                last_done = last_done.max(at);
                match result {
                    Ok(n) => bytes += n,
                    Err(e) => {
                        // The first error is the cause; later ones are its consequences.
                        if read_error.is_none() {
                            read_error = Some(e);
                            stop_all(&controls, &abort);
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                read_error.get_or_insert_with(|| "stream: a reader thread panicked".into());
                stop_all(&controls, &abort);
                break;
            }
        }
        progress.tick(|| {
            let got = verified.load(Ordering::Relaxed);
            format!(
                "stream: {:.0} MB echoed and verified ({:.0} MB/s)",
                got as f64 / 1e6,
                got as f64 / 1e6 / start.elapsed().as_secs_f64()
            )
        });
    }
    let elapsed = last_done.duration_since(start);
    let reader_panicked = readers.into_iter().any(|r| r.join().is_err());
    let writer_results: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
    if let Some(e) = read_error {
        return Err(e);
    }
    if reader_panicked {
        return Err("stream: a reader thread panicked".into());
    }
    for (c, r) in writer_results.into_iter().enumerate() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("{}: write failed: {e}", who(c))),
            Err(_) => return Err(format!("{}: the writer thread panicked", who(c))),
        }
    }
    Ok(StreamResult { bytes, elapsed })
}

/// One stream connection's writer: 64 KiB chunks of the pattern from `base` on, until `end`,
/// `max_bytes` or an abort.
fn stream_write(
    mut wsock: TcpStream,
    pattern: &[u8],
    base: u64,
    end: Instant,
    max_bytes: u64,
    shared: &StreamShared,
    abort: &AtomicBool,
) -> io::Result<()> {
    let mut off: u64 = 0;
    let result = loop {
        if Instant::now() >= end || off >= max_bytes || abort.load(Ordering::Acquire) {
            break Ok(());
        }
        let p = ((base + off) % PATTERN_PERIOD as u64) as usize;
        if let Err(e) = wsock.write_all(&pattern[p..p + STREAM_CHUNK]) {
            break Err(e);
        }
        off += STREAM_CHUNK as u64;
        shared.written.store(off, Ordering::Release);
    };
    shared.writer_done.store(true, Ordering::Release);
    result
}

/// One stream connection's reader: reads the echo until every byte the writer sent is back,
/// comparing each with the pattern; returns the count. `who` prefixes its messages.
#[allow(clippy::too_many_arguments)]
fn stream_read(
    mut rsock: TcpStream,
    who: &str,
    pattern: &[u8],
    base: u64,
    hard_end: Instant,
    shared: &StreamShared,
    verified: &AtomicU64,
    abort: &AtomicBool,
) -> BenchResult<u64> {
    let mut buf = vec![0u8; STREAM_CHUNK];
    let mut got: u64 = 0;
    let mut last_progress = Instant::now();
    loop {
        // Read `done` before `written`: once done is seen, written is final.
        let done = shared.writer_done.load(Ordering::Acquire);
        let sent = shared.written.load(Ordering::Acquire);
        if done && got == sent {
            return Ok(got);
        }
        if done && got > sent {
            return Err(format!("{who}: {got} bytes echoed, but only {sent} sent"));
        }
        if abort.load(Ordering::Acquire) {
            return Err(format!("{who}: stopped by another connection's failure"));
        }
        if Instant::now() >= hard_end {
            return Err(format!(
                "{who}: timed out with {got} of {sent} bytes echoed"
            ));
        }
        let n = match rsock.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "{who}: the server closed the connection after echoing {got} of \
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
                        "{who}: no echo for {:.0} s ({got} of {sent} bytes echoed)",
                        IO_TIMEOUT.as_secs_f64()
                    ));
                }
                continue;
            }
            Err(e) => return Err(format!("{who}: read after {got} bytes: {e}")),
        };
        last_progress = Instant::now();
        let p = ((base + got) % PATTERN_PERIOD as u64) as usize;
        let expected = &pattern[p..p + n];
        if expected != &buf[..n] {
            return Err(format!(
                "{who}: echoed data differs from what was sent at stream offset {got}: {}",
                first_difference(expected, &buf[..n])
            ));
        }
        got += n as u64;
        verified.fetch_add(n as u64, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------------------------------
// Client watcher helpers
// ------------------------------------------------------------------------------------------

pub fn client_watcher(backend: Option<Backend>) -> BenchResult<Watcher<u32>> {
    let mut b: Builder = Watcher::builder();
    if let Some(be) = backend {
        b = b.backend(be);
    }
    b.build()
        .map_err(|e| format!("cannot start the client watcher: {e}"))
}

/// Connects, and hands the connection to the client watcher.
pub fn dial(w: &Watcher<u32>, addr: SocketAddr, what: &str, i: usize) -> BenchResult<Conn> {
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
pub fn close_clients(w: Watcher<u32>, conns: impl IntoIterator<Item = Conn>) -> BenchResult<()> {
    for c in conns {
        w.free(&c).map_err(|e| format!("free: {e}"))?;
    }
    w.close()
        .map_err(|e| format!("closing the client watcher: {e}"))
}

// ------------------------------------------------------------------------------------------
// Workload 2: burst
// ------------------------------------------------------------------------------------------

pub struct BurstResult {
    pub conns: usize,
    pub connect: Duration,
    pub total: Duration,
}

/// `n` connections open at once, each writing its own 1 KiB and reading it back with
/// `read_full`. Connections are dialled one after the other (as gaio's `Test8k` does); each
/// submits its write and read at once, so echoes flow while later connections are dialled.
pub fn burst(
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
                OpType::ReadFull => {
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

pub struct PingPongResult {
    pub conns: usize,
    pub requests: u64,
    pub window: Duration,
    /// Latencies of the requests completed in the measured window, sorted, in nanoseconds.
    pub latencies: Vec<u64>,
}

impl PingPongResult {
    pub fn percentile(&self, p: f64) -> Duration {
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

pub fn pingpong(
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
                OpType::ReadFull => {
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
// Workload 4: idle connections
// ------------------------------------------------------------------------------------------

/// Opens `n` connections to `addr` and leaves them idle: plain blocking sockets, no watcher,
/// nothing sent. An echo server then has one pending read on each.
pub fn idle_open(addr: SocketAddr, n: usize, timeout: Duration) -> BenchResult<Vec<TcpStream>> {
    let deadline = Instant::now() + timeout;
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        if Instant::now() >= deadline {
            return Err(format!(
                "idle: timed out after opening {i} of {n} connections"
            ));
        }
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .map_err(|e| format!("idle: connection {i}: cannot connect to {addr}: {e}"))?;
        socks.push(s);
    }
    Ok(socks)
}

/// The byte idle connection `i` sends to prove its read was pending.
fn idle_byte(i: usize) -> u8 {
    let mut state = 0x1D1E_0000 + i as u64;
    splitmix64(&mut state) as u8
}

/// Sends one byte on every idle connection, then reads each echo back and checks it: proof
/// that the server still had a read pending on each.
pub fn idle_verify(socks: &mut [TcpStream]) -> BenchResult<()> {
    for (i, s) in socks.iter_mut().enumerate() {
        s.set_write_timeout(Some(IO_TIMEOUT))
            .and_then(|()| s.write_all(&[idle_byte(i)]))
            .map_err(|e| format!("idle: connection {i}: write: {e}"))?;
    }
    for (i, s) in socks.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        s.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| s.read_exact(&mut b))
            .map_err(|e| format!("idle: connection {i}: reading the echo: {e}"))?;
        if b[0] != idle_byte(i) {
            return Err(format!(
                "idle: connection {i}: echoed {:#04x}, sent {:#04x}",
                b[0],
                idle_byte(i)
            ));
        }
    }
    Ok(())
}
