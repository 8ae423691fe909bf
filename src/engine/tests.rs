//! The engine against a fake driver whose every answer the test scripts: what `start` comes
//! back with (done at once with an outcome, or in flight until the test calls
//! [`Engine::complete`]), whether swap space is back, whether an adopt is refused. Every call
//! the engine makes is recorded, so the tests assert on what the engine asked of its driver as
//! well as on the results it delivered.
//!
//! Both driver modes run each test: readiness (`READINESS = true`, epoll-like: an EAGAIN waits
//! for [`Engine::ready`]) and completion (`false`, io_uring-like: the request is started again
//! at once with `poll_first` set). Slots hold one end of a real socket pair; the test keeps
//! the other end and sees the engine's end close (EOF on a peek), and the fake checks at each
//! `forget` that the descriptor is still open and that nothing of its connection is in flight.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ConnMaker, Driver, Engine, LoopMsg, Start};
use crate::conn::{Conn, ConnId, ConnOwner, IdAllocator};
use crate::lane::Lane;
use crate::op::{Buffer, OpId, OpResult};
use crate::request::{Kind, Outcome, Request};
use crate::results::ResultQueue;
use crate::swap::{Shared, SwapOwner, SwapPool, SwapSlice};
use crate::{Error, IoBuf};

const WATCHER: u64 = 7;

/// Starts one fake may answer before the test is declared stuck (the engine looping).
const BUDGET: usize = 100_000;

/// One call the engine made on its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Start {
        key: usize,
        seq: u64,
        poll_first: bool,
        size: usize,
    },
    StartFile {
        key: usize,
        seq: u64,
    },
    Cancel {
        key: usize,
        seq: u64,
    },
    Starving,
    Retrying,
    Adopt {
        id: ConnId,
    },
    /// The descriptor's inode (socket inodes are unique while open).
    Forget {
        ino: u64,
    },
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The fake driver. `R` is its mode (`Driver::READINESS`).
struct Fake<const R: bool> {
    calls: Vec<Call>,
    /// Answers to `start`/`start_file`, per request (by `OpId::seq`), in order.
    script: HashMap<u64, VecDeque<Start>>,
    /// Answers to `starving` (default false).
    starving: VecDeque<bool>,
    /// Answers to `adopt` (default Ok).
    adopt: VecDeque<std::io::Result<()>>,
    /// Requests this driver holds (answered `InFlight`, not yet completed): seq → (key, conn).
    held: HashMap<u64, (usize, ConnId)>,
    /// Which connection each descriptor (by inode) belongs to, for the check in `forget`.
    inos: HashMap<u64, ConnId>,
    /// Unscripted answers drawn at random (the randomized test); otherwise the mode's default:
    /// a stream request meets EAGAIN in readiness mode, anything else goes in flight.
    rng: Option<Rng>,
    /// For random answers to swap reads.
    swap: Option<SwapPool>,
    /// The other ends of the descriptors random accepts produced, by the inode of the
    /// accepted end.
    peers: HashMap<u64, OwnedFd>,
    budget: usize,
}

impl<const R: bool> Fake<R> {
    fn new() -> Self {
        Fake {
            calls: Vec::new(),
            script: HashMap::new(),
            starving: VecDeque::new(),
            adopt: VecDeque::new(),
            held: HashMap::new(),
            inos: HashMap::new(),
            rng: None,
            swap: None,
            peers: HashMap::new(),
            budget: BUDGET,
        }
    }

    /// The answer to a start of `req`.
    fn answer(&mut self, key: usize, req: &Request<u64>) -> Start {
        self.budget = self
            .budget
            .checked_sub(1)
            .expect("the engine keeps starting requests (stuck in a loop?)");
        let scripted = self
            .script
            .get_mut(&req.id.seq)
            .and_then(VecDeque::pop_front);
        let file = req.kind.lane().is_none();
        let answer = match (scripted, self.rng.is_some()) {
            (Some(a), _) => a,
            (None, true) => self.random(req),
            // An epoll file request that misses the page cache goes to a file thread.
            (None, false) if R && !file => Start::Done(Outcome::WouldBlock),
            (None, false) => Start::InFlight,
        };
        if let Start::InFlight = answer {
            let old = self.held.insert(req.id.seq, (key, req.conn.id()));
            assert!(old.is_none(), "request {} started twice", req.id.seq);
        }
        answer
    }

    fn random(&mut self, req: &Request<u64>) -> Start {
        let rng = self.rng.as_mut().expect("random mode");
        let shape = Shape::of(req);
        match rng.below(10) {
            0..=2 => Start::InFlight,
            3 | 4 => Start::Done(random_outcome(
                rng,
                shape,
                self.swap.as_mut(),
                &mut self.peers,
            )),
            5 if req.kind == Kind::Accept => {
                Start::Done(random_outcome(rng, shape, None, &mut self.peers))
            }
            5 if !R => Start::Done(Outcome::WouldBlock),
            6 => Start::Done(Outcome::Retry),
            _ if R => Start::Done(Outcome::WouldBlock),
            _ => Start::InFlight,
        }
    }

    fn starts(&self, seq: u64) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c, Call::Start { seq: s, .. } | Call::StartFile { seq: s, .. } if *s == seq))
            .count()
    }

    fn cancels(&self, seq: u64) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c, Call::Cancel { seq: s, .. } if *s == seq))
            .count()
    }

    fn forgets(&self, ino: u64) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c, Call::Forget { ino: i } if *i == ino))
            .count()
    }

    /// The `poll_first` of each start of request `seq`.
    fn poll_firsts(&self, seq: u64) -> Vec<bool> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Start {
                    seq: s, poll_first, ..
                } if *s == seq => Some(*poll_first),
                _ => None,
            })
            .collect()
    }

    /// The `size` each start of request `seq` saw.
    fn sizes(&self, seq: u64) -> Vec<usize> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Start { seq: s, size, .. } if *s == seq => Some(*size),
                _ => None,
            })
            .collect()
    }

    fn count(&self, call: &Call) -> usize {
        self.calls.iter().filter(|c| *c == call).count()
    }
}

/// What a random outcome depends on.
#[derive(Clone, Copy)]
struct Shape {
    kind: Kind,
    left: usize,
    swap_read: bool,
}

impl Shape {
    fn of(req: &Request<u64>) -> Shape {
        Shape {
            kind: req.kind,
            left: req.len().saturating_sub(req.size),
            swap_read: matches!(req.kind, Kind::Read | Kind::ReadFull) && req.buffer.is_none(),
        }
    }
}

/// A random outcome for a request: bytes (short, full or none), an error, EAGAIN, no swap
/// space, a new descriptor for an accept (its peer kept in `peers`, by inode).
fn random_outcome(
    rng: &mut Rng,
    req: Shape,
    swap: Option<&mut SwapPool>,
    peers: &mut HashMap<u64, OwnedFd>,
) -> Outcome {
    let Shape {
        kind,
        left,
        swap_read,
    } = req;
    if kind == Kind::Accept {
        return match rng.below(6) {
            0 => Outcome::Failed(std::io::Error::from_raw_os_error(libc::EMFILE)),
            1 => Outcome::WouldBlock,
            2 => Outcome::Retry,
            _ => {
                let (mine, peer) = socketpair();
                peers.insert(ino(mine.as_raw_fd()).unwrap(), peer);
                Outcome::Accepted(mine)
            }
        };
    }
    match rng.below(12) {
        0 => Outcome::Failed(std::io::Error::from_raw_os_error(libc::ECONNRESET)),
        1 => Outcome::WouldBlock,
        2 => Outcome::Moved(0, None),
        3 | 4 if swap_read => Outcome::NoSwap,
        4 => Outcome::Retry,
        _ if matches!(kind, Kind::Fsync | Kind::Fdatasync) => Outcome::Finished,
        _ if swap_read => {
            let n = 1 + rng.below(64) as usize;
            match swap.and_then(|p| fill(p, 0xab, n)) {
                Some(s) => Outcome::Moved(n, Some(s)),
                None => Outcome::NoSwap,
            }
        }
        _ => Outcome::Moved(1 + rng.below(left.max(1) as u64) as usize, None),
    }
}

impl<const R: bool> Driver<u64> for Fake<R> {
    const READINESS: bool = R;

    fn start(&mut self, key: usize, fd: RawFd, _is_socket: bool, req: &mut Request<u64>) -> Start {
        assert!(fd_open(fd), "start on a closed descriptor");
        assert!(!req.in_flight, "start of a request in flight");
        self.calls.push(Call::Start {
            key,
            seq: req.id.seq,
            poll_first: req.poll_first,
            size: req.size,
        });
        self.answer(key, req)
    }

    fn start_file(&mut self, key: usize, fd: RawFd, req: &mut Request<u64>) -> Start {
        assert!(fd_open(fd), "start_file on a closed descriptor");
        assert!(!req.in_flight, "start_file of a request in flight");
        self.calls.push(Call::StartFile {
            key,
            seq: req.id.seq,
        });
        self.answer(key, req)
    }

    fn cancel(&mut self, key: usize, req: &Request<u64>) {
        assert!(req.in_flight, "cancel of a request not in flight");
        assert_eq!(self.held.get(&req.id.seq).map(|h| h.0), Some(key));
        assert_eq!(self.cancels(req.id.seq), 0, "request cancelled twice");
        self.calls.push(Call::Cancel {
            key,
            seq: req.id.seq,
        });
    }

    fn starving(&mut self) -> bool {
        self.calls.push(Call::Starving);
        self.starving.pop_front().unwrap_or(false)
    }

    fn retrying(&mut self) {
        self.calls.push(Call::Retrying);
    }

    fn adopt(&mut self, fd: &OwnedFd, id: ConnId) -> std::io::Result<()> {
        self.calls.push(Call::Adopt { id });
        let refuse = self.rng.as_mut().is_some_and(|r| r.chance(15));
        let r = match self.adopt.pop_front() {
            Some(r) => r,
            None if refuse => Err(std::io::Error::from_raw_os_error(libc::ENOMEM)),
            None => Ok(()),
        };
        if r.is_ok() {
            let ino = ino(fd.as_raw_fd()).expect("adopt of a closed descriptor");
            self.inos.insert(ino, id);
        }
        r
    }

    fn forget(&mut self, fd: &OwnedFd) {
        let ino = ino(fd.as_raw_fd()).expect("forget of a closed descriptor");
        if let Some(id) = self.inos.get(&ino) {
            let busy: Vec<u64> = self
                .held
                .iter()
                .filter(|(_, h)| h.1 == *id)
                .map(|(s, _)| *s)
                .collect();
            assert!(busy.is_empty(), "forget with {busy:?} in flight");
        }
        self.calls.push(Call::Forget { ino });
    }
}

/// Records dropped handles (the real owner sends `LoopMsg::Dropped`).
#[derive(Default)]
struct Owner(Mutex<Vec<ConnId>>);

impl ConnOwner for Owner {
    fn conn_dropped(&self, id: ConnId) {
        self.0.lock().unwrap().push(id);
    }
}

struct NoSwapOwner;

impl SwapOwner for NoSwapOwner {
    fn swap_released(&self) {}
}

fn swap_pool() -> SwapPool {
    SwapPool::new(4096, 2, Shared::new(Arc::new(NoSwapOwner)))
}

/// A swap slice of `n` bytes of `byte`, as a driver's swap read would make.
fn fill(pool: &mut SwapPool, byte: u8, n: usize) -> Option<SwapSlice> {
    let (ptr, len) = pool.space()?;
    let n = n.min(len);
    // SAFETY: `space` returned a writable region of `len >= n` bytes that no slice covers.
    unsafe { std::ptr::write_bytes(ptr, byte, n) };
    Some(pool.commit(n))
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` is an array of two ints for socketpair to fill.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: socketpair succeeded: both are new descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The inode of open descriptor `fd`.
fn ino(fd: RawFd) -> Option<u64> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer; fstat on a closed fd just fails.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    (rc == 0).then_some(st.st_ino)
}

fn fd_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// True once every copy of the other end of `peer`'s pair is closed: a peek reads EOF. Nothing
/// is ever written to the engine's end, so an open pair peeks EAGAIN.
fn peer_closed(peer: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: `b` is a writable one-byte buffer; `peer` is open.
    let rc = unsafe {
        libc::recv(
            peer.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match rc {
        0 => true,
        -1 if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => false,
        r => panic!("peek on the peer: {r}, {}", std::io::Error::last_os_error()),
    }
}

/// A connection of the test: its handle, and the other end of its socket pair.
struct Sock {
    conn: Conn,
    peer: OwnedFd,
    ino: u64,
}

impl Sock {
    fn id(&self) -> ConnId {
        self.conn.id()
    }
}

/// What the test submitted, for checking its one result.
struct Sub {
    /// Length of the buffer submitted with it (`None`: no buffer).
    len: Option<usize>,
    conn: ConnId,
    /// The direction it was queued in (`None`: a file request, or refused at submission).
    fifo: Option<Lane>,
    results: usize,
}

/// The engine, its fake driver, and the bookkeeping that checks every result.
struct H<const R: bool> {
    e: Engine<u64, Fake<R>>,
    results: Arc<ResultQueue<u64>>,
    ids: Arc<IdAllocator>,
    owner: Arc<Owner>,
    seq: u64,
    subs: HashMap<u64, Sub>,
    /// Per connection and direction: the last seq delivered (FIFO check).
    last: HashMap<(ConnId, u8), u64>,
    /// What the last `submit` returned.
    tick: bool,
    swap: SwapPool,
}

impl<const R: bool> H<R> {
    fn new() -> Self {
        let results = Arc::new(ResultQueue::new());
        let ids = Arc::new(IdAllocator::default());
        let owner = Arc::new(Owner::default());
        let e = Engine::new(
            Fake::new(),
            results.clone(),
            ids.clone(),
            Arc::new(crate::driver::GcCounters::default()),
            ConnMaker {
                watcher_id: WATCHER,
                owner: owner.clone(),
            },
        );
        H {
            e,
            results,
            ids,
            owner,
            seq: 1,
            subs: HashMap::new(),
            last: HashMap::new(),
            tick: false,
            swap: swap_pool(),
        }
    }

    fn fake(&mut self) -> &mut Fake<R> {
        &mut self.e.driver
    }

    /// A new connection, taken over by the engine (as `LoopMsg::Watch`).
    fn sock(&mut self) -> Sock {
        let (mine, peer) = socketpair();
        let id = self.ids.alloc();
        let raw = mine.as_raw_fd();
        let ino = ino(raw).unwrap();
        let conn = Conn::with_file(id, WATCHER, raw, true, None, self.owner.clone());
        self.fake().inos.insert(ino, id);
        self.e.handle(LoopMsg::Watch {
            id,
            fd: mine,
            is_socket: true,
            handle: conn.downgrade(),
        });
        Sock { conn, peer, ino }
    }

    /// Submits a request of `kind` on `s` whose starts are answered by `script` (then by the
    /// fake's default); returns its seq.
    fn sub(
        &mut self,
        kind: Kind,
        s: &Sock,
        buf: Option<Vec<u8>>,
        deadline: Option<Instant>,
        poll_first: bool,
        script: Vec<Start>,
    ) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        let id = OpId { seq, conn: s.id() };
        let len = buf.as_ref().map(Vec::len);
        let mut req = Request::new(id, kind, &s.conn, seq, buf.map(IoBuf::Vec), deadline);
        req.poll_first = poll_first;
        self.fake().script.insert(seq, script.into());
        let lane = kind.lane();
        if let Some(lane) = lane {
            // As the submit side does: counted as pending in the lane word until delivered.
            s.conn.0.lanes.claim(lane, false);
        }
        // Refused at once (freed, closed): never queued, so outside the FIFO order.
        let t = &self.e.table;
        let queued = !self.e.closed
            && t.index_of(s.id())
                .and_then(|i| t.get(i))
                .is_some_and(|sl| !sl.closing);
        self.subs.insert(
            seq,
            Sub {
                len,
                conn: s.id(),
                fifo: lane.filter(|_| queued),
                results: 0,
            },
        );
        self.tick = self.e.submit(req);
        seq
    }

    fn read(&mut self, s: &Sock, n: usize, script: Vec<Start>) -> u64 {
        self.sub(Kind::Read, s, Some(vec![0; n]), None, false, script)
    }

    fn read_full(&mut self, s: &Sock, n: usize, script: Vec<Start>) -> u64 {
        self.sub(Kind::ReadFull, s, Some(vec![0; n]), None, false, script)
    }

    fn swap_read(&mut self, s: &Sock, script: Vec<Start>) -> u64 {
        self.sub(Kind::Read, s, None, None, false, script)
    }

    fn write(&mut self, s: &Sock, n: usize, script: Vec<Start>) -> u64 {
        self.sub(Kind::Write, s, Some(vec![1; n]), None, false, script)
    }

    fn file(&mut self, kind: Kind, s: &Sock, n: usize, script: Vec<Start>) -> u64 {
        let buf = (n > 0).then(|| vec![2; n]);
        self.sub(kind, s, buf, None, false, script)
    }

    /// The driver reports the outcome of request `seq`, which it holds.
    fn complete(&mut self, seq: u64, outcome: Outcome) {
        let (key, _) = self
            .fake()
            .held
            .remove(&seq)
            .unwrap_or_else(|| panic!("request {seq} is not in flight"));
        self.e.complete(key, outcome);
    }

    fn held(&mut self, seq: u64) -> bool {
        self.fake().held.contains_key(&seq)
    }

    /// `Watcher::free`.
    fn free(&mut self, s: &Sock) {
        s.conn.0.freed.store(true, Ordering::Release);
        self.e.free(s.id());
    }

    fn cancel(&mut self, s: &Sock, seq: u64) -> bool {
        self.e.cancel(OpId { seq, conn: s.id() })
    }

    /// Flushes and takes every result, checking each: one per submitted request, none for a
    /// request in flight, FIFO per direction, the buffer back whole.
    fn take(&mut self) -> Vec<OpResult<u64>> {
        self.e.flush();
        let got: Vec<_> = self
            .results
            .take(Some(Duration::ZERO), None)
            .expect("result queue closed")
            .into_iter()
            .collect();
        for r in &got {
            let seq = r.id.seq;
            assert_eq!(r.context, seq, "context returned untouched");
            let sub = self
                .subs
                .get_mut(&seq)
                .unwrap_or_else(|| panic!("result for unknown request {seq}"));
            sub.results += 1;
            assert_eq!(sub.results, 1, "request {seq} has a second result: {r:?}");
            assert_eq!(r.id.conn, sub.conn);
            assert_eq!(r.conn.id(), sub.conn);
            assert!(
                !self.e.driver.held.contains_key(&seq),
                "result for request {seq} still in flight"
            );
            match (sub.len, &r.buffer) {
                (Some(n), Buffer::User(v)) => assert_eq!(v.len(), n, "buffer back whole"),
                (Some(_), b) => panic!("request {seq}: buffer not given back: {b:?}"),
                (None, Buffer::None) => {}
                (None, Buffer::Swap(s)) => {
                    assert!(r.error.is_none());
                    assert_eq!(s.len(), r.size);
                }
                (None, b) => panic!("request {seq}: unexpected buffer {b:?}"),
            }
            // A cancel or a deadline ends a request behind the front at once, out of order;
            // every other result of a direction comes in submission order.
            let early = matches!(r.error, Some(Error::Canceled | Error::Deadline));
            if let Some(lane) = sub.fifo.filter(|_| !early) {
                if let Some(prev) = self.last.insert((sub.conn, lane as u8), seq) {
                    assert!(prev < seq, "{seq} delivered after {prev}: not FIFO");
                }
            }
        }
        got
    }

    /// Takes the results and expects exactly these requests, in this order.
    fn expect(&mut self, seqs: &[u64]) -> Vec<OpResult<u64>> {
        let got = self.take();
        let ids: Vec<u64> = got.iter().map(|r| r.id.seq).collect();
        assert_eq!(ids, seqs, "results: {got:?}");
        got
    }

    /// Every request submitted had exactly one result; nothing is in flight.
    fn all_done(&mut self) {
        self.take();
        assert_eq!(self.e.in_flight(), 0);
        assert!(self.e.driver.held.is_empty(), "{:?}", self.e.driver.held);
        let missing: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.results != 1)
            .map(|(q, _)| *q)
            .collect();
        assert!(missing.is_empty(), "requests without a result: {missing:?}");
        assert!(self.e.ops.is_empty(), "requests left in the engine");
    }

    fn forgets(&self, s: &Sock) -> usize {
        self.e.driver.forgets(s.ino)
    }
}

fn moved(n: usize) -> Start {
    Start::Done(Outcome::Moved(n, None))
}

fn eagain() -> Start {
    Start::Done(Outcome::WouldBlock)
}

fn flight() -> Start {
    Start::InFlight
}

fn failed() -> Outcome {
    Outcome::Failed(std::io::Error::from_raw_os_error(libc::ECONNRESET))
}

/// The error's variant, for comparing (`Error` is not `PartialEq`).
fn err(r: &OpResult<u64>) -> &'static str {
    match &r.error {
        None => "ok",
        Some(Error::Eof) => "Eof",
        Some(Error::ClosedPipe) => "ClosedPipe",
        Some(Error::ConnClosed) => "ConnClosed",
        Some(Error::Canceled) => "Canceled",
        Some(Error::Deadline) => "Deadline",
        Some(Error::Io(_)) => "Io",
        Some(Error::Unsupported) => "Unsupported",
        Some(_) => "other",
    }
}

fn past() -> Instant {
    Instant::now()
        .checked_sub(Duration::from_millis(5))
        .expect("clock")
}

/// Runs a generic test in both driver modes.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn readiness() {
                super::$name::<true>()
            }
            #[test]
            fn completion() {
                super::$name::<false>()
            }
        }
    )*};
}

both!(
    fifo_per_direction,
    partial_write_continues,
    read_completes_on_any_data,
    read_full_only_when_full,
    zero_bytes_is_eof,
    write_of_zero_waits,
    failure_ends_with_io,
    swap_read_done_with_slice,
    no_swap_starves,
    starving_true_retries_at_once,
    starved_front_cancelled_lets_buffered_read_run,
    deadline_in_flight,
    cancel_in_flight,
    cancel_queued_and_unknown,
    free_in_flight,
    submit_to_freed_conn,
    detach_returns_descriptor,
    close_counts_down,
    dropped_handle_releases,
    files_side_by_side,
    fsync_barrier,
    fsync_waiting_ended,
    read_at_eof_and_short,
    free_with_file_in_flight,
    accept_adopts,
    accept_adopt_error,
    accept_completing_after_close,
    deadline_tick,
    kernel_cancel_without_ending,
    connect_on_write_lane,
    completed_message_checks_seq,
    randomized,
);

fn fifo_per_direction<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    let b = h.read(&s, 8, vec![moved(3)]);
    let w = h.write(&s, 4, vec![flight()]);
    let w2 = h.write(&s, 4, vec![moved(4)]);
    // Only each direction's front started; the write did not wait for the read.
    assert_eq!(h.fake().starts(a), 1);
    assert_eq!(h.fake().starts(b), 0);
    assert_eq!(h.fake().starts(w), 1);
    assert_eq!(h.fake().starts(w2), 0);
    h.expect(&[]);
    h.complete(a, Outcome::Moved(2, None));
    // The front done, the next one starts (and completes at once).
    assert_eq!(h.fake().starts(b), 1);
    let rs = h.expect(&[a, b]);
    assert_eq!((rs[0].size, rs[1].size), (2, 3));
    assert_eq!(h.fake().starts(w2), 0, "the write direction still waits");
    h.complete(w, Outcome::Moved(4, None));
    h.expect(&[w, w2]);
    h.all_done();
}

fn partial_write_continues<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let w = h.write(&s, 10, vec![moved(4), moved(3), flight(), flight()]);
    h.expect(&[]);
    h.complete(w, Outcome::Moved(2, None));
    h.expect(&[]);
    // Restarted at once for the last byte.
    assert_eq!(h.fake().sizes(w), vec![0, 4, 7, 9]);
    h.complete(w, Outcome::Moved(1, None));
    let r = h.expect(&[w]);
    assert_eq!((r[0].size, err(&r[0])), (10, "ok"));
    h.all_done();
}

fn read_completes_on_any_data<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![moved(3)]);
    let b = h.read(&s, 8, vec![flight()]);
    h.complete(b, Outcome::Moved(1, None));
    let r = h.expect(&[a, b]);
    assert_eq!((r[0].size, err(&r[0])), (3, "ok"));
    assert_eq!((r[1].size, err(&r[1])), (1, "ok"));
    assert_eq!(h.fake().starts(a), 1);
    h.all_done();
}

fn read_full_only_when_full<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(3), moved(2), flight()]);
    h.expect(&[]);
    h.complete(a, Outcome::Moved(3, None));
    let r = h.expect(&[a]);
    assert_eq!((r[0].size, err(&r[0])), (8, "ok"));
    assert_eq!(h.fake().sizes(a), vec![0, 3, 5]);
    h.all_done();
}

fn zero_bytes_is_eof<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(3), moved(0)]);
    let b = h.read(&s, 8, vec![flight()]);
    h.complete(b, Outcome::Moved(0, None));
    let c = h.swap_read(&s, vec![moved(0)]);
    let r = h.expect(&[a, b, c]);
    assert_eq!((r[0].size, err(&r[0])), (3, "Eof"));
    assert_eq!((r[1].size, err(&r[1])), (0, "Eof"));
    assert_eq!((r[2].size, err(&r[2])), (0, "Eof"));
    h.all_done();
}

fn write_of_zero_waits<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let w = h.write(&s, 4, vec![moved(1), moved(0), moved(3)]);
    if R {
        // Waits for the next write edge; a read edge does not wake it.
        assert_eq!(h.fake().starts(w), 2);
        h.e.ready(s.id(), true, false);
        assert_eq!(h.fake().starts(w), 2);
        h.expect(&[]);
        h.e.ready(s.id(), false, true);
    }
    // Completion mode: started again at once, polling first.
    assert_eq!(h.fake().poll_firsts(w), vec![false, false, true]);
    let r = h.expect(&[w]);
    assert_eq!((r[0].size, err(&r[0])), (4, "ok"));
    h.all_done();
}

fn failure_ends_with_io<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(3), Start::Done(failed())]);
    let w = h.write(&s, 8, vec![flight()]);
    h.complete(w, failed());
    let r = h.expect(&[a, w]);
    assert_eq!((r[0].size, err(&r[0])), (3, "Io"));
    assert_eq!((r[1].size, err(&r[1])), (0, "Io"));
    h.all_done();
}

fn swap_read_done_with_slice<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let slice = fill(&mut h.swap, 0x5a, 5).unwrap();
    let a = h.swap_read(&s, vec![Start::Done(Outcome::Moved(5, Some(slice)))]);
    let b = h.swap_read(&s, vec![flight()]);
    let slice = fill(&mut h.swap, 0x3c, 7).unwrap();
    h.complete(b, Outcome::Moved(7, Some(slice)));
    let r = h.expect(&[a, b]);
    assert!(r[0].buffer.is_swap() && r[1].buffer.is_swap());
    assert_eq!(r[0].data(), &[0x5a; 5]);
    assert_eq!(r[1].data(), &[0x3c; 7]);
    // A swap read's data without a slice is an error, not a panic.
    let c = h.swap_read(&s, vec![moved(3)]);
    let r = h.expect(&[c]);
    assert_eq!(err(&r[0]), "Io");
    h.all_done();
}

fn no_swap_starves<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let t = h.sock();
    let a = h.swap_read(&s, vec![Start::Done(Outcome::NoSwap), flight()]);
    let b = h.swap_read(&s, vec![flight()]);
    // Another connection's swap read starves too; its writes are unaffected.
    let c = h.swap_read(&t, vec![flight(), flight()]);
    h.complete(c, Outcome::NoSwap);
    let w = h.write(&t, 2, vec![moved(2)]);
    h.expect(&[w]);
    assert_eq!(h.fake().count(&Call::Starving), 2);
    assert_eq!(
        (h.fake().starts(a), h.fake().starts(b), h.fake().starts(c)),
        (1, 0, 1)
    );
    // A readiness edge does not restart a starved reader.
    h.e.ready(s.id(), true, true);
    h.e.ready(t.id(), true, true);
    assert_eq!(h.fake().starts(a), 1);
    assert_eq!(h.fake().starts(c), 1);
    // Space came back.
    h.e.retry_starved();
    assert_eq!(h.fake().count(&Call::Retrying), 1);
    assert_eq!(h.fake().starts(a), 2);
    assert_eq!(h.fake().starts(c), 2);
    assert_eq!(h.fake().starts(b), 0);
    let slice = fill(&mut h.swap, 2, 2).unwrap();
    h.complete(c, Outcome::Moved(2, Some(slice)));
    h.expect(&[c]);
    let slice = fill(&mut h.swap, 1, 4).unwrap();
    h.complete(a, Outcome::Moved(4, Some(slice)));
    let r = h.expect(&[a]);
    assert_eq!(r[0].data(), &[1; 4]);
    drop(r);
    assert_eq!(h.fake().starts(b), 1);
    let slice = fill(&mut h.swap, 3, 1).unwrap();
    h.complete(b, Outcome::Moved(1, Some(slice)));
    h.expect(&[b]);
    // Nothing starved any more: a later retry starts nothing.
    h.e.retry_starved();
    h.all_done();
}

fn starving_true_retries_at_once<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    h.fake().starving.push_back(true);
    let slice = fill(&mut h.swap, 9, 3).unwrap();
    let a = h.swap_read(
        &s,
        vec![
            Start::Done(Outcome::NoSwap),
            Start::Done(Outcome::Moved(3, Some(slice))),
        ],
    );
    let calls: Vec<Call> = h
        .fake()
        .calls
        .iter()
        .filter(|c| !matches!(c, Call::Start { .. }))
        .cloned()
        .collect();
    assert_eq!(calls, vec![Call::Starving, Call::Retrying]);
    assert_eq!(h.fake().starts(a), 2);
    let r = h.expect(&[a]);
    assert_eq!(r[0].data(), &[9; 3]);
    h.all_done();
}

fn starved_front_cancelled_lets_buffered_read_run<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.swap_read(&s, vec![Start::Done(Outcome::NoSwap)]);
    let b = h.read(&s, 4, vec![moved(4)]);
    let c = h.swap_read(&s, vec![moved(1)]);
    assert_eq!(h.fake().starts(b), 0);
    assert!(h.cancel(&s, a));
    // The read with its own buffer needs no swap space; the swap read behind it waits.
    let r = h.expect(&[a, b]);
    assert_eq!(err(&r[0]), "Canceled");
    assert_eq!((err(&r[1]), r[1].size), ("ok", 4));
    assert_eq!(h.fake().starts(c), 0);
    h.e.retry_starved();
    assert_eq!(h.fake().starts(c), 1);
    h.expect(&[c]);
    h.all_done();
}

fn deadline_in_flight<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    // Ends with the deadline, keeping what it moved.
    let a = h.sub(
        Kind::ReadFull,
        &s,
        Some(vec![0; 8]),
        Some(past()),
        false,
        vec![moved(3), flight()],
    );
    // Queued behind: its own deadline (far) does not fire.
    let far = Instant::now() + Duration::from_secs(3600);
    let b = h.sub(
        Kind::Read,
        &s,
        Some(vec![0; 8]),
        Some(far),
        false,
        vec![flight()],
    );
    // In flight when its deadline passes, and completes anyway: its real result.
    let w = h.sub(
        Kind::Write,
        &s,
        Some(vec![0; 4]),
        Some(past()),
        false,
        vec![flight()],
    );
    h.e.expire();
    h.e.expire();
    assert_eq!(h.fake().cancels(a), 1);
    assert_eq!(h.fake().cancels(w), 1);
    assert_eq!(h.fake().cancels(b), 0);
    h.expect(&[]);
    h.complete(a, Outcome::Moved(2, None));
    assert_eq!(h.fake().starts(b), 1);
    h.complete(w, Outcome::Moved(4, None));
    let r = h.expect(&[a, w]);
    assert_eq!((err(&r[0]), r[0].size), ("Deadline", 5));
    assert_eq!((err(&r[1]), r[1].size), ("ok", 4));
    // Cancelled by the kernel: the ending's error, the partial size.
    let c = h.sub(
        Kind::Write,
        &s,
        Some(vec![0; 9]),
        Some(past()),
        false,
        vec![moved(2), flight()],
    );
    h.e.expire();
    h.complete(c, Outcome::Canceled);
    let r = h.expect(&[c]);
    assert_eq!((err(&r[0]), r[0].size), ("Deadline", 2));
    assert_eq!(h.fake().cancels(c), 1);
    h.complete(b, Outcome::Moved(1, None));
    h.expect(&[b]);
    h.all_done();
}

fn cancel_in_flight<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(1), flight()]);
    let b = h.read(&s, 8, vec![flight()]);
    assert!(h.cancel(&s, a));
    assert!(
        h.cancel(&s, a),
        "still pending: cancelling again is no error"
    );
    assert_eq!(h.fake().cancels(a), 1, "the driver is asked once");
    h.expect(&[]);
    assert_eq!(h.fake().starts(b), 0);
    // EAGAIN (or EINTR) after a cancel ends it rather than waiting.
    h.complete(a, Outcome::WouldBlock);
    let r = h.expect(&[a]);
    assert_eq!((err(&r[0]), r[0].size), ("Canceled", 1));
    assert!(!h.cancel(&s, a), "finished: false");
    // The next one started; cancelled, it completes with data after all: its real result.
    assert!(h.cancel(&s, b));
    h.complete(b, Outcome::Moved(5, None));
    let r = h.expect(&[b]);
    assert_eq!((err(&r[0]), r[0].size), ("ok", 5));
    assert!(!h.cancel(&s, b));
    h.all_done();
}

fn cancel_queued_and_unknown<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let t = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    let b = h.read(&s, 8, vec![moved(1)]);
    let c = h.read(&s, 8, vec![moved(2)]);
    // Queued (not in flight): ends at once, the driver is not involved.
    assert!(h.cancel(&s, b));
    assert_eq!(h.fake().cancels(b), 0);
    let r = h.expect(&[b]);
    assert_eq!(err(&r[0]), "Canceled");
    assert!(!h.cancel(&s, 9999), "unknown id");
    assert!(!h.cancel(&t, a), "right seq, wrong connection");
    h.complete(a, Outcome::Moved(1, None));
    h.expect(&[a, c]);
    h.all_done();
}

fn free_in_flight<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(2), flight()]);
    let b = h.read(&s, 8, vec![]);
    let c = h.read(&s, 8, vec![]);
    // Readiness: waits for an edge (not in flight); completion: in flight.
    let w = h.write(&s, 8, vec![moved(3), if R { eagain() } else { flight() }]);
    let w2 = h.write(&s, 8, vec![]);
    h.free(&s);
    assert_eq!(h.fake().cancels(a), 1);
    if R {
        // The write direction had nothing in flight: ended at once, in order.
        let r = h.expect(&[w, w2]);
        assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 3));
    } else {
        assert_eq!(h.fake().cancels(w), 1);
        h.expect(&[]);
        h.complete(w, Outcome::Moved(2, None));
        let r = h.expect(&[w, w2]);
        assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 5));
    }
    // Nothing forgotten or closed while the read is in flight.
    assert_eq!(h.forgets(&s), 0);
    assert!(!peer_closed(&s.peer));
    h.free(&s);
    assert_eq!(h.fake().cancels(a), 1, "a second free asks nothing more");
    h.complete(a, Outcome::Canceled);
    let r = h.expect(&[a, b, c]);
    assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 2));
    assert_eq!(err(&r[1]), "ClosedPipe");
    assert_eq!(err(&r[2]), "ClosedPipe");
    assert_eq!(h.forgets(&s), 1);
    assert!(peer_closed(&s.peer));
    assert_eq!(h.fake().starts(b), 0);
    h.all_done();
}

fn submit_to_freed_conn<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    h.free(&s);
    // Released, descriptor not yet closed.
    let b = h.read(&s, 8, vec![]);
    let r = h.expect(&[b]);
    assert_eq!(err(&r[0]), "ConnClosed");
    h.complete(a, Outcome::Moved(3, None));
    let r = h.expect(&[a]);
    assert_eq!((err(&r[0]), r[0].size), ("ok", 3));
    assert!(peer_closed(&s.peer));
    // Gone from the table.
    let c = h.write(&s, 8, vec![]);
    let d = h.file(Kind::WriteAt, &s, 8, vec![]);
    let r = h.expect(&[c, d]);
    assert_eq!((err(&r[0]), err(&r[1])), ("ConnClosed", "ConnClosed"));
    assert_eq!(
        h.fake().starts(b) + h.fake().starts(c) + h.fake().starts(d),
        0
    );
    assert_eq!(h.forgets(&s), 1);
    h.all_done();
}

fn detach_returns_descriptor<const R: bool>() {
    let mut h = H::<R>::new();
    // Idle: the descriptor comes back at once, open.
    let s = h.sock();
    // Waiting for swap space: pending, not in flight.
    let q = h.swap_read(&s, vec![Start::Done(Outcome::NoSwap)]);
    let (tx, rx) = crossbeam_channel::bounded(1);
    s.conn.0.freed.store(true, Ordering::Release);
    h.e.detach(s.id(), tx);
    let fd = rx.try_recv().unwrap().expect("descriptor back");
    assert_eq!(ino(fd.as_raw_fd()), Some(s.ino));
    assert!(!peer_closed(&s.peer), "detached, not closed");
    assert_eq!(h.forgets(&s), 1);
    let r = h.expect(&[q]);
    assert_eq!(err(&r[0]), "ClosedPipe");
    drop(fd);
    assert!(peer_closed(&s.peer));
    // A second detach (or one after free): None.
    let (tx, rx) = crossbeam_channel::bounded(1);
    h.e.detach(s.id(), tx);
    assert!(rx.try_recv().unwrap().is_none());

    // Busy: the reply waits for the request in flight.
    let t = h.sock();
    let a = h.write(&t, 4, vec![flight()]);
    let (tx, rx) = crossbeam_channel::bounded(1);
    h.e.detach(t.id(), tx);
    assert!(rx.try_recv().is_err());
    assert_eq!(h.fake().cancels(a), 1);
    h.complete(a, Outcome::Moved(1, None));
    let fd = rx.try_recv().unwrap().expect("descriptor back");
    assert_eq!(ino(fd.as_raw_fd()), Some(t.ino));
    let r = h.expect(&[a]);
    assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 1));
    // Freed first: detach finds it closing.
    let u = h.sock();
    let b = h.read(&u, 4, vec![flight()]);
    h.free(&u);
    let (tx, rx) = crossbeam_channel::bounded(1);
    h.e.detach(u.id(), tx);
    assert!(rx.try_recv().unwrap().is_none());
    h.complete(b, Outcome::Canceled);
    h.expect(&[b]);
    assert!(peer_closed(&u.peer));
    h.all_done();
}

fn close_counts_down<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let t = h.sock();
    let idle = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    let b = h.read(&s, 8, vec![]);
    let w = h.write(&t, 8, vec![flight()]);
    let f = h.file(Kind::WriteAt, &t, 8, vec![flight()]);
    assert_eq!(h.e.in_flight(), 3);
    assert!(!h.e.handle(LoopMsg::Close));
    assert!(h.e.is_closed());
    assert_eq!(
        h.fake().cancels(a) + h.fake().cancels(w) + h.fake().cancels(f),
        3
    );
    assert!(peer_closed(&idle.peer), "an idle connection closes at once");
    assert!(!peer_closed(&s.peer) && !peer_closed(&t.peer));
    let late = h.read(&idle, 8, vec![]);
    let late2 = h.write(&s, 8, vec![]);
    let r = h.expect(&[late, late2]);
    assert_eq!((err(&r[0]), err(&r[1])), ("ClosedPipe", "ClosedPipe"));
    // A descriptor taken over after close is forgotten and closed at once.
    let u = h.sock();
    assert!(peer_closed(&u.peer));
    assert_eq!(h.forgets(&u), 1);
    h.complete(a, Outcome::Canceled);
    assert_eq!(h.e.in_flight(), 2);
    h.expect(&[a, b]);
    h.complete(w, Outcome::Moved(8, None));
    assert_eq!(h.e.in_flight(), 1);
    assert!(!peer_closed(&t.peer), "its file request is in flight");
    h.complete(f, Outcome::Moved(2, None));
    assert_eq!(h.e.in_flight(), 0);
    let r = h.take();
    assert_eq!(r.len(), 2);
    for x in [&s, &t, &idle] {
        assert!(peer_closed(&x.peer));
        assert_eq!(h.forgets(x), 1);
    }
    h.all_done();
}

fn dropped_handle_releases<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    h.complete(a, Outcome::Moved(1, None));
    h.expect(&[a]);
    let Sock { conn, peer, ino } = s;
    let id = conn.id();
    drop(conn);
    assert_eq!(*h.owner.0.lock().unwrap(), vec![id]);
    h.e.handle(LoopMsg::Dropped(id));
    assert!(peer_closed(&peer));
    assert_eq!(h.e.driver.forgets(ino), 1);
    // Late (after close, say): no second release.
    h.e.handle(LoopMsg::Dropped(id));
    assert_eq!(h.e.driver.forgets(ino), 1);
    assert_eq!(h.e.gc.closed.load(Ordering::Relaxed), 2);
    h.all_done();
}

fn files_side_by_side<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let w1 = h.file(Kind::WriteAt, &f, 8, vec![]);
    let r1 = h.file(Kind::ReadAt, &f, 8, vec![]);
    let w2 = h.file(Kind::WriteAt, &f, 8, vec![moved(3), eagain(), flight()]);
    for q in [w1, r1] {
        assert_eq!(h.fake().starts(q), 1);
    }
    // A file request is never polled: EAGAIN starts it again at once.
    assert_eq!(h.fake().starts(w2), 3);
    h.complete(w2, Outcome::Moved(5, None));
    h.complete(r1, Outcome::Moved(8, None));
    h.complete(w1, Outcome::Moved(4, None));
    let w1_again = h.held(w1);
    assert!(w1_again, "a short write_at continues");
    h.complete(w1, Outcome::Moved(4, None));
    let r = h.expect(&[w2, r1, w1]);
    assert!(r.iter().all(|r| r.size == 8 && r.is_ok()));
    h.all_done();
}

fn fsync_barrier<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let w1 = h.file(Kind::WriteAt, &f, 4, vec![flight()]);
    let w2 = h.file(Kind::WriteAt, &f, 4, vec![flight()]);
    let r1 = h.file(Kind::ReadAt, &f, 4, vec![flight()]);
    let s1 = h.file(Kind::Fsync, &f, 0, vec![flight()]);
    let w3 = h.file(Kind::WriteAt, &f, 4, vec![flight()]);
    let s2 = h.file(Kind::Fdatasync, &f, 0, vec![flight()]);
    // The fsyncs wait; the write after the first fsync does not wait for it.
    assert_eq!(h.fake().starts(s1), 0);
    assert_eq!(h.fake().starts(s2), 0);
    assert_eq!(h.fake().starts(w3), 1);
    h.complete(w2, Outcome::Moved(4, None));
    h.complete(r1, Outcome::Moved(4, None));
    assert_eq!(h.fake().starts(s1), 0);
    // The last earlier write done: the first fsync starts; the second still waits for w3.
    h.complete(w1, Outcome::Moved(4, None));
    assert_eq!(h.fake().starts(s1), 1);
    assert_eq!(h.fake().starts(s2), 0);
    h.complete(w3, failed());
    assert_eq!(
        h.fake().starts(s2),
        1,
        "a failed write releases the barrier too"
    );
    h.complete(s2, Outcome::Finished);
    h.complete(s1, Outcome::Finished);
    let r = h.expect(&[w2, r1, w1, w3, s2, s1]);
    assert_eq!(err(&r[3]), "Io");
    assert!(r[4].is_ok() && r[5].is_ok());
    // No earlier write: starts at once.
    let s3 = h.file(Kind::Fsync, &f, 0, vec![Start::Done(Outcome::Finished)]);
    h.expect(&[s3]);
    h.all_done();
}

fn fsync_waiting_ended<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let w1 = h.file(Kind::WriteAt, &f, 4, vec![flight()]);
    let s1 = h.file(Kind::Fsync, &f, 0, vec![]);
    let s2 = h.sub(Kind::Fsync, &f, None, Some(past()), false, vec![]);
    let s3 = h.file(Kind::Fsync, &f, 0, vec![flight()]);
    assert!(h.cancel(&f, s1));
    h.e.expire();
    let r = h.expect(&[s1, s2]);
    assert_eq!((err(&r[0]), err(&r[1])), ("Canceled", "Deadline"));
    assert_eq!(h.fake().cancels(s1) + h.fake().cancels(s2), 0);
    h.complete(w1, Outcome::Moved(4, None));
    assert_eq!(h.fake().starts(s1) + h.fake().starts(s2), 0);
    assert_eq!(h.fake().starts(s3), 1);
    // An fsync in flight when cancelled ends with the cancel, even when it finished.
    assert!(h.cancel(&f, s3));
    assert_eq!(h.fake().cancels(s3), 1);
    h.complete(s3, Outcome::Finished);
    let r = h.expect(&[w1, s3]);
    assert_eq!(err(&r[1]), "Canceled");
    h.all_done();
}

fn read_at_eof_and_short<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let a = h.file(Kind::ReadAt, &f, 8, vec![moved(0)]);
    let b = h.file(Kind::ReadAt, &f, 8, vec![moved(3), flight()]);
    h.complete(b, Outcome::Moved(0, None));
    let c = h.file(Kind::ReadAt, &f, 8, vec![moved(8)]);
    let r = h.expect(&[a, b, c]);
    assert_eq!((err(&r[0]), r[0].size), ("Eof", 0));
    assert_eq!((err(&r[1]), r[1].size), ("ok", 3));
    assert_eq!((err(&r[2]), r[2].size), ("ok", 8));
    h.all_done();
}

fn free_with_file_in_flight<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let w1 = h.file(Kind::WriteAt, &f, 8, vec![flight()]);
    let s1 = h.file(Kind::Fsync, &f, 0, vec![]);
    let r1 = h.file(Kind::ReadAt, &f, 8, vec![moved(2), flight()]);
    h.free(&f);
    assert_eq!((h.fake().cancels(w1), h.fake().cancels(r1)), (1, 1));
    let r = h.expect(&[s1]);
    assert_eq!(err(&r[0]), "ClosedPipe");
    h.complete(r1, Outcome::Moved(1, None));
    let r = h.expect(&[r1]);
    assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 3));
    assert!(!peer_closed(&f.peer));
    assert_eq!(h.forgets(&f), 0);
    h.complete(w1, Outcome::Moved(8, None));
    let r = h.expect(&[w1]);
    assert_eq!((err(&r[0]), r[0].size), ("ok", 8));
    assert!(peer_closed(&f.peer));
    assert_eq!(h.forgets(&f), 1);
    assert_eq!(h.fake().starts(s1), 0);
    h.all_done();
}

fn accept_adopts<const R: bool>() {
    let mut h = H::<R>::new();
    let l = h.sock();
    let (mine, peer) = socketpair();
    let ino1 = ino(mine.as_raw_fd()).unwrap();
    let a = h.sub(
        Kind::Accept,
        &l,
        None,
        None,
        false,
        vec![Start::Done(Outcome::Accepted(mine))],
    );
    let (mine2, peer2) = socketpair();
    let b = h.sub(Kind::Accept, &l, None, None, false, vec![flight()]);
    h.complete(b, Outcome::Accepted(mine2));
    let mut r = h.expect(&[a, b]);
    let adopted: Vec<ConnId> = h
        .fake()
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::Adopt { id } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(adopted.len(), 2);
    assert!(
        !adopted.contains(&l.id()) && adopted[0] != adopted[1],
        "fresh ids"
    );
    let c1 = r[0].accepted.take().expect("a Conn");
    let c2 = r[1].accepted.take().expect("a Conn");
    assert_eq!((c1.id(), c2.id()), (adopted[0], adopted[1]));
    assert!(r.iter().all(|r| r.is_ok()));
    drop(r);
    // The new connection serves requests.
    let s = Sock {
        conn: c1,
        peer,
        ino: ino1,
    };
    let q = h.read(&s, 4, vec![moved(4)]);
    h.expect(&[q]);
    h.free(&s);
    assert!(peer_closed(&s.peer));
    assert_eq!(h.forgets(&s), 1);
    // Dropping the other handle releases it.
    let id2 = c2.id();
    drop(c2);
    assert_eq!(*h.owner.0.lock().unwrap(), vec![id2]);
    h.e.handle(LoopMsg::Dropped(id2));
    assert!(peer_closed(&peer2));
    h.all_done();
}

fn accept_adopt_error<const R: bool>() {
    let mut h = H::<R>::new();
    let l = h.sock();
    let (mine, peer) = socketpair();
    h.fake()
        .adopt
        .push_back(Err(std::io::Error::from_raw_os_error(libc::ENOSPC)));
    let a = h.sub(
        Kind::Accept,
        &l,
        None,
        None,
        false,
        vec![Start::Done(Outcome::Accepted(mine))],
    );
    let r = h.expect(&[a]);
    assert_eq!(err(&r[0]), "Io");
    assert!(r[0].accepted.is_none());
    assert!(peer_closed(&peer), "the refused descriptor is closed");
    // Its id went back: the next adopt gets the slot again, under a new generation.
    let refused = match h.fake().calls.last() {
        Some(Call::Adopt { id }) => *id,
        c => panic!("last call {c:?}"),
    };
    let (mine, _peer) = socketpair();
    let b = h.sub(
        Kind::Accept,
        &l,
        None,
        None,
        false,
        vec![Start::Done(Outcome::Accepted(mine))],
    );
    let r = h.expect(&[b]);
    let c = r[0].accepted.as_ref().unwrap().id();
    assert_eq!(c.index, refused.index);
    assert_ne!(c.gen, refused.gen);
    drop(r);
    h.e.close();
    h.all_done();
}

/// An accept in flight when the watcher closes may still come back with a descriptor (the
/// kernel accepted before the cancel reached it). Nothing can serve that connection any more:
/// it must not be taken over, and its descriptor must close.
fn accept_completing_after_close<const R: bool>() {
    let mut h = H::<R>::new();
    let l = h.sock();
    let a = h.sub(Kind::Accept, &l, None, None, false, vec![flight()]);
    h.e.close();
    assert_eq!(h.fake().cancels(a), 1);
    let (mine, peer) = socketpair();
    h.complete(a, Outcome::Accepted(mine));
    let r = h.expect(&[a]);
    assert_eq!(err(&r[0]), "ClosedPipe");
    assert!(r[0].accepted.is_none());
    drop(r);
    assert!(peer_closed(&peer), "the accepted descriptor is closed");
    assert!(peer_closed(&l.peer));
    assert_eq!(h.e.in_flight(), 0);
    assert!(
        (0..h.e.table.len()).all(|i| h.e.table.get(i).is_none()),
        "no connection left in the table after close"
    );
    h.all_done();
}

fn deadline_tick<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let t0 = Instant::now() + Duration::from_secs(100);
    // Nothing planned: any deadline is earlier.
    h.sub(
        Kind::Read,
        &s,
        Some(vec![0; 4]),
        Some(t0),
        false,
        vec![flight()],
    );
    assert!(h.tick);
    assert_eq!(h.e.plan_sleep(), Some(t0));
    // Later than the planned wake-up: no tick.
    h.sub(
        Kind::Read,
        &s,
        Some(vec![0; 4]),
        Some(t0 + Duration::from_secs(1)),
        false,
        vec![],
    );
    assert!(!h.tick);
    // Earlier: tick.
    let t1 = t0 - Duration::from_secs(50);
    h.sub(
        Kind::Write,
        &s,
        Some(vec![0; 4]),
        Some(t1),
        false,
        vec![flight()],
    );
    assert!(h.tick);
    // No deadline: no tick.
    h.sub(Kind::Write, &s, Some(vec![0; 4]), None, false, vec![]);
    assert!(!h.tick);
    // Finished at once: no deadline armed, no tick.
    let t2 = t1 - Duration::from_secs(10);
    h.sub(
        Kind::ReadAt,
        &s,
        Some(vec![0; 4]),
        Some(t2),
        false,
        vec![moved(4)],
    );
    assert!(!h.tick);
    assert_eq!(h.e.plan_sleep(), Some(t1));
    h.e.close();
    let held: Vec<u64> = h.fake().held.keys().copied().collect();
    for q in held {
        h.complete(q, Outcome::Canceled);
    }
    h.all_done();
}

/// ECANCELED with no ending of ours (io_uring's teardown): `ClosedPipe`, keeping the size;
/// the request behind starts.
fn kernel_cancel_without_ending<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.write(&s, 8, vec![moved(3), flight()]);
    let b = h.write(&s, 8, vec![moved(8)]);
    h.complete(a, Outcome::Canceled);
    let r = h.expect(&[a, b]);
    assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 3));
    assert_eq!((err(&r[1]), r[1].size), ("ok", 8));
    assert_eq!(h.fake().cancels(a), 0);
    h.all_done();
}

/// A connect is served in the write direction: reads are not held up by it, writes wait.
fn connect_on_write_lane<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let c = h.sub(Kind::Connect, &s, None, None, false, vec![flight()]);
    let w = h.write(&s, 4, vec![moved(4)]);
    let r = h.read(&s, 4, vec![moved(1)]);
    assert_eq!(h.fake().starts(w), 0);
    h.expect(&[r]);
    h.complete(c, Outcome::Finished);
    let got = h.expect(&[c, w]);
    assert!(got[0].is_ok() && got[0].accepted.is_none());
    h.all_done();
}

/// `LoopMsg::Completed` (a file thread's outcome) reaches only the request it was for: a stale
/// one (same slab key, another request) is dropped.
fn completed_message_checks_seq<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let a = h.file(Kind::ReadAt, &f, 8, vec![flight()]);
    let (key, _) = h.fake().held[&a];
    h.e.handle(LoopMsg::Completed {
        key,
        seq: a + 100,
        outcome: Outcome::Moved(8, None),
    });
    h.expect(&[]);
    assert_eq!(h.e.in_flight(), 1);
    h.fake().held.remove(&a);
    h.e.handle(LoopMsg::Completed {
        key,
        seq: a,
        outcome: Outcome::Moved(8, None),
    });
    let r = h.expect(&[a]);
    assert_eq!((err(&r[0]), r[0].size), ("ok", 8));
    // Late: the request is gone.
    h.e.handle(LoopMsg::Completed {
        key,
        seq: a,
        outcome: Outcome::Moved(8, None),
    });
    h.all_done();
}

/// EAGAIN in readiness mode: the request waits for `ready`; one submitted with `poll_first`
/// (it met EAGAIN on the submitting thread) is attempted at once only if an edge came while
/// the direction's queue was empty.
#[test]
fn readiness_waits_for_edge() {
    let mut h = H::<true>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![eagain(), moved(2)]);
    assert_eq!(h.fake().starts(a), 1);
    h.e.ready(s.id(), false, true);
    assert_eq!(h.fake().starts(a), 1, "a write edge does not serve reads");
    h.e.ready(s.id(), true, false);
    assert_eq!(h.fake().poll_firsts(a), vec![false, true]);
    h.expect(&[a]);
    // No edge since the EAGAIN: a poll-first submission waits.
    let b = h.sub(Kind::Read, &s, Some(vec![0; 8]), None, true, vec![moved(1)]);
    assert_eq!(h.fake().starts(b), 0);
    h.e.ready(s.id(), true, false);
    assert_eq!(h.fake().starts(b), 1);
    h.expect(&[b]);
    // An edge came while the queue was empty: attempted at once.
    h.e.ready(s.id(), true, false);
    let c = h.sub(
        Kind::Read,
        &s,
        Some(vec![0; 8]),
        None,
        true,
        vec![eagain(), moved(1)],
    );
    assert_eq!(h.fake().starts(c), 1);
    // ... and its EAGAIN used the edge up.
    h.e.ready(s.id(), true, false);
    h.expect(&[c]);
    let d = h.sub(Kind::Read, &s, Some(vec![0; 8]), None, true, vec![moved(1)]);
    assert_eq!(
        h.fake().starts(d),
        0,
        "the last attempt met EAGAIN; no edge since"
    );
    // Without poll_first: attempted regardless.
    let t = h.sock();
    h.e.ready(t.id(), true, false);
    let e = h.read(&t, 8, vec![eagain()]);
    let f = h.read(&t, 8, vec![]);
    h.free(&t);
    h.expect(&[e, f]);
    let w = h.write(&s, 8, vec![eagain()]);
    h.free(&s);
    h.expect(&[d, w]);
    assert!(peer_closed(&s.peer));
    h.all_done();
}

/// EAGAIN in completion mode: started again at once, with `poll_first` set; a poll-first
/// submission is started at once (the driver polls).
#[test]
fn completion_restarts_polling_first() {
    let mut h = H::<false>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![eagain(), flight(), flight()]);
    assert_eq!(h.fake().poll_firsts(a), vec![false, true]);
    h.complete(a, Outcome::WouldBlock);
    assert_eq!(h.fake().poll_firsts(a), vec![false, true, true]);
    h.complete(a, Outcome::Moved(2, None));
    let r = h.expect(&[a]);
    assert_eq!(r[0].size, 2);
    let b = h.sub(
        Kind::Write,
        &s,
        Some(vec![0; 4]),
        None,
        true,
        vec![flight()],
    );
    assert_eq!(h.fake().poll_firsts(b), vec![true]);
    // EINTR (or a stale ENOBUFS): again at once, as it was.
    h.complete(b, Outcome::Retry);
    assert_eq!(h.fake().poll_firsts(b), vec![true, false]);
    h.complete(b, Outcome::Moved(4, None));
    h.expect(&[b]);
    h.all_done();
}

/// A random interleaving of submits, outcomes, completions, cancels, frees, detaches,
/// expiries, readiness and swap retries, checked after every step: one result per request,
/// none for a request in flight (checked by `take`), FIFO per direction, the engine's count
/// of requests in flight equal to the driver's, descriptors forgotten once, while open and
/// with nothing in flight (checked by the fake), and closed only after that.
///
/// `GAIO_ENGINE_SEEDS=n` runs n seeds instead of 300.
fn randomized<const R: bool>() {
    let seeds = std::env::var("GAIO_ENGINE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    for seed in 1..=seeds {
        run_random::<R>(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, 120, false);
    }
}

/// One random run; with `count`, also checks that the descriptors open at the end are exactly
/// the test's own (meaningful only where no other thread opens any: see
/// `descriptors_closed_once`).
fn run_random<const R: bool>(seed: u64, steps: usize, count: bool) {
    let base = count.then(open_fds);
    let mut h = H::<R>::new();
    let mut rng = Rng(seed);
    h.fake().rng = Some(Rng(seed ^ 0x5555));
    h.fake().swap = Some(swap_pool());
    let mut socks: Vec<Sock> = (0..3).map(|_| h.sock()).collect();
    // Connections released (freed, detached) or whose handles were dropped, and detached
    // descriptors kept open.
    let mut gone: Vec<Gone> = Vec::new();
    let mut detached: Vec<(u64, crossbeam_channel::Receiver<Option<OwnedFd>>)> = Vec::new();
    let mut swaps: Vec<SwapSlice> = Vec::new();
    let ctx = |seed: u64, step: usize| format!("seed {seed:#x}, step {step}");
    for step in 0..steps {
        let what = rng.below(100);
        let n_socks = socks.len() as u64;
        match what {
            0..=39 if n_socks > 0 => {
                let s = &socks[rng.below(n_socks) as usize];
                let kind = match rng.below(10) {
                    0 | 1 => Kind::Read,
                    2 => Kind::ReadFull,
                    3 | 4 => Kind::Write,
                    5 => Kind::ReadAt,
                    6 => Kind::WriteAt,
                    7 => Kind::Fsync,
                    8 => Kind::Accept,
                    _ => Kind::Read,
                };
                let buf = match kind {
                    Kind::Fsync | Kind::Accept => None,
                    Kind::Read if rng.chance(50) => None,
                    _ => Some(vec![0; 1 + rng.below(16) as usize]),
                };
                let deadline = match rng.below(4) {
                    0 => Some(past()),
                    1 => Some(Instant::now() + Duration::from_secs(3600)),
                    _ => None,
                };
                let poll_first = rng.chance(20);
                h.sub(kind, s, buf, deadline, poll_first, vec![]);
            }
            40..=64 => {
                // The driver reports one request it holds.
                let mut held: Vec<u64> = h.fake().held.keys().copied().collect();
                held.sort_unstable();
                if !held.is_empty() {
                    let q = held[rng.below(held.len() as u64) as usize];
                    let key = h.fake().held[&q].0;
                    let req = h.e.in_flight_request(key).expect("held means in flight");
                    assert_eq!(req.id.seq, q);
                    let shape = Shape::of(req);
                    let d = &mut h.e.driver;
                    let o = random_outcome(&mut rng, shape, d.swap.as_mut(), &mut d.peers);
                    let o = match o {
                        Outcome::Moved(..) | Outcome::Failed(_) | Outcome::Finished => o,
                        _ if rng.chance(30) => Outcome::Canceled,
                        o => o,
                    };
                    h.complete(q, o);
                }
            }
            65..=71 => {
                let mut all: Vec<u64> = h.subs.keys().copied().collect();
                all.sort_unstable();
                if let Some(&q) = all.get(rng.below(all.len() as u64 + 1) as usize) {
                    let id = OpId {
                        seq: q,
                        conn: h.subs[&q].conn,
                    };
                    let pending = h.e.ops.iter().any(|(_, r)| r.id == id);
                    assert_eq!(h.e.cancel(id), pending, "{}", ctx(seed, step));
                }
            }
            72..=77 => {
                h.e.expire();
                // Nothing pending is past its deadline without an ending on its way.
                let now = Instant::now();
                for (_, r) in h.e.ops.iter() {
                    if r.deadline.is_some_and(|d| d <= now) {
                        assert!(r.in_flight && r.cancel.is_some(), "{}", ctx(seed, step));
                    }
                }
            }
            78..=84 if n_socks > 0 => {
                let s = &socks[rng.below(n_socks) as usize];
                h.e.ready(s.id(), rng.chance(60), rng.chance(60));
            }
            85..=88 => {
                if rng.chance(50) {
                    swaps.clear();
                }
                h.e.retry_starved();
            }
            89 | 90 if n_socks > 1 => {
                let s = socks.swap_remove(rng.below(n_socks) as usize);
                h.free(&s);
                gone.push(Gone::of(s, false));
            }
            91 if n_socks > 1 => {
                let s = socks.swap_remove(rng.below(n_socks) as usize);
                let (tx, rx) = crossbeam_channel::bounded(1);
                s.conn.0.freed.store(true, Ordering::Release);
                h.e.detach(s.id(), tx);
                // The reply comes when the last request in flight on it completes.
                detached.push((s.ino, rx));
                gone.push(Gone::of(s, false));
            }
            92..=94 if n_socks < 6 => socks.push(h.sock()),
            // The last handle goes once no request or result holds a clone.
            95 | 96 if n_socks > 1 => {
                let s = socks.swap_remove(rng.below(n_socks) as usize);
                gone.push(Gone::of(s, true));
            }
            _ => {}
        }
        take_random(&mut h, &mut rng, &mut socks, &mut gone, &mut swaps);
        assert_eq!(
            h.e.in_flight(),
            h.e.driver.held.len(),
            "{}",
            ctx(seed, step)
        );
        check_not_stranded(&h, &ctx(seed, step));
        // A released connection is closed (or detached) once nothing of it is in flight; one
        // whose handles are gone, once it is idle too and its last clone went.
        for g in &gone {
            let busy = h.e.driver.held.values().any(|v| v.1 == g.id);
            let forgotten = h.e.driver.forgets(g.ino);
            assert!(forgotten <= 1, "{}", ctx(seed, step));
            if g.dropped {
                assert!(forgotten == 0 || !busy, "{}", ctx(seed, step));
            } else {
                assert_eq!(forgotten == 1, !busy, "{}", ctx(seed, step));
            }
        }
    }
    // Shut down: every request in flight comes back (as the kernel's cancel would, or done).
    h.e.close();
    let mut rounds = 0;
    while !h.e.driver.held.is_empty() {
        rounds += 1;
        assert!(rounds < 10_000, "{}: not winding down", ctx(seed, steps));
        let q = *h.e.driver.held.keys().min().unwrap();
        // Cancelled, or done before the cancel reached it (an accept: a new descriptor).
        let o = if rng.chance(50) {
            Outcome::Canceled
        } else {
            let key = h.e.driver.held[&q].0;
            let shape = Shape::of(h.e.in_flight_request(key).expect("in flight"));
            let d = &mut h.e.driver;
            random_outcome(&mut rng, shape, d.swap.as_mut(), &mut d.peers)
        };
        h.complete(q, o);
        take_random(&mut h, &mut rng, &mut socks, &mut gone, &mut swaps);
    }
    take_random(&mut h, &mut rng, &mut socks, &mut gone, &mut swaps);
    h.all_done();
    let detached: HashMap<u64, OwnedFd> = detached
        .into_iter()
        .map(|(ino, rx)| {
            let fd = rx.try_recv().expect("detach answered").expect("descriptor");
            assert_eq!(self::ino(fd.as_raw_fd()), Some(ino));
            (ino, fd)
        })
        .collect();
    let all: Vec<(u64, &OwnedFd)> = socks
        .iter()
        .map(|s| (s.ino, &s.peer))
        .chain(gone.iter().map(|g| (g.ino, &g.peer)))
        .collect();
    for &(ino, peer) in &all {
        assert_eq!(h.e.driver.forgets(ino), 1, "{}", ctx(seed, steps));
        let closed = peer_closed(peer);
        assert_eq!(closed, !detached.contains_key(&ino), "{}", ctx(seed, steps));
    }
    drop(all);
    // Accepted descriptors never taken over (refused, or after close): closed, not forgotten.
    for (ino, peer) in &h.e.driver.peers {
        assert!(peer_closed(peer), "{}", ctx(seed, steps));
        assert_eq!(h.e.driver.forgets(*ino), 0, "{}", ctx(seed, steps));
    }
    if let Some(base) = base {
        // The test holds the peers and the detached descriptors; the engine holds none.
        let ours = socks.len() + gone.len() + h.e.driver.peers.len() + detached.len();
        assert_eq!(open_fds(), base + ours, "{}", ctx(seed, steps));
        drop((socks, gone, detached, h));
        assert_eq!(open_fds(), base, "{}", ctx(seed, steps));
    }
}

/// No request is stranded: each pending one is in flight, or waits for something that will
/// come (the next edge after an EAGAIN, swap space, an earlier write before an fsync), or is
/// behind the front of its direction.
fn check_not_stranded<const R: bool>(h: &H<R>, ctx: &str) {
    let e = &h.e;
    for i in 0..e.table.len() {
        let Some(s) = e.table.get(i) else { continue };
        if s.starved {
            assert!(e.starved.contains(&s.id), "{ctx}: starved but not listed");
        }
        for lane in [Lane::Read, Lane::Write] {
            let Some(&key) = s.queues[lane as usize].front() else {
                continue;
            };
            let r = &e.ops[key];
            assert_eq!(r.in_flight, s.in_flight[lane as usize], "{ctx}");
            // (A released connection keeps only a request in flight at each front.)
            let waits = r.in_flight
                || (s.starved && r.buffer.is_none())
                // Readiness: it met EAGAIN (here or on the submitting thread).
                || (R && r.poll_first);
            assert!(waits, "{ctx}: front request {} stranded", r.id.seq);
            for &k in s.queues[lane as usize].iter().skip(1) {
                assert!(!e.ops[k].in_flight, "{ctx}: behind the front, in flight");
            }
        }
        let Some(f) = s.file.as_ref() else { continue };
        for &k in &f.pending {
            let r = &e.ops[k];
            let barrier = matches!(r.kind, Kind::Fsync | Kind::Fdatasync)
                && f.pending
                    .iter()
                    .any(|&w| e.ops[w].kind == Kind::WriteAt && e.ops[w].id.seq < r.id.seq);
            assert!(
                r.in_flight || barrier,
                "{ctx}: file request {} stranded",
                r.id.seq
            );
        }
    }
}

/// A connection the random test let go of: freed or detached, or its handle dropped.
struct Gone {
    id: ConnId,
    peer: OwnedFd,
    ino: u64,
    /// Handle dropped (released only once no request or result holds a clone).
    dropped: bool,
}

impl Gone {
    fn of(s: Sock, dropped: bool) -> Gone {
        Gone {
            id: s.id(),
            peer: s.peer,
            ino: s.ino,
            dropped,
        }
    }
}

/// Takes the results of the random test: keeps some swap slices (so swap reads starve), keeps
/// some accepted connections for later requests and drops the others, and hands the engine
/// the handles dropped since (`LoopMsg::Dropped`, as the real owner does).
fn take_random<const R: bool>(
    h: &mut H<R>,
    rng: &mut Rng,
    socks: &mut Vec<Sock>,
    gone: &mut Vec<Gone>,
    swaps: &mut Vec<SwapSlice>,
) {
    loop {
        for mut r in h.take() {
            if let Some(c) = r.accepted.take() {
                let ino = ino(c.raw_fd()).expect("an accepted descriptor is open");
                let peer = h.e.driver.peers.remove(&ino).expect("its peer");
                let s = Sock { conn: c, peer, ino };
                if socks.len() < 6 && rng.chance(50) {
                    socks.push(s);
                } else {
                    gone.push(Gone::of(s, true));
                }
            }
            if let Buffer::Swap(s) = r.buffer {
                if rng.chance(50) {
                    swaps.push(s);
                }
            }
        }
        let dropped = std::mem::take(&mut *h.owner.0.lock().unwrap());
        if dropped.is_empty() {
            return;
        }
        for id in dropped {
            h.e.handle(LoopMsg::Dropped(id));
        }
    }
}

/// Descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Counts `/proc/self/fd` around random runs in both modes: the engine closes every
/// descriptor it took over (and every one it refused), exactly once each (the count comes back
/// to the test's own, and each closed pair reads EOF). Other tests open descriptors
/// concurrently, so the count runs in a child process that runs this test alone.
#[test]
fn descriptors_closed_once() {
    const CHILD: &str = "GAIO_ENGINE_FD_CHILD";
    if std::env::var_os(CHILD).is_some() {
        for seed in 1..=60u64 {
            let seed = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
            run_random::<true>(seed, 150, true);
            run_random::<false>(seed, 150, true);
        }
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "engine::tests::descriptors_closed_once",
            "--exact",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}
