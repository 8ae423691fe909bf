//! `accept` and `connect` racing `cancel`, a deadline and `free` (issue 12; monoio's
//! `tests/fd_leak.rs`, tokio#7979), on both backends: thousands of rounds, bounded in count
//! and time (10 000 rounds or 4 s per test; about half a second here). In every round the
//! request's completion (a client arriving, a connection being established) and its ending
//! race; half the connects go to a listener whose backlog is full, so they are still in
//! progress (in the kernel, on io_uring) when they are cancelled or time out. Checked:
//! - exactly one result per accepted submission, with the id it was submitted under, and none
//!   after the end;
//! - a result is either the real one (an accepted or connected connection, which works) or
//!   the ending's error (`Canceled`, `Deadline`, `ClosedPipe`), never both, never neither;
//! - no descriptor is leaked: once every connection handle is dropped and the loop has
//!   released them, `/proc/self/fd` is what it was (an accept that completed in the kernel
//!   after its cancel must have its new descriptor closed or delivered). The descriptor count
//!   needs a process of its own (cargo-nextest); under `cargo test` the rest still runs.

#[macro_use]
mod util;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gaio::{Conn, Error, OpId, OpResult, OpType, Watcher};

/// Rounds per test, unless the time budget ends first.
const ROUNDS: u32 = 10_000;
/// Time budget for the rounds of one test (the drain afterwards is bounded separately).
const BUDGET: Duration = Duration::from_secs(4);
const T10: Duration = Duration::from_secs(10);

/// How a round ends its request, besides completing.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Cancel,
    Deadline,
    /// Free the listener (accept only; the connect's socket has no handle before its result).
    Free,
    None,
}

/// What the rounds saw, per kind of result.
#[derive(Debug, Default)]
struct Tally {
    completed: u32,
    canceled: u32,
    deadline: u32,
    closed_pipe: u32,
    other: u32,
}

/// Collects results into `pending` (by id), panicking on a duplicate or unknown id, and
/// returns them; the caller classifies.
fn take<C: Send + 'static>(
    w: &Watcher<C>,
    pending: &mut HashMap<OpId, u32>,
    limit: Duration,
) -> Vec<OpResult<C>> {
    let mut out = Vec::new();
    for r in w.wait_io_timeout(limit).expect("wait_io") {
        assert!(
            pending.remove(&r.id).is_some(),
            "a second result, or one never submitted: {r:?}"
        );
        out.push(r);
    }
    out
}

/// Waits (bounded) until every id in `pending` has its result.
fn drain<C: Send + 'static>(w: &Watcher<C>, pending: &mut HashMap<OpId, u32>) -> Vec<OpResult<C>> {
    let start = Instant::now();
    let mut out = Vec::new();
    while !pending.is_empty() {
        assert!(
            start.elapsed() < T10,
            "{} requests still without a result: {:?}",
            pending.len(),
            pending.values().take(10).collect::<Vec<_>>()
        );
        out.extend(take(w, pending, Duration::from_millis(100)));
    }
    util::expect_quiet(w, Duration::from_millis(50));
    out
}

/// A thread accepting (and dropping at once) every connection on `ln` until stopped.
struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u32>>,
}

impl Acceptor {
    fn start() -> Acceptor {
        let ln = util::listen();
        let addr = ln.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while let Ok((c, _)) = ln.accept() {
                if s.load(Ordering::Acquire) {
                    break;
                }
                drop(c);
                n += 1;
            }
            n
        });
        Acceptor {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept with one more connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listener nobody accepts on, with its backlog full: a connect to it stays in progress.
struct Stuck {
    addr: SocketAddr,
    _ln: socket2::Socket,
    _fill: Vec<socket2::Socket>,
}

impl Stuck {
    fn new() -> Stuck {
        use socket2::{Domain, Socket, Type};
        let ln = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        ln.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        ln.listen(0).unwrap();
        let addr = ln.local_addr().unwrap().as_socket().unwrap();
        // Connections until one no longer completes within 50 ms: the backlog is full.
        let mut fill = Vec::new();
        loop {
            let c = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            let done = c
                .connect_timeout(&addr.into(), Duration::from_millis(50))
                .is_ok();
            fill.push(c);
            if !done || fill.len() > 64 {
                break;
            }
        }
        Stuck {
            addr,
            _ln: ln,
            _fill: fill,
        }
    }
}

/// A random ending and, for `Deadline`, how far ahead (0-300 µs, sometimes in the past).
fn pick(rng: &mut util::XorShift, free_ok: bool) -> (Ending, Option<Instant>) {
    let now = Instant::now();
    match rng.next_u64() % 8 {
        0..=2 => (Ending::Cancel, None),
        3..=4 => {
            let at = if rng.next_u64() % 4 == 0 {
                now.checked_sub(Duration::from_millis(1)).unwrap_or(now)
            } else {
                now + Duration::from_micros(rng.next_u64() % 300)
            };
            (Ending::Deadline, Some(at))
        }
        5 if free_ok => (Ending::Free, None),
        _ => (Ending::None, None),
    }
}

backend_tests! {
    /// `accept` (or `accept_timeout`) on a watched listener while a client connects, raced by
    /// `cancel`, a deadline, `free` of the listener, or nothing. Two accepts are pending per
    /// round half the time, so an ending meets a queue, not only its head.
    fn accept_races_cancel_deadline_free(backend) {
        let counting = util::own_process("accept_races_cancel_deadline_free");
        let fds0 = util::open_fds();
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let fds1 = util::open_fds();
        let mut rng = util::XorShift::new(0x5eed_acc3 ^ backend as u64);
        let (mut ln, mut lconn) = new_listener(&w);
        let mut pending: HashMap<OpId, u32> = HashMap::new();
        let mut accepted: Vec<Conn> = Vec::new();
        let mut clients: Vec<TcpStream> = Vec::new();
        let mut tally = Tally::default();
        let start = Instant::now();
        let mut rounds = 0;
        while rounds < ROUNDS && start.elapsed() < BUDGET {
            let (ending, deadline) = pick(&mut rng, true);
            let n = 1 + (rng.next_u64() % 2) as usize;
            let mut ids = Vec::new();
            for _ in 0..n {
                let id = match deadline {
                    Some(at) => w.accept_timeout(rounds, &lconn, at),
                    None => w.accept(rounds, &lconn),
                }
                .unwrap_or_else(|e| panic!("round {rounds}: accept refused: {:?}", e.error));
                pending.insert(id, rounds);
                ids.push(id);
            }
            // The completion: a client arrives (non-blocking connect to loopback completes
            // through the backlog at once).
            clients.push(util::dial(ln.local_addr().unwrap()));
            match ending {
                Ending::Cancel => {
                    for id in &ids {
                        let _ = w.cancel(*id).expect("cancel");
                    }
                }
                Ending::Free => {
                    w.free(&lconn).unwrap();
                    // A new listener for the next rounds (the old one closes with the free).
                    (ln, lconn) = new_listener(&w);
                }
                Ending::Deadline | Ending::None => {}
            }
            for r in take(&w, &mut pending, Duration::ZERO) {
                classify_accept(r, &mut tally, &mut accepted);
            }
            // Keep the round's requests from piling up: at most a few dozen pending.
            if pending.len() > 32 {
                for id in pending.keys().copied().collect::<Vec<_>>() {
                    let _ = w.cancel(id).expect("cancel");
                }
            }
            if accepted.len() > 64 {
                accepted.clear();
                clients.clear();
            }
            rounds += 1;
        }
        // The end: cancel what is left, collect every result.
        for id in pending.keys().copied().collect::<Vec<_>>() {
            let _ = w.cancel(id).expect("cancel");
        }
        for r in drain(&w, &mut pending) {
            classify_accept(r, &mut tally, &mut accepted);
        }
        println!("{backend}: {rounds} rounds in {:?}: {tally:?}", start.elapsed());
        assert_eq!(tally.other, 0, "{backend}: unexpected results");
        assert!(tally.completed > 0, "{backend}: no accept ever completed");
        // An accepted connection works.
        if let Some(c) = accepted.last() {
            w.write(0, c, b"x".to_vec()).unwrap();
            let mut got = None;
            util::wait_until(&w, T10, "a write on an accepted connection", |r| {
                got = Some(r);
                true
            });
            let r = got.unwrap();
            assert!(r.error.is_none() && r.op == OpType::Write, "{r:?}");
        }
        drop((accepted, clients, lconn, ln));
        let probe = released(&w);
        if counting {
            util::assert_fds(&fds1, fds1.len() + 2, "after the accept rounds (and the probe)");
            drop(probe);
            drop(w);
            util::assert_fds(&fds0, fds0.len(), "after the accept rounds, watcher dropped");
        }
    }

    /// `connect` to a listening address while a thread accepts, raced by `cancel`, a deadline
    /// or nothing; every connected socket (each result's `conn`, whatever its error) is
    /// dropped, and none leaks.
    fn connect_races_cancel_deadline(backend) {
        let counting = util::own_process("connect_races_cancel_deadline");
        let fds0 = util::open_fds();
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let fds1 = util::open_fds();
        let acceptor = Acceptor::start();
        let stuck = Stuck::new();
        let mut rng = util::XorShift::new(0xc0ec7 ^ backend as u64);
        let mut pending: HashMap<OpId, u32> = HashMap::new();
        let mut tally = Tally::default();
        let mut last_ok: Option<Conn> = None;
        let start = Instant::now();
        let mut rounds = 0;
        while rounds < ROUNDS && start.elapsed() < BUDGET {
            let (ending, deadline) = pick(&mut rng, false);
            // Half the rounds to a listener that accepts, half to one whose backlog is full,
            // where the connect stays in progress (SYNs dropped) until its ending.
            let to = if rng.next_u64() % 2 == 0 { acceptor.addr } else { stuck.addr };
            let id = w
                .connect(rounds, to, deadline)
                .unwrap_or_else(|e| panic!("round {rounds}: connect refused: {:?}", e.error));
            pending.insert(id, rounds);
            if let Ending::Cancel = ending {
                if rng.next_u64() % 2 == 0 {
                    std::hint::spin_loop();
                }
                let _ = w.cancel(id).expect("cancel");
            }
            for r in take(&w, &mut pending, Duration::ZERO) {
                classify_connect(r, &mut tally, &mut last_ok);
            }
            if pending.len() > 32 {
                for id in pending.keys().copied().collect::<Vec<_>>() {
                    let _ = w.cancel(id).expect("cancel");
                }
            }
            rounds += 1;
        }
        for id in pending.keys().copied().collect::<Vec<_>>() {
            let _ = w.cancel(id).expect("cancel");
        }
        for r in drain(&w, &mut pending) {
            classify_connect(r, &mut tally, &mut last_ok);
        }
        println!("{backend}: {rounds} rounds in {:?}: {tally:?}", start.elapsed());
        assert_eq!(tally.other, 0, "{backend}: unexpected results");
        assert!(tally.completed > 0, "{backend}: no connect ever completed");
        // A connected socket works (the acceptor has dropped its end: the write may
        // succeed or see the reset, but it gets one result).
        if let Some(c) = last_ok.take() {
            w.write(0, &c, b"x".to_vec()).unwrap();
            util::wait_until(&w, T10, "a write on a connected socket", |r| r.op == OpType::Write);
        }
        drop((acceptor, stuck));
        let probe = released(&w);
        if counting {
            util::assert_fds(&fds1, fds1.len() + 2, "after the connect rounds (and the probe)");
            drop(probe);
            drop(w);
            util::assert_fds(&fds0, fds0.len(), "after the connect rounds, watcher dropped");
        }
    }
}

fn new_listener(w: &Watcher<u32>) -> (TcpListener, Conn) {
    let ln = util::listen();
    let c = w.watch(&ln).unwrap();
    (ln, c)
}

fn classify_accept(r: OpResult<u32>, t: &mut Tally, accepted: &mut Vec<Conn>) {
    assert_eq!(r.op, OpType::Accept);
    match &r.error {
        None => {
            t.completed += 1;
            accepted.push(
                r.accepted
                    .expect("a completed accept carries its connection"),
            );
        }
        Some(e) => {
            assert!(
                r.accepted.is_none(),
                "an ended accept carries a connection: {r:?}"
            );
            match e {
                Error::Canceled => t.canceled += 1,
                Error::Deadline => t.deadline += 1,
                Error::ClosedPipe => t.closed_pipe += 1,
                _ => {
                    eprintln!("unexpected accept result: {r:?}");
                    t.other += 1;
                }
            }
        }
    }
}

fn classify_connect(r: OpResult<u32>, t: &mut Tally, last_ok: &mut Option<Conn>) {
    assert_eq!(r.op, OpType::Connect);
    match &r.error {
        None => {
            t.completed += 1;
            *last_ok = Some(r.conn);
        }
        Some(Error::Canceled) => t.canceled += 1,
        Some(Error::Deadline) => t.deadline += 1,
        Some(e) => {
            eprintln!("unexpected connect result: {r:?} ({e})");
            t.other += 1;
        }
    }
}

/// Makes sure the loop has released every connection freed or dropped before: a round trip
/// through it (it handles frees and handle drops in order, so once it has answered the
/// probe's cancel they are done), then the gc counters agree. Returns the probe, whose two
/// descriptors (the watcher's and the peer's) stay open while it lives.
fn released(w: &Watcher<u32>) -> util::Probe {
    let mut probe = util::Probe::new(w);
    let others = probe.sync(w, u32::MAX);
    assert!(others.is_empty(), "results after the end: {others:?}");
    let g = w.gc();
    assert_eq!(
        g.found, g.closed,
        "dropped connections not yet released: {g:?}"
    );
    probe
}
