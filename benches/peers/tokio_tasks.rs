//! What most users would pick: `tokio`'s multi-thread runtime with its default worker count
//! (one per core), an accept loop spawning one task per connection, and in each task the
//! tutorial's echo: read into the task's own buffer, `write_all` it back.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{conn_ended, PEER_BUF};
use crate::common::example::EchoStats;

pub const DESCRIPTION: &str = "`tokio` multi-thread runtime with the default worker count \
    (one per core: 2 here) and the accept loop on `block_on`'s thread; one task per \
    connection, reading into its own 64 KiB `Vec` and `write_all`-ing each chunk back";

pub fn start(ln: TcpListener, stats: Arc<EchoStats>) -> io::Result<()> {
    ln.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tokio-accept".into())
        .spawn(move || {
            rt.block_on(async move {
                if let Err(e) = accept_loop(ln, stats.clone()).await {
                    eprintln!("tokio echo: {e}");
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            })
        })?;
    Ok(())
}

async fn accept_loop(ln: TcpListener, stats: Arc<EchoStats>) -> io::Result<()> {
    let ln = tokio::net::TcpListener::from_std(ln)?;
    loop {
        match ln.accept().await {
            Ok((sock, _)) => {
                sock.set_nodelay(true)?;
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(echo(sock, stats.clone()));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(e) => {
                // Out of descriptors or memory: the connection waits in the backlog.
                eprintln!("tokio echo: accept: {e}; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn echo(mut sock: TcpStream, stats: Arc<EchoStats>) {
    let outcome = echo_loop(&mut sock, &stats).await;
    conn_ended(&stats, "tokio echo", outcome);
}

/// Echoes until the client closes (`Ok`) or a call fails.
async fn echo_loop(sock: &mut TcpStream, stats: &EchoStats) -> io::Result<()> {
    let mut buf = vec![0u8; PEER_BUF];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        sock.write_all(&buf[..n]).await?;
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
