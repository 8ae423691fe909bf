//! UDP echo server: every datagram goes back to its sender.
//!
//! One UDP socket taken over by a gaio [`Watcher`], one thread looping on `wait_io`: a number
//! of `recv_from`s are kept pending, each into a buffer of its own, and each datagram is sent
//! back to its source with `send_to` of that same buffer (no copy), after which the buffer
//! receives again. Each batch of results is handled corked ([`Watcher::cork`]), so on epoll
//! its sends go out as one `sendmmsg` and the receives it submits are served by `recvmmsg` (on
//! io_uring a cork holds nothing: each is attempted at once on this thread).
//! Runs until interrupted (Ctrl-C / SIGTERM).
//!
//! ```text
//! cargo run --release --example udp-echo -- --addr 127.0.0.1:7000
//! # in another terminal:
//! nc -u 127.0.0.1 7000
//! ```
//!
//! The first line on stdout is always `listening on <addr>` (flushed at once), so a script can
//! start the server on port 0 and read the port it got. Everything else goes to stderr: every
//! second in which datagrams were echoed, a stats line (datagrams echoed, truncated, failed,
//! and how many `recvmmsg`/`sendmmsg` calls served how many datagrams).
//!
//! Options:
//! - `--addr HOST:PORT`: where to bind (default `127.0.0.1:0`, any free port; `[::1]:7000`
//!   for IPv6);
//! - `--backend epoll|uring|auto`: the gaio backend (default: `GAIO_BACKEND`, else auto);
//! - `--receives N`: `recv_from`s kept pending (default 64);
//! - `--buffer-size BYTES`: bytes per receive buffer (default 2048; a longer datagram is
//!   echoed cut, and counted as truncated);
//! - `--gro`: turn UDP GRO on (`Watcher::set_udp_gro`): a receive may hold several datagrams
//!   of one source, echoed back with one `send_to_gso` of the same segment size;
//! - `--verbose`: log every failed request to stderr.

mod common;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::udp::{udp_echo_loop, UdpEcho, UdpStats};
use common::Args;
use gaio::{Backend, Watcher};

const USAGE: &str = "\
usage: udp-echo [OPTIONS]

A UDP echo server on one gaio wait_io loop: every datagram goes back to its sender. The
first line on stdout is `listening on <addr>`; it runs until interrupted.

options:
  --addr HOST:PORT                where to bind (default 127.0.0.1:0, any free port)
  --backend epoll|uring|auto      the gaio backend (default: GAIO_BACKEND, else auto)
  --receives N                    recv_froms kept pending (default 64)
  --buffer-size BYTES             bytes per receive buffer (default 2048; a longer datagram
                                  is echoed cut and counted as truncated)
  --gro                           turn UDP GRO on: a receive may hold several datagrams of
                                  one source, echoed with one segmented send (UDP GSO);
                                  give it --buffer-size 65507 to take whole batches
  -v, --verbose                   log every failed request to stderr
  -h, --help                      print this help";

struct Options {
    addr: String,
    backend: Option<Backend>,
    echo: UdpEcho,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:0".into(),
        backend: None,
        echo: UdpEcho {
            receives: 64,
            buffer_size: 2048,
            verbose: false,
            gro: false,
        },
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--addr" => o.addr = args.value(&flag)?,
            "--backend" => o.backend = Some(args.parse(&flag)?),
            "--receives" => o.echo.receives = args.parse_within(&flag, 1..=65_536)?,
            "--buffer-size" => {
                o.echo.buffer_size = args.parse_within(&flag, 1..=gaio::MAX_DATAGRAM)?
            }
            "--gro" => o.echo.gro = true,
            "--verbose" | "-v" => o.echo.verbose = true,
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
    let watcher: Watcher<usize> = common::server_watcher(Watcher::builder(), o.backend)?;
    let socket = std::net::UdpSocket::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    // The contract with scripts: this is the first line on stdout, flushed at once.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {local}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(out);
    eprintln!(
        "udp-echo: backend {}, {} receives of {} bytes pending",
        watcher.backend(),
        o.echo.receives,
        o.echo.buffer_size
    );
    let stats = Arc::new(UdpStats::default());
    let stop = AtomicBool::new(false);
    let watcher = Arc::new(watcher);
    let reporter = {
        let (stats, w) = (stats.clone(), watcher.clone());
        std::thread::spawn(move || report(&w, &stats))
    };
    drop(reporter);
    udp_echo_loop(&watcher, &socket, &o.echo, &stop, &stats)
        .map_err(|e| format!("echo loop failed: {e}"))
}

/// Every second in which something was echoed: one stats line on stderr.
fn report(w: &Watcher<usize>, stats: &UdpStats) {
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let echoed = stats.echoed.load(Ordering::Relaxed);
        if echoed == last {
            continue;
        }
        last = echoed;
        let b = w.datagram_stats();
        eprintln!(
            "udp-echo: stats: {echoed} echoed, {} truncated, {} failed; {} batched calls \
             moved {} datagrams",
            stats.truncated.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
            b.batch_calls,
            b.batch_datagrams
        );
    }
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
