//! The messages the loop threads take: from the submit side (watch, submit, free, cancel,
//! detach, close), from handles (the last `Conn` dropped, a swap slice released) and from
//! helper threads (an epoll file thread's outcome), and how the engine acts on each.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Weak;

use crossbeam_channel::Sender;

use super::{Driver, Engine};
use crate::conn::{ConnId, ConnShared};
use crate::op::OpId;
use crate::request::{Outcome, Request};

/// Everything the loop threads are told, by the submit side and by handles. One channel per
/// watcher carries it in order: a submission sent after a `Watch` (or before a `Free`) from
/// any thread is seen after (before) it.
pub(crate) enum LoopMsg<C> {
    /// A descriptor was taken over (and, on epoll, registered) under `id`. Sent on io_uring
    /// only (epoll's submit side hands it over under the engine's lock).
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    Watch {
        id: ConnId,
        fd: OwnedFd,
        is_socket: bool,
        /// The handles' shared part (see `crate::lane`).
        handle: Weak<ConnShared>,
    },
    /// A request (io_uring only, as `Watch`).
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    Submit(Request<C>),
    /// `Watcher::free`: end pending requests with `ClosedPipe`, close the descriptor.
    Free(ConnId),
    /// `Watcher::cancel`: end that request with `Canceled`; the reply says whether it was
    /// still pending.
    Cancel { id: OpId, reply: Sender<bool> },
    /// `Watcher::detach`: as `Free`, but hand the descriptor back instead of closing it
    /// (`None` if the connection was already gone).
    Detach {
        id: ConnId,
        reply: Sender<Option<OwnedFd>>,
    },
    /// The last handle of a never-freed connection was dropped.
    Dropped(ConnId),
    /// A request was queued with a deadline earlier than the loop's planned wake-up:
    /// recompute the sleep.
    Tick,
    /// A request the driver handed to a helper thread (an epoll file thread) came back.
    Completed {
        key: usize,
        seq: u64,
        outcome: Outcome,
    },
    /// A swap slice was dropped while reads were waiting for swap space.
    SwapReleased,
    /// The last cork on a connection ended (io_uring; epoll's submit side serves it under
    /// the engine's lock): start the requests it held back.
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    Uncork(ConnId),
    /// A helper thread (an epoll file thread) failed: fail the watcher (`Engine::fail`).
    Failed(String),
    /// Shut down: end everything pending with `ClosedPipe`, close every descriptor.
    Close,
}

impl<C: Send + 'static, D: Driver<C>> Engine<C, D> {
    /// Handles one message; false means shut down (`Close`).
    pub(crate) fn handle(&mut self, msg: LoopMsg<C>) -> bool {
        match msg {
            LoopMsg::Watch {
                id,
                fd,
                is_socket,
                handle,
            } => self.watch(id, fd, is_socket, handle),
            LoopMsg::Submit(req) => {
                self.submit(req);
            }
            LoopMsg::Free(id) => self.free(id),
            LoopMsg::Dropped(id) => {
                // Released now, or already by `Close` (a handle dropped after it).
                if let Some(i) = self.table.index_of(id) {
                    self.release(i);
                }
                self.gc.closed.fetch_add(1, Ordering::Relaxed);
            }
            LoopMsg::Cancel { id, reply } => {
                let _ = reply.send(self.cancel(id));
            }
            LoopMsg::Detach { id, reply } => self.detach(id, reply),
            LoopMsg::Completed { key, seq, outcome } => {
                if self.in_flight_request(key).is_some_and(|r| r.id.seq == seq) {
                    self.complete(key, outcome);
                }
            }
            LoopMsg::SwapReleased => self.retry_starved(),
            LoopMsg::Uncork(id) => self.uncorked(id),
            LoopMsg::Tick => {}
            LoopMsg::Failed(why) => self.fail(why),
            LoopMsg::Close => {
                self.close();
                return false;
            }
        }
        true
    }
}
