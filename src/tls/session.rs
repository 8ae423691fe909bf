//! One TLS connection's state machine: rustls's unbuffered connection, the ciphertext buffers
//! it reads from and writes into, the application's pending requests, and the gaio requests
//! in flight for it. Every entry point (a submission, a gaio result) runs [`Session::drive`]
//! under the connection's lock: it feeds rustls what has arrived (`process_tls_records`),
//! acts on each state it reports, then settles what can complete and issues the next gaio
//! read or write.
//!
//! Buffers. The ciphertext that arrives lands in `rx`, the buffer rustls decrypts from: a gaio
//! read fills `rx` itself when no partial record is left over (no copy); when one is (a read
//! ended inside a record), the next read asks for the rest of that record only, into `spare`,
//! and those bytes are appended (a copy of at most one record's remainder). Outgoing
//! ciphertext is encrypted (or encoded, for handshake messages and alerts) straight into a
//! buffer of the connection's `pool`, which the gaio write carries and its result brings back.
//! Plaintext goes from rustls's record into the caller's read buffer (one copy, the one
//! rustls's unbuffered API leaves); what no pending read has room for waits in `plain`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};

use super::{TlsConn, TlsError, TlsOp, TlsResult};
use crate::{Buffer, Conn, Watcher};

/// Bytes asked of a ciphertext read when no partial record is pending: four full TLS 1.3
/// records of 16 KiB of plaintext (each 5 B of header, 1 B of content type and a 16 B tag
/// more: AES-GCM and ChaCha20-Poly1305 alike), so that a peer sending full records, as rustls
/// and OpenSSL do for bulk data, is read on record boundaries (no remainder to read apart),
/// and the plaintext of one read fills a 64 KiB read buffer exactly.
pub(crate) const READ_SIZE: usize = 4 * (16384 + 22);

/// The first ciphertext reads' size: one full TLS 1.3 record. A read that comes back full
/// doubles it, up to [`READ_SIZE`], so a connection that only ever exchanges small messages
/// keeps a quarter of the buffer a bulk one grows to.
pub(crate) const FIRST_READ_SIZE: usize = READ_SIZE / 4;

/// Ciphertext bytes a TLS record adds to its plaintext at most, with the ring provider's
/// suites (TLS 1.2 AES-GCM: header 5 + explicit nonce 8 + tag 16; TLS 1.3: header 5 +
/// content type 1 + tag 16), rounded up. A first guess only: rustls says when a buffer is
/// too small, and the buffer grows.
const RECORD_OVERHEAD: usize = 40;

/// Outgoing buffers a connection keeps for reuse.
const POOL_KEEP: usize = 4;

/// A buffer larger than this is not kept for reuse once its write is done (a 1 GiB write
/// should not pin 1 GiB to an idle connection).
const POOL_MAX_BYTES: usize = 1 << 20;

/// What the gaio watcher's context holds: the connection, and which of its requests this is.
pub(crate) struct Tag<C: Send + 'static> {
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) io: Io,
}

/// Which gaio request a result is for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Io {
    /// The connection's one ciphertext read.
    Read,
    /// A write (or the shutdown after `close_notify`) of the write queue, by sequence number.
    Write(u64),
}

/// What a [`TlsConn`] points at: the gaio connection and the session behind its lock.
pub(crate) struct Shared<C: Send + 'static> {
    pub(crate) conn: Conn,
    pub(crate) server: bool,
    /// The id of the `TlsWatcher` that made it.
    pub(crate) owner: u64,
    pub(crate) session: Mutex<Session<C>>,
}

/// rustls's connection, one of two types (their `process_tls_records` are separate inherent
/// methods; everything after it is generic over the side).
pub(crate) enum Side {
    Server(Box<UnbufferedServerConnection>),
    Client(Box<UnbufferedClientConnection>),
}

impl Side {
    pub(crate) fn common(&self) -> &rustls::CommonState {
        match self {
            Side::Server(c) => c,
            Side::Client(c) => c,
        }
    }
}

/// Where the results a call produces go, and what it needs to submit gaio requests.
pub(crate) struct Env<'a, C: Send + 'static> {
    pub(crate) w: &'a Watcher<Tag<C>>,
    pub(crate) me: &'a Arc<Shared<C>>,
    pub(crate) out: &'a mut Vec<TlsResult<C>>,
}

impl<C: Send + 'static> Env<'_, C> {
    fn emit(
        &mut self,
        op: TlsOp,
        context: C,
        buffer: Vec<u8>,
        size: usize,
        error: Option<TlsError>,
    ) {
        self.out.push(TlsResult {
            op,
            context,
            conn: TlsConn(self.me.clone()),
            buffer,
            size,
            error,
        });
    }

    fn tag(&self, io: Io) -> Tag<C> {
        Tag {
            shared: self.me.clone(),
            io,
        }
    }
}

/// An application read waiting for plaintext: appended to `buf`, up to its capacity.
struct UserRead<C> {
    ctx: C,
    buf: Vec<u8>,
    /// Bytes appended so far.
    filled: usize,
    deadline: Option<Instant>,
}

/// An application write not encrypted yet (the handshake is not done).
struct UserWrite<C> {
    ctx: C,
    buf: Vec<u8>,
    deadline: Option<Instant>,
}

/// What a gaio write in flight carries.
enum OutKind<C> {
    /// Handshake messages (or a post-handshake message such as a session ticket).
    Handshake,
    /// An alert after a failure.
    Alert,
    /// An application write: the caller's plaintext buffer comes back in its result.
    App { ctx: C, buf: Vec<u8> },
    /// The `close_notify` alert.
    CloseNotify,
    /// The `shutdown(Write)` after it: its result is the close request's.
    Shutdown,
}

struct OutWrite<C> {
    seq: u64,
    kind: OutKind<C>,
}

/// How the state loop goes on after one `process_tls_records` state.
enum Flow {
    Continue,
    /// Waiting for the peer (`BlockedHandshake`, `WriteTraffic`) or closed.
    Stop,
    /// rustls failed: send its alerts, fail the connection.
    Fatal(rustls::Error),
}

/// Everything but rustls's connection and the incoming buffer, so that a state (which
/// borrows those two) can be handled with the rest mutable.
pub(crate) struct Core<C> {
    /// The handshake's context until its result is delivered.
    hs_ctx: Option<C>,
    hs_deadline: Option<Instant>,
    /// rustls reported a state that needs more data from the peer.
    want_read: bool,
    /// The handshake is complete (rustls may send and receive application data).
    traffic: bool,
    /// rustls's encoded handshake bytes (`hs_len` of `hs_out`), not yet transmitted.
    hs_out: Vec<u8>,
    hs_len: usize,
    /// Decrypted bytes no read has taken yet: `plain[plain_start..]`.
    plain: Vec<u8>,
    plain_start: usize,
    reads: VecDeque<UserRead<C>>,
    writes: VecDeque<UserWrite<C>>,
    out: VecDeque<OutWrite<C>>,
    next_seq: u64,
    pool: Vec<Vec<u8>>,
    /// `close_notify` requested: its context until its result is delivered.
    close_ctx: Option<C>,
    close_requested: bool,
    close_sent: bool,
    /// The peer's `close_notify` arrived.
    peer_closed: bool,
    /// The TCP stream ended (a read returned EOF).
    eof: bool,
    /// Why the connection is dead.
    failed: Option<TlsError>,
    /// Freed by the application: submissions are refused.
    pub(crate) freed: bool,
    /// Extra bytes rustls's records asked to discard (0 in rustls 0.23).
    extra_discard: usize,
}

/// The connection's whole state.
pub(crate) struct Session<C> {
    pub(crate) tls: Side,
    /// Incoming ciphertext, `rx[rx_start..rx_end]` not yet consumed by rustls.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// The buffer a read that continues a partial record fills (appended to `rx`).
    spare: Vec<u8>,
    /// The one gaio read in flight, and whether it fills `rx` itself.
    read_inflight: bool,
    read_into_rx: bool,
    /// What a read into `rx` asks for: from [`FIRST_READ_SIZE`] up to [`READ_SIZE`].
    read_size: usize,
    pub(crate) core: Core<C>,
}

impl<C: Send + 'static> Session<C> {
    pub(crate) fn new(tls: Side, hs_ctx: C, hs_deadline: Option<Instant>) -> Self {
        Session {
            tls,
            rx: Vec::new(),
            rx_start: 0,
            rx_end: 0,
            spare: Vec::new(),
            read_inflight: false,
            read_into_rx: false,
            read_size: FIRST_READ_SIZE,
            core: Core {
                hs_ctx: Some(hs_ctx),
                hs_deadline,
                want_read: false,
                traffic: false,
                hs_out: Vec::new(),
                hs_len: 0,
                plain: Vec::new(),
                plain_start: 0,
                reads: VecDeque::new(),
                writes: VecDeque::new(),
                out: VecDeque::new(),
                next_seq: 0,
                pool: Vec::new(),
                close_ctx: None,
                close_requested: false,
                close_sent: false,
                peer_closed: false,
                eof: false,
                failed: None,
                freed: false,
                extra_discard: 0,
            },
        }
    }

    /// Nothing of this connection is in the watcher: no read, no write.
    pub(crate) fn idle(&self) -> bool {
        !self.read_inflight && self.core.out.is_empty()
    }

    /// The handshake context is still here: the first drive of `accept`/`connect` uses it to
    /// refuse synchronously when the very first gaio request is refused.
    pub(crate) fn take_handshake_ctx(&mut self) -> Option<C> {
        self.core.hs_ctx.take()
    }

    pub(crate) fn failure(&self) -> Option<&TlsError> {
        self.core.failed.as_ref()
    }

    /// A new application read.
    pub(crate) fn push_read(
        &mut self,
        ctx: C,
        buf: Vec<u8>,
        deadline: Option<Instant>,
        env: &mut Env<'_, C>,
    ) {
        self.core.reads.push_back(UserRead {
            ctx,
            buf,
            filled: 0,
            deadline,
        });
        // Nothing for rustls to do: serve it from what is buffered, or read.
        self.settle_and_read(env);
    }

    /// A new application write; `Err` gives it back when `close_notify` was requested.
    #[allow(clippy::type_complexity)]
    pub(crate) fn push_write(
        &mut self,
        ctx: C,
        buf: Vec<u8>,
        deadline: Option<Instant>,
        env: &mut Env<'_, C>,
    ) -> Result<(), (C, Vec<u8>)> {
        if self.core.close_requested {
            return Err((ctx, buf));
        }
        self.core.writes.push_back(UserWrite { ctx, buf, deadline });
        self.drive(env);
        Ok(())
    }

    /// `close_notify` requested; `Err` gives the context back when it was already.
    pub(crate) fn push_close(&mut self, ctx: C, env: &mut Env<'_, C>) -> Result<(), C> {
        if self.core.close_requested {
            return Err(ctx);
        }
        self.core.close_requested = true;
        self.core.close_ctx = Some(ctx);
        self.drive(env);
        Ok(())
    }

    /// The application freed the connection (the gaio free is already sent): what waits on
    /// nothing in flight ends now with `ClosedPipe`, the rest as its gaio requests come back.
    pub(crate) fn freed(&mut self, env: &mut Env<'_, C>) {
        self.core.freed = true;
        self.core.fail(TlsError::Io(crate::Error::ClosedPipe));
        self.core.settle(env);
    }

    /// The gaio read's result.
    pub(crate) fn on_read(
        &mut self,
        buffer: Buffer,
        size: usize,
        error: Option<crate::Error>,
        env: &mut Env<'_, C>,
    ) {
        self.read_inflight = false;
        let buf = buffer.into_vec().unwrap_or_default();
        if self.read_into_rx {
            if size == buf.len() && self.read_size < READ_SIZE {
                // A full read: more was probably waiting; read more at a time.
                self.read_size = (self.read_size * 2).min(READ_SIZE);
            }
            self.rx = buf;
            self.rx_start = 0;
            self.rx_end = size.min(self.rx.len());
        } else {
            let n = size.min(buf.len());
            if self.rx.len() < self.rx_end + n {
                self.rx.resize(self.rx_end + n, 0);
            }
            self.rx[self.rx_end..self.rx_end + n].copy_from_slice(&buf[..n]);
            self.rx_end += n;
            self.spare = buf;
        }
        match error {
            None => {}
            Some(crate::Error::Eof) => {
                self.core.eof = true;
                if !self.core.traffic {
                    self.core.fail(TlsError::UnexpectedEof);
                }
            }
            Some(crate::Error::Deadline) => {
                if !self.core.traffic {
                    self.core.fail(TlsError::Deadline);
                } else {
                    // The first read whose deadline has passed ends; the others wait on.
                    let now = Instant::now();
                    if let Some(pos) = self
                        .core
                        .reads
                        .iter()
                        .position(|r| r.deadline.is_some_and(|d| d <= now))
                    {
                        let r = self.core.reads.remove(pos).expect("position is in range");
                        env.emit(TlsOp::Read, r.ctx, r.buf, 0, Some(TlsError::Deadline));
                    }
                }
            }
            Some(e) => self.core.fail(TlsError::Io(e)),
        }
        self.drive(env);
    }

    /// A gaio write's (or the shutdown's) result.
    pub(crate) fn on_write(
        &mut self,
        seq: u64,
        buffer: Buffer,
        size: usize,
        error: Option<crate::Error>,
        env: &mut Env<'_, C>,
    ) {
        let Some(pos) = self.core.out.iter().position(|o| o.seq == seq) else {
            return;
        };
        let rec = self.core.out.remove(pos).expect("position is in range");
        if let Some(v) = buffer.into_vec() {
            self.core.recycle(v);
        }
        let error = error.map(|e| match e {
            crate::Error::Deadline => TlsError::Deadline,
            e => TlsError::Io(e),
        });
        match rec.kind {
            OutKind::App { ctx, buf } => {
                let sent = if error.is_none() { buf.len() } else { 0 };
                let mine = error.as_ref().map(TlsError::duplicate);
                env.emit(TlsOp::Write, ctx, buf, sent, mine);
            }
            OutKind::Shutdown => {
                if let Some(ctx) = self.core.close_ctx.take() {
                    let mine = error.as_ref().map(TlsError::duplicate);
                    env.emit(TlsOp::CloseNotify, ctx, Vec::new(), 0, mine);
                }
            }
            OutKind::Handshake | OutKind::Alert | OutKind::CloseNotify => {}
        }
        let _ = size;
        match error {
            Some(e) => {
                self.core.fail(e);
                self.drive(env);
            }
            // rustls was told the bytes were sent when they were handed over: only what waited
            // for this write (the handshake's result) may complete now.
            None => self.settle_and_read(env),
        }
    }

    /// Feeds rustls, acts on its states, then settles and issues the next gaio requests.
    pub(crate) fn drive(&mut self, env: &mut Env<'_, C>) {
        if self.core.failed.is_none() {
            self.pump(env);
        }
        if self.core.failed.is_none() {
            self.core.settle(env);
            self.issue_read(env);
        } else {
            self.core.settle(env);
        }
    }

    /// [`drive`](Session::drive) without rustls's state loop, for events rustls has no part in
    /// (a new read, a write done).
    fn settle_and_read(&mut self, env: &mut Env<'_, C>) {
        self.core.settle(env);
        if self.core.failed.is_none() {
            self.issue_read(env);
        }
    }

    /// Runs rustls's state loop until it waits for the peer.
    fn pump(&mut self, env: &mut Env<'_, C>) {
        // Bounded: each state makes progress; the bound only guards against a loop rustls
        // would never leave.
        for _ in 0..10_000 {
            let handshaking = self.tls.common().is_handshaking();
            let incoming = &mut self.rx[self.rx_start..self.rx_end];
            let (discard, flow) = match &mut self.tls {
                Side::Server(c) => {
                    let st = c.process_tls_records(incoming);
                    (st.discard, self.core.on_state(st.state, handshaking, env))
                }
                Side::Client(c) => {
                    let st = c.process_tls_records(incoming);
                    (st.discard, self.core.on_state(st.state, handshaking, env))
                }
            };
            let discard = discard + std::mem::take(&mut self.core.extra_discard);
            self.rx_start = (self.rx_start + discard).min(self.rx_end);
            if self.rx_start == self.rx_end {
                self.rx_start = 0;
                self.rx_end = 0;
            }
            match flow {
                Flow::Continue => {}
                Flow::Stop => {
                    // The handshake completed inside this call: look again with it done, so
                    // that the writes waiting for it go out.
                    if handshaking && !self.tls.common().is_handshaking() {
                        continue;
                    }
                    return;
                }
                Flow::Fatal(e) => {
                    self.send_alerts(env);
                    self.core.fail(TlsError::Tls(e));
                    return;
                }
            }
        }
        self.core.fail(TlsError::Tls(rustls::Error::General(
            "tls state loop made no progress".into(),
        )));
    }

    /// After a rustls error: encodes the alert(s) rustls queued for the peer and writes them.
    fn send_alerts(&mut self, env: &mut Env<'_, C>) {
        let mut empty: [u8; 0] = [];
        for _ in 0..8 {
            let more = match &mut self.tls {
                Side::Server(c) => self
                    .core
                    .on_alert_state(c.process_tls_records(&mut empty).state),
                Side::Client(c) => self
                    .core
                    .on_alert_state(c.process_tls_records(&mut empty).state),
            };
            if !more {
                break;
            }
        }
        if self.core.hs_len > 0 {
            self.core.submit_hs(OutKind::Alert, env);
        }
    }

    /// Issues the ciphertext read when rustls or a pending read needs data.
    fn issue_read(&mut self, env: &mut Env<'_, C>) {
        let c = &self.core;
        if self.read_inflight || c.failed.is_some() || c.eof {
            return;
        }
        let need = if c.traffic {
            !c.reads.is_empty() && c.plain_start == c.plain.len() && !c.peer_closed
        } else {
            c.want_read
        };
        if !need {
            return;
        }
        let deadline = if c.traffic {
            c.reads.iter().filter_map(|r| r.deadline).min()
        } else {
            c.hs_deadline
        };
        let left = self.rx_end - self.rx_start;
        let buf = if left == 0 {
            // Nothing pending: the read fills the buffer rustls decrypts from.
            let mut rx = std::mem::take(&mut self.rx);
            if rx.len() < self.read_size {
                rx.resize(self.read_size, 0);
            }
            self.rx_start = 0;
            self.rx_end = 0;
            self.read_into_rx = true;
            rx
        } else {
            // A partial record: keep it at the front, read its rest (if its header says how
            // long it is) into the spare buffer, to be appended.
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end = left;
            self.rx_start = 0;
            let mut want = READ_SIZE;
            if c.traffic && left >= 5 {
                let len = 5 + u16::from_be_bytes([self.rx[3], self.rx[4]]) as usize;
                if len > left {
                    want = (len - left).min(READ_SIZE);
                }
            }
            let mut spare = std::mem::take(&mut self.spare);
            spare.resize(want, 0);
            self.read_into_rx = false;
            spare
        };
        let tag = env.tag(Io::Read);
        let sent = match deadline {
            Some(d) => env.w.read_timeout(tag, &env.me.conn, Some(buf), d),
            None => env.w.read(tag, &env.me.conn, Some(buf)),
        };
        match sent {
            Ok(_) => self.read_inflight = true,
            Err(e) => {
                let buf = e.buffer.and_then(|b| b.into_vec()).unwrap_or_default();
                if self.read_into_rx {
                    self.rx = buf;
                } else {
                    self.spare = buf;
                }
                self.core.fail(TlsError::Io(e.error));
                self.core.settle(env);
            }
        }
    }
}

impl<C: Send + 'static> Core<C> {
    /// Marks the connection dead (the first reason stays).
    fn fail(&mut self, e: TlsError) {
        if self.failed.is_none() {
            self.failed = Some(e);
        }
    }

    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        if b.len() < len {
            b.resize(len, 0);
        } else {
            b.truncate(len);
        }
        b
    }

    fn recycle(&mut self, b: Vec<u8>) {
        if self.pool.len() < POOL_KEEP && b.capacity() <= POOL_MAX_BYTES {
            self.pool.push(b);
        }
    }

    /// One state of `process_tls_records`.
    fn on_state<Data>(
        &mut self,
        state: Result<ConnectionState<'_, '_, Data>, rustls::Error>,
        handshaking: bool,
        env: &mut Env<'_, C>,
    ) -> Flow {
        let state = match state {
            Ok(s) => s,
            Err(e) => return Flow::Fatal(e),
        };
        match state {
            ConnectionState::ReadTraffic(mut rt) => {
                while let Some(rec) = rt.next_record() {
                    match rec {
                        Ok(rec) => {
                            self.extra_discard += rec.discard;
                            self.deliver(rec.payload, env);
                        }
                        Err(e) => return Flow::Fatal(e),
                    }
                }
                self.complete_front_read(env);
                Flow::Continue
            }
            ConnectionState::PeerClosed => {
                self.peer_closed = true;
                Flow::Continue
            }
            ConnectionState::Closed => {
                self.peer_closed = true;
                Flow::Stop
            }
            ConnectionState::EncodeTlsData(mut enc) => loop {
                match enc.encode(&mut self.hs_out[self.hs_len..]) {
                    Ok(n) => {
                        self.hs_len += n;
                        break Flow::Continue;
                    }
                    Err(EncodeError::InsufficientSize(s)) => {
                        self.hs_out.resize(self.hs_len + s.required_size, 0);
                    }
                    Err(EncodeError::AlreadyEncoded) => break Flow::Continue,
                }
            },
            ConnectionState::TransmitTlsData(tx) => {
                if self.hs_len > 0 {
                    self.submit_hs(OutKind::Handshake, env);
                }
                tx.done();
                if self.failed.is_some() {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            }
            ConnectionState::BlockedHandshake => {
                self.want_read = true;
                Flow::Stop
            }
            ConnectionState::WriteTraffic(mut wt) => {
                if handshaking {
                    // 0.5-RTT: rustls could send, but the peer has not finished; wait for it.
                    self.want_read = true;
                    return Flow::Stop;
                }
                self.traffic = true;
                self.want_read = false;
                while let Some(w) = self.writes.pop_front() {
                    let guess = w.buf.len() + (w.buf.len() / 16384 + 1) * RECORD_OVERHEAD;
                    let mut out = self.buffer(guess);
                    let n = loop {
                        match wt.encrypt(&w.buf, &mut out) {
                            Ok(n) => break Ok(n),
                            Err(EncryptError::InsufficientSize(s)) => {
                                out.resize(s.required_size, 0)
                            }
                            Err(EncryptError::EncryptExhausted) => break Err(()),
                        }
                    };
                    let Ok(n) = n else {
                        self.writes.push_front(w);
                        self.recycle(out);
                        return Flow::Fatal(rustls::Error::EncryptError);
                    };
                    out.truncate(n);
                    self.submit(
                        OutKind::App {
                            ctx: w.ctx,
                            buf: w.buf,
                        },
                        out,
                        w.deadline,
                        env,
                    );
                    if self.failed.is_some() {
                        return Flow::Stop;
                    }
                }
                if self.close_requested && !self.close_sent {
                    self.close_sent = true;
                    let mut out = self.buffer(64);
                    let n = loop {
                        match wt.queue_close_notify(&mut out) {
                            Ok(n) => break n,
                            Err(EncryptError::InsufficientSize(s)) => {
                                out.resize(s.required_size, 0)
                            }
                            Err(EncryptError::EncryptExhausted) => break 0,
                        }
                    };
                    out.truncate(n);
                    if n > 0 {
                        self.submit(OutKind::CloseNotify, out, None, env);
                    }
                    if self.failed.is_none() {
                        self.submit_shutdown(env);
                    }
                }
                Flow::Stop
            }
            // Early data is refused when the connection is made (`max_early_data_size` 0);
            // any other new state is one this module does not know.
            _ => Flow::Fatal(rustls::Error::General(
                "unexpected rustls state (early data is not supported)".into(),
            )),
        }
    }

    /// While sending alerts after a failure: encodes and transmits, stops at anything else.
    fn on_alert_state<Data>(
        &mut self,
        state: Result<ConnectionState<'_, '_, Data>, rustls::Error>,
    ) -> bool {
        match state {
            Ok(ConnectionState::EncodeTlsData(mut enc)) => loop {
                match enc.encode(&mut self.hs_out[self.hs_len..]) {
                    Ok(n) => {
                        self.hs_len += n;
                        break true;
                    }
                    Err(EncodeError::InsufficientSize(s)) => {
                        self.hs_out.resize(self.hs_len + s.required_size, 0);
                    }
                    Err(EncodeError::AlreadyEncoded) => break true,
                }
            },
            Ok(ConnectionState::TransmitTlsData(tx)) => {
                tx.done();
                true
            }
            _ => false,
        }
    }

    /// Plaintext from one record: into the pending reads, the rest into `plain`.
    fn deliver(&mut self, mut p: &[u8], env: &mut Env<'_, C>) {
        while !p.is_empty() {
            let Some(r) = self.reads.front_mut() else {
                break;
            };
            // Within the capacity: `extend_from_slice` never reallocates here.
            let n = (r.buf.capacity() - r.buf.len()).min(p.len());
            r.buf.extend_from_slice(&p[..n]);
            r.filled += n;
            p = &p[n..];
            if r.buf.len() == r.buf.capacity() {
                self.complete_front_read(env);
            }
        }
        if !p.is_empty() {
            if self.plain_start == self.plain.len() {
                self.plain.clear();
                self.plain_start = 0;
            }
            self.plain.extend_from_slice(p);
        }
    }

    /// The front read completes if it holds any data.
    fn complete_front_read(&mut self, env: &mut Env<'_, C>) {
        if self.reads.front().is_some_and(|r| r.filled > 0) {
            let r = self.reads.pop_front().expect("checked");
            env.emit(TlsOp::Read, r.ctx, r.buf, r.filled, None);
        }
    }

    /// Moves `hs_out` into a gaio write.
    fn submit_hs(&mut self, kind: OutKind<C>, env: &mut Env<'_, C>) {
        let mut hs = std::mem::take(&mut self.hs_out);
        hs.truncate(self.hs_len);
        self.hs_len = 0;
        self.hs_out = self.pool.pop().unwrap_or_default();
        self.hs_out.clear();
        let deadline = if self.traffic { None } else { self.hs_deadline };
        self.submit(kind, hs, deadline, env);
    }

    /// Submits one gaio write of `bytes`; a refusal fails the connection (and an application
    /// write's result says so at once).
    fn submit(
        &mut self,
        kind: OutKind<C>,
        bytes: Vec<u8>,
        deadline: Option<Instant>,
        env: &mut Env<'_, C>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let tag = env.tag(Io::Write(seq));
        let sent = match deadline {
            Some(d) => env.w.write_timeout(tag, &env.me.conn, bytes, d),
            None => env.w.write(tag, &env.me.conn, bytes),
        };
        match sent {
            Ok(_) => self.out.push_back(OutWrite { seq, kind }),
            Err(e) => {
                if let Some(v) = e.buffer.and_then(|b| b.into_vec()) {
                    self.recycle(v);
                }
                let err = TlsError::Io(e.error);
                if let OutKind::App { ctx, buf } = kind {
                    env.emit(TlsOp::Write, ctx, buf, 0, Some(err.duplicate()));
                }
                self.fail(err);
            }
        }
    }

    /// The `shutdown(Write)` after `close_notify`.
    fn submit_shutdown(&mut self, env: &mut Env<'_, C>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let tag = env.tag(Io::Write(seq));
        match env.w.shutdown(tag, &env.me.conn, std::net::Shutdown::Write) {
            Ok(_) => self.out.push_back(OutWrite {
                seq,
                kind: OutKind::Shutdown,
            }),
            Err(e) => self.fail(TlsError::Io(e.error)),
        }
    }

    /// Delivers what can complete now: on a dead connection everything not in flight (the
    /// handshake's and close's results once the last write, an alert perhaps, is done); on a
    /// live one the handshake's result once its messages are written, and reads at the end
    /// of the stream.
    fn settle(&mut self, env: &mut Env<'_, C>) {
        let writes_done = self.out.is_empty();
        if self.failed.is_some() {
            // Reads take buffered plaintext first.
            while !self.reads.is_empty() && self.plain_start < self.plain.len() {
                self.serve_plain(env);
            }
        }
        if let Some(f) = &self.failed {
            while let Some(r) = self.reads.pop_front() {
                env.emit(TlsOp::Read, r.ctx, r.buf, 0, Some(f.duplicate()));
            }
            while let Some(w) = self.writes.pop_front() {
                env.emit(TlsOp::Write, w.ctx, w.buf, 0, Some(f.duplicate()));
            }
            if writes_done {
                if let Some(ctx) = self.hs_ctx.take() {
                    env.emit(TlsOp::Handshake, ctx, Vec::new(), 0, Some(f.duplicate()));
                }
                if let Some(ctx) = self.close_ctx.take() {
                    env.emit(TlsOp::CloseNotify, ctx, Vec::new(), 0, Some(f.duplicate()));
                }
            }
            return;
        }
        if self.traffic
            && self.hs_ctx.is_some()
            && !self
                .out
                .iter()
                .any(|o| matches!(o.kind, OutKind::Handshake))
        {
            let ctx = self.hs_ctx.take().expect("checked");
            env.emit(TlsOp::Handshake, ctx, Vec::new(), 0, None);
        }
        while !self.reads.is_empty() && self.plain_start < self.plain.len() {
            self.serve_plain(env);
        }
        if self.traffic && (self.peer_closed || self.eof) {
            while let Some(r) = self.reads.pop_front() {
                let e = if self.peer_closed {
                    TlsError::Eof
                } else {
                    TlsError::UnexpectedEof
                };
                env.emit(TlsOp::Read, r.ctx, r.buf, 0, Some(e));
            }
        }
    }

    /// The front read takes what `plain` holds (up to its room) and completes.
    fn serve_plain(&mut self, env: &mut Env<'_, C>) {
        let Some(mut r) = self.reads.pop_front() else {
            return;
        };
        let avail = &self.plain[self.plain_start..];
        let n = (r.buf.capacity() - r.buf.len()).min(avail.len());
        r.buf.extend_from_slice(&avail[..n]);
        self.plain_start += n;
        if self.plain_start == self.plain.len() {
            self.plain.clear();
            self.plain_start = 0;
        }
        env.emit(TlsOp::Read, r.ctx, r.buf, n, None);
    }
}
