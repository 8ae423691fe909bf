//! TLS over gaio requests, with rustls's unbuffered API (cargo feature `rustls`).
//!
//! A [`TlsWatcher`] owns a [`Watcher`] and runs one rustls connection per TLS connection
//! ([`rustls::unbuffered`]: the caller owns every buffer) on top of the watcher's public
//! requests. The application submits plaintext reads and writes on a [`TlsConn`] and takes
//! plaintext results from [`TlsWatcher::wait_io_into`]; the module turns them into ciphertext
//! reads and writes on the watcher. There is no thread of its own: rustls runs on the threads
//! that submit and on the one that calls `wait_io_into`, under the connection's lock.
//!
//! - **Server**: [`TlsWatcher::accept`] on a watched connection with an
//!   `Arc<`[`rustls::ServerConfig`]`>`; **client**: [`TlsWatcher::connect`] with an
//!   `Arc<`[`rustls::ClientConfig`]`>` and the server's name. Either starts the handshake at
//!   once; its end is a result ([`TlsOp::Handshake`]), with [`TlsError::Tls`] when rustls
//!   refused (a certificate that does not verify, an alert from the peer, bytes that are not
//!   TLS), [`TlsError::UnexpectedEof`] when the peer left, [`TlsError::Deadline`].
//! - [`read`](TlsWatcher::read) completes as soon as any plaintext arrives, appended to the
//!   buffer (up to its capacity: `Vec::with_capacity(n)`, no zeroing),
//!   [`write`](TlsWatcher::write) once all its ciphertext is written to the socket;
//!   both may be submitted before the handshake is done (they wait for it).
//! - [`close_notify`](TlsWatcher::close_notify) sends the TLS closure alert after the writes
//!   before it, then shuts the socket's write side; a peer's `close_notify` ends reads with
//!   [`TlsError::Eof`], a TCP end without one with [`TlsError::UnexpectedEof`].
//! - [`free`](TlsWatcher::free) releases the connection: pending requests end with
//!   [`Error::ClosedPipe`](crate::Error::ClosedPipe).
//!
//! **Exactly one result per accepted submission**, as for the base watcher: `accept` and
//! `connect` (the handshake's result), `read`, `write`, `close_notify` each yield one
//! [`TlsResult`] when they return `Ok`, and hand their context and buffer back in a
//! [`TlsSubmitError`] when they are refused. The buffer comes back in the result, always.
//!
//! **Copies.** Arriving ciphertext is read into the buffer rustls decrypts from (no copy),
//! except the rest of a record a previous read ended inside of, which is read on its own and
//! appended (at most one record's remainder, < 17 KiB). Plaintext is encrypted into a buffer
//! the connection owns and reuses, which the watcher writes from (rustls 0.23 builds each
//! record in a buffer of its own and copies it into ours: one copy more per byte written than
//! its buffered API, which writes from its own buffers; a cost of the unbuffered API this
//! module cannot avoid). Decrypted data is
//! copied once, from rustls's record into the read's buffer (rustls 0.23's unbuffered API
//! decrypts into a buffer of its own); data no pending read has room for waits in the
//! connection until the next read. Ciphertext is read only while a read is pending (or the
//! handshake needs it), so a slow reader holds at most one read's worth of plaintext.
//!
//! **Crypto provider.** The feature builds rustls with its `ring` provider (and `std`,
//! `tls12`), for build time: ring's C and assembly build with the C compiler alone, in less
//! than half the CPU time aws-lc-rs (rustls's default) takes. Configs built with
//! `ServerConfig::builder()` / `ClientConfig::builder()` use it (the process default when it
//! is the only provider compiled in).
//!
//! ```
//! use gaio::tls::{TlsOp, TlsWatcher};
//! use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! // A self-signed certificate, a server config with it, a client config that trusts it.
//! let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
//! let cert = ck.cert.der().clone();
//! let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
//! let server_cfg = Arc::new(
//!     rustls::ServerConfig::builder()
//!         .with_no_client_auth()
//!         .with_single_cert(vec![cert.clone()], key.into())?,
//! );
//! let mut roots = rustls::RootCertStore::empty();
//! roots.add(cert)?;
//! let client_cfg = Arc::new(
//!     rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth(),
//! );
//!
//! // Both ends of one TCP connection on one watcher.
//! let ln = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let c = std::net::TcpStream::connect(ln.local_addr()?)?;
//! let (s, _) = ln.accept()?;
//! let tls: TlsWatcher<&str> = TlsWatcher::new()?;
//! let deadline = Some(Instant::now() + Duration::from_secs(10));
//! let server = tls.accept("server handshake", &tls.watch(&s)?, server_cfg, deadline)?;
//! let name = ServerName::try_from("localhost")?;
//! let client = tls.connect("client handshake", &tls.watch(&c)?, client_cfg, name, deadline)?;
//!
//! tls.write("ping", &client, b"ping".to_vec())?; // waits for the handshake
//! tls.read("server read", &server, Vec::with_capacity(1024))?;
//! let mut got = Vec::new();
//! let mut results = Vec::new();
//! while got.len() < 4 {
//!     assert!(tls.wait_io_into(&mut results, Some(Duration::from_secs(10)))? > 0, "stuck");
//!     for res in results.drain(..) {
//!         assert!(res.error.is_none(), "{:?}: {:?}", res.op, res.error);
//!         got.push((res.op, res.context));
//!         if res.context == "server read" {
//!             assert_eq!(res.data(), b"ping");
//!         }
//!     }
//! }
//! assert!(got.contains(&(TlsOp::Handshake, "server handshake")));
//! assert!(got.contains(&(TlsOp::Handshake, "client handshake")));
//! assert!(got.contains(&(TlsOp::Write, "ping")));
//! assert!(got.contains(&(TlsOp::Read, "server read")));
//! assert_eq!(client.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod session;

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::{ClientConfig, ServerConfig};

pub use error::{TlsError, TlsSubmitError};

use session::{Env, Io, Session, Shared, Side, Tag};

use crate::{Builder, Conn, OpResult, Watcher};

/// The most a ciphertext read asks for when no partial record is pending: four full TLS 1.3
/// records of 16 KiB of plaintext (65 624 bytes). A connection's buffer starts at one record
/// (16 406 bytes) and doubles each time a read comes back full, up to this; it keeps the
/// buffer once it has read (rustls decrypts in place, so the watcher's shared swap buffers
/// could serve it only with a copy): 16 to 64 KiB per connection, where a plain gaio
/// connection waiting on a swap read holds none.
pub const TLS_READ_SIZE: usize = session::READ_SIZE;

/// Which TLS request a [`TlsResult`] is for. `#[non_exhaustive]`: a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsOp {
    /// The handshake [`accept`](TlsWatcher::accept) or [`connect`](TlsWatcher::connect)
    /// started: complete (`error` `None`: keys agreed, the peer verified as the config asks,
    /// our last handshake messages written) or failed.
    Handshake,
    /// A [`read`](TlsWatcher::read): `buffer[..size]` is the plaintext received.
    Read,
    /// A [`write`](TlsWatcher::write): `size` is the plaintext length once all its ciphertext
    /// is written.
    Write,
    /// A [`close_notify`](TlsWatcher::close_notify): the alert is written and the socket's
    /// write side shut down.
    CloseNotify,
}

/// The single result of one accepted TLS submission, from [`TlsWatcher::wait_io_into`].
///
/// `#[non_exhaustive]`: fields may be added; only the watcher makes results.
#[non_exhaustive]
pub struct TlsResult<C: Send + 'static> {
    /// Which request the result is for.
    pub op: TlsOp,
    /// The context value given at submission, untouched.
    pub context: C,
    /// The TLS connection; submit the next request on it directly.
    pub conn: TlsConn<C>,
    /// The caller's buffer: a read's, with the plaintext received appended (its last `size`
    /// bytes; [`data`](TlsResult::data)); a write's plaintext as it was. Empty for the
    /// handshake and `close_notify`.
    pub buffer: Vec<u8>,
    /// Plaintext bytes: appended to a read's buffer, or written (the whole buffer once its
    /// ciphertext is written; 0 when the write failed, since a part of a record is no part of
    /// the plaintext). 0 for the handshake and `close_notify`.
    pub size: usize,
    /// Why the request ended early, or `None` when it completed. A read that received data
    /// completes without error; the end of the stream comes to the next read
    /// ([`TlsError::Eof`], [`TlsError::UnexpectedEof`]).
    pub error: Option<TlsError>,
}

impl<C: Send + 'static> TlsResult<C> {
    /// The plaintext the request moved: the last `size` bytes of `buffer` (what a read
    /// appended; a written buffer whole).
    pub fn data(&self) -> &[u8] {
        &self.buffer[self.buffer.len() - self.size.min(self.buffer.len())..]
    }
}

impl<C: Send + 'static> std::fmt::Debug for TlsResult<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsResult")
            .field("op", &self.op)
            .field("conn", &self.conn)
            .field("buffer_len", &self.buffer.len())
            .field("size", &self.size)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// One TLS connection of a [`TlsWatcher`]: made by [`accept`](TlsWatcher::accept) (server
/// side) or [`connect`](TlsWatcher::connect) (client side), carried in every [`TlsResult`].
///
/// Cheap to clone (one atomic increment); two `TlsConn`s are equal when they name the same
/// connection. It keeps its gaio [`Conn`] alive: release the connection with
/// [`TlsWatcher::free`]. Once no request is pending and every clone is dropped, the gaio
/// connection is dropped too (and the watcher releases it, as for any `Conn`).
pub struct TlsConn<C: Send + 'static>(Arc<Shared<C>>);

impl<C: Send + 'static> Clone for TlsConn<C> {
    fn clone(&self) -> Self {
        TlsConn(self.0.clone())
    }
}

impl<C: Send + 'static> PartialEq for TlsConn<C> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<C: Send + 'static> Eq for TlsConn<C> {}

impl<C: Send + 'static> std::hash::Hash for TlsConn<C> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(h)
    }
}

impl<C: Send + 'static> std::fmt::Debug for TlsConn<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("conn", &self.0.conn)
            .field("server", &self.0.server)
            .finish_non_exhaustive()
    }
}

impl<C: Send + 'static> TlsConn<C> {
    /// The gaio connection underneath (for its [`key`](Conn::key), or
    /// [`TlsWatcher::peer_addr`]). Submitting on it directly is not possible: it belongs to
    /// the TLS watcher's inner watcher, whose context type is private.
    pub fn conn(&self) -> &Conn {
        &self.0.conn
    }

    /// True for a connection made by [`accept`](TlsWatcher::accept).
    pub fn is_server(&self) -> bool {
        self.0.server
    }

    /// True until the handshake is complete (and after it failed).
    pub fn is_handshaking(&self) -> bool {
        self.session().tls.common().is_handshaking()
    }

    /// The TLS version agreed (`None` before the handshake has got that far).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.session().tls.common().protocol_version()
    }

    /// The cipher suite agreed (`None` before the handshake has got that far).
    pub fn cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.session().tls.common().negotiated_cipher_suite()
    }

    /// The ALPN protocol agreed, if any.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.session()
            .tls
            .common()
            .alpn_protocol()
            .map(<[u8]>::to_vec)
    }

    fn session(&self) -> MutexGuard<'_, Session<C>> {
        lock(&self.0.session)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Distinguishes the TLS watchers of a process (a `TlsConn` works only with its own).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A [`Watcher`] that speaks TLS: plaintext requests in, plaintext results out, ciphertext on
/// the sockets. See the [module documentation](self) for the model and an example.
///
/// `C` is the per-request context, returned untouched in each [`TlsResult`]. Submissions take
/// `&self` and may come from any thread (share the watcher with `Arc`); several threads may
/// call [`wait_io_into`](TlsWatcher::wait_io_into), each result going to one of them. Per
/// connection, reads complete in submission order, and so do writes.
pub struct TlsWatcher<C: Send + 'static = ()> {
    id: u64,
    inner: Watcher<Tag<C>>,
    /// Results made under a connection's lock, in the order they were made.
    ready: Mutex<VecDeque<TlsResult<C>>>,
    /// Vectors for the inner watcher's results, reused across `wait_io_into` calls.
    scratch: Mutex<Vec<Vec<OpResult<Tag<C>>>>>,
    waker: crate::Waker,
    /// Threads in `wait_io_into` between their look at `ready` and the end of their wait: a
    /// submission that queues a result wakes the watcher only when one is there (counted
    /// before the look, so that a result queued after it is seen by the wake-up).
    waiting: AtomicUsize,
    /// Set by [`close`](TlsWatcher::close): submissions are refused with `WatcherClosed`, as
    /// the base watcher refuses them.
    closed: std::sync::atomic::AtomicBool,
}

impl<C: Send + 'static> TlsWatcher<C> {
    /// A TLS watcher over a watcher with the default configuration (backend from
    /// `GAIO_BACKEND`, else auto), as [`Watcher::new`].
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> crate::Result<Self> {
        Self::with_builder(Watcher::builder())
    }

    /// A TLS watcher over a watcher built from `builder` (to force a backend, …). Its swap
    /// buffers go unused: every ciphertext read goes into a buffer of its connection.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn with_builder(builder: Builder) -> crate::Result<Self> {
        let inner: Watcher<Tag<C>> = builder.build()?;
        let waker = inner.waker();
        Ok(TlsWatcher {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            inner,
            ready: Mutex::new(VecDeque::new()),
            scratch: Mutex::new(Vec::new()),
            waker,
            waiting: AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The backend the inner watcher runs on.
    pub fn backend(&self) -> crate::Backend {
        self.inner.backend()
    }

    /// Takes a socket over, as [`Watcher::watch`]; hand the [`Conn`] to
    /// [`accept`](TlsWatcher::accept) or [`connect`](TlsWatcher::connect).
    ///
    /// # Errors
    /// As [`Watcher::watch`].
    pub fn watch<F: AsFd + ?Sized>(&self, fd: &F) -> crate::Result<Conn> {
        self.inner.watch(fd)
    }

    /// The peer's address, as [`Watcher::peer_addr`].
    ///
    /// # Errors
    /// As [`Watcher::peer_addr`]; [`Error::Unsupported`](crate::Error::Unsupported) for
    /// another TLS watcher's connection.
    pub fn peer_addr(&self, conn: &TlsConn<C>) -> crate::Result<std::net::SocketAddr> {
        if conn.0.owner != self.id {
            return Err(crate::Error::Unsupported);
        }
        self.inner.peer_addr(&conn.0.conn)
    }

    /// Starts the server side of TLS on `conn` (a connected socket taken over with
    /// [`watch`](TlsWatcher::watch), with no other TLS session and no request of its own on
    /// it: the session owns the connection's reads and writes from now on): the handshake begins at once (it waits for the
    /// client's hello) and ends with one [`TlsOp::Handshake`] result carrying `ctx`. If
    /// `deadline` passes first, that result has [`TlsError::Deadline`] (a client that stalls
    /// mid-handshake); a client that leaves gives [`TlsError::UnexpectedEof`], one that
    /// refuses our certificate or speaks no TLS gives [`TlsError::Tls`] (after the alert
    /// rustls had for it was written). Any failed handshake leaves the connection dead: free
    /// it. Reads and writes may be submitted at once; they wait for the handshake (a read's
    /// own deadline counts only after it).
    ///
    /// # Errors
    /// Refused, with `ctx` in the [`TlsSubmitError`] (no result follows):
    /// [`TlsError::Tls`] if rustls cannot start a connection with `config`;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a config that allows
    /// early data (`max_early_data_size` above 0: not supported);
    /// [`Error::Unsupported`](crate::Error::Unsupported) (a `Conn` of another watcher, a
    /// file), [`Error::ConnClosed`](crate::Error::ConnClosed),
    /// [`Error::WatcherClosed`](crate::Error::WatcherClosed) as the watcher refuses the
    /// first read.
    pub fn accept(
        &self,
        ctx: C,
        conn: &Conn,
        config: Arc<ServerConfig>,
        deadline: Option<Instant>,
    ) -> Result<TlsConn<C>, TlsSubmitError<C>> {
        if config.max_early_data_size != 0 {
            let why = "TLS early data (ServerConfig::max_early_data_size > 0) is not supported";
            let e = crate::Error::InvalidArgument(why.into());
            return Err(TlsSubmitError::new(TlsError::Io(e), ctx, None));
        }
        let tls = match UnbufferedServerConnection::new(config) {
            Ok(t) => t,
            Err(e) => return Err(TlsSubmitError::new(TlsError::Tls(e), ctx, None)),
        };
        self.start(ctx, conn, true, Side::Server(Box::new(tls)), deadline)
    }

    /// Starts the client side of TLS on `conn` (a socket connected to the server, taken over
    /// with [`watch`](TlsWatcher::watch), or the connection of a
    /// [`Watcher::connect`]-like dial): the ClientHello goes out at once, for `server_name`
    /// (the name the server's certificate must carry, and the SNI sent). The handshake ends
    /// with one [`TlsOp::Handshake`] result carrying `ctx`: [`TlsError::Tls`] with
    /// `InvalidCertificate` when the server's certificate does not verify against `config`'s
    /// roots (the alert is written to the server first), [`TlsError::Deadline`],
    /// [`TlsError::UnexpectedEof`], an OS error (`ECONNRESET`).
    ///
    /// # Errors
    /// As [`accept`](TlsWatcher::accept) (rustls's refusal of `config` or `server_name`, or
    /// the watcher's refusal of the first write).
    pub fn connect(
        &self,
        ctx: C,
        conn: &Conn,
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        deadline: Option<Instant>,
    ) -> Result<TlsConn<C>, TlsSubmitError<C>> {
        let tls = match UnbufferedClientConnection::new(config, server_name) {
            Ok(t) => t,
            Err(e) => return Err(TlsSubmitError::new(TlsError::Tls(e), ctx, None)),
        };
        self.start(ctx, conn, false, Side::Client(Box::new(tls)), deadline)
    }

    fn start(
        &self,
        ctx: C,
        conn: &Conn,
        server: bool,
        tls: Side,
        deadline: Option<Instant>,
    ) -> Result<TlsConn<C>, TlsSubmitError<C>> {
        if self.closed.load(Ordering::SeqCst) {
            let e = TlsError::Io(crate::Error::WatcherClosed);
            return Err(TlsSubmitError::new(e, ctx, None));
        }
        if conn.is_freed() {
            return Err(TlsSubmitError::new(
                TlsError::Io(crate::Error::ConnClosed),
                ctx,
                None,
            ));
        }
        let shared = Arc::new(Shared {
            conn: conn.clone(),
            server,
            owner: self.id,
            session: Mutex::new(Session::new(tls, ctx, deadline)),
        });
        let mut s = lock(&shared.session);
        let mut out = Vec::new();
        s.drive(&mut Env {
            w: &self.inner,
            me: &shared,
            out: &mut out,
        });
        if s.failure().is_some() && s.idle() {
            // The watcher refused the very first request: nothing is in flight, so refuse
            // the whole call instead of delivering a result.
            let mut ctx = s.take_handshake_ctx();
            let mut error = s.failure().map(TlsError::duplicate);
            for r in out.drain(..) {
                if r.op == TlsOp::Handshake {
                    ctx = Some(r.context);
                    error = r.error;
                }
            }
            drop(s);
            if let Some(ctx) = ctx {
                let e = error.unwrap_or(TlsError::Io(crate::Error::ConnClosed));
                return Err(TlsSubmitError::new(e, ctx, None));
            }
            return Ok(TlsConn(shared.clone()));
        }
        self.flush(out);
        drop(s);
        Ok(TlsConn(shared))
    }

    /// Reads plaintext into the spare capacity of `buf`: completes as soon as any arrives,
    /// appended to `buf` (at most `buf.capacity() - buf.len()` bytes; more waits for the next
    /// read), `size` saying how many ([`TlsResult::data`] is them). Pass
    /// `Vec::with_capacity(n)`, or a buffer back from a result after
    /// [`clear`](Vec::clear): the module copies plaintext in itself, so the buffer needs no
    /// zeroing (and never reallocates). Ends with
    /// [`TlsError::Eof`] after the peer's `close_notify` (everything it sent was delivered
    /// before), [`TlsError::UnexpectedEof`] when the TCP stream ends without one,
    /// [`TlsError::Tls`] for a record that does not decrypt or an alert,
    /// [`Error::ClosedPipe`](crate::Error::ClosedPipe) when freed,
    /// or the handshake's error if that failed. Reads complete in submission order.
    ///
    /// # Errors
    /// Refused, with `ctx` and `buf` in the [`TlsSubmitError`]:
    /// [`Error::EmptyBuffer`](crate::Error::EmptyBuffer) (no spare capacity:
    /// `buf.len() == buf.capacity()`),
    /// [`Error::ConnClosed`](crate::Error::ConnClosed) (freed),
    /// [`Error::Unsupported`](crate::Error::Unsupported) (another watcher's connection),
    /// [`Error::WatcherClosed`](crate::Error::WatcherClosed) after
    /// [`close`](TlsWatcher::close).
    pub fn read(&self, ctx: C, conn: &TlsConn<C>, buf: Vec<u8>) -> Result<(), TlsSubmitError<C>> {
        self.read_inner(ctx, conn, buf, None)
    }

    /// [`read`](TlsWatcher::read) that ends with [`TlsError::Deadline`] (and `size` 0) if no
    /// plaintext arrived by `deadline`; the connection stays usable. The deadline counts from
    /// the end of the handshake (before it, the handshake's deadline holds).
    ///
    /// # Errors
    /// As [`read`](TlsWatcher::read).
    pub fn read_timeout(
        &self,
        ctx: C,
        conn: &TlsConn<C>,
        buf: Vec<u8>,
        deadline: Instant,
    ) -> Result<(), TlsSubmitError<C>> {
        self.read_inner(ctx, conn, buf, Some(deadline))
    }

    fn read_inner(
        &self,
        ctx: C,
        conn: &TlsConn<C>,
        buf: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<(), TlsSubmitError<C>> {
        if let Err(e) = self.check(conn, buf.len() == buf.capacity()) {
            return Err(TlsSubmitError::new(e, ctx, Some(buf)));
        }
        let mut s = lock(&conn.0.session);
        if s.core.freed {
            drop(s);
            return Err(TlsSubmitError::new(
                TlsError::Io(crate::Error::ConnClosed),
                ctx,
                Some(buf),
            ));
        }
        let mut out = Vec::new();
        s.push_read(ctx, buf, deadline, &mut self.env(&conn.0, &mut out));
        self.flush(out);
        Ok(())
    }

    /// Encrypts and writes all of `buf`: completes once its ciphertext is written to the
    /// socket (`size` is then `buf.len()`), with `buf` back in the result. Writes go out in
    /// submission order, after the handshake (submitted before it, they wait). Ends with the
    /// socket's error ([`Error::Io`](crate::Error::Io) `EPIPE`, `ECONNRESET`, and `size` 0),
    /// [`Error::ClosedPipe`](crate::Error::ClosedPipe) when freed, or the handshake's error.
    /// A failed write leaves the connection dead (a record went out in part). Its ciphertext
    /// is built whole before the watcher writes it (one buffer of about `buf.len()` plus 22
    /// bytes per 16 KiB record, reused for the next writes when at most 1 MiB): split very
    /// large writes to bound that memory.
    ///
    /// # Errors
    /// Refused, with `ctx` and `buf` in the [`TlsSubmitError`]:
    /// [`Error::EmptyBuffer`](crate::Error::EmptyBuffer), [`TlsError::Closed`] after
    /// [`close_notify`](TlsWatcher::close_notify), then as [`read`](TlsWatcher::read).
    pub fn write(&self, ctx: C, conn: &TlsConn<C>, buf: Vec<u8>) -> Result<(), TlsSubmitError<C>> {
        self.write_inner(ctx, conn, buf, None)
    }

    /// [`write`](TlsWatcher::write) with a deadline on the socket write of its ciphertext
    /// (counted once the handshake is done): if it is not all written by `deadline`, the
    /// write ends with [`TlsError::Deadline`] and the connection is dead.
    ///
    /// # Errors
    /// As [`write`](TlsWatcher::write).
    pub fn write_timeout(
        &self,
        ctx: C,
        conn: &TlsConn<C>,
        buf: Vec<u8>,
        deadline: Instant,
    ) -> Result<(), TlsSubmitError<C>> {
        self.write_inner(ctx, conn, buf, Some(deadline))
    }

    fn write_inner(
        &self,
        ctx: C,
        conn: &TlsConn<C>,
        buf: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<(), TlsSubmitError<C>> {
        if let Err(e) = self.check(conn, buf.is_empty()) {
            return Err(TlsSubmitError::new(e, ctx, Some(buf)));
        }
        let mut s = lock(&conn.0.session);
        if s.core.freed {
            drop(s);
            return Err(TlsSubmitError::new(
                TlsError::Io(crate::Error::ConnClosed),
                ctx,
                Some(buf),
            ));
        }
        let mut out = Vec::new();
        let pushed = s.push_write(ctx, buf, deadline, &mut self.env(&conn.0, &mut out));
        self.flush(out);
        drop(s);
        pushed.map_err(|(ctx, buf)| TlsSubmitError::new(TlsError::Closed, ctx, Some(buf)))
    }

    /// Closes the TLS session: after the writes submitted before it, sends the `close_notify`
    /// alert, then shuts the socket's write side (the peer reads the end of the stream).
    /// Completes with one [`TlsOp::CloseNotify`] result once both are done (or with the
    /// connection's error). Reads may go on (the peer may still send; its own
    /// `close_notify` then ends them with [`TlsError::Eof`]); later writes are refused. Free
    /// the connection afterwards.
    ///
    /// # Errors
    /// Refused, with `ctx` in the [`TlsSubmitError`]: [`TlsError::Closed`] when already
    /// requested, then as [`read`](TlsWatcher::read).
    pub fn close_notify(&self, ctx: C, conn: &TlsConn<C>) -> Result<(), TlsSubmitError<C>> {
        if let Err(e) = self.check(conn, false) {
            return Err(TlsSubmitError::new(e, ctx, None));
        }
        let mut s = lock(&conn.0.session);
        if s.core.freed {
            drop(s);
            return Err(TlsSubmitError::new(
                TlsError::Io(crate::Error::ConnClosed),
                ctx,
                None,
            ));
        }
        let mut out = Vec::new();
        let pushed = s.push_close(ctx, &mut self.env(&conn.0, &mut out));
        self.flush(out);
        drop(s);
        pushed.map_err(|ctx| TlsSubmitError::new(TlsError::Closed, ctx, None))
    }

    /// Releases the connection: the gaio connection is freed (its descriptor closed), pending
    /// requests end with [`Error::ClosedPipe`](crate::Error::ClosedPipe) (those waiting on
    /// the socket as the watcher hands them back, the others at once), later submissions
    /// are refused with [`Error::ConnClosed`](crate::Error::ConnClosed). No result of its
    /// own; freeing twice does nothing. Nothing is sent: for a clean end, wait for
    /// [`close_notify`](TlsWatcher::close_notify)'s result first.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) for another watcher's connection;
    /// [`Error::WatcherClosed`](crate::Error::WatcherClosed) after [`close`](TlsWatcher::close).
    pub fn free(&self, conn: &TlsConn<C>) -> crate::Result<()> {
        if conn.0.owner != self.id {
            return Err(crate::Error::Unsupported);
        }
        let mut s = lock(&conn.0.session);
        if s.core.freed {
            return Ok(());
        }
        self.inner.free(&conn.0.conn)?;
        let mut out = Vec::new();
        s.freed(&mut self.env(&conn.0, &mut out));
        self.flush(out);
        Ok(())
    }

    /// Waits for at least one result (for up to `timeout`; `None`: no limit;
    /// `Some(Duration::ZERO)`: a poll), appends every result ready to `out` and returns how
    /// many it appended. Returns `Ok(0)` when the timeout passed, or a
    /// [`waker`](TlsWatcher::waker) woke the call (which may also be a wake-up the module made
    /// for a result another call took first: treat `Ok(0)` as "look again"). The ciphertext the inner watcher's results
    /// bring is decrypted here (on the calling thread), and the next gaio requests submitted.
    /// Several threads may call it at once; each result goes to one of them.
    ///
    /// # Errors
    /// [`Error::WatcherClosed`](crate::Error::WatcherClosed) once closed and every result
    /// taken; [`Error::WatcherFailed`](crate::Error::WatcherFailed) as for the base watcher.
    pub fn wait_io_into(
        &self,
        out: &mut Vec<TlsResult<C>>,
        timeout: Option<Duration>,
    ) -> crate::Result<usize> {
        let before = out.len();
        let until = timeout.map(|t| Instant::now() + t);
        let mut scratch = lock(&self.scratch).pop().unwrap_or_default();
        let got = loop {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            self.take_ready(out);
            let left = match until {
                _ if out.len() > before => Some(Duration::ZERO),
                Some(u) => Some(u.saturating_duration_since(Instant::now())),
                None => None,
            };
            let waited = self.inner.wait_io_into(&mut scratch, left);
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            let n = match waited {
                Ok(n) => n,
                Err(e) => {
                    self.take_ready(out);
                    if out.len() > before {
                        break Ok(());
                    }
                    break Err(e);
                }
            };
            for r in scratch.drain(..) {
                self.complete(r, out);
            }
            self.take_ready(out);
            if out.len() > before || n == 0 {
                break Ok(());
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                break Ok(());
            }
        };
        lock(&self.scratch).push(scratch);
        got.map(|()| out.len() - before)
    }

    /// [`wait_io_into`](TlsWatcher::wait_io_into) without a limit, into a new vector: waits
    /// for at least one result (or a wake-up: then the vector may be empty). As
    /// [`Watcher::wait_io`], but the results are owned (no borrow of the watcher).
    ///
    /// # Errors
    /// As [`wait_io_into`](TlsWatcher::wait_io_into).
    pub fn wait_io(&self) -> crate::Result<Vec<TlsResult<C>>> {
        let mut v = Vec::new();
        self.wait_io_into(&mut v, None)?;
        Ok(v)
    }

    /// [`wait_io`](TlsWatcher::wait_io) that gives up after `timeout` (and then returns an
    /// empty vector), as [`Watcher::wait_io_timeout`].
    ///
    /// # Errors
    /// As [`wait_io_into`](TlsWatcher::wait_io_into).
    pub fn wait_io_timeout(&self, timeout: Duration) -> crate::Result<Vec<TlsResult<C>>> {
        let mut v = Vec::new();
        self.wait_io_into(&mut v, Some(timeout))?;
        Ok(v)
    }

    /// A [`Waker`](crate::Waker) that makes a blocked
    /// [`wait_io_into`](TlsWatcher::wait_io_into) (or the next one) return, as
    /// [`Watcher::waker`].
    pub fn waker(&self) -> crate::Waker {
        self.inner.waker()
    }

    /// Closes the inner watcher (as [`Watcher::close`]): pending requests end with
    /// [`Error::ClosedPipe`](crate::Error::ClosedPipe), collected with
    /// [`wait_io_into`](TlsWatcher::wait_io_into) before it returns `WatcherClosed`; later
    /// submissions are refused with `WatcherClosed`. Idempotent; dropping the TLS watcher
    /// does the same.
    ///
    /// # Errors
    /// As [`Watcher::close`].
    pub fn close(&self) -> crate::Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        self.inner.close()
    }

    /// Checks common to every submission: buffer, owner, open.
    fn check(&self, conn: &TlsConn<C>, empty: bool) -> Result<(), TlsError> {
        if empty {
            return Err(TlsError::Io(crate::Error::EmptyBuffer));
        }
        if conn.0.owner != self.id {
            return Err(TlsError::Io(crate::Error::Unsupported));
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(TlsError::Io(crate::Error::WatcherClosed));
        }
        Ok(())
    }

    fn env<'a>(&'a self, me: &'a Arc<Shared<C>>, out: &'a mut Vec<TlsResult<C>>) -> Env<'a, C> {
        Env {
            w: &self.inner,
            me,
            out,
        }
    }

    /// Results made on a submitting thread: queued, and a waiting `wait_io_into` woken.
    fn flush(&self, out: Vec<TlsResult<C>>) {
        if out.is_empty() {
            return;
        }
        lock(&self.ready).extend(out);
        // A thread that counted itself in before this result was queued may be waiting
        // already; one that counts itself in later sees the result (the queue's lock orders
        // the two).
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _ = self.waker.wake();
        }
    }

    fn take_ready(&self, out: &mut Vec<TlsResult<C>>) {
        let mut q = lock(&self.ready);
        out.extend(q.drain(..));
    }

    /// One inner result: handed to its connection's session, under its lock. The results
    /// queued on submitting threads are taken first, under the same lock, so a connection's
    /// results keep the order they were made in.
    fn complete(&self, r: OpResult<Tag<C>>, out: &mut Vec<TlsResult<C>>) {
        let OpResult {
            context: Tag { shared, io },
            buffer,
            size,
            error,
            ..
        } = r;
        let mut s = lock(&shared.session);
        self.take_ready(out);
        let mut env = self.env(&shared, out);
        match io {
            Io::Read => s.on_read(buffer, size, error, &mut env),
            Io::Write(seq) => s.on_write(seq, buffer, size, error, &mut env),
        }
    }
}

impl<C: Send + 'static> std::fmt::Debug for TlsWatcher<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsWatcher")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
