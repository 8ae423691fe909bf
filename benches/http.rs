//! The `http-server` example against the same responder on tokio, driven by `wrk` (issue 5).
//!
//! ```text
//! cargo bench --bench http                      # 5 rounds x 3 cases x 3 servers x 3 s, about 2.5 minutes
//! cargo bench --bench http -- --quick           # 1 round of 1 s each, about 15 s
//! cargo bench --bench http -- --rounds 7 --secs 5 --only c100,pipeline16
//! ```
//!
//! Servers, each in a process of its own (this binary re-executed with
//! `GAIO_BENCH_SERVER=gaio-epoll|gaio-uring|tokio`, `common::server_proc`, so its CPU time is
//! read alone from `/proc/PID/task/*/schedstat`), a fresh one per measurement:
//! - **gaio-epoll**, **gaio-uring**: `examples/http/server.rs`, the example's one `wait_io`
//!   loop, on a forced backend;
//! - **tokio**: `benches/peers/http_tokio.rs`, multi-thread runtime, one task per connection.
//!
//! Both use the example's parser and send the same bytes, so the comparison is the I/O.
//!
//! Cases (`wrk -t1 -d<secs>s --latency`, one wrk thread):
//! - **c100**: 100 keep-alive connections, one request at a time each;
//! - **c1000**: 1000 keep-alive connections (skipped when `RLIMIT_NOFILE` is too low);
//! - **pipeline16**: 100 connections, 16 pipelined requests per write (a Lua script with
//!   `wrk.format` repeated).
//!
//! Each measurement: the server's answers are checked first by a client of our own (three
//! pipelined requests compared byte for byte, then a `Connection: close` request), then wrk
//! runs; any socket error or non-2xx response wrk reports fails the run, and so does a byte
//! count that is not the expected response size per request, a server that answered fewer
//! requests than wrk counted, or a server error. Figures: requests/s, p50 and p99 latency
//! (wrk's), and the server's CPU time per request. Rounds rotate the order of the servers;
//! the report gives medians and the ratios gaio/tokio. On the 2-core development machine wrk
//! and the server share the cores (wrk's one thread takes about one), so requests/s is
//! bounded by the client as much as by the server, and CPU per request is the steadier figure.
//!
//! `wrk` comes from `$WRK`, else `PATH`; if it is missing, the bench installs it with
//! `apt-get install -y wrk` when it runs as root on a system with apt, and otherwise says how
//! to get it. Run with no argument at all (as `cargo test --benches` runs it), it is a
//! `--quick` smoke test that never installs anything: without wrk it only checks the servers'
//! answers.
//!
//! A full run writes `benches/results/http.md` (`--out PATH` elsewhere) and
//! `target/bench-results/http.json` (`--json PATH` elsewhere); `--quick` writes neither unless
//! asked. A watchdog ends the run with exit code 3 if it overruns.

mod common;
#[path = "../examples/http/mod.rs"]
mod http;
#[path = "peers/http_tokio.rs"]
mod http_tokio;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::example::workloads::{set_phase, spawn_watchdog, BenchResult};
use common::example::Args;
use common::results::{BenchFile, Better, ImplResult, Workload};
use common::run_info::{self, CpuSnapshot};
use common::server_proc::{self, ServerProc, SERVER_ENV};
use common::stats::median;
use common::{cli, outputs};
use gaio::{Backend, Watcher};
use http::response::OK_KEEP_ALIVE;
use http::server::{HttpServer, Stats};
use http_tokio::TokioHttpServer;

const USAGE: &str = "\
usage: cargo bench --bench http [-- OPTIONS]

The http-server example on epoll and io_uring against the same responder on tokio, driven by
wrk; every answer checked.

options:
  --quick                  1 round of 1 s per case; writes no file unless --out or --json
  --rounds N               rounds per case (1 to 50; default 5)
  --secs S                 wrk's duration per measurement, whole seconds (1 to 60; default 3)
  --only LIST              comma-separated cases: c100, c1000, pipeline16 (default all)
  --out PATH               write the report here (default benches/results/http.md)
  --json PATH              write the results file here (default
                           target/bench-results/http.json)
  -h, --help               print this help";

/// Longest wait for a connection or an answer in our check; also the slack added to wrk's
/// own duration and, per measurement, to the watchdog's budget (a server process's start and
/// exit are bounded in `common::server_proc`).
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests per write in the pipelined case.
const PIPELINE: usize = 16;
/// Descriptors wrk and the server each need beyond the connections.
const FD_SPARE: u64 = 100;

// ------------------------------------------------------------------------------------------
// Servers and cases
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    GaioEpoll,
    GaioUring,
    Tokio,
}

impl Impl {
    const ALL: [Impl; 3] = [Impl::GaioEpoll, Impl::GaioUring, Impl::Tokio];

    fn name(self) -> &'static str {
        match self {
            Impl::GaioEpoll => "gaio-epoll",
            Impl::GaioUring => "gaio-uring",
            Impl::Tokio => "tokio",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    C100,
    C1000,
    Pipeline16,
}

impl Case {
    const ALL: [Case; 3] = [Case::C100, Case::C1000, Case::Pipeline16];

    fn key(self) -> &'static str {
        match self {
            Case::C100 => "c100",
            Case::C1000 => "c1000",
            Case::Pipeline16 => "pipeline16",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Case::C100 => "wrk keep-alive, 100 conns",
            Case::C1000 => "wrk keep-alive, 1000 conns",
            Case::Pipeline16 => "wrk pipelined x16, 100 conns",
        }
    }

    /// Whether wrk's latency percentiles mean anything here. Not with pipelining: wrk 4.1
    /// "corrects" for coordinated omission with synthetic samples spaced by the mean interval
    /// between responses per connection, which pipelining makes tiny; samples land below the
    /// recorded minimum, where its percentile walk never looks, and the 99th percentile comes
    /// out as 0 in some runs (and skewed in the others).
    fn latency_valid(self) -> bool {
        self != Case::Pipeline16
    }

    fn conns(self) -> u64 {
        match self {
            Case::C1000 => 1000,
            _ => 100,
        }
    }
}

/// The figures of one measurement, in the order of [`METRICS`].
type Sample = [f64; 4];

/// Name, unit, better.
const METRICS: [(&str, &str, Better); 4] = [
    ("throughput", "requests/s", Better::Higher),
    ("p50 latency", "ms", Better::Lower),
    ("p99 latency", "ms", Better::Lower),
    ("server CPU per request", "µs", Better::Lower),
];

// ------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------

struct Options {
    quick: bool,
    /// No argument at all: the `cargo test --benches` smoke test, which installs nothing.
    smoke: bool,
    rounds: Option<usize>,
    secs: Option<u64>,
    only: Vec<Case>,
    out: Option<String>,
    json: Option<String>,
}

fn parse_args() -> BenchResult<Options> {
    let smoke = run_info::no_arguments();
    let mut o = Options {
        quick: smoke,
        smoke,
        rounds: None,
        secs: None,
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
            "--rounds" => o.rounds = Some(args.parse_within(&flag, 1..=50)?),
            // Whole seconds, as wrk takes them.
            "--secs" => o.secs = Some(args.parse_within(&flag, 1..=60)?),
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

// ------------------------------------------------------------------------------------------
// The server process
// ------------------------------------------------------------------------------------------

/// The counters an HTTP server reports in its `stats` answer.
#[derive(Debug, Clone, Copy, Default)]
struct HttpStats {
    requests: u64,
    refused: u64,
    errors: u64,
}

/// The counters of the server in `server`, in the order [`serve`] reports them.
fn http_stats(server: &mut ServerProc) -> BenchResult<HttpStats> {
    match server.counters()?[..] {
        [requests, refused, errors] => Ok(HttpStats {
            requests,
            refused,
            errors,
        }),
        ref other => Err(format!(
            "{} server: expected 3 counters, got {other:?}",
            server.kind()
        )),
    }
}

/// The re-executed binary: one server until stdin closes.
fn server_main(name: &str) -> ExitCode {
    server_proc::die_with_parent();
    match serve(name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http bench: {name} server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A running server of either kind.
enum Running {
    Gaio(HttpServer),
    Tokio(TokioHttpServer),
}

fn serve(name: &str) -> BenchResult<()> {
    let imp = Impl::ALL
        .into_iter()
        .find(|i| i.name() == name)
        .ok_or_else(|| format!("unknown server {name:?}"))?;
    common::example::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let ln = common::example::listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("cannot listen: {e}"))?;
    let running = match imp {
        Impl::GaioEpoll | Impl::GaioUring => {
            let backend = if imp == Impl::GaioEpoll {
                Backend::Epoll
            } else {
                Backend::Uring
            };
            let w = Watcher::builder()
                .backend(backend)
                .build()
                .map_err(|e| format!("cannot start a {backend} watcher: {e}"))?;
            Running::Gaio(HttpServer::start(ln, w).map_err(|e| format!("start: {e}"))?)
        }
        Impl::Tokio => {
            Running::Tokio(TokioHttpServer::start(ln).map_err(|e| format!("start: {e}"))?)
        }
    };
    let (addr, stats): (SocketAddr, Arc<Stats>) = match &running {
        Running::Gaio(s) => (s.addr(), s.stats()),
        Running::Tokio(s) => (s.addr(), s.stats()),
    };
    server_proc::serve_stdin(addr, || {
        [&stats.requests, &stats.refused, &stats.errors]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    })?;
    match running {
        Running::Gaio(s) => s.shutdown().map_err(|e| format!("shutdown: {e}")),
        Running::Tokio(s) => {
            drop(s);
            Ok(())
        }
    }
}

// ------------------------------------------------------------------------------------------
// Checking the answers, running wrk
// ------------------------------------------------------------------------------------------

/// Our own check of a server's answers: three pipelined requests in one write, compared byte
/// for byte, then a `Connection: close` request, answered and closed.
fn verify(addr: SocketAddr, name: &str) -> BenchResult<()> {
    let fail = |what: String| format!("{name} server: {what}");
    let mut c = TcpStream::connect_timeout(&addr, CHECK_TIMEOUT)
        .map_err(|e| fail(format!("connect: {e}")))?;
    c.set_read_timeout(Some(CHECK_TIMEOUT))
        .and_then(|()| c.set_nodelay(true))
        .map_err(|e| fail(format!("socket options: {e}")))?;
    let get = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    c.write_all(&get.repeat(3))
        .map_err(|e| fail(format!("write: {e}")))?;
    let mut got = vec![0u8; 3 * OK_KEEP_ALIVE.len()];
    c.read_exact(&mut got)
        .map_err(|e| fail(format!("reading 3 pipelined responses: {e}")))?;
    if got != OK_KEEP_ALIVE.repeat(3) {
        return Err(fail(format!(
            "wrong answer to 3 pipelined requests: {:?}",
            String::from_utf8_lossy(&got)
        )));
    }
    c.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .map_err(|e| fail(format!("write: {e}")))?;
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .map_err(|e| fail(format!("reading to the close: {e}")))?;
    let text = String::from_utf8_lossy(&rest);
    if !(text.starts_with("HTTP/1.1 200 OK\r\n")
        && text.contains("\r\nConnection: close\r\n")
        && text.ends_with("\r\n\r\nHello, World!"))
    {
        return Err(fail(format!("wrong answer to Connection: close: {text:?}")));
    }
    Ok(())
}

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, Default)]
struct WrkRun {
    requests: u64,
    bytes: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    socket_errors: u64,
    non_2xx: u64,
}

/// Finds wrk: `$WRK`, then `PATH`.
fn find_wrk() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WRK") {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("wrk"))
        .find(|p| p.is_file())
}

/// Finds wrk, or installs it with apt when that is possible (root, apt-get present).
fn find_or_install_wrk() -> BenchResult<PathBuf> {
    if let Some(p) = find_wrk() {
        return Ok(p);
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let apt = Path::new("/usr/bin/apt-get").exists();
    let how = "install it (Debian/Ubuntu: `apt-get install wrk`; or build \
               https://github.com/wg/wrk) and put it on PATH, or set WRK=/path/to/wrk";
    if !(root && apt) {
        return Err(format!("wrk not found; {how}"));
    }
    println!("wrk not found: running apt-get install -y wrk");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "wrk"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        // A fresh container may have no package lists yet.
        let _ = Command::new("apt-get").arg("update").status();
        if !install() {
            return Err(format!("apt-get install wrk failed; {how}"));
        }
    }
    find_wrk().ok_or_else(|| format!("wrk still not found after apt-get; {how}"))
}

/// The Lua script that makes wrk send [`PIPELINE`] requests per write.
fn pipeline_script() -> BenchResult<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gaio-bench-http");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("pipeline{PIPELINE}.lua"));
    let script = format!(
        "-- {PIPELINE} pipelined GET requests per write (written by benches/http.rs)\n\
         init = function(args)\n  \
           local r = {{}}\n  \
           for i = 1, {PIPELINE} do r[i] = wrk.format(nil, \"/\") end\n  \
           req = table.concat(r)\n\
         end\n\
         request = function()\n  return req\nend\n"
    );
    std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Runs wrk against `addr` for `secs`, bounded; returns its parsed report.
fn run_wrk(
    wrk: &Path,
    addr: SocketAddr,
    case: Case,
    secs: u64,
    script: &Path,
) -> BenchResult<WrkRun> {
    let mut cmd = Command::new(wrk);
    cmd.arg("-t1")
        .arg(format!("-c{}", case.conns()))
        .arg(format!("-d{secs}s"))
        .arg("--latency");
    if case == Case::Pipeline16 {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(format!("http://{addr}/"));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", wrk.display()))?;
    let mut stdout = child.stdout.take().ok_or("wrk: no stdout")?;
    let mut stderr = child.stderr.take().ok_or("wrk: no stderr")?;
    let reader = std::thread::spawn(move || {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        (out, err)
    });
    let until = Instant::now() + Duration::from_secs(secs) + CHECK_TIMEOUT + CHECK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("wrk did not finish within {:?}", until.elapsed()));
            }
            Err(e) => return Err(format!("wrk: wait: {e}")),
        }
    };
    let (out, err) = reader.join().map_err(|_| "wrk output reader panicked")?;
    if !status.success() {
        return Err(format!("wrk exited with {status}: {err}{out}"));
    }
    parse_wrk(&out).map_err(|e| format!("{e}; wrk said:\n{out}{err}"))
}

/// Parses wrk's report (with `--latency`).
fn parse_wrk(out: &str) -> BenchResult<WrkRun> {
    let mut r = WrkRun::default();
    let (mut have_rps, mut have_count, mut have_p50, mut have_p99) = (false, false, false, false);
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v
                .trim()
                .parse()
                .map_err(|_| format!("Requests/sec {v:?}"))?;
            have_rps = true;
        } else if let Some(v) = line.strip_prefix("50%") {
            r.p50_ms = wrk_duration_ms(v.trim())?;
            have_p50 = true;
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = wrk_duration_ms(v.trim())?;
            have_p99 = true;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            r.socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(u64::MAX);
        } else if line.contains(" requests in ") && line.ends_with(" read") {
            // 183072 requests in 2.01s, 13.62MB read
            let mut words = line.split_whitespace();
            r.requests = words
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("request count in {line:?}"))?;
            let size = line
                .rsplit_once(", ")
                .and_then(|(_, s)| s.strip_suffix(" read"))
                .ok_or_else(|| format!("byte count in {line:?}"))?;
            r.bytes = wrk_bytes(size)?;
            have_count = true;
        }
    }
    if !(have_rps && have_count && have_p50 && have_p99) {
        return Err(
            "could not find requests/s, the request count and the latency \
                    distribution in wrk's report"
                .into(),
        );
    }
    Ok(r)
}

/// A wrk duration (`634.00us`, `1.20ms`, `2.00s`, `1.00m`) in milliseconds.
fn wrk_duration_ms(v: &str) -> BenchResult<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("duration {v:?}"))?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("duration {v:?}"))?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return Err(format!("duration unit {v:?}")),
    };
    Ok(n * scale)
}

/// A wrk byte count (`13.62MB`; wrk's units are powers of 1024) in bytes.
fn wrk_bytes(v: &str) -> BenchResult<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("size {v:?}"))?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("size {v:?}"))?;
    let scale = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("size unit {v:?}")),
    };
    Ok(n * scale)
}

/// One measurement: a fresh server, our check, wrk, the checks of wrk's report.
fn measure(imp: Impl, case: Case, secs: u64, wrk: &Path, script: &Path) -> BenchResult<Sample> {
    let name = imp.name();
    let mut server = ServerProc::spawn(name)?;
    verify(server.addr(), name)?;
    let before = http_stats(&mut server)?;
    let cpu0 = server.cpu_secs()?;
    let w = run_wrk(wrk, server.addr(), case, secs, script)?;
    let cpu1 = server.cpu_secs()?;
    let after = http_stats(&mut server)?;
    server.finish()?;

    let what = format!("{name}, {}", case.key());
    if w.socket_errors > 0 || w.non_2xx > 0 {
        return Err(format!(
            "{what}: wrk saw {} socket errors and {} non-2xx responses",
            w.socket_errors, w.non_2xx
        ));
    }
    if w.requests == 0 {
        return Err(format!("{what}: wrk completed no request"));
    }
    // Every response is the fixed one, so bytes per request is its length (wrk prints the
    // total with 3 significant digits or so, and may have read part of a last response).
    let per_request = w.bytes / w.requests as f64;
    let expected = OK_KEEP_ALIVE.len() as f64;
    if (per_request - expected).abs() / expected > 0.02 {
        return Err(format!(
            "{what}: wrk read {per_request:.1} bytes per response, expected {expected}"
        ));
    }
    let answered = after.requests - before.requests;
    if answered < w.requests {
        return Err(format!(
            "{what}: the server answered {answered} requests, wrk counted {}",
            w.requests
        ));
    }
    if after.refused + after.errors > 0 {
        return Err(format!(
            "{what}: the server refused {} requests and had {} connection errors",
            after.refused, after.errors
        ));
    }
    let cpu_us = (cpu1 - cpu0) * 1e6 / w.requests as f64;
    if !case.latency_valid() {
        return Ok([w.rps, f64::NAN, f64::NAN, cpu_us]);
    }
    if !(w.p50_ms > 0.0 && w.p99_ms >= w.p50_ms) {
        return Err(format!(
            "{what}: wrk reported p50 {} ms and p99 {} ms, which cannot be",
            w.p50_ms, w.p99_ms
        ));
    }
    Ok([w.rps, w.p50_ms, w.p99_ms, cpu_us])
}

// ------------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------------

/// Every measured value: `[case][impl][metric]` -> one value per round.
type Values = Vec<[[Vec<f64>; 4]; 3]>;

fn run(o: Options) -> BenchResult<()> {
    let rounds = o.rounds.unwrap_or(if o.quick { 1 } else { 5 });
    let secs = o.secs.unwrap_or(if o.quick { 1 } else { 3 });
    let fd_limit =
        common::example::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let mut notes = Vec::new();
    let mut cases = o.only.clone();
    if fd_limit < Case::C1000.conns() + FD_SPARE {
        cases.retain(|&c| c != Case::C1000);
        notes.push(format!(
            "c1000 skipped: RLIMIT_NOFILE allows only {fd_limit} descriptors"
        ));
    }

    let wrk = if o.smoke {
        find_wrk()
    } else {
        Some(find_or_install_wrk()?)
    };
    let Some(wrk) = wrk else {
        // The no-argument smoke test without wrk: check the servers' answers only.
        spawn_watchdog("http", CHECK_TIMEOUT * 6);
        for imp in Impl::ALL {
            set_phase(imp.name());
            let server = ServerProc::spawn(imp.name())?;
            verify(server.addr(), imp.name())?;
            server.finish()?;
            println!("{}: answers checked", imp.name());
        }
        println!(
            "http: wrk not found, so no wrk runs (`cargo bench --bench http -- --quick` \
             installs it when run as root with apt; or put it on PATH)"
        );
        return Ok(());
    };
    let script = pipeline_script()?;

    let per = Duration::from_secs(secs) + CHECK_TIMEOUT * 3;
    spawn_watchdog(
        "http",
        per * (rounds * cases.len() * Impl::ALL.len()) as u32 + Duration::from_secs(60),
    );
    println!(
        "http: {rounds} round(s) x {} case(s) x {} servers x {secs} s, wrk at {}",
        cases.len(),
        Impl::ALL.len(),
        wrk.display()
    );
    let load_from = CpuSnapshot::take();
    let mut other_rounds = Vec::with_capacity(rounds);
    let mut values: Values = cases.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        let round_from = CpuSnapshot::take();
        for (ci, &case) in cases.iter().enumerate() {
            set_phase(case.key());
            // Rotate which server goes first, so that drift over the run spreads evenly.
            for k in 0..Impl::ALL.len() {
                let ii = (k + round + ci) % Impl::ALL.len();
                let imp = Impl::ALL[ii];
                let s = measure(imp, case, secs, &wrk, &script)?;
                let ms = |v: f64| {
                    if v.is_finite() {
                        format!("{v:>6.2} ms")
                    } else {
                        "     n/a ".into()
                    }
                };
                println!(
                    "round {} {:<10} {:<10} {:>9.0} req/s  p50 {}  p99 {}  cpu {:>5.2} µs/req",
                    round + 1,
                    case.key(),
                    imp.name(),
                    s[0],
                    ms(s[1]),
                    ms(s[2]),
                    s[3]
                );
                for (m, v) in s.iter().enumerate() {
                    values[ci][ii][m].push(*v);
                }
            }
        }
        other_rounds.push(run_info::round_load(round_from, round));
    }
    let other = CpuSnapshot::other_since(load_from);

    let file = BenchFile {
        bench: "http".into(),
        date: run_info::utc_now(),
        kernel: run_info::kernel_release(),
        cores: run_info::cores(),
        command: run_info::command("http"),
        other_load: run_info::other_load_text(other, &other_rounds),
        workloads: workloads(&cases, &values),
        notes,
    };
    let md = report(&file, rounds, secs, &cases, &values);
    println!("\n{md}");
    outputs::write_report("http", !o.quick, o.out.as_deref(), &md)?;
    outputs::write_results(!o.quick, o.json.as_deref(), &file)
}

/// The JSON tables: one per case and metric.
fn workloads(cases: &[Case], values: &Values) -> Vec<Workload> {
    let mut out = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        for (m, (metric, unit, better)) in METRICS.iter().enumerate() {
            if matches!(m, 1 | 2) && !case.latency_valid() {
                continue;
            }
            let name = if m == 0 {
                case.title().to_string()
            } else {
                format!("{}: {metric}", case.title())
            };
            let metric = if m == 0 {
                unit.to_string()
            } else {
                format!("{metric} {unit}")
            };
            out.push(Workload {
                name,
                metric,
                better: *better,
                results: Impl::ALL
                    .iter()
                    .enumerate()
                    .map(|(ii, imp)| ImplResult {
                        imp: imp.name().into(),
                        median: median(&values[ci][ii][m]),
                        rounds: values[ci][ii][m].clone(),
                    })
                    .collect(),
                extra: Default::default(),
            });
        }
    }
    out
}

fn report(file: &BenchFile, rounds: usize, secs: u64, cases: &[Case], values: &Values) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "# HTTP: gaio's http-server example against tokio, driven by wrk\n"
    );
    let _ = writeln!(
        r,
        "`{}`: {}, kernel {}, {} cores, {rounds} round(s) of {secs} s per case and \
         server. Other load: {}.\n",
        file.command,
        file.date,
        file.kernel,
        file.cores,
        file.other_load
            .as_deref()
            .unwrap_or("unknown (/proc/stat unreadable)"),
    );
    let _ = writeln!(
        r,
        "wrk (`-t1`, one thread) and the server run on the same {} cores: wrk's thread takes \
         about one of them, so requests/s measures the client and the server together; the \
         server's CPU time per request is the steadier figure. Medians over the rounds; the \
         ratio columns are gaio/tokio (above 1 is better for requests/s, below 1 for the \
         others). Every measurement checked the answers first and had no wrk socket error or \
         non-2xx response.\n",
        file.cores
    );
    if cases.contains(&Case::Pipeline16) {
        let _ = writeln!(
            r,
            "No latency for the pipelined case: wrk 4.1's coordinated-omission correction \
             adds synthetic samples spaced by the mean interval between a connection's \
             responses, which pipelining makes tiny; they fall below the recorded minimum, \
             and its 99th percentile then reads 0 in some runs (skewed in the others).\n"
        );
    }
    for n in &file.notes {
        let _ = writeln!(r, "Note: {n}.\n");
    }
    for (ci, case) in cases.iter().enumerate() {
        let _ = writeln!(r, "## {}\n", case.title());
        let _ = writeln!(
            r,
            "| metric | gaio-epoll | gaio-uring | tokio | epoll/tokio | uring/tokio |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|");
        for (m, (metric, unit, _)) in METRICS.iter().enumerate() {
            if matches!(m, 1 | 2) && !case.latency_valid() {
                let _ = writeln!(r, "| {metric} ({unit}) | n/a | n/a | n/a | | |");
                continue;
            }
            let med: Vec<f64> = (0..3).map(|ii| median(&values[ci][ii][m])).collect();
            let fmt = |v: f64| match m {
                0 => format!("{v:.0}"),
                _ => format!("{v:.2}"),
            };
            let ratio = |a: f64| {
                if med[2] > 0.0 {
                    format!("{:.2}", a / med[2])
                } else {
                    "-".into()
                }
            };
            let _ = writeln!(
                r,
                "| {metric} ({unit}) | {} | {} | {} | {} | {} |",
                fmt(med[0]),
                fmt(med[1]),
                fmt(med[2]),
                ratio(med[0]),
                ratio(med[1])
            );
        }
        let _ = writeln!(r);
    }
    let _ = writeln!(r, "## Every round\n");
    let _ = writeln!(
        r,
        "| case | server | requests/s | p50 ms | p99 ms | CPU µs/request |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|");
    for (ci, case) in cases.iter().enumerate() {
        for (ii, imp) in Impl::ALL.iter().enumerate() {
            let col = |m: usize, digits: usize| {
                values[ci][ii][m]
                    .iter()
                    .map(|v| {
                        if v.is_finite() {
                            format!("{v:.digits$}")
                        } else {
                            "n/a".into()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} | {} |",
                case.key(),
                imp.name(),
                col(0, 0),
                col(1, 2),
                col(2, 2),
                col(3, 2)
            );
        }
    }
    r
}

fn main() -> ExitCode {
    if let Ok(name) = std::env::var(SERVER_ENV) {
        return server_main(&name);
    }
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
