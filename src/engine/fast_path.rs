//! The submit-side fast path: a read or write whose direction has nothing pending is
//! attempted at once on the submitting thread (the claim words in `crate::lane` decide when),
//! with the same non-blocking syscalls and the same progress rule the engine uses. Finished
//! there, its result goes straight to the result queue and no thread is woken; only a request
//! that would block goes to the engine, keeping its progress.

use std::sync::Mutex;

use crate::request::{attempt, progress, Request, Step};
use crate::results::ResultQueue;
use crate::swap::SwapPool;

/// Runs `req` on this thread as far as it goes without blocking. Finished (data moved, EOF,
/// or an error), its result is queued and `None` comes back; otherwise the request, with its
/// progress, for the engine.
pub(crate) fn attempt_inline<C>(
    mut req: Request<C>,
    swap: &Mutex<SwapPool>,
    results: &ResultQueue<C>,
) -> Option<Request<C>> {
    let (fd, is_socket) = (req.conn.0.fd, req.conn.0.is_socket);
    loop {
        let outcome = attempt(fd, is_socket, &mut req, swap);
        match progress(&mut req, outcome) {
            Step::Done(slice, err) => {
                results.push_one(req.finish(slice, err));
                return None;
            }
            Step::Again => continue,
            // EAGAIN: `progress` marked it, so the engine waits for the next edge first.
            Step::WouldBlock => return Some(req),
            // No swap space: the data may be there; the engine must try.
            Step::Starve => return Some(req),
            // Accepts are never attempted inline (`Handle::inline_allowed`).
            Step::Accepted(_) => unreachable!("accept attempted inline"),
        }
    }
}
