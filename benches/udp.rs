//! UDP echo (issue 14): echoed datagrams per second at 64 B and 1 200 B, gaio's UDP echo loop
//! (`examples/common/udp.rs`, the loop of `examples/udp-echo.rs`, on `gaio-epoll` and
//! `gaio-uring`) against a hand-written `mio` UDP echo loop (`mio`: recv_from, send_to back,
//! until WouldBlock), the same client for all.
//!
//! The client is not gaio and must not be the limit: one thread with a `mio` poll over 4
//! connected UDP sockets, each keeping 64 datagrams in flight (256 in all), sent and received
//! with `sendmmsg`/`recvmmsg` (so it spends fewer syscalls per datagram than any of the
//! servers), every echo checked byte for byte (sequence number and fill) before it counts. A datagram lost on the way (a
//! full socket buffer drops it: UDP) is written off after 20 ms without an echo on its socket,
//! counted, and replaced. Socket buffers are 4 MiB on both sides (`SO_RCVBUFFORCE` /
//! `SO_SNDBUFFORCE` when allowed, else as much as `rmem_max` lets).
//!
//! Each measurement: server started on a thread of this process, 0.3 s of warm-up, then
//! `--secs` seconds counted. Rounds alternate the servers (their order rotating), and the
//! report gives the median over rounds of datagrams per second and the ratios to `mio` of the
//! same rounds, plus gaio's average `recvmmsg`/`sendmmsg` batch (`Watcher::datagram_stats`).
//!
//! ```text
//! cargo bench --bench udp                 # 3 rounds of 3 s: benches/results/udp.md (about 70 s)
//! cargo bench --bench udp -- --quick      # 1 round of 2 s (under 30 s), also writes the report
//! cargo bench --bench udp -- --rounds 5 --secs 4 --out /tmp/udp.md
//! ```
//!
//! Run with no argument at all (as `cargo test --benches` does) it is a short smoke test that
//! writes nothing.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::example::udp::{udp_echo_loop, UdpEcho, UdpStats};
use common::example::Args;
use common::run_info::{self, CpuSnapshot};
use common::stats::median;
use gaio::{Backend, Watcher};

const USAGE: &str = "\
usage: cargo bench --bench udp [-- [--quick] [--rounds N] [--secs S] [--out PATH]]

UDP echo, datagrams per second at 64 B and 1200 B: gaio-epoll, gaio-uring and a mio loop,
the same verifying mio client. Writes benches/results/udp.md (or --out PATH).";

const SIZES: [usize; 2] = [64, 1200];
const CLIENT_SOCKETS: usize = 4;
const IN_FLIGHT: usize = 64;
const WARMUP: Duration = Duration::from_millis(300);
const LOST_AFTER: Duration = Duration::from_millis(20);
const SOCKET_BUFFER: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Imp {
    Epoll,
    Uring,
    Mio,
}

impl Imp {
    const ALL: [Imp; 3] = [Imp::Epoll, Imp::Uring, Imp::Mio];
    fn name(self) -> &'static str {
        match self {
            Imp::Epoll => "gaio-epoll",
            Imp::Uring => "gaio-uring",
            Imp::Mio => "mio",
        }
    }
}

struct Options {
    rounds: usize,
    secs: f64,
    out: Option<String>,
    quick: bool,
    smoke: bool,
}

fn parse() -> Result<Options, String> {
    let smoke = run_info::no_arguments();
    let mut o = Options {
        rounds: 3,
        secs: 3.0,
        out: None,
        quick: false,
        smoke,
    };
    let (mut rounds, mut secs) = (None, None);
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => rounds = Some(args.parse_within(&flag, 1..=100)?),
            "--secs" => secs = Some(args.parse::<f64>(&flag)?),
            "--out" => o.out = Some(args.value(&flag)?),
            "--bench" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    o.rounds = rounds.unwrap_or(if o.quick || smoke { 1 } else { 3 });
    o.secs = secs.unwrap_or(if smoke {
        0.3
    } else if o.quick {
        2.0
    } else {
        3.0
    });
    if !(o.secs > 0.0 && o.secs <= 600.0) {
        return Err("--secs must be in (0, 600]".into());
    }
    Ok(o)
}

/// A UDP socket on `addr` with big buffers.
fn socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        let v = SOCKET_BUFFER as libc::c_int;
        // SAFETY: setsockopt reads one c_int from a live local; failure (no CAP_NET_ADMIN) is
        // handled by the plain options below.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
            let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        }
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A running echo server.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Option<gaio::DatagramStats>, String>>,
}

fn start(imp: Imp) -> Result<Server, String> {
    let sock = socket("127.0.0.1:0".parse().unwrap()).map_err(|e| format!("bind: {e}"))?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = match imp {
        Imp::Mio => std::thread::Builder::new()
            .name("echo-mio".into())
            .spawn(move || mio_echo(sock, &flag).map(|()| None))
            .map_err(|e| e.to_string())?,
        Imp::Epoll | Imp::Uring => {
            let backend = if imp == Imp::Epoll {
                Backend::Epoll
            } else {
                Backend::Uring
            };
            let w: Watcher<usize> = Watcher::builder()
                .backend(backend)
                .build()
                .map_err(|e| format!("{}: {e}", imp.name()))?;
            std::thread::Builder::new()
                .name(format!("echo-{}", imp.name()))
                .spawn(move || {
                    let cfg = UdpEcho {
                        receives: 64,
                        buffer_size: 2048,
                        verbose: false,
                        gro: false,
                    };
                    let stats = UdpStats::default();
                    udp_echo_loop(&w, &sock, &cfg, &flag, &stats).map_err(|e| e.to_string())?;
                    let errors = stats.errors.load(Ordering::Relaxed);
                    if errors > 0 {
                        return Err(format!("{errors} requests failed"));
                    }
                    Ok(Some(w.datagram_stats()))
                })
                .map_err(|e| e.to_string())?
        }
    };
    Ok(Server { addr, stop, thread })
}

impl Server {
    fn stop(self) -> Result<Option<gaio::DatagramStats>, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "server thread panicked".to_string())?
    }
}

/// The readiness floor: a hand-written mio loop, recv_from and send_to back until WouldBlock;
/// an echo that meets a full send buffer waits for writability.
fn mio_echo(sock: std::net::UdpSocket, stop: &AtomicBool) -> Result<(), String> {
    use mio::{Events, Interest, Poll, Token};
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut sock = mio::net::UdpSocket::from_std(sock);
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 2048];
    let mut held: std::collections::VecDeque<(Vec<u8>, SocketAddr)> = Default::default();
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        // Held echoes first (writable, or a retry), then everything readable.
        while let Some((d, to)) = held.front() {
            match sock.send_to(d, *to) {
                Ok(_) => {
                    held.pop_front();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("mio send_to: {e}")),
            }
        }
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if !held.is_empty() {
                        held.push_back((buf[..n].to_vec(), from));
                        continue;
                    }
                    match sock.send_to(&buf[..n], from) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            held.push_back((buf[..n].to_vec(), from))
                        }
                        Err(e) => return Err(format!("mio send_to: {e}")),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("mio recv_from: {e}")),
            }
        }
    }
    Ok(())
}

/// Fills `d` as datagram `seq` of `len` bytes: the sequence number, then a fill derived from
/// it.
fn fill(d: &mut Vec<u8>, seq: u64, len: usize) {
    d.clear();
    d.extend_from_slice(&seq.to_le_bytes()[..len.min(8)]);
    let b = (seq.wrapping_mul(0x9e37_79b9) >> 7) as u8;
    d.resize(len, b);
}

/// What a client run counted.
struct ClientRun {
    rate: f64,
    lost: u64,
    /// Echoes in all, warm-up included.
    total: u64,
}

/// CPU time (user + system, in clock ticks) of this process's server threads: the echo loop
/// (`echo-*`) and gaio's own (`gaio-*`: the poller and loop on epoll, the ring thread on
/// io_uring).
fn server_cpu_ticks() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut sum = 0;
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("", |(_, n)| n);
        if !(name.starts_with("echo-") || name.starts_with("gaio-")) {
            continue;
        }
        // Fields after the name: state is field 3, so utime and stime (14, 15) are 11, 12.
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        sum += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    }
    sum
}

/// The verifying client: `CLIENT_SOCKETS` connected sockets on one mio poll, each with
/// `IN_FLIGHT` datagrams of `len` bytes in flight; counts echoes for `secs` after the warm-up.
fn client(server: SocketAddr, len: usize, secs: f64) -> Result<ClientRun, String> {
    use mio::{Events, Interest, Poll, Token};
    struct Sock {
        s: mio::net::UdpSocket,
        next_seq: u64,
        /// Sequence numbers in flight (a datagram can overtake none on loopback, but one can be
        /// lost: then the ones after it still come, so keep them all).
        in_flight: std::collections::VecDeque<u64>,
        last_rx: Instant,
    }
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut socks = Vec::new();
    for i in 0..CLIENT_SOCKETS {
        let s = socket("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
        s.connect(server).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut s = mio::net::UdpSocket::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        socks.push(Sock {
            s,
            next_seq: (i as u64) << 48,
            in_flight: Default::default(),
            last_rx: Instant::now(),
        });
    }
    let mut events = Events::with_capacity(64);
    let mut outs: Vec<Vec<u8>> = Vec::new();
    let mut want = Vec::with_capacity(len);
    let mut bufs = vec![vec![0u8; 2048]; 64];
    let mut lens = vec![0usize; 64];
    let start = Instant::now();
    let count_from = start + WARMUP;
    let end = count_from + Duration::from_secs_f64(secs);
    let (mut counted, mut lost, mut late, mut total) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        for sk in socks.iter_mut() {
            // Take every echo there is, up to 64 a recvmmsg.
            loop {
                let got = match recv_many(&sk.s, &mut bufs, &mut lens) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("client recv: {e}")),
                };
                for k in 0..got {
                    let (buf, n) = (&bufs[k], lens[k]);
                    if n != len {
                        return Err(format!("echo of {n} bytes, sent {len}"));
                    }
                    let mut seq = [0u8; 8];
                    seq[..len.min(8)].copy_from_slice(&buf[..len.min(8)]);
                    let seq = u64::from_le_bytes(seq);
                    let Some(pos) = sk.in_flight.iter().position(|&s| s == seq) else {
                        if seq >= sk.next_seq {
                            return Err(format!("echo of datagram {seq:#x}, never sent"));
                        }
                        // Written off as lost, and then it came: late, not counted.
                        late += 1;
                        continue;
                    };
                    fill(&mut want, seq, len);
                    if buf[..n] != want[..] {
                        return Err(format!("echo of datagram {seq:#x} differs"));
                    }
                    // Those before it on this socket were lost (loopback keeps order).
                    lost += pos as u64;
                    sk.in_flight.drain(..=pos);
                    sk.last_rx = Instant::now();
                    total += 1;
                    if sk.last_rx >= count_from {
                        counted += 1;
                    }
                }
                if got < bufs.len() {
                    break;
                }
            }
            // Top up the window: one sendmmsg for all the datagrams missing.
            let missing = IN_FLIGHT - sk.in_flight.len();
            if missing > 0 {
                outs.truncate(missing);
                while outs.len() < missing {
                    outs.push(Vec::with_capacity(len));
                }
                for (k, o) in outs.iter_mut().enumerate() {
                    fill(o, sk.next_seq + k as u64, len);
                }
                match send_many(&sk.s, &outs) {
                    Ok(n) => {
                        for _ in 0..n {
                            sk.in_flight.push_back(sk.next_seq);
                            sk.next_seq += 1;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("client send: {e}")),
                }
            }
            if !sk.in_flight.is_empty() && now.duration_since(sk.last_rx) > LOST_AFTER {
                lost += sk.in_flight.len() as u64;
                sk.in_flight.clear();
                sk.last_rx = now;
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(5)))
            .map_err(|e| e.to_string())?;
    }
    Ok(ClientRun {
        rate: counted as f64 / secs,
        lost: lost.saturating_sub(late),
        total,
    })
}

/// `sendmmsg` of `datagrams` on a connected socket: how many went out.
fn send_many(s: &mio::net::UdpSocket, datagrams: &[Vec<u8>]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut iovs: Vec<libc::iovec> = datagrams
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr().cast_mut().cast(),
            iov_len: d.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid `mmsghdr`.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; iovs.len()];
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at one iovec over a live datagram, read by the kernel only.
    let rc = unsafe {
        libc::sendmmsg(
            s.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// `recvmmsg` into `bufs` on a connected socket: how many came, their lengths in `lens`.
fn recv_many(
    s: &mio::net::UdpSocket,
    bufs: &mut [Vec<u8>],
    lens: &mut [usize],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid `mmsghdr`.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; iovs.len()];
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at one iovec over a live, exclusively borrowed buffer.
    let rc = unsafe {
        libc::recvmmsg(
            s.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for (l, m) in lens.iter_mut().zip(&msgs[..rc as usize]) {
        *l = m.msg_len as usize;
    }
    Ok(rc as usize)
}

struct Row {
    rates: BTreeMap<Imp, Vec<f64>>,
    ratios: BTreeMap<Imp, Vec<f64>>,
    lost: BTreeMap<Imp, u64>,
    batch: BTreeMap<Imp, Vec<f64>>,
    /// Server CPU per echoed datagram, µs.
    cpu: BTreeMap<Imp, Vec<f64>>,
}

fn run(o: &Options) -> Result<String, String> {
    let started = run_info::utc_now();
    let load = CpuSnapshot::take();
    let mut rows: BTreeMap<usize, Row> = BTreeMap::new();
    for round in 0..o.rounds {
        for &len in &SIZES {
            let row = rows.entry(len).or_insert_with(|| Row {
                rates: BTreeMap::new(),
                ratios: BTreeMap::new(),
                lost: BTreeMap::new(),
                batch: BTreeMap::new(),
                cpu: BTreeMap::new(),
            });
            let mut order = Imp::ALL;
            order.rotate_left(round % Imp::ALL.len());
            let mut this: BTreeMap<Imp, f64> = BTreeMap::new();
            for imp in order {
                let server = start(imp)?;
                let cpu0 = server_cpu_ticks();
                let got = client(server.addr, len, o.secs);
                let cpu = server_cpu_ticks().saturating_sub(cpu0);
                let stats = server.stop()?;
                let got = got.map_err(|e| format!("{} at {len} B: {e}", imp.name()))?;
                // SAFETY: sysconf has no memory preconditions.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
                let us = cpu as f64 * 1e6 / hz / got.total.max(1) as f64;
                eprintln!(
                    "udp: round {} {len:>5} B {:<10} {:>9.0} datagrams/s, {us:.2} µs server \
                     CPU per datagram ({} lost)",
                    round + 1,
                    imp.name(),
                    got.rate,
                    got.lost
                );
                row.cpu.entry(imp).or_default().push(us);
                if let Some(s) = stats {
                    if s.batch_calls > 0 {
                        let avg = s.batch_datagrams as f64 / s.batch_calls as f64;
                        row.batch.entry(imp).or_default().push(avg);
                    }
                }
                this.insert(imp, got.rate);
                row.rates.entry(imp).or_default().push(got.rate);
                *row.lost.entry(imp).or_default() += got.lost;
            }
            let floor = this[&Imp::Mio];
            for (imp, rate) in this {
                row.ratios.entry(imp).or_default().push(rate / floor);
            }
        }
    }
    let other = run_info::other_load_text(CpuSnapshot::other_since(load), &[]);
    if !o.smoke && !o.quick {
        let path = common::results::results_dir().join("udp.json");
        bench_file(&rows, other.clone()).write(&path)?;
        eprintln!(
            "udp: results written to {} (for BENCHMARKS.md)",
            path.display()
        );
    }
    let mut md = String::new();
    let _ = writeln!(md, "# UDP echo\n");
    let _ = writeln!(
        md,
        "`{}`: {started}, kernel {}, {} cores, {} round(s) of {} s per server and size{}.{}\n",
        run_info::command("udp"),
        run_info::kernel_release(),
        run_info::cores(),
        o.rounds,
        o.secs,
        if o.quick { " (--quick)" } else { "" },
        other.map_or(String::new(), |t| format!(" Other load: {t}."))
    );
    let _ = writeln!(
        md,
        "Echoed datagrams per second, verified byte for byte by one mio client thread with {} \
         connected sockets x {} datagrams in flight; the servers: gaio's UDP echo loop \
         (`examples/common/udp.rs`: 64 `recv_from`s pending into their own 2 KiB buffers, each \
         batch corked: on epoll its sends go out by `sendmmsg` and the next receives by \
         `recvmmsg`; on io_uring a cork holds nothing) on each backend, and a hand-written mio loop (`recv_from`, \
         `send_to` back, until WouldBlock). Median over rounds; the ratio is to mio in the same \
         round (median of the per-round ratios). Lost: datagrams without an echo after {} ms \
         (socket buffers are {} MiB), over all rounds.\n",
        CLIENT_SOCKETS,
        IN_FLIGHT,
        LOST_AFTER.as_millis(),
        SOCKET_BUFFER >> 20
    );
    let _ = writeln!(
        md,
        "| size | gaio-epoll | gaio-uring | mio | epoll / mio | uring / mio | lost (epoll, uring, mio) | batch (epoll, uring) |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (len, row) in &rows {
        let rate = |i: Imp| median(&row.rates[&i]);
        let ratio = |i: Imp| median(&row.ratios[&i]);
        let batch = |i: Imp| {
            row.batch
                .get(&i)
                .map_or("-".to_string(), |b| format!("{:.1}", median(b)))
        };
        let _ = writeln!(
            md,
            "| {len} B | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {}, {}, {} | {}, {} |",
            rate(Imp::Epoll),
            rate(Imp::Uring),
            rate(Imp::Mio),
            ratio(Imp::Epoll),
            ratio(Imp::Uring),
            row.lost[&Imp::Epoll],
            row.lost[&Imp::Uring],
            row.lost[&Imp::Mio],
            batch(Imp::Epoll),
            batch(Imp::Uring),
        );
    }
    let _ = writeln!(
        md,
        "\nServer CPU per echoed datagram (µs, user + system of the echo loop thread and \
         gaio's threads, warm-up included; median over rounds): the cost behind the rate, \
         steadier than the rate on a loaded machine, where the server gets what share of a \
         core the scheduler leaves it.\n"
    );
    let _ = writeln!(
        md,
        "| size | gaio-epoll | gaio-uring | mio | epoll / mio | uring / mio |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for (len, row) in &rows {
        let c = |i: Imp| median(&row.cpu[&i]);
        let _ = writeln!(
            md,
            "| {len} B | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            c(Imp::Epoll),
            c(Imp::Uring),
            c(Imp::Mio),
            c(Imp::Epoll) / c(Imp::Mio),
            c(Imp::Uring) / c(Imp::Mio),
        );
    }
    let _ = writeln!(
        md,
        "\n`batch`: datagrams per `recvmmsg`/`sendmmsg` call (`Watcher::datagram_stats`), \
         median over rounds; on io_uring the ring thread makes those calls for queued \
         datagrams, and a RECVMSG/SENDMSG SQE (polling first) only for the one that has to \
         wait."
    );
    Ok(md)
}

/// The run in the results format `benches/compare.sh`'s report step puts into BENCHMARKS.md:
/// one table per datagram size, rates with the server CPU per datagram beside them.
fn bench_file(
    rows: &BTreeMap<usize, Row>,
    other_load: Option<String>,
) -> common::results::BenchFile {
    use common::results::{BenchFile, Better, ImplResult, Workload};
    use common::stats::median;
    let workloads = rows
        .iter()
        .map(|(len, row)| {
            let results = Imp::ALL
                .iter()
                .map(|imp| {
                    let rounds = row.rates.get(imp).cloned().unwrap_or_default();
                    ImplResult {
                        imp: imp.name().to_string(),
                        median: median(&rounds),
                        rounds,
                    }
                })
                .collect();
            let cpu = Imp::ALL
                .iter()
                .filter_map(|imp| {
                    let v = row.cpu.get(imp)?;
                    Some((imp.name().to_string(), serde_json::json!(median(v))))
                })
                .collect();
            Workload {
                name: format!("UDP echo, {len} B datagrams"),
                metric: "datagrams/s".into(),
                better: Better::Higher,
                results,
                extra: [("server CPU, µs per datagram".to_string(), cpu)]
                    .into_iter()
                    .collect(),
            }
        })
        .collect();
    BenchFile {
        bench: "udp".into(),
        date: run_info::utc_now(),
        kernel: run_info::kernel_release(),
        cores: run_info::cores(),
        command: run_info::command("udp"),
        other_load,
        workloads,
        notes: vec![
            "UDP echo (benches/udp.rs): the udp-echo example's loop on gaio against a \
             hand-written mio loop, driven by a verifying sendmmsg/recvmmsg client on its own \
             thread (4 sockets x 64 datagrams in flight); benches/results/udp.md has the \
             run's tables."
                .to_string(),
        ],
    }
}

fn main() -> ExitCode {
    let result = parse().and_then(|o| {
        let md = run(&o)?;
        print!("{md}");
        if o.smoke && o.out.is_none() {
            eprintln!("udp: smoke run (no arguments): no report written");
            return Ok(());
        }
        let path = o
            .out
            .clone()
            .unwrap_or_else(|| format!("{}/benches/results/udp.md", env!("CARGO_MANIFEST_DIR")));
        std::fs::write(&path, md).map_err(|e| format!("{path}: {e}"))?;
        eprintln!("udp: report written to {path}");
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp: {e}");
            ExitCode::FAILURE
        }
    }
}
