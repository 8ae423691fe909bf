//! The backends: each a thin driver of the engine (`crate::engine`) that starts requests,
//! reports what came back and does its own waiting (`epoll/`: epoll_wait with leader/follower
//! consumers and a poller thread; `uring/`: one ring thread that submits and reaps). The front
//! end (`crate::watcher`) reaches whichever runs through [`Handle`] and its methods only.

pub(crate) mod epoll;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use crate::affinity::ThreadSlot;
use crate::backend::Backend;
use crate::conn::IdAllocator;
use crate::results::ResultQueue;
use crate::swap::SwapPool;
use crate::Error;

use crossbeam_channel::{SendError, Sender};

use crate::conn::{ConnId, ConnOwner, ConnShared};
use crate::engine::LoopMsg;
use crate::request::Request;
use crate::swap::SwapOwner;

/// The submit side's handle on whichever backend runs.
pub(crate) enum Handle<C> {
    Epoll(epoll::Epoll<C>),
    #[cfg(target_os = "linux")]
    Uring(Arc<uring::RingWake>),
}

impl<C: Send + 'static> Handle<C> {
    /// Registers a taken-over descriptor under `id` (readiness backends; a no-op elsewhere).
    pub(crate) fn register(&self, fd: RawFd, id: ConnId) -> crate::Result<()> {
        match self {
            Handle::Epoll(e) => e.register(fd, id),
            #[cfg(target_os = "linux")]
            Handle::Uring(_) => {
                let _ = (fd, id);
                Ok(())
            }
        }
    }

    /// Hands a taken-over descriptor to the engine (epoll: under its lock, on this thread, so
    /// a request submitted right after finds it; io_uring: through the channel, ahead of any
    /// request on it). Refused only once the watcher is closed.
    pub(crate) fn watch(
        &self,
        tx: &LoopTx<C>,
        id: ConnId,
        fd: OwnedFd,
        is_socket: bool,
        handle: Weak<ConnShared>,
    ) -> Result<(), ()> {
        match self {
            Handle::Epoll(e) => {
                e.watch(id, fd, is_socket, handle);
                Ok(())
            }
            #[cfg(target_os = "linux")]
            Handle::Uring(_) => tx
                .send(LoopMsg::Watch {
                    id,
                    fd,
                    is_socket,
                    handle,
                })
                .map_err(|_| ()),
        }
    }

    /// Hands a request to the engine (epoll: on this thread, under its lock; io_uring: over
    /// the channel to the ring thread); a refusal gives it back.
    pub(crate) fn submit(&self, tx: &LoopTx<C>, req: Request<C>) -> Result<(), Request<C>> {
        match self {
            Handle::Epoll(e) => {
                e.submit(req);
                Ok(())
            }
            #[cfg(target_os = "linux")]
            Handle::Uring(_) => tx.send(LoopMsg::Submit(req)).map_err(|e| match e.0 {
                LoopMsg::Submit(req) => req,
                _ => unreachable!("sent a Submit"),
            }),
        }
    }

    /// The blocking mode taken-over descriptors get: non-blocking for readiness (every
    /// attempt must return EAGAIN rather than block), blocking for io_uring (the kernel then
    /// arms its internal poll instead of handing EAGAIN back).
    pub(crate) fn nonblocking(&self) -> bool {
        match self {
            Handle::Epoll(_) => true,
            #[cfg(target_os = "linux")]
            Handle::Uring(_) => false,
        }
    }

    /// Whether `req` may be attempted on the submitting thread (`crate::engine::fast_path`):
    /// plain reads (caller buffer or swap), full reads and writes. On io_uring only sockets
    /// qualify: other descriptors are in blocking mode there, and only sockets take
    /// `MSG_DONTWAIT`.
    pub(crate) fn inline_allowed(&self, req: &Request<C>) -> bool {
        use crate::request::Kind;
        if !matches!(req.kind, Kind::Read | Kind::ReadFull | Kind::Write) {
            return false;
        }
        match self {
            Handle::Epoll(_) => true,
            #[cfg(target_os = "linux")]
            Handle::Uring(_) => req.conn.0.is_socket,
        }
    }

    /// The leader/follower hook of `wait_io`, where the backend has one.
    pub(crate) fn lead(&self) -> Option<Arc<dyn crate::results::Lead>> {
        match self {
            Handle::Epoll(e) => e.lead(),
            #[cfg(target_os = "linux")]
            Handle::Uring(_) => None,
        }
    }

    /// After the backend's threads are joined: close what handles may still point at.
    pub(crate) fn finish(&self) {
        match self {
            Handle::Epoll(e) => e.finish(),
            #[cfg(target_os = "linux")]
            Handle::Uring(w) => w.close(),
        }
    }

    /// Interrupts the backend's kernel wait so its threads see `Close`.
    pub(crate) fn shutdown(&self) {
        match self {
            Handle::Epoll(e) => e.shutdown(),
            #[cfg(target_os = "linux")]
            Handle::Uring(w) => w.force(),
        }
    }
}

/// Everything a running watcher holds of its backend, from [`start`].
pub(crate) struct Parts<C> {
    pub(crate) watcher_id: u64,
    pub(crate) handle: Handle<C>,
    pub(crate) tx: LoopTx<C>,
    pub(crate) link: Arc<LoopLink<C>>,
    pub(crate) results: Arc<ResultQueue<C>>,
    pub(crate) ids: Arc<IdAllocator>,
    pub(crate) gc: Arc<GcCounters>,
    pub(crate) swap: Arc<crate::swap::Shared>,
    pub(crate) swap_pool: Arc<Mutex<SwapPool>>,
    /// Swap buffers in all (on io_uring the ring's entries plus the submit side's).
    pub(crate) swap_buffers: usize,
    pub(crate) swap_size: usize,
    pub(crate) loop_slot: Arc<ThreadSlot>,
    pub(crate) poller_slot: Arc<ThreadSlot>,
    pub(crate) threads: Vec<JoinHandle<()>>,
}

static NEXT_WATCHER: AtomicU64 = AtomicU64::new(1);

/// Starts `backend` (`Epoll` or `Uring`; `Auto` is the builder's to resolve) with
/// `swap_buffers` swap buffers of `swap_size` bytes: its threads, its engine, and what the
/// submit side shares with them.
pub(crate) fn start<C: Send + 'static>(
    backend: Backend,
    swap_size: usize,
    swap_buffers: usize,
) -> crate::Result<Parts<C>> {
    let (chan, rx) = crossbeam_channel::unbounded();
    #[cfg(target_os = "linux")]
    let ring_wake = match backend {
        Backend::Uring => Some(Arc::new(uring::RingWake::new()?)),
        _ => None,
    };
    #[cfg(target_os = "linux")]
    let wake = ring_wake.clone().map(|w| w as Arc<dyn KernelWake>);
    #[cfg(not(target_os = "linux"))]
    let wake = None;
    let tx = LoopTx::new(chan, wake);
    let gc = Arc::new(GcCounters::default());
    let link = Arc::new(LoopLink {
        tx: tx.clone(),
        gc: gc.clone(),
        retry: std::sync::OnceLock::new(),
    });
    let results = Arc::new(ResultQueue::new());
    let ids = Arc::new(IdAllocator::default());
    let loop_slot = Arc::new(ThreadSlot::default());
    // One thread does both jobs on io_uring: both affinity calls pin it.
    let poller_slot = match backend {
        Backend::Uring => loop_slot.clone(),
        _ => Arc::new(ThreadSlot::default()),
    };
    let swap = crate::swap::Shared::new(link.clone());
    // io_uring's buffer ring needs a power-of-two entry count.
    let buffers = match backend {
        Backend::Uring => swap_buffers.clamp(1, 32768).next_power_of_two(),
        _ => swap_buffers,
    };
    // The swap buffers the submit side's fast path reads into (`crate::lane`); on epoll the
    // loop reads into the same ones. Untouched pages cost no memory.
    // On io_uring the ring holds the swap buffers proper; a swap read attempted on the
    // submitting thread that finds this one buffer held goes to the ring.
    let inline_buffers = match backend {
        Backend::Uring => 1,
        _ => swap_buffers,
    };
    let swap_pool = Arc::new(Mutex::new(SwapPool::new(
        swap_size,
        inline_buffers,
        swap.clone(),
    )));
    let watcher_id = NEXT_WATCHER.fetch_add(1, Ordering::Relaxed);
    let core = Core {
        watcher_id,
        owner: link.clone(),
        tx: tx.clone(),
        rx,
        swap_size,
        swap_count: buffers,
        swap: swap.clone(),
        swap_pool: swap_pool.clone(),
        results: results.clone(),
        ids: ids.clone(),
        gc: gc.clone(),
        loop_slot: loop_slot.clone(),
        poller_slot: poller_slot.clone(),
    };
    let (driver, threads) = match backend {
        #[cfg(target_os = "linux")]
        Backend::Uring => {
            let wake = ring_wake.ok_or_else(|| Error::BackendUnavailable("no wake".into()))?;
            let t = uring::start(core, wake.clone())?;
            (Handle::Uring(wake), t)
        }
        #[cfg(not(target_os = "linux"))]
        Backend::Uring => {
            return Err(Error::BackendUnavailable(
                "io_uring exists only on Linux".into(),
            ))
        }
        Backend::Epoll | Backend::Auto => {
            let (d, t) = epoll::start(core)?;
            let _ = link.retry.set(d.swap_retry());
            (Handle::Epoll(d), t)
        }
    };
    Ok(Parts {
        watcher_id,
        handle: driver,
        tx,
        link,
        results,
        ids,
        gc,
        swap,
        swap_pool,
        swap_buffers: match backend {
            // The ring's entries plus the submit side's buffer.
            Backend::Uring => buffers + inline_buffers,
            _ => buffers,
        },
        swap_size,
        loop_slot,
        poller_slot,
        threads,
    })
}

/// What the watcher hands a backend to start with.
pub(crate) struct Core<C> {
    /// The watcher's identity, for connections the engine creates (accept).
    pub(crate) watcher_id: u64,
    /// What those connections report their last drop to.
    pub(crate) owner: Arc<dyn ConnOwner>,
    pub(crate) tx: LoopTx<C>,
    pub(crate) rx: crossbeam_channel::Receiver<LoopMsg<C>>,
    /// Bytes per swap buffer and number of buffers, as configured.
    pub(crate) swap_size: usize,
    pub(crate) swap_count: usize,
    pub(crate) swap: Arc<crate::swap::Shared>,
    /// The swap buffers of the submit side's fast path; the epoll driver reads into them too.
    pub(crate) swap_pool: Arc<std::sync::Mutex<crate::swap::SwapPool>>,
    pub(crate) results: Arc<crate::results::ResultQueue<C>>,
    pub(crate) ids: Arc<crate::conn::IdAllocator>,
    pub(crate) gc: Arc<GcCounters>,
    pub(crate) loop_slot: Arc<crate::affinity::ThreadSlot>,
    pub(crate) poller_slot: Arc<crate::affinity::ThreadSlot>,
}

impl<C: Send + 'static> Core<C> {
    /// The engine over `driver`, with this core's shared parts.
    pub(crate) fn engine<D: crate::engine::Driver<C>>(
        &self,
        driver: D,
    ) -> crate::engine::Engine<C, D> {
        crate::engine::Engine::new(
            driver,
            self.results.clone(),
            self.ids.clone(),
            self.gc.clone(),
            crate::engine::ConnMaker {
                watcher_id: self.watcher_id,
                owner: self.owner.clone(),
            },
        )
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

    /// The plain channel sender (for the epoll file threads, whose receiver sleeps on the
    /// channel).
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
