//! What a submission is, and what comes back for it: `OpType`, `OpId`, `OpResult`.

use std::fmt;

use crate::buffer::Buffer;
use crate::conn::{Conn, ConnId};
use crate::Error;

/// The kind of operation a result belongs to. Go's `OpRead`/`OpWrite`, plus the requests Go
/// does not have.
///
/// Each submit call has its own type, so a loop can tell a [`read_full`](crate::Watcher::read_full)
/// from a [`read`](crate::Watcher::read), and an [`fdatasync`](crate::Watcher::fdatasync) from an
/// [`fsync`](crate::Watcher::fsync), by the result alone. New request kinds add variants, hence
/// `#[non_exhaustive]`: a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpType {
    /// A [`read`](crate::Watcher::read) or [`read_timeout`](crate::Watcher::read_timeout):
    /// complete on any data.
    Read,
    /// A [`read_full`](crate::Watcher::read_full): complete when the buffer is full.
    ReadFull,
    /// A [`write`](crate::Watcher::write) or [`write_timeout`](crate::Watcher::write_timeout).
    Write,
    /// An [`accept`](crate::Watcher::accept): the new connection is in
    /// [`OpResult::accepted`].
    Accept,
    /// A [`connect`](crate::Watcher::connect): [`OpResult::conn`] is the new connection.
    Connect,
    /// A [`shutdown`](crate::Watcher::shutdown): one or both directions of a socket shut
    /// down, after the writes submitted before it.
    Shutdown,
    /// A [`read_at`](crate::Watcher::read_at) on a file.
    ReadAt,
    /// A [`write_at`](crate::Watcher::write_at) on a file.
    WriteAt,
    /// An [`fsync`](crate::Watcher::fsync): data and metadata flushed.
    Fsync,
    /// An [`fdatasync`](crate::Watcher::fdatasync): data flushed (and the metadata needed to
    /// read it back).
    Fdatasync,
    /// A [`recv_from`](crate::Watcher::recv_from): one datagram, its source in
    /// [`OpResult::addr`].
    RecvFrom,
    /// A [`send_to`](crate::Watcher::send_to): one datagram, its destination in
    /// [`OpResult::addr`].
    SendTo,
}

impl OpType {
    /// The FIFO direction a request of this type is served in (`None`: file requests).
    pub(crate) fn lane(self) -> Option<crate::lane::Lane> {
        match self {
            OpType::Read | OpType::ReadFull | OpType::Accept | OpType::RecvFrom => {
                Some(crate::lane::Lane::Read)
            }
            OpType::Write | OpType::Connect | OpType::Shutdown | OpType::SendTo => {
                Some(crate::lane::Lane::Write)
            }
            OpType::ReadAt | OpType::WriteAt | OpType::Fsync | OpType::Fdatasync => None,
        }
    }
}

/// The identity of one accepted submission, returned by every submit call, repeated in its
/// [`OpResult::id`], and taken by [`Watcher::cancel`](crate::Watcher::cancel).
///
/// An id names its [`Watcher`](crate::Watcher) (the same watcher identity a
/// [`Conn`] carries), a 64-bit counter and the connection the request runs on (which is how
/// `cancel` finds it without a global table). Ids are unique per process: never reused
/// within a watcher, and never equal to an id of another watcher; `cancel` refuses another
/// watcher's id with [`Error::Unsupported`](crate::Error::Unsupported), as the calls taking a
/// `Conn` refuse another watcher's connection.
///
/// `Eq`, `Hash` and `Ord` compare all three parts; ids of one watcher order by submission
/// (their [`as_u64`](OpId::as_u64)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId {
    /// The watcher that accepted the submission (`Conn`s carry the same number).
    pub(crate) watcher: u64,
    pub(crate) seq: u64,
    pub(crate) conn: ConnId,
}

impl OpId {
    /// The counter value: unique per watcher, increasing in submission order. Two watchers
    /// hand out the same values, so use the whole `OpId` (not this number) as a key across
    /// watchers.
    pub fn as_u64(self) -> u64 {
        self.seq
    }
}

/// The single result of one accepted submission, handed out by
/// [`Watcher::wait_io`](crate::Watcher::wait_io). Go's `OpResult`.
///
/// Every submit call that returned `Ok` yields exactly one `OpResult`: completed (`error` is
/// `None`), failed (`Eof`, an OS error), timed out (`Deadline`), or ended by
/// [`free`](crate::Watcher::free), drop or [`close`](crate::Watcher::close) (`ClosedPipe`).
///
/// `#[non_exhaustive]`: fields will be added, so destructuring needs `..`.
/// Only the watcher creates results.
#[non_exhaustive]
pub struct OpResult<C> {
    /// Which submit call the result is for.
    pub op: OpType,
    /// The id the submit call returned.
    pub id: OpId,
    /// The context value given at submission, returned untouched.
    pub context: C,
    /// The connection the operation ran on; submit the next operation on it directly.
    pub conn: Conn,
    /// The memory: the caller's buffer handed back as the [`Buffer`] variant it was submitted
    /// as (a write's `Arc<[u8]>` is `Buffer::Shared` holding the same allocation), or the swap
    /// slice for a read without buffer.
    pub buffer: Buffer,
    /// Bytes moved, also when `error` is set (a deadline or a free keeps partial progress).
    pub size: usize,
    /// Why the operation ended early, or `None` when it completed.
    pub error: Option<Error>,
    /// For [`OpType::Accept`]: the accepted connection, already taken over by the watcher and
    /// ready for its first request. `None` for every other operation and on error.
    pub accepted: Option<Conn>,
    /// For [`OpType::Accept`]: the peer's address (IPv4 or IPv6), as `accept(2)` reported it.
    /// For [`OpType::RecvFrom`]: the datagram's source. For [`OpType::SendTo`]: the
    /// destination it was sent to. `None` on error (a `SendTo` keeps its destination), for a
    /// peer without an IP address (a Unix socket), and for every other operation.
    ///
    /// ```
    /// use std::net::{TcpListener, TcpStream};
    /// use std::time::Duration;
    ///
    /// let ln = TcpListener::bind("127.0.0.1:0")?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let listener = w.watch(&ln)?;
    /// w.accept((), &listener)?;
    /// let client = TcpStream::connect(ln.local_addr()?)?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert!(res.error.is_none(), "{:?}", res.error);
    /// assert_eq!(res.addr, Some(client.local_addr()?)); // who connected
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub addr: Option<std::net::SocketAddr>,
    /// For [`OpType::RecvFrom`]: `Some(len)` when the datagram was longer than the buffer
    /// (`len` bytes, as the kernel reported with `MSG_TRUNC`); only its first `size` bytes
    /// were kept and the rest is lost (UDP cannot give it back). `None` when the whole
    /// datagram fit, and for every other operation. A datagram is never cut silently.
    pub truncated: Option<usize>,
    /// For [`OpType::RecvFrom`] on a socket with GRO on
    /// ([`Watcher::set_udp_gro`](crate::Watcher::set_udp_gro)): `Some(n)` when the kernel
    /// coalesced several datagrams from the same source into this result: they are `n` bytes
    /// each, in order, the last possibly shorter (`size / n` rounded up of them). `None` for a
    /// single datagram, and for every other operation.
    pub segment_size: Option<usize>,
}

impl<C> OpResult<C> {
    /// The bytes moved: `buffer[..size]`. For a [`write_vectored`](crate::Watcher::write_vectored)
    /// there is no one slice: this is empty, and
    /// [`buffer.pieces()`](crate::Buffer::pieces) gives the pieces (`size` counts across them).
    pub fn data(&self) -> &[u8] {
        let all = self.buffer.as_slice();
        &all[..self.size.min(all.len())]
    }

    /// True when the operation completed without error.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// The result as a `Result`: `Ok(size)` when the operation completed, `Err(error)` when it
    /// ended early (`Deadline`, `Eof`, `Canceled`, `ClosedPipe`, an OS error, …). An early end
    /// can still have moved bytes: [`size`](OpResult::size) and [`data`](OpResult::data) keep
    /// that partial progress, which `Err` does not carry.
    ///
    /// `?` works on it in a function returning `Result<_, &Error>`; to leave a function that
    /// returns [`io::Result`](std::io::Result), convert the owned error:
    /// `res.error.take().map_or(Ok(res.size), |e| Err(std::io::Error::from(e)))`.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::Duration;
    ///
    /// let (mut peer, ours) = std::os::unix::net::UnixStream::pair()?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// peer.write_all(b"hi")?;
    /// w.read((), &conn, Some(vec![0; 16]))?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("the read");
    /// assert_eq!(res.result().ok(), Some(2));
    ///
    /// drop(peer); // the next read sees the end of the stream
    /// w.read((), &res.conn, Some(vec![0; 16]))?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("the read");
    /// assert!(matches!(res.result(), Err(gaio::Error::Eof)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn result(&self) -> Result<usize, &Error> {
        match &self.error {
            None => Ok(self.size),
            Some(e) => Err(e),
        }
    }
}

impl<C> fmt::Debug for OpResult<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpResult")
            .field("op", &self.op)
            .field("id", &self.id)
            .field("conn", &self.conn)
            .field("buffer", &self.buffer)
            .field("size", &self.size)
            .field("error", &self.error)
            .field("accepted", &self.accepted)
            .field("addr", &self.addr)
            .field("truncated", &self.truncated)
            .field("segment_size", &self.segment_size)
            .finish_non_exhaustive()
    }
}
