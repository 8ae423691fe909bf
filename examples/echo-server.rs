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
//! - `--read swap|conn`: read into the watcher's swap buffers, copying into a pooled buffer for
//!   the write (default; an idle connection holds no memory), or into a 64 KiB buffer owned by
//!   each connection that is written back without a copy;
//! - `--buffer-size BYTES`: the swap buffer size, or the per-connection buffer size (64 KiB);
//! - `--verbose`: log every connection opened and closed to stderr.
//!
//! The soft `RLIMIT_NOFILE` is raised to the hard limit at start, as a server with thousands of
//! connections needs.

mod common;

use std::io::Write;
use std::process::ExitCode;

use common::{AcceptMode, Args, EchoServer, ReadMode};
use gaio::{Backend, Watcher};

const USAGE: &str = "\
usage: echo-server [OPTIONS]

An echo server on one gaio wait_io loop (Go gaio's examples/echo-server). The first line on
stdout is `listening on <addr>`; it runs until interrupted.

options:
  --addr HOST:PORT                where to listen (default 127.0.0.1:0, any free port)
  --backend epoll|uring|auto      the gaio backend (default: GAIO_BACKEND, else auto)
  --read swap|conn                read into the swap buffers and copy into a pooled buffer
                                  for the write (default), or into a buffer per connection
                                  written back as it is
  --accept-mode thread|watcher    accept on a std thread (default), or with accept requests
                                  on the echo loop
  --buffer-size BYTES             the swap buffer size, or the per-connection buffer size
                                  (default 65536)
  -v, --verbose                   log every connection opened and closed to stderr
  -h, --help                      print this help";

struct Options {
    addr: String,
    backend: Option<Backend>,
    read: ReadMode,
    accept: AcceptMode,
    buffer_size: usize,
    verbose: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:0".into(),
        backend: None,
        read: ReadMode::Swap,
        accept: AcceptMode::Thread,
        buffer_size: gaio::DEFAULT_SWAP_BUFFER_SIZE,
        verbose: false,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--addr" => o.addr = args.value(&flag)?,
            "--backend" => o.backend = Some(args.parse(&flag)?),
            "--read" => o.read = args.parse(&flag)?,
            "--accept-mode" => o.accept = args.parse(&flag)?,
            "--buffer-size" => o.buffer_size = args.parse(&flag)?,
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
