//! `Waker`: makes a blocked `wait_io*` return without I/O (mio's `Waker`, polling's `notify`).

use std::sync::Weak;

use crate::results::Notify;
use crate::{Error, Result};

/// Makes a blocked [`wait_io`](crate::Watcher::wait_io) (or
/// [`wait_io_timeout`](crate::Watcher::wait_io_timeout),
/// [`wait_io_into`](crate::Watcher::wait_io_into)) return, possibly with no result, from any
/// thread. Made by [`Watcher::waker`](crate::Watcher::waker); clone it freely (each clone
/// wakes the same watcher).
///
/// It follows mio's `Waker` and polling's `Poller::notify`:
/// - **Who wakes.** One `wait_io*` call that is blocked returns: one waiting on results (the
///   condition variable, every backend) or the one waiting in `epoll_wait` itself as the
///   leader (epoll, see [`Watcher`](crate::Watcher)), which the wake-up kicks out of the
///   kernel through the eventfd the queue already uses for results pushed from other threads.
///   It returns the results ready then, or none: an empty [`Batch`](crate::Batch), `Ok(0)`
///   from `wait_io_into`.
/// - **Sticky.** If no call is blocked, the next `wait_io*` returns at once instead. Any return
///   of a `wait_io*` consumes the wake-up, with or without results: several wakes before one
///   return collapse into one (as mio's eventfd counter, or polling's notified flag). So
///   publish your state first (a channel, an atomic), then `wake`, and look at that state after
///   every return of `wait_io*`.
/// - **No ownership.** A `Waker` holds a weak reference to the watcher's result queue: it keeps
///   no thread, descriptor or result of the watcher alive. After
///   [`close`](crate::Watcher::close), or once the watcher is dropped, `wake` fails and touches
///   no descriptor.
///
/// ```
/// use gaio::Watcher;
/// use std::time::Duration;
///
/// let w: Watcher<()> = Watcher::new()?;
/// let waker = w.waker();
/// let t = std::thread::spawn(move || waker.wake());
/// // Blocks until the other thread's wake-up (or a result) comes: no timeout needed.
/// let batch = w.wait_io()?;
/// assert!(batch.is_empty());
/// drop(batch);
/// t.join().unwrap()?;
///
/// // A wake-up with nobody waiting makes the next wait return at once.
/// let waker = w.waker();
/// waker.wake()?;
/// waker.wake()?; // collapses into the first
/// assert_eq!(w.wait_io_into(&mut Vec::new(), None)?, 0);
///
/// w.close()?;
/// assert!(matches!(waker.wake(), Err(gaio::Error::WatcherClosed)));
/// # Ok::<(), gaio::Error>(())
/// ```
#[derive(Clone)]
pub struct Waker {
    queue: Weak<dyn Notify>,
}

impl Waker {
    pub(crate) fn new(queue: Weak<dyn Notify>) -> Waker {
        Waker { queue }
    }

    /// Wakes one blocked `wait_io*` call of the watcher, or, if none is blocked, the next one
    /// (see [`Waker`]). Never blocks beyond a short lock of the result queue; costs one
    /// eventfd write when a consumer waits in `epoll_wait`, none otherwise.
    ///
    /// # Errors
    /// [`Error::WatcherClosed`] once the watcher is closed or dropped;
    /// [`Error::WatcherFailed`] if one of its threads failed (the reason `wait_io` reports).
    pub fn wake(&self) -> Result<()> {
        match self.queue.upgrade() {
            Some(q) => q.notify(),
            None => Err(Error::WatcherClosed),
        }
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker")
            .field("dropped", &(self.queue.strong_count() == 0))
            .finish()
    }
}
