//! The `Watcher`: the public API. The submit calls (any thread) check their input and build a
//! request, which `submit_op` attempts on the spot (`crate::engine::fast_path`) or hands to
//! the driver; `wait_io` takes results; the control calls reach the engine through messages.
//!
//! Longer than the other files because it is the public surface: most of its lines are the
//! doc comments each call carries (units, errors, completion guarantee, Go's behaviour).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::affinity::ThreadSlot;
use crate::backend::Backend;
use crate::builder::Builder;
use crate::conn::{lock, Conn, IdAllocator};
use crate::driver::{Handle, LoopLink, LoopTx, Parts};
use crate::engine::fast_path::attempt_inline;
use crate::engine::LoopMsg;
use crate::lane::Claim;
use crate::op::OpId;
use crate::request::{Kind, Request};
use crate::results::{Batch, ResultQueue};
use crate::stats::{GcCounters, GcStats, SwapStats};
use crate::swap::SwapPool;
use crate::{Buffer, Error, IoBuf, Result, SubmitError};

/// The largest file offset, and offset + length, that [`Watcher::read_at`] and
/// [`Watcher::write_at`] accept: `i64::MAX`, the largest `off_t` (bytes).
pub const MAX_FILE_OFFSET: u64 = i64::MAX as u64;

/// A proactor: takes over descriptors, performs reads and writes on them from its own threads,
/// and hands back the results in batches from [`wait_io`](Watcher::wait_io). Go's gaio
/// `Watcher`.
///
/// `C` is the type of the per-request context value, returned untouched in each
/// [`OpResult`](crate::OpResult) (Go's `ctx any`); a generic costs nothing per request.
///
/// Submissions take `&self` and may come from any thread (`Watcher<C>` is `Send + Sync`; share
/// it with `Arc`). Every submission that returns `Ok` yields exactly one result later.
///
/// **Where the I/O happens.** Go's gaio makes an immediate attempt at every new request on its
/// loop thread. Here that attempt runs on the submitting thread: a `read`, `read_full` or
/// `write` whose direction has nothing pending is tried at once with one non-blocking syscall
/// (more for a write or `read_full` that makes progress); if it completes (data moved, EOF, or
/// an error), its result is queued for `wait_io` without waking any thread. Only a request that
/// would block goes to the loop, keeping its progress. A busy connection served from a
/// `wait_io` loop then costs no thread hand-off per request, as a hand-written readiness loop
/// would; an idle one still waits in the backend. Order is unchanged: per connection and
/// direction, requests run and complete in submission order (FIFO). On io_uring this applies
/// to sockets (other descriptors stay in blocking mode there); a swap read that completes on
/// the submitting thread takes its space from one more swap buffer of its own, since the ring's
/// belong to the kernel.
///
/// **Who waits for readiness (epoll, Linux).** Go's gaio has its poller hand every readiness
/// batch to the loop, which does the I/O and wakes `WaitIO`. Here a thread in
/// [`wait_io`](Watcher::wait_io) that finds no result waits in `epoll_wait` itself and serves
/// the readiness it gets on its own thread (leader/follower: one caller at a time, the others
/// wait for results), so a busy server runs on one thread with no wake-up per event batch. The
/// poller thread serves readiness only while no caller is in `wait_io`: it steps aside while
/// callers keep leading and takes over within 32 ms once none does, so requests still
/// progress while nobody calls `wait_io`.
///
/// ```no_run
/// use gaio::Watcher;
/// use std::net::TcpListener;
///
/// let w: Watcher<()> = Watcher::new()?;
/// let ln = TcpListener::bind("127.0.0.1:0")?;
/// let (stream, _) = ln.accept()?;
/// let conn = w.watch(&stream)?;
/// drop(stream); // the watcher has its own descriptor
/// w.read((), &conn, None)?;
/// loop {
///     for res in w.wait_io()? {
///         if res.error.is_some() {
///             w.free(&res.conn)?;
///             continue;
///         }
///         match res.op {
///             gaio::OpType::Read => { w.write((), &res.conn, res.data().to_vec())?; }
///             gaio::OpType::Write => { w.read((), &res.conn, None)?; }
///             _ => {}
///         }
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Watcher<C: Send + 'static = ()> {
    id: u64,
    backend: Backend,
    tx: LoopTx<C>,
    link: Arc<LoopLink<C>>,
    results: Arc<ResultQueue<C>>,
    ids: Arc<IdAllocator>,
    gc: Arc<GcCounters>,
    /// The backend's submit-side handle; `None` once closed. Submitters hold the read side
    /// while they check and send, so once `close` has taken the write side, every accepted
    /// submission is already in the channel, ahead of `Close`.
    gate: RwLock<Option<Handle<C>>>,
    /// The backend's leader/follower hook for `wait_io` (epoll on Linux). Kept for the
    /// watcher's life (no lock or reference count per `wait_io`): after `close` it refuses
    /// every claim and holds no descriptor.
    lead: Option<Arc<dyn crate::results::Lead>>,
    next_op: AtomicU64,
    swap: Arc<crate::swap::Shared>,
    /// The submit side's swap buffers (shared with the epoll loop).
    swap_pool: Arc<Mutex<SwapPool>>,
    /// Swap buffers in all, and bytes per buffer.
    swap_shape: (usize, usize),
    /// `SO_BUSY_POLL` for each socket taken over (`Builder::busy_poll`; 0: not set).
    busy_poll_us: u32,
    loop_slot: Arc<ThreadSlot>,
    poller_slot: Arc<ThreadSlot>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    failpoints: Arc<crate::driver::failure::Failpoints>,
}

impl<C: Send + 'static> Watcher<C> {
    /// The watcher over a started backend.
    pub(crate) fn from_parts(backend: Backend, p: Parts<C>) -> Self {
        Watcher {
            id: p.watcher_id,
            backend,
            tx: p.tx,
            link: p.link,
            results: p.results,
            ids: p.ids,
            gc: p.gc,
            lead: p.handle.lead(),
            gate: RwLock::new(Some(p.handle)),
            next_op: AtomicU64::new(0),
            swap: p.swap,
            swap_pool: p.swap_pool,
            swap_shape: (p.swap_buffers, p.swap_size),
            busy_poll_us: p.busy_poll_us,
            loop_slot: p.loop_slot,
            poller_slot: p.poller_slot,
            threads: Mutex::new(p.threads),
            failpoints: p.failpoints,
        }
    }
}

impl Watcher {
    /// A builder to set the swap buffer size and count and the backend; its
    /// [`build`](Builder::build) picks the context type.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<C: Send + 'static> Watcher<C> {
    /// A watcher with the default configuration: three 64 KiB swap buffers, and the backend
    /// named by `GAIO_BACKEND` (`auto` when unset). Go's `NewWatcher()`.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> Result<Self> {
        Builder::default().build()
    }
}

impl<C: Send + 'static> Watcher<C> {
    /// The backend this watcher runs on: [`Backend::Epoll`] or [`Backend::Uring`], never
    /// [`Backend::Auto`].
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Takes over a descriptor: a TCP or Unix socket, a pipe, an eventfd, anything pollable,
    /// or a regular file (or block device) for the file requests
    /// ([`read_at`](Watcher::read_at), [`write_at`](Watcher::write_at),
    /// [`fsync`](Watcher::fsync)); stream requests on a file, and file requests on anything
    /// else, are refused with [`Error::Unsupported`]. A file is never registered for readiness
    /// and its blocking mode is left alone.
    ///
    /// The watcher keeps its own duplicate (`F_DUPFD_CLOEXEC`, so a forked child never inherits
    /// it) and registers it once, edge-triggered, for read and write readiness. The caller may
    /// drop its original right away; the connection lives until [`free`](Watcher::free), the
    /// drop of its last [`Conn`], or [`close`](Watcher::close).
    ///
    /// On epoll the descriptor is switched to non-blocking mode; on io_uring to blocking mode
    /// (the kernel then waits for readiness itself instead of handing EAGAIN back). The flag
    /// belongs to the open file description, so the caller's original changes with it.
    ///
    /// Go's gaio registers a `net.Conn` on its first request and closes the caller's original;
    /// here registration is explicit and synchronous, so a bad descriptor is reported at once.
    ///
    /// # Errors
    /// - [`Error::WatcherClosed`] after [`close`](Watcher::close);
    /// - [`Error::Unsupported`]: a directory.
    /// - [`Error::Io`]: the duplicate or the registration failed (`EBADF`, `EMFILE`, …).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    ///
    /// let (_peer, ours) = UnixStream::pair()?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// drop(ours); // the watcher keeps its own duplicate
    /// assert!(!conn.is_file());
    ///
    /// // A regular file is taken over for the file requests; a directory is refused.
    /// let file = std::fs::File::open(std::env::current_exe()?)?;
    /// assert!(w.watch(&file)?.is_file());
    /// let dir = std::fs::File::open("/")?;
    /// assert!(matches!(w.watch(&dir), Err(gaio::Error::Unsupported)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch<F: AsFd + ?Sized>(&self, fd: &F) -> Result<Conn> {
        if self.read_gate().is_none() {
            return Err(Error::WatcherClosed);
        }
        let own = fd.as_fd().try_clone_to_owned()?;
        self.adopt(own)
    }

    fn adopt(&self, fd: OwnedFd) -> Result<Conn> {
        let gate = self.read_gate();
        let Some(driver) = gate.as_ref() else {
            return Err(Error::WatcherClosed);
        };
        let kind = crate::sys::fd::prepare(fd.as_fd(), driver.nonblocking())?;
        if kind.is_socket {
            crate::sys::fd::set_busy_poll(fd.as_fd(), self.busy_poll_us);
        }
        let id = self.ids.alloc();
        let raw = fd.as_raw_fd();
        // Files are never polled: readiness says nothing about them.
        if kind.file.is_none() {
            if let Err(e) = driver.register(raw, id) {
                self.ids.release(id);
                return Err(e);
            }
        }
        // A connected datagram socket: `send_to` checks its destination against the peer.
        let peer = kind
            .is_datagram
            .then(|| socket2::SockRef::from(&fd).peer_addr().ok())
            .flatten()
            .and_then(|a| a.as_socket());
        let conn = Conn::with_kind(
            id,
            self.id,
            raw,
            kind.is_socket,
            kind.is_datagram,
            peer,
            kind.file,
            self.link.clone(),
        );
        let watched = driver.watch(&self.tx, id, fd, kind.is_socket, conn.downgrade());
        drop(gate);
        if watched.is_err() {
            // Never reached the engine: nothing to release when the handle drops.
            conn.0.freed.store(true, Ordering::Release);
            return Err(Error::WatcherClosed);
        }
        Ok(conn)
    }

    /// Reads once: completes as soon as any data arrives (or EOF, an error, a free).
    ///
    /// - `buf: Some(vec)`: the data lands in `vec[..size]` and the whole `Vec` comes back in
    ///   [`Buffer::User`](crate::Buffer::User).
    /// - `buf: None`: the data lands in the watcher's swap buffer and comes back as a
    ///   [`SwapSlice`](crate::SwapSlice) of exactly `size` bytes, valid while it lives. A swap
    ///   read holds no memory while it waits.
    ///
    /// Result errors: [`Error::Eof`] (peer closed), [`Error::ClosedPipe`] (freed, dropped or
    /// closed while pending), [`Error::ConnClosed`] (the connection was freed before the
    /// request reached the loop), [`Error::Io`] (`ECONNRESET`, …).
    ///
    /// # Errors
    /// Refused, with context and buffer handed back in [`SubmitError`]:
    /// - [`Error::EmptyBuffer`]: `Some` of a zero-length `Vec` (Go returns an immediate EOF
    ///   result for that; a zero-length read can never make progress, so we refuse it);
    /// - [`Error::Unsupported`]: `conn` belongs to another watcher;
    /// - [`Error::ConnClosed`]: `conn` was freed;
    /// - [`Error::WatcherClosed`]: after [`close`](Watcher::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// let (mut peer, ours) = UnixStream::pair()?;
    /// let w: gaio::Watcher<&str> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// w.read("swap", &conn, None)?; // None: into the swap buffer
    /// peer.write_all(b"ping")?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!((res.context, res.data()), ("swap", &b"ping"[..]));
    /// assert!(res.buffer.is_swap());
    ///
    /// w.read("own", &conn, Some(vec![0; 64]))?; // into a buffer of ours, handed back
    /// peer.write_all(b"pong")?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!(res.data(), b"pong");
    /// assert_eq!(res.buffer.into_vec().map(|v| v.len()), Some(64));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(&self, ctx: C, conn: &Conn, buf: Option<Vec<u8>>) -> Result<OpId, SubmitError<C>> {
        self.read_inner(ctx, conn, buf, None)
    }

    /// [`read`](Watcher::read) with a deadline (an absolute [`Instant`]). If the read has not
    /// completed by then, it completes with [`Error::Deadline`]. A read that completes on its
    /// first attempt never arms the deadline, so a deadline already past still returns data
    /// that is ready (as in Go).
    ///
    /// # Errors
    /// As [`read`](Watcher::read).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use std::time::{Duration, Instant};
    ///
    /// let (_peer, ours) = UnixStream::pair()?; // the peer sends nothing
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// let deadline = Instant::now() + Duration::from_millis(50);
    /// w.read_timeout((), &conn, Some(vec![0; 64]), deadline)?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert!(matches!(res.error, Some(gaio::Error::Deadline)));
    /// assert!(Instant::now() >= deadline);
    /// assert_eq!(res.size, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_timeout(
        &self,
        ctx: C,
        conn: &Conn,
        buf: Option<Vec<u8>>,
        deadline: Instant,
    ) -> Result<OpId, SubmitError<C>> {
        self.read_inner(ctx, conn, buf, Some(deadline))
    }

    fn read_inner(
        &self,
        ctx: C,
        conn: &Conn,
        buf: Option<Vec<u8>>,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        let buf = buf.map(Buffer::User);
        if buf.as_ref().is_some_and(|b| b.is_empty()) {
            return Err(SubmitError::new(Error::EmptyBuffer, ctx, buf));
        }
        self.submit(Kind::Read, ctx, conn, buf, deadline)
    }

    /// Reads until `buf` is full (`size == buf.len()`), across as many readiness edges as it
    /// takes. Ends early with [`Error::Eof`], an [`Error::Io`], [`Error::Deadline`] (if
    /// `deadline` passes) or [`Error::ClosedPipe`], each keeping the bytes gathered so far in
    /// `buf[..size]`. Go's `ReadFull`.
    ///
    /// # Errors
    /// [`Error::EmptyBuffer`] for a zero-length `buf` (checked first, as in Go), then as
    /// [`read`](Watcher::read).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    /// use std::time::{Duration, Instant};
    ///
    /// let (mut peer, ours) = UnixStream::pair()?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// w.read_full((), &conn, vec![0; 5], Some(Instant::now() + Duration::from_secs(5)))?;
    /// peer.write_all(b"hel")?; // not enough yet
    /// peer.write_all(b"lo")?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!(res.op, gaio::OpType::ReadFull);
    /// assert_eq!((res.size, res.data()), (5, &b"hello"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_full(
        &self,
        ctx: C,
        conn: &Conn,
        buf: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        if buf.is_empty() {
            return Err(SubmitError::new(
                Error::EmptyBuffer,
                ctx,
                Some(Buffer::User(buf)),
            ));
        }
        self.submit(Kind::ReadFull, ctx, conn, Some(Buffer::User(buf)), deadline)
    }

    /// Writes all of `buf`: completes only when every byte is written, or with an error that
    /// keeps the count written so far in `size` ([`Error::Io`] such as `EPIPE`/`ECONNRESET`,
    /// [`Error::ClosedPipe`]). Writes on one connection go out in submission order.
    ///
    /// `buf` is any owned buffer whose bytes stay put while the kernel reads them, taken as it
    /// is and never copied: a `Vec<u8>`, a `Box<[u8]>`, an `Arc<[u8]>` (one message shared by
    /// many writes: `w.write(ctx, &conn, shared.clone())`), a `&'static [u8]`, the
    /// [`SwapSlice`](crate::SwapSlice) a read returned (an echo writes it straight back, as
    /// Go's gaio writes its swap buffer back), an [`AlignedBuf`](crate::AlignedBuf), or
    /// `bytes::Bytes` (cargo feature `bytes`); see [`Buffer`]. The result's `buffer` hands the
    /// same buffer back as its [`Buffer`] variant (the same allocation, `as_slice()` at the same
    /// address); a `SwapSlice` keeps its swap space until that result is dropped. A
    /// [`Buffer::Vectored`] is written as [`write_vectored`](Watcher::write_vectored) writes
    /// it. On sockets
    /// the write uses `MSG_NOSIGNAL`, so a reset peer gives `EPIPE`, never SIGPIPE.
    ///
    /// A failed write does not stop the writes queued behind it (as in Go); after a write error
    /// the stream's framing is unknown, so free the connection.
    ///
    /// # Errors
    /// [`Error::EmptyBuffer`] for a zero-length `buf` (checked first, as in Go; also
    /// [`Buffer::None`]); [`Error::InvalidArgument`] for a `Buffer::Vectored` one of whose
    /// pieces is itself vectored; then as [`read`](Watcher::read).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// let (mut peer, ours) = UnixStream::pair()?;
    /// peer.set_read_timeout(Some(Duration::from_secs(5)))?;
    /// let w: gaio::Watcher<u32> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// w.write(1, &conn, b"hello".to_vec())?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!((res.op, res.context, res.size), (gaio::OpType::Write, 1, 5));
    /// let mut got = [0; 5];
    /// peer.read_exact(&mut got)?;
    /// assert_eq!(&got, b"hello");
    /// assert_eq!(res.buffer.into_vec().as_deref(), Some(&b"hello"[..])); // the Vec comes back
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write(
        &self,
        ctx: C,
        conn: &Conn,
        buf: impl Into<Buffer>,
    ) -> Result<OpId, SubmitError<C>> {
        self.write_inner(ctx, conn, buf.into(), None)
    }

    /// [`write`](Watcher::write) with a deadline: if not every byte is written by `deadline`,
    /// the write completes with [`Error::Deadline`] and `size` bytes written.
    ///
    /// # Errors
    /// As [`write`](Watcher::write).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use std::time::{Duration, Instant};
    ///
    /// let (_peer, ours) = UnixStream::pair()?; // the peer never reads
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// let big = vec![7u8; 8 << 20]; // more than the socket buffers hold
    /// w.write_timeout((), &conn, big, Instant::now() + Duration::from_millis(100))?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert!(matches!(res.error, Some(gaio::Error::Deadline)));
    /// assert!(res.size < 8 << 20); // what the socket took before the deadline
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_timeout(
        &self,
        ctx: C,
        conn: &Conn,
        buf: impl Into<Buffer>,
        deadline: Instant,
    ) -> Result<OpId, SubmitError<C>> {
        self.write_inner(ctx, conn, buf.into(), Some(deadline))
    }

    /// Writes `bufs` in order as one request: a gathering write (`sendmsg`/`writev`; SENDMSG
    /// or WRITEV on io_uring) of every piece, completing when every byte of every piece is
    /// written, FIFO with the other writes on the connection (no other write's bytes come
    /// between its pieces). `bufs` is a `Vec` of any one buffer type [`write`](Watcher::write)
    /// takes (`Vec<Vec<u8>>`, `Vec<Arc<[u8]>>`, `Vec<SwapSlice>`, …), none of them copied;
    /// empty pieces are skipped. The request allocates once, for its iovec array and cursor
    /// (about 1 KiB). One step sends up to 64 pieces from where the last one ended (more take
    /// more steps);
    /// `size` counts bytes across pieces. The result's `buffer` is a [`Buffer::Vectored`]
    /// holding the pieces in order, each as its own variant.
    ///
    /// # Errors
    /// [`Error::EmptyBuffer`] if `bufs` holds no bytes at all (no pieces, or only empty ones);
    /// [`Error::InvalidArgument`] if a piece is itself a `Buffer::Vectored`; then as
    /// [`read`](Watcher::read). The pieces come back in the error as a `Buffer::Vectored`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let (mut peer, ours) = std::os::unix::net::UnixStream::pair()?;
    /// peer.set_read_timeout(Some(Duration::from_secs(5)))?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// let header: Arc<[u8]> = Arc::from(&b"HEAD "[..]);
    /// let body: Arc<[u8]> = Arc::from(&b"body"[..]);
    /// w.write_vectored((), &conn, vec![header.clone(), body.clone()])?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!(res.size, 9);
    /// let mut got = [0; 9];
    /// peer.read_exact(&mut got)?;
    /// assert_eq!(&got, b"HEAD body");
    /// let pieces = res.buffer.pieces();
    /// assert_eq!(pieces[0].as_slice().as_ptr(), header.as_ptr()); // the same Arcs back
    /// assert_eq!(pieces[1].as_slice().as_ptr(), body.as_ptr());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_vectored<B: Into<Buffer>>(
        &self,
        ctx: C,
        conn: &Conn,
        bufs: Vec<B>,
    ) -> Result<OpId, SubmitError<C>> {
        let pieces = bufs.into_iter().map(Into::into).collect();
        self.write_inner(ctx, conn, Buffer::Vectored(pieces), None)
    }

    fn write_inner(
        &self,
        ctx: C,
        conn: &Conn,
        buf: Buffer,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        if buf.is_empty() {
            return Err(SubmitError::new(Error::EmptyBuffer, ctx, Some(buf)));
        }
        if let Buffer::Vectored(pieces) = &buf {
            if pieces.iter().any(|p| matches!(p, Buffer::Vectored(_))) {
                let why = "a piece of a vectored write is itself vectored".to_string();
                return Err(SubmitError::new(
                    Error::InvalidArgument(why),
                    ctx,
                    Some(buf),
                ));
            }
        }
        self.submit(Kind::Write, ctx, conn, Some(buf), deadline)
    }

    /// Receives one datagram (UDP, or a Unix datagram socket) and completes with it: its
    /// bytes in the buffer (`size` of them), its source in [`OpResult::addr`](crate::OpResult::addr)
    /// (a `SocketAddr`, IPv4 or IPv6; `None` for a Unix datagram socket). Each `recv_from`
    /// gets exactly one datagram, all of it or, if the buffer is too small, its first
    /// `buf.len()` bytes with [`OpResult::truncated`](crate::OpResult::truncated) holding the
    /// datagram's full length: a datagram is never cut silently. An empty datagram completes
    /// with `size` 0 and no error (never [`Error::Eof`]: a datagram socket has no end).
    ///
    /// - `buf: Some(vec)`: the datagram lands in `vec[..size]`, the whole `Vec` comes back in
    ///   [`Buffer::User`](crate::Buffer::User). Size it for the largest datagram expected
    ///   ([`MAX_DATAGRAM`](crate::MAX_DATAGRAM) bytes holds any).
    /// - `buf: None`: into the swap buffer, as [`read`](Watcher::read) does: a
    ///   [`SwapSlice`](crate::SwapSlice) of exactly `size` bytes. The watcher reserves room for
    ///   a whole datagram ([`MAX_DATAGRAM`](crate::MAX_DATAGRAM) bytes, or a whole swap buffer
    ///   if they are smaller), so only a datagram larger than a swap buffer is cut.
    ///
    /// Several `recv_from`s on one socket complete in submission order, one datagram each.
    /// Several queued with their own buffers are served by one `recvmmsg` (up to 64 a call;
    /// swap receives take one `recvmsg` each): on epoll by the thread serving the socket, on
    /// io_uring by the ring thread, with a RECVMSG SQE (polling first) for the receive that
    /// has to wait; a lone receive is one `recvmsg` on the submitting thread if a datagram is
    /// there, else a RECVMSG on io_uring (a swap receive polls, then receives on the ring
    /// thread). Works on connected and unconnected sockets; [`read`](Watcher::read) also works
    /// on a connected one (without the source).
    ///
    /// Result errors: [`Error::Io`] (`ECONNREFUSED` on a connected UDP socket whose earlier
    /// datagram met a closed port, …), [`Error::ClosedPipe`] (freed, dropped or closed while
    /// pending), [`Error::Canceled`], [`Error::Deadline`] with
    /// [`recv_from_timeout`](Watcher::recv_from_timeout). Exactly one result per accepted
    /// submission.
    ///
    /// # Errors
    /// Refused, with context and buffer handed back in [`SubmitError`]:
    /// [`Error::Unsupported`] if `conn` is not a datagram socket (a TCP socket, a pipe, a file)
    /// or belongs to another watcher; [`Error::EmptyBuffer`] for `Some` of a zero-length
    /// `Vec`; [`Error::ConnClosed`]; [`Error::WatcherClosed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::UdpSocket;
    /// use std::time::Duration;
    ///
    /// let ours = UdpSocket::bind("127.0.0.1:0")?;
    /// let peer = UdpSocket::bind("127.0.0.1:0")?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// w.recv_from((), &conn, Some(vec![0; 1500]))?;
    /// peer.send_to(b"ping", ours.local_addr()?)?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!(res.op, gaio::OpType::RecvFrom);
    /// assert_eq!(res.data(), b"ping");
    /// assert_eq!(res.addr, Some(peer.local_addr()?)); // who sent it
    /// assert_eq!(res.truncated, None); // all of it fit
    ///
    /// w.recv_from((), &conn, Some(vec![0; 2]))?; // too small: cut, and said so
    /// peer.send_to(b"hello", ours.local_addr()?)?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!((res.data(), res.truncated), (&b"he"[..], Some(5)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_from(
        &self,
        ctx: C,
        conn: &Conn,
        buf: Option<Vec<u8>>,
    ) -> Result<OpId, SubmitError<C>> {
        self.recv_from_inner(ctx, conn, buf, None)
    }

    /// [`recv_from`](Watcher::recv_from) with a deadline (an absolute [`Instant`]): if no
    /// datagram has arrived by then, it completes with [`Error::Deadline`] and `size` 0.
    ///
    /// # Errors
    /// As [`recv_from`](Watcher::recv_from).
    pub fn recv_from_timeout(
        &self,
        ctx: C,
        conn: &Conn,
        buf: Option<Vec<u8>>,
        deadline: Instant,
    ) -> Result<OpId, SubmitError<C>> {
        self.recv_from_inner(ctx, conn, buf, Some(deadline))
    }

    fn recv_from_inner(
        &self,
        ctx: C,
        conn: &Conn,
        buf: Option<Vec<u8>>,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        let buf = buf.map(Buffer::User);
        if conn.0.watcher != self.id || !conn.0.is_datagram {
            return Err(SubmitError::new(Error::Unsupported, ctx, buf));
        }
        if buf.as_ref().is_some_and(|b| b.is_empty()) {
            return Err(SubmitError::new(Error::EmptyBuffer, ctx, buf));
        }
        self.submit_op(
            Kind::RecvFrom,
            ctx,
            conn,
            buf,
            deadline,
            None,
            0,
            None,
            None,
        )
    }

    /// Sends `buf` as one datagram to `addr` (an IPv4 or IPv6 `SocketAddr`): all of it in one
    /// datagram, or nothing (`size` is the bytes sent: `buf.len()` on success). `buf` is any
    /// buffer [`write`](Watcher::write) takes (a `Vec<u8>`, `Box<[u8]>`, `Arc<[u8]>`,
    /// `&'static [u8]`, the [`SwapSlice`](crate::SwapSlice) a `recv_from` returned, …), never
    /// copied and handed back in the result; a [`Buffer::Vectored`] is gathered into one
    /// datagram. A zero-length buffer sends an empty datagram (UDP allows them). The result's
    /// [`addr`](crate::OpResult::addr) is `addr`.
    ///
    /// Sends on one socket go out in submission order. Several queued on one socket go out as
    /// one `sendmmsg` (up to 64 a call; on io_uring made by the ring thread): on epoll, hold a
    /// [`Cork`] (see [`cork`](Watcher::cork)) while submitting a burst to queue them; an
    /// uncorked `send_to` whose direction is idle is sent at once from the submitting thread
    /// (`sendmsg`), and one that has to wait (a full send buffer) is a SENDMSG on io_uring.
    /// [`write`](Watcher::write) also works on a connected socket.
    ///
    /// Result errors: [`Error::Io`] (`ECONNREFUSED` on a connected socket after an ICMP port
    /// unreachable, `ENETUNREACH`, `EAFNOSUPPORT` for an address of the other family, `EMSGSIZE`
    /// for a datagram over the route's MTU with fragmentation forbidden, …), [`Error::Canceled`],
    /// [`Error::Deadline`] (with [`send_to_timeout`](Watcher::send_to_timeout)),
    /// [`Error::ClosedPipe`]. Exactly one result per accepted submission.
    ///
    /// # Errors
    /// Refused at submission, with context and buffer handed back in [`SubmitError`]:
    /// - [`Error::Unsupported`]: `conn` is not a datagram socket, or belongs to another watcher;
    /// - [`Error::InvalidArgument`]: `buf` is longer than [`MAX_DATAGRAM`](crate::MAX_DATAGRAM)
    ///   (65 507 bytes, for IPv6 as for IPv4), or holds a vectored piece; or `conn` was
    ///   connected (before [`watch`](Watcher::watch)) to another address than `addr` (checked
    ///   here against the peer recorded at `watch`, since Linux would silently send to `addr`);
    /// - [`Error::ConnClosed`], [`Error::WatcherClosed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::UdpSocket;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let ours = UdpSocket::bind("127.0.0.1:0")?;
    /// let peer = UdpSocket::bind("127.0.0.1:0")?;
    /// peer.set_read_timeout(Some(Duration::from_secs(5)))?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// let msg: Arc<[u8]> = Arc::from(&b"hello"[..]);
    /// w.send_to((), &conn, msg.clone(), peer.local_addr()?)?; // no copy
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!((res.op, res.size), (gaio::OpType::SendTo, 5));
    /// assert_eq!(res.addr, Some(peer.local_addr()?));
    /// let mut got = [0; 16];
    /// let (n, from) = peer.recv_from(&mut got)?;
    /// assert_eq!((&got[..n], from), (&b"hello"[..], ours.local_addr()?));
    ///
    /// // Too big for one datagram: refused, the buffer comes back.
    /// let err = w.send_to((), &conn, vec![0; 70_000], peer.local_addr()?).unwrap_err();
    /// assert!(matches!(err.error, gaio::Error::InvalidArgument(_)));
    /// assert_eq!(err.buffer.map(|b| b.len()), Some(70_000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_to(
        &self,
        ctx: C,
        conn: &Conn,
        buf: impl Into<Buffer>,
        addr: std::net::SocketAddr,
    ) -> Result<OpId, SubmitError<C>> {
        self.send_to_inner(ctx, conn, buf.into(), addr, None, None)
    }

    /// [`send_to`](Watcher::send_to) with a deadline: if the datagram has not gone out by
    /// `deadline` (the socket's send buffer stayed full), it completes with
    /// [`Error::Deadline`] and `size` 0.
    ///
    /// # Errors
    /// As [`send_to`](Watcher::send_to).
    pub fn send_to_timeout(
        &self,
        ctx: C,
        conn: &Conn,
        buf: impl Into<Buffer>,
        addr: std::net::SocketAddr,
        deadline: Instant,
    ) -> Result<OpId, SubmitError<C>> {
        self.send_to_inner(ctx, conn, buf.into(), addr, Some(deadline), None)
    }

    /// Sends `buf` to `addr` as several datagrams of `segment_size` bytes each (the last may
    /// be shorter) with one syscall or SQE: UDP generic segmentation offload (`UDP_SEGMENT`,
    /// Linux 4.18), for many datagrams to one destination (a QUIC or media sender). `buf` is
    /// any buffer [`send_to`](Watcher::send_to) takes, never copied; the request is one
    /// submission with one result, `size` the bytes sent (all of `buf`, or an error and 0).
    /// On the wire (and to the receiver) they are ordinary datagrams; a receiver with
    /// [`set_udp_gro`](Watcher::set_udp_gro) on may get them coalesced again. Queued ones
    /// batch into `sendmmsg` as `send_to`s do.
    ///
    /// Result errors: as [`send_to`](Watcher::send_to), plus [`Error::Io`] `EINVAL` or `EIO`
    /// where the kernel or the route cannot segment (an old kernel, `segment_size` plus headers
    /// over the route's MTU, a device without checksum offload).
    ///
    /// # Errors
    /// As [`send_to`](Watcher::send_to) (`buf` at most [`MAX_DATAGRAM`](crate::MAX_DATAGRAM)
    /// bytes in all, which is also the kernel's limit for a segmented send), plus
    /// [`Error::InvalidArgument`] for a `segment_size` of 0 or over `MAX_DATAGRAM`, or more
    /// than [`MAX_GSO_SEGMENTS`](crate::MAX_GSO_SEGMENTS) (64) segments, and
    /// [`Error::EmptyBuffer`] for an empty `buf`; [`Error::Unsupported`] off Linux.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::UdpSocket;
    /// use std::time::Duration;
    ///
    /// let ours = UdpSocket::bind("127.0.0.1:0")?;
    /// let peer = UdpSocket::bind("127.0.0.1:0")?;
    /// peer.set_read_timeout(Some(Duration::from_secs(5)))?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// w.send_to_gso((), &conn, vec![7u8; 2500], peer.local_addr()?, 1000)?; // 1000 + 1000 + 500
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert!(res.error.is_none(), "{:?}", res.error);
    /// assert_eq!(res.size, 2500);
    /// let mut got = [0; 4096];
    /// for want in [1000, 1000, 500] {
    ///     assert_eq!(peer.recv(&mut got)?, want); // three datagrams arrive
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_to_gso(
        &self,
        ctx: C,
        conn: &Conn,
        buf: impl Into<Buffer>,
        addr: std::net::SocketAddr,
        segment_size: usize,
    ) -> Result<OpId, SubmitError<C>> {
        let buf = buf.into();
        if !cfg!(target_os = "linux") {
            return Err(SubmitError::new(Error::Unsupported, ctx, Some(buf)));
        }
        if buf.is_empty() {
            return Err(SubmitError::new(Error::EmptyBuffer, ctx, Some(buf)));
        }
        let why = if segment_size == 0 || segment_size > crate::MAX_DATAGRAM {
            Some(format!(
                "segment size {segment_size} is not within 1..={}",
                crate::MAX_DATAGRAM
            ))
        } else if buf.len().div_ceil(segment_size) > crate::MAX_GSO_SEGMENTS {
            Some(format!(
                "{} bytes in segments of {segment_size} are {} datagrams, more than the {} one \
                 segmented send takes",
                buf.len(),
                buf.len().div_ceil(segment_size),
                crate::MAX_GSO_SEGMENTS
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(SubmitError::new(
                Error::InvalidArgument(why),
                ctx,
                Some(buf),
            ));
        }
        self.send_to_inner(ctx, conn, buf, addr, None, Some(segment_size as u16))
    }

    /// Turns UDP generic receive offload (`UDP_GRO`, Linux 5.0) on or off for a watched UDP
    /// socket: with it on, the kernel may hand several datagrams from one source, of one
    /// size, to one [`recv_from`](Watcher::recv_from) as one buffer, and the result's
    /// [`segment_size`](crate::OpResult::segment_size) says where they split. Fewer results
    /// and syscalls per datagram at high rates; give the receives buffers big enough for
    /// several datagrams ([`MAX_DATAGRAM`](crate::MAX_DATAGRAM) bytes holds any batch, a
    /// smaller one is reported truncated as usual). Every `recv_from` asks for the segment
    /// size, so one pending when GRO is turned on reports it too. A
    /// [`read`](Watcher::read) on a GRO socket gets the coalesced bytes without the split: use
    /// `recv_from` there.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for another watcher's connection, a socket that is not UDP, or
    /// off Linux; [`Error::ConnClosed`] if it was freed; [`Error::WatcherClosed`] after close;
    /// [`Error::Io`] from `setsockopt` (`ENOPROTOOPT` on a kernel without it).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::UdpSocket;
    /// use std::time::Duration;
    ///
    /// let (a, b) = (UdpSocket::bind("127.0.0.1:0")?, UdpSocket::bind("127.0.0.1:0")?);
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let (ca, cb) = (w.watch(&a)?, w.watch(&b)?);
    /// w.set_udp_gro(&cb, true)?;
    /// w.recv_from((), &cb, Some(vec![0; gaio::MAX_DATAGRAM]))?;
    /// w.send_to_gso((), &ca, vec![1u8; 3000], b.local_addr()?, 1000)?;
    /// let mut got = Vec::new();
    /// while got.len() < 2 {
    ///     let batch = w.wait_io_timeout(Duration::from_secs(5))?;
    ///     assert!(!batch.is_empty(), "no result within 5 s");
    ///     got.extend(batch.map(|r| (r.op, r.size, r.segment_size)));
    /// }
    /// // On loopback the segmented send reaches the GRO socket whole: one result.
    /// assert!(got.contains(&(gaio::OpType::RecvFrom, 3000, Some(1000))), "{got:?}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_udp_gro(&self, conn: &Conn, on: bool) -> Result<()> {
        if conn.0.watcher != self.id || !conn.0.is_datagram || !cfg!(target_os = "linux") {
            return Err(Error::Unsupported);
        }
        if self.read_gate().is_none() {
            return Err(Error::WatcherClosed);
        }
        let lane = crate::lane::Lane::Read;
        if conn.is_freed() || !conn.0.lanes.hold(lane) {
            return Err(Error::ConnClosed);
        }
        #[cfg(target_os = "linux")]
        let rc = {
            let v: libc::c_int = on.into();
            // SAFETY: the hold keeps the descriptor open and the connection's (as in
            // `sock_addr`); setsockopt reads one `int` from a live local.
            crate::sys::syscall(|| unsafe {
                libc::setsockopt(
                    conn.0.fd,
                    libc::SOL_UDP,
                    crate::request::datagram::UDP_GRO,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            })
        };
        #[cfg(not(target_os = "linux"))]
        let rc: std::io::Result<i32> = Ok(0);
        conn.0.lanes.unhold(lane);
        rc?;
        Ok(())
    }

    fn send_to_inner(
        &self,
        ctx: C,
        conn: &Conn,
        buf: Buffer,
        addr: std::net::SocketAddr,
        deadline: Option<Instant>,
        segment: Option<u16>,
    ) -> Result<OpId, SubmitError<C>> {
        if conn.0.watcher != self.id || !conn.0.is_datagram {
            return Err(SubmitError::new(Error::Unsupported, ctx, Some(buf)));
        }
        let why = if buf.len() > crate::MAX_DATAGRAM {
            Some(format!(
                "a datagram of {} bytes is longer than the largest UDP datagram, {} bytes",
                buf.len(),
                crate::MAX_DATAGRAM
            ))
        } else if buf
            .pieces()
            .iter()
            .any(|p| matches!(p, Buffer::Vectored(_)))
        {
            Some("a piece of a vectored datagram is itself vectored".to_string())
        } else if matches!(conn.0.peer, Some(p) if p != addr) {
            Some(format!(
                "send_to {addr} on a socket connected to {}",
                conn.0.peer.map_or_else(String::new, |p| p.to_string())
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(SubmitError::new(
                Error::InvalidArgument(why),
                ctx,
                Some(buf),
            ));
        }
        let to = crate::request::datagram::Msg::to(addr, segment);
        self.submit_op(
            Kind::SendTo,
            ctx,
            conn,
            Some(buf),
            deadline,
            None,
            0,
            None,
            Some(to),
        )
    }

    /// Holds back the requests on `conn` while the returned [`Cork`] lives: they queue (in
    /// order per direction, counted as pending) without starting, and when the last cork on
    /// `conn` is dropped they start together, sends first: queued `send_to`s go out as one
    /// `sendmmsg` per 64 datagrams, and queued `recv_from`s with their own buffers are served
    /// by one `recvmmsg`, instead of one syscall each (the point of corking: a server that
    /// answers a batch of datagrams, and submits the next receives, corks the socket for the
    /// batch; the thread dropping the cork makes the calls). Both directions are held, every
    /// kind of request (writes and reads too).
    /// Corks nest (the held requests start when the last ends); a request's deadline still
    /// fires while it is held, and free, cancel and close end held requests as any other.
    ///
    /// **On io_uring a cork holds nothing** (the call still checks its input and returns a
    /// `Cork`, so one loop serves both backends): there a held request travels to the ring
    /// thread and its result back, one hand-off each way per request, while an uncorked one is
    /// attempted at once on the submitting thread. Measured with `benches/udp.rs` (an echo
    /// loop, 64 B datagrams): 4.3 µs of server CPU per echoed datagram corked, against 1.9-2.5 µs
    /// uncorked. Requests that queue on io_uring (a full send buffer, receives waiting for
    /// data) still go out by `recvmmsg`/`sendmmsg` from the ring thread. Results and their
    /// order are the same on both backends, corked or not.
    ///
    /// Holding a cork forever holds the requests forever (until their deadline, a free or a
    /// close): drop it promptly.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for another watcher's connection; [`Error::ConnClosed`] if it was
    /// freed; [`Error::WatcherClosed`] after close.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::UdpSocket;
    /// use std::time::Duration;
    ///
    /// let ours = UdpSocket::bind("127.0.0.1:0")?;
    /// let peer = UdpSocket::bind("127.0.0.1:0")?;
    /// let to = peer.local_addr()?;
    /// let w: gaio::Watcher<u32> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// {
    ///     let _cork = w.cork(&conn)?;
    ///     for i in 0..8 {
    ///         w.send_to(i, &conn, vec![i as u8; 32], to)?; // queued (epoll), not sent yet
    ///     }
    /// } // the cork ends: all 8 go out (one sendmmsg; on io_uring each went out at once)
    /// let mut done = Vec::new();
    /// while done.len() < 8 {
    ///     let batch = w.wait_io_timeout(Duration::from_secs(5))?;
    ///     assert!(!batch.is_empty(), "no result within 5 s");
    ///     done.extend(batch.map(|r| r.context));
    /// }
    /// assert_eq!(done, (0..8).collect::<Vec<_>>()); // in submission order
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cork(&self, conn: &Conn) -> Result<Cork<'_, C>> {
        if conn.0.watcher != self.id {
            return Err(Error::Unsupported);
        }
        if self.read_gate().is_none() {
            return Err(Error::WatcherClosed);
        }
        if conn.is_freed() {
            return Err(Error::ConnClosed);
        }
        // On io_uring a held burst would have to cross to the ring thread and back, request
        // by request, which costs more than the syscalls batching saves (see the doc): the
        // cork holds nothing there.
        let held = self.backend != Backend::Uring;
        if held {
            conn.0.corks.fetch_add(1, Ordering::AcqRel);
        }
        Ok(Cork {
            watcher: self,
            conn: conn.clone(),
            held,
        })
    }

    /// How many `recvmmsg`/`sendmmsg` calls served queued datagrams, and how many datagrams
    /// they moved (a snapshot; see [`DatagramStats`](crate::DatagramStats)).
    pub fn datagram_stats(&self) -> crate::DatagramStats {
        crate::DatagramStats {
            batch_calls: self.gc.batch_calls.load(Ordering::Relaxed),
            batch_datagrams: self.gc.batch_datagrams.load(Ordering::Relaxed),
        }
    }

    /// Accepts one connection on a watched listening socket. The result's
    /// [`accepted`](crate::OpResult::accepted) holds the new connection, already taken over
    /// (close-on-exec, registered) and ready for its first request, so a whole server runs on
    /// one `wait_io` loop; its [`addr`](crate::OpResult::addr) is the peer's address. Accepts on one listener complete in submission order. Result errors:
    /// [`Error::Io`] (`EMFILE`, `EINVAL` if `listener` is not listening, …), [`Error::Deadline`]
    /// with [`accept_timeout`](Watcher::accept_timeout), [`Error::Canceled`],
    /// [`Error::ClosedPipe`].
    ///
    /// Not in Go's gaio (its users accept with `net.Listener`).
    ///
    /// # Errors
    /// As [`read`](Watcher::read) (no buffer is involved).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{TcpListener, TcpStream};
    /// use std::time::Duration;
    ///
    /// let ln = TcpListener::bind("127.0.0.1:0")?;
    /// let addr = ln.local_addr()?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let listener = w.watch(&ln)?;
    /// drop(ln);
    /// w.accept((), &listener)?;
    /// let _client = TcpStream::connect(addr)?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!(res.op, gaio::OpType::Accept);
    /// assert!(res.error.is_none(), "{:?}", res.error);
    /// let conn = res.accepted.expect("the new connection");
    /// w.read((), &conn, None)?; // taken over already: ready for requests
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept(&self, ctx: C, listener: &Conn) -> Result<OpId, SubmitError<C>> {
        self.submit(Kind::Accept, ctx, listener, None, None)
    }

    /// [`accept`](Watcher::accept) that ends with [`Error::Deadline`] if no connection arrives
    /// by `deadline`.
    ///
    /// # Errors
    /// As [`accept`](Watcher::accept).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::TcpListener;
    /// use std::time::{Duration, Instant};
    ///
    /// let ln = TcpListener::bind("127.0.0.1:0")?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let listener = w.watch(&ln)?;
    /// // Nobody connects.
    /// w.accept_timeout((), &listener, Instant::now() + Duration::from_millis(50))?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert!(matches!(res.error, Some(gaio::Error::Deadline)));
    /// assert!(res.accepted.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_timeout(
        &self,
        ctx: C,
        listener: &Conn,
        deadline: Instant,
    ) -> Result<OpId, SubmitError<C>> {
        self.submit(Kind::Accept, ctx, listener, None, Some(deadline))
    }

    /// Opens a TCP connection to `addr` (IPv4 or IPv6). The new socket is taken over at once;
    /// the result's [`conn`](crate::OpResult::conn) is it, connected when `error` is `None`.
    /// Result errors: [`Error::Io`] (`ECONNREFUSED`, `ENETUNREACH`, …), [`Error::Deadline`]
    /// if `deadline` passes first (the connect timeout), [`Error::Canceled`]. After an error,
    /// drop or free the result's connection.
    ///
    /// Not in Go's gaio (its users dial with `net.Dial`).
    ///
    /// # Errors
    /// [`Error::WatcherClosed`] after close; [`Error::Io`] if the socket cannot be created
    /// (`EMFILE`, …). The context comes back in [`SubmitError`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::TcpListener;
    /// use std::time::{Duration, Instant};
    ///
    /// let ln = TcpListener::bind("127.0.0.1:0")?;
    /// let w: gaio::Watcher<&str> = gaio::Watcher::new()?;
    /// w.connect("dial", ln.local_addr()?, Some(Instant::now() + Duration::from_secs(5)))?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!((res.op, res.context), (gaio::OpType::Connect, "dial"));
    /// assert!(res.error.is_none(), "{:?}", res.error);
    /// // The result's connection is the new socket, taken over: write on it.
    /// let (mut server_side, _) = ln.accept()?;
    /// server_side.set_read_timeout(Some(Duration::from_secs(5)))?;
    /// w.write("hi", &res.conn, b"hi".to_vec())?;
    /// let mut got = [0; 2];
    /// std::io::Read::read_exact(&mut server_side, &mut got)?;
    /// assert_eq!(&got, b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(
        &self,
        ctx: C,
        addr: std::net::SocketAddr,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        let sock = match socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        ) {
            Ok(s) => s,
            Err(e) => return Err(SubmitError::new(Error::Io(e), ctx, None)),
        };
        self.connect_on(ctx, OwnedFd::from(sock), addr.into(), deadline)
    }

    /// [`connect`](Watcher::connect) for a socket the caller set up: created with `std` or
    /// `socket2`, options set (`TCP_NODELAY`, buffer sizes, …), a local address bound. The
    /// watcher takes the descriptor over (it closes it when the connection is released, as
    /// for every connection it owns) and connects it to `addr`; the result's
    /// [`conn`](crate::OpResult::conn) is it, connected when `error` is `None`. Result errors
    /// as for `connect`, plus [`Error::Io`] `EISCONN` for a socket already connected.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let ln = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    /// sock.set_tcp_nodelay(true)?;
    /// sock.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>()?.into())?;
    /// let local = sock.local_addr()?.as_socket().expect("an IP address");
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// w.connect_socket((), sock, ln.local_addr()?, None)?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert!(res.error.is_none());
    /// let (_peer, from) = ln.accept()?;
    /// assert_eq!(from, local); // the connection came from the address the caller bound
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Unsupported`] if `socket` is not a socket (a pipe, a file); then as
    /// [`connect`](Watcher::connect). The context comes back in [`SubmitError`]; the socket is
    /// closed.
    pub fn connect_socket(
        &self,
        ctx: C,
        socket: impl Into<OwnedFd>,
        addr: std::net::SocketAddr,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        self.connect_on(ctx, socket.into(), addr.into(), deadline)
    }

    /// Opens a Unix stream socket and connects it to the socket at `path`; the result's
    /// [`conn`](crate::OpResult::conn) is it, connected when `error` is `None`. Result errors:
    /// [`Error::Io`] (`ENOENT` when nothing is at `path`, `ECONNREFUSED` when nobody listens
    /// there, `EAGAIN` when the listener's backlog is full), [`Error::Deadline`],
    /// [`Error::Canceled`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let path = std::env::temp_dir().join(format!("gaio-doc-unix-{}", std::process::id()));
    /// let _ = std::fs::remove_file(&path);
    /// let ln = std::os::unix::net::UnixListener::bind(&path)?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// w.connect_unix((), &path, None)?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert!(res.error.is_none());
    /// let _peer = ln.accept()?;
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a path too long for a Unix socket address (about 107
    /// bytes); [`Error::Io`] if the socket cannot be created; [`Error::WatcherClosed`] after
    /// close. The context comes back in [`SubmitError`].
    pub fn connect_unix(
        &self,
        ctx: C,
        path: impl AsRef<std::path::Path>,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        let addr = match socket2::SockAddr::unix(path.as_ref()) {
            Ok(a) => a,
            Err(e) => {
                let why = format!("Unix socket path {:?}: {e}", path.as_ref());
                return Err(SubmitError::new(Error::InvalidArgument(why), ctx, None));
            }
        };
        let sock = match socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None) {
            Ok(s) => s,
            Err(e) => return Err(SubmitError::new(Error::Io(e), ctx, None)),
        };
        self.connect_on(ctx, OwnedFd::from(sock), addr, deadline)
    }

    /// Takes `fd` over (it must be a socket) and submits its connect to `addr`.
    fn connect_on(
        &self,
        ctx: C,
        fd: OwnedFd,
        addr: socket2::SockAddr,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        let conn = match self.adopt(fd) {
            Ok(c) => c,
            Err(e) => return Err(SubmitError::new(e, ctx, None)),
        };
        if !conn.0.is_socket || conn.is_file() {
            // Never reached the engine as a connect: release it (the drop of this last
            // handle closes the descriptor).
            let _ = self.free(&conn);
            return Err(SubmitError::new(Error::Unsupported, ctx, None));
        }
        self.submit_op(
            Kind::Connect,
            ctx,
            &conn,
            None,
            deadline,
            Some(crate::request::AddrBuf::from_sockaddr(addr)),
            0,
            None,
            None,
        )
    }

    /// Shuts down the `how` direction(s) of a socket (`shutdown(2)`): `Write` sends the peer
    /// an end of stream (a FIN on TCP) once everything written before has gone out, `Read`
    /// makes later reads see [`Error::Eof`], `Both` does both. The request runs in the write
    /// direction's order: it starts only after every [`write`](Watcher::write) submitted
    /// before it on `conn` has completed, and its result (`op` [`OpType::Shutdown`](crate::OpType::Shutdown), `size`
    /// 0) comes after theirs. It never blocks the caller; the connection stays watched (free
    /// it as usual). Result errors: [`Error::Io`] (`ENOTCONN` on a socket that is not
    /// connected, …), [`Error::Canceled`], [`Error::ClosedPipe`] if the connection is freed
    /// first.
    ///
    /// On io_uring this is a SHUTDOWN (Linux 5.11); on an older kernel the ring thread calls
    /// `shutdown(2)` itself. Not in Go's gaio (its users call `CloseWrite` on the `net.Conn`).
    ///
    /// # Errors
    /// [`Error::Unsupported`] if `conn` is not a socket (a pipe, a file) or belongs to another
    /// watcher; [`Error::ConnClosed`] if it was freed; [`Error::WatcherClosed`] after close.
    /// The context comes back in [`SubmitError`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use std::net::Shutdown;
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// let (mut peer, ours) = UnixStream::pair()?;
    /// peer.set_read_timeout(Some(Duration::from_secs(5)))?;
    /// let w: gaio::Watcher<&str> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// w.write("write", &conn, b"bye".to_vec())?;
    /// w.shutdown("shutdown", &conn, Shutdown::Write)?; // after the write
    /// let mut order = Vec::new();
    /// while order.len() < 2 {
    ///     let batch = w.wait_io_timeout(Duration::from_secs(5))?;
    ///     assert!(!batch.is_empty(), "no result within 5 s");
    ///     for res in batch {
    ///         assert!(res.error.is_none(), "{:?}", res.error);
    ///         order.push((res.context, res.op));
    ///     }
    /// }
    /// assert_eq!(order, [("write", gaio::OpType::Write), ("shutdown", gaio::OpType::Shutdown)]);
    /// let mut got = Vec::new();
    /// peer.read_to_end(&mut got)?; // every byte, then the end of the stream
    /// assert_eq!(got, b"bye");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(
        &self,
        ctx: C,
        conn: &Conn,
        how: std::net::Shutdown,
    ) -> Result<OpId, SubmitError<C>> {
        if conn.0.watcher != self.id || !conn.0.is_socket {
            return Err(SubmitError::new(Error::Unsupported, ctx, None));
        }
        self.submit_op(
            Kind::Shutdown,
            ctx,
            conn,
            None,
            None,
            None,
            0,
            Some(how),
            None,
        )
    }

    /// Reads a file at byte `offset` into `buf` (a `Vec<u8>` or an
    /// [`AlignedBuf`](crate::AlignedBuf)) without blocking the caller: completes when `buf` is
    /// full, or earlier at the end of the file with `size` the bytes read (a short read). At or
    /// past the end, it completes with [`Error::Eof`] and `size` 0. Several `read_at`s on one
    /// file run at once (queue depth), and complete in any order.
    ///
    /// On io_uring this is a READ; on epoll a `preadv2(RWF_NOWAIT)` on the loop thread when the
    /// data is cached, else a blocking `pread` on a small pool of file threads (sockets never go
    /// there). Go's asyncfs `ReadAt`. Result errors: [`Error::Eof`], [`Error::Io`],
    /// [`Error::Deadline`], [`Error::Canceled`], [`Error::ClosedPipe`]; a request already in
    /// the kernel or on a file thread ends only when that returns, keeping its progress.
    ///
    /// # Errors
    /// [`Error::EmptyBuffer`]; [`Error::Unsupported`] if `file` is not a file taken over with
    /// [`watch`](Watcher::watch) (or belongs to another watcher); [`Error::Misaligned`] on an
    /// `O_DIRECT` file when the buffer's address, its length or `offset` is not aligned as the
    /// file needs; [`Error::InvalidArgument`] when `offset`, or `offset + buf.len()`, is above
    /// [`MAX_FILE_OFFSET`] (`i64::MAX`, the largest offset the kernel takes; the sum is taken
    /// without overflow, so `u64::MAX` is refused too); [`Error::ConnClosed`];
    /// [`Error::WatcherClosed`]. Context and buffer come back in [`SubmitError`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let path = std::env::temp_dir().join(format!("gaio-doc-read_at-{}", std::process::id()));
    /// std::fs::write(&path, b"0123456789")?;
    /// let file = std::fs::File::open(&path)?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let fconn = w.watch(&file)?;
    /// w.read_at((), &fconn, vec![0; 4], 3, None)?; // 4 bytes at offset 3
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!(res.data(), b"3456");
    /// w.read_at((), &fconn, vec![0; 8], 6, None)?; // runs into the end: a short read
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!(res.data(), b"6789");
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_at(
        &self,
        ctx: C,
        file: &Conn,
        buf: impl Into<IoBuf>,
        offset: u64,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        let buf = Buffer::from(buf.into());
        self.file_op(Kind::ReadAt, ctx, file, Some(buf), offset, deadline)
    }

    /// Writes all of `buf` to a file at byte `offset`: completes when every byte is written,
    /// or with an error keeping the count written in `size`. Several `write_at`s run at once;
    /// an [`fsync`](Watcher::fsync) submitted after them waits for them. Go's asyncfs
    /// `WriteAt`. `buf` is any contiguous buffer [`write`](Watcher::write) takes (a `Vec`, an
    /// [`AlignedBuf`](crate::AlignedBuf), an `Arc<[u8]>`, a `&'static [u8]`, …), never copied
    /// and handed back in the result as its [`Buffer`] variant; an `O_DIRECT` file needs its
    /// address aligned, whatever its type.
    ///
    /// # Errors
    /// As [`read_at`](Watcher::read_at), and [`Error::InvalidArgument`] for a
    /// [`Buffer::Vectored`] (a file write takes one buffer).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let path = std::env::temp_dir().join(format!("gaio-doc-write_at-{}", std::process::id()));
    /// let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
    /// let w: gaio::Watcher<u64> = gaio::Watcher::new()?;
    /// let fconn = w.watch(&file)?;
    /// w.write_at(4, &fconn, b"world".to_vec(), 6, None)?; // both in flight at once
    /// w.write_at(0, &fconn, b"hello ".to_vec(), 0, None)?;
    /// let mut done = 0;
    /// while done < 2 {
    ///     let batch = w.wait_io_timeout(Duration::from_secs(5))?;
    ///     assert!(!batch.is_empty(), "no result within 5 s");
    ///     for res in batch {
    ///         assert!(res.error.is_none(), "{:?}", res.error);
    ///         done += 1;
    ///     }
    /// }
    /// assert_eq!(std::fs::read(&path)?, b"hello world");
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_at(
        &self,
        ctx: C,
        file: &Conn,
        buf: impl Into<Buffer>,
        offset: u64,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        self.file_op(Kind::WriteAt, ctx, file, Some(buf.into()), offset, deadline)
    }

    /// Flushes a file's data and metadata to stable storage (`fsync(2)`). It starts only once
    /// every [`write_at`](Watcher::write_at) submitted before it on this file has completed
    /// (on io_uring the same ordering an IO_LINK chain gives), so a completed `fsync` covers
    /// them. Result errors: [`Error::Io`], [`Error::Deadline`], [`Error::Canceled`],
    /// [`Error::ClosedPipe`].
    ///
    /// # Errors
    /// [`Error::Unsupported`] if `file` is not a watched file; [`Error::ConnClosed`];
    /// [`Error::WatcherClosed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let path = std::env::temp_dir().join(format!("gaio-doc-fsync-{}", std::process::id()));
    /// let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
    /// let w: gaio::Watcher<&str> = gaio::Watcher::new()?;
    /// let fconn = w.watch(&file)?;
    /// w.write_at("write", &fconn, b"durable".to_vec(), 0, None)?;
    /// w.fsync("sync", &fconn, None)?; // starts once the write has completed
    /// let mut order = Vec::new();
    /// while order.len() < 2 {
    ///     let batch = w.wait_io_timeout(Duration::from_secs(5))?;
    ///     assert!(!batch.is_empty(), "no result within 5 s");
    ///     for res in batch {
    ///         assert!(res.error.is_none(), "{:?}", res.error);
    ///         order.push((res.context, res.op));
    ///     }
    /// }
    /// assert_eq!(order, [("write", gaio::OpType::WriteAt), ("sync", gaio::OpType::Fsync)]);
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fsync(
        &self,
        ctx: C,
        file: &Conn,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        self.file_op(Kind::Fsync, ctx, file, None, 0, deadline)
    }

    /// [`fsync`](Watcher::fsync) for data only (`fdatasync(2)`): metadata not needed to read
    /// the data back (timestamps) may stay unflushed.
    ///
    /// # Errors
    /// As [`fsync`](Watcher::fsync).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let path = std::env::temp_dir().join(format!("gaio-doc-fdatasync-{}", std::process::id()));
    /// let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
    /// let w: gaio::Watcher<&str> = gaio::Watcher::new()?;
    /// let fconn = w.watch(&file)?;
    /// w.write_at("write", &fconn, b"durable".to_vec(), 0, None)?;
    /// w.fdatasync("sync", &fconn, None)?; // starts once the write has completed
    /// let mut order = Vec::new();
    /// while order.len() < 2 {
    ///     let batch = w.wait_io_timeout(Duration::from_secs(5))?;
    ///     assert!(!batch.is_empty(), "no result within 5 s");
    ///     for res in batch {
    ///         assert!(res.error.is_none(), "{:?}", res.error);
    ///         order.push((res.context, res.op));
    ///     }
    /// }
    /// assert_eq!(order, [("write", gaio::OpType::WriteAt), ("sync", gaio::OpType::Fdatasync)]);
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fdatasync(
        &self,
        ctx: C,
        file: &Conn,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        self.file_op(Kind::Fdatasync, ctx, file, None, 0, deadline)
    }

    fn file_op(
        &self,
        kind: Kind,
        ctx: C,
        file: &Conn,
        buf: Option<Buffer>,
        offset: u64,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        let Some(info) = file.0.file else {
            return Err(SubmitError::new(Error::Unsupported, ctx, buf));
        };
        if let Some(b) = &buf {
            if b.is_empty() {
                return Err(SubmitError::new(Error::EmptyBuffer, ctx, buf));
            }
            if matches!(b, Buffer::Vectored(_)) {
                let why = "write_at takes one contiguous buffer, not a vectored one".to_string();
                return Err(SubmitError::new(Error::InvalidArgument(why), ctx, buf));
            }
            // The kernel takes a file offset as `off_t` (i64): a larger `u64` turns negative,
            // which preadv2/pwritev2 and io_uring READ/WRITE read as "the file position" (-1)
            // or refuse, and a range ending past i64::MAX is refused too (EINVAL). Refusing
            // both here, before anything is submitted, also bounds the loops' arithmetic:
            // every accepted request has `offset + buf.len() <= i64::MAX`, and it never moves
            // more than `buf.len()` bytes, so `offset + size` (the next step's offset, on
            // both backends) can neither overflow a `u64` nor leave the `off_t` range.
            // (`offset <= end`, so this also refuses every offset above i64::MAX.)
            let fits =
                matches!(offset.checked_add(b.len() as u64), Some(end) if end <= MAX_FILE_OFFSET);
            if !fits {
                let why = format!(
                    "file offset {offset} + length {} is beyond the largest the kernel takes \
                     (offset + length <= i64::MAX = {MAX_FILE_OFFSET})",
                    b.len()
                );
                return Err(SubmitError::new(Error::InvalidArgument(why), ctx, buf));
            }
            if info.direct {
                let a = info.align;
                let why = if b.as_slice().as_ptr() as usize % a.memory != 0 {
                    Some(format!("buffer address not a multiple of {}", a.memory))
                } else if b.len() % a.offset != 0 {
                    Some(format!("length {} not a multiple of {}", b.len(), a.offset))
                } else if offset % a.offset as u64 != 0 {
                    Some(format!("offset {offset} not a multiple of {}", a.offset))
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(SubmitError::new(Error::Misaligned(why), ctx, buf));
                }
            }
        }
        self.submit_op(kind, ctx, file, buf, deadline, None, offset, None, None)
    }

    /// Cancels request `id`: if it is still pending it completes with [`Error::Canceled`],
    /// keeping the bytes it moved in `size` and returning its buffer, and this returns
    /// `Ok(true)`. If it already completed (its result is queued or delivered), or never
    /// existed, this returns `Ok(false)` and nothing else happens: a request never yields a
    /// second result. Blocks for one round trip to the loop thread.
    ///
    /// On io_uring a request already in the kernel may finish before the cancellation reaches
    /// it; it then completes with its real result (`Ok(true)` was still correct: it was
    /// pending). Modelled on Zig's async_io_uring cancellation by id; Go's gaio has none.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for an id another watcher handed out (checked first, as for
    /// another watcher's [`Conn`]); [`Error::WatcherClosed`] after [`close`](Watcher::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// let (_peer, ours) = UnixStream::pair()?; // the peer sends nothing
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// let id = w.read((), &conn, Some(vec![0; 16]))?; // it waits for data
    /// assert!(w.cancel(id)?);
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert_eq!(res.id, id);
    /// assert!(matches!(res.error, Some(gaio::Error::Canceled)));
    /// assert_eq!(res.buffer.into_vec().map(|v| v.len()), Some(16)); // the buffer comes back
    /// assert!(!w.cancel(id)?); // done: nothing to cancel, no second result
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self, id: OpId) -> Result<bool> {
        if id.watcher != self.id {
            return Err(Error::Unsupported);
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        {
            let gate = self.read_gate();
            if gate.is_none() {
                return Err(Error::WatcherClosed);
            }
            self.tx
                .send(LoopMsg::Cancel { id, reply })
                .map_err(|_| Error::WatcherClosed)?;
        }
        answer.recv().map_err(|_| Error::WatcherClosed)
    }

    /// Gives a connection's descriptor back: pending requests complete with
    /// [`Error::ClosedPipe`], the descriptor leaves the watcher (deregistered, never closed) and
    /// is returned open, registered nowhere. Later submissions on `conn` are refused with
    /// [`Error::ConnClosed`]. Blocks until the loop (and, on io_uring, the kernel) has let go of
    /// it. The descriptor keeps the blocking mode the backend set (non-blocking on epoll,
    /// blocking on io_uring). Asked for in gaio #11.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for another watcher's connection; [`Error::ConnClosed`] if it was
    /// already freed or detached; [`Error::WatcherClosed`] after close.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// let (mut peer, ours) = UnixStream::pair()?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// drop(ours);
    /// w.read((), &conn, None)?; // pending: detach ends it
    /// let fd = w.detach(&conn)?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert!(matches!(res.error, Some(gaio::Error::ClosedPipe)));
    /// assert!(matches!(w.read((), &conn, None).unwrap_err().error, gaio::Error::ConnClosed));
    ///
    /// // The descriptor is ours again, still open.
    /// let mut back = UnixStream::from(fd);
    /// back.set_nonblocking(false)?;
    /// back.set_read_timeout(Some(Duration::from_secs(5)))?;
    /// peer.write_all(b"x")?;
    /// let mut one = [0; 1];
    /// back.read_exact(&mut one)?;
    /// assert_eq!(&one, b"x");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn detach(&self, conn: &Conn) -> Result<OwnedFd> {
        if conn.0.watcher != self.id {
            return Err(Error::Unsupported);
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        {
            let gate = self.read_gate();
            if gate.is_none() {
                return Err(Error::WatcherClosed);
            }
            if conn.0.freed.swap(true, Ordering::AcqRel) {
                return Err(Error::ConnClosed);
            }
            self.tx
                .send(LoopMsg::Detach {
                    id: conn.id(),
                    reply,
                })
                .map_err(|_| Error::WatcherClosed)?;
        }
        match answer.recv() {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => Err(Error::ConnClosed),
            Err(_) => Err(Error::WatcherClosed),
        }
    }

    /// The address of the peer `conn` is connected to (`getpeername(2)`), for TCP and other
    /// IP sockets: equal to [`TcpStream::peer_addr`](std::net::TcpStream::peer_addr) of the
    /// same socket. Answered on the calling thread, without a round trip to the watcher's
    /// threads; safe against a concurrent [`free`](Watcher::free): the descriptor cannot be
    /// closed (and its number reused) during the call.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for another watcher's connection and for a descriptor without
    /// an IP address (a Unix socket, a pipe, a file); [`Error::ConnClosed`] if `conn` was
    /// freed or detached (or the watcher closed); [`Error::WatcherClosed`] after
    /// [`close`](Watcher::close); [`Error::Io`] from the call (`ENOTCONN` for a socket that is
    /// not connected).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{TcpListener, TcpStream};
    ///
    /// let ln = TcpListener::bind("127.0.0.1:0")?;
    /// let client = TcpStream::connect(ln.local_addr()?)?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&client)?;
    /// assert_eq!(w.peer_addr(&conn)?, ln.local_addr()?);
    /// assert_eq!(w.local_addr(&conn)?, client.local_addr()?);
    /// w.free(&conn)?;
    /// assert!(matches!(w.peer_addr(&conn), Err(gaio::Error::ConnClosed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_addr(&self, conn: &Conn) -> Result<std::net::SocketAddr> {
        self.sock_addr(conn, true)
    }

    /// The local address of `conn` (`getsockname(2)`), for TCP and other IP sockets: equal to
    /// [`TcpStream::local_addr`](std::net::TcpStream::local_addr) of the same socket (for a
    /// watched listener, the address it listens on). Answered on the calling thread, safe
    /// against a concurrent free, as [`peer_addr`](Watcher::peer_addr).
    ///
    /// # Errors
    /// As [`peer_addr`](Watcher::peer_addr).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::TcpListener;
    ///
    /// let ln = TcpListener::bind("[::1]:0").or_else(|_| TcpListener::bind("127.0.0.1:0"))?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let listener = w.watch(&ln)?;
    /// assert_eq!(w.local_addr(&listener)?, ln.local_addr()?);
    ///
    /// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let unix = w.watch(&a)?;
    /// assert!(matches!(w.local_addr(&unix), Err(gaio::Error::Unsupported)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_addr(&self, conn: &Conn) -> Result<std::net::SocketAddr> {
        self.sock_addr(conn, false)
    }

    /// `peer_addr` (`peer`) or `local_addr`. The read lane's hold (`Lanes::hold`) is what
    /// keeps the descriptor the connection's during the call: the release that closes it
    /// first closes the lanes, which waits for the hold to end, and a hold is refused once
    /// they are closed. (A message to the engine would do too, at the price of a thread
    /// round trip for what is one syscall.)
    fn sock_addr(&self, conn: &Conn, peer: bool) -> Result<std::net::SocketAddr> {
        if conn.0.watcher != self.id {
            return Err(Error::Unsupported);
        }
        if self.read_gate().is_none() {
            return Err(Error::WatcherClosed);
        }
        if conn.is_freed() {
            return Err(Error::ConnClosed);
        }
        if !conn.0.is_socket || conn.0.file.is_some() {
            return Err(Error::Unsupported);
        }
        let lane = crate::lane::Lane::Read;
        if !conn.0.lanes.hold(lane) {
            return Err(Error::ConnClosed);
        }
        // SAFETY: the hold keeps the descriptor open and the connection's until `unhold`
        // below (its release waits for the hold in `Lanes::close` before closing it), and the
        // borrow ends before that.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(conn.0.fd) };
        let sock = socket2::SockRef::from(&fd);
        let got = if peer {
            sock.peer_addr()
        } else {
            sock.local_addr()
        };
        conn.0.lanes.unhold(lane);
        got.map_err(Error::Io)?
            .as_socket()
            .ok_or(Error::Unsupported)
    }

    fn submit(
        &self,
        kind: Kind,
        ctx: C,
        conn: &Conn,
        buffer: Option<Buffer>,
        deadline: Option<Instant>,
    ) -> Result<OpId, SubmitError<C>> {
        if conn.0.file.is_some() {
            // Stream requests mean nothing on a file: use read_at / write_at.
            return Err(SubmitError::new(Error::Unsupported, ctx, buffer));
        }
        self.submit_op(kind, ctx, conn, buffer, deadline, None, 0, None, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn submit_op(
        &self,
        kind: Kind,
        ctx: C,
        conn: &Conn,
        buffer: Option<Buffer>,
        deadline: Option<Instant>,
        addr: Option<Box<crate::request::AddrBuf>>,
        offset: u64,
        how: Option<std::net::Shutdown>,
        msg: Option<Box<crate::request::datagram::Msg>>,
    ) -> Result<OpId, SubmitError<C>> {
        if conn.0.watcher != self.id {
            return Err(SubmitError::new(Error::Unsupported, ctx, buffer));
        }
        if conn.is_freed() {
            return Err(SubmitError::new(Error::ConnClosed, ctx, buffer));
        }
        let gate = self.read_gate();
        let Some(driver) = gate.as_ref() else {
            return Err(SubmitError::new(Error::WatcherClosed, ctx, buffer));
        };
        let id = OpId {
            watcher: self.id,
            seq: self.next_op.fetch_add(1, Ordering::Relaxed),
            conn: conn.id(),
        };
        let mut req = Request::new(id, kind, conn, ctx, buffer, deadline);
        req.addr = addr;
        if msg.is_some() {
            req.msg = msg;
        }
        req.offset = offset;
        req.how = how;
        let Some(lane) = kind.lane() else {
            return self.send(driver, req).map(|()| id);
        };
        match conn.0.lanes.claim(lane, driver.inline_allowed(&req)) {
            Claim::Queue => self.send(driver, req).map(|()| id),
            Claim::Inline => {
                let Some(req) = attempt_inline(req, &self.swap_pool, &self.results) else {
                    conn.0.lanes.done_inline(lane);
                    return Ok(id);
                };
                // Counted as pending, the syscall part of the claim ended (on epoll the
                // hand-off takes the engine's lock, under which a release may wait for
                // syscalls to end: `Lanes::close`), the order part kept until the request is
                // with the engine, so no other request of this direction overtakes it (a write
                // that went out in part stays whole).
                conn.0.lanes.forward(lane);
                let sent = self.send(driver, req);
                conn.0.lanes.done_inline(lane);
                sent.map(|()| id)
            }
        }
    }

    /// Hands a request to the engine; a refusal gives its context and buffer back.
    fn send(&self, driver: &Handle<C>, req: Request<C>) -> Result<(), SubmitError<C>> {
        driver
            .submit(&self.tx, req)
            .map_err(|req| SubmitError::new(Error::WatcherClosed, req.context, req.buffer))
    }

    /// Releases a connection: every pending request on it completes with
    /// [`Error::ClosedPipe`] (keeping partial progress in `size`), and the watcher's descriptor
    /// is deregistered and closed. Asynchronous, like Go's `Free`: it yields no result of its
    /// own. Later submissions on `conn` are refused with [`Error::ConnClosed`]. Freeing twice
    /// is a no-op.
    ///
    /// Unlike Go, freeing never registers or closes anything the watcher did not take over.
    ///
    /// # Errors
    /// [`Error::Unsupported`] if `conn` belongs to another watcher; [`Error::WatcherClosed`]
    /// after [`close`](Watcher::close) (which released every connection already).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// let (_peer, ours) = UnixStream::pair()?;
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let conn = w.watch(&ours)?;
    /// w.read((), &conn, None)?; // pending: free ends it
    /// w.free(&conn)?;
    /// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
    /// assert!(matches!(res.error, Some(gaio::Error::ClosedPipe)));
    /// assert!(conn.is_freed());
    /// assert!(matches!(w.read((), &conn, None).unwrap_err().error, gaio::Error::ConnClosed));
    /// w.free(&conn)?; // a second free does nothing
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn free(&self, conn: &Conn) -> Result<()> {
        if conn.0.watcher != self.id {
            return Err(Error::Unsupported);
        }
        let gate = self.read_gate();
        if gate.is_none() {
            return Err(Error::WatcherClosed);
        }
        if conn.0.freed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.tx
            .send(LoopMsg::Free(conn.id()))
            .map_err(|_| Error::WatcherClosed)
    }

    /// Waits for at least one result and returns every result ready, as one [`Batch`]. Go's
    /// `WaitIO`.
    ///
    /// Several threads may call it at once; each result goes to exactly one of them. On epoll
    /// (Linux) the caller may serve readiness while it waits (see [`Watcher`]): one caller at a
    /// time waits in `epoll_wait`, and with results already queued it first polls once without
    /// waiting so that what is ready joins the batch. After
    /// [`close`](Watcher::close), the results still queued (the `ClosedPipe` results of the
    /// requests close ended) are returned first; once none is left it returns
    /// [`Error::WatcherClosed`] (Go picks at random between the two). A
    /// [`Waker`](crate::Waker) makes it return early, with the results ready then or an empty
    /// batch. To collect into a vector of your own (no borrow of the watcher left), see
    /// [`wait_io_into`](Watcher::wait_io_into).
    ///
    /// # Errors
    /// [`Error::WatcherClosed`] once closed and drained; [`Error::WatcherFailed`] instead if a
    /// backend thread failed.
    pub fn wait_io(&self) -> Result<Batch<'_, C>> {
        let items = self.results.take(None, self.lead.as_deref())?;
        Ok(Batch::new(items, &self.results))
    }

    /// [`wait_io`](Watcher::wait_io) that gives up after `timeout` and then returns an empty
    /// batch (as it does when a [`Waker`](crate::Waker) wakes it). Useful for loops that must also do other work, and for tests that must fail
    /// rather than hang.
    ///
    /// # Errors
    /// As [`wait_io`](Watcher::wait_io).
    pub fn wait_io_timeout(&self, timeout: Duration) -> Result<Batch<'_, C>> {
        let items = self.results.take(Some(timeout), self.lead.as_deref())?;
        Ok(Batch::new(items, &self.results))
    }

    /// [`wait_io`](Watcher::wait_io) into a vector the caller owns: waits for at least one
    /// result (for up to `timeout`; `None` waits without limit, `Some(Duration::ZERO)` only
    /// polls), appends every result ready to `out` (after what it holds already, in completion
    /// order) and returns how many it appended. The convention of mio's `Poll::poll(&mut
    /// Events, Option<Duration>)` and polling's `Poller::wait`.
    ///
    /// Returns `Ok(0)` when the timeout passed with nothing ready, or when a
    /// [`Waker`](crate::Waker) woke the call. No borrow of the watcher outlives the call, so
    /// the results can be handled by a method that needs `&mut self` while the watcher is a
    /// field of `self` (a [`Batch`] would hold `&self.watcher` across the loop: E0502). Steady
    /// state allocates nothing: the results move from the queue's deque, which the queue keeps,
    /// into `out`, which grows only while it has less room than a batch; clear it (or
    /// [`drain`](Vec::drain) it) between calls to reuse its storage.
    ///
    /// Same semantics as [`wait_io`](Watcher::wait_io) otherwise: several threads may call it
    /// at once and each result goes to exactly one of them; on epoll one caller at a time
    /// serves readiness in `epoll_wait`; after [`close`](Watcher::close) the queued results
    /// come first.
    ///
    /// # Errors
    /// [`Error::WatcherClosed`] once closed and drained (`out` is left as it was);
    /// [`Error::WatcherFailed`] instead if a backend thread failed.
    ///
    /// ```
    /// use gaio::{OpResult, Watcher};
    /// use std::time::Duration;
    ///
    /// struct Server {
    ///     w: Watcher<u32>,
    ///     events: Vec<OpResult<u32>>,
    ///     handled: usize,
    /// }
    ///
    /// impl Server {
    ///     fn handle(&mut self, _r: OpResult<u32>) {
    ///         self.handled += 1;
    ///     }
    ///
    ///     fn turn(&mut self) -> gaio::Result<()> {
    ///         // `self.w` is borrowed only for the call: `handle` may take `&mut self`.
    ///         self.w.wait_io_into(&mut self.events, Some(Duration::from_secs(5)))?;
    ///         let mut events = std::mem::take(&mut self.events);
    ///         for r in events.drain(..) {
    ///             self.handle(r);
    ///         }
    ///         self.events = events; // keep its storage for the next turn
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let mut s = Server { w: Watcher::new()?, events: Vec::new(), handled: 0 };
    /// let conn = s.w.watch(&a)?;
    /// std::io::Write::write_all(&mut b, b"hi")?;
    /// s.w.read(7, &conn, None)?;
    /// while s.handled == 0 {
    ///     s.turn()?;
    /// }
    /// // Nothing is ready now: a poll returns 0 and leaves the vector as it was.
    /// let mut out = Vec::new();
    /// assert_eq!(s.w.wait_io_into(&mut out, Some(Duration::ZERO))?, 0);
    /// assert!(out.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_io_into(
        &self,
        out: &mut Vec<crate::OpResult<C>>,
        timeout: Option<Duration>,
    ) -> Result<usize> {
        self.results.take_into(out, timeout, self.lead.as_deref())
    }

    /// A [`Waker`](crate::Waker) that makes a blocked `wait_io*` call of this watcher (or
    /// the next one) return from any thread, possibly with no result. It holds only a weak
    /// reference to the result queue: it keeps no thread or descriptor alive, and after
    /// [`close`](Watcher::close) its [`wake`](crate::Waker::wake) returns
    /// [`Error::WatcherClosed`]. Cheap; make as many as needed (or clone one).
    ///
    /// ```
    /// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
    /// let waker = w.waker();
    /// std::thread::spawn(move || waker.wake()).join().unwrap()?;
    /// assert_eq!(w.wait_io()?.len(), 0); // returns at once: the wake-up was sticky
    /// # Ok::<(), gaio::Error>(())
    /// ```
    pub fn waker(&self) -> crate::Waker {
        let queue: Arc<dyn crate::results::Notify> = self.results.clone();
        crate::Waker::new(Arc::downgrade(&queue))
    }

    /// Shuts the watcher down: every pending request completes with [`Error::ClosedPipe`]
    /// (collect those results with [`wait_io`](Watcher::wait_io)), every descriptor the watcher
    /// took over is deregistered and closed, and both threads are joined before this returns.
    /// Idempotent: later calls return `Ok` at once. Dropping the watcher does the same.
    ///
    /// # Errors
    /// None at present; the `Result` is kept for parity with Go's `Close() error`.
    pub fn close(&self) -> Result<()> {
        let driver = {
            let mut g = self.gate.write().unwrap_or_else(|e| e.into_inner());
            match g.take() {
                Some(d) => d,
                None => return Ok(()),
            }
        };
        let _ = self.tx.send(LoopMsg::Close);
        driver.shutdown();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
        // The driver's descriptors (a registry clone, the waker, the ring's eventfd) close only
        // now, after the threads that use them are gone.
        driver.finish();
        drop(driver);
        self.results.close();
        Ok(())
    }

    /// Pins the poller thread (the one that blocks in the kernel's readiness wait and, on
    /// epoll, serves the readiness it gets while no thread is in [`wait_io`](Watcher::wait_io))
    /// to CPU `cpu` (an id as in `/proc/cpuinfo`). Go's `SetPollerAffinity`; unlike Go, the
    /// kernel's error is reported. A thread in `wait_io` that serves readiness itself runs
    /// where its caller pinned it.
    ///
    /// On io_uring one thread both waits in the kernel and does the loop's work (it owns the
    /// ring), so this call and [`set_loop_affinity`](Watcher::set_loop_affinity) pin that same
    /// thread; the last call wins.
    ///
    /// # Errors
    /// [`Error::CpuId`] if `cpu` is not a CPU of this machine or not one this process may use;
    /// [`Error::PollerClosed`] after [`close`](Watcher::close).
    pub fn set_poller_affinity(&self, cpu: usize) -> Result<()> {
        crate::affinity::check_cpu(cpu)?;
        let gate = self.read_gate();
        if gate.is_none() {
            return Err(Error::PollerClosed);
        }
        self.poller_slot.pin(cpu, Error::PollerClosed)
    }

    /// Pins the loop thread to CPU `cpu`: on epoll the thread that handles frees, cancels,
    /// detaches, file completions and deadlines (reads and writes run on the submitting
    /// thread, in `wait_io` or on the poller, see [`Watcher`]); on io_uring the ring thread,
    /// which does all of it (see [`set_poller_affinity`](Watcher::set_poller_affinity)). Go's
    /// `SetLoopAffinity`; unlike Go it never blocks on a busy loop.
    ///
    /// # Errors
    /// [`Error::CpuId`] as for [`set_poller_affinity`](Watcher::set_poller_affinity);
    /// [`Error::ConnClosed`] after [`close`](Watcher::close) (Go's choice, kept).
    pub fn set_loop_affinity(&self, cpu: usize) -> Result<()> {
        crate::affinity::check_cpu(cpu)?;
        let gate = self.read_gate();
        if gate.is_none() {
            return Err(Error::ConnClosed);
        }
        self.loop_slot.pin(cpu, Error::ConnClosed)
    }

    /// Counters of connections whose last [`Conn`] was dropped without [`free`](Watcher::free)
    /// (`found`) and of those the loop has released (`closed`). Go's `GetGC`.
    pub fn gc(&self) -> GcStats {
        let found = self.gc.found.load(Ordering::Relaxed);
        // After close every connection was released, also one whose drop the loop never saw.
        let closed = if self.read_gate().is_none() {
            found
        } else {
            self.gc.closed.load(Ordering::Relaxed)
        };
        GcStats { found, closed }
    }

    /// What the swap buffers hold right now (a snapshot; slices dropped on other threads change
    /// it at any time).
    pub fn swap_stats(&self) -> SwapStats {
        let (slices_live, buffers_in_use) = self.swap.stats();
        SwapStats {
            buffers: self.swap_shape.0,
            buffer_size: self.swap_shape.1,
            buffers_in_use,
            slices_live,
        }
    }

    /// Test hook, not part of the API: makes backend thread `thread` (`"gaio-loop"`,
    /// `"gaio-poller"` or `"gaio-file"` on epoll, `"gaio-uring"` on io_uring) panic at its next
    /// turn (a file thread at its next job), to prove that a failing thread fails closed
    /// (`Error::WatcherFailed`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name this backend has no thread of;
    /// [`Error::WatcherClosed`] after close.
    #[doc(hidden)]
    pub fn inject_failure(&self, thread: &str) -> Result<()> {
        use crate::driver::failure::Thread;
        let gate = self.read_gate();
        let driver = gate.as_ref().ok_or(Error::WatcherClosed)?;
        let t = Thread::named(thread)
            .filter(|t| driver.has_thread(*t))
            .ok_or_else(|| Error::InvalidArgument(format!("no thread {thread} here")))?;
        self.failpoints.arm(t);
        driver.wake_all(&self.tx);
        Ok(())
    }

    fn read_gate(&self) -> std::sync::RwLockReadGuard<'_, Option<Handle<C>>> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cork on one connection, from [`Watcher::cork`]: while it lives, requests on the
/// connection queue without starting; dropping the last cork starts them together (queued
/// `send_to`s go out as one `sendmmsg` per 64 datagrams, queued `recv_from`s come in by
/// `recvmmsg`). On io_uring it holds nothing (see [`Watcher::cork`]).
#[must_use = "dropping the cork at once releases it: hold it while submitting the burst"]
pub struct Cork<'w, C: Send + 'static> {
    watcher: &'w Watcher<C>,
    conn: Conn,
    /// False on io_uring, where a cork holds nothing.
    held: bool,
}

impl<C: Send + 'static> Drop for Cork<'_, C> {
    fn drop(&mut self) {
        if self.held && self.conn.0.corks.fetch_sub(1, Ordering::AcqRel) == 1 {
            let gate = self.watcher.read_gate();
            if let Some(driver) = gate.as_ref() {
                driver.uncork(&self.watcher.tx, self.conn.id());
            }
        }
    }
}

impl<C: Send + 'static> std::fmt::Debug for Cork<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cork").field("conn", &self.conn).finish()
    }
}

impl<C: Send + 'static> Drop for Watcher<C> {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl<C: Send + 'static> std::fmt::Debug for Watcher<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("backend", &self.backend)
            .field("closed", &self.read_gate().is_none())
            .finish_non_exhaustive()
    }
}
