//! A chat server on one gaio `wait_io` loop: every line a client sends is broadcast to all the
//! others, with one shared `Arc<[u8]>` per message however many clients there are; clients
//! join and leave at any time, and both are announced. The room is `examples/room/mod.rs`.
//!
//! ```text
//! cargo run --release --example chat -- --addr 127.0.0.1:7002
//! # in two or more other terminals:
//! nc 127.0.0.1 7002
//! ```
//!
//! The first line on stdout is `listening on <addr>` (flushed at once). Runs until
//! interrupted.
//!
//! Options:
//! - `--addr HOST:PORT`: where to listen (default `127.0.0.1:0`, any free port);
//! - `--backend epoll|uring|auto`: the gaio backend (default: `GAIO_BACKEND`, else auto).

mod common;
mod room;

use std::io::Write;
use std::process::ExitCode;

use common::Args;
use gaio::{Backend, Watcher};

const USAGE: &str = "\
usage: chat [OPTIONS]

A chat server: every line a client sends goes to every other client, as one shared buffer.
The first line on stdout is `listening on <addr>`; it runs until interrupted.

options:
  --addr HOST:PORT                where to listen (default 127.0.0.1:0, any free port)
  --backend epoll|uring|auto      the gaio backend (default: GAIO_BACKEND, else auto)
  -h, --help                      print this help";

fn parse_args() -> Result<(String, Option<Backend>), String> {
    let (mut addr, mut backend) = ("127.0.0.1:0".to_string(), None);
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--addr" => addr = args.value(&flag)?,
            "--backend" => backend = Some(args.parse(&flag)?),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok((addr, backend))
}

fn run((addr, backend): (String, Option<Backend>)) -> Result<(), String> {
    let addr = common::resolve(&addr)?;
    let w: Watcher<()> = common::server_watcher(Watcher::builder(), backend)?;
    let listener = common::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    let lconn = w.watch(&listener).map_err(|e| format!("watch: {e}"))?;
    drop(listener); // the watcher has its own descriptor
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {local}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(out);
    eprintln!("chat: backend {}", w.backend());
    let stats = room::Room::new(&w, lconn)
        .run()
        .map_err(|e| format!("wait_io: {e}"))?;
    eprintln!("chat: {stats:?}");
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::FAILURE
        }
    }
}
