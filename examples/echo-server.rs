//! Echo server: the port of Go gaio's `examples/echo-server`.
//!
//! A plain `std` accept loop hands every new TCP connection to a gaio [`Watcher`]; one thread
//! loops on `wait_io()`, writes back whatever each read returned, and reads again once the
//! write has completed. Connections are freed on EOF or error. The server runs until it is
//! interrupted (Ctrl-C / SIGTERM).
//!
//! With `--accept-mode watcher` there is no accept thread: the watcher takes the listening
//! socket over and connections arrive as results of `accept` requests (a few kept
//! outstanding, each replaced as soon as it completes) on the same `wait_io` loop, so the whole
//! server is one loop on one thread.
//!
//! With `--watchers N` (Go gaio ships the same idea as its reuseport example) there are N
//! watchers, each with its own listener bound to the same address with `SO_REUSEPORT` (the
//! kernel spreads new connections over them), each watcher's poller and loop threads pinned
//! with `set_poller_affinity` / `set_loop_affinity` to CPU `i % ncpus` of the CPUs this
//! process may use, and each served by its own echo loop thread. While more than one watcher
//! runs, a stats line on stderr gives the connections each has accepted (every second, when
//! they change).
//!
//! ```text
//! cargo run --release --example echo-server -- --addr 127.0.0.1:7000
//! # in another terminal:
//! nc 127.0.0.1 7000
//! ```
//!
//! The first line on stdout is always `listening on <addr>` (flushed at once), so a script can
//! start the server on port 0 and read the port it got. Everything else goes to stderr.
//!
//! Options:
//! - `--addr HOST:PORT`: where to listen (default `127.0.0.1:0`, any free port);
//! - `--backend epoll|uring|auto`: the gaio backend (default: `GAIO_BACKEND`, else auto);
//! - `--accept-mode thread|watcher`: accept on a `std` thread (default), or with `accept`
//!   requests on the echo loop;
//! - `--read swap|conn`: read into the watcher's swap buffers and write the `SwapSlice` straight
//!   back, no copy (default; an idle connection holds no memory), or into a 64 KiB buffer owned
//!   by each connection that is written back as it is;
//! - `--buffer-size BYTES`: the swap buffer size, or the per-connection buffer size (64 KiB);
//! - `--watchers N`: N watchers on `SO_REUSEPORT` listeners, pinned one per CPU (default 1:
//!   one watcher, unpinned, on a plain listener);
//! - `--verbose`: log every connection opened and closed to stderr.
//!
//! The soft `RLIMIT_NOFILE` is raised to the hard limit at start, as a server with thousands of
//! connections needs.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use common::{AcceptMode, Args, EchoServer, ReadMode};
use gaio::{Backend, Watcher};

const USAGE: &str = "\
usage: echo-server [OPTIONS]

An echo server on one gaio wait_io loop (Go gaio's examples/echo-server). The first line on
stdout is `listening on <addr>`; it runs until interrupted.

options:
  --addr HOST:PORT                where to listen (default 127.0.0.1:0, any free port)
  --backend epoll|uring|auto      the gaio backend (default: GAIO_BACKEND, else auto)
  --read swap|conn                read into the swap buffers and write the slice back, no
                                  copy (default), or into a buffer per connection written
                                  back as it is
  --accept-mode thread|watcher    accept on a std thread (default), or with accept requests
                                  on the echo loop
  --buffer-size BYTES             the swap buffer size, or the per-connection buffer size
                                  (default 65536)
  --watchers N                    N watchers, each with its own SO_REUSEPORT listener on
                                  the same address and its threads pinned to CPU i % ncpus
                                  (default 1: one watcher, unpinned, plain listener)
  -v, --verbose                   log every connection opened and closed to stderr
  -h, --help                      print this help";

struct Options {
    addr: String,
    backend: Option<Backend>,
    read: ReadMode,
    accept: AcceptMode,
    buffer_size: usize,
    verbose: bool,
    /// `--watchers N`, if given.
    watchers: Option<usize>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:0".into(),
        backend: None,
        read: ReadMode::Swap,
        accept: AcceptMode::Thread,
        buffer_size: gaio::DEFAULT_SWAP_BUFFER_SIZE,
        verbose: false,
        watchers: None,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--addr" => o.addr = args.value(&flag)?,
            "--backend" => o.backend = Some(args.parse(&flag)?),
            "--read" => o.read = args.parse(&flag)?,
            "--accept-mode" => o.accept = args.parse(&flag)?,
            "--buffer-size" => o.buffer_size = args.parse(&flag)?,
            "--watchers" => o.watchers = Some(args.parse_within(&flag, 1..=1024)?),
            "--verbose" | "-v" => {
                o.verbose = true;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if o.buffer_size == 0 {
        return Err("--buffer-size must be at least 1".into());
    }
    if let ReadMode::PerConn(_) = o.read {
        o.read = ReadMode::PerConn(o.buffer_size);
    }
    Ok(o)
}

fn run(o: Options) -> Result<(), String> {
    if o.watchers.is_some() {
        return run_reuseport(o);
    }
    let addr = common::resolve(&o.addr)?;
    let watcher: Watcher<()> = common::server_watcher(
        Watcher::builder().swap_buffer_size(o.buffer_size),
        o.backend,
    )?;
    let backend = watcher.backend();

    let listener = common::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    // The contract with scripts: this is the first line on stdout, flushed at once.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {local}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(out);
    eprintln!(
        "echo-server: backend {backend}, reads into {}, accepts with {}",
        o.read, o.accept
    );

    let server = EchoServer::start_with(listener, watcher, o.read, o.accept, o.verbose)
        .map_err(|e| format!("cannot start the server threads: {e}"))?;
    // Runs until the process is interrupted; returns only if wait_io fails.
    server.wait().map_err(|e| format!("echo loop failed: {e}"))
}

/// A listener on `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`, as `common::listen`), so
/// that several can be bound to the same address and the kernel spreads connections over
/// them.
fn listen_reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(common::LISTEN_BACKLOG)?;
    Ok(sock.into())
}

/// The CPUs this process may run on (its affinity mask), at most `available_parallelism` of
/// them; `0..n` if the mask cannot be read.
fn usable_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is plain data (all zeroes is the empty set); sched_getaffinity only
    // writes the set we pass, of the size we pass.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if got != 0 {
        return (0..n).collect();
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: the index is below CPU_SETSIZE, the set's size.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .take(n)
        .collect();
    if cpus.is_empty() {
        (0..n).collect()
    } else {
        cpus
    }
}

/// `--watchers N`: N watchers, each with its own `SO_REUSEPORT` listener on the same address,
/// pinned to a CPU, each with its own echo loop thread.
fn run_reuseport(o: Options) -> Result<(), String> {
    let n = o.watchers.unwrap_or(1);
    let mut addr = common::resolve(&o.addr)?;
    let cpus = usable_cpus();

    // Bind every listener first: with port 0 the first one picks the port, the others take it.
    let mut listeners = Vec::with_capacity(n);
    for i in 0..n {
        let l = listen_reuseport(addr)
            .map_err(|e| format!("cannot listen on {addr} (listener {i}): {e}"))?;
        if i == 0 {
            addr = l.local_addr().map_err(|e| format!("local address: {e}"))?;
        }
        listeners.push(l);
    }
    // The contract with scripts: this is the first line on stdout, flushed at once.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(out);

    let mut servers = Vec::with_capacity(n);
    let mut pinned = Vec::with_capacity(n);
    for (i, listener) in listeners.into_iter().enumerate() {
        let watcher: Watcher<()> = common::server_watcher(
            Watcher::builder().swap_buffer_size(o.buffer_size),
            o.backend,
        )?;
        let cpu = cpus[i % cpus.len()];
        let mut ok = true;
        if let Err(e) = watcher.set_poller_affinity(cpu) {
            eprintln!("echo-server: warning: watcher {i}: set_poller_affinity({cpu}): {e}");
            ok = false;
        }
        if let Err(e) = watcher.set_loop_affinity(cpu) {
            eprintln!("echo-server: warning: watcher {i}: set_loop_affinity({cpu}): {e}");
            ok = false;
        }
        pinned.push(if ok { cpu.to_string() } else { "-".into() });
        let server = EchoServer::start_with(listener, watcher, o.read, o.accept, o.verbose)
            .map_err(|e| format!("cannot start the server threads of watcher {i}: {e}"))?;
        servers.push(server);
    }
    eprintln!(
        "echo-server: backend {}, reads into {}, accepts with {}; {n} watcher(s) on {addr} \
         (SO_REUSEPORT), pinned to CPUs [{}] of the {} this process may use {:?}",
        servers[0].backend(),
        o.read,
        o.accept,
        pinned.join(", "),
        cpus.len(),
        cpus
    );

    let stats: Vec<_> = servers.iter().map(EchoServer::stats).collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for (i, server) in servers.into_iter().enumerate() {
        let tx = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("echo-wait-{i}"))
            .spawn(move || {
                let _ = tx.send((i, server.wait()));
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
    }
    // Runs until the process is interrupted: a stats line whenever the counts change, and a
    // return only if an echo loop fails.
    let mut last: Vec<(u64, u64)> = vec![(0, 0); stats.len()];
    loop {
        match done_rx.recv_timeout(Duration::from_secs(1)) {
            Ok((i, r)) => {
                return r
                    .map_err(|e| format!("echo loop of watcher {i} failed: {e}"))
                    .and_then(|()| Err(format!("echo loop of watcher {i} ended")));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if n > 1 {
            let now: Vec<(u64, u64)> = stats
                .iter()
                .map(|s| {
                    let accepted = s.accepted.load(Ordering::Relaxed);
                    (
                        accepted,
                        accepted.saturating_sub(s.closed.load(Ordering::Relaxed)),
                    )
                })
                .collect();
            if now != last {
                let accepted: Vec<u64> = now.iter().map(|c| c.0).collect();
                let open: Vec<u64> = now.iter().map(|c| c.1).collect();
                eprintln!(
                    "echo-server: stats: connections accepted per watcher {accepted:?} \
                     (total {}), open {open:?}",
                    accepted.iter().sum::<u64>()
                );
                last = now;
            }
        }
    }
}

fn main() -> ExitCode {
    let result = parse_args().and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-server: {e}");
            ExitCode::FAILURE
        }
    }
}
