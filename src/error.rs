//! Error types: one variant per gaio sentinel, plus the OS error.

use std::fmt;
use std::io;

/// Everything that can go wrong in `gaio`.
///
/// The unit variants mirror the sentinels of Go's gaio (`ErrUnsupported`, `ErrWatcherClosed`, …)
/// so a port can compare with `matches!`. OS errors (`ECONNRESET`, `EPIPE`, `EMFILE`, …) come
/// through [`Error::Io`] unchanged.
///
/// Errors reach the caller in two ways:
/// - synchronously, from a submission or a control call, when the request is refused before it
///   is accepted (for example [`Error::EmptyBuffer`] or [`Error::WatcherClosed`]); the refused
///   request's buffer and context come back inside [`SubmitError`];
/// - asynchronously, in [`OpResult::error`](crate::OpResult::error), for an accepted request that
///   ended in failure (for example [`Error::Deadline`] or [`Error::Eof`]).
///
/// # Into `std::io::Error`
///
/// `io::Error::from(e)` (and so `?` in a function returning `io::Result`) converts with the
/// kinds std itself uses.
/// [`Error::Io`] gives back the OS error it holds, unchanged (its kind and
/// [`raw_os_error`](io::Error::raw_os_error) stay). Every other variant becomes an
/// `io::Error` of the kind below that wraps the gaio error itself, so nothing is lost:
/// [`get_ref`](io::Error::get_ref)`()` and [`into_inner`](io::Error::into_inner)`()`
/// downcast back to [`Error`], and the message is the gaio error's.
///
/// | gaio | [`io::ErrorKind`] | why |
/// |---|---|---|
/// | [`Io`](Error::Io)`(e)` | `e.kind()` | `e` itself, moved out |
/// | [`Deadline`](Error::Deadline) | `TimedOut` | the deadline passed |
/// | [`Eof`](Error::Eof) | `UnexpectedEof` | the peer closed before the request was done |
/// | [`ClosedPipe`](Error::ClosedPipe) | `BrokenPipe` | the connection went away under a pending request |
/// | [`WatcherClosed`](Error::WatcherClosed), [`PollerClosed`](Error::PollerClosed) | `BrokenPipe` | the threads that would serve the call are gone for good |
/// | [`ConnClosed`](Error::ConnClosed) | `NotConnected` | the handle was freed |
/// | [`Unsupported`](Error::Unsupported), [`BackendUnavailable`](Error::BackendUnavailable) | `Unsupported` | this descriptor or backend cannot be driven here |
/// | [`EmptyBuffer`](Error::EmptyBuffer), [`Misaligned`](Error::Misaligned), [`InvalidArgument`](Error::InvalidArgument), [`CpuId`](Error::CpuId) | `InvalidInput` | the caller's argument was refused |
/// | [`Canceled`](Error::Canceled) | `Other` | see below |
/// | [`WatcherFailed`](Error::WatcherFailed) | `Other` | a bug in gaio: no kind fits |
///
/// `Canceled` is not `Interrupted`: std reads `Interrupted` as "try again" (`read_exact`,
/// `write_all` and `io::copy` retry it silently), while a cancellation was asked for by the
/// caller and must not be retried. std has no stable kind for `ECANCELED`, so it is `Other`;
/// `get_ref()` still tells it apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The descriptor cannot be driven by this watcher: it cannot be polled (a regular file or
    /// a directory on the epoll backend), or the [`Conn`](crate::Conn) belongs to another
    /// [`Watcher`](crate::Watcher). Go's `ErrUnsupported`.
    #[error("unsupported descriptor or connection")]
    Unsupported,
    /// The watcher was closed: every submission after [`Watcher::close`](crate::Watcher::close),
    /// and [`Watcher::wait_io`](crate::Watcher::wait_io) once no result is left. Go's
    /// `ErrWatcherClosed`.
    #[error("watcher closed")]
    WatcherClosed,
    /// [`Watcher::set_poller_affinity`](crate::Watcher::set_poller_affinity) after the poller
    /// thread has exited. Go's `ErrPollerClosed`.
    #[error("poller closed")]
    PollerClosed,
    /// The connection was freed (a submission on a [`Conn`](crate::Conn) after
    /// [`Watcher::free`](crate::Watcher::free)), or
    /// [`Watcher::set_loop_affinity`](crate::Watcher::set_loop_affinity) after close, as in Go.
    /// Go's `ErrConnClosed`.
    #[error("connection closed")]
    ConnClosed,
    /// The request's deadline passed before it completed; `size` holds the bytes moved before
    /// that. Go's `ErrDeadline`.
    #[error("operation exceeded deadline")]
    Deadline,
    /// A write, `read_full` or `read` was given a zero-length buffer. Go's `ErrEmptyBuffer`
    /// (Go lets a zero-length `Read` buffer through and reports EOF; we refuse it, see
    /// [`Watcher::read`](crate::Watcher::read)).
    #[error("empty buffer")]
    EmptyBuffer,
    /// An affinity call named a CPU id that does not exist or that this process may not run on.
    /// Go's `ErrCPUID`.
    #[error("no such CPU")]
    CpuId,
    /// The peer closed its side: a read returned 0 bytes. `size` holds what a `read_full` had
    /// gathered before. Go's `io.EOF`.
    #[error("end of file")]
    Eof,
    /// The request was pending when its connection was freed, dropped or the watcher closed.
    /// Go's `io.ErrClosedPipe`.
    #[error("read/write on closed pipe")]
    ClosedPipe,
    /// A request on an `O_DIRECT` file whose buffer address, length or offset is not aligned
    /// as the file needs ([`dio_alignment`](crate::dio_alignment)); refused before anything
    /// is submitted. The text says which.
    #[error("misaligned for O_DIRECT: {0}")]
    Misaligned(String),
    /// The request was cancelled by [`Watcher::cancel`](crate::Watcher::cancel); `size` keeps
    /// the bytes it moved before. Distinct from [`Error::Deadline`] and [`Error::ClosedPipe`].
    #[error("operation canceled")]
    Canceled,
    /// The requested backend cannot run here; the text says why (for example that io_uring is
    /// not built into this version yet, or is disabled by the kernel).
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// A configuration value or an argument is out of range: a builder setting beyond its
    /// limit (a zero swap buffer size, more than
    /// [`MAX_SWAP_BUFFERS`](crate::MAX_SWAP_BUFFERS) buffers, …), an unknown `GAIO_BACKEND`
    /// value, or a file offset (or offset + length) above
    /// [`MAX_FILE_OFFSET`](crate::MAX_FILE_OFFSET), refused before submission. The text names
    /// the value.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A thread of the watcher's backend failed (a bug in gaio): every request pending then
    /// was ended (with [`Error::ClosedPipe`]) and its result delivered, and
    /// [`Watcher::wait_io`](crate::Watcher::wait_io) returns this once they are taken, where
    /// a closed watcher returns [`Error::WatcherClosed`]. The text names the thread and says
    /// why. Later submissions end with `ClosedPipe`; close the watcher.
    #[error("watcher failed: {0}")]
    WatcherFailed(String),
    /// An error from the operating system, unchanged.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// The raw OS error number, if this is an [`Error::Io`] that carries one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// The [`io::ErrorKind`] this error has once converted into an [`io::Error`] (the table is
    /// in the section *Into `std::io::Error`* above); for [`Error::Io`], the kind of the OS
    /// error inside.
    ///
    /// ```
    /// use std::io::ErrorKind;
    /// assert_eq!(gaio::Error::Deadline.kind(), ErrorKind::TimedOut);
    /// assert_eq!(gaio::Error::Eof.kind(), ErrorKind::UnexpectedEof);
    /// ```
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Error::Unsupported | Error::BackendUnavailable(_) => K::Unsupported,
            Error::WatcherClosed | Error::PollerClosed | Error::ClosedPipe => K::BrokenPipe,
            Error::ConnClosed => K::NotConnected,
            Error::Deadline => K::TimedOut,
            Error::EmptyBuffer
            | Error::CpuId
            | Error::Misaligned(_)
            | Error::InvalidArgument(_) => K::InvalidInput,
            Error::Eof => K::UnexpectedEof,
            Error::Canceled | Error::WatcherFailed(_) => K::Other,
            Error::Io(e) => e.kind(),
        }
    }
}

/// A gaio error as a [`std::io::Error`], for callers whose own functions return `io::Result`:
/// [`Error::Io`] gives back the OS error it holds; every other variant becomes an `io::Error`
/// of the kind [`Error::kind`] names, wrapping the gaio error (the table and the reasons are in
/// [`Error`]'s section *Into `std::io::Error`*).
///
/// ```
/// use std::io;
///
/// let e = io::Error::from(gaio::Error::Deadline);
/// assert_eq!(e.kind(), io::ErrorKind::TimedOut);
/// assert!(matches!(e.get_ref().and_then(|e| e.downcast_ref()), Some(gaio::Error::Deadline)));
///
/// let os = gaio::Error::Io(io::Error::from_raw_os_error(libc::ECONNRESET));
/// let e = io::Error::from(os);
/// assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
/// assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
///
/// // In a function that returns io::Result, `?` converts.
/// fn serve() -> io::Result<()> {
///     let w: gaio::Watcher<()> = gaio::Watcher::new()?;
///     w.close()?;
///     Ok(())
/// }
/// serve()?;
/// # Ok::<(), io::Error>(())
/// ```
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            e => io::Error::new(e.kind(), e),
        }
    }
}

/// A submission that was refused, with everything it carried handed back.
///
/// Returned by the submit calls ([`Watcher::read`](crate::Watcher::read),
/// [`Watcher::write`](crate::Watcher::write), …) when the request is not accepted; a refused
/// request yields no [`OpResult`](crate::OpResult) later. The caller's context and buffer are
/// returned untouched so that bad input loses nothing. `?` converts it into [`Error`] (dropping
/// the context and buffer) for callers that do not need them back.
pub struct SubmitError<C> {
    /// Why the request was refused.
    pub error: Error,
    /// The context value that was passed in.
    pub context: C,
    /// The buffer that was passed in, if any, as the [`Buffer`](crate::Buffer) variant of
    /// its type ([`Buffer::into_vec`](crate::Buffer::into_vec) gives a `Vec` back; a shared
    /// `Arc<[u8]>` comes back as `Buffer::Shared` holding the same allocation).
    pub buffer: Option<crate::Buffer>,
}

impl<C> SubmitError<C> {
    pub(crate) fn new(error: Error, context: C, buffer: Option<crate::Buffer>) -> Self {
        SubmitError {
            error,
            context,
            buffer,
        }
    }
}

impl<C> fmt::Debug for SubmitError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitError")
            .field("error", &self.error)
            .field("buffer_len", &self.buffer.as_ref().map(|b| b.len()))
            .finish_non_exhaustive()
    }
}

impl<C> fmt::Display for SubmitError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "submission refused: {}", self.error)
    }
}

impl<C> std::error::Error for SubmitError<C> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<C> From<SubmitError<C>> for Error {
    fn from(e: SubmitError<C>) -> Self {
        e.error
    }
}

/// A refused submission as a [`std::io::Error`]: its [`error`](SubmitError::error) converted
/// as for [`Error`] (its section *Into `std::io::Error`*); the context and
/// the buffer are dropped (keep the `SubmitError` to get them back). So `?` on a submit call
/// works in a function that returns `io::Result`.
///
/// ```
/// use std::io;
///
/// fn submit(w: &gaio::Watcher<u32>, conn: &gaio::Conn) -> io::Result<()> {
///     w.write(7, conn, Vec::new())?; // an empty buffer is refused
///     Ok(())
/// }
///
/// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
/// let w = gaio::Watcher::new()?;
/// let conn = w.watch(&a)?;
/// let e = submit(&w, &conn).unwrap_err();
/// assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<C> From<SubmitError<C>> for io::Error {
    fn from(e: SubmitError<C>) -> io::Error {
        e.error.into()
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use io::ErrorKind as K;

    /// Converts `e` and checks the kind, that the gaio error is inside unchanged, and that the
    /// message is the gaio error's.
    fn wrapped(e: Error, kind: K) {
        let text = e.to_string();
        let io = io::Error::from(e);
        assert_eq!(io.kind(), kind, "{text}");
        assert_eq!(io.to_string(), text);
        assert_eq!(io.raw_os_error(), None);
        let inner = io.into_inner().expect("the gaio error is kept inside");
        let back = inner.downcast::<Error>().expect("and downcasts back");
        assert_eq!(back.to_string(), text);
        assert_eq!(back.kind(), kind);
    }

    #[test]
    fn every_variant_maps_to_its_kind() {
        wrapped(Error::Unsupported, K::Unsupported);
        wrapped(
            Error::BackendUnavailable("no io_uring".into()),
            K::Unsupported,
        );
        wrapped(Error::WatcherClosed, K::BrokenPipe);
        wrapped(Error::PollerClosed, K::BrokenPipe);
        wrapped(Error::ClosedPipe, K::BrokenPipe);
        wrapped(Error::ConnClosed, K::NotConnected);
        wrapped(Error::Deadline, K::TimedOut);
        wrapped(Error::EmptyBuffer, K::InvalidInput);
        wrapped(Error::CpuId, K::InvalidInput);
        wrapped(Error::Misaligned("offset 3".into()), K::InvalidInput);
        wrapped(
            Error::InvalidArgument("swap buffer size 0".into()),
            K::InvalidInput,
        );
        wrapped(Error::Eof, K::UnexpectedEof);
        wrapped(Error::Canceled, K::Other);
    }

    #[test]
    fn os_errors_come_out_unchanged() {
        for (errno, kind) in [
            (libc::ECONNRESET, K::ConnectionReset),
            (libc::EPIPE, K::BrokenPipe),
            (libc::ECONNREFUSED, K::ConnectionRefused),
            (libc::EAGAIN, K::WouldBlock),
        ] {
            let e = Error::Io(io::Error::from_raw_os_error(errno));
            assert_eq!(e.kind(), kind);
            let io = io::Error::from(e);
            assert_eq!(io.kind(), kind);
            assert_eq!(
                io.raw_os_error(),
                Some(errno),
                "the OS error is moved out, not wrapped"
            );
        }
        // A custom io::Error inside Io keeps its payload too.
        let io = io::Error::from(Error::Io(io::Error::new(K::InvalidData, "bad frame")));
        assert_eq!(io.kind(), K::InvalidData);
        assert_eq!(io.to_string(), "bad frame");
    }

    #[test]
    fn submit_error_converts_through_its_error() {
        let e = SubmitError::new(
            Error::EmptyBuffer,
            "ctx",
            Some(crate::Buffer::User(Vec::new())),
        );
        let io = io::Error::from(e);
        assert_eq!(io.kind(), K::InvalidInput);
        let e = SubmitError::new(
            Error::Io(io::Error::from_raw_os_error(libc::EBADF)),
            1u8,
            None,
        );
        assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::EBADF));
    }
}
