//! A minimal HTTP/1.1 server on one gaio `wait_io` loop: every request gets
//! `200 OK` with the body `Hello, World!`. Keep-alive and pipelining are supported (all the
//! requests completed by one read are answered with one write, in order), `Content-Length`
//! bodies are skipped, `Connection: close` and HTTP/1.0 without keep-alive close after the
//! response, a malformed request gets a 400 (a head over 8 KiB a 431) and the connection is
//! closed. Accepting, reading and writing all run on the one loop thread (`accept` requests
//! on the watched listener); the parser is `examples/http/parse.rs`, the loop
//! `examples/http/server.rs`.
//!
//! ```text
//! cargo run --release --example http-server                  # listens on 127.0.0.1:8080
//! curl -i http://127.0.0.1:8080/
//! wrk -t1 -c100 -d5s http://127.0.0.1:8080/                  # or: cargo bench --bench http
//! ```
//!
//! The first line on stdout is `listening on <addr>` (flushed at once), so a script can start
//! it on port 0 and read the port it got.
//!
//! Options:
//! - `--addr HOST:PORT`: where to listen (default `127.0.0.1:8080`);
//! - `--backend epoll|uring|auto`: the gaio backend (default: `GAIO_BACKEND`, else auto);
//! - `--requests N`: exit after answering N requests;
//! - `--secs S`: exit after S seconds.
//!
//! Without a limit it runs until it is interrupted. At exit it prints its counters to stderr.

mod common;
mod http;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Args;
use gaio::{Backend, Watcher};
use http::server::{serve, Limits, Stats};

const USAGE: &str = "\
usage: http-server [OPTIONS]

An HTTP/1.1 keep-alive \"Hello, World!\" responder on one gaio wait_io loop. The first line on
stdout is `listening on <addr>`; without a limit it runs until interrupted.

options:
  --addr HOST:PORT                where to listen (default 127.0.0.1:8080)
  --backend epoll|uring|auto      the gaio backend (default: GAIO_BACKEND, else auto)
  --requests N                    exit after answering N requests
  --secs S                        exit after S seconds (a decimal number)
  -h, --help                      print this help";

struct Options {
    addr: String,
    backend: Option<Backend>,
    limits: Limits,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:8080".into(),
        backend: None,
        limits: Limits::default(),
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--addr" => o.addr = args.value(&flag)?,
            "--backend" => o.backend = Some(args.parse(&flag)?),
            "--requests" => o.limits.requests = Some(args.parse(&flag)?),
            "--secs" => {
                let s: f64 = args.parse(&flag)?;
                let d = Duration::try_from_secs_f64(s).map_err(|e| format!("--secs {s}: {e}"))?;
                o.limits.until = Some(Instant::now() + d);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn run(o: Options) -> Result<(), String> {
    let addr = common::resolve(&o.addr)?;
    let watcher = common::server_watcher(Watcher::builder(), o.backend)?;
    let listener = common::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {local}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(out);
    eprintln!("http-server: backend {}", watcher.backend());

    let stats = Stats::default();
    let served = serve(&watcher, listener, &stats, o.limits);
    eprintln!(
        "http-server: {} requests answered, {} refused; {} connections accepted, {} closed, {} errors",
        stats.requests.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.accepted.load(Ordering::Relaxed),
        stats.closed.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
    );
    served.map_err(|e| format!("server loop failed: {e}"))
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-server: {e}");
            ExitCode::FAILURE
        }
    }
}
