//! What a watcher reports about itself: `GcStats` (Go's `GetGC`) and `SwapStats`, and the
//! counters behind them.

use std::sync::atomic::AtomicU64;

/// Counters of connections released because their last handle was dropped without
/// [`Watcher::free`](crate::Watcher::free). Go's `GetGC() (found, closed)`.
///
/// `#[non_exhaustive]`: counters may be added, so it cannot be built outside the crate; read
/// its fields (or compare with `GcStats::default()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GcStats {
    /// Connections whose last [`Conn`](crate::Conn) handle was dropped without `free`.
    pub found: u64,
    /// Of those, the ones the loop has released (descriptor closed). Equal to `found` once the
    /// loop has caught up.
    pub closed: u64,
}

/// What the swap buffers hold right now, from [`Watcher::swap_stats`](crate::Watcher::swap_stats). The same definition on
/// both backends.
///
/// `#[non_exhaustive]`: counters may be added, so it cannot be built outside the crate; read
/// its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SwapStats {
    /// Number of swap buffers. On io_uring: the entries of the provided buffer ring (the
    /// configured count rounded up to a power of two) plus one, the buffer that swap reads
    /// completing on the submitting thread use (see [`Watcher`](crate::Watcher); one is enough there, as a
    /// read that finds it held goes to the ring instead of waiting, and it keeps the memory a
    /// burst of connections touches down).
    pub buffers: usize,
    /// Bytes per swap buffer.
    pub buffer_size: usize,
    /// Buffers holding at least one live [`SwapSlice`](crate::SwapSlice). A read waiting for
    /// data holds none: an idle connection with a pending swap read costs no buffer.
    pub buffers_in_use: usize,
    /// Live [`SwapSlice`](crate::SwapSlice)s.
    pub slices_live: usize,
}

/// How datagrams went out and came in, from [`Watcher::datagram_stats`](crate::Watcher::datagram_stats): counts since the
/// watcher started.
///
/// `#[non_exhaustive]`: counters may be added, so it cannot be built outside the crate; read
/// its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DatagramStats {
    /// `recvmmsg`/`sendmmsg` calls made for queued `recv_from`s and `send_to`s (on epoll by
    /// the thread serving the socket; on io_uring by the ring thread, between the RECVMSG and
    /// SENDMSG SQEs of the requests that have to wait).
    pub batch_calls: u64,
    /// Datagrams those calls moved (received or sent). `batch_datagrams / batch_calls` is the
    /// average batch.
    pub batch_datagrams: u64,
}

/// Counters behind `Watcher::gc`, and the datagram batching counters behind
/// `Watcher::datagram_stats` (the engine holds one shared block of counters).
#[derive(Default)]
pub(crate) struct GcCounters {
    pub(crate) found: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) batch_calls: AtomicU64,
    pub(crate) batch_datagrams: AtomicU64,
}
