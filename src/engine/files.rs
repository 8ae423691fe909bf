//! File requests in the engine: they run side by side (not in the FIFO queues), and an fsync
//! waits for the `write_at`s submitted before it on the same file (the barrier an IO_LINK chain
//! would give on io_uring, kept in userspace so it holds on both backends).

use std::collections::{BTreeSet, VecDeque};

use super::{Driver, Engine, Start};
use crate::request::{progress, Kind, Outcome, Step};
use crate::Error;

/// What a connection needs only once it takes file requests: kept behind a `Box` so the
/// sockets of a server with tens of thousands of connections do not pay for it.
#[derive(Default)]
pub(crate) struct FileState {
    /// Pending file requests (slab keys).
    pub(crate) pending: Vec<usize>,
    /// Ids of the `write_at`s not yet complete, for the barrier.
    writes: BTreeSet<u64>,
    /// `fsync`s waiting for earlier writes.
    fsyncs: VecDeque<usize>,
    /// File requests in the driver's hands (in the kernel, or on a file thread): the
    /// descriptor must stay open until they return.
    pub(crate) in_flight: usize,
}

impl FileState {
    /// An fsync with id `seq` must wait while a write submitted before it is not complete.
    fn fsync_must_wait(&self, seq: u64) -> bool {
        self.writes.range(..seq).next().is_some()
    }
}

impl<C: Send + 'static, D: Driver<C>> Engine<C, D> {
    /// A new file request `key` on file `i`: reads and writes start at once; an fsync starts
    /// once no earlier write is pending.
    pub(super) fn file_submit(&mut self, i: usize, key: usize) {
        let (kind, seq) = (self.ops[key].kind, self.ops[key].id.seq);
        let Some(s) = self.table.get_mut(i) else {
            return;
        };
        let f = s.files();
        f.pending.push(key);
        match kind {
            Kind::WriteAt => {
                f.writes.insert(seq);
            }
            Kind::Fsync | Kind::Fdatasync if f.fsync_must_wait(seq) => {
                f.fsyncs.push_back(key);
                return;
            }
            _ => {}
        }
        self.file_start(i, key);
    }

    /// Starts (or continues) file request `key` until it is in the driver's hands or done.
    fn file_start(&mut self, i: usize, key: usize) {
        loop {
            let Some(s) = self.table.get_mut(i) else {
                return;
            };
            if s.closing {
                return self.file_finish(i, key, Some(Error::ClosedPipe));
            }
            let fd = std::os::fd::AsRawFd::as_raw_fd(&s.fd);
            let req = &mut self.ops[key];
            match self.driver.start_file(key, fd, req) {
                Start::InFlight => {
                    req.in_flight = true;
                    s.files().in_flight += 1;
                    self.in_flight += 1;
                    return;
                }
                Start::Done(outcome) => {
                    if !self.file_step(i, key, outcome) {
                        return;
                    }
                }
            }
        }
    }

    /// Applies an outcome to file request `key`; true when it must be started again.
    fn file_step(&mut self, i: usize, key: usize, outcome: Outcome) -> bool {
        match progress(&mut self.ops[key], outcome) {
            Step::Done(_, err) => {
                self.file_finish(i, key, err);
                false
            }
            Step::Again | Step::WouldBlock => true,
            // Neither swap reads nor accepts are file requests.
            Step::Starve | Step::Accepted(_) => {
                self.file_finish(i, key, Some(Error::Unsupported));
                false
            }
        }
    }

    /// The driver reports the outcome of file request `key`, which it had.
    pub(super) fn file_complete(&mut self, i: usize, key: usize, outcome: Outcome) {
        if let Some(s) = self.table.get_mut(i) {
            s.files().in_flight -= 1;
        }
        if self.file_step(i, key, outcome) {
            self.file_start(i, key);
        }
    }

    /// Delivers file request `key`; a finished write may let waiting fsyncs go; a release
    /// that waited for it finishes.
    pub(super) fn file_finish(&mut self, i: usize, key: usize, err: Option<Error>) {
        let req = self.ops.remove(key);
        let (seq, was_write) = (req.id.seq, req.kind == Kind::WriteAt);
        self.out.push(req.finish(None, err));
        let mut ready = Vec::new();
        if let Some(s) = self.table.get_mut(i) {
            let f = s.files();
            f.pending.retain(|&k| k != key);
            f.fsyncs.retain(|&k| k != key);
            if was_write {
                f.writes.remove(&seq);
                while let Some(&k) = f.fsyncs.front() {
                    if f.fsync_must_wait(self.ops[k].id.seq) {
                        break;
                    }
                    f.fsyncs.pop_front();
                    ready.push(k);
                }
            }
        }
        for k in ready {
            self.file_start(i, k);
        }
        self.finish_release(i);
    }
}
