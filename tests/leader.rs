//! Stress tests for concurrent consumers: several threads in `wait_io` / `wait_io_timeout` at
//! once (on epoll one of them leads: it waits in `epoll_wait` itself and serves readiness,
//! while the poller stands aside), consumers that stop calling, `close` while consumers sleep,
//! `cancel` and `free` racing with whoever serves readiness, many watchers in one process.
//!
//! The properties checked are the library's promises, on both backends: every accepted
//! submission yields exactly one result; bytes arrive intact and in FIFO order per connection
//! and direction; a request that waits for readiness progresses without anyone calling
//! `wait_io`; `close` wakes every consumer and leaves no descriptor open.
//!
//! Every wait is bounded: helper threads are joined through [`Worker::join_within`], which
//! fails the test instead of hanging it.

#[macro_use]
mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gaio::{Conn, Error, OpResult, OpType, Watcher};
use util::XorShift;

const T10: Duration = Duration::from_secs(10);
const T20: Duration = Duration::from_secs(20);

/// A helper thread that can be joined with a time limit.
struct Worker<T> {
    handle: JoinHandle<T>,
    done: mpsc::Receiver<()>,
    name: String,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(name: impl Into<String>, f: impl FnOnce() -> T + Send + 'static) -> Worker<T> {
        let name = name.into();
        let (tx, done) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let out = f();
                let _ = tx.send(());
                out
            })
            .expect("spawn");
        Worker { handle, done, name }
    }

    /// Joins the thread, panicking if it has not finished within `limit` (a hang), and
    /// re-raising its panic.
    fn join_within(self, limit: Duration) -> T {
        match self.done.recv_timeout(limit) {
            // Disconnected: the thread panicked before sending; join reports it.
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("thread {} still running after {limit:?}", self.name)
            }
        }
        match self.handle.join() {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// A random wait_io_timeout: zero, sub-millisecond, or a few milliseconds.
fn short_timeout(rng: &mut XorShift) -> Duration {
    match rng.next_u64() % 6 {
        0 => Duration::ZERO,
        1 => Duration::from_nanos(1),
        2 => Duration::from_micros(rng.next_u64() % 500),
        3 => Duration::from_micros(999),
        _ => Duration::from_micros(1000 + rng.next_u64() % 4000),
    }
}

/// A socketpair with both ends taken over by `w`.
fn watched_pair<C: Send + 'static>(w: &Watcher<C>) -> (Conn, Conn) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let pair = (w.watch(&a).expect("watch"), w.watch(&b).expect("watch"));
    drop((a, b));
    pair
}

/// A socketpair with one end taken over by `w`: `(conn, peer)`.
fn half_watched_pair<C: Send + 'static>(w: &Watcher<C>) -> (Conn, UnixStream) {
    let (a, peer) = UnixStream::pair().expect("socketpair");
    let conn = w.watch(&a).expect("watch");
    drop(a);
    (conn, peer)
}

// Context of the routed tests: submitter (8 bits), pair (16), message (24), kind (8).
const KIND_WRITE: u64 = 1;
const KIND_READ: u64 = 2;

fn ctx(sub: usize, pair: usize, msg: usize, kind: u64) -> u64 {
    ((sub as u64) << 56) | ((pair as u64) << 32) | ((msg as u64) << 8) | kind
}

fn ctx_sub(c: u64) -> usize {
    (c >> 56) as usize
}

/// Bytes of message `msg` of pair `pair` of submitter `sub`.
fn payload(sub: usize, pair: usize, msg: usize, len: usize) -> Vec<u8> {
    util::random_bytes(len, ctx(sub, pair, msg, 0x5a) ^ 0x9e37_79b9_7f4a_7c15)
}

/// A consumer that routes every result to its submitter until the watcher is closed.
/// `timeouts: None` calls `wait_io` (no limit); `Some(seed)` loops `wait_io_timeout` with random
/// short limits. Returns how many results it routed and how many had no one to go to.
fn routing_consumer(
    w: Arc<Watcher<u64>>,
    routes: Vec<mpsc::Sender<OpResult<u64>>>,
    timeouts: Option<u64>,
) -> (usize, usize) {
    let mut rng = timeouts.map(XorShift::new);
    let (mut routed, mut stray) = (0, 0);
    loop {
        let batch = match rng.as_mut() {
            None => w.wait_io(),
            Some(r) => w.wait_io_timeout(short_timeout(r)),
        };
        let batch = match batch {
            Ok(b) => b,
            Err(Error::WatcherClosed) => return (routed, stray),
            Err(e) => panic!("wait_io: {e}"),
        };
        for res in batch {
            // `is_ok`: a failed send's error holds the whole result, too large to pass on.
            match routes
                .get(ctx_sub(res.context))
                .map(|tx| tx.send(res).is_ok())
            {
                Some(true) => routed += 1,
                _ => stray += 1,
            }
        }
    }
}

backend_tests! {
    /// Three consumers at once (one in `wait_io` without a limit, two looping
    /// `wait_io_timeout` with random limits from zero to 5 ms) while two submitters move
    /// random-sized messages (up to 512 KiB, beyond a socket buffer) both ways over socketpairs
    /// whose ends are both watched, two messages back to back per pair so that FIFO order
    /// matters. Every byte is checked, every request yields exactly one result, and nothing
    /// waits forever (each batch of results must arrive within 20 s).
    fn consumers_with_random_timeouts(backend) {
        const SUBMITTERS: usize = 2;
        const PAIRS: usize = 12;
        const ROUNDS: usize = 6;
        let Some(w) = util::watcher_for::<u64>(backend) else { return };
        let w = Arc::new(w);
        let (routes, inboxes): (Vec<_>, Vec<_>) =
            (0..SUBMITTERS).map(|_| mpsc::channel::<OpResult<u64>>()).unzip();
        let consumers: Vec<Worker<(usize, usize)>> = (0..3)
            .map(|i| {
                let (w, routes) = (w.clone(), routes.clone());
                let timeouts = (i > 0).then_some(0x1234 + i as u64);
                Worker::spawn(format!("consumer{i}"), move || routing_consumer(w, routes, timeouts))
            })
            .collect();
        drop(routes);
        let submitters: Vec<Worker<usize>> = inboxes
            .into_iter()
            .enumerate()
            .map(|(sub, inbox)| {
                let w = w.clone();
                Worker::spawn(format!("submitter{sub}"), move || {
                    let pairs: Vec<(Conn, Conn)> = (0..PAIRS).map(|_| watched_pair(&w)).collect();
                    let mut rng = XorShift::new(77 + sub as u64);
                    let mut done = 0;
                    for round in 0..ROUNDS {
                        // Expected: ctx -> bytes (reads) or length (writes).
                        let mut want: HashMap<u64, Vec<u8>> = HashMap::new();
                        for (p, (a, b)) in pairs.iter().enumerate() {
                            let (from, to) = if round % 2 == 0 { (a, b) } else { (b, a) };
                            let reads_first = rng.next_u64() % 2 == 0;
                            let msgs: Vec<(usize, usize)> = (0..2)
                                .map(|m| {
                                    let len = 1 + (rng.next_u64() as usize % (1 << (1 + rng.next_u64() % 19)));
                                    (round * 2 + m, len)
                                })
                                .collect();
                            let submit_reads = |want: &mut HashMap<u64, Vec<u8>>| {
                                for &(m, len) in &msgs {
                                    let c = ctx(sub, p, m, KIND_READ);
                                    w.read_full(c, to, vec![0u8; len], None)
                                        .unwrap_or_else(|e| panic!("read_full refused: {}", e.error));
                                    want.insert(c, payload(sub, p, m, len));
                                }
                            };
                            if reads_first {
                                submit_reads(&mut want);
                            }
                            for &(m, len) in &msgs {
                                let c = ctx(sub, p, m, KIND_WRITE);
                                w.write(c, from, payload(sub, p, m, len))
                                    .unwrap_or_else(|e| panic!("write refused: {}", e.error));
                                want.insert(c, vec![0u8; len]);
                            }
                            if !reads_first {
                                submit_reads(&mut want);
                            }
                        }
                        let deadline = Instant::now() + T20;
                        while !want.is_empty() {
                            let left = deadline.saturating_duration_since(Instant::now());
                            let res = inbox.recv_timeout(left).unwrap_or_else(|_| {
                                panic!(
                                    "submitter {sub} round {round}: {} results missing after {T20:?}",
                                    want.len()
                                )
                            });
                            let expect = want.remove(&res.context).unwrap_or_else(|| {
                                panic!("unexpected or second result {:?}", res.context)
                            });
                            assert!(res.error.is_none(), "{res:?}");
                            assert_eq!(res.size, expect.len(), "{res:?}");
                            if res.context & 0xff == KIND_READ {
                                assert_eq!(res.op, OpType::ReadFull);
                                let got = util::user_buf_ref(&res.buffer);
                                if let Some(at) = util::first_difference(got, &expect) {
                                    panic!(
                                        "submitter {sub} round {round} ctx {:#x}: byte {at} of {} differs",
                                        res.context,
                                        expect.len()
                                    );
                                }
                            }
                            done += 1;
                        }
                    }
                    done
                })
            })
            .collect();
        let done: usize = submitters.into_iter().map(|s| s.join_within(Duration::from_secs(120))).sum();
        assert_eq!(done, SUBMITTERS * PAIRS * ROUNDS * 4);
        w.close().unwrap();
        for c in consumers {
            let (_, stray) = c.join_within(T10);
            assert_eq!(stray, 0, "results after every request had its result");
        }
    }

    /// A consumer leads (looping `wait_io_timeout` with short limits) while a large write
    /// drains into a slow reader, then stops calling `wait_io` half-way: the rest of the write
    /// must still reach the peer (the epoll poller takes over readiness within ~32 ms), with
    /// nobody in `wait_io`.
    fn write_progresses_after_timed_consumer_stops(backend) {
        takeover(backend, false)
    }

    /// As `write_progresses_after_timed_consumer_stops`, but the consumer's last call is a
    /// `wait_io` without a limit that sits in the kernel for a long time (on epoll the poller
    /// then parks until the leader leaves) and returns only when a probe read completes.
    fn write_progresses_after_blocking_consumer_stops(backend) {
        takeover(backend, true)
    }

    /// `close` while three threads block in `wait_io` with reads pending, 200 times: every
    /// thread returns (`WatcherClosed` after the `ClosedPipe` results, exactly one per read)
    /// within 5 s. Every other time the close waits until all three sleep in the kernel;
    /// otherwise it races their arrival.
    fn close_while_consumers_block(backend) {
        const READS: usize = 4;
        if !util::own_process("close_while_consumers_block") {
            return;
        }
        let fds0 = util::open_fds();
        for iter in 0..200 {
            let Some(w) = util::watcher_for::<usize>(backend) else { return };
            let w = Arc::new(w);
            let pairs: Vec<(Conn, UnixStream)> = (0..READS).map(|_| half_watched_pair(&*w)).collect();
            for (i, (c, _)) in pairs.iter().enumerate() {
                w.read(i, c, None).unwrap_or_else(|e| panic!("read refused: {}", e.error));
            }
            let (tids_tx, tids) = mpsc::channel();
            let consumers: Vec<Worker<usize>> = (0..3)
                .map(|i| {
                    let (w, tids_tx) = (w.clone(), tids_tx.clone());
                    Worker::spawn(format!("consumer{i}"), move || {
                        let _ = tids_tx.send(util::gettid());
                        let mut n = 0;
                        loop {
                            match w.wait_io() {
                                Ok(batch) => {
                                    for res in batch {
                                        assert!(util::is_closed_pipe(&res.error), "{res:?}");
                                        n += 1;
                                    }
                                }
                                Err(Error::WatcherClosed) => return n,
                                Err(e) => panic!("wait_io: {e}"),
                            }
                        }
                    })
                })
                .collect();
            let tids: Vec<i32> = (0..3).map(|_| tids.recv_timeout(T10).expect("consumer tid")).collect();
            if iter % 2 == 0 {
                util::eventually(Duration::from_secs(5), "three consumers asleep", || {
                    tids.iter().all(|&t| util::thread_state(t) == Some('S'))
                });
            }
            w.close().unwrap();
            let n: usize = consumers
                .into_iter()
                .map(|c| c.join_within(Duration::from_secs(5)))
                .sum();
            assert_eq!(n, READS, "iteration {iter}: ClosedPipe results");
            drop(pairs);
            drop(w);
            if iter % 20 == 19 {
                util::assert_fds(&fds0, fds0.len(), &format!("iteration {iter}, after close"));
            }
        }
    }

    /// Exactly one result per accepted submission when `close` races with two consumers (one
    /// blocking, one with random short limits) and two submitters writing and reading over
    /// watched socketpairs, 30 times over. Submissions refused with `WatcherClosed` yield none.
    fn one_result_each_when_close_races_consumers(backend) {
        for iter in 0..30u64 {
            let Some(w) = util::watcher_for::<u64>(backend) else { return };
            let w = Arc::new(w);
            let seen = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
            let consumers: Vec<Worker<()>> = (0..2u64)
                .map(|i| {
                    let (w, seen) = (w.clone(), seen.clone());
                    Worker::spawn(format!("consumer{i}"), move || {
                        let mut rng = XorShift::new(iter * 7 + i + 1);
                        loop {
                            let batch = if i == 0 {
                                w.wait_io()
                            } else {
                                w.wait_io_timeout(short_timeout(&mut rng))
                            };
                            match batch {
                                Ok(b) => {
                                    let mut s = seen.lock().unwrap();
                                    for res in b {
                                        *s.entry(res.id.as_u64()).or_default() += 1;
                                    }
                                }
                                Err(Error::WatcherClosed) => return,
                                Err(e) => panic!("wait_io: {e}"),
                            }
                        }
                    })
                })
                .collect();
            let submitters: Vec<Worker<Vec<u64>>> = (0..2u64)
                .map(|s| {
                    let w = w.clone();
                    let pairs: Vec<(Conn, Conn)> = (0..8).map(|_| watched_pair(&*w)).collect();
                    Worker::spawn(format!("submitter{s}"), move || {
                        let mut rng = XorShift::new(iter * 13 + s + 5);
                        let mut accepted = Vec::new();
                        loop {
                            let (a, b) = &pairs[rng.next_u64() as usize % pairs.len()];
                            let len = 1 + rng.next_u64() as usize % 300_000;
                            let r = if rng.next_u64() % 2 == 0 {
                                w.write(0, a, vec![7u8; len]).map_err(|e| e.error)
                            } else {
                                w.read(0, b, None).map_err(|e| e.error)
                            };
                            match r {
                                Ok(id) => accepted.push(id.as_u64()),
                                Err(Error::WatcherClosed) => return accepted,
                                Err(e) => panic!("submission refused: {e}"),
                            }
                        }
                    })
                })
                .collect();
            // Let the submitters run into close at a random point.
            let mut rng = XorShift::new(iter + 99);
            let spins = rng.next_u64() % 2000;
            for _ in 0..spins {
                std::thread::yield_now();
            }
            w.close().unwrap();
            let mut accepted: Vec<u64> = submitters
                .into_iter()
                .flat_map(|s| s.join_within(T10))
                .collect();
            for c in consumers {
                c.join_within(T10);
            }
            accepted.sort_unstable();
            let seen = seen.lock().unwrap();
            for id in &accepted {
                assert_eq!(seen.get(id).copied(), Some(1), "iteration {iter}: results of request {id}");
            }
            assert_eq!(seen.len(), accepted.len(), "iteration {iter}: results of requests never accepted");
        }
    }

    /// `cancel` and `free` racing with consumers that serve readiness: 8 socketpairs, 200
    /// reads queued on each (caller buffers of 1..1024 bytes) while a std thread writes a
    /// 32 KiB stream into each peer and another thread cancels random reads and frees one
    /// connection. Every read yields one result; `cancel` says `true` exactly for the reads
    /// that end `Canceled` (on io_uring a `true` may also meet a read the kernel completed
    /// first, as documented); and per connection the data of the reads that completed, in
    /// submission order, is exactly the start of the stream (nothing lost, duplicated or
    /// reordered).
    fn cancel_and_free_race_with_consumers(backend) {
        const PAIRS: usize = 8;
        const READS: usize = 200;
        const STREAM: usize = 32 * 1024;
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let w = Arc::new(w);
        let results = Arc::new(Mutex::new(HashMap::<u64, OpResult<usize>>::new()));
        let consumers: Vec<Worker<()>> = (0..2u64)
            .map(|i| {
                let (w, results) = (w.clone(), results.clone());
                Worker::spawn(format!("consumer{i}"), move || {
                    let mut rng = XorShift::new(i + 3);
                    loop {
                        match w.wait_io_timeout(short_timeout(&mut rng)) {
                            Ok(b) => {
                                let mut r = results.lock().unwrap();
                                for res in b {
                                    let id = res.id.as_u64();
                                    assert!(r.insert(id, res).is_none(), "second result for {id}");
                                }
                            }
                            Err(Error::WatcherClosed) => return,
                            Err(e) => panic!("wait_io: {e}"),
                        }
                    }
                })
            })
            .collect();
        let (conns, peers): (Vec<Conn>, Vec<UnixStream>) =
            (0..PAIRS).map(|_| half_watched_pair(&*w)).unzip();
        let mut rng = XorShift::new(42);
        let mut ids = Vec::new(); // (pair, id), in submission order per pair
        for k in 0..READS {
            for (p, c) in conns.iter().enumerate() {
                let len = 1 + rng.next_u64() as usize % 1024;
                let id = w.read(p, c, Some(vec![0u8; len])).unwrap_or_else(|e| panic!("read {k}: {}", e.error));
                ids.push((p, id));
            }
        }
        let writer = Worker::spawn("writer", move || {
            let mut peers = peers;
            for off in (0..STREAM).step_by(512) {
                for (p, peer) in peers.iter_mut().enumerate() {
                    let chunk: Vec<u8> = (off..off + 512).map(|j| util::pattern(p, j)).collect();
                    // Pair 0 is freed on the way: its writes may fail with EPIPE.
                    if let Err(e) = peer.write_all(&chunk) {
                        assert!(p == 0, "peer {p} write: {e}");
                    }
                }
            }
            peers
        });
        let canceller = {
            let (w, ids, conns0) = (w.clone(), ids.clone(), conns[0].clone());
            Worker::spawn("canceller", move || {
                let mut rng = XorShift::new(7);
                let mut answers = HashMap::new();
                for n in 0..(PAIRS * 20) {
                    let (_, id) = ids[rng.next_u64() as usize % ids.len()];
                    let pending = w.cancel(id).expect("cancel");
                    match answers.get(&id.as_u64()) {
                        Some(&true) => assert!(!pending, "cancel said true twice for {id:?}"),
                        _ => {
                            answers.insert(id.as_u64(), pending);
                        }
                    }
                    if n == PAIRS * 10 {
                        w.free(&conns0).expect("free");
                    }
                }
                answers
            })
        };
        let answers = canceller.join_within(T20);
        let peers = writer.join_within(T20);
        // Wait until every connection but the freed one has delivered the whole stream (the
        // reads left are enough: at most 20 per pair were cancelled).
        let delivered = |p: usize| -> usize {
            let r = results.lock().unwrap();
            ids.iter()
                .filter(|(q, _)| *q == p)
                .filter_map(|(_, id)| r.get(&id.as_u64()))
                .filter(|res| res.error.is_none())
                .map(|res| res.size)
                .sum()
        };
        util::eventually(T20, "every stream delivered", || (1..PAIRS).all(|p| delivered(p) == STREAM));
        w.close().unwrap();
        for c in consumers {
            c.join_within(T10);
        }
        drop(peers);
        let results = results.lock().unwrap();
        assert_eq!(results.len(), ids.len(), "one result per read");
        for (_, id) in &ids {
            let res = &results[&id.as_u64()];
            let canceled = matches!(res.error, Some(Error::Canceled));
            let said = answers.get(&id.as_u64()).copied();
            // On io_uring a read already in the kernel may still complete after `cancel` said
            // it was pending (documented); everywhere `Canceled` needs a `true`.
            let late = backend == gaio::Backend::Uring && said == Some(true) && res.error.is_none();
            assert!(canceled == (said == Some(true)) || late, "cancel said {said:?} for {res:?}");
        }
        for p in 0..PAIRS {
            let mut stream = Vec::new();
            for (_, id) in ids.iter().filter(|(q, _)| *q == p) {
                let res = &results[&id.as_u64()];
                match &res.error {
                    None => stream.extend_from_slice(res.data()),
                    Some(Error::Canceled | Error::ClosedPipe | Error::ConnClosed) => {
                        assert_eq!(res.size, 0, "{res:?}")
                    }
                    Some(e) => panic!("pair {p}: {e} in {res:?}"),
                }
            }
            let want: Vec<u8> = (0..stream.len()).map(|j| util::pattern(p, j)).collect();
            if let Some(at) = util::first_difference(&stream, &want) {
                panic!("pair {p}: byte {at} of the delivered stream differs");
            }
            if p > 0 {
                assert_eq!(stream.len(), STREAM, "pair {p}");
            }
        }
    }

    /// Sixteen watchers in one process, each with two consumer threads (one blocking, one with
    /// short limits) and a submitter moving 100 verified messages over a watched socketpair;
    /// then every watcher closes and no descriptor or thread is left.
    fn many_watchers(backend) {
        const WATCHERS: usize = 16;
        if !util::own_process("many_watchers") {
            return;
        }
        let fds0 = util::open_fds();
        let threads0 = util::gaio_threads();
        let mut workers = Vec::new();
        let mut watchers = Vec::new();
        for i in 0..WATCHERS {
            let Some(w) = util::watcher_for::<u64>(backend) else { return };
            let w = Arc::new(w);
            let (routes, inbox) = mpsc::channel();
            let consumers: Vec<Worker<(usize, usize)>> = (0..2)
                .map(|k| {
                    let (w, routes) = (w.clone(), vec![routes.clone()]);
                    let timeouts = (k == 1).then_some(i as u64 + 1);
                    Worker::spawn(format!("w{i}c{k}"), move || routing_consumer(w, routes, timeouts))
                })
                .collect();
            drop(routes);
            let wc = w.clone();
            let submitter = Worker::spawn(format!("w{i}s"), move || {
                let (a, b) = watched_pair(&*wc);
                let mut rng = XorShift::new(i as u64 + 11);
                for m in 0..100 {
                    let len = 1 + rng.next_u64() as usize % 100_000;
                    let data = payload(0, i, m, len);
                    wc.write(ctx(0, i, m, KIND_WRITE), &a, data.clone()).expect("write");
                    wc.read_full(ctx(0, i, m, KIND_READ), &b, vec![0u8; len], None).expect("read_full");
                    for _ in 0..2 {
                        let res: OpResult<u64> = inbox.recv_timeout(T20).expect("a result within 20 s");
                        assert!(res.error.is_none(), "{res:?}");
                        assert_eq!(res.size, len);
                        if res.context & 0xff == KIND_READ {
                            assert!(util::user_buf_ref(&res.buffer) == &data, "watcher {i} message {m}");
                        }
                    }
                }
            });
            workers.push((submitter, consumers));
            watchers.push(w);
        }
        let mut all_consumers = Vec::new();
        for (s, c) in workers {
            s.join_within(Duration::from_secs(60));
            all_consumers.extend(c);
        }
        for w in &watchers {
            w.close().unwrap();
        }
        for c in all_consumers {
            let (_, stray) = c.join_within(T10);
            assert_eq!(stray, 0);
        }
        drop(watchers);
        util::assert_fds(&fds0, fds0.len(), "after closing every watcher");
        assert_eq!(util::gaio_threads(), threads0, "watcher threads left");
    }
}

/// `close` must leave no descriptor open even while the `Watcher` value lives, also when
/// another thread is inside `wait_io` at the time. The waiting thread runs at idle priority
/// on the main thread's CPU, so it gets no chance to leave `wait_io` between `close`
/// returning and the count.
fn close_leaves_no_fd_while_a_consumer_waits(backend: gaio::Backend) {
    if !util::own_process("close_leaves_no_fd_while_a_consumer_waits") {
        return;
    }
    let fds0 = util::open_fds();
    let Some(w) = util::watcher_for::<usize>(backend) else {
        return;
    };
    let w = Arc::new(w);
    let cpu = util::allowed_cpus()[0];
    let (tid_tx, tid_rx) = mpsc::channel();
    let consumer = {
        let w = w.clone();
        Worker::spawn("idle-consumer", move || {
            pin_to(cpu);
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sets this thread's own policy; `param` is a valid sched_param.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            assert_eq!(rc, 0, "SCHED_IDLE: {}", std::io::Error::last_os_error());
            let _ = tid_tx.send(util::gettid());
            match w.wait_io() {
                Err(Error::WatcherClosed) => {}
                other => panic!("wait_io: {:?}", other.map(|b| b.len())),
            }
        })
    };
    let tid = tid_rx.recv_timeout(T10).expect("consumer tid");
    util::eventually(T10, "the consumer asleep in wait_io", || {
        util::thread_state(tid) == Some('S')
    });
    pin_to(cpu);
    w.close().unwrap();
    let now = util::open_fds();
    eprintln!(
        "consumer state right after close: {:?}; fds before {}, now {}",
        util::thread_state(tid),
        fds0.len(),
        now.len()
    );
    consumer.join_within(T10);
    util::assert_fds(&fds0, fds0.len(), "after the consumer returned");
    assert_eq!(
        now.len(),
        fds0.len(),
        "right after close, with a thread still in wait_io: opened {:?}",
        now.iter()
            .filter(|(fd, _)| !fds0.contains_key(fd))
            .collect::<Vec<_>>()
    );
}

/// `wait_io_timeout` with a limit too large to add to `Instant::now()` waits like
/// `wait_io` (here: returns the result of a read that completes), rather than panicking.
fn wait_io_timeout_with_huge_limit(backend: gaio::Backend) {
    let Some(w) = util::watcher_for::<usize>(backend) else {
        return;
    };
    let (conn, mut peer) = half_watched_pair(&w);
    peer.write_all(b"x").unwrap();
    w.read(1, &conn, None).unwrap();
    let batch = w.wait_io_timeout(Duration::MAX).expect("wait_io_timeout");
    assert_eq!(batch.len(), 1);
}

/// Two threads submit one write each on the same connection at the same moment, with
/// nothing pending (so both may try the inline attempt), 1500 rounds: the peer must receive
/// each write's bytes contiguously, whole writes one after the other. Writes are 192 KiB
/// and the watched end's send buffer is small, so an inline attempt moves part of a write
/// and hands the rest over; a concurrent write must not slip in between.
fn concurrent_writers_never_interleave(backend: gaio::Backend) {
    const ROUNDS: usize = 1500;
    const LEN: usize = 192 << 10;
    let Some(w) = util::watcher_for::<usize>(backend) else {
        return;
    };
    let w = Arc::new(w);
    let (a, peer) = UnixStream::pair().expect("socketpair");
    set_sndbuf(&a, 16 << 10);
    let conn = w.watch(&a).expect("watch");
    drop(a);
    // The reader checks the stream as it comes: 4-byte words (writer, round, word index);
    // a new write may only start once the previous one is complete.
    let reader = Worker::spawn("reader", move || {
        let mut peer = peer;
        peer.set_read_timeout(Some(T20)).unwrap();
        let words = LEN / 4;
        let mut buf = vec![0u8; 64 << 10];
        let mut carry = Vec::new();
        let (mut cur, mut next_word, mut seen) = (u32::MAX, words, 0usize);
        let mut pos = 0usize;
        while seen < 2 * ROUNDS * LEN {
            let n = peer
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("peer read at {pos}: {e}"));
            assert!(n > 0, "EOF at {pos}");
            seen += n;
            carry.extend_from_slice(&buf[..n]);
            let whole = carry.len() / 4 * 4;
            for word in carry[..whole].chunks_exact(4) {
                let v = u32::from_le_bytes(word.try_into().unwrap());
                let (tag, idx) = (v >> 16, (v & 0xffff) as usize);
                if next_word == words {
                    assert_eq!(idx, 0, "byte {pos}: write {tag:#x} starts at word {idx}");
                    cur = tag;
                    next_word = 0;
                }
                assert!(
                    tag == cur && idx == next_word,
                    "byte {pos}: word {idx} of write {tag:#x} inside write {cur:#x} (at its \
                     word {next_word} of {words}): two writes interleaved"
                );
                next_word += 1;
                pos += 4;
            }
            carry.drain(..whole);
        }
    });
    let write_of = |writer: u32, round: usize| -> Vec<u8> {
        let tag = (writer << 15) | round as u32;
        (0..LEN / 4)
            .flat_map(|i| ((tag << 16) | i as u32).to_le_bytes())
            .collect()
    };
    let start = Arc::new(std::sync::Barrier::new(3));
    let writers: Vec<Worker<()>> = (0..2u32)
        .map(|k| {
            let (w, conn, start) = (w.clone(), conn.clone(), start.clone());
            let bufs: Vec<Vec<u8>> = (0..ROUNDS).map(|r| write_of(k, r)).collect();
            Worker::spawn(format!("writer{k}"), move || {
                for (r, buf) in bufs.into_iter().enumerate() {
                    start.wait();
                    w.write(r, &conn, buf).expect("write");
                    start.wait();
                }
            })
        })
        .collect();
    // Noise on two more watched connections keeps the backend's state busy, so the two
    // writers' hand-offs meet a held lock and may be reordered at it.
    const NOISE_W: usize = usize::MAX;
    const NOISE_R: usize = usize::MAX - 1;
    // Large enough that serving it holds the state for a while.
    const NOISE_LEN: usize = 1 << 20;
    let (x, y) = watched_pair(&*w);
    w.write(NOISE_W, &x, vec![1u8; NOISE_LEN])
        .expect("noise write");
    w.read(NOISE_R, &y, None).expect("noise read");
    for r in 0..ROUNDS {
        start.wait();
        start.wait();
        // Both writes done before the next round, so each round starts with nothing
        // pending and both writers may go inline.
        let mut n = 0;
        util::wait_until(&*w, T20, format!("round {r}'s writes"), |res| {
            match res.context {
                NOISE_W => {
                    w.write(NOISE_W, &x, vec![1u8; NOISE_LEN])
                        .expect("noise write");
                    return false;
                }
                NOISE_R => {
                    w.read(NOISE_R, &y, None).expect("noise read");
                    return false;
                }
                _ => {}
            }
            assert!(res.error.is_none(), "{res:?}");
            assert_eq!(res.size, LEN);
            n += 1;
            n == 2
        });
    }
    for k in writers {
        k.join_within(T10);
    }
    reader.join_within(T20);
}

/// Regression tests for three bugs these stress tests found (all fixed): a write handed to
/// the backend after a partial inline attempt could be overtaken by a concurrent write of
/// another thread and end up split around it; `close` returned while a thread in `wait_io`
/// still held the epoll leader's descriptors; `wait_io_timeout` with a timeout too long to add
/// to now panicked.
mod regressions {
    mod epoll {
        #[test]
        fn concurrent_writers_never_interleave() {
            super::super::concurrent_writers_never_interleave(gaio::Backend::Epoll)
        }

        #[test]
        fn close_leaves_no_fd_while_a_consumer_waits() {
            super::super::close_leaves_no_fd_while_a_consumer_waits(gaio::Backend::Epoll)
        }

        #[test]
        fn wait_io_timeout_with_huge_limit() {
            super::super::wait_io_timeout_with_huge_limit(gaio::Backend::Epoll)
        }
    }

    mod uring {
        #[test]
        fn concurrent_writers_never_interleave() {
            super::super::concurrent_writers_never_interleave(gaio::Backend::Uring)
        }

        #[test]
        fn close_leaves_no_fd_while_a_consumer_waits() {
            super::super::close_leaves_no_fd_while_a_consumer_waits(gaio::Backend::Uring)
        }

        #[test]
        fn wait_io_timeout_with_huge_limit() {
            super::super::wait_io_timeout_with_huge_limit(gaio::Backend::Uring)
        }
    }
}

/// Sets `SO_SNDBUF` of `s` (the kernel doubles it and applies a minimum).
fn set_sndbuf(s: &UnixStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_SNDBUF: {}", std::io::Error::last_os_error());
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the call
    // reads `size_of` bytes from it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// See `write_progresses_after_*_consumer_stops`.
fn takeover(backend: gaio::Backend, blocking_last: bool) {
    const TOTAL: usize = 16 << 20;
    const WRITE: u32 = 1;
    const PROBE: u32 = 2;
    let Some(w) = util::watcher_for::<u32>(backend) else {
        return;
    };
    let w = Arc::new(w);
    let (conn, peer) = half_watched_pair(&*w);
    let (probe, mut probe_peer) = half_watched_pair(&*w);
    // A slow reader: 16 KiB per read with a pause, so the write needs many edges and lasts
    // well over a second.
    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        Worker::spawn("slow-reader", move || {
            let mut peer = peer;
            peer.set_read_timeout(Some(T10)).unwrap();
            let mut buf = vec![0u8; 16 << 10];
            let mut pos = 0usize;
            let mut stalls = Vec::new();
            let mut last = Instant::now();
            while pos < TOTAL {
                let n = match peer.read(&mut buf) {
                    Ok(0) => panic!("EOF after {pos} bytes"),
                    Ok(n) => n,
                    Err(e) => panic!("peer read after {pos} bytes: {e}"),
                };
                for (k, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(b, util::pattern(3, pos + k), "byte {}", pos + k);
                }
                pos += n;
                received.store(pos, Ordering::Release);
                stalls.push(last.elapsed());
                last = Instant::now();
                std::thread::sleep(Duration::from_micros(500));
            }
            stalls.into_iter().max().unwrap_or_default()
        })
    };
    let data: Vec<u8> = (0..TOTAL).map(|j| util::pattern(3, j)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let got_write = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (w, stop, got_write) = (w.clone(), stop.clone(), got_write.clone());
        Worker::spawn("consumer", move || {
            let mut rng = XorShift::new(5);
            let mut led = 0usize;
            loop {
                let batch = if blocking_last && led > 50 {
                    w.wait_io()
                } else {
                    w.wait_io_timeout(short_timeout(&mut rng))
                }
                .expect("wait_io");
                led += 1;
                let mut probe_done = false;
                for res in batch {
                    match res.context {
                        WRITE => {
                            assert!(res.error.is_none(), "{res:?}");
                            got_write.store(true, Ordering::Release);
                        }
                        PROBE => probe_done = true,
                        _ => panic!("unexpected {res:?}"),
                    }
                }
                if probe_done || (!blocking_last && stop.load(Ordering::Acquire)) {
                    return;
                }
            }
        })
    };
    w.read(PROBE, &probe, Some(vec![0u8; 1])).unwrap();
    w.write(WRITE, &conn, data).unwrap();
    util::eventually(T20, "a quarter of the write delivered", || {
        received.load(Ordering::Acquire) >= TOTAL / 4
    });
    stop.store(true, Ordering::Release);
    probe_peer.write_all(b"!").unwrap();
    consumer.join_within(T10);
    let at_stop = received.load(Ordering::Acquire);
    assert!(
        at_stop < TOTAL,
        "the write finished before the consumer stopped: the test proves nothing"
    );
    // Nobody calls wait_io from here on: the rest must flow anyway.
    let max_stall = reader.join_within(T20);
    eprintln!(
        "{backend}: {} of {TOTAL} bytes had arrived when the consumer stopped; longest stall \
         at the reader {max_stall:?}",
        at_stop
    );
    if !got_write.load(Ordering::Acquire) {
        util::wait_until(&*w, T10, "the write's result", |res| {
            if res.context == PROBE {
                return false;
            }
            assert_eq!(res.context, WRITE);
            assert!(res.error.is_none(), "{res:?}");
            assert_eq!(res.size, TOTAL);
            true
        });
    }
    w.close().unwrap();
}
