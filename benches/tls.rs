//! TLS echo: a server on `gaio::tls::TlsWatcher` (epoll and io_uring) against the same server
//! written with tokio-rustls on tokio, driven by the same blocking rustls clients on std
//! threads (not gaio), reported as ratios (issue 14).
//!
//! ```text
//! cargo bench --features rustls --bench tls                 # 3 rounds x 2 s per case and server, about 1 minute
//! cargo bench --features rustls --bench tls -- --quick      # 1 round x 0.5 s, about 10 s
//! cargo bench --features rustls --bench tls -- --rounds 5 --secs 3
//! ```
//!
//! Servers (in this process, each started fresh per measurement, TCP_NODELAY, 64 KiB read
//! buffers, rustls with the ring provider, TLS 1.3, the same ECDSA P-256 certificate):
//! - **gaio-epoll**, **gaio-uring**: an accept thread hands sockets to `TlsWatcher::accept`;
//!   threads looping on `wait_io_into` (one per core, as many as tokio's workers;
//!   `--loops N`) write back what each read returned;
//! - **tokio**: tokio-rustls's `TlsAcceptor` on a multi-thread runtime (one worker per
//!   core), a task per connection: `read`, `write_all`, `flush`.
//!
//! Cases (every echoed byte is checked):
//! - **stream**: 1 and 4 connections, round trips of 256 KiB (MB/s of echoed bytes);
//! - **ping-pong**: 16 connections (a client thread each), 64 B round trips (requests/s,
//!   p50 and p99 round-trip time);
//! - **handshakes**: 4 client threads, each a loop of: connect, TLS handshake, one 64 B
//!   round trip, close (connections/s).
//!
//! Each case also reports the server's CPU time per unit of work (its threads' time from
//! `/proc/self/task/*/schedstat`: the threads alive through the measurement, which the
//! client threads are not), steadier than a rate when the cores are shared.
//!
//! Medians over the rounds; the ratio columns are gaio/tokio (above 1 is better for rates,
//! below 1 for latencies and CPU). The clients and the server share the machine's cores, so
//! a rate measures both; the ratios, taken side by side in one run, are what to read. A full run
//! writes `benches/results/tls.md`; `--quick` (and a run with no arguments, as `cargo test
//! --benches` does) writes `target/bench-results/tls.md`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::run_info;
use common::stats::median;
use gaio::tls::{TlsError, TlsOp, TlsResult, TlsWatcher};
use gaio::{Backend, Watcher};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const USAGE: &str = "\
usage: cargo bench --features rustls --bench tls -- [OPTIONS]

TLS echo on gaio::tls (epoll, io_uring) against tokio-rustls, blocking rustls clients.

options:
  --quick          1 round of 0.5 s per case and server (a smoke test, about 10 s)
  --rounds N       rounds (default 3)
  --secs S         seconds per case and server in a round (default 2)
  --servers LIST   only these, comma-separated (gaio-epoll,gaio-uring,tokio)
  --cases LIST     only these, comma-separated (stream1,stream4,pingpong,handshakes)
  --loops N        threads in wait_io_into per gaio server (default: one per core, as
                   tokio's runtime has workers)
  -h, --help       print this help";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Server {
    GaioEpoll,
    GaioUring,
    Tokio,
}

impl Server {
    const ALL: [Server; 3] = [Server::GaioEpoll, Server::GaioUring, Server::Tokio];

    fn name(self) -> &'static str {
        match self {
            Server::GaioEpoll => "gaio-epoll",
            Server::GaioUring => "gaio-uring",
            Server::Tokio => "tokio",
        }
    }
}

#[derive(Clone, Copy)]
enum Case {
    Stream(usize),
    PingPong(usize),
    Handshakes(usize),
}

impl Case {
    fn title(self) -> String {
        match self {
            Case::Stream(n) => format!("stream, {n} connection(s), 256 KiB round trips"),
            Case::PingPong(n) => format!("ping-pong, {n} connections, 64 B"),
            Case::Handshakes(n) => format!("handshakes, {n} client threads"),
        }
    }
}

/// One measurement: the metrics of a case, in the case's row order.
type Metrics = Vec<(&'static str, f64)>;

struct Identity {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn identity() -> Identity {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(key))
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Identity {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

// ---------------------------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------------------------

enum Running {
    Gaio {
        tls: Arc<TlsWatcher<()>>,
        stop: Arc<AtomicBool>,
        threads: Vec<JoinHandle<()>>,
    },
    Tokio(tokio::runtime::Runtime),
}

/// Starts `server`; a gaio server runs `loops` threads in `wait_io_into` on its one
/// `TlsWatcher`.
fn start(server: Server, config: Arc<rustls::ServerConfig>, loops: usize) -> (SocketAddr, Running) {
    let ln = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = ln.local_addr().unwrap();
    let backend = match server {
        Server::GaioEpoll => Backend::Epoll,
        Server::GaioUring => Backend::Uring,
        Server::Tokio => return (addr, start_tokio(ln, config)),
    };
    let tls = Arc::new(
        TlsWatcher::<()>::with_builder(Watcher::builder().backend(backend)).expect("tls watcher"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let (tls, stop) = (tls.clone(), stop.clone());
        std::thread::spawn(move || {
            for s in ln.incoming() {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(s) = s else { continue };
                let _ = s.set_nodelay(true);
                if let Ok(conn) = tls.watch(&s) {
                    let _ = tls.accept((), &conn, config.clone(), None);
                }
            }
        })
    };
    let mut threads = vec![acceptor];
    for _ in 0..loops {
        let (tls, stop) = (tls.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("server-loop".into())
                .spawn(move || gaio_echo(&tls, &stop))
                .expect("server loop thread"),
        );
    }
    (addr, Running::Gaio { tls, stop, threads })
}

fn gaio_echo(tls: &TlsWatcher<()>, stop: &AtomicBool) {
    const BUF: usize = 64 << 10;
    let mut results: Vec<TlsResult<()>> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        if tls.wait_io_into(&mut results, None).is_err() {
            return;
        }
        for res in results.drain(..) {
            let conn = res.conn.clone();
            let next = match (res.op, res.error) {
                (TlsOp::Handshake, None) => tls.read((), &conn, Vec::with_capacity(BUF)),
                (TlsOp::Read, None) => {
                    tls.write((), &conn, res.buffer) // the plaintext read, appended to a cleared buffer
                }
                (TlsOp::Write, None) => {
                    let mut b = res.buffer;
                    b.clear(); // its capacity is the next read's room
                    tls.read((), &conn, b)
                }
                (TlsOp::Read, Some(TlsError::Eof)) => tls.close_notify((), &conn),
                _ => {
                    let _ = tls.free(&conn);
                    Ok(())
                }
            };
            if next.is_err() {
                let _ = tls.free(&conn);
            }
        }
    }
}

fn start_tokio(ln: TcpListener, config: Arc<rustls::ServerConfig>) -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    ln.set_nonblocking(true).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ln = tokio::net::TcpListener::from_std(ln).expect("tokio listener");
        loop {
            let Ok((s, _)) = ln.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
                        break;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    Running::Tokio(rt)
}

fn stop(addr: SocketAddr, r: Running) {
    match r {
        Running::Gaio { tls, stop, threads } => {
            stop.store(true, Ordering::Release);
            let _ = TcpStream::connect(addr);
            // Closing ends every wait_io_into (WatcherClosed once drained): each loop returns.
            tls.close().unwrap();
            for t in threads {
                t.join().expect("server thread");
            }
        }
        Running::Tokio(rt) => rt.shutdown_timeout(Duration::from_secs(1)),
    }
}

// ---------------------------------------------------------------------------------------------
// The clients: blocking rustls on std threads
// ---------------------------------------------------------------------------------------------

type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn client(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Client {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).expect("client connection");
    let mut c = rustls::StreamOwned::new(conn, sock);
    while c.conn.is_handshaking() {
        c.conn.complete_io(&mut c.sock).expect("handshake");
    }
    c
}

/// One round trip of `msg`, checked; the time it took.
fn round_trip(c: &mut Client, msg: &[u8], back: &mut [u8]) -> Duration {
    let t = Instant::now();
    c.write_all(msg).expect("write");
    c.flush().expect("flush");
    c.read_exact(&mut back[..msg.len()]).expect("read the echo");
    let took = t.elapsed();
    assert!(back[..msg.len()] == *msg, "the echo differs");
    took
}

/// Runs `threads` client threads for `secs` after they are all ready; each returns its
/// (bytes or operations, round-trip times).
fn run_clients(
    threads: usize,
    secs: f64,
    work: impl Fn(usize, &dyn Fn() -> bool) -> (u64, Vec<u32>) + Send + Sync + 'static,
) -> (u64, Vec<u32>, f64) {
    let work = Arc::new(work);
    let ready = Arc::new(Barrier::new(threads + 1));
    let end = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (work, ready, end) = (work.clone(), ready.clone(), end.clone());
            std::thread::Builder::new()
                .name("client".into())
                .spawn(move || {
                    ready.wait();
                    let until = end.lock().unwrap().expect("set before the start");
                    work(i, &|| Instant::now() < until)
                })
                .expect("client thread")
        })
        .collect();
    let start = Instant::now();
    *end.lock().unwrap() = Some(start + Duration::from_secs_f64(secs));
    ready.wait();
    let (mut total, mut samples) = (0, Vec::new());
    for h in handles {
        let (n, s) = h.join().expect("client thread");
        total += n;
        samples.extend(s);
    }
    (total, samples, start.elapsed().as_secs_f64())
}

/// CPU time (ns) of each thread of this process, from `/proc/self/task/*/schedstat`.
fn task_cpu() -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let path = e.path().join("schedstat");
            if let Some(ns) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
            {
                m.insert(e.file_name().to_string_lossy().into_owned(), ns);
            }
        }
    }
    m
}

/// CPU seconds the threads alive at both snapshots took between them: the server's threads
/// (the client threads start after `before` and are gone before `after`; the main thread
/// only waits).
fn server_cpu(
    before: &std::collections::HashMap<String, u64>,
    after: &std::collections::HashMap<String, u64>,
) -> f64 {
    let ns: u64 = after
        .iter()
        .filter_map(|(tid, a)| Some(a.saturating_sub(*before.get(tid)?)))
        .sum();
    ns as f64 / 1e9
}

fn measure(case: Case, addr: SocketAddr, config: &Arc<rustls::ClientConfig>, secs: f64) -> Metrics {
    let mut m = measure_rates(case, addr, config, secs);
    // rate x seconds: MB, requests or connections.
    let count = m[0].1 * m[m.len() - 2].1;
    let (per, unit) = match case {
        Case::Stream(_) => (1e3, "server CPU per MB (ms)"),
        Case::PingPong(_) => (1e6, "server CPU per request (µs)"),
        Case::Handshakes(_) => (1e6, "server CPU per connection (µs)"),
    };
    let cpu = m.pop().expect("the CPU seconds").1;
    m.pop(); // the seconds
    m.push((unit, cpu / count * per));
    m
}

/// The case's rates, then its length (s) and the server's CPU seconds (taken off by
/// `measure`).
fn measure_rates(
    case: Case,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    secs: f64,
) -> Metrics {
    match case {
        Case::Stream(conns) => {
            let clients: Vec<_> = (0..conns)
                .map(|_| std::sync::Mutex::new(client(addr, config)))
                .collect();
            let clients = Arc::new(clients);
            let before = task_cpu();
            let (bytes, _, took) = run_clients(conns, secs, move |i, go| {
                let mut c = clients[i].lock().unwrap();
                let msg: Vec<u8> = (0..256 << 10).map(|k: usize| (k * 7 + i) as u8).collect();
                let mut back = vec![0u8; msg.len()];
                let mut n = 0u64;
                while go() {
                    round_trip(&mut c, &msg, &mut back);
                    n += msg.len() as u64;
                }
                (n, Vec::new())
            });
            let cpu = server_cpu(&before, &task_cpu());
            vec![
                ("throughput (MB/s)", bytes as f64 / took / 1e6),
                ("seconds", took),
                ("cpu", cpu),
            ]
        }
        Case::PingPong(conns) => {
            let clients: Vec<_> = (0..conns)
                .map(|_| std::sync::Mutex::new(client(addr, config)))
                .collect();
            let clients = Arc::new(clients);
            let before = task_cpu();
            let (ops, mut rtt, took) = run_clients(conns, secs, move |i, go| {
                let mut c = clients[i].lock().unwrap();
                let msg = [i as u8; 64];
                let mut back = [0u8; 64];
                let mut samples = Vec::new();
                while go() {
                    samples.push(round_trip(&mut c, &msg, &mut back).as_nanos() as u32);
                }
                (samples.len() as u64, samples)
            });
            let cpu = server_cpu(&before, &task_cpu());
            rtt.sort_unstable();
            let pct =
                |p: f64| rtt[((rtt.len() as f64 * p) as usize).min(rtt.len() - 1)] as f64 / 1e3;
            vec![
                ("throughput (requests/s)", ops as f64 / took),
                ("p50 round trip (µs)", pct(0.50)),
                ("p99 round trip (µs)", pct(0.99)),
                ("seconds", took),
                ("cpu", cpu),
            ]
        }
        Case::Handshakes(threads) => {
            let config = config.clone();
            let before = task_cpu();
            let (n, _, took) = run_clients(threads, secs, move |i, go| {
                let msg = [i as u8; 64];
                let mut back = [0u8; 64];
                let mut n = 0;
                while go() {
                    let mut c = client(addr, &config);
                    round_trip(&mut c, &msg, &mut back);
                    n += 1;
                }
                (n, Vec::new())
            });
            let cpu = server_cpu(&before, &task_cpu());
            vec![
                ("connections/s", n as f64 / took),
                ("seconds", took),
                ("cpu", cpu),
            ]
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run and its report
// ---------------------------------------------------------------------------------------------

fn main() {
    let (mut rounds, mut secs) = (3usize, 2.0f64);
    let mut quick = run_info::no_arguments();
    let (mut only_servers, mut only_cases): (Option<String>, Option<String>) = (None, None);
    let mut loops = run_info::cores().max(1);
    let mut args = common::example::Args::from_env();
    while let Some(flag) = args.next_flag().unwrap_or_else(|e| die(&e)) {
        match flag.name.as_str() {
            "--quick" => quick = true,
            "--rounds" => {
                rounds = args
                    .parse_within(&flag, 1..=100)
                    .unwrap_or_else(|e| die(&e))
            }
            "--secs" => {
                secs = args
                    .parse_within(&flag, 0.1..=600.0)
                    .unwrap_or_else(|e| die(&e))
            }
            "--loops" => loops = args.parse_within(&flag, 1..=64).unwrap_or_else(|e| die(&e)),
            "--servers" => only_servers = Some(args.value(&flag).unwrap_or_else(|e| die(&e))),
            "--cases" => only_cases = Some(args.value(&flag).unwrap_or_else(|e| die(&e))),
            "--bench" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => die(&format!("unknown option {other}\n{USAGE}")),
        }
    }
    if quick {
        (rounds, secs) = (1, 0.5);
    }
    let cases: Vec<Case> = [
        ("stream1", Case::Stream(1)),
        ("stream4", Case::Stream(4)),
        ("pingpong", Case::PingPong(16)),
        ("handshakes", Case::Handshakes(4)),
    ]
    .into_iter()
    .filter(|(n, _)| {
        only_cases
            .as_deref()
            .map_or(true, |l| l.split(',').any(|x| x == *n))
    })
    .map(|(_, c)| c)
    .collect();
    let id = identity();
    let uring_ok =
        TlsWatcher::<()>::with_builder(Watcher::builder().backend(Backend::Uring)).is_ok();
    let servers: Vec<Server> = Server::ALL
        .into_iter()
        .filter(|s| *s != Server::GaioUring || uring_ok)
        .filter(|s| {
            only_servers
                .as_deref()
                .map_or(true, |l| l.split(',').any(|x| x == s.name()))
        })
        .collect();
    // results[case][server] = one Metrics per round
    let mut results: Vec<Vec<Vec<Metrics>>> = vec![vec![Vec::new(); servers.len()]; cases.len()];
    let started = run_info::CpuSnapshot::take();
    let mut loads = Vec::new();
    for round in 0..rounds {
        let from = run_info::CpuSnapshot::take();
        for (ci, case) in cases.iter().enumerate() {
            for (si, server) in servers.iter().enumerate() {
                let (addr, running) = start(*server, id.server.clone(), loops);
                let m = measure(*case, addr, &id.client, secs);
                stop(addr, running);
                eprintln!(
                    "round {} {:<48} {:<10} {:?}",
                    round + 1,
                    case.title(),
                    server.name(),
                    m
                );
                results[ci][si].push(m);
            }
        }
        loads.push(run_info::round_load(from, round));
    }
    let total_load = run_info::CpuSnapshot::other_since(started);
    if !quick {
        let file = bench_file(&cases, &servers, &results, loops, total_load, &loads);
        let path = common::results::results_dir().join("tls.json");
        match file.write(&path) {
            Ok(()) => eprintln!("results written to {} (for BENCHMARKS.md)", path.display()),
            Err(e) => die(&e),
        }
    }
    let report = report(
        &cases, &servers, &results, rounds, secs, loops, total_load, &loads,
    );
    println!("{report}");
    let path = if quick {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
        let _ = std::fs::create_dir_all(&dir);
        dir.join("tls.md")
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/tls.md")
    };
    std::fs::write(&path, report).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    eprintln!("written to {}", path.display());
}

fn die(e: &str) -> ! {
    eprintln!("tls bench: {e}");
    std::process::exit(2)
}

#[allow(clippy::too_many_arguments)]
fn report(
    cases: &[Case],
    servers: &[Server],
    results: &[Vec<Vec<Metrics>>],
    rounds: usize,
    secs: f64,
    loops: usize,
    total_load: Option<f64>,
    loads: &[Option<f64>],
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# TLS echo: gaio::tls against tokio-rustls, blocking rustls clients\n"
    );
    let command = run_info::command("tls").replacen(
        "cargo bench --bench",
        "cargo bench --features rustls --bench",
        1,
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let _ = write!(
        s,
        "`{command}`: {}, kernel {}, {} cores ({cpu}), {rounds} round(s) of {secs} s per case and \
         server.",
        run_info::utc_now(),
        run_info::kernel_release(),
        run_info::cores()
    );
    if let Some(t) = run_info::other_load_text(total_load, loads) {
        let _ = write!(s, " Other load: {t}.");
    }
    let _ = writeln!(
        s,
        "\n\nServers and clients in one process on the same cores (see `benches/tls.rs`); the \
         gaio servers run {loops} thread(s) in `wait_io_into` on one `TlsWatcher`, tokio's \
         runtime one worker per core. Rustls \
         0.23 with ring, TLS 1.3, an ECDSA P-256 certificate, TCP_NODELAY, 64 KiB read \
         buffers. Every echoed byte is checked. Server CPU is its threads' time (schedstat) per \
         unit of work. Medians over the rounds; the ratio columns are gaio/tokio (above 1 is \
         better for rates, below 1 for round-trip times and CPU). One difference is rustls's, \
         not the servers': its unbuffered API (gaio::tls) builds each outgoing record in a \
         buffer of its own and copies it into the caller's, where its buffered API \
         (tokio-rustls) writes from its own buffers, so gaio's side copies every byte it \
         sends once more.\n"
    );
    let tokio = servers.iter().position(|s| *s == Server::Tokio);
    for (ci, case) in cases.iter().enumerate() {
        let _ = writeln!(s, "## {}\n", case.title());
        let mut head = String::from("| metric |");
        let mut rule = String::from("|---|");
        for sv in servers {
            let _ = write!(head, " {} |", sv.name());
            rule.push_str("---:|");
        }
        for sv in servers.iter().filter(|s| **s != Server::Tokio) {
            let _ = write!(head, " {}/tokio |", sv.name().trim_start_matches("gaio-"));
            rule.push_str("---:|");
        }
        let _ = writeln!(s, "{head}\n{rule}");
        let names: Vec<&str> = results[ci][0][0].iter().map(|(n, _)| *n).collect();
        for (mi, name) in names.iter().enumerate() {
            let med: Vec<f64> = (0..servers.len())
                .map(|si| median(&results[ci][si].iter().map(|m| m[mi].1).collect::<Vec<_>>()))
                .collect();
            let mut row = format!("| {name} |");
            for v in &med {
                let _ = write!(row, " {} |", fmt(*v));
            }
            for (si, sv) in servers.iter().enumerate() {
                if *sv == Server::Tokio {
                    continue;
                }
                match tokio {
                    Some(t) => {
                        let _ = write!(row, " {:.2} |", med[si] / med[t]);
                    }
                    None => row.push_str(" - |"),
                }
            }
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
    }
    s
}

/// The run in the results format every bench writes (`target/bench-results/tls.json`), which
/// `benches/compare.sh`'s report step puts into BENCHMARKS.md.
fn bench_file(
    cases: &[Case],
    servers: &[Server],
    results: &[Vec<Vec<Metrics>>],
    loops: usize,
    total_load: Option<f64>,
    loads: &[Option<f64>],
) -> common::results::BenchFile {
    use common::results::{BenchFile, Better, ImplResult, Workload};
    let mut workloads = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        let names: Vec<&str> = results[ci][0][0].iter().map(|(n, _)| *n).collect();
        for (mi, name) in names.iter().enumerate() {
            let better = if name.contains("/s") {
                Better::Higher
            } else {
                Better::Lower
            };
            let results = servers
                .iter()
                .enumerate()
                .map(|(si, sv)| {
                    let rounds: Vec<f64> = results[ci][si].iter().map(|m| m[mi].1).collect();
                    ImplResult {
                        imp: sv.name().to_string(),
                        median: median(&rounds),
                        rounds,
                    }
                })
                .collect();
            workloads.push(Workload {
                name: format!("TLS {}", case.title()),
                metric: name.to_string(),
                better,
                results,
                extra: Default::default(),
            });
        }
    }
    BenchFile {
        bench: "tls".into(),
        date: run_info::utc_now(),
        kernel: run_info::kernel_release(),
        cores: run_info::cores(),
        command: run_info::command("tls").replacen(
            "cargo bench --bench",
            "cargo bench --features rustls --bench",
            1,
        ),
        other_load: run_info::other_load_text(total_load, loads),
        workloads,
        notes: vec![format!(
            "TLS echo (benches/tls.rs, feature rustls): gaio::tls servers ({loops} wait_io_into \
             thread(s) on one TlsWatcher) against tokio-rustls on tokio, blocking rustls \
             clients on std threads in the same process; rustls 0.23 with ring, TLS 1.3. \
             benches/results/tls.md has the run's tables and notes."
        )],
    }
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        common::stats::thousands(v)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
