//! A request on its way through the watcher: what it is ([`Request`], [`Kind`]), what one
//! attempt at it came back with ([`Outcome`]), and what that means for it ([`Step`], the
//! progress rule).
//!
//! Each kind of request has one file holding every backend's code for it: the non-blocking
//! syscall attempt (the epoll driver and the submit-side fast path of both backends), the SQE
//! (the io_uring driver), and the progress rule both share: `read.rs`, `write.rs`,
//! `accept.rs`, `connect.rs`, `shutdown.rs`, `file.rs`, `datagram.rs` (`recv_from`, `send_to`). The engine (`crate::engine`) calls only the
//! dispatchers here ([`progress`], [`attempt`], and `sqe` on Linux); it never matches on a kind
//! itself.

pub(crate) mod accept;
pub(crate) mod connect;
pub(crate) mod datagram;
pub(crate) mod file;
pub(crate) mod gather;
pub(crate) mod read;
pub(crate) mod shutdown;
pub(crate) mod write;

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Instant;

use crate::buffer::Buffer;
use crate::conn::Conn;
use crate::lane::Lane;
use crate::op::{OpId, OpResult, OpType};
use crate::swap::{SwapPool, SwapSlice};
use crate::Error;

/// The largest transfer one syscall or SQE asks for. io_uring's SEND and RECV refuse lengths
/// above `i32::MAX` (EINVAL) and Linux moves at most `0x7fff_f000` bytes per read or write
/// anyway, so a longer buffer is moved in several steps on both backends (the progress rule
/// continues a partial transfer).
pub(crate) const MAX_STEP: usize = i32::MAX as usize;

/// The least a request takes in memory; the lanes' pending count relies on it
/// (`crate::lane::MAX_PENDING`).
const MIN_REQUEST_BYTES: usize = 64;
const _: () = assert!(std::mem::size_of::<Request<()>>() >= MIN_REQUEST_BYTES);
const _: () =
    assert!(crate::lane::MAX_PENDING >= (usize::MAX as u128 + 1) / MIN_REQUEST_BYTES as u128);

/// What the watcher does for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Complete on any data.
    Read,
    /// Complete only when the buffer is full.
    ReadFull,
    /// Complete when every byte is written.
    Write,
    /// Accept one connection on a listening socket (served in the read direction).
    Accept,
    /// Connect the request's own socket to `addr` (served in the write direction).
    Connect,
    /// Shut down one or both directions of a socket (served in the write direction, after
    /// the writes queued before it).
    Shutdown,
    /// Read a file at `offset` until the buffer is full or the file ends.
    ReadAt,
    /// Write all of the buffer to a file at `offset`.
    WriteAt,
    /// Flush a file to stable storage, after the writes submitted before it.
    Fsync,
    /// As `Fsync`, data only.
    Fdatasync,
    /// Receive one datagram and its source (served in the read direction).
    RecvFrom,
    /// Send one datagram to the address in `msg` (served in the write direction).
    SendTo,
}

impl Kind {
    pub(crate) fn op_type(self) -> OpType {
        match self {
            Kind::Read => OpType::Read,
            Kind::ReadFull => OpType::ReadFull,
            Kind::Write => OpType::Write,
            Kind::Accept => OpType::Accept,
            Kind::Connect => OpType::Connect,
            Kind::Shutdown => OpType::Shutdown,
            Kind::ReadAt => OpType::ReadAt,
            Kind::WriteAt => OpType::WriteAt,
            Kind::Fsync => OpType::Fsync,
            Kind::Fdatasync => OpType::Fdatasync,
            Kind::RecvFrom => OpType::RecvFrom,
            Kind::SendTo => OpType::SendTo,
        }
    }

    /// The FIFO direction of a stream request; `None` for file requests, which run side by
    /// side outside the FIFO queues.
    pub(crate) fn lane(self) -> Option<Lane> {
        self.op_type().lane()
    }
}

/// Why a request that could not end at once ends when it comes back. One byte where an
/// `Option<Error>` took 32: every pending request carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Canceled,
    Deadline,
    ClosedPipe,
}

impl Ending {
    /// The error the request's result carries.
    pub(crate) fn error(self) -> Error {
        match self {
            Ending::Canceled => Error::Canceled,
            Ending::Deadline => Error::Deadline,
            Ending::ClosedPipe => Error::ClosedPipe,
        }
    }
}

/// A socket address in the form the kernel takes: `sockaddr_storage` (room for every family)
/// and its length.
pub(crate) struct AddrBuf {
    storage: socket2::SockAddrStorage,
    len: libc::socklen_t,
}

impl AddrBuf {
    /// Room for an address the kernel writes (an accept's peer).
    pub(crate) fn empty() -> Box<AddrBuf> {
        let storage = socket2::SockAddrStorage::zeroed();
        let len = storage.size_of();
        Box::new(AddrBuf { storage, len })
    }

    /// Socket address `a` (IP or a Unix path), for the kernel to read (a connect's
    /// destination).
    pub(crate) fn from_sockaddr(a: socket2::SockAddr) -> Box<AddrBuf> {
        let len = a.len();
        Box::new(AddrBuf {
            storage: a.as_storage(),
            len,
        })
    }

    /// The address and its length, for a call that reads it.
    pub(crate) fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        (
            (&self.storage as *const socket2::SockAddrStorage).cast(),
            self.len,
        )
    }

    /// The storage and its length word, for a call that writes an address (`accept`); the
    /// length is reset to the storage's size first, as the kernel expects.
    pub(crate) fn as_mut_ptr(&mut self) -> (*mut libc::sockaddr, *mut libc::socklen_t) {
        self.len = self.storage.size_of();
        (
            (&mut self.storage as *mut socket2::SockAddrStorage).cast(),
            &mut self.len,
        )
    }

    /// The IP address held (`None` for another family, or storage nothing wrote: family 0).
    pub(crate) fn into_socket_addr(self) -> Option<std::net::SocketAddr> {
        let AddrBuf { storage, len } = self;
        // A longer address than the storage is truncated by the kernel, which then reports
        // the full length: cap it.
        let len = len.min(storage.size_of());
        // SAFETY: `storage` is an initialised `sockaddr_storage` (zeroed, then written by the
        // kernel, or copied from a `SockAddr`), and `len` does not exceed its size.
        let addr = unsafe { socket2::SockAddr::new(storage, len) };
        addr.as_socket()
    }
}

/// An accepted submission, from the submit call to its result.
pub(crate) struct Request<C> {
    pub(crate) id: OpId,
    pub(crate) kind: Kind,
    pub(crate) conn: Conn,
    pub(crate) context: C,
    /// `None` only for a read into the swap buffer and for requests without data. A read's
    /// is a `Vec` or an `AlignedBuf` (the submit calls take no other kind for a read); a
    /// write's is any [`Buffer`] but `None`.
    pub(crate) buffer: Option<Buffer>,
    /// A vectored write's cursor, total length and iovec array (boxed: the kernel reads the
    /// array until the CQE while the request may move; only for those writes).
    pub(crate) gather: Option<Box<gather::Gather>>,
    pub(crate) deadline: Option<Instant>,
    /// Bytes moved so far.
    pub(crate) size: usize,
    /// A socket address the kernel reads or writes: a `Connect`'s destination, the peer an
    /// `Accept` reports (boxed: the kernel may use it while the request's slot moves, until
    /// the CQE; allocated only for these two kinds).
    pub(crate) addr: Option<Box<AddrBuf>>,
    /// A datagram's address and, on io_uring, its message header (only for `RecvFrom` and
    /// `SendTo`; boxed for the same reason as `addr`).
    pub(crate) msg: Option<Box<datagram::Msg>>,
    /// The direction a `Shutdown` shuts down (`None` for every other kind).
    pub(crate) how: Option<std::net::Shutdown>,
    /// A `Connect` that has called `connect(2)` once and now waits for it to finish.
    pub(crate) connecting: bool,
    /// The last attempt met EAGAIN (on the submitting thread, or in the driver): the next one
    /// should wait for readiness first (epoll: for the next edge; io_uring: poll first).
    pub(crate) poll_first: bool,
    /// io_uring: the SQE in the kernel is a POLL_ADD (a swap `RecvFrom` waiting to be
    /// readable), whose completion means "try again", not bytes moved.
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) polling: bool,
    /// The connection an `Accept` produced.
    pub(crate) accepted: Option<Conn>,
    /// File offset of a `ReadAt`/`WriteAt` (the request moves `size` bytes from it). The
    /// submit side refuses offsets whose end does not fit in `off_t`.
    pub(crate) offset: u64,
    /// In the driver's hands (in the kernel, or on a file thread): it cannot be ended before
    /// its outcome comes back.
    pub(crate) in_flight: bool,
    /// The driver's swap generation when it started this request (io_uring: an ENOBUFS from
    /// before a later buffer publish is stale).
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) stamp: u64,
    /// How a request in flight ends when it comes back, unless it completed first:
    /// deadline, cancel or free.
    pub(crate) cancel: Option<Ending>,
}

impl<C> Request<C> {
    /// A new request of `kind` on `conn`, nothing moved yet.
    pub(crate) fn new(
        id: OpId,
        kind: Kind,
        conn: &Conn,
        context: C,
        buffer: Option<Buffer>,
        deadline: Option<Instant>,
    ) -> Self {
        Request {
            id,
            kind,
            conn: conn.clone(),
            context,
            buffer,
            gather: None,
            deadline,
            size: 0,
            addr: (kind == Kind::Accept).then(AddrBuf::empty),
            msg: (kind == Kind::RecvFrom).then(datagram::Msg::for_recv),
            how: None,
            connecting: false,
            poll_first: false,
            polling: false,
            accepted: None,
            offset: 0,
            in_flight: false,
            stamp: 0,
            cancel: None,
        }
    }

    /// The unmoved tail of a read's buffer (empty without one), at most [`MAX_STEP`] bytes:
    /// what the next syscall or SQE fills.
    pub(crate) fn rest_mut(&mut self) -> &mut [u8] {
        let size = self.size;
        match self.buffer.as_mut().and_then(Buffer::as_mut_slice) {
            Some(b) => {
                let end = b.len().min(size.saturating_add(MAX_STEP));
                &mut b[size.min(end)..end]
            }
            None => &mut [],
        }
    }

    /// The unsent tail of a write's contiguous buffer (empty without one, and for a vectored
    /// write, whose pieces `gather.rs` walks), at most [`MAX_STEP`] bytes: what the next
    /// syscall or SQE sends.
    pub(crate) fn rest(&self) -> &[u8] {
        match self.buffer.as_ref() {
            Some(b) => {
                let b = b.as_slice();
                let end = b.len().min(self.size.saturating_add(MAX_STEP));
                &b[self.size.min(end)..end]
            }
            None => &[],
        }
    }

    /// Length of the caller's buffer in bytes (0 without one; a vectored write's total, kept
    /// once its first step has started).
    pub(crate) fn len(&self) -> usize {
        match &self.gather {
            Some(g) => g.total,
            None => self.buffer.as_ref().map_or(0, Buffer::len),
        }
    }

    /// Turns the request into its result. A swap slice, when there is one, replaces the
    /// (absent) caller buffer.
    pub(crate) fn finish(self, swap: Option<SwapSlice>, error: Option<Error>) -> OpResult<C> {
        let buffer = match (self.buffer, swap) {
            (Some(b), _) => b,
            (None, Some(s)) => Buffer::Swap(s),
            (None, None) => Buffer::None,
        };
        // The peer's address, for an accept that produced a connection.
        let (mut truncated, mut segment_size) = (None, None);
        let addr = match (self.kind, &self.accepted, self.addr) {
            (Kind::Accept, Some(_), Some(peer)) => (*peer).into_socket_addr(),
            (Kind::RecvFrom, _, _) if error.is_none() => self.msg.and_then(|m| {
                truncated = (m.full > self.size).then_some(m.full);
                segment_size = m.segment;
                m.name.into_socket_addr()
            }),
            (Kind::SendTo, _, _) => self.msg.and_then(|m| m.name.into_socket_addr()),
            _ => None,
        };
        OpResult {
            op: self.kind.op_type(),
            id: self.id,
            context: self.context,
            conn: self.conn,
            buffer,
            size: self.size,
            error,
            accepted: self.accepted,
            addr,
            truncated,
            segment_size,
        }
    }
}

/// What one attempt at a request came back with: a non-blocking syscall's return, a CQE, or
/// a file thread's blocking syscall.
pub(crate) enum Outcome {
    /// `n` bytes moved; for a swap read, the slice that holds them.
    Moved(usize, Option<SwapSlice>),
    /// An accept produced this descriptor.
    Accepted(OwnedFd),
    /// A connect or an fsync finished.
    Finished,
    /// EAGAIN (or a connect still in progress): wait for readiness.
    WouldBlock,
    /// A swap read found no swap space free (epoll's pool, io_uring's ENOBUFS).
    NoSwap,
    /// Nothing happened (EINTR, a stale ENOBUFS): start it again at once.
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    Retry,
    /// The kernel cancelled it (ECANCELED): our cancel, or the ring's teardown.
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    Canceled,
    /// Any other error.
    Failed(std::io::Error),
}

impl Outcome {
    /// Classifies a CQE's result for a request of `kind` (`res`: bytes, a descriptor, or
    /// `-errno`).
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    pub(crate) fn from_cqe(
        kind: Kind,
        polling: bool,
        res: i32,
        swap: Option<SwapSlice>,
    ) -> Outcome {
        if polling && res >= 0 {
            // A poll came back readable: the receive itself follows.
            return Outcome::Retry;
        }
        if res < 0 {
            return match -res {
                libc::EAGAIN => Outcome::WouldBlock,
                libc::EINTR => Outcome::Retry,
                libc::ECANCELED => Outcome::Canceled,
                libc::ENOBUFS if kind == Kind::Read || kind == Kind::ReadFull => Outcome::NoSwap,
                e => Outcome::Failed(std::io::Error::from_raw_os_error(e)),
            };
        }
        match kind {
            Kind::Accept => {
                use std::os::fd::FromRawFd;
                // SAFETY: a successful ACCEPT returns a new descriptor that nothing else owns.
                Outcome::Accepted(unsafe { OwnedFd::from_raw_fd(res) })
            }
            Kind::Connect | Kind::Shutdown | Kind::Fsync | Kind::Fdatasync => Outcome::Finished,
            _ => Outcome::Moved(res as usize, swap),
        }
    }
}

/// A non-blocking syscall's return (`crate::sys::fd`) as the outcome of a transfer into or out
/// of the caller's buffer.
impl From<crate::sys::fd::Io> for Outcome {
    fn from(io: crate::sys::fd::Io) -> Outcome {
        use crate::sys::fd::Io;
        match io {
            Io::Done(n) => Outcome::Moved(n, None),
            Io::WouldBlock => Outcome::WouldBlock,
            Io::Failed(e) => Outcome::Failed(e),
        }
    }
}

/// What an outcome means for its request: the progress rule, one for both backends.
pub(crate) enum Step {
    /// Finished: deliver it (with the swap slice its bytes are in, if any).
    Done(Option<SwapSlice>, Option<Error>),
    /// An accept produced this descriptor: take it over, then deliver.
    Accepted(OwnedFd),
    /// Progress, not finished: start it again now.
    Again,
    /// Wait for readiness (epoll: the next edge; io_uring: start again, polling first).
    WouldBlock,
    /// A swap read waits for swap space to be released.
    Starve,
}

/// Applies `outcome` to `req`: the one progress rule of every backend. A request with an
/// ending pending (in flight when its deadline passed, or it was cancelled or freed) keeps
/// what it completed, but stops at the next point where it would go on.
pub(crate) fn progress<C>(req: &mut Request<C>, outcome: Outcome) -> Step {
    req.poll_first = false;
    let ending = req.cancel.map(Ending::error);
    match outcome {
        Outcome::Failed(e) => Step::Done(None, Some(Error::Io(e))),
        // Cancelled by the kernel: ours, or the ring's teardown.
        Outcome::Canceled => Step::Done(None, Some(ending.unwrap_or(Error::ClosedPipe))),
        Outcome::WouldBlock | Outcome::Retry | Outcome::NoSwap if ending.is_some() => {
            Step::Done(None, ending)
        }
        Outcome::Retry => Step::Again,
        Outcome::NoSwap => Step::Starve,
        Outcome::WouldBlock => {
            req.poll_first = true;
            match req.kind {
                // Files are never polled: a file request that would block is just retried.
                Kind::ReadAt | Kind::WriteAt | Kind::Fsync | Kind::Fdatasync => Step::Again,
                _ => Step::WouldBlock,
            }
        }
        Outcome::Accepted(fd) => Step::Accepted(fd),
        Outcome::Finished | Outcome::Moved(..) => match req.kind {
            Kind::Read | Kind::ReadFull => read::progress(req, outcome, ending),
            Kind::Write => write::progress(req, outcome, ending),
            Kind::RecvFrom | Kind::SendTo => datagram::progress(req, outcome),
            Kind::Accept => accept::progress(outcome),
            Kind::Connect => connect::progress(),
            Kind::Shutdown => shutdown::progress(),
            Kind::ReadAt | Kind::WriteAt | Kind::Fsync | Kind::Fdatasync => {
                file::progress(req, outcome, ending)
            }
        },
    }
}

/// One non-blocking attempt at stream request `req` on `fd`: what the epoll driver does to
/// start a request, and what the submit-side fast path does on both backends. A swap read
/// takes its space from `swap`. File requests are attempted by the drivers (`file.rs`).
pub(crate) fn attempt<C>(
    fd: RawFd,
    is_socket: bool,
    req: &mut Request<C>,
    swap: &Mutex<SwapPool>,
) -> Outcome {
    match req.kind {
        Kind::Read | Kind::ReadFull => read::attempt(fd, is_socket, req, swap),
        Kind::Write => write::attempt(fd, is_socket, req),
        Kind::Accept => accept::attempt(fd, req),
        Kind::Connect => connect::attempt(fd, req),
        Kind::Shutdown => shutdown::attempt(fd, req),
        Kind::RecvFrom | Kind::SendTo => datagram::attempt(fd, req, swap),
        Kind::ReadAt | Kind::WriteAt | Kind::Fsync | Kind::Fdatasync => {
            Outcome::Failed(std::io::Error::from_raw_os_error(libc::EINVAL))
        }
    }
}

/// The SQE that starts stream request `req` on `fd` (io_uring). A swap read selects a buffer
/// of at most `swap_len` bytes from buffer group `group`. `None`: nothing to submit (a
/// connect without an address, which the submit side never makes).
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe<C>(
    fd: RawFd,
    is_socket: bool,
    req: &mut Request<C>,
    group: u16,
    swap_len: u32,
) -> Option<io_uring::squeue::Entry> {
    let fd = io_uring::types::Fd(fd);
    Some(match req.kind {
        Kind::Read | Kind::ReadFull => read::sqe(fd, is_socket, req, group, swap_len),
        Kind::Write => write::sqe(fd, is_socket, req),
        Kind::Accept => accept::sqe(fd, req),
        Kind::Connect => connect::sqe(fd, req)?,
        Kind::Shutdown => shutdown::sqe(fd, req),
        Kind::RecvFrom | Kind::SendTo => datagram::sqe(fd, req),
        Kind::ReadAt | Kind::WriteAt | Kind::Fsync | Kind::Fdatasync => file::sqe(fd, req),
    })
}

/// `IORING_RECVSEND_POLL_FIRST`: arm poll before trying, after an EAGAIN.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) const RECVSEND_POLL_FIRST: u16 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request kind reports its own `OpType`, and the results queue's FIFO direction
    /// (`OpType::lane`) is the direction the request is served in: `read_full` is a read,
    /// `fdatasync` a file request like `fsync`.
    #[test]
    fn op_types_and_lanes() {
        let all = [
            (Kind::Read, OpType::Read, Some(Lane::Read)),
            (Kind::ReadFull, OpType::ReadFull, Some(Lane::Read)),
            (Kind::Accept, OpType::Accept, Some(Lane::Read)),
            (Kind::Write, OpType::Write, Some(Lane::Write)),
            (Kind::Connect, OpType::Connect, Some(Lane::Write)),
            (Kind::Shutdown, OpType::Shutdown, Some(Lane::Write)),
            (Kind::ReadAt, OpType::ReadAt, None),
            (Kind::WriteAt, OpType::WriteAt, None),
            (Kind::Fsync, OpType::Fsync, None),
            (Kind::Fdatasync, OpType::Fdatasync, None),
            (Kind::RecvFrom, OpType::RecvFrom, Some(Lane::Read)),
            (Kind::SendTo, OpType::SendTo, Some(Lane::Write)),
        ];
        for (kind, ty, lane) in all {
            assert_eq!(kind.op_type(), ty, "{kind:?}");
            assert_eq!(ty.lane(), lane, "{ty:?}");
            assert_eq!(kind.lane(), lane, "{kind:?}");
        }
    }
}
