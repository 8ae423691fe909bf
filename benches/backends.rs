//! epoll against io_uring, side by side in one run (DESIGN.md §5, issue 3).
//!
//! ```text
//! cargo bench --bench backends                      # 7 rounds, about 2 minutes
//! cargo bench --bench backends -- --quick           # a smoke check, about 10 s
//! cargo bench --bench backends -- --rounds 9        # more rounds
//! ```
//!
//! The same echo server (`examples/common`'s `EchoServer`, swap-buffer reads, as the
//! `echo-server` example runs it) is measured on `Backend::Epoll` and on `Backend::Uring` with
//! the same clients (`examples/common/workloads.rs`, shared with `echo-bench`; every echoed
//! byte is verified, and any mismatch, error or timeout fails the run with a non-zero exit):
//!
//! - **stream x1, stream x8**: 1 and 8 connections, 64 KiB writes, MB/s of verified echo;
//! - **burst**: 8192 connections x 1 KiB echoed once: seconds, and the server's peak RSS;
//! - **ping-pong**: 1000 connections x 64 B request/response: requests/s, p50, p99;
//! - **idle**: 10 000 connections each with a pending swap read on the server: server RSS per
//!   connection, `(RSS with the idle connections - RSS before) / n`.
//!
//! Also the server's CPU time per unit of work (per MB echoed, per request, per burst), from
//! `/proc/PID/task/*/schedstat`: throughput on a shared 2-core machine moves with whatever
//! else runs, CPU per unit of work much less, and it tells a slower backend that spends more
//! CPU from one that waits more.
//!
//! The server runs in a process of its own, so that its memory is measured alone: this binary
//! re-executes itself with `GAIO_BENCH_SERVER=epoll|uring`, which makes it run only the echo
//! server and print `listening on ADDR`; it then answers `stats` lines on stdin and exits at
//! EOF. Every measurement gets a fresh server process, so VmHWM (`/proc/PID/status`) after the
//! burst is that burst's peak. Clients run in this process on a fixed backend (epoll unless
//! `--client-backend uring`), the same for both servers.
//!
//! Rounds alternate the order (epoll then io_uring, then io_uring then epoll, ...), each
//! workload measured on both backends back to back. The report gives each metric's median over
//! the rounds for both backends and the ratio io_uring/epoll (absolute numbers drift by 30%
//! between runs on this machine; the ratio is the result). It is printed to stdout and, for a
//! full run, written to `benches/results/backends.md` (`--out PATH` to write elsewhere; a
//! `--quick` run writes no file unless `--out` is given).
//!
//! Run with no argument at all (as `cargo test --benches` or `--all-targets` runs it), it is a
//! `--quick` smoke test.
//!
//! Options: `--quick`, `--rounds N`, `--secs S` (stream and ping-pong duration, default 2),
//! `--only LIST` (comma-separated: stream1,stream8,burst,pingpong,idle), `--client-backend
//! epoll|uring`, `--out PATH`. A watchdog ends the run with exit code 3 if it overruns.

#[path = "../examples/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::workloads::{
    burst, idle_open, idle_verify, kernel_release, pingpong, set_phase, spawn_watchdog, stream,
    utc_now, BenchResult, Progress, BURST_MSG, PP_MSG, STREAM_CHUNK,
};
use common::{Args, EchoServer, ReadMode};
use gaio::{Backend, Watcher};

/// Set in the environment of the re-executed binary: run only the echo server on this backend.
const SERVER_ENV: &str = "GAIO_BENCH_SERVER";

const USAGE: &str = "\
usage: cargo bench --bench backends [-- [--quick] [--rounds N] [--secs S]
           [--only stream1,stream8,burst,pingpong,idle] [--client-backend epoll|uring]
           [--out PATH]]";

/// Descriptors kept aside for everything that is not a connection.
const FD_RESERVE: u64 = 64;
/// Longest wait for the server to account for every connection the client closed.
const SETTLE: Duration = Duration::from_secs(10);
/// Longest wait for a server process to start listening or to exit.
const PROC_TIMEOUT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------------------
// Options and plan
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Stream1,
    Stream8,
    Burst,
    PingPong,
    Idle,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::Stream1,
        Workload::Stream8,
        Workload::Burst,
        Workload::PingPong,
        Workload::Idle,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Stream1 => "stream1",
            Workload::Stream8 => "stream8",
            Workload::Burst => "burst",
            Workload::PingPong => "pingpong",
            Workload::Idle => "idle",
        }
    }
}

struct Options {
    quick: bool,
    rounds: Option<usize>,
    secs: Option<f64>,
    only: Vec<Workload>,
    client_backend: Backend,
    out: Option<String>,
    /// The arguments as given (without cargo's `--bench`), for the report.
    given: Vec<String>,
}

fn parse_args() -> BenchResult<Options> {
    let given: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut o = Options {
        quick: false,
        rounds: None,
        secs: None,
        only: Workload::ALL.to_vec(),
        client_backend: Backend::Epoll,
        out: None,
        given,
    };
    // `cargo bench` passes --bench; `cargo test --benches` (and `--all-targets`) runs bench
    // binaries with no argument at all: then this is a smoke test, as --quick.
    if std::env::args().len() == 1 {
        o.quick = true;
    }
    let mut args = Args::from_env();
    while let Some(mut flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--bench" => {}
            "--quick" => {
                args.no_value(&flag)?;
                o.quick = true;
            }
            "--rounds" => {
                let n: usize = args.parse(&mut flag)?;
                if !(1..=100).contains(&n) {
                    return Err(format!("--rounds {n}: expected 1 to 100"));
                }
                o.rounds = Some(n);
            }
            "--secs" => {
                let s: f64 = args.parse(&mut flag)?;
                if !(0.1..=60.0).contains(&s) {
                    return Err(format!("--secs {s}: expected 0.1 to 60"));
                }
                o.secs = Some(s);
            }
            "--only" => {
                let list = args.value(&mut flag)?;
                o.only = list
                    .split(',')
                    .map(|w| {
                        Workload::ALL
                            .into_iter()
                            .find(|x| x.name() == w.trim())
                            .ok_or_else(|| format!("--only: unknown workload {w:?}\n{USAGE}"))
                    })
                    .collect::<BenchResult<_>>()?;
            }
            "--client-backend" => {
                o.client_backend = match args.parse(&mut flag)? {
                    Backend::Auto => return Err("--client-backend: epoll or uring".into()),
                    b => b,
                }
            }
            "--out" => o.out = Some(args.value(&mut flag)?),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// What the run does, after options and the descriptor limit.
struct Plan {
    rounds: usize,
    stream_secs: Duration,
    burst_conns: usize,
    burst_timeout: Duration,
    pp_conns: usize,
    pp_warmup: Duration,
    pp_secs: Duration,
    idle_conns: usize,
    notes: Vec<String>,
}

impl Plan {
    fn new(o: &Options, fd_limit: u64) -> Plan {
        let q = o.quick;
        let secs = Duration::from_secs_f64(o.secs.unwrap_or(if q { 0.5 } else { 2.0 }));
        let mut plan = Plan {
            rounds: o.rounds.unwrap_or(if q { 2 } else { 7 }),
            stream_secs: secs,
            burst_conns: if q { 1024 } else { 8192 },
            burst_timeout: Duration::from_secs(10),
            pp_conns: if q { 100 } else { 1000 },
            pp_warmup: Duration::from_millis(if q { 200 } else { 500 }),
            pp_secs: secs,
            idle_conns: if q { 1000 } else { 10_000 },
            notes: Vec::new(),
        };
        // Client and server are separate processes: one descriptor per connection in each.
        let fit = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        for (name, n) in [
            ("burst", &mut plan.burst_conns),
            ("ping-pong", &mut plan.pp_conns),
            ("idle", &mut plan.idle_conns),
        ] {
            if *n > fit {
                plan.notes.push(format!(
                    "RLIMIT_NOFILE is {fd_limit}, too low for {} {name} connections; using {fit}",
                    *n
                ));
                *n = fit.max(1);
            }
        }
        plan
    }

    /// Upper bound on the whole run, for the watchdog: per measurement its timed part plus
    /// 30 s for dialling, settling and process start-up (each of which has its own timeout).
    fn budget(&self, only: &[Workload]) -> Duration {
        let per_round: Duration = only
            .iter()
            .map(|w| {
                let timed = match w {
                    Workload::Stream1 | Workload::Stream8 => self.stream_secs,
                    Workload::PingPong => self.pp_warmup + self.pp_secs,
                    Workload::Burst | Workload::Idle => Duration::ZERO,
                };
                2 * (timed + Duration::from_secs(30))
            })
            .sum();
        per_round * self.rounds as u32 + Duration::from_secs(30)
    }
}

// ------------------------------------------------------------------------------------------
// Metrics
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// One row of the report.
struct Metric {
    workload: Workload,
    label: String,
    better: Better,
    decimals: usize,
}

fn metrics(plan: &Plan) -> Vec<Metric> {
    let m = |workload, label: String, better, decimals| Metric {
        workload,
        label,
        better,
        decimals,
    };
    let chunk = STREAM_CHUNK / 1024;
    vec![
        m(
            Workload::Stream1,
            format!("stream, 1 conn x {chunk} KiB: MB/s"),
            Better::Higher,
            0,
        ),
        m(
            Workload::Stream1,
            "stream, 1 conn: server CPU per MB echoed, µs".into(),
            Better::Lower,
            0,
        ),
        m(
            Workload::Stream8,
            format!("stream, 8 conns x {chunk} KiB: MB/s"),
            Better::Higher,
            0,
        ),
        m(
            Workload::Stream8,
            "stream, 8 conns: server CPU per MB echoed, µs".into(),
            Better::Lower,
            0,
        ),
        m(
            Workload::Burst,
            format!(
                "burst, {} conns x {} KiB: seconds",
                plan.burst_conns,
                BURST_MSG / 1024
            ),
            Better::Lower,
            3,
        ),
        m(
            Workload::Burst,
            "burst: server peak RSS (VmHWM), MiB".into(),
            Better::Lower,
            2,
        ),
        m(
            Workload::Burst,
            "burst: server CPU, ms".into(),
            Better::Lower,
            0,
        ),
        m(
            Workload::PingPong,
            format!("ping-pong, {} conns x {PP_MSG} B: k req/s", plan.pp_conns),
            Better::Higher,
            1,
        ),
        m(
            Workload::PingPong,
            "ping-pong: p50 latency, ms".into(),
            Better::Lower,
            2,
        ),
        m(
            Workload::PingPong,
            "ping-pong: p99 latency, ms".into(),
            Better::Lower,
            2,
        ),
        m(
            Workload::PingPong,
            "ping-pong: server CPU per request, µs".into(),
            Better::Lower,
            2,
        ),
        m(
            Workload::Idle,
            format!(
                "idle, {} conns: server RSS per conn, bytes",
                plan.idle_conns
            ),
            Better::Lower,
            0,
        ),
    ]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

// ------------------------------------------------------------------------------------------
// The server process
// ------------------------------------------------------------------------------------------

/// The server's counters, from its `stats` answer.
#[derive(Debug, Clone, Copy)]
struct ServerStats {
    accepted: u64,
    closed: u64,
    errors: u64,
    /// Bytes echoed (completed writes).
    bytes: u64,
}

/// An echo server in a child process (this binary, re-executed with `SERVER_ENV`).
struct ServerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    backend: Backend,
}

impl ServerProc {
    fn spawn(backend: Backend) -> BenchResult<ServerProc> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .env(SERVER_ENV, backend.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the {backend} server process: {e}"))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let mut proc = ServerProc {
            child,
            stdin,
            stdout: BufReader::new(stdout.ok_or("no server stdout")?),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            backend,
        };
        // The first line is `listening on ADDR`; a server that fails exits, which ends it.
        let line = proc.line()?;
        proc.addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                format!("{backend} server: expected `listening on ADDR`, got {line:?}")
            })?;
        Ok(proc)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> BenchResult<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err(format!(
                "{} server (pid {}) exited unexpectedly",
                self.backend,
                self.pid()
            )),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(format!("{} server: reading its stdout: {e}", self.backend)),
        }
    }

    fn stats(&mut self) -> BenchResult<ServerStats> {
        let backend = self.backend;
        let stdin = self.stdin.as_mut().ok_or("server stdin closed")?;
        stdin
            .write_all(b"stats\n")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{backend} server: writing to its stdin: {e}"))?;
        let line = self.line()?;
        let nums: Vec<u64> = line
            .strip_prefix("stats ")
            .map(|s| s.split(' ').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default();
        match nums[..] {
            [accepted, closed, errors, bytes] => Ok(ServerStats {
                accepted,
                closed,
                errors,
                bytes,
            }),
            _ => Err(format!("{backend} server: bad stats line {line:?}")),
        }
    }

    /// VmRSS and VmHWM of the server process, in bytes.
    fn memory(&self) -> BenchResult<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let field = |name: &str| -> BenchResult<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .ok_or_else(|| format!("{path}: no {name}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// CPU time the server's threads have used so far, in seconds: the sum of the first field
    /// of `/proc/PID/task/*/schedstat` (nanoseconds on a CPU; no thread of the server exits
    /// before it is read).
    fn cpu_secs(&self) -> BenchResult<f64> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut ns: u64 = 0;
        for task in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
            let path = task
                .map_err(|e| format!("{dir}: {e}"))?
                .path()
                .join("schedstat");
            // A thread may end between the listing and the read: it no longer counts.
            if let Ok(text) = std::fs::read_to_string(&path) {
                ns += text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(ns as f64 / 1e9)
    }

    /// Waits (bounded) until the server has accepted `n` connections.
    fn wait_accepted(&mut self, n: u64) -> BenchResult<()> {
        let until = Instant::now() + SETTLE;
        loop {
            let s = self.stats()?;
            if s.accepted >= n {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "{} server: accepted {} of {n} connections after {:.0} s",
                    self.backend,
                    s.accepted,
                    SETTLE.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After the client closed its `n` connections: waits (bounded) until the server has
    /// accepted and freed exactly `n`, and fails if it logged any error.
    fn settle(&mut self, n: u64) -> BenchResult<ServerStats> {
        let until = Instant::now() + SETTLE;
        loop {
            let s = self.stats()?;
            if s.errors != 0 {
                return Err(format!(
                    "{} server: {} connections ended with an error (see its stderr)",
                    self.backend, s.errors
                ));
            }
            if s.accepted == n && s.closed == n {
                return Ok(s);
            }
            if s.accepted > n || Instant::now() >= until {
                return Err(format!(
                    "{} server: accepted {}, freed {}; expected {n} of each",
                    self.backend, s.accepted, s.closed
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the server's stdin (it shuts down and exits) and waits for it, bounded.
    fn finish(mut self) -> BenchResult<()> {
        drop(self.stdin.take());
        let until = Instant::now() + PROC_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(()),
                Ok(Some(st)) => return Err(format!("{} server exited with {st}", self.backend)),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    return Err(format!(
                        "{} server did not exit within {:.0} s of its stdin closing",
                        self.backend,
                        PROC_TIMEOUT.as_secs_f64()
                    ))
                }
                Err(e) => return Err(format!("{} server: wait: {e}", self.backend)),
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // Still running (a failed measurement, or `finish` gave up): end this child.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The re-executed binary: an echo server on `backend` until stdin closes.
fn server_main(backend: &str) -> ExitCode {
    // Die with the bench process, even if it is killed (the watchdog, a signal).
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    match serve(backend) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backends: {backend} server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(backend: &str) -> BenchResult<()> {
    let backend: Backend = backend.parse().map_err(|e| format!("{e}"))?;
    common::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let watcher: Watcher<()> = Watcher::builder()
        .backend(backend)
        .build()
        .map_err(|e| format!("cannot start the watcher: {e}"))?;
    let ln = common::listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("cannot listen: {e}"))?;
    let server = EchoServer::start(ln, watcher, ReadMode::Swap, false)
        .map_err(|e| format!("cannot start the echo server: {e}"))?;
    let stats = server.stats();
    let mut out = io::stdout().lock();
    let mut say = |line: String| {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))
    };
    say(format!("listening on {}", server.addr()))?;
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        match line.trim() {
            "stats" => say(format!(
                "stats {} {} {} {}",
                stats.accepted.load(Ordering::Relaxed),
                stats.closed.load(Ordering::Relaxed),
                stats.errors.load(Ordering::Relaxed),
                stats.bytes.load(Ordering::Relaxed)
            ))?,
            other => return Err(format!("unknown command {other:?}")),
        }
    }
    server.shutdown().map_err(|e| format!("shutdown: {e}"))
}

// ------------------------------------------------------------------------------------------
// Measurements
// ------------------------------------------------------------------------------------------

/// Measures `workload` against a fresh `backend` server; returns its metrics' values, in the
/// order of `metrics()`.
fn measure(
    workload: Workload,
    backend: Backend,
    plan: &Plan,
    client: Backend,
) -> BenchResult<Vec<f64>> {
    let mut server = ServerProc::spawn(backend)?;
    let addr = server.addr;
    let mut quiet = Progress::silent();
    let values = match workload {
        Workload::Stream1 | Workload::Stream8 => {
            let n = if workload == Workload::Stream1 { 1 } else { 8 };
            let st = stream(addr, n, plan.stream_secs, &mut quiet)?;
            let echoed = server.settle(n as u64)?.bytes;
            let cpu = server.cpu_secs()?;
            vec![
                st.bytes as f64 / 1e6 / st.elapsed.as_secs_f64(),
                cpu * 1e6 / (echoed as f64 / 1e6).max(1e-9),
            ]
        }
        Workload::Burst => {
            let n = plan.burst_conns;
            let bu = burst(addr, n, plan.burst_timeout, Some(client), &mut quiet)?;
            server.settle(n as u64)?;
            let (_, hwm) = server.memory()?;
            let cpu = server.cpu_secs()?;
            vec![
                bu.total.as_secs_f64(),
                hwm as f64 / (1024.0 * 1024.0),
                cpu * 1e3,
            ]
        }
        Workload::PingPong => {
            let n = plan.pp_conns;
            let pp = pingpong(
                addr,
                n,
                plan.pp_warmup,
                plan.pp_secs,
                Some(client),
                &mut quiet,
            )?;
            // Every request the server echoed, warm-up and tail included.
            let echoed = server.settle(n as u64)?.bytes / PP_MSG as u64;
            let cpu = server.cpu_secs()?;
            let rate = pp.requests as f64 / pp.window.as_secs_f64().max(1e-9);
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            vec![
                rate / 1e3,
                ms(pp.percentile(0.50)),
                ms(pp.percentile(0.99)),
                cpu * 1e6 / (echoed as f64).max(1.0),
            ]
        }
        Workload::Idle => {
            let n = plan.idle_conns;
            let before = stable_rss(&server)?;
            let mut socks = idle_open(addr, n, SETTLE)?;
            server.wait_accepted(n as u64)?;
            let after = stable_rss(&server)?;
            // Every connection still has its read pending: one byte each comes back.
            idle_verify(&mut socks)?;
            drop(socks);
            server.settle(n as u64)?;
            vec![(after as f64 - before as f64) / n as f64]
        }
    };
    server.finish()?;
    Ok(values)
}

/// The server's VmRSS once it stops changing (two equal samples 50 ms apart; at most 2 s).
fn stable_rss(server: &ServerProc) -> BenchResult<u64> {
    let until = Instant::now() + Duration::from_secs(2);
    let mut last = server.memory()?.0;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = server.memory()?.0;
        if now == last || Instant::now() >= until {
            return Ok(now);
        }
        last = now;
    }
}

// ------------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------------

const BACKENDS: [Backend; 2] = [Backend::Epoll, Backend::Uring];

fn run(o: Options) -> BenchResult<()> {
    let fd_limit = common::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let plan = Plan::new(&o, fd_limit);
    spawn_watchdog("backends", plan.budget(&o.only));
    // Both backends must run here: a side-by-side with one side missing is a failure.
    for b in BACKENDS {
        Watcher::builder()
            .backend(b)
            .build::<()>()
            .map_err(|e| format!("backend {b} cannot run here: {e}"))?;
    }

    let metrics = metrics(&plan);
    // values[metric][backend index][round]
    let mut values: Vec<[Vec<f64>; 2]> = metrics.iter().map(|_| [vec![], vec![]]).collect();
    let start = Instant::now();
    let run_cpu = CpuSnapshot::take();
    let mut other_cpu = Vec::with_capacity(plan.rounds);
    eprintln!(
        "backends: {} rounds of {}; progress on stderr, report on stdout",
        plan.rounds,
        o.only
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for round in 0..plan.rounds {
        let round_cpu = CpuSnapshot::take();
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &w in Workload::ALL.iter().filter(|w| o.only.contains(w)) {
            for bi in order {
                let backend = BACKENDS[bi];
                set_phase(w.name());
                let got = measure(w, backend, &plan, o.client_backend)
                    .map_err(|e| format!("round {}, {} on {backend}: {e}", round + 1, w.name()))?;
                let rows: Vec<usize> = (0..metrics.len())
                    .filter(|&i| metrics[i].workload == w)
                    .collect();
                assert_eq!(rows.len(), got.len(), "one value per metric of {w:?}");
                let mut shown = Vec::new();
                for (&i, v) in rows.iter().zip(&got) {
                    values[i][bi].push(*v);
                    let m = &metrics[i];
                    shown.push(format!("{} {:.*}", short(&m.label), m.decimals, v));
                }
                eprintln!(
                    "[{:6.1}s] round {}/{} {:<8} {:<5} {}",
                    start.elapsed().as_secs_f64(),
                    round + 1,
                    plan.rounds,
                    w.name(),
                    backend.to_string(),
                    shown.join(", ")
                );
            }
        }
        let other = CpuSnapshot::other_since(round_cpu);
        if let Some(pct) = other {
            eprintln!(
                "         round {}: other processes used {pct:.0}% of the CPUs",
                round + 1
            );
        }
        other_cpu.push(other);
    }
    set_phase("report");
    let info = RunInfo {
        fd_limit,
        took: start.elapsed(),
        other_cpu,
        other_total: CpuSnapshot::other_since(run_cpu),
    };
    let report = report(&o, &plan, &metrics, &values, &info);
    print!("{report}");
    let out = match (&o.out, o.quick) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => {
            Some(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/backends.md").into())
        }
        (None, true) => None,
    };
    match out {
        Some(p) => {
            if let Some(dir) = std::path::Path::new(&p).parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::write(&p, &report).map_err(|e| format!("{p}: {e}"))?;
            eprintln!("backends: report written to {p}");
        }
        None => eprintln!("backends: --quick: no report file written (give --out PATH)"),
    }
    Ok(())
}

/// The last part of a metric label, for the progress lines.
fn short(label: &str) -> &str {
    label.rsplit(": ").next().unwrap_or(label)
}

/// Facts about the run for the report.
struct RunInfo {
    fd_limit: u64,
    took: Duration,
    /// Per round: the share of the machine's CPU time used by other processes, in percent.
    other_cpu: Vec<Option<f64>>,
    other_total: Option<f64>,
}

/// Machine-wide busy CPU time and this process's own (with its waited-for children, the
/// server processes), to tell how much of the machine other processes took during a span.
#[derive(Clone, Copy)]
struct CpuSnapshot {
    /// Non-idle ticks of all CPUs (`/proc/stat`: user, nice, system, irq, softirq, steal).
    busy: u64,
    /// utime + stime + cutime + cstime of this process (`/proc/self/stat`).
    own: u64,
    at: Instant,
}

impl CpuSnapshot {
    fn take() -> Option<CpuSnapshot> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum();
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces): state is field 3, so
        // utime..cstime (fields 14 to 17) are at 11..15 here.
        let rest: Vec<u64> = me
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let own = rest.get(11..15)?.iter().sum();
        Some(CpuSnapshot {
            busy,
            own,
            at: Instant::now(),
        })
    }

    /// Percent of all CPUs' time since `from` that went to other processes.
    fn other_since(from: Option<CpuSnapshot>) -> Option<f64> {
        let (from, now) = (from?, CpuSnapshot::take()?);
        // SAFETY: sysconf has no memory preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let cores = std::thread::available_parallelism().ok()?.get();
        let span = now.at.duration_since(from.at).as_secs_f64() * hz as f64 * cores as f64;
        let other =
            now.busy.saturating_sub(from.busy) as f64 - now.own.saturating_sub(from.own) as f64;
        (span > 0.0).then(|| (other / span * 100.0).max(0.0))
    }
}

fn report(
    o: &Options,
    plan: &Plan,
    metrics: &[Metric],
    values: &[[Vec<f64>; 2]],
    info: &RunInfo,
) -> String {
    let mut r = String::new();
    let args = if o.given.is_empty() {
        String::new()
    } else {
        format!(" -- {}", o.given.join(" "))
    };
    // `cargo bench` passes --bench; anything else ran the binary itself.
    let command = if std::env::args().any(|a| a == "--bench") {
        format!("`cargo bench --bench backends{args}`")
    } else {
        let mut c = std::env::args().next().unwrap_or_default();
        for a in &o.given {
            c.push(' ');
            c.push_str(a);
        }
        if o.given.is_empty() {
            format!("`{c}` (no arguments: a --quick smoke test)")
        } else {
            format!("`{c}`")
        }
    };
    let _ = writeln!(r, "# gaio: epoll vs io_uring, side by side");
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Written by `benches/backends.rs`; regenerate with `cargo bench --bench backends` \
         (see `benches/README.md`)."
    );
    let _ = writeln!(r);
    let _ = writeln!(r, "- command: {command}");
    let _ = writeln!(r, "- date: {}", utc_now());
    let _ = writeln!(r, "- kernel: {}", kernel_release());
    let _ = writeln!(
        r,
        "- cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        r,
        "- rounds: {} (order alternating: epoll then io_uring, then io_uring then epoll; each \
         workload on both backends back to back); run took {:.0} s",
        plan.rounds,
        info.took.as_secs_f64()
    );
    if let Some(pct) = info.other_total {
        let rounds: Vec<String> = info
            .other_cpu
            .iter()
            .map(|p| p.map_or("?".into(), |p| format!("{p:.0}%")))
            .collect();
        let _ = writeln!(
            r,
            "- other load: processes outside this bench used {pct:.0}% of the CPUs' time during \
             the run (per round: {}); near 0% on a quiet machine, and the numbers are only \
             comparable when it is",
            rounds.join(", ")
        );
    }
    let _ = writeln!(
        r,
        "- server: `EchoServer` (swap-buffer reads), a fresh process per measurement; clients \
         in the bench process: stream on blocking threads (a writer and a reader per \
         connection), burst and ping-pong on a gaio {} watcher, idle on plain sockets; every \
         echoed byte verified",
        o.client_backend
    );
    let _ = writeln!(
        r,
        "- plan: stream {:.1} s; burst {} conns, timeout {:.0} s; ping-pong {} conns, {:.1} s \
         warm-up + {:.1} s; idle {} conns; fd limit {}",
        plan.stream_secs.as_secs_f64(),
        plan.burst_conns,
        plan.burst_timeout.as_secs_f64(),
        plan.pp_conns,
        plan.pp_warmup.as_secs_f64(),
        plan.pp_secs.as_secs_f64(),
        plan.idle_conns,
        info.fd_limit
    );
    for n in &plan.notes {
        let _ = writeln!(r, "- note: {n}");
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "| metric | epoll (median) | io_uring (median) | io_uring/epoll | paired | better | \
         verdict |"
    );
    let _ = writeln!(r, "|---|--:|--:|--:|--:|---|---|");
    for (m, v) in metrics.iter().zip(values) {
        if v[0].is_empty() {
            continue;
        }
        let (e, u) = (median(&v[0]), median(&v[1]));
        let ratio = u / e;
        // Each round measures both backends back to back: the median of those ratios is
        // less exposed to the machine's drift than the ratio of the medians.
        let paired: Vec<f64> = v[1].iter().zip(&v[0]).map(|(u, e)| u / e).collect();
        let paired = median(&paired);
        let (dir, uring_wins) = match m.better {
            Better::Higher => ("higher", ratio > 1.0),
            Better::Lower => ("lower", ratio < 1.0),
        };
        let verdict = if (ratio - 1.0).abs() < 0.05 {
            "within 5%"
        } else if uring_wins {
            "io_uring better"
        } else {
            "epoll better"
        };
        let _ = writeln!(
            r,
            "| {} | {:.*} | {:.*} | {ratio:.2} | {paired:.2} | {dir} | {verdict} |",
            m.label, m.decimals, e, m.decimals, u
        );
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "io_uring/epoll: the ratio of the two medians. paired: the median over the rounds of \
         each round's io_uring/epoll (both measured back to back). better: which direction of \
         the metric is better, so a ratio above 1 favours io_uring where it says higher, epoll \
         where it says lower. verdict: from the ratio of the medians; within 5% counts as even."
    );
    let _ = writeln!(r);
    let _ = writeln!(r, "Every round's values (round 1 first):");
    let _ = writeln!(r);
    let _ = writeln!(r, "| metric | backend | values |");
    let _ = writeln!(r, "|---|---|---|");
    for (m, v) in metrics.iter().zip(values) {
        if v[0].is_empty() {
            continue;
        }
        for (bi, b) in BACKENDS.iter().enumerate() {
            let vals: Vec<String> = v[bi]
                .iter()
                .map(|x| format!("{x:.*}", m.decimals))
                .collect();
            let _ = writeln!(r, "| {} | {b} | {} |", m.label, vals.join(", "));
        }
    }
    r
}

fn main() -> ExitCode {
    if let Ok(b) = std::env::var(SERVER_ENV) {
        return server_main(&b);
    }
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = io::stdout().flush();
            eprintln!("backends: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
