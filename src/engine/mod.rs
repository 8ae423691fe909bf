//! The engine: the meaning of every request, written once for both backends.
//!
//! It holds the connection table (slot + generation), the per-direction FIFO queues, the
//! requests, the deadline heap and the results not yet handed to `wait_io`, and it decides
//! everything about a request: when it starts, what an outcome means for it (the progress
//! rule, `crate::request`), when it ends (completion, deadline, cancel, free, detach, handle
//! drop, close), the fsync barrier (`files.rs`), and when a descriptor may close. A backend is a
//! [`Driver`]: it starts a request (a non-blocking syscall on epoll, an SQE on io_uring),
//! reports what came back ([`Engine::complete`], or at once as [`Start::Done`]) and does its
//! own waiting. The epoll backend keeps the engine behind one lock that every thread with news
//! takes; on io_uring the ring thread owns it.
//!
//! Per connection, reads are served FIFO among reads and writes FIFO among writes: only the
//! front request of a direction is started, and the one behind it only once it is done. A
//! request in the driver's hands ("in flight") cannot be ended at once: ending it records why
//! ([`Ending`]) and asks the driver to cancel it, and it ends when its outcome comes back,
//! keeping what it moved. A descriptor closes only once nothing of its connection is in
//! flight.

pub(crate) mod fast_path;
mod files;
mod messages;
mod release;
mod table;
#[cfg(test)]
mod tests;

pub(crate) use messages::LoopMsg;
use table::Slot;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use slab::Slab;

use crate::conn::{Conn, ConnId, ConnOwner, ConnShared, IdAllocator};
use crate::deadline::{DeadlineHeap, Entry};
use crate::lane::Lane;
use crate::op::{OpId, OpResult};
use crate::request::{progress, Ending, Outcome, Request, Step};
use crate::results::ResultQueue;
use crate::Error;
use table::Table;

/// What starting a request came to.
pub(crate) enum Start {
    /// It came back at once (a non-blocking syscall): apply this outcome.
    Done(Outcome),
    /// The driver has it (an SQE, a file thread); [`Engine::complete`] follows, exactly once.
    InFlight,
}

/// A backend, as the engine sees it: it starts requests and forgets descriptors. It never
/// decides what an outcome means.
pub(crate) trait Driver<C> {
    /// True when EAGAIN means "wait for the next readiness edge" ([`Engine::ready`] follows);
    /// false when the driver waits itself (io_uring: start again with poll first).
    const READINESS: bool;

    /// Starts stream request `req` (the front of its direction, slab key `key`) on `fd`.
    fn start(&mut self, key: usize, fd: RawFd, is_socket: bool, req: &mut Request<C>) -> Start;

    /// Starts file request `req` on `fd`.
    fn start_file(&mut self, key: usize, fd: RawFd, req: &mut Request<C>) -> Start;

    /// Asks request `key`, in flight, to stop early (io_uring: ASYNC_CANCEL). Its outcome
    /// still comes back through [`Engine::complete`]; a driver that cannot stop it (a file
    /// thread) does nothing.
    fn cancel(&mut self, key: usize, req: &Request<C>);

    /// A swap read found no swap space and waits for some: the driver arranges to be told
    /// when a slice is released. True when space is already back (retry the starved now).
    fn starving(&mut self) -> bool;

    /// The engine retries the reads that wait for swap space: the driver withdraws its
    /// starvation announcement (a release from now on need not wake anyone).
    fn retrying(&mut self);

    /// Takes over a descriptor an accept produced, under `id` (readiness drivers register
    /// it). An error refuses the connection: the accept fails with it.
    fn adopt(&mut self, fd: &OwnedFd, id: ConnId) -> std::io::Result<()>;

    /// Descriptor `fd` leaves the watcher (closed or detached right after): readiness
    /// drivers deregister it.
    fn forget(&mut self, fd: &OwnedFd);

    /// Starts the requests `keys` of `ops` (the front of one direction's queue, in order, all
    /// of one datagram kind: `request::datagram::batchable`) with one syscall, pushing the
    /// outcome of each request it decided to `out`, in order (a prefix of `keys`). False
    /// when the driver has no batched form: the engine then starts them one at a time.
    fn start_batch(
        &mut self,
        fd: RawFd,
        ops: &mut Slab<Request<C>>,
        keys: &[usize],
        out: &mut Vec<Outcome>,
    ) -> bool {
        let _ = (fd, ops, keys, out);
        false
    }
}

/// What the engine needs to take over a connection an accept produced.
pub(crate) struct ConnMaker {
    pub(crate) watcher_id: u64,
    pub(crate) owner: Arc<dyn ConnOwner>,
    /// `SO_BUSY_POLL` for the accepted socket (`Builder::busy_poll`; 0: not set).
    pub(crate) busy_poll_us: u32,
}

/// The request semantics; see the module doc.
pub(crate) struct Engine<C, D> {
    pub(crate) driver: D,
    table: Table,
    ops: Slab<Request<C>>,
    deadlines: DeadlineHeap,
    /// Connections whose front reader waits for swap space.
    starved: Vec<ConnId>,
    /// Results of this locked section (or loop iteration), handed to `wait_io` by `flush`.
    out: Vec<OpResult<C>>,
    results: Arc<ResultQueue<C>>,
    ids: Arc<IdAllocator>,
    gc: Arc<crate::stats::GcCounters>,
    maker: ConnMaker,
    /// Requests in the driver's hands.
    in_flight: usize,
    /// `Close` was handled: new submissions end at once.
    closed: bool,
    /// A backend thread failed for this reason: reported once nothing is in flight.
    failure: Option<String>,
    /// When the loop thread wakes for deadlines next (`None`: only for a message). A
    /// request submitted with an earlier deadline must wake it ([`LoopMsg::Tick`]).
    sleep_until: Option<Instant>,
    /// Scratch for a batched start: the keys and their outcomes (kept to reuse their storage).
    batch_keys: Vec<usize>,
    batch_out: Vec<Outcome>,
}

impl<C: Send + 'static, D: Driver<C>> Engine<C, D> {
    pub(crate) fn new(
        driver: D,
        results: Arc<ResultQueue<C>>,
        ids: Arc<IdAllocator>,
        gc: Arc<crate::stats::GcCounters>,
        maker: ConnMaker,
    ) -> Self {
        Engine {
            driver,
            table: Table::default(),
            ops: Slab::with_capacity(1024),
            deadlines: DeadlineHeap::default(),
            starved: Vec::new(),
            out: Vec::with_capacity(1024),
            results,
            ids,
            gc,
            maker,
            in_flight: 0,
            closed: false,
            failure: None,
            sleep_until: None,
            batch_keys: Vec::new(),
            batch_out: Vec::new(),
        }
    }

    /// Hands this section's results to `wait_io`, as one batch.
    pub(crate) fn flush(&mut self) {
        self.results.push_all(&mut self.out);
        if self.in_flight == 0 {
            if let Some(why) = self.failure.take() {
                // Every request has its result queued: `wait_io` reports the failure after.
                self.results.fail(why);
            }
        }
    }

    /// A backend thread failed: ends everything as `close` does, and once nothing is in
    /// flight any more, `wait_io` reports `why` (`Error::WatcherFailed`).
    pub(crate) fn fail(&mut self, why: String) {
        if self.failure.is_none() && !self.results.is_failed() {
            self.failure = Some(why);
        }
        self.close();
        self.flush();
    }

    /// The result queue this engine delivers to.
    pub(crate) fn results(&self) -> Arc<ResultQueue<C>> {
        self.results.clone()
    }

    /// Requests in the driver's hands (the loop may exit after `Close` once this is 0).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True once `Close` was handled.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The earliest deadline, live or not (io_uring's timeout).
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Records when the loop thread wakes next and returns it.
    pub(crate) fn plan_sleep(&mut self) -> Option<Instant> {
        self.sleep_until = self.deadlines.next();
        self.sleep_until
    }

    /// Request `key`, if it is in the driver's hands (for a driver matching an outcome to it).
    pub(crate) fn in_flight_request(&self, key: usize) -> Option<&Request<C>> {
        self.ops.get(key).filter(|r| r.in_flight)
    }

    /// A descriptor taken over (by the submit side, or by an accept here).
    pub(crate) fn watch(&mut self, id: ConnId, fd: OwnedFd, is_socket: bool, h: Weak<ConnShared>) {
        if self.closed {
            // Raced past close: nothing will ever serve it.
            self.driver.forget(&fd);
            return;
        }
        self.table.insert(Slot::new(id, fd, is_socket, h));
    }

    /// A new request. True if its deadline is earlier than the loop thread's planned wake-up,
    /// which a caller on another thread must then bring forward ([`LoopMsg::Tick`]).
    pub(crate) fn submit(&mut self, req: Request<C>) -> bool {
        let i = match self.table.index_of(req.conn.id()) {
            Some(i) if !self.closed && self.table.get(i).is_some_and(|s| !s.closing) => i,
            // Freed (or dropped, or closed) between the submit side's check and here.
            _ => {
                let err = if self.closed {
                    Error::ClosedPipe
                } else {
                    Error::ConnClosed
                };
                self.out.push(req.finish(None, Some(err)));
                return false;
            }
        };
        let (deadline, seq, lane, poll_first) =
            (req.deadline, req.id.seq, req.kind.lane(), req.poll_first);
        // A corked connection's requests wait for the cork to end (`uncorked`).
        let corked = req.conn.0.corks.load(Ordering::Acquire) > 0;
        let key = self.ops.insert(req);
        match lane {
            None => self.file_submit(i, key),
            Some(lane) => {
                let Some(s) = self.table.get_mut(i) else {
                    return false;
                };
                let q = s.queue(lane);
                q.push_back(key);
                // A request that met EAGAIN on the submitting thread waits for the next edge
                // unless one came since (see `Slot::edge`).
                let first = q.len() == 1;
                if first && !corked && (!D::READINESS || !poll_first || s.edge[lane as usize]) {
                    self.serve(i, lane);
                }
            }
        }
        let Some(at) = deadline else {
            return false;
        };
        // Only a request still pending arms its deadline; one already past fires at the end
        // of this section.
        if !self.ops.get(key).is_some_and(|r| r.id.seq == seq) {
            return false;
        }
        self.deadlines.push(Entry { at, id: seq, key });
        if self.sleep_until.map_or(true, |t| at < t) {
            self.sleep_until = Some(at);
            return true;
        }
        false
    }

    /// Readiness for connection `id` (readiness drivers): serves the woken directions.
    pub(crate) fn ready(&mut self, id: ConnId, read: bool, write: bool) {
        let Some(i) = self.table.index_of(id) else {
            return; // stale: the connection is gone
        };
        for (woken, lane) in [(read, Lane::Read), (write, Lane::Write)] {
            let Some(s) = self.table.get_mut(i) else {
                return;
            };
            if !woken {
                continue;
            }
            if s.queue(lane).is_empty() {
                s.edge[lane as usize] = true;
            } else {
                self.serve(i, lane);
            }
        }
    }

    /// Starts the front requests of connection `i`'s `lane` queue, one after the other,
    /// until one is in flight, waits (readiness, swap space), or the queue is empty.
    fn serve(&mut self, i: usize, lane: Lane) {
        loop {
            let Some(s) = self.table.get_mut(i) else {
                return;
            };
            if s.closing || s.in_flight[lane as usize] {
                return;
            }
            let Some(&key) = s.queue(lane).front() else {
                return;
            };
            let req = &mut self.ops[key];
            // A corked connection's requests wait for the cork to end (`uncorked`).
            if req.conn.0.corks.load(Ordering::Acquire) > 0 {
                return;
            }
            // A swap read waits for swap space to come back; a read with its own buffer
            // behind it (once the swap read timed out, say) need not.
            if s.starved && req.buffer.is_none() {
                return;
            }
            // Several datagrams queued: one batched syscall, unless a driver that waits itself
            // should poll first (an EAGAIN just now; its single start arms the poll).
            if crate::request::datagram::batchable(req)
                && s.queue(lane).len() > 1
                && (D::READINESS || !req.poll_first)
            {
                match self.serve_batch(i, lane) {
                    Some(true) => continue,
                    Some(false) => return,
                    None => {}
                }
            }
            let Some(s) = self.table.get_mut(i) else {
                return;
            };
            let req = &mut self.ops[key];
            match self.driver.start(key, s.fd.as_raw_fd(), s.is_socket, req) {
                Start::InFlight => {
                    req.in_flight = true;
                    s.in_flight[lane as usize] = true;
                    self.in_flight += 1;
                    return;
                }
                Start::Done(outcome) => {
                    if !self.step(i, lane, key, outcome) {
                        return;
                    }
                }
            }
        }
    }

    /// Starts the datagram requests at the front of connection `i`'s `lane` queue that can
    /// go out together with one syscall (`Driver::start_batch`) and applies their outcomes in
    /// order. `Some(go_on)` as [`step`](Engine::step) says for the last; `None` when the
    /// driver has no batched form (start the front alone).
    fn serve_batch(&mut self, i: usize, lane: Lane) -> Option<bool> {
        let s = self.table.get_mut(i)?;
        let fd = s.fd.as_raw_fd();
        let mut keys = std::mem::take(&mut self.batch_keys);
        let mut out = std::mem::take(&mut self.batch_out);
        keys.clear();
        out.clear();
        let kind = self.ops[*s.queue(lane).front()?].kind;
        let ops = &self.ops;
        keys.extend(
            s.queue(lane)
                .iter()
                .copied()
                .take_while(|&k| {
                    ops[k].kind == kind && crate::request::datagram::batchable(&ops[k])
                })
                .take(crate::request::datagram::BATCH),
        );
        let started = self.driver.start_batch(fd, &mut self.ops, &keys, &mut out);
        if started {
            let moved = out
                .iter()
                .filter(|o| matches!(o, Outcome::Moved(..)))
                .count();
            self.gc.batch_calls.fetch_add(1, Ordering::Relaxed);
            self.gc
                .batch_datagrams
                .fetch_add(moved as u64, Ordering::Relaxed);
        }
        let mut go_on = Some(true);
        if !started || out.is_empty() {
            go_on = None;
        }
        for (&key, outcome) in keys.iter().zip(out.drain(..)) {
            if !self.step(i, lane, key, outcome) {
                go_on = Some(false);
                break;
            }
        }
        // Outcomes after a stop (none by construction) are dropped with the scratch's clear.
        self.batch_keys = keys;
        self.batch_out = out;
        go_on
    }

    /// The last cork on connection `id` ended: start the requests it held back, sends first
    /// (the answers a corked batch produced), then receives.
    pub(crate) fn uncorked(&mut self, id: ConnId) {
        if let Some(i) = self.table.index_of(id) {
            self.serve(i, Lane::Write);
            self.serve(i, Lane::Read);
        }
    }

    /// Applies `outcome` to stream request `key`, the front of `lane`; true when the queue
    /// should be served on (the same request again, or the next one).
    fn step(&mut self, i: usize, lane: Lane, key: usize, outcome: Outcome) -> bool {
        match progress(&mut self.ops[key], outcome) {
            Step::Done(swap, err) => {
                self.deliver(i, lane, key, swap, err);
                true
            }
            Step::Accepted(fd) => {
                let err = self.adopt(key, fd);
                self.deliver(i, lane, key, None, err);
                true
            }
            Step::Again => true,
            Step::WouldBlock if D::READINESS => {
                if let Some(s) = self.table.get_mut(i) {
                    s.edge[lane as usize] = false;
                }
                false
            }
            // The driver waits for readiness itself (poll first).
            Step::WouldBlock => true,
            Step::Starve => {
                if let Some(s) = self.table.get_mut(i) {
                    if !s.starved {
                        s.starved = true;
                        self.starved.push(s.id);
                    }
                }
                if self.driver.starving() {
                    self.retry_starved();
                }
                false
            }
        }
    }

    /// Takes over the descriptor an accept produced: a new slot and its `Conn` in the
    /// request. An error if the driver refuses it, or after `Close` (the descriptor closes).
    fn adopt(&mut self, key: usize, fd: OwnedFd) -> Option<Error> {
        if self.closed {
            // Accepted before `Close`'s cancel reached it: nothing would serve it (the
            // descriptor closes here).
            return Some(Error::ClosedPipe);
        }
        crate::sys::fd::set_busy_poll(std::os::fd::AsFd::as_fd(&fd), self.maker.busy_poll_us);
        let id = self.ids.alloc();
        if let Err(e) = self.driver.adopt(&fd, id) {
            self.ids.release(id);
            return Some(Error::Io(e));
        }
        let conn = Conn::new(
            id,
            self.maker.watcher_id,
            fd.as_raw_fd(),
            self.maker.owner.clone(),
        );
        self.table.insert(Slot::new(id, fd, true, conn.downgrade()));
        self.ops[key].accepted = Some(conn);
        None
    }

    /// Takes stream request `key` out of its queue and delivers it.
    fn deliver(
        &mut self,
        i: usize,
        lane: Lane,
        key: usize,
        swap: Option<crate::swap::SwapSlice>,
        err: Option<Error>,
    ) {
        let req = self.ops.remove(key);
        if let Some(s) = self.table.get_mut(i) {
            let q = s.queue(lane);
            if q.front() == Some(&key) {
                q.pop_front();
            } else if let Some(pos) = q.iter().position(|&k| k == key) {
                q.remove(pos);
            }
        }
        self.out.push(req.finish(swap, err));
    }

    /// The driver reports the outcome of request `key`, which it had (a CQE, a file thread).
    pub(crate) fn complete(&mut self, key: usize, outcome: Outcome) {
        let Some(req) = self.ops.get_mut(key).filter(|r| r.in_flight) else {
            return;
        };
        req.in_flight = false;
        self.in_flight -= 1;
        let lane = req.kind.lane();
        // A connection with a request in flight is never taken out of the table.
        let Some(i) = self.table.index_of(req.conn.id()) else {
            return;
        };
        let Some(lane) = lane else {
            return self.file_complete(i, key, outcome);
        };
        if let Some(s) = self.table.get_mut(i) {
            s.in_flight[lane as usize] = false;
        }
        let go_on = self.step(i, lane, key, outcome);
        let closing = self.table.get(i).is_some_and(|s| s.closing);
        if closing {
            self.end_queue(i, lane);
            self.finish_release(i);
        } else if go_on {
            self.serve(i, lane);
        }
    }

    /// Ends request `id` with `Canceled` if it is still pending; false if it is not.
    pub(crate) fn cancel(&mut self, id: OpId) -> bool {
        let Some(i) = self.table.index_of(id.conn) else {
            return false;
        };
        let ops = &self.ops;
        let key = self
            .table
            .get(i)
            .and_then(|s| s.keys().find(|&k| ops.get(k).is_some_and(|r| r.id == id)));
        match key {
            Some(k) => {
                self.end(k, Ending::Canceled);
                true
            }
            None => false,
        }
    }

    /// Ends request `key` with `ending`: at once if it is not in flight, else by asking the
    /// driver to cancel it (it ends when its outcome comes back, keeping its progress).
    fn end(&mut self, key: usize, ending: Ending) {
        let Some(req) = self.ops.get_mut(key) else {
            return;
        };
        if req.in_flight {
            if req.cancel.is_none() {
                req.cancel = Some(ending);
                self.driver.cancel(key, &self.ops[key]);
            }
            return;
        }
        let Some(i) = self.table.index_of(req.conn.id()) else {
            // Cannot happen (a pending request's connection is in the table); still one
            // result.
            let req = self.ops.remove(key);
            self.out.push(req.finish(None, Some(ending.error())));
            return;
        };
        let Some(lane) = req.kind.lane() else {
            return self.file_finish(i, key, Some(ending.error()));
        };
        let was_front = self
            .table
            .get_mut(i)
            .is_some_and(|s| s.queue(lane).front() == Some(&key));
        self.deliver(i, lane, key, None, Some(ending.error()));
        // The request behind it may be able to run now (data that arrived for a starved front
        // reader, say) and no new edge may come for it.
        if was_front {
            self.serve(i, lane);
        }
    }

    /// Serves the reads that wait for swap space, front first.
    pub(crate) fn retry_starved(&mut self) {
        self.driver.retrying();
        for id in std::mem::take(&mut self.starved) {
            if let Some(i) = self.table.index_of(id) {
                if let Some(s) = self.table.get_mut(i) {
                    s.starved = false;
                }
                self.serve(i, Lane::Read);
            }
        }
    }

    /// Ends every request whose deadline has passed with `Deadline`, keeping its progress.
    pub(crate) fn expire(&mut self) {
        if self.deadlines.next().is_none() {
            return;
        }
        let now = Instant::now();
        loop {
            let ops = &self.ops;
            let live = |e: &Entry| ops.get(e.key).is_some_and(|r| r.id.seq == e.id);
            let Some(e) = self.deadlines.pop_expired(now, live) else {
                break;
            };
            self.end(e.key, Ending::Deadline);
        }
        let ops = &self.ops;
        self.deadlines.compact(ops.len(), |e| {
            ops.get(e.key).is_some_and(|r| r.id.seq == e.id)
        });
    }
}
