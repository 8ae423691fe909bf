//! An io_uring peer: `monoio` (completion-based, owned buffers), one runtime on one thread
//! with an accept loop spawning one task per connection; each task reads into its own
//! buffer, which the in-flight recv owns, and `write_all`s it back.
//!
//! One thread rather than monoio's thread-per-core: gaio's io_uring backend also does all its
//! I/O on one ring thread and the `mio` floor is one thread too, and on this 2-core machine
//! the client needs the other core; a second server thread would only compete with it.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::{conn_ended, PEER_BUF};
use crate::common::example::EchoStats;

pub const DESCRIPTION: &str = "`monoio` on its io_uring driver, one runtime on one thread \
    (not thread-per-core: gaio's io_uring backend and the `mio` floor run their I/O on one \
    thread too, and the client needs the other core); one task per connection, reading into \
    its own 64 KiB `Vec` (owned by the recv while it is in flight) and `write_all`-ing it back";

/// Submission queue size (monoio's default is 1024): room for a burst of accepts and recvs.
const ENTRIES: u32 = 4096;

pub fn start(ln: TcpListener, stats: Arc<EchoStats>) -> io::Result<()> {
    ln.set_nonblocking(true)?;
    // Build the ring here, so that a kernel without io_uring fails the start, not later.
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<()>>();
    std::thread::Builder::new()
        .name("monoio-echo".into())
        .spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(ENTRIES)
                .enable_timer()
                .build();
            let mut rt = match rt {
                Ok(rt) => {
                    let _ = tx.send(Ok(()));
                    rt
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                if let Err(e) = accept_loop(ln, stats.clone()).await {
                    eprintln!("monoio echo: {e}");
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            })
        })?;
    rx.recv()
        .unwrap_or_else(|_| Err(io::Error::other("the monoio thread died")))
}

async fn accept_loop(ln: TcpListener, stats: Arc<EchoStats>) -> io::Result<()> {
    let ln = monoio::net::TcpListener::from_std(ln)?;
    loop {
        match ln.accept().await {
            Ok((sock, _)) => {
                sock.set_nodelay(true)?;
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                monoio::spawn(echo(sock, stats.clone()));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(e) => {
                eprintln!("monoio echo: accept: {e}; retrying in 100 ms");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn echo(mut sock: TcpStream, stats: Arc<EchoStats>) {
    let outcome = echo_loop(&mut sock, &stats).await;
    conn_ended(&stats, "monoio echo", outcome);
}

/// Echoes until the client closes (`Ok`) or a call fails. The buffer travels into each call
/// and comes back with its result.
async fn echo_loop(sock: &mut TcpStream, stats: &EchoStats) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(PEER_BUF);
    loop {
        buf.clear();
        let (res, b) = sock.read(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            return Ok(());
        }
        let (res, b) = sock.write_all(buf).await;
        buf = b;
        res?;
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
