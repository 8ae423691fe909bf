//! Push server: the port of Go gaio's `examples/push-server`.
//!
//! Clients connect and are sent a line on a timer: every `--interval-ms` (100 ms by default)
//! the server writes `<sequence> <unix time in ms>\n` to every connected client. The line is
//! built once per tick as one `Arc<[u8]>` and every client's write takes a clone of it: the
//! kernel reads the same bytes for all of them, none is copied (as Go's example writes one
//! `[]byte` to all; `--copy` gives each client a `Vec` of its own instead, to compare). It reads from
//! each client only to notice when it goes away (a swap-buffer read, which holds no memory
//! while it waits; whatever a client sends is discarded). Connections are freed on EOF, on a
//! write or read error, and when a client falls too far behind. Runs until interrupted.
//!
//! ```text
//! cargo run --release --example push-server -- --addr 127.0.0.1:7001
//! # in another terminal:
//! nc 127.0.0.1 7001
//! ```
//!
//! The first line on stdout is always `listening on <addr>` (flushed at once); everything else
//! goes to stderr.
//!
//! Options:
//! - `--addr HOST:PORT`: where to listen (default `127.0.0.1:0`, any free port);
//! - `--interval-ms N`: time between pushes (default 100);
//! - `--backend epoll|uring|auto`: the gaio backend (default: `GAIO_BACKEND`, else auto);
//! - `--write-timeout-ms N`: a push not fully written within this time ends the connection
//!   (default 5000);
//! - `--max-pending N`: a client with this many pushes still unwritten is too slow and is
//!   disconnected (default 64), so one stalled reader cannot make the server queue without bound;
//! - `--pad BYTES`: pad each line with `.` to at least this many bytes (newline included), to
//!   push bigger messages;
//! - `--copy`: write a `Vec` copy of the line to each client instead of the shared `Arc<[u8]>`;
//! - `--push-once-at N`: push a single line once N clients are connected, wait until every
//!   write completed, print `bench: ...` (the time from the first write submitted to the last
//!   completed, and the server's peak RSS) and exit (what `--bench` runs);
//! - `--bench N`: the bench mode. Runs this server twice in child processes (shared `Arc`,
//!   then `--copy`) with `--push-once-at N --pad BYTES` (`--bench-size`, default 64 KiB),
//!   connects N clients (one `mio` thread, every byte checked) and reports, for each, the
//!   server's peak RSS and write time and the clients' receive time, side by side
//!   (`examples/push/bench.rs`);
//! - `--verbose`: log connections opened and closed to stderr.
//!
//! Layout: an accept thread takes new connections, hands each to the watcher, submits its first
//! read and passes the `Conn` to the main thread over a channel, waking the main loop with the
//! watcher's `Waker`. The main thread owns the set of clients and runs one loop:
//! `wait_io_timeout` until the next tick, handle the results, adopt new clients, and push when
//! the tick is due.

mod common;
mod push;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Args;
use gaio::{Backend, Conn, Error, OpResult, OpType, Watcher};

const USAGE: &str = "\
usage: push-server [OPTIONS]

Pushes a line to every connected client on a timer (Go gaio's examples/push-server). The
first line on stdout is `listening on <addr>`; it runs until interrupted.

options:
  --addr HOST:PORT                where to listen (default 127.0.0.1:0, any free port)
  --interval-ms N                 time between pushes, in ms (default 100, at least 1)
  --backend epoll|uring|auto      the gaio backend (default: GAIO_BACKEND, else auto)
  --write-timeout-ms N            a push not written within N ms ends the connection
                                  (default 5000)
  --max-pending N                 a client with N pushes still unwritten is too slow and is
                                  dropped (default 64, at least 1)
  --pad BYTES                     pad each line with '.' to at least BYTES, newline included
                                  (default 0)
  --copy                          write a Vec copy of the line to each client instead of one
                                  shared Arc<[u8]>
  --push-once-at N                push once when N clients are connected, wait for every
                                  write, print `bench: ...` on stdout and exit
  --bench N                       bench mode: run the server twice (shared, --copy) against N
                                  clients and report peak RSS and time side by side
  --bench-size BYTES              the message --bench pushes (default 65536)
  -v, --verbose                   log connections opened and closed to stderr
  -h, --help                      print this help";

struct Options {
    addr: String,
    interval: Duration,
    backend: Option<Backend>,
    write_timeout: Duration,
    max_pending: usize,
    pad: usize,
    copy: bool,
    push_once_at: Option<usize>,
    bench: Option<usize>,
    bench_size: usize,
    verbose: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:0".into(),
        interval: Duration::from_millis(100),
        backend: None,
        write_timeout: Duration::from_secs(5),
        max_pending: 64,
        pad: 0,
        copy: false,
        push_once_at: None,
        bench: None,
        bench_size: 64 << 10,
        verbose: false,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--addr" => o.addr = args.value(&flag)?,
            "--interval-ms" => o.interval = Duration::from_millis(args.parse(&flag)?),
            "--backend" => o.backend = Some(args.parse(&flag)?),
            "--write-timeout-ms" => o.write_timeout = Duration::from_millis(args.parse(&flag)?),
            "--max-pending" => o.max_pending = args.parse(&flag)?,
            "--pad" => o.pad = args.parse(&flag)?,
            "--copy" => o.copy = true,
            "--push-once-at" => o.push_once_at = Some(args.parse(&flag)?),
            "--bench" => o.bench = Some(args.parse(&flag)?),
            "--bench-size" => o.bench_size = args.parse(&flag)?,
            "--verbose" | "-v" => {
                o.verbose = true;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if o.interval.is_zero() {
        return Err("--interval-ms must be at least 1".into());
    }
    if o.max_pending == 0 {
        return Err("--max-pending must be at least 1".into());
    }
    if o.push_once_at == Some(0) || o.bench == Some(0) {
        return Err("--push-once-at and --bench take at least 1 client".into());
    }
    if o.bench_size < 64 {
        return Err("--bench-size must be at least 64 bytes".into());
    }
    Ok(o)
}

/// What the main loop knows about one client.
struct Client {
    /// Pushes submitted and not yet completed.
    pending: usize,
}

/// The push loop's state: the watcher, the clients, and counters for the status line.
struct Pusher {
    w: Arc<Watcher<()>>,
    clients: HashMap<Conn, Client>,
    opts: Options,
    seq: u64,
    /// `--push-once-at`: when the push started and how many of its writes are still pending.
    once: Option<(Instant, usize)>,
}

impl Pusher {
    /// Handles one result. Reads only tell us the client is alive (its bytes are discarded);
    /// any error, on a read or a write, ends the connection.
    fn on_result(&mut self, res: OpResult<()>) {
        if let Some(err) = &res.error {
            self.drop_client(&res.conn, err);
            return;
        }
        match res.op {
            OpType::Read => {
                // Drop the swap slice before reading again so its space is reused.
                let OpResult { conn, buffer, .. } = res;
                drop(buffer);
                if let Err(e) = self.w.read((), &conn, None) {
                    self.drop_client(&conn, &e.error);
                }
            }
            OpType::Write => {
                if let Some(c) = self.clients.get_mut(&res.conn) {
                    c.pending = c.pending.saturating_sub(1);
                }
                if let Some((_, left)) = &mut self.once {
                    *left = left.saturating_sub(1);
                }
            }
            _ => {}
        }
    }

    /// Forgets a client and frees its connection (its pending operations then complete with
    /// `ClosedPipe`, which land here again and are ignored).
    fn drop_client(&mut self, conn: &Conn, why: &Error) {
        let client = self.clients.remove(conn);
        let known = client.is_some();
        if let (Some((_, left)), Some(c)) = (&mut self.once, &client) {
            // Its pushes will not complete: count them as done.
            *left = left.saturating_sub(c.pending);
        }
        if matches!(why, Error::ClosedPipe | Error::WatcherClosed) && !known {
            return; // the echo of our own free
        }
        if known && (self.opts.verbose || !common::is_normal_close(why)) {
            eprintln!("client {:#x}: {why}; disconnected", conn.key());
        }
        let _ = self.w.free(conn);
    }

    /// Writes the current tick's line to every client.
    fn push(&mut self) {
        self.seq += 1;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut line = format!("{} {}", self.seq, unix_ms).into_bytes();
        if line.len() + 1 < self.opts.pad {
            line.resize(self.opts.pad - 1, b'.');
        }
        line.push(b'\n');
        // One buffer for every client: each write takes a reference, the kernel reads the
        // same bytes (`--copy`: a Vec per client, for comparison).
        let shared: Arc<[u8]> = Arc::from(line);
        let deadline = Instant::now() + self.opts.write_timeout;
        // Clients to disconnect: `None` for too slow, else the error that refused the push.
        let mut gone: Vec<(Conn, Option<Error>)> = Vec::new();
        for (conn, client) in self.clients.iter_mut() {
            if client.pending >= self.opts.max_pending {
                gone.push((conn.clone(), None));
                continue;
            }
            let buf: gaio::Buffer = if self.opts.copy {
                shared.to_vec().into()
            } else {
                shared.clone().into()
            };
            match self.w.write_timeout((), conn, buf, deadline) {
                Ok(_) => client.pending += 1,
                Err(e) => gone.push((conn.clone(), Some(e.error))),
            }
        }
        for (conn, why) in gone {
            match why {
                Some(err) => self.drop_client(&conn, &err),
                None => {
                    eprintln!(
                        "client {:#x}: {} pushes unwritten; too slow, disconnected",
                        conn.key(),
                        self.opts.max_pending
                    );
                    self.clients.remove(&conn);
                    let _ = self.w.free(&conn);
                }
            }
        }
    }
}

/// Accepts connections, hands each to the watcher, starts its read, and passes it to the main
/// loop. Ends when the watcher closes or the main loop is gone.
fn accept_loop(listener: TcpListener, w: &Watcher<()>, tx: mpsc::Sender<Conn>, verbose: bool) {
    let waker = w.waker();
    for incoming in listener.incoming() {
        let stream = match incoming {
            Ok(s) => s,
            Err(e) => {
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    eprintln!("accept: {e}; retrying in 100 ms");
                    std::thread::sleep(Duration::from_millis(100));
                } else if !matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EINTR)) {
                    eprintln!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let _ = stream.set_nodelay(true);
        let conn = match w.watch(&stream) {
            Ok(c) => c,
            Err(Error::WatcherClosed) => return,
            Err(e) => {
                eprintln!("watch {peer:?}: {e}");
                continue;
            }
        };
        drop(stream); // the watcher has its own descriptor
        if verbose {
            eprintln!("client {:#x}: connected from {peer:?}", conn.key());
        }
        // The read notices EOF. If the client is gone before the main loop adopts the Conn,
        // the main loop sees the error first and frees it; it then skips the freed Conn.
        if w.read((), &conn, None).is_err() {
            let _ = w.free(&conn);
            continue;
        }
        if tx.send(conn).is_err() {
            return;
        }
        // Let the main loop adopt it now rather than at its next tick.
        if waker.wake().is_err() {
            return;
        }
    }
}

fn run(opts: Options) -> Result<(), String> {
    if let Some(n) = opts.bench {
        return push::bench::run(n, opts.bench_size, opts.backend);
    }
    let addr = common::resolve(&opts.addr)?;
    let w: Arc<Watcher<()>> = Arc::new(common::server_watcher(Watcher::builder(), opts.backend)?);
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
        "push-server: backend {}, a push every {:?}",
        w.backend(),
        opts.interval
    );

    let (tx, rx) = mpsc::channel::<Conn>();
    {
        let (w, verbose) = (w.clone(), opts.verbose);
        std::thread::Builder::new()
            .name("push-accept".into())
            .spawn(move || accept_loop(listener, &w, tx, verbose))
            .map_err(|e| format!("cannot start the accept thread: {e}"))?;
    }

    let interval = opts.interval;
    let mut p = Pusher {
        w: w.clone(),
        clients: HashMap::new(),
        opts,
        seq: 0,
        once: None,
    };
    let mut next_tick = Instant::now() + interval;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let batch = w
            .wait_io_timeout(wait)
            .map_err(|e| format!("wait_io: {e}"))?;
        for res in batch {
            p.on_result(res);
        }
        // Adopt the connections accepted since the last pass.
        for conn in rx.try_iter() {
            if !conn.is_freed() {
                p.clients.insert(conn, Client { pending: 0 });
            }
        }
        if let Some(n) = p.opts.push_once_at {
            match p.once {
                None if p.clients.len() >= n => {
                    let started = Instant::now();
                    p.once = Some((started, n));
                    p.push();
                    p.once = p
                        .once
                        .map(|(t, _)| (t, p.clients.values().map(|c| c.pending).sum()));
                }
                Some((started, 0)) => return report_once(&p, started.elapsed()),
                _ => {}
            }
            next_tick = Instant::now() + Duration::from_secs(3600);
            continue;
        }
        let now = Instant::now();
        if now >= next_tick {
            p.push();
            next_tick += interval;
            if next_tick <= now {
                // We fell behind (a pause, a huge batch): skip the missed ticks.
                next_tick = now + interval;
            }
        }
    }
}

/// `--push-once-at`: every write of the one push has completed. Prints the figures `--bench`
/// reads and ends the process.
fn report_once(p: &Pusher, elapsed: Duration) -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "bench: clients {} buffer {} write_us {} vm_hwm_kib {} vm_rss_kib {}",
        p.clients.len(),
        if p.opts.copy { "copy" } else { "shared" },
        elapsed.as_micros(),
        kib("VmHWM:"),
        kib("VmRSS:"),
    )
    .and_then(|()| out.flush())
    .map_err(|e| format!("stdout: {e}"))?;
    std::process::exit(0)
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("push-server: {e}");
            ExitCode::FAILURE
        }
    }
}
