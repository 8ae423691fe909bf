//! The file threads of the readiness backend. Regular files cannot be polled, so a file
//! request the loop cannot finish with `RWF_NOWAIT` (data not cached, `O_DIRECT`, fsync) runs
//! here as a plain blocking syscall. A small, fixed number of threads, started on the first
//! such request; sockets never come here.

use std::os::fd::RawFd;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::op::OpKind;
use crate::sys::LoopMsg;

/// Threads in the pool: enough to keep a disk queue busy, few enough to stay small.
const THREADS: usize = 4;

/// One blocking syscall for a request the loop keeps alive until `FileDone` comes back.
pub(crate) struct Job {
    pub(crate) fd: RawFd,
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
    pub(crate) offset: u64,
    pub(crate) kind: OpKind,
    pub(crate) key: usize,
    pub(crate) seq: u64,
}

// SAFETY: `ptr` points into the buffer of a request the loop owns; the loop neither frees nor
// touches that buffer, nor closes `fd`, until this job's `FileDone` arrives, so the worker has
// exclusive use of that memory for the job's lifetime.
unsafe impl Send for Job {}

pub(crate) struct FilePool<C> {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    done: Sender<LoopMsg<C>>,
}

impl<C: Send + 'static> FilePool<C> {
    pub(crate) fn new(done: Sender<LoopMsg<C>>) -> Self {
        FilePool {
            jobs: None,
            threads: Vec::new(),
            done,
        }
    }

    /// Queues a job, starting the threads on first use. False if no thread could be started.
    pub(crate) fn submit(&mut self, job: Job) -> bool {
        if self.jobs.is_none() {
            let (tx, rx) = crossbeam_channel::unbounded::<Job>();
            for n in 0..THREADS {
                let rx = rx.clone();
                let done = self.done.clone();
                match std::thread::Builder::new()
                    .name(format!("gaio-file-{n}"))
                    .spawn(move || worker(rx, done))
                {
                    Ok(t) => self.threads.push(t),
                    Err(_) if !self.threads.is_empty() => break,
                    Err(_) => return false,
                }
            }
            self.jobs = Some(tx);
        }
        match &self.jobs {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    /// Lets the threads finish their jobs and joins them.
    pub(crate) fn shutdown(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker<C>(jobs: Receiver<Job>, done: Sender<LoopMsg<C>>) {
    while let Ok(job) = jobs.recv() {
        let res = run(&job);
        if done
            .send(LoopMsg::FileDone {
                key: job.key,
                seq: job.seq,
                res,
            })
            .is_err()
        {
            return;
        }
    }
}

/// The blocking syscall, EINTR retried: bytes moved, or `-errno`.
fn run(job: &Job) -> isize {
    loop {
        // SAFETY: `ptr[..len]` is the exclusive tail of the request's buffer and `fd` is open
        // (see `Job`'s Send impl); offsets beyond i64 are refused by the kernel with EINVAL.
        let rc = unsafe {
            match job.kind {
                OpKind::ReadAt => libc::pread(
                    fd_of(job),
                    job.ptr.cast(),
                    job.len,
                    job.offset as libc::off_t,
                ),
                OpKind::WriteAt => libc::pwrite(
                    fd_of(job),
                    job.ptr.cast(),
                    job.len,
                    job.offset as libc::off_t,
                ),
                OpKind::Fsync => libc::fsync(fd_of(job)) as isize,
                OpKind::Fdatasync => fdatasync(fd_of(job)) as isize,
                _ => -(libc::EINVAL as isize),
            }
        };
        if rc >= 0 {
            return rc;
        }
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return -(errno as isize);
        }
    }
}

fn fd_of(job: &Job) -> RawFd {
    job.fd
}

#[cfg(not(any(target_os = "macos", target_os = "ios")))]
unsafe fn fdatasync(fd: RawFd) -> libc::c_int {
    // SAFETY: the caller passes an open descriptor.
    unsafe { libc::fdatasync(fd) }
}

/// macOS has no fdatasync; fsync gives at least the same guarantee.
#[cfg(any(target_os = "macos", target_os = "ios"))]
unsafe fn fdatasync(fd: RawFd) -> libc::c_int {
    // SAFETY: the caller passes an open descriptor.
    unsafe { libc::fsync(fd) }
}
