//! What every backend shares: the messages the submit side sends to the loop thread, the link
//! that connection handles and swap slices use to reach it, and the raw descriptor syscalls.

pub(crate) mod attempt;
pub(crate) mod epoll;
pub(crate) mod fd;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{SendError, Sender};

use crate::conn::{ConnId, ConnOwner};
use crate::op::Op;
use crate::swap::SwapOwner;

/// The submit side's handle on whichever backend runs.
pub(crate) enum Driver<C> {
    Epoll(epoll::Epoll<C>),
    #[cfg(target_os = "linux")]
    Uring(Arc<uring::RingWake>),
}

impl<C: Send + 'static> Driver<C> {
    /// Registers a taken-over descriptor under `id` (readiness backends; a no-op elsewhere).
    pub(crate) fn register(&self, fd: std::os::fd::RawFd, id: ConnId) -> crate::Result<()> {
        match self {
            Driver::Epoll(e) => e.register(fd, id),
            #[cfg(target_os = "linux")]
            Driver::Uring(_) => {
                let _ = (fd, id);
                Ok(())
            }
        }
    }

    /// The leader/follower hook of `wait_io`, where the backend has one.
    pub(crate) fn lead(&self) -> Option<Arc<dyn crate::results::Lead>> {
        match self {
            Driver::Epoll(e) => e.lead(),
            #[cfg(target_os = "linux")]
            Driver::Uring(_) => None,
        }
    }

    /// After the backend's threads are joined: close what handles may still point at.
    pub(crate) fn finish(&self) {
        match self {
            Driver::Epoll(e) => e.finish(),
            #[cfg(target_os = "linux")]
            Driver::Uring(w) => w.close(),
        }
    }

    /// Interrupts the backend's kernel wait so its threads see `Close`.
    pub(crate) fn shutdown(&self) {
        match self {
            Driver::Epoll(e) => e.shutdown(),
            #[cfg(target_os = "linux")]
            Driver::Uring(w) => w.force(),
        }
    }
}

/// Everything the loop thread is told. One unbounded channel carries all of it, in order: a
/// submission sent after a `Watch` (or before a `Free`) from any thread is seen after (before) it.
pub(crate) enum LoopMsg<C> {
    /// A descriptor was taken over and registered for readiness under `id`.
    Watch {
        id: ConnId,
        fd: OwnedFd,
        is_socket: bool,
        /// The handles' shared part (see `crate::lane`).
        handle: std::sync::Weak<crate::conn::ConnShared>,
    },
    /// A read or write request.
    Submit(Op<C>),
    /// `Watcher::free`: fail pending ops with `ClosedPipe`, close the descriptor.
    Free(ConnId),
    /// `Watcher::cancel`: end that request with `Canceled`; the reply says whether it was
    /// still pending.
    Cancel {
        id: crate::op::OpId,
        reply: Sender<bool>,
    },
    /// `Watcher::detach`: fail pending ops with `ClosedPipe`, deregister, and hand the
    /// descriptor back instead of closing it (`None` if the connection was already gone).
    Detach {
        id: ConnId,
        reply: Sender<Option<OwnedFd>>,
    },
    /// The last handle of a never-freed connection was dropped.
    Dropped(ConnId),
    /// A request with a deadline earlier than the epoll loop's planned wake-up was queued
    /// directly: recompute the sleep.
    Tick,
    /// A file request finished on a worker thread (epoll backend): bytes moved or `-errno`.
    FileDone { key: usize, seq: u64, res: isize },
    /// A swap slice was dropped while reads were waiting for swap space.
    SwapReleased,
    /// Shut down: fail everything pending with `ClosedPipe`, close every descriptor, exit.
    Close,
}

/// What the watcher hands a backend to start with.
pub(crate) struct Core<C> {
    /// The watcher's identity, for connections the loop creates (accept).
    pub(crate) watcher_id: u64,
    /// What those connections report their last drop to.
    pub(crate) owner: Arc<dyn ConnOwner>,
    pub(crate) tx: LoopTx<C>,
    pub(crate) rx: crossbeam_channel::Receiver<LoopMsg<C>>,
    /// Bytes per swap buffer and number of buffers, as configured.
    pub(crate) swap_size: usize,
    pub(crate) swap_count: usize,
    pub(crate) swap: Arc<crate::swap::Shared>,
    /// The swap buffers of the submit side's fast path; the epoll loop reads into them too.
    pub(crate) swap_pool: Arc<std::sync::Mutex<crate::swap::SwapPool>>,
    pub(crate) results: Arc<crate::results::ResultQueue<C>>,
    pub(crate) ids: Arc<crate::conn::IdAllocator>,
    pub(crate) gc: Arc<GcCounters>,
    pub(crate) loop_slot: Arc<crate::affinity::ThreadSlot>,
    pub(crate) poller_slot: Arc<crate::affinity::ThreadSlot>,
}

/// What a connection needs only once it takes file requests: kept behind a `Box` so the
/// sockets of a server with tens of thousands of connections do not pay for it.
#[derive(Default)]
pub(crate) struct FileState {
    /// Pending file requests (they run side by side, outside the FIFO queues).
    pub(crate) files: Vec<usize>,
    /// Ids of the `write_at`s not yet complete, for the fsync barrier.
    pub(crate) writes: std::collections::BTreeSet<u64>,
    /// `fsync`s waiting for earlier writes.
    pub(crate) fsyncs: std::collections::VecDeque<usize>,
    /// File requests out of the loop's hands (in the kernel, or on a file thread): the
    /// descriptor must stay open until they return.
    pub(crate) busy: usize,
}

impl FileState {
    /// An fsync with id `seq` must wait while a write submitted before it is not complete.
    pub(crate) fn fsync_must_wait(&self, seq: u64) -> bool {
        self.writes.range(..seq).next().is_some()
    }

    /// Write `seq` completed: the waiting fsyncs (front first, `seq_of` gives their ids)
    /// that no earlier write holds back any more, taken off the waiting queue.
    pub(crate) fn write_done(&mut self, seq: u64, seq_of: impl Fn(usize) -> u64) -> Vec<usize> {
        self.writes.remove(&seq);
        let mut ready = Vec::new();
        while let Some(&f) = self.fsyncs.front() {
            if self.fsync_must_wait(seq_of(f)) {
                break;
            }
            self.fsyncs.pop_front();
            ready.push(f);
        }
        ready
    }
}

/// Wakes a loop that sleeps in the kernel (io_uring) instead of on its channel.
pub(crate) trait KernelWake: Send + Sync {
    /// Called after every send; cheap when the loop is awake.
    fn notify(&self);
}

/// The sending side of the loop's channel, plus the kernel wake-up where the backend needs one.
pub(crate) struct LoopTx<C> {
    tx: Sender<LoopMsg<C>>,
    wake: Option<Arc<dyn KernelWake>>,
}

impl<C> Clone for LoopTx<C> {
    fn clone(&self) -> Self {
        LoopTx {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<C> LoopTx<C> {
    pub(crate) fn new(tx: Sender<LoopMsg<C>>, wake: Option<Arc<dyn KernelWake>>) -> Self {
        LoopTx { tx, wake }
    }

    // The message comes back on failure so a refused submission can return its buffer and
    // context; it is large (a whole request), and boxing it would cost an allocation per send.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send(&self, msg: LoopMsg<C>) -> Result<(), SendError<LoopMsg<C>>> {
        self.tx.send(msg)?;
        if let Some(w) = &self.wake {
            w.notify();
        }
        Ok(())
    }

    /// The plain channel sender (for the epoll poller, whose receiver sleeps on the channel).
    pub(crate) fn channel(&self) -> Sender<LoopMsg<C>> {
        self.tx.clone()
    }
}

/// Counters behind `Watcher::gc`.
#[derive(Default)]
pub(crate) struct GcCounters {
    pub(crate) found: AtomicU64,
    pub(crate) closed: AtomicU64,
}

/// How handles and slices reach the loop; holds only a sender (and a weak reference to the
/// epoll state), so it never keeps the loop alive.
pub(crate) struct LoopLink<C> {
    pub(crate) tx: LoopTx<C>,
    pub(crate) gc: Arc<GcCounters>,
    /// The epoll state, which the thread that drops a swap slice may serve itself.
    pub(crate) retry: std::sync::OnceLock<std::sync::Weak<dyn SwapRetry>>,
}

/// A backend state that the thread releasing swap space may serve on the spot.
pub(crate) trait SwapRetry: Send + Sync {
    /// Retries the reads that wait for swap space if the state is free right now; false if
    /// another thread holds it (the caller then sends [`LoopMsg::SwapReleased`]).
    fn try_retry(&self) -> bool;
}

impl<C: Send> ConnOwner for LoopLink<C> {
    fn conn_dropped(&self, id: ConnId) {
        self.gc.found.fetch_add(1, Ordering::Relaxed);
        // After close the loop is gone and the send fails; the fd was closed by the shutdown.
        let _ = self.tx.send(LoopMsg::Dropped(id));
    }
}

impl<C: Send> SwapOwner for LoopLink<C> {
    fn swap_released(&self) {
        // On epoll, serve the starved reads here rather than wake the loop thread for them:
        // the consumer dropping a slice is about to wait for exactly those results.
        if let Some(state) = self.retry.get().and_then(std::sync::Weak::upgrade) {
            if state.try_retry() {
                return;
            }
        }
        let _ = self.tx.send(LoopMsg::SwapReleased);
    }
}
