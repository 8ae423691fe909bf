//! The fake driver: scripted answers, every call recorded, and the descriptor helpers.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use crate::conn::{ConnId, ConnOwner};
use crate::engine::{Driver, Start};
use crate::request::{Kind, Outcome, Request};
use crate::swap::{Shared, SwapOwner, SwapPool, SwapSlice};

/// Starts one fake may answer before the test is declared stuck (the engine looping).
pub(super) const BUDGET: usize = 100_000;

/// One call the engine made on its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Call {
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
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The fake driver. `R` is its mode (`Driver::READINESS`).
pub(super) struct Fake<const R: bool> {
    pub(super) calls: Vec<Call>,
    /// Answers to `start`/`start_file`, per request (by `OpId::seq`), in order.
    pub(super) script: HashMap<u64, VecDeque<Start>>,
    /// Answers to `starving` (default false).
    pub(super) starving: VecDeque<bool>,
    /// Answers to `adopt` (default Ok).
    pub(super) adopt: VecDeque<std::io::Result<()>>,
    /// Requests this driver holds (answered `InFlight`, not yet completed): seq → (key, conn).
    pub(super) held: HashMap<u64, (usize, ConnId)>,
    /// Which connection each descriptor (by inode) belongs to, for the check in `forget`.
    pub(super) inos: HashMap<u64, ConnId>,
    /// Unscripted answers drawn at random (the randomized test); otherwise the mode's default:
    /// a stream request meets EAGAIN in readiness mode, anything else goes in flight.
    pub(super) rng: Option<Rng>,
    /// For random answers to swap reads.
    pub(super) swap: Option<SwapPool>,
    /// The other ends of the descriptors random accepts produced, by the inode of the
    /// accepted end.
    pub(super) peers: HashMap<u64, OwnedFd>,
    pub(super) budget: usize,
}

impl<const R: bool> Fake<R> {
    pub(super) fn new() -> Self {
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
    pub(super) fn answer(&mut self, key: usize, req: &Request<u64>) -> Start {
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

    pub(super) fn random(&mut self, req: &Request<u64>) -> Start {
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

    pub(super) fn starts(&self, seq: u64) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c, Call::Start { seq: s, .. } | Call::StartFile { seq: s, .. } if *s == seq))
            .count()
    }

    pub(super) fn cancels(&self, seq: u64) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c, Call::Cancel { seq: s, .. } if *s == seq))
            .count()
    }

    pub(super) fn forgets(&self, ino: u64) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c, Call::Forget { ino: i } if *i == ino))
            .count()
    }

    /// The `poll_first` of each start of request `seq`.
    pub(super) fn poll_firsts(&self, seq: u64) -> Vec<bool> {
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
    pub(super) fn sizes(&self, seq: u64) -> Vec<usize> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Start { seq: s, size, .. } if *s == seq => Some(*size),
                _ => None,
            })
            .collect()
    }

    pub(super) fn count(&self, call: &Call) -> usize {
        self.calls.iter().filter(|c| *c == call).count()
    }
}

/// What a random outcome depends on.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    pub(super) kind: Kind,
    pub(super) left: usize,
    pub(super) swap_read: bool,
}

impl Shape {
    pub(super) fn of(req: &Request<u64>) -> Shape {
        Shape {
            kind: req.kind,
            left: req.len().saturating_sub(req.size),
            swap_read: matches!(req.kind, Kind::Read | Kind::ReadFull) && req.buffer.is_none(),
        }
    }
}

/// A random outcome for a request: bytes (short, full or none), an error, EAGAIN, no swap
/// space, a new descriptor for an accept (its peer kept in `peers`, by inode).
pub(super) fn random_outcome(
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
pub(super) struct Owner(pub(super) Mutex<Vec<ConnId>>);

impl ConnOwner for Owner {
    fn conn_dropped(&self, id: ConnId) {
        self.0.lock().unwrap().push(id);
    }
}

pub(super) struct NoSwapOwner;

impl SwapOwner for NoSwapOwner {
    fn swap_released(&self) {}
}

pub(super) fn swap_pool() -> SwapPool {
    SwapPool::new(4096, 2, Shared::new(Arc::new(NoSwapOwner)))
}

/// A swap slice of `n` bytes of `byte`, as a driver's swap read would make.
pub(super) fn fill(pool: &mut SwapPool, byte: u8, n: usize) -> Option<SwapSlice> {
    let (ptr, len) = pool.space()?;
    let n = n.min(len);
    // SAFETY: `space` returned a writable region of `len >= n` bytes that no slice covers.
    unsafe { std::ptr::write_bytes(ptr, byte, n) };
    Some(pool.commit(n))
}

pub(super) fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` is an array of two ints for socketpair to fill.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: socketpair succeeded: both are new descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The inode of open descriptor `fd`.
pub(super) fn ino(fd: RawFd) -> Option<u64> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer; fstat on a closed fd just fails.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    (rc == 0).then_some(st.st_ino)
}

pub(super) fn fd_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Held (write) while a test spawns a child process: between fork and exec the child holds a
/// copy of every descriptor, so a pair the engine closed would still look open.
pub(super) static SPAWNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// True once every copy of the other end of `peer`'s pair is closed: a peek reads EOF. Nothing
/// is ever written to the engine's end, so an open pair peeks EAGAIN.
pub(super) fn peer_closed(peer: &OwnedFd) -> bool {
    let _no_fork = SPAWNING.read().unwrap_or_else(|e| e.into_inner());
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
