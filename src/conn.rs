//! Connection handles: what a caller holds for a descriptor the watcher took over.
//!
//! Internal state is keyed by a slab index plus a generation ([`ConnId`]), never by fd number, so
//! a freed handle can never act on a later connection that reuses the same index or fd.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Index plus generation of a connection slot in the loop's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId {
    pub(crate) index: u32,
    pub(crate) gen: u32,
}

/// The readiness token packs a 32-bit index and a 32-bit generation into one `usize`.
const GEN_SHIFT: u32 = 32;

// A narrower `usize` could not hold both halves: with a 16-bit shift on a 32-bit target, slot
// 65 536 would spill into the generation and two live connections could share a token. gaio
// therefore builds for 64-bit targets only; this makes any other a compile error instead of
// a silent identity bug (DESIGN.md property 3).
const _: () = assert!(
    usize::BITS >= u32::BITS + GEN_SHIFT,
    "gaio needs a 64-bit target: the readiness token packs a 32-bit slot index and a 32-bit \
     generation into one usize"
);

/// The last generation a slot is handed out with. A slot released at this generation is
/// retired (never handed out again) instead of wrapping to 0, so no two registrations of one
/// watcher ever share an index and generation, however long it runs. `u32::MAX` itself is never
/// used, so no token has the all-ones high half of the poller's wake (`usize::MAX`) and kick
/// (`usize::MAX - 1`) tokens.
const MAX_GEN: u32 = u32::MAX - 1;

impl ConnId {
    /// The readiness token: generation in the high half, index in the low half.
    pub(crate) fn token(self) -> usize {
        ((self.gen as usize) << GEN_SHIFT) | self.index as usize
    }

    pub(crate) fn from_token(t: usize) -> ConnId {
        ConnId {
            index: (t & ((1usize << GEN_SHIFT) - 1)) as u32,
            gen: (t >> GEN_SHIFT) as u32,
        }
    }
}

/// Hands out connection slots; a slot comes back with its generation bumped, and is retired
/// once its generations are used up ([`MAX_GEN`]).
///
/// Fresh indices count up from 0. They cannot run out: an index is only fresh when every
/// earlier one is live or retired, and a slot retires only after 2^32 - 1 registrations, so
/// 2^32 indices take more registrations (2^64) or live descriptors than any process has.
#[derive(Default)]
pub(crate) struct IdAllocator {
    free: Mutex<Vec<ConnId>>,
    next: std::sync::atomic::AtomicU32,
}

impl IdAllocator {
    pub(crate) fn alloc(&self) -> ConnId {
        if let Some(id) = lock(&self.free).pop() {
            return id;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        ConnId { index, gen: 0 }
    }

    /// Returns a slot for reuse under a new generation. Only after the fd is closed. A slot
    /// whose generation is exhausted is retired instead: a stale handle of it can then never
    /// compare equal to a later connection.
    pub(crate) fn release(&self, id: ConnId) {
        if id.gen >= MAX_GEN {
            return;
        }
        lock(&self.free).push(ConnId {
            index: id.index,
            gen: id.gen + 1,
        });
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of our locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loop side a connection handle reports to when its last clone is dropped.
pub(crate) trait ConnOwner: Send + Sync {
    /// The last handle of a connection that was never freed went away.
    fn conn_dropped(&self, id: ConnId);
}

pub(crate) struct ConnShared {
    pub(crate) id: ConnId,
    pub(crate) watcher: u64,
    pub(crate) fd: RawFd,
    /// `Some` for a regular file (file requests only).
    pub(crate) file: Option<crate::sys::fd::FileInfo>,
    /// Sockets are written with `send(MSG_NOSIGNAL)`, other descriptors with `write`.
    pub(crate) is_socket: bool,
    /// A datagram socket (`recv_from`/`send_to` are refused elsewhere).
    pub(crate) is_datagram: bool,
    /// The peer a datagram socket was connected to when it was taken over (`send_to` refuses
    /// another destination on it).
    pub(crate) peer: Option<std::net::SocketAddr>,
    /// Open [`Cork`](crate::Cork)s on this connection: while non-zero, requests queue without
    /// starting, to go out together (one `sendmmsg`, one `recvmmsg`) when the last cork ends.
    pub(crate) corks: std::sync::atomic::AtomicU32,
    pub(crate) freed: AtomicBool,
    /// The submit-side fast path's state per direction.
    pub(crate) lanes: crate::lane::Lanes,
    owner: Arc<dyn ConnOwner>,
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        if !self.freed.load(Ordering::Acquire) {
            self.owner.conn_dropped(self.id);
        }
    }
}

/// A descriptor taken over by a [`Watcher`](crate::Watcher), returned by
/// [`Watcher::watch`](crate::Watcher::watch) and carried in every
/// [`OpResult`](crate::OpResult).
///
/// Cheap to clone (one atomic increment). The watcher owns the descriptor (its own dup'd,
/// close-on-exec, non-blocking copy); when the last clone of a `Conn` is dropped without
/// [`Watcher::free`](crate::Watcher::free), the watcher releases it and closes the descriptor,
/// the analogue of the GC finalizer in Go's gaio (counted by [`Watcher::gc`](crate::Watcher::gc)).
/// Pending operations and undelivered results hold clones, so a connection with work in flight
/// is never released under it.
///
/// Two `Conn`s are equal when they name the same registration. A `Conn` only works with the
/// watcher that made it; given to another, submissions fail with [`Error::Unsupported`](crate::Error::Unsupported).
#[derive(Clone)]
pub struct Conn(pub(crate) Arc<ConnShared>);

impl Conn {
    /// A socket the loop took over itself (accepted).
    pub(crate) fn new(id: ConnId, watcher: u64, fd: RawFd, owner: Arc<dyn ConnOwner>) -> Conn {
        Conn::with_file(id, watcher, fd, true, None, owner)
    }

    pub(crate) fn with_file(
        id: ConnId,
        watcher: u64,
        fd: RawFd,
        is_socket: bool,
        file: Option<crate::sys::fd::FileInfo>,
        owner: Arc<dyn ConnOwner>,
    ) -> Conn {
        Conn::with_kind(id, watcher, fd, is_socket, false, None, file, owner)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_kind(
        id: ConnId,
        watcher: u64,
        fd: RawFd,
        is_socket: bool,
        is_datagram: bool,
        peer: Option<std::net::SocketAddr>,
        file: Option<crate::sys::fd::FileInfo>,
        owner: Arc<dyn ConnOwner>,
    ) -> Conn {
        Conn(Arc::new(ConnShared {
            id,
            watcher,
            fd,
            file,
            is_socket,
            is_datagram,
            peer,
            corks: Default::default(),
            freed: AtomicBool::new(false),
            lanes: Default::default(),
            owner,
        }))
    }

    pub(crate) fn id(&self) -> ConnId {
        self.0.id
    }

    /// What the loop keeps of a handle: enough to reach the lanes while handles live, without
    /// keeping the connection from being dropped.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<ConnShared> {
        Arc::downgrade(&self.0)
    }

    /// A number that names this registration uniquely within its watcher while it is live
    /// (slot index and generation), for use as a map key. A later connection never gets the
    /// key of a connection whose handles are still alive.
    pub fn key(&self) -> u64 {
        ((self.0.id.gen as u64) << 32) | self.0.id.index as u64
    }

    /// The watcher's own descriptor number for this connection, for logging only: the watcher
    /// owns and closes it; do not read, write or close it yourself.
    pub fn raw_fd(&self) -> RawFd {
        self.0.fd
    }

    /// True for a regular file (or block device) taken over for file requests.
    pub fn is_file(&self) -> bool {
        self.0.file.is_some()
    }

    /// True for a datagram socket (UDP, Unix datagram), on which
    /// [`recv_from`](crate::Watcher::recv_from) and [`send_to`](crate::Watcher::send_to) work.
    pub fn is_datagram(&self) -> bool {
        self.0.is_datagram
    }

    /// True once [`Watcher::free`](crate::Watcher::free) was called on this connection.
    pub fn is_freed(&self) -> bool {
        self.0.freed.load(Ordering::Acquire)
    }
}

impl PartialEq for Conn {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id && self.0.watcher == other.0.watcher
    }
}

impl Eq for Conn {}

impl Hash for Conn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
        self.0.watcher.hash(state);
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("key", &self.key())
            .field("fd", &self.0.fd)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last generation a slot may have (`MAX_GEN`; spelled out so that the tests also
    /// build against the code before it).
    const LAST_GEN: u32 = u32::MAX - 1;

    #[test]
    fn token_round_trip() {
        let id = ConnId {
            index: 12345,
            gen: 77,
        };
        assert_eq!(ConnId::from_token(id.token()), id);
    }

    #[test]
    fn token_round_trip_at_the_edges() {
        for (index, gen) in [
            (0, 0),
            (u32::MAX, 0),
            (0, LAST_GEN),
            (u32::MAX, LAST_GEN),
            (65_536, 1),
        ] {
            let id = ConnId { index, gen };
            assert_eq!(ConnId::from_token(id.token()), id);
            assert!(
                id.token() < usize::MAX - 1,
                "{id:?} collides with the wake/kick tokens"
            );
        }
        // Slot 65 536 (where a 16-bit shift spilled into the generation) stays apart from
        // slot 0 of the next generation.
        let a = ConnId {
            index: 65_536,
            gen: 0,
        };
        let b = ConnId { index: 0, gen: 1 };
        assert_ne!(a.token(), b.token());
    }

    /// A slot released at its last generation is retired, never handed out again (it used to
    /// wrap to generation 0, so a handle from 2^32 registrations ago compared equal).
    #[test]
    fn exhausted_slot_is_retired_not_wrapped() {
        let a = IdAllocator::default();
        let first = a.alloc();
        assert_eq!((first.index, first.gen), (0, 0));
        // The slot has been reused up to one before its last generation.
        a.release(ConnId {
            index: 0,
            gen: LAST_GEN - 1,
        });
        let last = a.alloc();
        assert_eq!((last.index, last.gen), (0, LAST_GEN));
        // Released at its last generation: retired.
        a.release(last);
        let next = a.alloc();
        assert_ne!(next.index, 0, "retired slot handed out again: {next:?}");
        assert_eq!((next.index, next.gen), (1, 0));
        // And never comes back, however many slots are released and reused after it.
        a.release(next);
        for _ in 0..10 {
            let id = a.alloc();
            assert_ne!(id.index, 0);
            assert_ne!(id.gen, u32::MAX);
            a.release(id);
        }
    }

    #[test]
    fn released_slot_comes_back_with_new_generation() {
        let a = IdAllocator::default();
        let first = a.alloc();
        a.release(first);
        let second = a.alloc();
        assert_eq!(second.index, first.index);
        assert_ne!(second.gen, first.gen);
        assert_ne!(second.token(), first.token());
    }
}
