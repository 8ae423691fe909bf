//! Model-based randomized test (proptest) of the connection lifecycle: `accept`, `connect` and
//! `detach`, on both backends.
//!
//! Each case watches a listening socket and runs a random sequence of actions:
//! - `accept` / `accept_timeout` (deadline past, or a few ms ahead) on the watched listener, and
//!   clients (std sockets) that connect to it, each sending an 8-byte hello first: pending
//!   accepts and waiting clients in random numbers either way;
//! - `connect` to a listening address (its own std listener), to a bound port nobody listens
//!   on (`ECONNREFUSED`) and to a listener whose accept queue is full (the SYN is dropped, so
//!   only the deadline ends it), with and without a deadline;
//! - `free` of the listener with accepts pending (then a new listener is watched);
//! - on every connection that `accept` or `connect` gave: `read` (caller buffer or swap),
//!   `write` of 1 byte to 200 KiB, `free`, `detach` at a random moment (requests pending or
//!   not), and from the peer: send, half-close, stall (stop reading, so large writes stay
//!   pending);
//! - `cancel` of any pending request (accept and connect included); one `wait_io_timeout`;
//! - one case in four ends with `close` while requests are pending (then every stream is only
//!   checked as a prefix), instead of a drain.
//!
//! Checked against the model, per case:
//! - exactly one result per accepted submission (none after the drain); refusals (on a freed or
//!   detached connection) give `ConnClosed` with context and buffer back;
//! - every buffer comes back (a write's bytes unchanged, a swap slice of exactly `size` bytes);
//!   accept and connect results carry no buffer and `size` 0;
//! - each error is one the model allows: `Deadline` only with a deadline and not before it,
//!   `Canceled` only after a `cancel` that found the request, `ClosedPipe` only after a free or
//!   detach, `Eof` only after the peer's half-close, `ECONNREFUSED` only from the closed port; a
//!   connect to the listening address succeeds unless ended by its deadline or a cancel;
//! - an accept result carries a new connection (`accepted`) exactly when it succeeds, and
//!   accepts on one listener succeed in submission order; the k-th accepted connection is the
//!   k-th client's (its first bytes are that client's hello: the stream check below covers it);
//! - a detached connection's descriptor comes back open, in the blocking mode the backend set,
//!   and works: the test goes on reading and writing it with std, and the bytes the watcher's
//!   reads delivered followed by those read with std are exactly what the peer sent, the bytes
//!   the peer received exactly the watcher's writes (cut to their `size`) followed by the std
//!   writes;
//! - for every other connection, the bytes its reads delivered are exactly the peer's (a prefix
//!   if freed early), in submission order, and the peer receives exactly the bytes of the writes;
//! - no descriptor is left open after the case (in a process of its own, see `util::own_process`).
//!
//! 64 cases per backend by default (`PROPTEST_CASES` overrides). Failures are shrunk and their
//! seeds persisted in `tests/model_conns.proptest-regressions`.

#[macro_use]
mod util;

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gaio::{Backend, Buffer, Conn, Error, OpId, OpResult, OpType, Watcher};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// Longest the final drain of a case may take (normally a few milliseconds).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A std listener of its own: succeeds.
    Listening,
    /// A port bound but not listening: `ECONNREFUSED`.
    Refused,
    /// A listener whose accept queue is full: never completes (always given a deadline).
    Full,
}

#[derive(Debug, Clone)]
enum Action {
    Accept {
        deadline_ms: Option<i64>,
    },
    /// A client connects to the watched listener and sends its hello.
    ClientConnect,
    Connect {
        target: Target,
        deadline_ms: Option<i64>,
    },
    /// `free` the watched listener, then listen anew.
    FreeListener,
    /// `read` on the `conn`-th live connection, into a buffer of this length or the swap.
    Read {
        conn: usize,
        buf: Option<usize>,
    },
    Write {
        conn: usize,
        len: usize,
    },
    PeerSend {
        conn: usize,
        len: usize,
    },
    PeerShutdown {
        conn: usize,
    },
    /// The peer stops reading, or resumes.
    PeerStall {
        conn: usize,
    },
    Free {
        conn: usize,
    },
    Detach {
        conn: usize,
    },
    Cancel {
        pick: usize,
    },
    Wait {
        ms: u64,
    },
}

#[derive(Debug, Clone)]
struct Case {
    actions: Vec<Action>,
    /// End with `close` while requests are pending, instead of draining them.
    close_early: bool,
}

fn deadline_ms() -> impl Strategy<Value = i64> {
    prop_oneof![-20i64..0, 0i64..40]
}

fn action() -> impl Strategy<Value = Action> {
    let c = 0usize..8;
    let connect = prop_oneof![
        3 => (Just(Target::Listening), proptest::option::of(deadline_ms())),
        1 => (Just(Target::Refused), proptest::option::of(deadline_ms())),
        1 => (Just(Target::Full), deadline_ms().prop_map(Some)),
    ];
    prop_oneof![
        3 => proptest::option::of(deadline_ms()).prop_map(|deadline_ms| Action::Accept { deadline_ms }),
        3 => Just(Action::ClientConnect),
        3 => connect.prop_map(|(target, deadline_ms)| Action::Connect { target, deadline_ms }),
        1 => Just(Action::FreeListener),
        4 => (c.clone(), prop_oneof![Just(None), (1usize..5000).prop_map(Some)])
            .prop_map(|(conn, buf)| Action::Read { conn, buf }),
        3 => (c.clone(), prop_oneof![3 => 1usize..5000, 1 => 5000usize..(200 << 10)])
            .prop_map(|(conn, len)| Action::Write { conn, len }),
        4 => (c.clone(), 1usize..70_000).prop_map(|(conn, len)| Action::PeerSend { conn, len }),
        1 => c.clone().prop_map(|conn| Action::PeerShutdown { conn }),
        2 => c.clone().prop_map(|conn| Action::PeerStall { conn }),
        1 => c.clone().prop_map(|conn| Action::Free { conn }),
        3 => c.prop_map(|conn| Action::Detach { conn }),
        1 => (0usize..64).prop_map(|pick| Action::Cancel { pick }),
        2 => (0u64..20).prop_map(|ms| Action::Wait { ms }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(action(), 1..48),
        prop_oneof![3 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(actions, close_early)| Case {
            actions,
            close_early,
        })
}

/// The fixed targets of `connect`, made once per test (per backend).
struct Targets {
    /// Bound, not listening.
    refused: socket2::Socket,
    /// Listening with a backlog of 0, its queue filled.
    full: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl Targets {
    fn new() -> Targets {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let refused =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        refused.bind(&any.into()).unwrap();
        let full =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        full.bind(&any.into()).unwrap();
        full.listen(0).unwrap();
        let addr = full.local_addr().unwrap().as_socket().unwrap();
        // Connect until one attempt gets no answer: the queue is full and SYNs are dropped.
        let mut fillers = Vec::new();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(c) => fillers.push(c),
                Err(_) => break,
            }
            assert!(
                fillers.len() < 8,
                "the accept queue of a backlog-0 listener never filled"
            );
        }
        Targets {
            refused,
            full,
            _fillers: fillers,
        }
    }

    fn addr(&self, t: Target, own: Option<&TcpListener>) -> SocketAddr {
        match t {
            Target::Listening => own.unwrap().local_addr().unwrap(),
            Target::Refused => self.refused.local_addr().unwrap().as_socket().unwrap(),
            Target::Full => self.full.local_addr().unwrap().as_socket().unwrap(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Accept,
    Connect,
    Read,
    Write,
}

struct Pending {
    id: OpId,
    kind: Kind,
    /// The listener of an accept, the connection of a read or write.
    on: usize,
    /// The key of the connection it was submitted on (none for a connect).
    key: Option<u64>,
    deadline: Option<Instant>,
    cancel: Option<bool>,
    /// Caller buffer length of a read or write; `None` for a swap read.
    len: Option<usize>,
    write: Option<usize>,
    target: Option<Target>,
    /// A connect to `Listening`: the listener its peer is accepted from.
    own: Option<TcpListener>,
}

struct ListenerModel {
    handle: Conn,
    addr: SocketAddr,
    freed: bool,
    /// Clients connected and not yet accepted, in connection order (indices into `conns`).
    waiting: VecDeque<usize>,
    last_accept: Option<OpId>,
}

/// One connection: a client waiting to be accepted, or one `accept`/`connect` gave.
struct ConnModel {
    handle: Option<Conn>,
    key: u64,
    peer: Option<TcpStream>,
    freed: bool,
    /// Detached: our side is now this std socket.
    detached: Option<TcpStream>,
    peer_shut: bool,
    stalled: bool,
    /// The peer saw EOF (or an error) reading.
    peer_done: bool,
    got_eof: bool,
    sent_by_peer: Vec<u8>,
    peer_received: Vec<u8>,
    read_stream: Vec<u8>,
    /// Read and written with std after a detach.
    std_read: Vec<u8>,
    std_written: Vec<u8>,
    last_read_with_data: Option<OpId>,
    last_write_with_data: Option<OpId>,
    writes: Vec<(Vec<u8>, Option<usize>)>,
    rng: util::XorShift,
}

impl ConnModel {
    fn new(peer: TcpStream, seed: u64) -> ConnModel {
        peer.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(64 << 10)
            .unwrap();
        ConnModel {
            handle: None,
            key: u64::MAX,
            peer: Some(peer),
            freed: false,
            detached: None,
            peer_shut: false,
            stalled: false,
            peer_done: false,
            got_eof: false,
            sent_by_peer: Vec::new(),
            peer_received: Vec::new(),
            read_stream: Vec::new(),
            std_read: Vec::new(),
            std_written: Vec::new(),
            last_read_with_data: None,
            last_write_with_data: None,
            writes: Vec::new(),
            rng: util::XorShift::new(seed),
        }
    }

    /// Requests can be submitted on it.
    fn live(&self) -> bool {
        self.handle.is_some() && !self.freed && self.detached.is_none()
    }
}

#[derive(Default, Debug)]
struct Stats {
    cases: usize,
    submitted: usize,
    refused: usize,
    results: BTreeMap<String, usize>,
    accepted: usize,
    connected: usize,
    detached: usize,
    detached_with_pending: usize,
    /// Cases ended by `close` with requests pending, and how many were pending.
    closed_early: usize,
    pending_at_close: usize,
    /// Writes that ended (free, detach, cancel) after part of their bytes.
    partial_writes: usize,
    bytes_read: usize,
    bytes_written: usize,
}

struct Run<'a> {
    w: Watcher<u64>,
    backend: Backend,
    targets: &'a Targets,
    listeners: Vec<ListenerModel>,
    conns: Vec<ConnModel>,
    pending: BTreeMap<u64, Pending>,
    next_ctx: u64,
    next_seed: u64,
    /// Requests pending when `close_early` began.
    closed_with: usize,
    stats: &'a Mutex<Stats>,
}

fn outcome_name(res: &OpResult<u64>) -> String {
    match &res.error {
        None => format!("{:?} ok", res.op),
        Some(Error::Io(e)) => format!("{:?} {:?}", res.op, e.kind()),
        Some(e) => format!("{:?} {e:?}", res.op),
    }
}

fn deadline_at(ms: i64) -> Instant {
    let now = Instant::now();
    if ms < 0 {
        now.checked_sub(Duration::from_millis(ms.unsigned_abs()))
            .unwrap_or(now)
    } else {
        now + Duration::from_millis(ms as u64)
    }
}

/// Accepts the one connection a std listener is known to have queued, within a bound.
fn accept_queued(ln: &TcpListener) -> TcpStream {
    ln.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match ln.accept() {
            Ok((s, _)) => return s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "the connection connect reported is not in the listener's queue"
                );
                std::thread::yield_now();
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

impl Run<'_> {
    fn listen(&mut self) {
        let ln = util::listen();
        // Accepted sockets inherit a small send buffer, so that a large write stays pending
        // while the peer stalls, and frees and detaches meet writes in progress.
        socket2::SockRef::from(&ln)
            .set_send_buffer_size(64 << 10)
            .unwrap();
        let addr = ln.local_addr().unwrap();
        let handle = self.w.watch(&ln).unwrap();
        drop(ln);
        self.listeners.push(ListenerModel {
            handle,
            addr,
            freed: false,
            waiting: VecDeque::new(),
            last_accept: None,
        });
    }

    fn seed(&mut self) -> u64 {
        self.next_seed += 1;
        self.next_seed * 0x9e37_79b9
    }

    /// The `i`-th connection requests can be submitted on, if any.
    fn live(&self, i: usize) -> Option<usize> {
        let live: Vec<usize> = (0..self.conns.len())
            .filter(|&k| self.conns[k].live())
            .collect();
        (!live.is_empty()).then(|| live[i % live.len()])
    }

    fn ctx(&mut self) -> u64 {
        self.next_ctx += 1;
        self.next_ctx
    }

    fn accept(&mut self, deadline_ms: Option<i64>) {
        let l = self.listeners.len() - 1;
        let ctx = self.ctx();
        let deadline = deadline_ms.map(deadline_at);
        let h = &self.listeners[l].handle;
        let r = match deadline {
            Some(d) => self.w.accept_timeout(ctx, h, d),
            None => self.w.accept(ctx, h),
        };
        let id = r.unwrap_or_else(|e| panic!("{}: accept refused: {e:?}", self.backend));
        self.add_pending(ctx, id, Kind::Accept, l, Some(h.key()), deadline);
    }

    fn add_pending(
        &mut self,
        ctx: u64,
        id: OpId,
        kind: Kind,
        on: usize,
        key: Option<u64>,
        deadline: Option<Instant>,
    ) -> &mut Pending {
        self.stats.lock().unwrap().submitted += 1;
        self.pending.entry(ctx).or_insert(Pending {
            id,
            kind,
            on,
            key,
            deadline,
            cancel: None,
            len: None,
            write: None,
            target: None,
            own: None,
        })
    }

    fn client_connect(&mut self) {
        let l = self.listeners.len() - 1;
        let mut peer = util::dial(self.listeners[l].addr);
        let hello = self.seed().to_le_bytes();
        peer.write_all(&hello).unwrap();
        let seed = self.seed();
        let mut c = ConnModel::new(peer, seed);
        c.sent_by_peer.extend_from_slice(&hello);
        self.conns.push(c);
        self.listeners[l].waiting.push_back(self.conns.len() - 1);
    }

    fn connect(&mut self, target: Target, deadline_ms: Option<i64>) {
        let own = (target == Target::Listening).then(|| TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = self.targets.addr(target, own.as_ref());
        let ctx = self.ctx();
        let deadline = deadline_ms.map(deadline_at);
        let id = self
            .w
            .connect(ctx, addr, deadline)
            .unwrap_or_else(|e| panic!("{}: connect refused: {e:?}", self.backend));
        let p = self.add_pending(ctx, id, Kind::Connect, 0, None, deadline);
        p.target = Some(target);
        p.own = own;
    }

    fn submit_stream(&mut self, i: usize, kind: Kind, len: Option<usize>) {
        let ctx = self.ctx();
        let c = &mut self.conns[i];
        let handle = c.handle.clone().unwrap();
        let (r, bytes) = match kind {
            Kind::Read => (self.w.read(ctx, &handle, len.map(|n| vec![0u8; n])), None),
            _ => {
                let mut b = vec![0u8; len.unwrap()];
                c.rng.fill(&mut b);
                (self.w.write(ctx, &handle, b.clone()), Some(b))
            }
        };
        match r {
            Ok(id) => {
                assert!(
                    c.live(),
                    "a submission on a freed or detached connection was accepted"
                );
                let write = bytes.map(|b| {
                    c.writes.push((b, None));
                    c.writes.len() - 1
                });
                let p = self.add_pending(ctx, id, kind, i, Some(handle.key()), None);
                p.len = len;
                p.write = write;
            }
            Err(e) => {
                assert!(!c.live(), "refused on a live connection: {e:?}");
                assert!(matches!(e.error, Error::ConnClosed), "{e:?}");
                assert_eq!(e.context, ctx, "the refused context comes back");
                assert_eq!(e.buffer.as_ref().map(|b| b.len()), len, "the buffer back");
                if let Some(b) = bytes {
                    assert_eq!(
                        e.buffer.as_ref().map(gaio::Buffer::as_slice),
                        Some(&b[..]),
                        "the write's bytes back"
                    );
                }
                self.stats.lock().unwrap().refused += 1;
            }
        }
    }

    fn detach(&mut self, i: usize) {
        let b = self.backend;
        let pending = self
            .pending
            .values()
            .filter(|p| p.on == i && matches!(p.kind, Kind::Read | Kind::Write))
            .count();
        let c = &mut self.conns[i];
        let handle = c.handle.clone().unwrap();
        let fd = self.w.detach(&handle).expect("detach");
        // SAFETY: F_GETFL on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        let nonblocking = flags & libc::O_NONBLOCK != 0;
        assert_eq!(
            nonblocking,
            b == Backend::Epoll,
            "{b}: blocking mode of a detached descriptor"
        );
        assert!(
            matches!(self.w.detach(&handle), Err(Error::ConnClosed)),
            "{b}: detached twice"
        );
        let s = TcpStream::from(fd);
        s.set_nonblocking(true).unwrap();
        c.detached = Some(s);
        // It works for writing (once the peer has read what the watcher's writes left in the
        // send buffer: detach has waited for them to stop).
        let mark = [c.rng.next_u64() as u8];
        let start = Instant::now();
        loop {
            let s = self.conns[i].detached.as_mut().unwrap();
            match s.write(&mark) {
                Ok(1) => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.pump(),
                other => panic!("{b}: write on a detached descriptor: {other:?}"),
            }
            assert!(
                start.elapsed() < DRAIN_LIMIT,
                "{b}: a detached socket never took a byte"
            );
        }
        self.conns[i].std_written.extend_from_slice(&mark);
        let mut st = self.stats.lock().unwrap();
        st.detached += 1;
        st.detached_with_pending += (pending > 0) as usize;
        drop(st);
        // Submissions on it are refused now.
        self.submit_stream(i, Kind::Read, Some(7));
    }

    fn on_result(&mut self, res: OpResult<u64>, closing: bool) {
        let b = self.backend;
        let Some(mut p) = self.pending.remove(&res.context) else {
            panic!("{b}: a result nobody is waiting for (a second one?): {res:?}");
        };
        assert_eq!(res.id, p.id, "{b}: context and id disagree");
        if let Some(k) = p.key {
            assert_eq!(res.conn.key(), k, "{b}: result on another connection");
        }
        let want_op = match p.kind {
            Kind::Accept => OpType::Accept,
            Kind::Connect => OpType::Connect,
            Kind::Read => OpType::Read,
            Kind::Write => OpType::Write,
        };
        assert_eq!(res.op, want_op, "{b}: {res:?}");
        assert_eq!(
            res.accepted.is_some(),
            p.kind == Kind::Accept && res.error.is_none(),
            "{b}: `accepted` on {res:?}"
        );
        if p.cancel == Some(true) && b == Backend::Epoll {
            assert!(matches!(res.error, Some(Error::Canceled)), "{b}: {res:?}");
        }
        // Errors every kind shares.
        match &res.error {
            Some(Error::Deadline) => {
                let d = p
                    .deadline
                    .unwrap_or_else(|| panic!("{b}: Deadline without one: {res:?}"));
                assert!(Instant::now() >= d, "{b}: deadline reported early");
            }
            Some(Error::Canceled) => {
                assert_eq!(
                    p.cancel,
                    Some(true),
                    "{b}: Canceled without a cancel: {res:?}"
                )
            }
            _ => {}
        }
        *self
            .stats
            .lock()
            .unwrap()
            .results
            .entry(outcome_name(&res))
            .or_default() += 1;
        match p.kind {
            Kind::Accept => self.accept_done(&p, res, closing),
            Kind::Connect => self.connect_done(&mut p, res, closing),
            Kind::Read | Kind::Write => self.stream_done(&p, res, closing),
        }
    }

    fn accept_done(&mut self, p: &Pending, res: OpResult<u64>, closing: bool) {
        let b = self.backend;
        assert!(
            matches!(res.buffer, Buffer::None) && res.size == 0,
            "{b}: {res:?}"
        );
        let l = &mut self.listeners[p.on];
        match &res.error {
            None => {}
            Some(Error::ClosedPipe) => assert!(l.freed || closing, "{b}: ClosedPipe: {res:?}"),
            Some(Error::Deadline | Error::Canceled) => {}
            Some(e) => panic!("{b}: accept ended with {e:?}: {res:?}"),
        }
        let Some(conn) = res.accepted else {
            return;
        };
        assert!(
            l.last_accept.map_or(true, |last| last < res.id),
            "{b}: accepts out of order"
        );
        l.last_accept = Some(res.id);
        let Some(i) = l.waiting.pop_front() else {
            panic!("{b}: accepted a connection no client made: {conn:?}");
        };
        let c = &mut self.conns[i];
        c.key = conn.key();
        c.handle = Some(conn);
        self.stats.lock().unwrap().accepted += 1;
    }

    fn connect_done(&mut self, p: &mut Pending, res: OpResult<u64>, closing: bool) {
        let b = self.backend;
        assert!(
            matches!(res.buffer, Buffer::None) && res.size == 0,
            "{b}: {res:?}"
        );
        let target = p.target.unwrap();
        match &res.error {
            None => {
                assert_eq!(target, Target::Listening, "{b}: connected to {target:?}");
                let peer = accept_queued(p.own.as_ref().unwrap());
                let seed = self.seed();
                let mut c = ConnModel::new(peer, seed);
                c.key = res.conn.key();
                c.handle = Some(res.conn);
                self.conns.push(c);
                self.stats.lock().unwrap().connected += 1;
                return;
            }
            Some(Error::Io(e)) => {
                assert_eq!(target, Target::Refused, "{b}: {res:?}");
                assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{b}: {res:?}");
            }
            Some(Error::Deadline | Error::Canceled) => {}
            Some(Error::ClosedPipe) => assert!(closing, "{b}: {res:?}"),
            Some(e) => panic!("{b}: connect ended with {e:?}: {res:?}"),
        }
        // A failed connect's connection: free it, or drop it (every other one).
        if res.context % 2 == 0 && !closing {
            self.w.free(&res.conn).expect("free a failed connect");
        }
    }

    fn stream_done(&mut self, p: &Pending, res: OpResult<u64>, closing: bool) {
        let b = self.backend;
        let c = &mut self.conns[p.on];
        match (&res.buffer, p.len) {
            (Buffer::User(v), Some(n)) => assert_eq!(v.len(), n, "{b}: buffer length changed"),
            (Buffer::Swap(s), None) => assert!(s.len() == res.size && res.size > 0, "{b}: {res:?}"),
            (Buffer::None, None) => assert!(res.error.is_some() && res.size == 0, "{b}: {res:?}"),
            (other, want) => panic!("{b}: buffer {other:?} for a request with {want:?}"),
        }
        if let Some(n) = p.len {
            assert!(res.size <= n, "{b}: size beyond the buffer: {res:?}");
        }
        match &res.error {
            None => match p.kind {
                Kind::Read => assert!(res.size > 0, "{b}: empty successful read"),
                _ => assert_eq!(Some(res.size), p.len, "{b}: short success: {res:?}"),
            },
            Some(Error::Eof) => {
                assert_eq!(p.kind, Kind::Read, "{b}: {res:?}");
                assert!(c.peer_shut, "{b}: Eof while the peer is open: {res:?}");
                c.got_eof = true;
            }
            Some(Error::ClosedPipe) => assert!(
                c.freed || c.detached.is_some() || closing,
                "{b}: ClosedPipe without a free or detach: {res:?}"
            ),
            Some(Error::Canceled) => {}
            Some(e) => panic!("{b}: unexpected error {e:?} in {res:?}"),
        }
        if p.kind == Kind::Write {
            let k = p.write.unwrap();
            assert_eq!(
                res.buffer.as_slice(),
                &c.writes[k].0[..],
                "{b}: the write's buffer changed"
            );
            c.writes[k].1 = Some(res.size);
            if res.error.is_some() && res.size > 0 {
                self.stats.lock().unwrap().partial_writes += 1;
            }
            if res.size > 0 {
                assert!(
                    c.last_write_with_data.map_or(true, |l| l < res.id),
                    "{b}: writes out of order"
                );
                c.last_write_with_data = Some(res.id);
            }
            self.stats.lock().unwrap().bytes_written += res.size;
        } else {
            let data = res.data();
            if !data.is_empty() {
                assert!(
                    c.last_read_with_data.map_or(true, |l| l < res.id),
                    "{b}: reads out of order"
                );
                c.last_read_with_data = Some(res.id);
            }
            c.read_stream.extend_from_slice(data);
            assert!(
                c.sent_by_peer.starts_with(&c.read_stream),
                "{b}: connection {}: the reads delivered bytes the peer did not send (first \
                 difference at {:?})",
                p.on,
                util::first_difference(&c.read_stream, &c.sent_by_peer)
            );
            self.stats.lock().unwrap().bytes_read += data.len();
        }
    }

    fn poll(&mut self, wait: Duration, closing: bool) {
        let batch: Vec<_> = self.w.wait_io_timeout(wait).expect("wait_io").collect();
        for res in batch {
            self.on_result(res, closing);
        }
    }

    /// Every peer reads what it can without blocking, and so does every detached socket.
    fn pump(&mut self) {
        let mut buf = vec![0u8; 64 << 10];
        for c in &mut self.conns {
            if let (Some(peer), false) = (c.peer.as_mut(), c.peer_done || c.stalled) {
                if drain(peer, &mut buf, &mut c.peer_received) {
                    c.peer_done = true;
                }
            }
            if let (Some(s), false) = (c.detached.as_mut(), c.got_eof) {
                if drain(s, &mut buf, &mut c.std_read) {
                    c.got_eof = true;
                }
            }
        }
    }

    fn peer_send(&mut self, i: usize, len: usize) {
        let c = &mut self.conns[i];
        if c.peer_shut {
            return;
        }
        let Some(peer) = c.peer.as_mut() else {
            return;
        };
        let mut bytes = vec![0u8; len];
        c.rng.fill(&mut bytes);
        let mut off = 0;
        while off < len {
            match peer.write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break, // full, or our side is gone
            }
        }
        c.sent_by_peer.extend_from_slice(&bytes[..off]);
    }

    fn act(&mut self, a: &Action) {
        match *a {
            Action::Accept { deadline_ms } => self.accept(deadline_ms),
            Action::ClientConnect => self.client_connect(),
            Action::Connect {
                target,
                deadline_ms,
            } => self.connect(target, deadline_ms),
            Action::FreeListener => {
                let l = self.listeners.last_mut().unwrap();
                self.w.free(&l.handle).expect("free the listener");
                l.freed = true;
                self.listen();
            }
            Action::Read { conn, buf } => {
                if let Some(i) = self.live(conn) {
                    self.submit_stream(i, Kind::Read, buf);
                }
            }
            Action::Write { conn, len } => {
                if let Some(i) = self.live(conn) {
                    self.submit_stream(i, Kind::Write, Some(len));
                }
            }
            Action::PeerSend { conn, len } => {
                if let Some(i) = self.live(conn) {
                    self.peer_send(i, len);
                }
            }
            Action::PeerShutdown { conn } => {
                if let Some(i) = self.live(conn) {
                    let c = &mut self.conns[i];
                    if !c.peer_shut {
                        let _ = c.peer.as_ref().unwrap().shutdown(Shutdown::Write);
                        c.peer_shut = true;
                    }
                }
            }
            Action::PeerStall { conn } => {
                if let Some(i) = self.live(conn) {
                    self.conns[i].stalled ^= true;
                }
            }
            Action::Free { conn } => {
                if let Some(i) = self.live(conn) {
                    let c = &mut self.conns[i];
                    self.w.free(c.handle.as_ref().unwrap()).expect("free");
                    c.freed = true;
                }
            }
            Action::Detach { conn } => {
                if let Some(i) = self.live(conn) {
                    self.detach(i);
                }
            }
            Action::Cancel { pick } => {
                let Some((&ctx, p)) = self.pending.iter().nth(pick % self.pending.len().max(1))
                else {
                    return;
                };
                if p.cancel.is_none() {
                    let answer = self.w.cancel(p.id).expect("cancel");
                    self.pending.get_mut(&ctx).unwrap().cancel = Some(answer);
                }
            }
            Action::Wait { ms } => self.poll(Duration::from_millis(ms), false),
        }
    }

    /// Closes the watcher with requests pending: each ends once (`ClosedPipe`, or its real
    /// result if it completed first), then nothing; every stream is a prefix of its peer's.
    fn close_early(&mut self) {
        let b = self.backend;
        self.w.close().unwrap();
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < DRAIN_LIMIT,
                "{b}: results after close never ended"
            );
            let batch: Vec<_> = match self.w.wait_io_timeout(Duration::from_millis(10)) {
                Ok(batch) => batch.collect(),
                Err(Error::WatcherClosed) => break,
                Err(e) => panic!("{b}: wait_io after close: {e}"),
            };
            for res in batch {
                self.on_result(res, true);
            }
        }
        assert!(
            self.pending.is_empty(),
            "{b}: requests without a result after close"
        );
        self.pump();
        for (i, c) in self.conns.iter().enumerate() {
            let mut read = c.read_stream.clone();
            read.extend_from_slice(&c.std_read);
            assert!(
                c.sent_by_peer.starts_with(&read),
                "{b}: connection {i}: read bytes differ"
            );
            let written: Vec<u8> = c
                .writes
                .iter()
                .flat_map(|(bytes, size)| bytes[..size.unwrap()].iter().copied())
                .chain(c.std_written.iter().copied())
                .collect();
            assert!(
                written.starts_with(&c.peer_received),
                "{b}: connection {i}: the peer got other bytes"
            );
        }
        let mut s = self.stats.lock().unwrap();
        s.closed_early += 1;
        s.pending_at_close += self.closed_with;
    }

    /// Ends every request and stream, then checks the model.
    fn finish(&mut self) {
        let b = self.backend;
        // Accept every waiting client of the current listener, then free it (ending the
        // accepts left over); clients of freed listeners were reset with them.
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < DRAIN_LIMIT, "{b}: clients never accepted");
            let l = self.listeners.len() - 1;
            let accepts = self
                .pending
                .values()
                .filter(|p| p.kind == Kind::Accept && p.on == l)
                .count();
            let waiting = self.listeners[l].waiting.len();
            if waiting == 0 {
                break;
            }
            for _ in accepts..waiting {
                self.accept(None);
            }
            self.poll(Duration::from_millis(2), false);
        }
        let l = self.listeners.last_mut().unwrap();
        self.w.free(&l.handle).expect("free the listener");
        l.freed = true;
        // Every request ends; the peers (also of connections a connect gives meanwhile)
        // half-close, and live connections read on until EOF.
        let start = Instant::now();
        loop {
            if start.elapsed() > DRAIN_LIMIT {
                let left: Vec<_> = self
                    .pending
                    .values()
                    .map(|p| (p.kind, p.on, p.target, p.deadline.is_some()))
                    .collect();
                panic!("{b}: requests still pending after {DRAIN_LIMIT:?}: {left:?}");
            }
            for c in &mut self.conns {
                c.stalled = false;
                if let (Some(p), false) = (&c.peer, c.peer_shut) {
                    let _ = p.shutdown(Shutdown::Write);
                    c.peer_shut = true;
                }
            }
            for i in 0..self.conns.len() {
                let reading = self
                    .pending
                    .values()
                    .any(|p| p.on == i && p.kind == Kind::Read);
                let c = &self.conns[i];
                if c.live() && !c.got_eof && !reading {
                    self.submit_stream(i, Kind::Read, None);
                }
            }
            self.pump();
            self.poll(Duration::from_millis(2), false);
            let eof = self
                .conns
                .iter()
                .all(|c| c.handle.is_none() || c.freed || c.got_eof);
            if self.pending.is_empty() && eof {
                break;
            }
        }
        for c in &mut self.conns {
            if let Some(h) = &c.handle {
                if c.live() {
                    self.w.free(h).expect("free at the end");
                }
            }
            c.detached = None; // our side of a detached connection closes
        }
        let start = Instant::now();
        while !self.conns.iter().all(|c| c.peer_done || c.handle.is_none()) {
            assert!(
                start.elapsed() < DRAIN_LIMIT,
                "{b}: a peer never saw its connection close"
            );
            self.pump();
            self.poll(Duration::from_millis(1), true);
        }
        util::expect_quiet(&self.w, Duration::from_millis(2));
        for (i, c) in self.conns.iter().enumerate() {
            if c.handle.is_none() {
                continue; // a client never accepted
            }
            let what = format!("{b}: connection {i}");
            let mut read = c.read_stream.clone();
            read.extend_from_slice(&c.std_read);
            let mut written: Vec<u8> = c
                .writes
                .iter()
                .flat_map(|(bytes, size)| {
                    bytes[..size.expect("every write has a result")]
                        .iter()
                        .copied()
                })
                .collect();
            written.extend_from_slice(&c.std_written);
            if c.freed {
                assert!(
                    c.sent_by_peer.starts_with(&read),
                    "{what}: read bytes differ"
                );
                assert!(
                    written.starts_with(&c.peer_received),
                    "{what}: the peer got other bytes"
                );
                continue;
            }
            assert_eq!(
                read.len(),
                c.sent_by_peer.len(),
                "{what}: not every byte the peer sent was read"
            );
            assert!(
                read == c.sent_by_peer,
                "{what}: read bytes differ at {:?}",
                util::first_difference(&read, &c.sent_by_peer)
            );
            assert_eq!(
                c.peer_received.len(),
                written.len(),
                "{what}: the peer did not receive every byte written"
            );
            assert!(
                c.peer_received == written,
                "{what}: the peer received other bytes at {:?}",
                util::first_difference(&c.peer_received, &written)
            );
        }
    }
}

/// Reads `s` until it would block; true at EOF or an error.
fn drain(s: &mut TcpStream, buf: &mut [u8], into: &mut Vec<u8>) -> bool {
    loop {
        match s.read(buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

fn run_case(backend: Backend, targets: &Targets, case: &Case, stats: &Mutex<Stats>) {
    let count_fds = util::in_own_process();
    let fds0 = util::open_fds();
    {
        let Some(w) = util::watcher_for::<u64>(backend) else {
            return;
        };
        let mut run = Run {
            w,
            backend,
            targets,
            listeners: Vec::new(),
            conns: Vec::new(),
            pending: BTreeMap::new(),
            next_ctx: 0,
            next_seed: 0,
            closed_with: 0,
            stats,
        };
        run.listen();
        for a in &case.actions {
            run.act(a);
            run.pump();
            run.poll(Duration::ZERO, false);
        }
        if case.close_early {
            run.closed_with = run.pending.len();
            run.close_early();
        } else {
            run.finish();
            run.w.close().unwrap();
            assert!(matches!(run.w.wait_io(), Err(Error::WatcherClosed)));
        }
        stats.lock().unwrap().cases += 1;
    }
    if count_fds {
        util::assert_fds(&fds0, fds0.len(), "after the case");
    }
}

fn config() -> proptest::test_runner::Config {
    util::model_config(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/model_conns.proptest-regressions"
        ),
        64,
    )
}

backend_tests! {
    /// The randomized connection-lifecycle model (see the file's documentation).
    fn model_conns(backend) {
        if util::watcher_for::<()>(backend).is_none() {
            return;
        }
        // Each case counts the process's descriptors.
        if !util::own_process("model_conns") {
            return;
        }
        let targets = Targets::new();
        let stats = Mutex::new(Stats::default());
        let start = Instant::now();
        let mut runner = TestRunner::new(config());
        let result = runner.run(&case(), |case| {
            run_case(backend, &targets, &case, &stats);
            Ok(())
        });
        let stats = stats.into_inner().unwrap();
        println!("{backend}: {stats:?} in {:?}", start.elapsed());
        if let Err(e) = result {
            panic!("{backend}: {e}");
        }
    }
}
