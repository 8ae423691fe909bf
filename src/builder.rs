//! The [`Builder`]: the watcher's settings, and the backend choice (`Backend::Auto` falls back
//! to epoll when io_uring cannot run).

use crate::backend::Backend;
use crate::watcher::Watcher;
use crate::{Error, Result};
use std::time::Duration;

/// Default size of one swap buffer, in bytes (Go's `defaultInternalBufferSize`).
pub const DEFAULT_SWAP_BUFFER_SIZE: usize = 64 * 1024;
/// Default number of swap buffers (Go rotates three).
pub const DEFAULT_SWAP_BUFFERS: usize = 3;
/// The largest [`Builder::swap_buffer_size`], in bytes: `i32::MAX` (2 GiB − 1). io_uring's
/// RECV refuses a length above `i32::MAX` (`EINVAL`), and Linux moves at most
/// 2 GiB − 4 KiB (`MAX_RW_COUNT`) in one read on either backend, so a larger swap buffer could
/// never be filled.
pub const MAX_SWAP_BUFFER_SIZE: usize = i32::MAX as usize;

/// The largest [`Builder::swap_buffers`]: 32768, the most entries io_uring's provided buffer
/// ring takes (a power of two, so io_uring's rounding up never goes beyond it).
pub const MAX_SWAP_BUFFERS: usize = 32768;

/// The largest [`Builder::swap_buffer_size`] × [`Builder::swap_buffers`], in bytes: 1 TiB. The
/// swap buffers are allocated (reserved, not touched) when the watcher is built, and an
/// allocation the system refuses ends the process (Rust's allocator aborts) instead of
/// returning an error, so the builder refuses totals no machine should be asked to map.
/// io_uring reserves up to about twice the total (the count rounded up to a power of two, plus
/// one buffer).
pub const MAX_SWAP_TOTAL: usize = 1 << 40;

/// Default submission queue entries of the io_uring backend (its completion queue gets four
/// times as many).
pub const DEFAULT_RING_ENTRIES: u32 = 2048;
/// Most submission queue entries the kernel takes (`IORING_MAX_ENTRIES`).
pub const MAX_RING_ENTRIES: u32 = 32768;

/// The longest spin [`Builder::busy_poll`] takes: 1 second.
pub const MAX_BUSY_POLL: Duration = Duration::from_secs(1);

/// Configures and starts a [`Watcher`]. Obtain one with [`Watcher::builder`].
///
/// ```
/// use gaio::{Backend, Watcher};
/// let w: Watcher<u64> = Watcher::builder()
///     .swap_buffer_size(1 << 20)
///     .backend(Backend::Epoll)
///     .build()?;
/// assert_eq!(w.backend(), Backend::Epoll);
/// # Ok::<(), gaio::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    swap_buffer_size: usize,
    swap_buffers: usize,
    backend: Option<Backend>,
    ring_entries: u32,
    busy_poll: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            swap_buffer_size: DEFAULT_SWAP_BUFFER_SIZE,
            swap_buffers: DEFAULT_SWAP_BUFFERS,
            backend: None,
            ring_entries: DEFAULT_RING_ENTRIES,
            busy_poll: Duration::ZERO,
        }
    }
}

impl Builder {
    /// Size in bytes of each swap buffer (default 64 KiB). A read without a buffer receives at
    /// most this many bytes. [`build`](Builder::build) refuses, with
    /// [`Error::InvalidArgument`], zero, a size above [`MAX_SWAP_BUFFER_SIZE`] (`i32::MAX`,
    /// the largest length both backends can receive in one call) and a total
    /// (size × [`swap_buffers`](Builder::swap_buffers)) above [`MAX_SWAP_TOTAL`]. Go's
    /// `NewWatcherSize(bufsize)`.
    pub fn swap_buffer_size(mut self, bytes: usize) -> Self {
        self.swap_buffer_size = bytes;
        self
    }

    /// Number of swap buffers (default 3). More buffers let more swap-read data be held by
    /// undropped results before further swap reads wait. [`build`](Builder::build) refuses,
    /// with [`Error::InvalidArgument`], zero, a count above [`MAX_SWAP_BUFFERS`] (32768, the
    /// most io_uring's buffer ring takes) and a total above [`MAX_SWAP_TOTAL`], the same on
    /// both backends. io_uring rounds the count up to a power of two (3 becomes 4; at most
    /// 32768) and adds one buffer for the submitting thread (see
    /// [`SwapStats::buffers`](crate::SwapStats::buffers)); epoll uses the count as given.
    pub fn swap_buffers(mut self, count: usize) -> Self {
        self.swap_buffers = count;
        self
    }

    /// The backend to use, overriding `GAIO_BACKEND`. Without this call the builder reads
    /// `GAIO_BACKEND` (`epoll`, `uring` or `auto`; unset means `auto`).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Submission queue entries of the io_uring ring (default [`DEFAULT_RING_ENTRIES`]; the
    /// kernel rounds it up to a power of two; the completion queue gets four times as many,
    /// within the kernel's limit). A small ring only costs more `io_uring_enter` calls: a full
    /// submission queue is submitted and a full completion queue drained before an SQE is
    /// pushed, so no request is lost or refused for lack of room. The epoll backend has no
    /// ring and ignores it. Zero or more than [`MAX_RING_ENTRIES`] is refused by
    /// [`build`](Builder::build) with [`Error::InvalidArgument`], on both backends.
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.ring_entries = entries;
        self
    }

    /// The low-latency mode: a `wait_io*` that finds no result spins for up to `spin` before
    /// it sleeps, checking for results (on epoll, a consumer leading polls readiness with a
    /// zero-timeout `epoll_wait` each turn; on io_uring the ring thread also spins on its
    /// completion queue, running the kernel's deferred task work, before it sleeps in
    /// `io_uring_enter`). It trades CPU for latency: a result that arrives during the spin is
    /// taken without the sleep and wake-up of a thread (a futex or an eventfd and a context
    /// switch), at the cost of up to one core per spinning thread (the caller's, and on
    /// io_uring the ring thread) while there is nothing to do: on a machine whose cores are
    /// all busy (the benches' 2-core machine, client included) the spin takes CPU from the
    /// work it waits for and makes latency worse, so measure before turning it on. Each
    /// watched or accepted socket also gets `SO_BUSY_POLL` of the same time in µs where the
    /// kernel allows it (refusals are ignored). That is the socket itself, shared with the
    /// caller's descriptor [`watch`](crate::Watcher::watch) duplicated, so the option stays
    /// after [`free`](crate::Watcher::free); it only matters for devices with NAPI (not
    /// loopback) and for blocking receives, and epoll's own busy polling follows the
    /// `net.core.busy_poll` sysctl instead. Go's gaio has no such mode.
    ///
    /// Default zero: no spin. A `wait_io_timeout` never spins past its timeout. More than
    /// [`MAX_BUSY_POLL`] is refused by [`build`](Builder::build) with
    /// [`Error::InvalidArgument`], on both backends.
    pub fn busy_poll(mut self, spin: Duration) -> Self {
        self.busy_poll = spin;
        self
    }

    /// Starts the watcher's threads.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`], naming the value: a
    ///   [`swap_buffer_size`](Builder::swap_buffer_size) of 0 or above
    ///   [`MAX_SWAP_BUFFER_SIZE`] (`i32::MAX` bytes), a [`swap_buffers`](Builder::swap_buffers)
    ///   of 0 or above [`MAX_SWAP_BUFFERS`] (32768), a product of the two above
    ///   [`MAX_SWAP_TOTAL`] (1 TiB), a [`ring_entries`](Builder::ring_entries) of 0 or above
    ///   [`MAX_RING_ENTRIES`], a [`busy_poll`](Builder::busy_poll) above [`MAX_BUSY_POLL`], the
    ///   same on both backends; or an unknown `GAIO_BACKEND`;
    /// - [`Error::BackendUnavailable`]: [`Backend::Uring`] was asked for and io_uring cannot run
    ///   here; the text says why (kernel without io_uring, blocked by seccomp or
    ///   `kernel.io_uring_disabled`, memlock, a missing opcode or feature);
    /// - [`Error::Io`]: creating the poller, the wakeup or a thread failed (`EMFILE`, …).
    pub fn build<C: Send + 'static>(self) -> Result<Watcher<C>> {
        self.validate()?;
        let requested = match self.backend {
            Some(b) => b,
            None => Backend::from_env()?,
        };
        let built = match requested {
            Backend::Epoll => self.start(Backend::Epoll),
            Backend::Uring => self.start(Backend::Uring),
            // io_uring where it can run; any reason it cannot (not built in, blocked by seccomp,
            // disabled by sysctl, memlock, a missing opcode) falls back to epoll.
            Backend::Auto => match self.start(Backend::Uring) {
                Err(Error::BackendUnavailable(why)) => {
                    log_info!("backend auto: io_uring unavailable ({why}); using epoll");
                    self.start(Backend::Epoll)
                }
                other => other,
            },
        };
        match &built {
            Ok(w) => log_debug!(
                "watcher started on {} (asked for {requested}; swap buffers {} x {} bytes)",
                w.backend(),
                self.swap_buffers,
                self.swap_buffer_size
            ),
            Err(e) => log_debug!("watcher not started (asked for {requested}): {e}"),
        }
        built
    }

    /// Checks the settings against the limits both backends honour, before anything starts,
    /// so that every value gives a working watcher or `InvalidArgument` (the errors
    /// [`build`](Builder::build) lists), the same on both backends. The backend setting needs
    /// no check: every [`Backend`] value is valid (an unavailable one is reported by `build`).
    fn validate(&self) -> Result<()> {
        let (size, count) = (self.swap_buffer_size, self.swap_buffers);
        if size == 0 || size > MAX_SWAP_BUFFER_SIZE {
            return Err(Error::InvalidArgument(format!(
                "swap_buffer_size {size} (must be 1..={MAX_SWAP_BUFFER_SIZE} bytes)"
            )));
        }
        if count == 0 || count > MAX_SWAP_BUFFERS {
            return Err(Error::InvalidArgument(format!(
                "swap_buffers {count} (must be 1..={MAX_SWAP_BUFFERS})"
            )));
        }
        // Both are bounded above, so the product cannot overflow a 64-bit usize.
        if size * count > MAX_SWAP_TOTAL {
            return Err(Error::InvalidArgument(format!(
                "swap_buffer_size {size} x swap_buffers {count} = {} bytes (must be at most \
                 {MAX_SWAP_TOTAL})",
                size * count
            )));
        }
        if self.ring_entries == 0 || self.ring_entries > MAX_RING_ENTRIES {
            return Err(Error::InvalidArgument(format!(
                "ring_entries {} (must be 1..={MAX_RING_ENTRIES})",
                self.ring_entries
            )));
        }
        if self.busy_poll > MAX_BUSY_POLL {
            return Err(Error::InvalidArgument(format!(
                "busy_poll {:?} (must be at most {MAX_BUSY_POLL:?})",
                self.busy_poll
            )));
        }
        Ok(())
    }

    fn start<C: Send + 'static>(&self, backend: Backend) -> Result<Watcher<C>> {
        let settings = crate::driver::Settings {
            swap_size: self.swap_buffer_size,
            swap_buffers: self.swap_buffers,
            ring_entries: self.ring_entries,
            busy_poll: self.busy_poll,
        };
        let parts = crate::driver::start(backend, &settings)?;
        Ok(Watcher::from_parts(backend, parts))
    }
}
