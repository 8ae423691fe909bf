//! The `tls` module's errors: what a TLS result can end with, and a refused TLS submission.

use std::fmt;
use std::io;

/// Why a TLS operation ended early ([`TlsResult::error`](super::TlsResult::error)), or why a
/// TLS submission was refused ([`TlsSubmitError::error`]).
///
/// The TLS layer's own failures are [`TlsError::Tls`] (from rustls: a refused certificate, a
/// handshake failure, a malformed record, an alert the peer sent); the two ends of stream are
/// told apart ([`TlsError::Eof`] after the peer's `close_notify`, [`TlsError::UnexpectedEof`]
/// when the TCP stream ends without one, which may be a truncation); the socket's and the
/// watcher's errors come through [`TlsError::Io`] unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the connection: a certificate that does not verify
    /// (`InvalidCertificate`), an alert from the peer (`AlertReceived`, for example when the
    /// peer refused our certificate), bytes that are not TLS (`InvalidMessage`, such as a
    /// plain-text request instead of a ClientHello), no protocol or cipher suite in common
    /// (`PeerIncompatible`), a record that fails to decrypt, …. The connection is dead: the
    /// alert rustls has for the peer is written first (a failed handshake's result comes once
    /// it is; the reads pending then end at once), so [`free`](super::TlsWatcher::free) it
    /// after the handshake's result, or after the writes pending have ended.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The peer closed the TLS session cleanly (it sent `close_notify`): every byte it sent was
    /// delivered before, and no more will come. The result of a read; writes may go on (TLS
    /// 1.3 half-close) until [`close_notify`](super::TlsWatcher::close_notify).
    #[error("tls: peer sent close_notify")]
    Eof,
    /// The TCP stream ended without `close_notify`: during the handshake (the peer left), or
    /// after it (the data may have been cut short by an attacker or a crash: treat what came
    /// as possibly truncated).
    #[error("tls: connection closed without close_notify")]
    UnexpectedEof,
    /// The request's deadline passed: the handshake's (the connection is then dead), a read's
    /// (no plaintext arrived in time; the connection stays usable), or a write's (its
    /// ciphertext went out in part, so the record stream is broken and the connection dead).
    #[error("tls: deadline exceeded")]
    Deadline,
    /// A write or a second [`close_notify`](super::TlsWatcher::close_notify) after
    /// `close_notify` was requested: nothing may follow it on the wire.
    #[error("tls: close_notify already requested")]
    Closed,
    /// From the watcher or the socket: [`Error::ClosedPipe`](crate::Error::ClosedPipe) when the
    /// connection was freed (or the watcher closed) under a pending request,
    /// [`Error::EmptyBuffer`](crate::Error::EmptyBuffer),
    /// [`Error::ConnClosed`](crate::Error::ConnClosed) and
    /// [`Error::WatcherClosed`](crate::Error::WatcherClosed) for refused submissions, an OS
    /// error (`ECONNRESET`, `EPIPE`, …) in [`Error::Io`](crate::Error::Io).
    #[error(transparent)]
    Io(#[from] crate::Error),
}

impl TlsError {
    /// The [`io::ErrorKind`] this error has once converted into an [`io::Error`]:
    /// `InvalidData` for [`Tls`](TlsError::Tls), `UnexpectedEof` for both ends of stream,
    /// `TimedOut` for [`Deadline`](TlsError::Deadline), `BrokenPipe` for
    /// [`Closed`](TlsError::Closed), and [`Error::kind`](crate::Error::kind) for
    /// [`Io`](TlsError::Io).
    ///
    /// ```
    /// use gaio::tls::TlsError;
    /// assert_eq!(TlsError::Deadline.kind(), std::io::ErrorKind::TimedOut);
    /// assert_eq!(TlsError::Io(gaio::Error::ClosedPipe).kind(), std::io::ErrorKind::BrokenPipe);
    /// ```
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            TlsError::Tls(_) => io::ErrorKind::InvalidData,
            TlsError::Eof | TlsError::UnexpectedEof => io::ErrorKind::UnexpectedEof,
            TlsError::Deadline => io::ErrorKind::TimedOut,
            TlsError::Closed => io::ErrorKind::BrokenPipe,
            TlsError::Io(e) => e.kind(),
        }
    }

    /// A copy for the other requests a connection's failure ends: rustls errors clone; OS
    /// errors keep their errno (or kind and text).
    pub(crate) fn duplicate(&self) -> TlsError {
        match self {
            TlsError::Tls(e) => TlsError::Tls(e.clone()),
            TlsError::Eof => TlsError::Eof,
            TlsError::UnexpectedEof => TlsError::UnexpectedEof,
            TlsError::Deadline => TlsError::Deadline,
            TlsError::Closed => TlsError::Closed,
            TlsError::Io(e) => TlsError::Io(duplicate_gaio(e)),
        }
    }
}

/// The watcher's error, copied (`gaio::Error` is not `Clone`: its `Io` holds an `io::Error`).
fn duplicate_gaio(e: &crate::Error) -> crate::Error {
    use crate::Error as E;
    match e {
        E::Unsupported => E::Unsupported,
        E::WatcherClosed => E::WatcherClosed,
        E::PollerClosed => E::PollerClosed,
        E::ConnClosed => E::ConnClosed,
        E::Deadline => E::Deadline,
        E::EmptyBuffer => E::EmptyBuffer,
        E::CpuId => E::CpuId,
        E::Eof => E::Eof,
        E::ClosedPipe => E::ClosedPipe,
        E::Canceled => E::Canceled,
        E::Misaligned(s) => E::Misaligned(s.clone()),
        E::BackendUnavailable(s) => E::BackendUnavailable(s.clone()),
        E::InvalidArgument(s) => E::InvalidArgument(s.clone()),
        E::WatcherFailed(s) => E::WatcherFailed(s.clone()),
        E::Io(io) => E::Io(match io.raw_os_error() {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::new(io.kind(), io.to_string()),
        }),
    }
}

/// A TLS error as an [`io::Error`] of the kind [`TlsError::kind`] names: an OS error inside
/// [`TlsError::Io`] comes back unchanged (as [`Error`](crate::Error) converts), every other
/// error is wrapped (downcast [`get_ref`](io::Error::get_ref) to get it back).
impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        match e {
            TlsError::Io(e) => e.into(),
            e => io::Error::new(e.kind(), e),
        }
    }
}

/// A TLS submission that was refused, with everything it carried handed back: it yields no
/// [`TlsResult`](super::TlsResult) later. `?` converts it into [`TlsError`] (dropping the
/// context and the buffer) or into an [`io::Error`].
pub struct TlsSubmitError<C> {
    /// Why: [`TlsError::Io`] with [`Error::EmptyBuffer`](crate::Error::EmptyBuffer) (a
    /// zero-length buffer), [`Error::ConnClosed`](crate::Error::ConnClosed) (the connection was
    /// freed), [`Error::WatcherClosed`](crate::Error::WatcherClosed),
    /// [`Error::Unsupported`](crate::Error::Unsupported) (a `Conn` of another watcher, or a
    /// configuration this module cannot run); [`TlsError::Closed`] (a write after
    /// `close_notify`); [`TlsError::Tls`] (rustls refused to start the connection).
    pub error: TlsError,
    /// The context value that was passed in.
    pub context: C,
    /// The buffer that was passed in (`None` for the calls without one).
    pub buffer: Option<Vec<u8>>,
}

impl<C> TlsSubmitError<C> {
    pub(crate) fn new(error: TlsError, context: C, buffer: Option<Vec<u8>>) -> Self {
        TlsSubmitError {
            error,
            context,
            buffer,
        }
    }
}

impl<C> fmt::Debug for TlsSubmitError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSubmitError")
            .field("error", &self.error)
            .field("buffer_len", &self.buffer.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl<C> fmt::Display for TlsSubmitError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls submission refused: {}", self.error)
    }
}

impl<C> std::error::Error for TlsSubmitError<C> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<C> From<TlsSubmitError<C>> for TlsError {
    fn from(e: TlsSubmitError<C>) -> Self {
        e.error
    }
}

impl<C> From<TlsSubmitError<C>> for io::Error {
    fn from(e: TlsSubmitError<C>) -> io::Error {
        e.error.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_keep_the_errno_and_the_rustls_error() {
        let e = TlsError::Io(crate::Error::Io(io::Error::from_raw_os_error(
            libc::ECONNRESET,
        )));
        let d = e.duplicate();
        assert_eq!(d.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(io::Error::from(d).raw_os_error(), Some(libc::ECONNRESET));
        let e = TlsError::Tls(rustls::Error::DecryptError);
        assert!(matches!(
            e.duplicate(),
            TlsError::Tls(rustls::Error::DecryptError)
        ));
        assert!(matches!(
            TlsError::Io(crate::Error::ClosedPipe).duplicate(),
            TlsError::Io(crate::Error::ClosedPipe)
        ));
    }

    #[test]
    fn converts_to_io_error_with_its_kind() {
        let e = io::Error::from(TlsError::UnexpectedEof);
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e
            .get_ref()
            .and_then(|e| e.downcast_ref::<TlsError>())
            .is_some());
    }
}
