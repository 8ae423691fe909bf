//! TLS echo client on a `gaio::tls::TlsWatcher` (the client side, cargo feature `rustls`):
//! opens `--conns` TLS connections to an echo server, sends `--bytes` bytes on each in
//! round trips of `--chunk` bytes, checks every echoed byte, closes with `close_notify` both
//! ways, and prints the handshake time and the echo rate.
//!
//! ```text
//! cargo run --release --features rustls --example tls-echo-server   # note its cert path
//! cargo run --release --features rustls --example tls-echo-client -- \
//!     --connect 127.0.0.1:PORT --ca /tmp/gaio-tls-echo-<pid>/cert.pem --conns 8
//! ```
//!
//! Exits with status 1 (and says why) on a handshake failure, a byte that differs, or no
//! progress for 30 s.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Args;
use gaio::tls::{TlsConn, TlsError, TlsOp, TlsResult, TlsWatcher};
use gaio::{Backend, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const USAGE: &str = "\
usage: tls-echo-client --connect HOST:PORT --ca FILE [OPTIONS]

Echoes bytes through a TLS echo server (such as the tls-echo-server example) from gaio::tls
client connections, checks every byte, closes with close_notify, and prints the rates.

options:
  --connect HOST:PORT          the server
  --ca FILE                    the certificate(s) to trust, PEM (the server's self-signed one)
  --server-name NAME           the name its certificate must carry (default localhost)
  --conns N                    connections at once (default 1)
  --bytes N                    bytes to echo per connection (default 1048576)
  --chunk N                    bytes per round trip (default 65536)
  --backend epoll|uring|auto   the gaio backend (default: GAIO_BACKEND, else auto)
  -h, --help                   print this help";

struct Options {
    connect: String,
    ca: PathBuf,
    server_name: String,
    conns: usize,
    bytes: usize,
    chunk: usize,
    backend: Option<Backend>,
}

fn parse_args() -> Result<Options, String> {
    let (mut connect, mut ca) = (None, None);
    let mut o = Options {
        connect: String::new(),
        ca: PathBuf::new(),
        server_name: "localhost".into(),
        conns: 1,
        bytes: 1 << 20,
        chunk: 64 << 10,
        backend: None,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--connect" => connect = Some(args.value(&flag)?),
            "--ca" => ca = Some(PathBuf::from(args.value(&flag)?)),
            "--server-name" => o.server_name = args.value(&flag)?,
            "--conns" => o.conns = args.parse_within(&flag, 1..=100_000)?,
            "--bytes" => o.bytes = args.parse_within(&flag, 1..=1 << 40)?,
            "--chunk" => o.chunk = args.parse_within(&flag, 1..=64 << 20)?,
            "--backend" => o.backend = Some(args.parse(&flag)?),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    o.connect = connect.ok_or(format!("--connect is required\n{USAGE}"))?;
    o.ca = ca.ok_or(format!("--ca is required\n{USAGE}"))?;
    Ok(o)
}

/// One connection's progress.
struct Client {
    conn: TlsConn<usize>,
    sent: usize,
    /// Bytes echoed back and checked.
    got: usize,
    /// The close_notify request's result, and the server's close_notify (a read's Eof).
    close_done: bool,
    peer_closed: bool,
    closed: bool,
}

/// The byte at position `i` of every connection's stream.
fn byte_at(i: usize) -> u8 {
    (i * 7 + (i >> 13)) as u8
}

fn run(o: Options) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(&o.ca).map_err(|e| format!("--ca {}: {e}", o.ca.display()))?
    {
        let cert = cert.map_err(|e| format!("--ca {}: {e}", o.ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--ca {}: {e}", o.ca.display()))?;
    }
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let name =
        ServerName::try_from(o.server_name.clone()).map_err(|e| format!("--server-name: {e}"))?;
    let addr: SocketAddr = common::resolve(&o.connect)?;
    let builder = match o.backend {
        Some(b) => Watcher::builder().backend(b),
        None => Watcher::builder(),
    };
    let tls: TlsWatcher<usize> =
        TlsWatcher::with_builder(builder).map_err(|e| format!("cannot start the watcher: {e}"))?;

    let start = Instant::now();
    let mut clients = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = sock.set_nodelay(true);
        let conn = tls.watch(&sock).map_err(|e| format!("watch: {e}"))?;
        let t = tls
            .connect(
                i,
                &conn,
                config.clone(),
                name.clone(),
                Some(Instant::now() + Duration::from_secs(30)),
            )
            .map_err(|e| format!("connect: {}", e.error))?;
        clients.push(Client {
            conn: t,
            sent: 0,
            got: 0,
            close_done: false,
            peer_closed: false,
            closed: false,
        });
    }
    let mut results: Vec<TlsResult<usize>> = Vec::new();
    let mut handshakes = 0;
    let mut handshake_time = Duration::ZERO;
    let mut echo_start = start;
    let mut closed = 0;
    while closed < o.conns {
        let n = tls
            .wait_io_into(&mut results, Some(Duration::from_secs(30)))
            .map_err(|e| format!("wait_io_into: {e}"))?;
        if n == 0 {
            return Err(format!(
                "no progress for 30 s ({handshakes} handshakes, {closed} closed)"
            ));
        }
        for mut res in results.drain(..) {
            let i = res.context;
            let c = &mut clients[i];
            match (res.op, res.error.take()) {
                (TlsOp::Handshake, None) => {
                    handshakes += 1;
                    if handshakes == o.conns {
                        handshake_time = start.elapsed();
                        echo_start = Instant::now();
                    }
                    send_chunk(&tls, c, &o, i)?;
                }
                (TlsOp::Write, None) => {}
                (TlsOp::Read, None) => {
                    for (k, b) in res.data().iter().enumerate() {
                        if *b != byte_at(c.got + k) {
                            return Err(format!("connection {i}: byte {} differs", c.got + k));
                        }
                    }
                    c.got += res.size;
                    if c.got < c.sent {
                        tls.read(i, &c.conn, cleared(res.buffer))
                            .map_err(|e| e.error.to_string())?;
                    } else if c.sent < o.bytes {
                        send_chunk(&tls, c, &o, i)?;
                    } else {
                        tls.close_notify(i, &c.conn)
                            .map_err(|e| e.error.to_string())?;
                        tls.read(i, &c.conn, cleared(res.buffer))
                            .map_err(|e| e.error.to_string())?;
                    }
                }
                (TlsOp::CloseNotify, None) => c.close_done = true,
                (TlsOp::Read, Some(TlsError::Eof)) if c.got == o.bytes => c.peer_closed = true,
                (op, Some(e)) => return Err(format!("connection {i}: {op:?}: {e}")),
                (op, None) => return Err(format!("connection {i}: unexpected {op:?}")),
            }
            // Both closures done: nothing of this connection is pending any more.
            if c.close_done && c.peer_closed && !c.closed {
                c.closed = true;
                closed += 1;
                tls.free(&c.conn).map_err(|e| e.to_string())?;
            }
        }
    }
    let secs = echo_start.elapsed().as_secs_f64();
    let total = (o.bytes * o.conns) as f64;
    println!(
        "{} connections on {}: handshakes {:.1} ms, {:.1} MB echoed in {secs:.3} s: {:.1} MB/s, every byte checked, closed with close_notify",
        o.conns,
        tls.backend(),
        handshake_time.as_secs_f64() * 1e3,
        total / 1e6,
        total / 1e6 / secs
    );
    assert!(clients.iter().all(|c| c.closed));
    Ok(())
}

/// `b` emptied, its capacity kept: the room of the next read.
fn cleared(mut b: Vec<u8>) -> Vec<u8> {
    b.clear();
    b
}

/// Sends the next chunk of connection `i`'s stream and reads its echo.
fn send_chunk(
    tls: &TlsWatcher<usize>,
    c: &mut Client,
    o: &Options,
    i: usize,
) -> Result<(), String> {
    let n = o.chunk.min(o.bytes - c.sent);
    let chunk: Vec<u8> = (c.sent..c.sent + n).map(byte_at).collect();
    c.sent += n;
    tls.write(i, &c.conn, chunk)
        .map_err(|e| e.error.to_string())?;
    tls.read(i, &c.conn, Vec::with_capacity(o.chunk.min(64 << 10)))
        .map_err(|e| e.error.to_string())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls-echo-client: {e}");
            ExitCode::FAILURE
        }
    }
}
