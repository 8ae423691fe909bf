//! The [`Builder`]: the watcher's settings, and the backend choice (`Backend::Auto` falls back
//! to epoll when io_uring cannot run).

use crate::backend::Backend;
use crate::watcher::Watcher;
use crate::{Error, Result};

/// Default size of one swap buffer, in bytes (Go's `defaultInternalBufferSize`).
pub const DEFAULT_SWAP_BUFFER_SIZE: usize = 64 * 1024;
/// Default number of swap buffers (Go rotates three).
pub const DEFAULT_SWAP_BUFFERS: usize = 3;
/// Default submission queue entries of the io_uring backend (its completion queue gets four
/// times as many).
pub const DEFAULT_RING_ENTRIES: u32 = 2048;
/// Most submission queue entries the kernel takes (`IORING_MAX_ENTRIES`).
pub const MAX_RING_ENTRIES: u32 = 32768;

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
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            swap_buffer_size: DEFAULT_SWAP_BUFFER_SIZE,
            swap_buffers: DEFAULT_SWAP_BUFFERS,
            backend: None,
            ring_entries: DEFAULT_RING_ENTRIES,
        }
    }
}

impl Builder {
    /// Size in bytes of each swap buffer (default 64 KiB). A read without a buffer receives at
    /// most this many bytes. Zero is refused by [`build`](Builder::build) with
    /// [`Error::InvalidArgument`]. Go's `NewWatcherSize(bufsize)`.
    pub fn swap_buffer_size(mut self, bytes: usize) -> Self {
        self.swap_buffer_size = bytes;
        self
    }

    /// Number of swap buffers (default 3; io_uring rounds it up to a power of two). More
    /// buffers let more swap-read data be held by undropped results before further swap reads
    /// wait. Zero is refused by
    /// [`build`](Builder::build).
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

    /// Starts the watcher's threads.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`]: a zero swap size or count, or an unknown `GAIO_BACKEND`;
    /// - [`Error::BackendUnavailable`]: [`Backend::Uring`] was asked for and io_uring cannot run
    ///   here; the text says why (kernel without io_uring, blocked by seccomp or
    ///   `kernel.io_uring_disabled`, memlock, a missing opcode or feature);
    /// - [`Error::Io`]: creating the poller, the wakeup or a thread failed (`EMFILE`, …).
    pub fn build<C: Send + 'static>(self) -> Result<Watcher<C>> {
        if self.swap_buffer_size == 0 || self.swap_buffer_size > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "swap_buffer_size {} (must be 1..=4 GiB)",
                self.swap_buffer_size
            )));
        }
        if self.swap_buffers == 0 {
            return Err(Error::InvalidArgument("swap_buffers 0".into()));
        }
        if self.ring_entries == 0 || self.ring_entries > MAX_RING_ENTRIES {
            return Err(Error::InvalidArgument(format!(
                "ring_entries {} (must be 1..={MAX_RING_ENTRIES})",
                self.ring_entries
            )));
        }
        let requested = match self.backend {
            Some(b) => b,
            None => Backend::from_env()?,
        };
        match requested {
            Backend::Epoll => self.start(Backend::Epoll),
            Backend::Uring => self.start(Backend::Uring),
            // io_uring where it can run; any reason it cannot (not built in, blocked by seccomp,
            // disabled by sysctl, memlock, a missing opcode) falls back to epoll.
            Backend::Auto => match self.start(Backend::Uring) {
                Err(Error::BackendUnavailable(_)) => self.start(Backend::Epoll),
                other => other,
            },
        }
    }

    fn start<C: Send + 'static>(&self, backend: Backend) -> Result<Watcher<C>> {
        let settings = crate::driver::Settings {
            swap_size: self.swap_buffer_size,
            swap_buffers: self.swap_buffers,
            ring_entries: self.ring_entries,
        };
        let parts = crate::driver::start(backend, &settings)?;
        Ok(Watcher::from_parts(backend, parts))
    }
}
