//! Whole-API randomized test (proptest; issue 12, the peers' fuzzing): random call sequences
//! over every public call with random arguments, extremes included, run on both backends.
//!
//! Each case makes a watcher with two Unix socket connections, a file in a temporary
//! directory, a watched listener, and a second ("foreign") watcher with a connection and a
//! request pending on it. Actions: `read` (swap or caller buffer, lengths 0, 1, 7, 4 KiB),
//! `read_full` (0, 1, 100), `write` (0, 1, 100, 300 KiB), each with no deadline, a past one,
//! one a few ms ahead or one a century ahead (skipped if `Instant` cannot hold it);
//! `read_at`/`write_at` (lengths 0, 1, 4 KiB) at offsets 0, 4 KiB, 1 MiB, `i64::MAX - len`,
//! `i64::MAX`, `2^63`, `u64::MAX - 1`, `u64::MAX`; `fsync`, `fdatasync`; `accept` and
//! `accept_timeout`; `connect` to the listener; `cancel` of an id of this watcher (pending,
//! done, or of a freed connection) or of the foreign watcher; `free`, `detach` and handle drops
//! (then submissions on the freed/detached handle); submissions, `free`, `detach` with the
//! foreign watcher's connection; stream requests on the file and file requests on a socket;
//! the peers send and close; short `wait_io_timeout`s.
//!
//! Checked, per case and backend: no panic; every synchronous outcome (accepted, or refused
//! with which error) is what the documented rules give; a refusal hands the context and the
//! very buffer back (pointer, length, capacity); exactly one result per accepted submission,
//! carrying the caller's buffer whole, and nothing after close; the foreign watcher's request
//! is untouched; no descriptor left (under cargo-nextest). Across backends: the sequence of
//! synchronous outcome classes is the same on epoll and io_uring (results themselves can
//! differ in timing, so only their validity is checked).
//!
//! 64 cases by default (`PROPTEST_CASES` overrides), a few seconds in all.

#[macro_use]
mod util;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gaio::{Backend, Buffer, Conn, Error, OpId, OpResult, SubmitError, Watcher};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const T5: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum Dl {
    None,
    Past,
    Soon(u64),
    Century,
}

/// Which connection an action names: 0 and 1 the sockets, 2 the file, 3 the listener, 4 the
/// foreign watcher's socket.
type Target = usize;
const FILE: Target = 2;
const LISTENER: Target = 3;
const FOREIGN: Target = 4;

#[derive(Debug, Clone)]
enum Action {
    Read {
        on: Target,
        len: Option<usize>,
        dl: Dl,
    },
    ReadFull {
        on: Target,
        len: usize,
        dl: Dl,
    },
    Write {
        on: Target,
        len: usize,
        dl: Dl,
    },
    ReadAt {
        on: Target,
        len: usize,
        off: u64,
    },
    WriteAt {
        on: Target,
        len: usize,
        off: u64,
    },
    Fsync {
        on: Target,
        data: bool,
    },
    Accept {
        on: Target,
        dl: Dl,
    },
    Connect {
        dl: Dl,
    },
    /// `cancel` of the `pick`-th id handed out so far (any state), or of the foreign one.
    Cancel {
        pick: usize,
        foreign: bool,
    },
    Free {
        on: Target,
    },
    Detach {
        on: Target,
    },
    Drop {
        on: Target,
    },
    PeerSend {
        on: Target,
        len: usize,
    },
    PeerClose {
        on: Target,
    },
    Wait {
        ms: u64,
    },
}

fn dl() -> impl Strategy<Value = Dl> {
    prop_oneof![
        3 => Just(Dl::None),
        1 => Just(Dl::Past),
        1 => (0u64..5).prop_map(Dl::Soon),
        1 => Just(Dl::Century),
    ]
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(4096),
        Just(1 << 20),
        Just(i64::MAX as u64 - 4096),
        Just(i64::MAX as u64 - 1),
        Just(i64::MAX as u64),
        Just(1u64 << 63),
        Just(u64::MAX - 1),
        Just(u64::MAX),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let any_target = 0usize..5;
    let sock = prop_oneof![4 => 0usize..2, 1 => 0usize..5];
    prop_oneof![
        4 => (sock.clone(), prop_oneof![Just(None), Just(Some(0usize)), Just(Some(1)), Just(Some(7)), Just(Some(4096))], dl())
            .prop_map(|(on, len, dl)| Action::Read { on, len, dl }),
        2 => (sock.clone(), prop_oneof![Just(0usize), Just(1), Just(100)], dl())
            .prop_map(|(on, len, dl)| Action::ReadFull { on, len, dl }),
        3 => (sock.clone(), prop_oneof![Just(0usize), Just(1), Just(100), Just(300 << 10)], dl())
            .prop_map(|(on, len, dl)| Action::Write { on, len, dl }),
        3 => (prop_oneof![4 => Just(FILE), 1 => any_target.clone()], prop_oneof![Just(0usize), Just(1), Just(4096)], offset())
            .prop_map(|(on, len, off)| Action::ReadAt { on, len, off }),
        3 => (prop_oneof![4 => Just(FILE), 1 => any_target.clone()], prop_oneof![Just(0usize), Just(1), Just(4096)], offset())
            .prop_map(|(on, len, off)| Action::WriteAt { on, len, off }),
        1 => (prop_oneof![4 => Just(FILE), 1 => any_target.clone()], any::<bool>())
            .prop_map(|(on, data)| Action::Fsync { on, data }),
        1 => (prop_oneof![3 => Just(LISTENER), 1 => any_target.clone()], dl())
            .prop_map(|(on, dl)| Action::Accept { on, dl }),
        1 => dl().prop_map(|dl| Action::Connect { dl }),
        2 => (0usize..40, prop::bool::weighted(0.3)).prop_map(|(pick, foreign)| Action::Cancel { pick, foreign }),
        1 => any_target.clone().prop_map(|on| Action::Free { on }),
        1 => any_target.clone().prop_map(|on| Action::Detach { on }),
        1 => any_target.clone().prop_map(|on| Action::Drop { on }),
        3 => (0usize..2, 1usize..5000).prop_map(|(on, len)| Action::PeerSend { on, len }),
        1 => (0usize..2).prop_map(|on| Action::PeerClose { on }),
        2 => (0u64..3).prop_map(|ms| Action::Wait { ms }),
    ]
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    proptest::collection::vec(action(), 1..48)
}

/// The class of an error, for comparing outcomes (OS errors by number).
fn class(e: &Error) -> String {
    match e {
        Error::Io(io) => format!("Io({:?})", io.raw_os_error()),
        Error::InvalidArgument(_) => "InvalidArgument".into(),
        Error::Misaligned(_) => "Misaligned".into(),
        Error::BackendUnavailable(_) => "BackendUnavailable".into(),
        other => format!("{other:?}"),
    }
}

/// An accepted request: the shape of the buffer it carried.
struct Sent {
    buf: Option<(usize, usize, usize)>,
}

struct World {
    w: Watcher<u64>,
    w2: Watcher<u64>,
    /// 0, 1: sockets; 2: file; 3: listener; 4: the foreign watcher's socket.
    conns: Vec<Option<Conn>>,
    peers: Vec<Option<UnixStream>>,
    listen_addr: std::net::SocketAddr,
    _listener: std::net::TcpListener,
    _foreign_peer: UnixStream,
    foreign_id: OpId,
    /// Every id this watcher handed out, in order.
    ids: Vec<OpId>,
    pending: HashMap<OpId, Sent>,
    /// What each action did synchronously (the same on both backends).
    log: Vec<String>,
    next_ctx: u64,
    /// Kept so that results' connections live until the end (dropped then).
    kept: Vec<Conn>,
}

/// Outcomes over all cases, printed at the end (what the run covered).
static SEEN: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn seen(what: String) {
    *SEEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(what)
        .or_default() += 1;
}

fn shape_of(v: &[u8], cap: usize) -> (usize, usize, usize) {
    (v.as_ptr() as usize, v.len(), cap)
}

fn deadline(d: Dl) -> Option<Option<Instant>> {
    let now = Instant::now();
    Some(match d {
        Dl::None => None,
        Dl::Past => Some(now.checked_sub(Duration::from_secs(1)).unwrap_or(now)),
        Dl::Soon(ms) => Some(now + Duration::from_millis(ms)),
        // A century ahead; an `Instant` that cannot hold it skips the action (on both).
        Dl::Century => Some(now.checked_add(Duration::from_secs(100 * 365 * 86400))?),
    })
}

impl World {
    fn new(backend: Backend, dir: &std::path::Path, case: u64) -> Option<World> {
        let w = util::build::<u64>(backend, Watcher::builder())?;
        let w2 = util::build::<u64>(backend, Watcher::builder())?;
        let mut conns = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (mine, peer) = UnixStream::pair().unwrap();
            peer.set_nonblocking(true).unwrap();
            conns.push(Some(w.watch(&mine).unwrap()));
            peers.push(Some(peer));
        }
        let path: PathBuf = dir.join(format!("f-{backend}-{case}"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(64 << 10).unwrap();
        conns.push(Some(w.watch(&f).unwrap()));
        drop(f);
        let _ = std::fs::remove_file(&path);
        let listener = util::listen();
        let listen_addr = listener.local_addr().unwrap();
        conns.push(Some(w.watch(&listener).unwrap()));
        let (fmine, fpeer) = UnixStream::pair().unwrap();
        let fconn = w2.watch(&fmine).unwrap();
        let foreign_id = w2.read(u64::MAX, &fconn, Some(vec![0; 8])).unwrap();
        conns.push(Some(fconn));
        peers.push(None);
        peers.push(None);
        peers.push(None);
        Some(World {
            w,
            w2,
            conns,
            peers,
            listen_addr,
            _listener: listener,
            _foreign_peer: fpeer,
            foreign_id,
            ids: Vec::new(),
            pending: HashMap::new(),
            log: Vec::new(),
            next_ctx: 0,
            kept: Vec::new(),
        })
    }

    /// Records a submission's outcome; checks a refusal hands back context and buffer.
    fn submitted(
        &mut self,
        ctx: u64,
        shape: Option<(usize, usize, usize)>,
        r: Result<OpId, SubmitError<u64>>,
    ) {
        match r {
            Ok(id) => {
                self.ids.push(id);
                self.pending.insert(id, Sent { buf: shape });
                self.log.push("accepted".into());
            }
            Err(e) => {
                assert_eq!(e.context, ctx, "a refusal's context");
                let back = e.buffer.map(|b| match b {
                    Buffer::User(v) => {
                        let cap = v.capacity();
                        shape_of(&v, cap)
                    }
                    other => panic!("a different buffer back: {:?}", other.len()),
                });
                assert_eq!(back, shape, "a refusal's buffer ({})", e.error);
                self.log.push(format!("refused {}", class(&e.error)));
            }
        }
    }

    fn conn(&self, on: Target) -> Option<Conn> {
        self.conns[on].clone()
    }

    fn act(&mut self, a: &Action) {
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        let w = &self.w;
        match *a {
            Action::Read { on, len, dl } => {
                let (Some(c), Some(dl)) = (self.conn(on), deadline(dl)) else {
                    return self.log.push("skip".into());
                };
                let buf = len.map(|n| vec![0u8; n]);
                let shape = buf.as_ref().map(|v| shape_of(v, v.capacity()));
                let r = match dl {
                    Some(at) => w.read_timeout(ctx, &c, buf, at),
                    None => w.read(ctx, &c, buf),
                };
                self.submitted(ctx, shape, r);
            }
            Action::ReadFull { on, len, dl } => {
                let (Some(c), Some(dl)) = (self.conn(on), deadline(dl)) else {
                    return self.log.push("skip".into());
                };
                let v = vec![0u8; len];
                let shape = Some(shape_of(&v, v.capacity()));
                let r = w.read_full(ctx, &c, v, dl);
                self.submitted(ctx, shape, r);
            }
            Action::Write { on, len, dl } => {
                let (Some(c), Some(dl)) = (self.conn(on), deadline(dl)) else {
                    return self.log.push("skip".into());
                };
                let v = vec![0x5au8; len];
                let shape = Some(shape_of(&v, v.capacity()));
                let r = match dl {
                    Some(at) => w.write_timeout(ctx, &c, v, at),
                    None => w.write(ctx, &c, v),
                };
                self.submitted(ctx, shape, r);
            }
            Action::ReadAt { on, len, off } | Action::WriteAt { on, len, off } => {
                let Some(c) = self.conn(on) else {
                    return self.log.push("skip".into());
                };
                let v = vec![1u8; len];
                let shape = Some(shape_of(&v, v.capacity()));
                let r = if matches!(a, Action::ReadAt { .. }) {
                    w.read_at(ctx, &c, v, off, None)
                } else {
                    w.write_at(ctx, &c, v, off, None)
                };
                self.submitted(ctx, shape, r);
            }
            Action::Fsync { on, data } => {
                let Some(c) = self.conn(on) else {
                    return self.log.push("skip".into());
                };
                let r = if data {
                    w.fdatasync(ctx, &c, None)
                } else {
                    w.fsync(ctx, &c, None)
                };
                self.submitted(ctx, None, r);
            }
            Action::Accept { on, dl } => {
                let (Some(c), Some(dl)) = (self.conn(on), deadline(dl)) else {
                    return self.log.push("skip".into());
                };
                let r = match dl {
                    Some(at) => w.accept_timeout(ctx, &c, at),
                    None => w.accept(ctx, &c),
                };
                self.submitted(ctx, None, r);
            }
            Action::Connect { dl } => {
                let Some(dl) = deadline(dl) else {
                    return self.log.push("skip".into());
                };
                let r = w.connect(ctx, self.listen_addr, dl);
                self.submitted(ctx, None, r);
            }
            Action::Cancel { pick, foreign } => {
                if foreign {
                    let r = w.cancel(self.foreign_id);
                    assert!(matches!(r, Err(Error::Unsupported)), "foreign id: {r:?}");
                    // And this watcher's ids given to the foreign one.
                    if let Some(&id) = self.ids.last() {
                        let r = self.w2.cancel(id);
                        assert!(matches!(r, Err(Error::Unsupported)), "id to w2: {r:?}");
                    }
                    return self.log.push("cancel foreign Unsupported".into());
                }
                let Some(&id) = self.ids.get(pick % self.ids.len().max(1)) else {
                    return self.log.push("skip".into());
                };
                // true/false depends on timing; only the class is the same on both.
                match w.cancel(id) {
                    Ok(_) => self.log.push("cancel ok".into()),
                    Err(e) => panic!("cancel of an own id: {e}"),
                }
            }
            Action::Free { on } => {
                let Some(c) = self.conn(on) else {
                    return self.log.push("skip".into());
                };
                let r = w.free(&c);
                self.log
                    .push(format!("free {:?}", r.as_ref().map_err(class)));
            }
            Action::Detach { on } => {
                let Some(c) = self.conn(on) else {
                    return self.log.push("skip".into());
                };
                let r = w.detach(&c);
                self.log.push(format!(
                    "detach {:?}",
                    r.as_ref().map(|_| ()).map_err(class)
                ));
                drop(r); // the descriptor back, closed here
            }
            Action::Drop { on } => {
                if on == FOREIGN {
                    return self.log.push("skip".into()); // keeps the foreign request alive
                }
                self.conns[on] = None;
                self.log.push("drop".into());
            }
            Action::PeerSend { on, len } => {
                if let Some(p) = self.peers[on].as_mut() {
                    let _ = p.write(&vec![b'p'; len]);
                }
                self.log.push("peer".into());
            }
            Action::PeerClose { on } => {
                self.peers[on] = None;
                self.log.push("peer".into());
            }
            Action::Wait { ms } => {
                self.take(Duration::from_millis(ms));
                self.log.push("wait".into());
            }
        }
        self.take(Duration::ZERO);
    }

    /// Takes the results ready within `limit`, checking each against what was submitted.
    fn take(&mut self, limit: Duration) {
        let batch = self.w.wait_io_timeout(limit).expect("wait_io");
        let results: Vec<OpResult<u64>> = batch.collect();
        for r in results {
            self.check(r);
        }
    }

    fn check(&mut self, r: OpResult<u64>) {
        let s = self
            .pending
            .remove(&r.id)
            .unwrap_or_else(|| panic!("a second result, or one never submitted: {r:?}"));
        match (&r.buffer, s.buf) {
            (Buffer::User(v), Some(shape)) => {
                assert_eq!(
                    shape_of(v, v.capacity()),
                    shape,
                    "not the buffer submitted: {r:?}"
                )
            }
            (Buffer::None | Buffer::Swap(_), None) => {}
            (b, want) => panic!("buffer {b:?} for a submission with {want:?}: {r:?}"),
        }
        assert!(
            r.size <= r.buffer.as_slice().len(),
            "size beyond the buffer: {r:?}"
        );
        seen(format!(
            "{} result {:?} {}",
            self.w.backend(),
            r.op,
            r.error.as_ref().map_or("ok".into(), class)
        ));
        self.kept.push(r.conn);
        if let Some(a) = r.accepted {
            self.kept.push(a);
        }
    }

    /// Ends the case: frees every connection (pending stream requests end), collects every
    /// result, closes, and checks that nothing else comes.
    fn finish(mut self) -> Vec<String> {
        for c in self.conns.iter().take(4).flatten() {
            let _ = self.w.free(c);
        }
        for c in std::mem::take(&mut self.kept) {
            let _ = self.w.free(&c);
        }
        // Requests on a connection whose handle the case dropped keep it alive (as
        // documented) and wait on: cancel them by id.
        for id in self.pending.keys().copied().collect::<Vec<_>>() {
            let _ = self.w.cancel(id).expect("cancel");
        }
        let start = Instant::now();
        while !self.pending.is_empty() {
            assert!(
                start.elapsed() < T5,
                "{}: {} requests without a result: {:?}",
                self.w.backend(),
                self.pending.len(),
                self.pending.keys().collect::<Vec<_>>()
            );
            self.take(Duration::from_millis(50));
            for c in std::mem::take(&mut self.kept) {
                let _ = self.w.free(&c); // connections that results (accept, connect) brought
            }
        }
        self.w.close().unwrap();
        match self.w.wait_io_timeout(T5) {
            Err(Error::WatcherClosed) => {}
            Ok(b) => panic!("results after every one was in: {b:?}"),
            Err(e) => panic!("wait_io after close: {e}"),
        }
        // The foreign watcher's request was never touched by this watcher.
        let b = self.w2.wait_io_timeout(Duration::ZERO).unwrap();
        assert!(b.is_empty(), "the foreign request ended: {b:?}");
        drop(b);
        self.w2.close().unwrap();
        let rest: Vec<_> = std::iter::from_fn(|| self.w2.wait_io_timeout(T5).ok())
            .take_while(|b| !b.is_empty())
            .flatten()
            .collect();
        assert!(
            rest.len() == 1
                && rest[0].id == self.foreign_id
                && matches!(rest[0].error, Some(Error::ClosedPipe)),
            "the foreign request: {rest:?}"
        );
        for l in &self.log {
            seen(format!("{} {l}", self.w.backend()));
        }
        self.log
    }
}

/// Runs `actions` on `backend`; `None` when the backend cannot run here.
fn run(
    backend: Backend,
    actions: &[Action],
    dir: &std::path::Path,
    case: u64,
) -> Option<Vec<String>> {
    let counting = std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
    let fds0 = util::open_fds();
    let log = {
        let mut world = World::new(backend, dir, case)?;
        for a in actions {
            world.act(a);
        }
        world.finish()
    };
    if counting {
        util::assert_fds(&fds0, fds0.len(), &format!("{backend}: after the case"));
    }
    Some(log)
}

#[test]
fn api_random_sequences_both_backends() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("model-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = util::model_config(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/model_api.proptest-regressions"
        ),
        64,
    );
    let mut runner = TestRunner::new(cfg);
    let case = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    let result = runner.run(&actions(), |actions| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let epoll = run(Backend::Epoll, &actions, &dir, case);
        let uring = run(Backend::Uring, &actions, &dir, case);
        if let (Some(e), Some(u)) = (&epoll, &uring) {
            if let Some(i) = (0..e.len().max(u.len())).find(|&i| e.get(i) != u.get(i)) {
                panic!(
                    "the backends disagree at action {i} ({:?}): epoll {:?}, io_uring {:?}",
                    actions.get(i),
                    e.get(i),
                    u.get(i)
                );
            }
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!("{} cases in {:?}", case.into_inner(), start.elapsed());
    for (what, n) in SEEN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  {n:6} {what}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}
