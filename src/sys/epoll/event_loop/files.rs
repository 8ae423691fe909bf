//! File requests on the readiness backend: `preadv2`/`pwritev2` with `RWF_NOWAIT` on the loop
//! thread (page-cache hits cost one syscall and no hop), and the misses, every `O_DIRECT`
//! request and every fsync on the file threads. Requests on one file run side by side; an fsync waits for the writes
//! submitted before it.

use std::os::fd::AsRawFd;

use super::{Entry, EventLoop};
use crate::op::{Ending, OpKind};
use crate::sys::epoll::file_pool::Job;
use crate::Error;

/// One non-blocking attempt.
enum Step {
    Moved(usize),
    /// Would block (not cached, O_DIRECT, or RWF_NOWAIT unsupported): use a file thread.
    Block,
    Failed(std::io::Error),
}

fn nowait(fd: i32, kind: OpKind, ptr: *mut u8, len: usize, offset: u64) -> Step {
    let iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    loop {
        #[cfg(target_os = "linux")]
        // SAFETY: `iov` describes the unfilled (or unwritten) tail of a buffer the request owns
        // exclusively while it is in the loop; `fd` is open.
        let rc = unsafe {
            match kind {
                OpKind::ReadAt => {
                    libc::preadv2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT)
                }
                _ => libc::pwritev2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT),
            }
        };
        #[cfg(not(target_os = "linux"))]
        let rc: isize = {
            let _ = (fd, kind, &iov, offset);
            return Step::Block;
        };
        if rc >= 0 {
            return Step::Moved(rc as usize);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => return Step::Block,
            _ => return Step::Failed(err),
        }
    }
}

impl<C: Send + 'static> EventLoop<C> {
    /// A new file request on file `i`.
    pub(super) fn file_submit(&mut self, i: usize, op: crate::op::Op<C>) {
        let (kind, seq, deadline) = (op.kind, op.id.seq, op.deadline);
        let key = self.ops.insert(op);
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        c.fs().files.push(key);
        match kind {
            OpKind::WriteAt => {
                c.fs().writes.insert(seq);
                self.file_run(i, key);
            }
            OpKind::ReadAt => self.file_run(i, key),
            _ => {
                // The barrier: after every write submitted before it.
                if !c.fs().fsync_must_wait(seq) {
                    self.file_dispatch(i, key);
                } else {
                    c.fs().fsyncs.push_back(key);
                }
            }
        }
        if let Some(at) = deadline {
            if self.ops.get(key).is_some_and(|o| o.id.seq == seq) {
                self.deadlines.push(Entry { at, id: seq, key });
            }
        }
    }

    /// Runs a read or write on the loop thread as far as it goes without blocking.
    fn file_run(&mut self, i: usize, key: usize) {
        let Some(c) = self.conns[i].as_ref() else {
            return;
        };
        let fd = c.fd.as_raw_fd();
        // RWF_NOWAIT covers locks and allocation, not the device: on an O_DIRECT file it waits
        // for the disk on the loop thread. Those go to the file threads at once.
        if self.ops[key].conn.0.file.is_some_and(|f| f.direct) {
            return self.file_dispatch(i, key);
        }
        loop {
            let op = &mut self.ops[key];
            let Some(buf) = op.buffer.as_mut() else {
                return;
            };
            let len = buf.len();
            let rest = &mut buf[op.size..];
            match nowait(
                fd,
                op.kind,
                rest.as_mut_ptr(),
                rest.len(),
                op.offset + op.size as u64,
            ) {
                Step::Moved(0) if op.kind == OpKind::ReadAt => {
                    let err = (op.size == 0).then_some(Error::Eof);
                    return self.file_finish(i, key, err);
                }
                Step::Moved(0) => return self.file_dispatch(i, key),
                Step::Moved(n) => {
                    op.size += n;
                    if op.size == len {
                        return self.file_finish(i, key, None);
                    }
                }
                Step::Block => return self.file_dispatch(i, key),
                Step::Failed(e) => return self.file_finish(i, key, Some(Error::Io(e))),
            }
        }
    }

    /// Hands the rest of a request to a file thread.
    fn file_dispatch(&mut self, i: usize, key: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        let op = &mut self.ops[key];
        let (ptr, len) = match op.buffer.as_mut() {
            Some(b) => {
                let rest = &mut b[op.size..];
                (rest.as_mut_ptr(), rest.len())
            }
            None => (std::ptr::null_mut(), 0),
        };
        let job = Job {
            fd: c.fd.as_raw_fd(),
            ptr,
            len,
            offset: op.offset + op.size as u64,
            kind: op.kind,
            key,
            seq: op.id.seq,
        };
        if self.pool.submit(job) {
            op.busy = true;
            c.fs().busy += 1;
        } else {
            let e = std::io::Error::other("no file thread could be started");
            self.file_finish(i, key, Some(Error::Io(e)));
        }
    }

    /// A file thread returned `res` (bytes or `-errno`) for request `key`.
    pub(super) fn file_done(&mut self, key: usize, seq: u64, res: isize) {
        let Some(op) = self.ops.get(key) else {
            return;
        };
        if op.id.seq != seq || !op.busy {
            return;
        }
        // A file with requests on a file thread is never released before they return.
        let Some(i) = self.index_of(op.conn.id()) else {
            return;
        };
        if let Some(c) = self.conns[i].as_mut() {
            c.fs().busy -= 1;
        }
        let op = &mut self.ops[key];
        op.busy = false;
        let len = op.buffer.as_ref().map_or(0, |b| b.len());
        let err = if res < 0 {
            Some(Error::Io(std::io::Error::from_raw_os_error(-res as i32)))
        } else {
            None
        };
        match (op.kind, res) {
            (_, r) if r < 0 => {
                let e = op.cancel.take().map(Ending::error).or(err);
                self.file_finish(i, key, e)
            }
            (OpKind::Fsync | OpKind::Fdatasync, _) => {
                let e = op.cancel.take().map(Ending::error);
                self.file_finish(i, key, e)
            }
            (OpKind::ReadAt, 0) => {
                let e = op
                    .cancel
                    .take()
                    .map(Ending::error)
                    .or_else(|| (op.size == 0).then_some(Error::Eof));
                self.file_finish(i, key, e)
            }
            (_, n) => {
                op.size += n as usize;
                if op.size >= len || op.direct_read_ended() {
                    self.file_finish(i, key, None)
                } else if let Some(e) = op.cancel.take().map(Ending::error) {
                    self.file_finish(i, key, Some(e))
                } else {
                    self.file_run(i, key)
                }
            }
        }
    }

    /// Ends a file request with `err` (deadline, cancel, free): at once unless a file thread
    /// holds it, in which case when it returns.
    pub(super) fn file_end(&mut self, i: usize, key: usize, err: Ending) {
        let Some(op) = self.ops.get_mut(key) else {
            return;
        };
        if op.busy {
            if op.cancel.is_none() {
                op.cancel = Some(err);
            }
            return;
        }
        if let Some(c) = self.conns[i].as_mut() {
            c.fs().fsyncs.retain(|&k| k != key);
        }
        self.file_finish(i, key, Some(err.error()));
    }

    /// Delivers file request `key` and lets waiting fsyncs go when it was the last earlier
    /// write; finishes a release that waited for it.
    fn file_finish(&mut self, i: usize, key: usize, err: Option<Error>) {
        let op = self.ops.remove(key);
        let seq = op.id.seq;
        let was_write = op.kind == OpKind::WriteAt;
        self.out.push(op.finish(None, err));
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        c.fs().files.retain(|&k| k != key);
        if was_write {
            let ops = &self.ops;
            let ready = c.fs().write_done(seq, |f| ops[f].id.seq);
            for f in ready {
                self.file_dispatch(i, f);
            }
        }
        if self.conns[i]
            .as_ref()
            .is_some_and(|c| c.closing && c.busy() == 0)
        {
            drop(self.unlink(i));
        }
    }
}
