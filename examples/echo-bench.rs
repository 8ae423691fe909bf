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
//! for every echo), so thousands of connections need no thread each. The client workloads are
//! in `examples/common/workloads.rs`, shared with `benches/compare` (gaio on both backends
//! against mio, tokio and monoio, side by side).
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

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::workloads::{
    burst, client_watcher, kernel_release, pingpong, set_phase, spawn_watchdog, stream, utc_now,
    BenchResult, Progress, BURST_MSG, PP_MSG, STREAM_CHUNK,
};
use common::{Args, EchoServer, ReadMode};
use gaio::{Backend, Watcher};

const USAGE: &str = "\
usage: echo-bench [OPTIONS]

The main job: an echo server on gaio, driven over loopback TCP by verifying clients (stream,
8192-connection burst, 1000-connection ping-pong), then a descriptor check. About 12 s.

options:
  --quick                         1 s phases, 1024 burst and 100 ping-pong connections
                                  (under 10 s in all)
  --secs N                        stream and ping-pong duration, in seconds (0.1 to 600;
                                  default 5, or 1 with --quick)
  --connect HOST:PORT             drive this outside server instead of the in-process one
  --server-pid PID                with --connect: check that the server's descriptor count
                                  returns to its start after each workload
  --burst-conns N                 connections of the burst (default 8192; 1024 with
                                  --quick)
  --pingpong-conns N              connections of the ping-pong (default 1000; 100
                                  with --quick)
  --backend epoll|uring|auto      the backend of both watchers (default: GAIO_BACKEND, else
                                  auto)
  --read swap|conn                how the in-process server reads (see echo-server --help)
  -h, --help                      print this help";

/// Longest wait for the descriptor counts to return to their baseline after a workload.
const FD_SETTLE: Duration = Duration::from_secs(5);
/// Descriptors kept aside for everything that is not a connection (stdio, listener, watchers).
const FD_RESERVE: u64 = 64;

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
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--quick" => {
                o.quick = true;
            }
            "--secs" => {
                let s: f64 = args.parse(&flag)?;
                if !(0.1..=600.0).contains(&s) {
                    return Err(format!("--secs {s}: expected 0.1 to 600"));
                }
                o.secs = Some(s);
            }
            "--connect" => o.connect = Some(common::resolve(&args.value(&flag)?)?),
            "--server-pid" => o.server_pid = Some(args.parse(&flag)?),
            "--burst-conns" => o.burst_conns = Some(positive(args.parse(&flag)?, "--burst-conns")?),
            "--pingpong-conns" => {
                o.pp_conns = Some(positive(args.parse(&flag)?, "--pingpong-conns")?)
            }
            "--backend" => o.backend = Some(args.parse(&flag)?),
            "--read" => o.read = args.parse(&flag)?,
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
    spawn_watchdog("echo-bench", plan.budget());

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
    let st = stream(addr, 1, plan.stream_secs, &mut progress)?;
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
