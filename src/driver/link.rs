//! How the submit side, connection handles and swap slices reach a backend's loop: the
//! channel (with the kernel wake-up io_uring needs), and the link handles report their last
//! drop and slices their release through. It holds only senders and weak references, so it
//! never keeps a loop alive.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crossbeam_channel::{SendError, Sender};

use crate::conn::{ConnId, ConnOwner};
use crate::engine::LoopMsg;
use crate::stats::GcCounters;
use crate::swap::SwapOwner;

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

    /// The plain channel sender (for the epoll file threads, whose receiver sleeps on the
    /// channel).
    pub(crate) fn channel(&self) -> Sender<LoopMsg<C>> {
        self.tx.clone()
    }
}

/// How handles and slices reach the loop; holds only a sender (and a weak reference to the
/// epoll engine), so it never keeps the loop alive.
pub(crate) struct LoopLink<C> {
    pub(crate) tx: LoopTx<C>,
    pub(crate) gc: Arc<GcCounters>,
    /// The epoll engine, which the thread that drops a swap slice may serve itself.
    pub(crate) retry: std::sync::OnceLock<Weak<dyn SwapRetry>>,
}

/// An engine that the thread releasing swap space may serve on the spot.
pub(crate) trait SwapRetry: Send + Sync {
    /// Retries the reads that wait for swap space if the engine is free right now; false if
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
        if let Some(state) = self.retry.get().and_then(Weak::upgrade) {
            if state.try_retry() {
                return;
            }
        }
        let _ = self.tx.send(LoopMsg::SwapReleased);
    }
}
