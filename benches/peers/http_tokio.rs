//! The tokio peer of the `http-server` example, for `benches/http.rs`: the same "Hello,
//! World!" HTTP/1.1 responder written the way most tokio users would, on the multi-thread
//! runtime with one task per connection.
//!
//! It shares the example's parser and responses (`examples/http/{parse,response}.rs`), so
//! both servers frame requests alike and send the very same bytes, and the bench compares the
//! I/O underneath: per connection an 8 KiB read buffer, every request completed by one read
//! answered with one `write_all`, then the next read. After a response that ends the
//! connection it shuts the write side down and drains at most [`DRAIN_MAX`] bytes before
//! dropping the socket (the gaio server drains with a time limit instead; this peer is built
//! without tokio's `time` feature, so it bounds the drain by bytes).

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use crate::http::parse::{Next, Parser};
use crate::http::response::{append_error, append_ok};
use crate::http::server::Stats;

/// Per-connection read buffer (hyper starts with the same size).
const READ_BUF: usize = 8 * 1024;

/// Most bytes read and discarded from a closing connection before it is dropped.
const DRAIN_MAX: usize = 64 * 1024;

/// The server: a multi-thread runtime (one worker per core) running the accept loop and one
/// task per connection. Dropping it shuts the runtime down, which ends every task.
pub struct TokioHttpServer {
    runtime: Option<Runtime>,
    addr: SocketAddr,
    stats: Arc<Stats>,
}

impl TokioHttpServer {
    /// Starts serving on `listener`.
    pub fn start(listener: StdListener) -> io::Result<TokioHttpServer> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_io()
            .thread_name("http-tokio")
            .build()?;
        let stats = Arc::new(Stats::default());
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)?
        };
        runtime.spawn(accept_loop(listener, stats.clone()));
        Ok(TokioHttpServer {
            runtime: Some(runtime),
            addr,
            stats,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
}

impl Drop for TokioHttpServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, stats: Arc<Stats>) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let stats = stats.clone();
                tokio::spawn(async move {
                    let ended = serve_conn(sock, &stats).await;
                    if let Err(e) = ended {
                        if !matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        ) {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("tokio peer: connection ended with {e}");
                        }
                    }
                    stats.closed.fetch_add(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                // Out of descriptors, most likely: back off instead of spinning (off the
                // worker threads, as this build has no tokio timer).
                eprintln!("tokio peer: accept: {e}; retrying in 100 ms");
                let _ = tokio::task::spawn_blocking(|| {
                    std::thread::sleep(std::time::Duration::from_millis(100))
                })
                .await;
            }
        }
    }
}

/// One connection: read, answer every request the read completed with one write, repeat.
async fn serve_conn(mut sock: TcpStream, stats: &Stats) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Vec::new();
    let mut parser = Parser::new();
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let mut answered = 0;
        let next = parser.feed(&buf[..n], |req| {
            append_ok(&mut out, &req);
            answered += 1;
        });
        stats.requests.fetch_add(answered, Ordering::Relaxed);
        let closing = match next {
            Ok(Next::Read) => false,
            Ok(Next::Close) => true,
            Err(e) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                append_error(&mut out, e);
                true
            }
        };
        if !out.is_empty() {
            sock.write_all(&out).await?;
            out.clear();
        }
        if closing {
            sock.shutdown().await?;
            let mut drained = 0;
            while drained < DRAIN_MAX {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
            return Ok(());
        }
    }
}
