//! A server in a child process of its own, so that its memory and CPU time are measured
//! alone: the bench binary re-executes itself with `GAIO_BENCH_SERVER=KIND`, the child runs
//! only that server and prints `listening on ADDR`, then answers `stats` lines on its stdin
//! with its counters (`stats N N ...`: an echo server's are [`ServerStats`], the `http`
//! bench's its own), and shuts down and exits when its stdin closes. Both ends of that
//! protocol are here: [`ServerProc`] (the bench's side) and [`serve_stdin`] (the child's). A
//! fresh server per measurement makes VmHWM after a workload that workload's peak.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::example::workloads::BenchResult;
use super::example::EchoStats;

/// Set in the environment of the re-executed binary: run only this kind of echo server.
pub const SERVER_ENV: &str = "GAIO_BENCH_SERVER";
/// Longest wait for the server to account for every connection the client opened or closed.
pub const SETTLE: Duration = Duration::from_secs(10);
/// Longest wait for a server process to start listening or to exit.
const PROC_TIMEOUT: Duration = Duration::from_secs(10);

/// An echo server's counters, from its `stats` answer.
#[derive(Debug, Clone, Copy)]
pub struct ServerStats {
    pub accepted: u64,
    pub closed: u64,
    pub errors: u64,
    /// Bytes echoed (written back).
    pub bytes: u64,
}

/// The bench's handle on a server child process.
pub struct ServerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    kind: String,
}

impl ServerProc {
    /// Starts this binary again as a `kind` server and waits for its address.
    pub fn spawn(kind: &str) -> BenchResult<ServerProc> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .env(SERVER_ENV, kind)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the {kind} server process: {e}"))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let mut proc = ServerProc {
            child,
            stdin,
            stdout: BufReader::new(stdout.ok_or("no server stdout")?),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kind: kind.to_string(),
        };
        // The first line is `listening on ADDR`; a server that fails exits, which ends it
        // (and a hung one is the watchdog's).
        let line = proc.line()?;
        proc.addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{kind} server: expected `listening on ADDR`, got {line:?}"))?;
        Ok(proc)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> BenchResult<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err(format!(
                "{} server (pid {}) exited unexpectedly",
                self.kind,
                self.pid()
            )),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(format!("{} server: reading its stdout: {e}", self.kind)),
        }
    }

    /// The server's counters, as many as it reports (`stats N N ...`).
    pub fn counters(&mut self) -> BenchResult<Vec<u64>> {
        let kind = &self.kind;
        let stdin = self.stdin.as_mut().ok_or("server stdin closed")?;
        stdin
            .write_all(b"stats\n")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{kind} server: writing to its stdin: {e}"))?;
        let line = self.line()?;
        line.strip_prefix("stats ")
            .and_then(|s| s.split(' ').map(|n| n.parse().ok()).collect())
            .ok_or_else(|| format!("{} server: bad stats line {line:?}", self.kind))
    }

    /// An echo server's counters.
    pub fn stats(&mut self) -> BenchResult<ServerStats> {
        match self.counters()?[..] {
            [accepted, closed, errors, bytes] => Ok(ServerStats {
                accepted,
                closed,
                errors,
                bytes,
            }),
            ref other => Err(format!(
                "{} server: expected 4 counters, got {other:?}",
                self.kind
            )),
        }
    }

    /// The server's kind, as given to [`ServerProc::spawn`].
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// VmRSS and VmHWM of the server process, in bytes.
    pub fn memory(&self) -> BenchResult<(u64, u64)> {
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

    /// The server's VmRSS once it stops changing (two equal samples 50 ms apart; at most 2 s).
    pub fn stable_rss(&self) -> BenchResult<u64> {
        let until = Instant::now() + Duration::from_secs(2);
        let mut last = self.memory()?.0;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.memory()?.0;
            if now == last || Instant::now() >= until {
                return Ok(now);
            }
            last = now;
        }
    }

    /// CPU time the server's threads have used so far, in seconds: the sum of the first field
    /// of `/proc/PID/task/*/schedstat` (nanoseconds on a CPU). A thread that has exited no
    /// longer counts; the servers here keep theirs until shutdown.
    pub fn cpu_secs(&self) -> BenchResult<f64> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut ns: u64 = 0;
        for task in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
            let path = task
                .map_err(|e| format!("{dir}: {e}"))?
                .path()
                .join("schedstat");
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

    /// Times the server's threads have been scheduled onto a CPU so far (each a context switch
    /// in): the sum of the third field of `/proc/PID/task/*/schedstat`. A wake-up of a thread
    /// that slept (a hand-off between threads, a wait in the kernel) is one.
    pub fn switches(&self) -> BenchResult<u64> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut n: u64 = 0;
        for task in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
            let path = task
                .map_err(|e| format!("{dir}: {e}"))?
                .path()
                .join("schedstat");
            if let Ok(text) = std::fs::read_to_string(&path) {
                n += text
                    .split_whitespace()
                    .nth(2)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(n)
    }

    /// Waits (bounded) until the server has accepted `n` connections.
    pub fn wait_accepted(&mut self, n: u64) -> BenchResult<()> {
        let until = Instant::now() + SETTLE;
        loop {
            let s = self.stats()?;
            if s.accepted >= n {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "{} server: accepted {} of {n} connections after {:.0} s",
                    self.kind,
                    s.accepted,
                    SETTLE.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After the client closed its `n` connections: waits (bounded) until the server has
    /// accepted and closed exactly `n`, and fails if it counted any error.
    pub fn settle(&mut self, n: u64) -> BenchResult<ServerStats> {
        let until = Instant::now() + SETTLE;
        loop {
            let s = self.stats()?;
            if s.errors != 0 {
                return Err(format!(
                    "{} server: {} connections ended with an error (see its stderr)",
                    self.kind, s.errors
                ));
            }
            if s.accepted == n && s.closed == n {
                return Ok(s);
            }
            if s.accepted > n || Instant::now() >= until {
                return Err(format!(
                    "{} server: accepted {}, closed {}; expected {n} of each",
                    self.kind, s.accepted, s.closed
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the server's stdin (it shuts down and exits) and waits for it, bounded.
    pub fn finish(mut self) -> BenchResult<()> {
        drop(self.stdin.take());
        let until = Instant::now() + PROC_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(()),
                Ok(Some(st)) => return Err(format!("{} server exited with {st}", self.kind)),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    return Err(format!(
                        "{} server did not exit within {:.0} s of its stdin closing",
                        self.kind,
                        PROC_TIMEOUT.as_secs_f64()
                    ))
                }
                Err(e) => return Err(format!("{} server: wait: {e}", self.kind)),
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

/// The child's side, first thing in its `main`: die with the bench process, even if that is
/// killed (the watchdog, a signal), so that no server outlives a run.
pub fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
}

/// An echo server's counters, in the order of [`ServerStats`].
pub fn echo_counters(stats: &EchoStats) -> Vec<u64> {
    [&stats.accepted, &stats.closed, &stats.errors, &stats.bytes]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect()
}

/// The child's side once its server runs: prints `listening on ADDR`, answers `stats` lines
/// with `stats N N ...` from `counters`, and returns when stdin closes.
pub fn serve_stdin(addr: SocketAddr, counters: impl Fn() -> Vec<u64>) -> BenchResult<()> {
    let mut out = io::stdout().lock();
    let mut say = |line: String| {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))
    };
    say(format!("listening on {addr}"))?;
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        match line.trim() {
            "stats" => {
                let nums: Vec<String> = counters().iter().map(u64::to_string).collect();
                say(format!("stats {}", nums.join(" ")))?
            }
            other => return Err(format!("unknown command {other:?}")),
        }
    }
    Ok(())
}
