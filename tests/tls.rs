//! The `tls` module (cargo feature `rustls`), on both backends: a TLS echo server on a
//! `TlsWatcher` against OpenSSL clients (Python's `ssl` module, `openssl s_client`) and
//! rustls clients, and the `TlsWatcher` client side against an OpenSSL server (Python) and
//! against the server of this file.
//!
//! Every wait is bounded: results come through `wait_io_into` with a timeout and a deadline
//! that panics, blocking sockets have timeouts, and outside programs run under `timeout(1)`.
//! No test sleeps to synchronise.
#![cfg(feature = "rustls")]

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gaio::tls::{TlsConn, TlsError, TlsOp, TlsResult, TlsWatcher};
use gaio::{Backend, Watcher};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const T20: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Certificates and configs
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for `localhost` and `127.0.0.1`, its key, and both as PEM files
/// (for the OpenSSL peers).
struct Cert {
    der: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    cert_pem: PathBuf,
    key_pem: PathBuf,
}

fn make_cert(tag: &str) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".into()])
        .expect("rcgen");
    let dir = std::env::temp_dir().join(format!("gaio-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert_pem = dir.join(format!("{tag}-cert.pem"));
    let key_pem = dir.join(format!("{tag}-key.pem"));
    std::fs::write(&cert_pem, ck.cert.pem()).expect("write cert");
    std::fs::write(&key_pem, ck.signing_key.serialize_pem()).expect("write key");
    Cert {
        der: ck.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        cert_pem,
        key_pem,
    }
}

fn server_config(c: &Cert) -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![c.der.clone()], PrivateKeyDer::Pkcs8(c.key.clone_key()))
            .expect("server config"),
    )
}

fn client_config(trust: &Cert) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.der.clone()).expect("root");
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// A TLS watcher on `backend`, or `None` where that backend cannot run here (util::build
/// decides, as for every test).
fn tls_watcher<C: Send + 'static>(backend: Backend) -> Option<TlsWatcher<C>> {
    util::build::<()>(backend, Watcher::builder())?;
    Some(TlsWatcher::with_builder(Watcher::builder().backend(backend)).expect("tls watcher"))
}

/// `len` bytes of a pattern that differs per position (a shifted or lost byte shows).
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 7 + (i as u64 >> 13) + seed as u64) as u8)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The TLS echo server under test
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    handshakes: usize,
    handshake_errors: Vec<TlsError>,
    /// Connections that ended with the peer's close_notify (answered with ours).
    clean_closes: usize,
    /// Other errors of reads and writes.
    other_errors: Vec<TlsError>,
}

struct Shared {
    stats: Mutex<Stats>,
    changed: Condvar,
}

impl Shared {
    /// Waits until `cond` holds, at most `limit`; panics with `what` otherwise.
    fn wait_for(&self, limit: Duration, what: &str, mut cond: impl FnMut(&Stats) -> bool) {
        let end = Instant::now() + limit;
        let mut s = self.stats.lock().unwrap();
        while !cond(&s) {
            let now = Instant::now();
            assert!(
                now < end,
                "timed out waiting for {what}: {} handshakes, errors {:?}, other {:?}",
                s.handshakes,
                s.handshake_errors,
                s.other_errors
            );
            s = self.changed.wait_timeout(s, end - now).unwrap().0;
        }
    }
}

/// A TLS echo server: a std accept thread hands each socket to `TlsWatcher::accept`, one
/// loop thread echoes on `wait_io_into`, answers the peer's close_notify with its own, and
/// records handshakes and errors.
struct TlsEcho {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    tls: Arc<TlsWatcher<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl TlsEcho {
    fn start(backend: Backend, cert: &Cert, handshake_limit: Duration) -> Option<TlsEcho> {
        let tls = Arc::new(tls_watcher::<()>(backend)?);
        let config = server_config(cert);
        let ln = util::listen();
        let addr = ln.local_addr().unwrap();
        let shared = Arc::new(Shared {
            stats: Mutex::new(Stats::default()),
            changed: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (tls, stop) = (tls.clone(), stop.clone());
            std::thread::spawn(move || {
                for s in ln.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    let Ok(conn) = tls.watch(&s) else { continue };
                    let deadline = Some(Instant::now() + handshake_limit);
                    tls.accept((), &conn, config.clone(), deadline)
                        .expect("accept on a fresh connection");
                }
            })
        };
        let looper = {
            let (tls, stop, shared) = (tls.clone(), stop.clone(), shared.clone());
            std::thread::spawn(move || echo_loop(&tls, &stop, &shared))
        };
        Some(TlsEcho {
            addr,
            shared,
            stop,
            tls,
            threads: vec![acceptor, looper],
        })
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr); // wakes the accept thread
        self.tls.waker().wake().unwrap();
        for t in self.threads.drain(..) {
            t.join().expect("server thread");
        }
        self.tls.close().unwrap();
    }
}

fn echo_loop(tls: &TlsWatcher<()>, stop: &AtomicBool, shared: &Shared) {
    let mut results: Vec<TlsResult<()>> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match tls.wait_io_into(&mut results, None) {
            Ok(_) => {}
            Err(gaio::Error::WatcherClosed) => return,
            Err(e) => panic!("wait_io_into: {e}"),
        }
        for res in results.drain(..) {
            let conn = res.conn.clone();
            let mut s = shared.stats.lock().unwrap();
            match (res.op, res.error) {
                (TlsOp::Handshake, None) => {
                    s.handshakes += 1;
                    tls.read((), &conn, Vec::with_capacity(64 << 10)).unwrap();
                }
                (TlsOp::Handshake, Some(e)) => {
                    s.handshake_errors.push(e);
                    tls.free(&conn).unwrap();
                }
                (TlsOp::Read, None) => {
                    tls.write((), &conn, res.buffer).unwrap();
                }
                (TlsOp::Write, None) => {
                    tls.read((), &conn, cleared(res.buffer)).unwrap();
                }
                (TlsOp::Read, Some(TlsError::Eof)) => {
                    s.clean_closes += 1;
                    tls.close_notify((), &conn).unwrap();
                }
                (TlsOp::CloseNotify, _) => tls.free(&conn).unwrap(),
                (_, Some(e)) => {
                    if !matches!(e, TlsError::UnexpectedEof) {
                        s.other_errors.push(e);
                    }
                    tls.free(&conn).unwrap();
                }
                (op, None) => panic!("unexpected {op:?}"),
            }
            drop(s);
            shared.changed.notify_all();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------------

/// Python's `ssl` (OpenSSL): a client that echoes `total` bytes through the server in
/// `chunk`-byte round trips, checks every byte, then closes with close_notify both ways
/// (`unwrap`). `cafile` `None` trusts only the system's roots (so it refuses our
/// self-signed certificate). Prints `ok TLSv1.x`, or `verify-failed` and exits 3.
const PY_CLIENT: &str = r#"
import socket, ssl, sys
host, port, cafile, total, chunk = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ctx = ssl.create_default_context(cafile=None if cafile == "-" else cafile)
raw = socket.create_connection((host, port), timeout=20)
try:
    s = ctx.wrap_socket(raw, server_hostname="localhost")
except ssl.SSLCertVerificationError:
    print("verify-failed", flush=True)
    sys.exit(3)
data = (bytes(range(251)) * (total // 251 + 1))[:total]
got = bytearray()
for off in range(0, total, chunk):
    piece = data[off:off + chunk]
    s.sendall(piece)
    need = len(piece)
    while need:
        b = s.recv(need)
        if not b:
            sys.exit("eof after %d bytes" % len(got))
        got += b
        need -= len(b)
if bytes(got) != data:
    first = next(i for i in range(len(data)) if got[i] != data[i])
    sys.exit("mismatch at byte %d" % first)
version = s.version()
s.unwrap()
print("ok", version, flush=True)
"#;

/// Python's `ssl` as a TLS echo server on 127.0.0.1 (its port on the first stdout line),
/// serving `conns` connections one after the other: echoes until the client's close_notify,
/// answers it with its own. A handshake the client aborts is counted and skipped.
const PY_SERVER: &str = r#"
import socket, ssl, sys
certfile, keyfile, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(certfile, keyfile)
ln = socket.socket()
ln.bind(("127.0.0.1", 0))
ln.listen(16)
ln.settimeout(30)
print(ln.getsockname()[1], flush=True)
for _ in range(conns):
    raw, _ = ln.accept()
    raw.settimeout(30)
    try:
        s = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print("handshake-failed", e, flush=True)
        raw.close()
        continue
    while True:
        b = s.recv(65536)
        if not b:
            break
        s.sendall(b)
    try:
        s.unwrap()
    except (ssl.SSLError, OSError):
        pass
    s.close()
    print("served", flush=True)
"#;

fn python(script: &str, args: &[String]) -> Command {
    let mut c = Command::new("timeout");
    c.arg("60").arg("python3").arg("-c").arg(script).args(args);
    c
}

/// Runs the Python client against `addr`; its stdout, after checking its exit status
/// (`expect_code`).
fn run_py_client(
    addr: SocketAddr,
    cafile: Option<&PathBuf>,
    total: usize,
    chunk: usize,
    expect_code: i32,
) -> String {
    let args = vec![
        addr.ip().to_string(),
        addr.port().to_string(),
        cafile.map_or("-".into(), |p| p.display().to_string()),
        total.to_string(),
        chunk.to_string(),
    ];
    let out = python(PY_CLIENT, &args).output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(expect_code),
        "python client: stdout {stdout:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A blocking rustls client (the buffered API, on a std thread).
fn rustls_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let sock = util::dial(addr);
    sock.set_read_timeout(Some(T20)).unwrap();
    sock.set_write_timeout(Some(T20)).unwrap();
    let conn = rustls::ClientConnection::new(config, localhost()).expect("client connection");
    rustls::StreamOwned::new(conn, sock)
}

/// Echoes `data` through `s` in round trips of `chunk` bytes and checks it byte for byte.
fn echo_through(s: &mut impl ReadWrite, data: &[u8], chunk: usize) {
    let mut back = vec![0u8; chunk];
    for piece in data.chunks(chunk) {
        s.write_all(piece).expect("write");
        s.flush().expect("flush");
        s.read_exact(&mut back[..piece.len()])
            .expect("read the echo");
        assert_eq!(&back[..piece.len()], piece, "echo differs");
    }
}

/// `b` emptied, its capacity kept: the room of the next read.
fn cleared(mut b: Vec<u8>) -> Vec<u8> {
    b.clear();
    b
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The ClientHello a rustls client sends first.
fn client_hello(cert: &Cert) -> Vec<u8> {
    let mut c = rustls::ClientConnection::new(client_config(cert), localhost()).unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100 && hello[0] == 0x16, "a handshake record");
    hello
}

/// Reads until EOF or a read timeout; what arrived.
fn read_to_end_bounded(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(T20)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("read: {e} (after {} bytes)", got.len()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The TlsWatcher client side
// ---------------------------------------------------------------------------------------------

/// Drives client connections on `tls` until `done` says so: each result goes to `on`.
fn drive_until<C: Send + 'static>(
    tls: &TlsWatcher<C>,
    limit: Duration,
    what: &str,
    mut on: impl FnMut(TlsResult<C>) -> bool,
) {
    let end = Instant::now() + limit;
    let mut results = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out: {what}");
        tls.wait_io_into(&mut results, Some(left))
            .expect("wait_io_into");
        for r in results.drain(..) {
            if on(r) {
                return;
            }
        }
    }
}

/// One client connection over `tls` to `addr`: the handshake's result.
fn connect(
    tls: &TlsWatcher<u64>,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (TlsConn<u64>, Option<TlsError>) {
    let sock = util::dial(addr);
    let conn = tls.watch(&sock).unwrap();
    let deadline = Some(Instant::now() + T20);
    let t = tls
        .connect(0, &conn, config, localhost(), deadline)
        .expect("connect");
    let mut err = None;
    drive_until(tls, T20, "the client handshake", |r| {
        assert_eq!(r.op, TlsOp::Handshake);
        err = r.error;
        true
    });
    (t, err)
}

/// Echoes `data` over the TlsWatcher client `t` in round trips of `chunk` bytes, checking
/// every byte, then sends close_notify and reads the server's.
fn client_echo(tls: &TlsWatcher<u64>, t: &TlsConn<u64>, data: &[u8], chunk: usize) {
    let mut got = Vec::with_capacity(data.len());
    for piece in data.chunks(chunk) {
        tls.write(1, t, piece.to_vec()).unwrap();
        let want = got.len() + piece.len();
        tls.read(2, t, Vec::with_capacity(64 << 10)).unwrap();
        drive_until(tls, T20, "an echoed chunk", |r| {
            assert!(r.error.is_none(), "{:?}: {:?}", r.op, r.error);
            if r.op == TlsOp::Read {
                got.extend_from_slice(r.data());
                if got.len() < want {
                    tls.read(2, t, cleared(r.buffer)).unwrap();
                }
            }
            got.len() == want
        });
    }
    // The last write's result may still be in the queue: take it with the close.
    assert!(
        got == data,
        "echo differs at byte {:?}",
        util::first_difference(&got, data)
    );
    tls.close_notify(3, t).unwrap();
    tls.read(4, t, Vec::with_capacity(1024)).unwrap();
    let (mut closed, mut eof) = (false, false);
    drive_until(tls, T20, "close_notify both ways", |r| {
        match (r.op, r.context) {
            (TlsOp::CloseNotify, 3) => {
                assert!(r.error.is_none(), "{:?}", r.error);
                closed = true;
            }
            (TlsOp::Read, 4) => {
                assert!(matches!(r.error, Some(TlsError::Eof)), "{:?}", r.error);
                eof = true;
            }
            (TlsOp::Write, 1) => assert!(r.error.is_none()),
            other => panic!("unexpected {other:?}"),
        }
        closed && eof
    });
    tls.free(t).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

backend_tests! {
    /// 1 MiB through the server from an OpenSSL client (Python's ssl) in 64 KiB round trips,
    /// byte-exact, then close_notify both ways; and once more in one 1 MiB round trip.
    fn openssl_client_echoes_1mib(backend) {
        let cert = make_cert("openssl-1mib");
        let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
        let out = run_py_client(srv.addr, Some(&cert.cert_pem), MIB, 64 << 10, 0);
        assert!(out.starts_with("ok TLSv1.3"), "{out}");
        run_py_client(srv.addr, Some(&cert.cert_pem), MIB, MIB, 0);
        srv.shared.wait_for(T20, "two clean closes", |s| s.clean_closes == 2);
        let s = srv.shared.stats.lock().unwrap();
        assert_eq!(s.handshakes, 2);
        assert!(s.handshake_errors.is_empty() && s.other_errors.is_empty(), "{:?} {:?}", s.handshake_errors, s.other_errors);
        drop(s);
        srv.stop();
    }

    /// 1 MiB through the server from a rustls client (16 KiB round trips), then a TLS 1.2
    /// client.
    fn rustls_client_echoes_1mib(backend) {
        let cert = make_cert("rustls-1mib");
        let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
        let mut c = rustls_client(srv.addr, client_config(&cert));
        echo_through(&mut c, &payload(MIB, 1), 16 << 10);
        c.conn.send_close_notify();
        c.flush().unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("the server's close_notify");
        assert!(rest.is_empty());
        assert_eq!(c.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));

        let tls12 = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
            .with_root_certificates({
                let mut r = rustls::RootCertStore::empty();
                r.add(cert.der.clone()).unwrap();
                r
            })
            .with_no_client_auth();
        let mut c = rustls_client(srv.addr, Arc::new(tls12));
        echo_through(&mut c, &payload(100_000, 2), 7000);
        assert_eq!(c.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
        drop(c);
        srv.shared.wait_for(T20, "two handshakes", |s| s.handshakes == 2);
        srv.stop();
    }

    /// 200 rustls clients connected at once (8 threads of 25), each echoing 4 KiB after all
    /// have finished their handshakes.
    fn two_hundred_concurrent_connections(backend) {
        let cert = make_cert("concurrent");
        let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
        let config = client_config(&cert);
        let all = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let (config, all, addr) = (config.clone(), all.clone(), srv.addr);
                std::thread::spawn(move || {
                    let mut conns: Vec<_> = (0..25).map(|_| {
                        let mut c = rustls_client(addr, config.clone());
                        while c.conn.is_handshaking() {
                            c.conn.complete_io(&mut c.sock).expect("handshake");
                        }
                        c
                    }).collect();
                    all.wait(); // 200 connections open
                    for (i, c) in conns.iter_mut().enumerate() {
                        echo_through(c, &payload(4096, t * 25 + i as u8), 4096);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
        srv.shared.wait_for(T20, "200 handshakes", |s| s.handshakes == 200);
        assert!(srv.shared.stats.lock().unwrap().handshake_errors.is_empty());
        srv.stop();
    }

    /// A client that leaves mid-handshake (half a ClientHello, then FIN) gets
    /// UnexpectedEof; one that stalls gets Deadline; the server goes on serving.
    fn client_leaves_mid_handshake(backend) {
        let cert = make_cert("leaves");
        // 1 s: short enough for the stalled client, long enough for the good one's handshake
        // on a loaded machine.
        let Some(srv) = TlsEcho::start(backend, &cert, Duration::from_secs(1)) else { return };
        let hello = client_hello(&cert);
        let mut s = util::dial(srv.addr);
        s.write_all(&hello[..hello.len() / 2]).unwrap();
        drop(s);
        srv.shared.wait_for(T20, "the first handshake error", |s| s.handshake_errors.len() == 1);
        let _stalled = util::dial(srv.addr); // sends nothing: the 1 s deadline ends it
        srv.shared.wait_for(T20, "the second handshake error", |s| s.handshake_errors.len() == 2);
        {
            let s = srv.shared.stats.lock().unwrap();
            assert!(matches!(s.handshake_errors[0], TlsError::UnexpectedEof), "{:?}", s.handshake_errors);
            assert!(matches!(s.handshake_errors[1], TlsError::Deadline), "{:?}", s.handshake_errors);
        }
        let mut c = rustls_client(srv.addr, client_config(&cert));
        echo_through(&mut c, b"still serving", 13);
        srv.stop();
    }

    /// Clients that refuse the certificate (Python's ssl without the CA, `openssl s_client
    /// -verify_return_error`, a rustls client trusting another certificate): each aborts
    /// with an alert, and the server gets a typed error result, then serves a good client.
    fn client_refuses_the_certificate(backend) {
        let cert = make_cert("refused");
        let other = make_cert("refused-other");
        let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
        let out = run_py_client(srv.addr, None, 10, 10, 3);
        assert!(out.contains("verify-failed"), "{out}");
        srv.shared.wait_for(T20, "the python refusal", |s| s.handshake_errors.len() == 1);

        let s_client = Command::new("timeout")
            .args(["20", "openssl", "s_client", "-connect", &srv.addr.to_string()])
            .args(["-servername", "localhost", "-verify_return_error", "-brief"])
            .stdin(Stdio::null())
            .output()
            .expect("run openssl s_client");
        assert!(!s_client.status.success(), "s_client accepted a self-signed certificate");
        srv.shared.wait_for(T20, "the s_client refusal", |s| s.handshake_errors.len() == 2);

        let mut c = rustls_client(srv.addr, client_config(&other));
        let e = c.write_all(b"x").and_then(|()| c.flush()).and_then(|()| c.read(&mut [0; 1]));
        assert!(e.is_err(), "the rustls client accepted a certificate it does not trust");
        drop(c);
        srv.shared.wait_for(T20, "the rustls refusal", |s| s.handshake_errors.len() == 3);
        {
            let s = srv.shared.stats.lock().unwrap();
            for e in &s.handshake_errors {
                assert!(
                    matches!(e, TlsError::Tls(rustls::Error::AlertReceived(_))),
                    "expected the client's alert, got {e:?} (all: {:?})",
                    s.handshake_errors
                );
            }
        }
        let out = run_py_client(srv.addr, Some(&cert.cert_pem), 1000, 1000, 0);
        assert!(out.starts_with("ok"), "{out}");
        srv.stop();
    }

    /// A peer that sends an HTTP request instead of a ClientHello is refused (a typed
    /// error, an alert written back, the connection closed) and the server goes on.
    fn garbage_instead_of_client_hello(backend) {
        let cert = make_cert("garbage");
        let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
        for (i, junk) in [&b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..], &[0xffu8; 300][..]].iter().enumerate() {
            let mut s = util::dial(srv.addr);
            s.write_all(junk).unwrap();
            let back = read_to_end_bounded(&mut s);
            assert!(back.is_empty() || back[0] == 0x15, "an alert record or nothing: {back:?}");
            srv.shared.wait_for(T20, "the refusal", |s| s.handshake_errors.len() == i + 1);
        }
        {
            let s = srv.shared.stats.lock().unwrap();
            for e in &s.handshake_errors {
                assert!(matches!(e, TlsError::Tls(rustls::Error::InvalidMessage(_))), "{e:?}");
            }
        }
        let mut c = rustls_client(srv.addr, client_config(&cert));
        echo_through(&mut c, &payload(50_000, 9), 50_000);
        drop(c);
        let out = run_py_client(srv.addr, Some(&cert.cert_pem), 1000, 100, 0);
        assert!(out.starts_with("ok"), "{out}");
        srv.stop();
    }

    /// A record that fails to decrypt after the handshake (a forged application-data record
    /// written under the TLS stream) ends the server's pending read with a typed rustls
    /// error; the server goes on serving.
    fn forged_record_after_the_handshake(backend) {
        let cert = make_cert("forged");
        let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
        let mut c = rustls_client(srv.addr, client_config(&cert));
        echo_through(&mut c, b"first a real one", 16);
        let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        forged.extend_from_slice(&[0x5a; 0x40]);
        c.sock.write_all(&forged).unwrap();
        srv.shared.wait_for(T20, "the server's read error", |s| !s.other_errors.is_empty());
        {
            let s = srv.shared.stats.lock().unwrap();
            assert!(
                matches!(s.other_errors[0], TlsError::Tls(rustls::Error::DecryptError)),
                "{:?}",
                s.other_errors
            );
        }
        let mut c = rustls_client(srv.addr, client_config(&cert));
        echo_through(&mut c, b"still serving", 13);
        srv.stop();
    }

    /// Both sides on one watcher (a loopback TCP pair): ALPN agreed, the version and suite
    /// reported on both TlsConns, data both ways before and after.
    fn both_sides_on_one_watcher_alpn(backend) {
        let cert = make_cert("alpn");
        let Some(tls) = tls_watcher::<&'static str>(backend) else { return };
        let mut scfg = (*server_config(&cert)).clone();
        scfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut ccfg = (*client_config(&cert)).clone();
        ccfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let (c, s) = util::tcp_pair();
        let deadline = Some(Instant::now() + T20);
        let server = tls.accept("s-hs", &tls.watch(&s).unwrap(), Arc::new(scfg), deadline).unwrap();
        let client = tls.connect("c-hs", &tls.watch(&c).unwrap(), Arc::new(ccfg), localhost(), deadline).unwrap();
        assert!(server.is_server() && !client.is_server() && server != client);
        tls.write("c-w", &client, b"from the client".to_vec()).unwrap();
        tls.write("s-w", &server, b"from the server".to_vec()).unwrap();
        tls.read("s-r", &server, Vec::with_capacity(100)).unwrap();
        tls.read("c-r", &client, Vec::with_capacity(100)).unwrap();
        let mut seen = Vec::new();
        drive_until(&tls, T20, "both handshakes, writes and reads", |r| {
            assert!(r.error.is_none(), "{}: {:?}", r.context, r.error);
            match r.context {
                "s-r" => assert_eq!(r.data(), b"from the client"),
                "c-r" => assert_eq!(r.data(), b"from the server"),
                _ => {}
            }
            seen.push(r.context);
            seen.len() == 6
        });
        seen.sort();
        assert_eq!(seen, ["c-hs", "c-r", "c-w", "s-hs", "s-r", "s-w"]);
        for t in [&server, &client] {
            assert_eq!(t.alpn_protocol().as_deref(), Some(&b"http/1.1"[..]));
            assert_eq!(t.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
            assert!(t.cipher_suite().is_some() && !t.is_handshaking());
        }
        assert!(tls.peer_addr(&server).is_ok());
    }

    /// The client side against an OpenSSL server (Python's ssl): 1 MiB echoed byte-exact in
    /// 64 KiB round trips, close_notify both ways; then a server whose certificate the
    /// client does not trust: the handshake's result is InvalidCertificate.
    fn client_side_against_openssl(backend) {
        let cert = make_cert("client-side");
        let other = make_cert("client-side-other");
        let Some(tls) = tls_watcher::<u64>(backend) else { return };
        let mut child = python(PY_SERVER, &[
            cert.cert_pem.display().to_string(),
            cert.key_pem.display().to_string(),
            "2".into(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python server");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut port = String::new();
        std::io::BufRead::read_line(&mut lines, &mut port).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", port.trim()).parse().expect("the port line");

        let (t, err) = connect(&tls, addr, client_config(&cert));
        assert!(err.is_none(), "{err:?}");
        assert!(!t.is_server() && !t.is_handshaking());
        client_echo(&tls, &t, &payload(MIB, 3), 64 << 10);

        let (t, err) = connect(&tls, addr, client_config(&other));
        assert!(
            matches!(err, Some(TlsError::Tls(rustls::Error::InvalidCertificate(_)))),
            "{err:?}"
        );
        tls.free(&t).unwrap();
        let mut rest = String::new();
        lines.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "python server: {status:?} {rest}");
        assert!(rest.starts_with("served") && rest.contains("handshake-failed"), "{rest}");
    }

    /// The client side at scale: 200 TlsWatcher clients on one watcher against the server
    /// of this file, handshakes all in flight at once, then a 1 KiB echo on each.
    fn client_side_two_hundred(backend) {
        let cert = make_cert("client-200");
        let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
        let Some(tls) = tls_watcher::<u64>(backend) else { return };
        let config = client_config(&cert);
        let mut conns = Vec::new();
        for i in 0..200u64 {
            let sock = util::dial(srv.addr);
            let conn = tls.watch(&sock).unwrap();
            conns.push(tls.connect(i, &conn, config.clone(), localhost(), Some(Instant::now() + T20)).unwrap());
        }
        let mut done = 0;
        drive_until(&tls, T20, "200 client handshakes", |r| {
            assert!(r.error.is_none(), "{:?}", r.error);
            assert_eq!(r.op, TlsOp::Handshake);
            done += 1;
            done == 200
        });
        for (i, t) in conns.iter().enumerate() {
            tls.write(i as u64, t, payload(1024, i as u8)).unwrap();
            tls.read(1000 + i as u64, t, Vec::with_capacity(1024)).unwrap();
        }
        let mut got = vec![Vec::new(); 200];
        let mut complete = 0;
        drive_until(&tls, T20, "200 echoes", |r| {
            assert!(r.error.is_none(), "{:?}: {:?}", r.op, r.error);
            if r.op == TlsOp::Read {
                let i = (r.context - 1000) as usize;
                got[i].extend_from_slice(r.data());
                if got[i].len() < 1024 {
                    tls.read(r.context, &r.conn, cleared(r.buffer)).unwrap();
                } else {
                    assert_eq!(got[i], payload(1024, i as u8));
                    complete += 1;
                }
            }
            complete == 200
        });
        for t in &conns {
            tls.free(t).unwrap();
        }
        srv.shared.wait_for(T20, "200 server handshakes", |s| s.handshakes == 200);
        srv.stop();
    }

    /// Writes pipelined (seven at once, 1 B to 1 MiB, across record boundaries) and read
    /// back through three pending 1000-byte reads at a time: every byte in order, the
    /// writes' results in order; then closing the watcher ends the pending reads with
    /// ClosedPipe before wait_io_into reports WatcherClosed.
    fn pipelined_writes_small_reads(backend) {
        let cert = make_cert("pipelined");
        let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
        let Some(tls) = tls_watcher::<u64>(backend) else { return };
        let (t, err) = connect(&tls, srv.addr, client_config(&cert));
        assert!(err.is_none(), "{err:?}");
        let sizes = [1usize, 100, 16384, 16385, 70_000, MIB, 5];
        let mut want = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let p = payload(*n, i as u8);
            want.extend_from_slice(&p);
            tls.write(i as u64, &t, p).unwrap();
        }
        for r in 0..3 {
            tls.read(100 + r, &t, Vec::with_capacity(1000)).unwrap();
        }
        let (mut got, mut writes) = (Vec::new(), Vec::new());
        drive_until(&tls, T20, "the pipelined echo", |r| {
            assert!(r.error.is_none(), "{:?}: {:?}", r.op, r.error);
            match r.op {
                TlsOp::Write => {
                    assert_eq!(r.size, sizes[r.context as usize]);
                    writes.push(r.context);
                }
                TlsOp::Read => {
                    assert!(r.size > 0 && r.size <= 1000);
                    got.extend_from_slice(r.data());
                    if got.len() < want.len() {
                        tls.read(r.context, &t, cleared(r.buffer)).unwrap();
                    }
                }
                op => panic!("unexpected {op:?}"),
            }
            got.len() == want.len() && writes.len() == sizes.len()
        });
        assert!(got == want, "differs at byte {:?}", util::first_difference(&got, &want));
        assert_eq!(writes, (0..sizes.len() as u64).collect::<Vec<_>>(), "writes complete in order");

        tls.read(7, &t, Vec::with_capacity(10)).unwrap();
        tls.close().unwrap();
        let mut results = Vec::new();
        let mut end = None;
        let limit = Instant::now() + T20;
        while end.is_none() {
            assert!(Instant::now() < limit, "no end after close");
            match tls.wait_io_into(&mut results, Some(T20)) {
                Ok(_) => {}
                Err(e) => end = Some(e),
            }
        }
        assert!(matches!(end, Some(gaio::Error::WatcherClosed)), "{end:?}");
        let e = tls.read(8, &t, Vec::with_capacity(10)).unwrap_err();
        assert!(matches!(e.error, TlsError::Io(gaio::Error::WatcherClosed)), "{:?}", e.error);
        let ctxs: Vec<_> = results.iter().map(|r| r.context).collect();
        assert!(ctxs.contains(&7), "the pending read's result: {ctxs:?}");
        let r = results.iter().find(|r| r.context == 7).unwrap();
        assert!(matches!(r.error, Some(TlsError::Io(gaio::Error::ClosedPipe))), "{:?}", r.error);
        srv.stop();
    }

    /// Nothing leaks: after 30 connections ended every way (freed after an echo, dropped
    /// without free while idle, freed mid-handshake, still reading when the watcher closes)
    /// and both watchers gone, the process has the descriptors it had before. In a process
    /// of its own (it counts the process's descriptors).
    fn no_descriptor_left(backend) {
        if !util::own_process("no_descriptor_left") {
            return;
        }
        let cert = make_cert("leak");
        let before = util::open_fds();
        {
            let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
            let Some(tls) = tls_watcher::<u64>(backend) else { return };
            let config = client_config(&cert);
            for i in 0..30u64 {
                match i % 3 {
                    0 | 1 => {
                        let (t, err) = connect(&tls, srv.addr, config.clone());
                        assert!(err.is_none(), "{err:?}");
                        tls.write(i, &t, payload(3000, i as u8)).unwrap();
                        tls.read(i, &t, Vec::with_capacity(3000)).unwrap();
                        let (mut got, mut written) = (0, false);
                        drive_until(&tls, T20, "an echo and its write", |r| {
                            assert!(r.error.is_none(), "{:?}", r.error);
                            if r.op == TlsOp::Read {
                                got += r.size;
                                if got < 3000 {
                                    tls.read(i, &t, cleared(r.buffer)).unwrap();
                                }
                            } else {
                                written = true;
                            }
                            got == 3000 && written
                        });
                        if i % 3 == 0 {
                            tls.free(&t).unwrap();
                        } // else: dropped without free, nothing pending
                    }
                    _ => {
                        let sock = util::dial(srv.addr);
                        let conn = tls.watch(&sock).unwrap();
                        let t = tls.connect(i, &conn, config.clone(), localhost(), None).unwrap();
                        tls.free(&t).unwrap();
                        drive_until(&tls, T20, "the freed handshake", |r| {
                            assert_eq!(r.op, TlsOp::Handshake);
                            assert!(r.error.is_some());
                            true
                        });
                    }
                }
            }
            let (t, _) = connect(&tls, srv.addr, config);
            tls.read(99, &t, Vec::with_capacity(10)).unwrap(); // pending when the watcher closes
            drop(tls);
            srv.shared.wait_for(T20, "the server's handshakes", |s| s.handshakes >= 21);
            srv.stop();
        }
        util::assert_fds(&before, before.len(), "after both TLS watchers are gone");
    }

    /// Bad input and the lifecycle: empty buffers and writes after close_notify are refused
    /// with the buffer back; another TLS watcher's connection is refused; free ends pending
    /// requests with ClosedPipe (one result each) and later submissions are refused.
    fn refusals_and_free(backend) {
        let cert = make_cert("refusals");
        let Some(srv) = TlsEcho::start(backend, &cert, T20) else { return };
        let Some(tls) = tls_watcher::<u64>(backend) else { return };
        let (t, err) = connect(&tls, srv.addr, client_config(&cert));
        assert!(err.is_none(), "{err:?}");
        let e = tls.read(1, &t, Vec::new()).unwrap_err();
        assert!(matches!(e.error, TlsError::Io(gaio::Error::EmptyBuffer)) && e.context == 1);
        let e = tls.write(2, &t, Vec::new()).unwrap_err();
        assert!(matches!(e.error, TlsError::Io(gaio::Error::EmptyBuffer)) && e.buffer == Some(Vec::new()));
        let Some(stranger) = tls_watcher::<u64>(backend) else { return };
        let e = stranger.read(3, &t, Vec::with_capacity(8)).unwrap_err();
        assert!(matches!(e.error, TlsError::Io(gaio::Error::Unsupported)));
        // A Conn of another watcher: the first gaio request is refused, so is the accept.
        let (_peer, ours) = std::os::unix::net::UnixStream::pair().unwrap();
        let foreign = tls.watch(&ours).unwrap();
        let e = stranger.accept(30, &foreign, server_config(&cert), None).unwrap_err();
        assert!(matches!(e.error, TlsError::Io(gaio::Error::Unsupported)), "{:?}", e.error);
        assert_eq!(e.context, 30);
        let mut early = (*server_config(&cert)).clone();
        early.max_early_data_size = 1024;
        let e = tls.accept(31, &foreign, Arc::new(early), None).unwrap_err();
        assert!(matches!(e.error, TlsError::Io(gaio::Error::InvalidArgument(_))), "{:?}", e.error);

        // Two reads pending (the server sends nothing), then free.
        tls.read(4, &t, Vec::with_capacity(8)).unwrap();
        tls.read(5, &t, Vec::with_capacity(8)).unwrap();
        tls.free(&t).unwrap();
        let mut seen = Vec::new();
        drive_until(&tls, T20, "the freed reads", |r| {
            assert!(matches!(r.error, Some(TlsError::Io(gaio::Error::ClosedPipe))), "{:?}", r.error);
            assert!(r.buffer.is_empty() && r.buffer.capacity() >= 8, "the buffer, empty");
            seen.push(r.context);
            seen.len() == 2
        });
        seen.sort();
        assert_eq!(seen, [4, 5]);
        let mut extra = Vec::new();
        assert_eq!(tls.wait_io_into(&mut extra, Some(Duration::from_millis(50))).unwrap(), 0, "{extra:?}");
        let e = tls.write(6, &t, vec![1]).unwrap_err();
        assert!(matches!(e.error, TlsError::Io(gaio::Error::ConnClosed)));
        tls.free(&t).unwrap(); // twice: nothing

        // After close_notify, writes are refused; the read deadline ends a read and the
        // connection stays usable.
        let (t, _) = connect(&tls, srv.addr, client_config(&cert));
        // A full buffer has no room: plaintext is appended within the capacity.
        let e = tls.read(13, &t, vec![0; 8]).unwrap_err();
        assert!(matches!(e.error, TlsError::Io(gaio::Error::EmptyBuffer)));
        assert_eq!(e.buffer.map(|b| b.len()), Some(8));
        tls.read_timeout(7, &t, Vec::with_capacity(8), Instant::now() + Duration::from_millis(100)).unwrap();
        drive_until(&tls, T20, "the read deadline", |r| {
            assert_eq!((r.op, r.context), (TlsOp::Read, 7));
            assert!(matches!(r.error, Some(TlsError::Deadline)), "{:?}", r.error);
            true
        });
        tls.write(8, &t, b"after".to_vec()).unwrap();
        tls.read(9, &t, Vec::with_capacity(8)).unwrap();
        tls.close_notify(10, &t).unwrap();
        let e = tls.write(11, &t, b"late".to_vec()).unwrap_err();
        assert!(matches!(e.error, TlsError::Closed) && e.buffer.as_deref() == Some(&b"late"[..]));
        assert!(matches!(tls.close_notify(12, &t).unwrap_err().error, TlsError::Closed));
        let mut got = Vec::new();
        drive_until(&tls, T20, "write, read, close", |r| {
            if r.context == 9 {
                assert_eq!(r.data(), b"after");
            } else {
                assert!(r.error.is_none(), "{:?}", r.error);
            }
            got.push(r.context);
            got.len() == 3
        });
        got.sort();
        assert_eq!(got, [8, 9, 10]);
        tls.free(&t).unwrap();
        srv.stop();
    }
}
