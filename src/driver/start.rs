//! Starting a backend: the channel, the result queue, the swap buffers and the thread slots
//! both drivers share, then the driver's own threads and engine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::epoll;
use super::failure::Failpoints;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
use super::link::KernelWake;
use super::link::{LoopLink, LoopTx};
#[cfg(all(target_os = "linux", feature = "io-uring"))]
use super::uring;
use super::Handle;
use crate::affinity::ThreadSlot;
use crate::backend::Backend;
use crate::conn::{ConnOwner, IdAllocator};
use crate::engine::LoopMsg;
use crate::results::ResultQueue;
use crate::stats::GcCounters;
use crate::swap::SwapPool;
use crate::Error;

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
    /// `SO_BUSY_POLL` for every socket the watcher takes over (0: not set).
    pub(crate) busy_poll_us: u32,
    pub(crate) loop_slot: Arc<ThreadSlot>,
    pub(crate) poller_slot: Arc<ThreadSlot>,
    pub(crate) threads: Vec<JoinHandle<()>>,
    /// The test hook that makes a backend thread fail.
    pub(crate) failpoints: Arc<Failpoints>,
}

static NEXT_WATCHER: AtomicU64 = AtomicU64::new(1);

/// The builder's settings, checked.
#[derive(Clone, Copy)]
pub(crate) struct Settings {
    /// Bytes per swap buffer.
    pub(crate) swap_size: usize,
    /// Swap buffers (io_uring rounds the ring's count up to a power of two).
    pub(crate) swap_buffers: usize,
    /// io_uring submission queue entries.
    pub(crate) ring_entries: u32,
    /// How long a waiting thread spins before it sleeps (`Builder::busy_poll`).
    pub(crate) busy_poll: std::time::Duration,
}

/// Starts `backend` (`Epoll` or `Uring`; `Auto` is the builder's to resolve) with `settings`:
/// its threads, its engine, and what the submit side shares with them.
pub(crate) fn start<C: Send + 'static>(
    backend: Backend,
    settings: &Settings,
) -> crate::Result<Parts<C>> {
    let Settings {
        swap_size,
        swap_buffers,
        ring_entries,
        busy_poll,
    } = *settings;
    let (chan, rx) = crossbeam_channel::unbounded();
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    let ring_wake = match backend {
        Backend::Uring => Some(Arc::new(uring::RingWake::new()?)),
        _ => None,
    };
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    let wake = ring_wake.clone().map(|w| w as Arc<dyn KernelWake>);
    #[cfg(not(all(target_os = "linux", feature = "io-uring")))]
    let wake = None;
    let tx = LoopTx::new(chan, wake);
    let gc = Arc::new(GcCounters::default());
    let link = Arc::new(LoopLink {
        tx: tx.clone(),
        gc: gc.clone(),
        retry: std::sync::OnceLock::new(),
    });
    let results = Arc::new(ResultQueue::new(busy_poll));
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
    let failpoints = Arc::new(Failpoints::default());
    let watcher_id = NEXT_WATCHER.fetch_add(1, Ordering::Relaxed);
    let core = Core {
        watcher_id,
        owner: link.clone(),
        tx: tx.clone(),
        rx,
        swap_size,
        swap_count: buffers,
        ring_entries,
        busy_poll,
        swap: swap.clone(),
        swap_pool: swap_pool.clone(),
        results: results.clone(),
        ids: ids.clone(),
        gc: gc.clone(),
        loop_slot: loop_slot.clone(),
        poller_slot: poller_slot.clone(),
        failpoints: failpoints.clone(),
    };
    let (driver, threads) = match backend {
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
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
        #[cfg(all(target_os = "linux", not(feature = "io-uring")))]
        Backend::Uring => {
            return Err(Error::BackendUnavailable(
                crate::backend::NOT_COMPILED_IN.into(),
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
        busy_poll_us: crate::sys::fd::busy_poll_us(busy_poll),
        loop_slot,
        poller_slot,
        threads,
        failpoints,
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
    /// Bytes per swap buffer and number of buffers, as configured (io_uring's buffer ring;
    /// epoll's buffers are the submit side's `swap_pool`).
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) swap_size: usize,
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) swap_count: usize,
    /// io_uring submission queue entries.
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) ring_entries: u32,
    /// How long the ring thread spins on its completion queue before it sleeps.
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) busy_poll: std::time::Duration,
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) swap: Arc<crate::swap::Shared>,
    /// The swap buffers of the submit side's fast path; the epoll driver reads into them too.
    pub(crate) swap_pool: Arc<std::sync::Mutex<crate::swap::SwapPool>>,
    pub(crate) results: Arc<crate::results::ResultQueue<C>>,
    pub(crate) ids: Arc<crate::conn::IdAllocator>,
    pub(crate) gc: Arc<GcCounters>,
    pub(crate) loop_slot: Arc<crate::affinity::ThreadSlot>,
    pub(crate) poller_slot: Arc<crate::affinity::ThreadSlot>,
    /// The test hook that makes a backend thread fail.
    pub(crate) failpoints: Arc<Failpoints>,
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
                busy_poll_us: crate::sys::fd::busy_poll_us(self.busy_poll),
            },
        )
    }
}
