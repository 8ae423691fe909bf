//! TLS echo server: the `echo-server` example over TLS, on a `gaio::tls::TlsWatcher` (cargo
//! feature `rustls`).
//!
//! A `std` accept thread hands every new TCP connection to `TlsWatcher::accept` (the
//! handshake starts at once, bounded by `--handshake-timeout`); one thread loops on
//! `wait_io_into`, writes back the plaintext each read returned, and reads again once the
//! write has completed. A peer's `close_notify` is answered with ours; any error frees the
//! connection (handshake failures are logged on stderr with their typed error). It runs until
//! interrupted.
//!
//! ```text
//! cargo run --release --features rustls --example tls-echo-server -- --addr 127.0.0.1:7443
//! # stderr names the self-signed certificate it made; in another terminal:
//! openssl s_client -connect 127.0.0.1:7443 -CAfile /tmp/gaio-tls-echo-<pid>/cert.pem
//! cargo run --release --features rustls --example tls-echo-client -- \
//!     --connect 127.0.0.1:7443 --ca /tmp/gaio-tls-echo-<pid>/cert.pem
//! ```
//!
//! The first line on stdout is `listening on <addr>` (flushed at once); everything else goes
//! to stderr.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Args;
use gaio::tls::{TlsError, TlsOp, TlsResult, TlsWatcher};
use gaio::{Backend, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const USAGE: &str = "\
usage: tls-echo-server [OPTIONS]

A TLS echo server on one gaio wait_io loop (gaio::tls, rustls's unbuffered API). The first line
on stdout is `listening on <addr>`; it runs until interrupted. Without --cert and --key it makes
a self-signed certificate for localhost, 127.0.0.1 and ::1 at start and says on stderr where it
wrote it (PEM), for clients to trust.

options:
  --addr HOST:PORT             where to listen (default 127.0.0.1:0, any free port)
  --cert FILE                  the certificate chain, PEM (with --key)
  --key FILE                   its private key, PEM (PKCS#8, PKCS#1 or SEC1)
  --backend epoll|uring|auto   the gaio backend (default: GAIO_BACKEND, else auto)
  --buffer-size BYTES          plaintext read buffer per connection (default 65536)
  --handshake-timeout SECS     a handshake not done by then fails with Deadline (default 10)
  -v, --verbose                log every connection's handshake and end to stderr
  -h, --help                   print this help";

struct Options {
    addr: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    backend: Option<Backend>,
    buffer_size: usize,
    handshake_timeout: Duration,
    verbose: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:0".into(),
        cert: None,
        key: None,
        backend: None,
        buffer_size: 64 << 10,
        handshake_timeout: Duration::from_secs(10),
        verbose: false,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--addr" => o.addr = args.value(&flag)?,
            "--cert" => o.cert = Some(args.value(&flag)?.into()),
            "--key" => o.key = Some(args.value(&flag)?.into()),
            "--backend" => o.backend = Some(args.parse(&flag)?),
            "--buffer-size" => o.buffer_size = args.parse_within(&flag, 1..=64 << 20)?,
            "--handshake-timeout" => {
                o.handshake_timeout =
                    Duration::from_secs_f64(args.parse_within(&flag, 0.001..=3600.0)?)
            }
            "--verbose" | "-v" => o.verbose = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if o.cert.is_some() != o.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    Ok(o)
}

/// The certificate chain and key: from the files given, or made now (self-signed) and
/// written to a temporary directory, which stderr names.
fn identity(o: &Options) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    if let (Some(cert), Some(key)) = (&o.cert, &o.key) {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--cert {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("--cert {}: no certificate in it", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--key {}: {e}", key.display()))?;
        return Ok((chain, key));
    }
    let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| format!("rcgen: {e}"))?;
    let dir = std::env::temp_dir().join(format!("gaio-tls-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, ck.cert.pem())
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    std::fs::write(&key_path, ck.signing_key.serialize_pem())
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    eprintln!(
        "tls-echo-server: self-signed certificate for localhost, 127.0.0.1, ::1 written to {} \
         (key {}); trust it in clients, e.g. --ca {} or -CAfile {}",
        cert_path.display(),
        key_path.display(),
        cert_path.display(),
        cert_path.display()
    );
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    Ok((vec![ck.cert.der().clone()], key.into()))
}

fn run(o: Options) -> Result<(), String> {
    let (chain, key) = identity(&o)?;
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("certificate and key: {e}"))?,
    );
    let addr = common::resolve(&o.addr)?;
    if let Err(e) = common::raise_nofile_limit() {
        eprintln!("note: cannot read RLIMIT_NOFILE: {e}");
    }
    let builder = match o.backend {
        Some(b) => Watcher::builder().backend(b),
        None => Watcher::builder(),
    };
    let tls: Arc<TlsWatcher<()>> = Arc::new(
        TlsWatcher::with_builder(builder).map_err(|e| format!("cannot start the watcher: {e}"))?,
    );
    let listener = common::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {local}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(out);
    eprintln!(
        "tls-echo-server: backend {}, rustls with the ring provider",
        tls.backend()
    );

    let acceptor = tls.clone();
    let limit = o.handshake_timeout;
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = match acceptor.watch(&stream) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("watch: {e}");
                        continue;
                    }
                };
                if let Err(e) =
                    acceptor.accept((), &conn, config.clone(), Some(Instant::now() + limit))
                {
                    eprintln!("accept: {}", e.error);
                }
            }
        })
        .map_err(|e| format!("accept thread: {e}"))?;
    echo_loop(&tls, o.buffer_size, o.verbose)
}

/// The echo loop: every result names its connection, so there is no table of connections.
fn echo_loop(tls: &TlsWatcher<()>, buffer_size: usize, verbose: bool) -> Result<(), String> {
    let mut results: Vec<TlsResult<()>> = Vec::new();
    loop {
        tls.wait_io_into(&mut results, None)
            .map_err(|e| format!("wait_io_into: {e}"))?;
        for res in results.drain(..) {
            let conn = res.conn.clone();
            let next = match (res.op, res.error) {
                (TlsOp::Handshake, None) => {
                    if verbose {
                        eprintln!(
                            "{:?}: handshake done, {:?} {:?}",
                            tls.peer_addr(&conn).ok(),
                            conn.protocol_version(),
                            conn.cipher_suite().map(|s| s.suite())
                        );
                    }
                    tls.read((), &conn, Vec::with_capacity(buffer_size))
                        .map_err(|e| e.error)
                }
                (TlsOp::Read, None) => {
                    // The buffer holds exactly what was read (appended to an empty one).
                    tls.write((), &conn, res.buffer).map_err(|e| e.error)
                }
                (TlsOp::Write, None) => {
                    // Cleared, it takes the next read: its capacity is the room, no zeroing.
                    let mut b = res.buffer;
                    b.clear();
                    tls.read((), &conn, b).map_err(|e| e.error)
                }
                (TlsOp::Read, Some(TlsError::Eof)) => {
                    if verbose {
                        eprintln!("{:?}: close_notify", tls.peer_addr(&conn).ok());
                    }
                    tls.close_notify((), &conn).map_err(|e| e.error)
                }
                (TlsOp::CloseNotify, _) => {
                    let _ = tls.free(&conn);
                    Ok(())
                }
                (op, Some(e)) => {
                    if op == TlsOp::Handshake || verbose {
                        eprintln!("{:?}: {op:?} failed: {e}", tls.peer_addr(&conn).ok());
                    }
                    let _ = tls.free(&conn);
                    Ok(())
                }
                (_, None) => Ok(()),
            };
            if let Err(e) = next {
                eprintln!("submit: {e}");
                let _ = tls.free(&conn);
            }
        }
    }
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls-echo-server: {e}");
            ExitCode::FAILURE
        }
    }
}
