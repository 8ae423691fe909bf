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
    /// The buffer that was passed in, if any ([`IoBuf::into_vec`](crate::IoBuf::into_vec)
    /// gives a `Vec` back).
    pub buffer: Option<crate::IoBuf>,
}

impl<C> SubmitError<C> {
    pub(crate) fn new(error: Error, context: C, buffer: Option<crate::IoBuf>) -> Self {
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

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
