//! gaio's side: the examples' `EchoServer` (as `examples/echo-server.rs` runs it by default:
//! an accept thread and one `wait_io` loop, swap-buffer reads) on one backend.

use std::io;
use std::net::TcpListener;

use gaio::{Backend, Watcher};

use crate::common::example::{EchoServer, ReadMode};

/// With `spin` non-zero, the watcher busy-polls that long before it sleeps
/// (`Builder::busy_poll`).
pub fn start(
    ln: TcpListener,
    backend: Backend,
    spin: std::time::Duration,
) -> io::Result<EchoServer> {
    let watcher: Watcher<()> = Watcher::builder()
        .backend(backend)
        .busy_poll(spin)
        .build()
        .map_err(|e| io::Error::other(format!("cannot start the {backend} watcher: {e}")))?;
    EchoServer::start(ln, watcher, ReadMode::Swap, false)
}
