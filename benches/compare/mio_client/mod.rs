//! The verifying client on `mio` (DESIGN.md §5: the client must not be the cap, and must not
//! be gaio): non-blocking sockets, edge-triggered readiness, every echoed byte compared with
//! what was sent. One thread by default; with `--client-threads N` the connections are split
//! across N threads, each with its own `mio::Poll`.
//!
//! - [`stream()`]: 1 or 8 connections, 64 KiB writes of the stream pattern, MB/s verified;
//! - [`burst()`]: 8192 connections, each echoing one 1 KiB message once;
//! - [`request_response`]: `n` connections, one 64 B request outstanding on each (ping-pong
//!   with 1000, the latency workload with 1 and 16), each request's latency from an
//!   `Instant` taken before its write to the one after its echo was verified.
//!
//! The patterns, message formats and result types are the examples' (`examples/common/
//! workloads.rs`), so the gaio-driven clients there and this one check the same bytes.
//! Every loop is bounded in time and count; an error, a mismatch or a timeout is an `Err`
//! that names the connection.

mod burst;
mod reqresp;
mod stream;

pub use burst::burst;
pub use reqresp::request_response;
pub use stream::stream;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::common::example::workloads::{BenchResult, IO_TIMEOUT};

/// How long one `poll` may sleep before the loop looks at its deadlines again.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// What a part's error says when it stopped only because another thread's part failed.
const ABORTED: &str = "stopped by another client thread's failure";

/// Where the client's threads spent a run, summed over them: from `/proc/thread-self/schedstat`
/// at each thread's start and end (nanoseconds on a CPU, nanoseconds runnable but waiting for
/// one) and its wall time between the two.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadTimes {
    pub wall: Duration,
    pub on_cpu: Duration,
    /// Runnable, waiting for a CPU (taken by the server or by other processes).
    pub run_wait: Duration,
}

impl ThreadTimes {
    /// The share of the threads' wall time they slept (in `poll`, nothing to do: waiting for
    /// the server), in percent. Near 0 would mean the client is the cap; `NaN` if unknown.
    pub fn asleep_pct(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        if wall <= 0.0 {
            return f64::NAN;
        }
        let busy = (self.on_cpu + self.run_wait).as_secs_f64();
        (wall - busy).max(0.0) / wall * 100.0
    }

    fn add(&mut self, o: ThreadTimes) {
        self.wall += o.wall;
        self.on_cpu += o.on_cpu;
        self.run_wait += o.run_wait;
    }
}

/// The calling thread's (on a CPU, waiting for a CPU), in nanoseconds.
fn schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

/// Runs `f` on this thread and says where the thread spent that time (all zero if
/// `/proc/thread-self/schedstat` cannot be read).
fn timed<T>(f: impl FnOnce() -> T) -> (T, ThreadTimes) {
    let (s0, t0) = (schedstat(), Instant::now());
    let v = f();
    let wall = t0.elapsed();
    let times = match (s0, schedstat()) {
        (Some(a), Some(b)) => ThreadTimes {
            wall,
            on_cpu: Duration::from_nanos(b.0.saturating_sub(a.0)),
            run_wait: Duration::from_nanos(b.1.saturating_sub(a.1)),
        },
        _ => ThreadTimes::default(),
    };
    (v, times)
}

/// Connects (blocking, bounded by `IO_TIMEOUT`), then makes the socket non-blocking for mio.
/// `what` and `i` name the connection in the error.
pub fn connect(addr: SocketAddr, what: &str, i: usize) -> BenchResult<TcpStream> {
    let fail = |step: &str, e: io::Error| format!("{what}: connection {i}: {step}: {e}");
    let s = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| fail(&format!("cannot connect to {addr}"), e))?;
    s.set_nodelay(true).map_err(|e| fail("TCP_NODELAY", e))?;
    s.set_nonblocking(true).map_err(|e| fail("O_NONBLOCK", e))?;
    Ok(TcpStream::from_std(s))
}

/// The `k`-th of `threads` shares of `0..n`: contiguous, sizes differing by at most one.
fn share(n: usize, threads: usize, k: usize) -> std::ops::Range<usize> {
    let (q, r) = (n / threads, n % threads);
    let start = k * q + k.min(r);
    start..start + q + usize::from(k < r)
}

/// Runs `part(k)` for `k` in `0..threads`, each on a thread of its own (scoped), and returns
/// their values in order, and the threads' times summed. The first failure sets the shared abort flag, which the other parts
/// poll (every `POLL_SLICE` at most); the error returned is the first one that is not
/// [`ABORTED`].
fn on_threads<T: Send>(
    threads: usize,
    what: &str,
    part: impl Fn(usize, &AtomicBool) -> BenchResult<T> + Sync,
) -> BenchResult<(Vec<T>, ThreadTimes)> {
    let abort = AtomicBool::new(false);
    let mut times = ThreadTimes::default();
    let results: Vec<BenchResult<(T, ThreadTimes)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let (part, abort) = (&part, &abort);
                std::thread::Builder::new()
                    .name(format!("mio-client-{k}"))
                    .spawn_scoped(s, move || {
                        let (r, t) = timed(|| part(k, abort));
                        if r.is_err() {
                            abort.store(true, Ordering::Release);
                        }
                        r.map(|v| (v, t))
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(format!("{what}: a client thread panicked"))),
                Err(e) => {
                    abort.store(true, Ordering::Release);
                    Err(format!("{what}: cannot start a client thread: {e}"))
                }
            })
            .collect()
    });
    let mut first_abort = None;
    let mut values = Vec::with_capacity(threads);
    for r in results {
        match r {
            Ok((v, t)) => {
                values.push(v);
                times.add(t);
            }
            Err(e) if e.ends_with(ABORTED) => {
                first_abort.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match first_abort {
        Some(e) => Err(e),
        None => Ok((values, times)),
    }
}

/// Fails with [`ABORTED`] once another part has failed.
fn check_abort(abort: &AtomicBool, what: &str) -> BenchResult<()> {
    if abort.load(Ordering::Acquire) {
        return Err(format!("{what}: {ABORTED}"));
    }
    Ok(())
}

/// `poll`, retried on `EINTR`.
fn poll(p: &mut mio::Poll, events: &mut mio::Events, t: Duration, what: &str) -> BenchResult<()> {
    loop {
        match p.poll(events, Some(t)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{what}: poll: {e}")),
        }
    }
}
