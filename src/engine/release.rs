//! How a connection ends: free, detach, the drop of its last handle, and close. Its requests
//! end with `ClosedPipe` front to back per direction; one in flight is cancelled and the rest
//! wait for its outcome; the descriptor closes (or goes back to a `detach`) only once nothing
//! of the connection is in the driver's hands.

use std::os::fd::OwnedFd;

use crossbeam_channel::Sender;

use super::{Driver, Engine};
use crate::conn::ConnId;
use crate::lane::Lane;
use crate::request::Ending;
use crate::Error;

impl<C: Send + 'static, D: Driver<C>> Engine<C, D> {
    /// `Watcher::free`.
    pub(crate) fn free(&mut self, id: ConnId) {
        if let Some(i) = self.table.index_of(id) {
            self.release(i);
        }
    }

    /// `Watcher::detach`: the descriptor goes to `reply` once nothing of it is in flight.
    pub(crate) fn detach(&mut self, id: ConnId, reply: Sender<Option<OwnedFd>>) {
        match self.table.index_of(id) {
            Some(i) if self.table.get(i).is_some_and(|s| !s.closing) => {
                if let Some(s) = self.table.get_mut(i) {
                    s.detach = Some(reply);
                }
                self.release(i);
            }
            _ => {
                let _ = reply.send(None);
            }
        }
    }

    /// Starts releasing connection `i`: no submitter starts a syscall on it from now on, and
    /// every request ends with `ClosedPipe`, front to back per direction; one in flight is
    /// cancelled first and those behind it end when it comes back. The descriptor closes (or
    /// goes to a `detach`) once nothing is in flight.
    pub(super) fn release(&mut self, i: usize) {
        let Some(s) = self.table.get_mut(i) else {
            return;
        };
        if s.closing {
            return;
        }
        s.closing = true;
        // No submitter starts a syscall on the descriptor from here on, and none is in one
        // (with no handle left, none can be).
        if let Some(shared) = s.handle.upgrade() {
            shared.lanes.close();
        }
        let files: Vec<usize> = s
            .file
            .iter()
            .flat_map(|f| f.pending.iter())
            .copied()
            .collect();
        for lane in [Lane::Read, Lane::Write] {
            self.end_queue(i, lane);
        }
        for key in files {
            if self.ops.contains(key) {
                self.end(key, Ending::ClosedPipe);
            }
        }
        self.finish_release(i);
    }

    /// Ends connection `i`'s `lane` queue front to back with `ClosedPipe`, stopping at a
    /// request in flight (cancelled; its outcome resumes this).
    pub(super) fn end_queue(&mut self, i: usize, lane: Lane) {
        while let Some(&key) = self.table.get_mut(i).and_then(|s| s.queue(lane).front()) {
            if self.ops[key].in_flight {
                self.end(key, Ending::ClosedPipe);
                return;
            }
            self.deliver(i, lane, key, None, Some(Error::ClosedPipe));
        }
    }

    /// Takes connection `i` out once it is released and nothing of it is in flight: the
    /// driver forgets the descriptor, which then goes to a waiting `detach` or closes, and
    /// the slot comes back under a new generation.
    pub(super) fn finish_release(&mut self, i: usize) {
        if !self.table.get(i).is_some_and(|s| s.closing && s.idle()) {
            return;
        }
        let Some(s) = self.table.take(i) else {
            return;
        };
        // Requests still pending (none should be) end here too.
        for key in s.keys() {
            if let Some(req) = self.ops.try_remove(key) {
                self.out.push(req.finish(None, Some(Error::ClosedPipe)));
            }
        }
        self.driver.forget(&s.fd);
        match s.detach {
            Some(reply) => {
                let _ = reply.send(Some(s.fd));
            }
            None => drop(s.fd),
        }
        // Only once the descriptor is closed (or handed back): the slot returns under a new
        // generation.
        self.ids.release(s.id);
    }

    /// `Close`: every connection is released; later submissions end with `ClosedPipe`. The
    /// driver must keep delivering outcomes until [`in_flight`](Engine::in_flight) is 0.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        for i in 0..self.table.len() {
            self.release(i);
        }
    }
}
