//! The ring thread: it owns the engine and the ring. Each turn it takes the submit side's
//! messages into the engine, gives recycled swap buffers back to the kernel, expires deadlines,
//! reaps CQEs into the engine, hands the results to `wait_io`, and sleeps in
//! `io_uring_enter` until a CQE, the wake eventfd or the next deadline.
//!
//! The driver ([`Ring`]) starts a request by pushing its SQE (the engine starts only the front
//! request of each direction, which keeps gaio's order: io_uring gives none between two RECVs
//! on one socket) and cancels with ASYNC_CANCEL; the engine delivers a request only once its
//! CQE is back, so a buffer is never returned, and a descriptor never closed, while the kernel
//! may still use it.

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::buf_ring::{BufRing, BGID};
use super::RingWake;
use crate::conn::ConnId;
use crate::driver::failure::{self, Failpoints, Thread};
use crate::driver::Core;
use crate::engine::{Driver, Engine, LoopMsg, Start};
use crate::request::{self, Outcome, Request};
use crate::Result;

/// `user_data` of the always-pending eventfd read.
const WAKE_UD: u64 = u64::MAX;
/// `user_data` of ASYNC_CANCEL requests (their own CQEs carry nothing we need).
const CANCEL_UD: u64 = u64::MAX - 1;
/// Messages handled per turn before the loop submits and reaps.
const DRAIN: usize = 4096;
/// Longest wait for the kernel to give back the requests of a ring thread that failed.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Times a full submission queue is submitted (and the completion queue drained) before an
/// SQE is given up on.
const PUSH_TRIES: usize = 64;

/// The io_uring driver, inside the engine (owned by the ring thread).
pub(crate) struct Ring {
    // Field order is drop order: the ring goes first, then the memory it pointed at.
    ring: IoUring,
    bufs: BufRing,
    wake_buf: Box<u64>,
    wake_fd: RawFd,
    wake_armed: bool,
    /// CQEs taken off the completion queue, not yet handed to the engine: `(user_data, res,
    /// flags)`. A full queue is drained here while an SQE waits for room, so the engine is never
    /// re-entered from inside a driver call.
    reaped: Vec<(u64, i32, u32)>,
    /// What the probe found (SHUTDOWN or its synchronous fallback).
    features: super::Features,
    /// The submit side's swap pool, which swap `recv_from`s receive into on this thread
    /// (`request::datagram::ring_attempt`).
    swap: Arc<std::sync::Mutex<crate::swap::SwapPool>>,
}

/// Packs a slab key and the low 31 bits of a request id into `user_data`, so a CQE for a
/// finished request can never be taken for a later one in the same slot.
fn user_data(key: usize, seq: u64) -> u64 {
    ((seq & 0x7fff_ffff) << 32) | (key as u64 & 0xffff_ffff)
}

impl Ring {
    fn new(
        ring: IoUring,
        bufs: BufRing,
        wake_fd: RawFd,
        features: super::Features,
        swap: Arc<std::sync::Mutex<crate::swap::SwapPool>>,
    ) -> Ring {
        Ring {
            swap,
            ring,
            bufs,
            wake_buf: Box::new(0),
            wake_fd,
            wake_armed: false,
            reaped: Vec::with_capacity(1024),
            features,
        }
    }

    /// Pushes one SQE, submitting (and draining the completion queue, if the kernel pushes
    /// back) until there is room. Gives up after [`PUSH_TRIES`] rounds or on an error the
    /// ring should never return, so a broken ring cannot spin the thread forever.
    fn push(&mut self, sqe: squeue::Entry) -> std::io::Result<()> {
        for _ in 0..PUSH_TRIES {
            // SAFETY: every pointer in the SQEs we build (caller buffers, the wake buffer, the
            // provided buffer ring, a connect's boxed address) stays valid until the matching
            // CQE is reaped: the engine keeps a request, with its buffer and address, until its
            // outcome is back, and the driver keeps the wake buffer and the buffer ring until
            // the ring is gone.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            match self.ring.submitter().submit() {
                Ok(_) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR) => self.drain(),
                    _ => return Err(e),
                },
            }
        }
        Err(std::io::Error::other(
            "io_uring submission queue stayed full",
        ))
    }

    /// Moves every CQE off the completion queue into `reaped`.
    fn drain(&mut self) {
        self.reaped.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
    }

    /// Submits what is queued and, if `block`, waits for a completion or `until`. EBUSY
    /// (completion queue full) is answered by draining it, never by dropping anything.
    fn submit(&mut self, block: bool, until: Option<Instant>) {
        for _ in 0..PUSH_TRIES {
            let r = if block {
                let ts =
                    until.map(|at| Timespec::from(at.saturating_duration_since(Instant::now())));
                match &ts {
                    Some(ts) => {
                        let args = SubmitArgs::new().timespec(ts);
                        self.ring.submitter().submit_with_args(1, &args)
                    }
                    None => self.ring.submitter().submit_and_wait(1),
                }
            } else {
                self.ring.submitter().submit()
            };
            match r {
                Ok(_) => return,
                Err(e) => match e.raw_os_error() {
                    Some(libc::ETIME) | Some(libc::EINTR) => return,
                    Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                        self.drain();
                        if block {
                            return;
                        }
                    }
                    // Nothing sensible to do but keep going; the next turn retries.
                    _ => {
                        log_warn!("io_uring submit failed (retried next turn): {e}");
                        return;
                    }
                },
            }
        }
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let ptr = (&mut *self.wake_buf as *mut u64).cast::<u8>();
        let sqe = opcode::Read::new(types::Fd(self.wake_fd), ptr, 8)
            .offset(u64::MAX)
            .build()
            .user_data(WAKE_UD);
        self.wake_armed = self.push(sqe).is_ok();
    }
}

impl<C: Send + 'static> Driver<C> for Ring {
    const READINESS: bool = false;

    fn start(&mut self, key: usize, fd: RawFd, is_socket: bool, req: &mut Request<C>) -> Start {
        if req.kind == request::Kind::Shutdown && !self.features.shutdown {
            // A kernel without IORING_OP_SHUTDOWN: shutdown(2) does not block, so the ring
            // thread makes it itself.
            return Start::Done(request::shutdown::attempt(fd, req));
        }
        if let Some(outcome) = request::datagram::ring_attempt(fd, req, &self.swap) {
            return Start::Done(outcome);
        }
        let swap_len = self.bufs.buf_size() as u32;
        let Some(sqe) = request::sqe(fd, is_socket, req, BGID, swap_len) else {
            return Start::Done(Outcome::Failed(std::io::Error::from_raw_os_error(
                libc::EINVAL,
            )));
        };
        req.stamp = self.bufs.generation();
        match self.push(sqe.user_data(user_data(key, req.id.seq))) {
            Ok(()) => Start::InFlight,
            Err(e) => Start::Done(Outcome::Failed(e)),
        }
    }

    fn start_file(&mut self, key: usize, fd: RawFd, req: &mut Request<C>) -> Start {
        let sqe = request::file::sqe(types::Fd(fd), req);
        match self.push(sqe.user_data(user_data(key, req.id.seq))) {
            Ok(()) => Start::InFlight,
            Err(e) => Start::Done(Outcome::Failed(e)),
        }
    }

    fn cancel(&mut self, key: usize, req: &Request<C>) {
        let ud = user_data(key, req.id.seq);
        // If even the cancel cannot be queued, the request ends when the kernel completes it.
        if let Err(e) = self.push(opcode::AsyncCancel::new(ud).build().user_data(CANCEL_UD)) {
            log_warn!("io_uring cancel not queued (the request ends when the kernel is done): {e}");
        }
    }

    fn starving(&mut self) -> bool {
        self.bufs.shared().set_starving();
        // A buffer may have come back between the ENOBUFS and now.
        self.bufs.recycle()
    }

    fn retrying(&mut self) {
        self.bufs.shared().clear_starving();
    }

    /// Several queued datagrams: one non-blocking `recvmmsg`/`sendmmsg` made by the ring
    /// thread itself (`MSG_DONTWAIT`, so the socket's blocking mode does not matter), which
    /// moves what is ready at once; the request that meets EAGAIN is then started as an SQE
    /// that polls first, and the next batch follows its CQE. The kernel gives no order between
    /// two RECVMSGs in flight on one socket, so this keeps one request in flight per direction
    /// and still moves up to 64 datagrams per syscall.
    fn start_batch(
        &mut self,
        fd: RawFd,
        ops: &mut slab::Slab<Request<C>>,
        keys: &[usize],
        out: &mut Vec<Outcome>,
    ) -> bool {
        request::datagram::attempt_batch(fd, ops, keys, out);
        true
    }

    fn adopt(&mut self, _fd: &OwnedFd, _id: ConnId) -> std::io::Result<()> {
        Ok(())
    }

    fn forget(&mut self, _fd: &OwnedFd) {}
}

/// The ring thread's state.
pub(crate) struct RingLoop<C> {
    engine: Engine<C, Ring>,
    rx: Receiver<LoopMsg<C>>,
    wake: Arc<RingWake>,
    cqes: Vec<(u64, i32, u32)>,
    fail: Arc<Failpoints>,
    /// How long the thread spins on the completion queue before it sleeps
    /// (`Builder::busy_poll`).
    spin: Duration,
}

impl<C: Send + 'static> RingLoop<C> {
    pub(crate) fn new(
        ring: IoUring,
        features: super::Features,
        core: Core<C>,
        wake: Arc<RingWake>,
    ) -> Result<Self> {
        let bufs = BufRing::new(&ring, core.swap_count, core.swap_size, core.swap.clone())
            .map_err(|e| super::explain("provided buffer ring", &e))?;
        let swap = core.swap_pool.clone();
        let engine = core.engine(Ring::new(ring, bufs, wake.raw, features, swap));
        let fail = core.failpoints.clone();
        Ok(RingLoop {
            engine,
            rx: core.rx,
            wake,
            cqes: Vec::with_capacity(1024),
            fail,
            spin: core.busy_poll,
        })
    }

    /// Runs the ring until `Close` and the last CQE. A panic on the way (a bug, or the test
    /// hook) fails the watcher closed instead (`crate::driver::failure`).
    pub(crate) fn run(mut self) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve()));
        let Err(p) = run else {
            return self.teardown();
        };
        let why = failure::reason("gaio-uring", &*p);
        let results = self.engine.results();
        let drained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Requests already sent here are taken first, so each gets its result before the
            // failure is reported.
            self.take_messages();
            // Every connection released (fast paths closed first), requests in the kernel
            // cancelled; their CQEs must be back before their buffers can go. The engine
            // reports the failure once none is left.
            self.engine.fail(why.clone());
            let until = Instant::now() + DRAIN_LIMIT;
            while self.engine.in_flight() > 0 && Instant::now() < until {
                let ring = &mut self.engine.driver;
                ring.submit(true, Some(Instant::now() + Duration::from_millis(10)));
                self.reap();
                self.take_messages();
                self.engine.flush();
            }
            self.engine.in_flight() == 0
        }));
        if matches!(drained, Ok(true)) {
            self.teardown();
        } else {
            // The kernel may still write into requests' buffers or the buffer ring: keep all of
            // it (ring, buffers, descriptors) for the life of the process rather than free it.
            std::mem::forget(self);
        }
        results.fail(why);
    }

    fn serve(&mut self) {
        self.engine.driver.arm_wake();
        loop {
            self.fail.check(Thread::Ring);
            let mut handled = 0;
            while handled < DRAIN && !self.engine.is_closed() {
                match self.rx.try_recv() {
                    Ok(m) => {
                        handled += 1;
                        self.engine.handle(m);
                    }
                    Err(_) => break,
                }
            }
            let ring = &mut self.engine.driver;
            if ring.bufs.has_held() && ring.bufs.recycle() {
                self.engine.retry_starved();
            }
            self.engine.expire();
            self.reap();
            self.engine.flush();
            if self.engine.is_closed() && self.engine.in_flight() == 0 {
                break;
            }
            let until = self.engine.next_deadline();
            let more_msgs = !self.engine.is_closed() && !self.rx.is_empty();
            let ring = &mut self.engine.driver;
            if more_msgs || !ring.ring.completion().is_empty() || !ring.reaped.is_empty() {
                ring.submit(false, None);
            } else if !self.spin.is_zero() && self.busy_poll(until) {
                // Something arrived during the spin: the next turn takes it.
            } else {
                self.wake.announce_sleep();
                if !self.engine.is_closed() && !self.rx.is_empty() {
                    self.wake.awake();
                    self.engine.driver.submit(false, None);
                } else {
                    self.engine.driver.submit(true, until);
                    self.wake.awake();
                }
            }
        }
    }

    /// Busy-polls for up to `spin` (not past `until`): submits what is queued and runs the
    /// kernel's task work without waiting (`io_uring_enter` with GETEVENTS and no minimum;
    /// with DEFER_TASKRUN completions reach the queue only then), until a CQE or a message
    /// arrives. True if one did, false if the spin ran out (the caller then sleeps).
    fn busy_poll(&mut self, until: Option<Instant>) -> bool {
        /// `IORING_ENTER_GETEVENTS` (the io-uring crate keeps its constants private).
        const GETEVENTS: u32 = 1;
        let now = Instant::now();
        let end = until.map_or(now + self.spin, |u| u.min(now + self.spin));
        // What this turn queued goes to the kernel first.
        self.engine.driver.submit(false, None);
        loop {
            let ring = &mut self.engine.driver;
            // SAFETY: nothing to submit, no minimum and no argument: the call only runs the
            // ring's task work, posting finished completions, and never blocks.
            let _ = unsafe {
                ring.ring
                    .submitter()
                    .enter::<libc::sigset_t>(0, 0, GETEVENTS, None)
            };
            let cqes = !ring.ring.completion().is_empty();
            // After close the loop takes no more messages: only CQEs end the spin then.
            let msgs = !self.engine.is_closed() && !self.rx.is_empty();
            if cqes || msgs {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
    }

    /// Hands every message waiting in the channel to the engine (after a failure: a closed
    /// engine ends each request at once).
    fn take_messages(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.engine.handle(m);
        }
    }

    /// Takes every CQE off the completion queue and hands each to the engine.
    fn reap(&mut self) {
        loop {
            let mut cqes = std::mem::take(&mut self.cqes);
            let ring = &mut self.engine.driver;
            cqes.append(&mut ring.reaped);
            cqes.extend(
                ring.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if cqes.is_empty() {
                self.cqes = cqes;
                return;
            }
            for &(ud, res, flags) in &cqes {
                self.complete(ud, res, flags);
            }
            cqes.clear();
            self.cqes = cqes;
        }
    }

    /// One CQE: the wake read, a cancel's own CQE, or a request's outcome.
    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        if ud == WAKE_UD {
            let ring = &mut self.engine.driver;
            ring.wake_armed = false;
            if !self.engine.is_closed() {
                self.engine.driver.arm_wake();
            }
            return;
        }
        if ud == CANCEL_UD {
            return;
        }
        let key = (ud & 0xffff_ffff) as usize;
        let Some(req) = self.engine.in_flight_request(key) else {
            return;
        };
        if user_data(key, req.id.seq) != ud {
            return;
        }
        let (kind, stamp, polling) = (req.kind, req.stamp, req.polling);
        let ring = &mut self.engine.driver;
        let swap = cqueue::buffer_select(flags)
            .and_then(|bid| ring.bufs.take(bid, res.max(0) as usize, flags));
        let outcome = match Outcome::from_cqe(kind, polling, res, swap) {
            // Buffers went back into the ring after this read was started: the kernel has
            // them now, so try again instead of waiting for a release that already happened.
            Outcome::NoSwap if stamp != ring.bufs.generation() => Outcome::Retry,
            o => o,
        };
        self.engine.complete(key, outcome);
    }

    /// After the last request: take the wake read back, unregister the buffer ring, and end
    /// whatever is still queued behind `Close`.
    fn teardown(&mut self) {
        let ring = &mut self.engine.driver;
        if ring.wake_armed {
            let cancel = opcode::AsyncCancel::new(WAKE_UD)
                .build()
                .user_data(CANCEL_UD);
            if ring.push(cancel).is_ok() {
                // The eventfd read ends with ECANCELED (or data); bounded by the kernel.
                while ring.wake_armed {
                    ring.submit(true, None);
                    ring.drain();
                    for (ud, _, _) in std::mem::take(&mut ring.reaped) {
                        if ud == WAKE_UD {
                            ring.wake_armed = false;
                        }
                    }
                }
            }
        }
        ring.bufs.unregister(&ring.ring);
        while let Ok(m) = self.rx.try_recv() {
            self.engine.handle(m);
        }
        self.engine.flush();
    }
}
