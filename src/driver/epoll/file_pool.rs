//! The file threads of the epoll driver. Regular files cannot be polled, so a file
//! request the driver cannot finish with `RWF_NOWAIT` (data not cached, `O_DIRECT`, fsync) runs
//! here as a plain blocking syscall. A small, fixed number of threads, started on the first
//! such request; sockets never come here.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::driver::failure::{self, Failpoints, Thread};
use crate::engine::LoopMsg;
use crate::request::file::{blocking, Blocking};
use crate::request::Outcome;

/// Threads in the pool: enough to keep a disk queue busy, few enough to stay small.
const THREADS: usize = 4;

/// One blocking syscall for a request the engine keeps alive until its `Completed` comes back.
pub(crate) struct Job {
    pub(crate) run: Blocking,
    pub(crate) key: usize,
    pub(crate) seq: u64,
}

// SAFETY: `run.ptr` points into the buffer of a request the engine owns; the engine neither
// frees nor touches that buffer, nor closes `run.fd`, until this job's `Completed` arrives (the
// request is in flight until then). A `read_at`'s buffer is a `Vec` or `AlignedBuf` the
// request owns alone, so the worker has exclusive use of it; a `write_at`'s may be shared (an
// `Arc<[u8]>`, a `&'static [u8]`) with other readers, and the worker only reads it.
unsafe impl Send for Job {}

pub(crate) struct FilePool<C> {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    done: Sender<LoopMsg<C>>,
    fail: Arc<Failpoints>,
}

impl<C: Send + 'static> FilePool<C> {
    pub(crate) fn new(done: Sender<LoopMsg<C>>, fail: Arc<Failpoints>) -> Self {
        FilePool {
            jobs: None,
            threads: Vec::new(),
            done,
            fail,
        }
    }

    /// Queues a job, starting the threads on first use. False if no thread could be started.
    pub(crate) fn submit(&mut self, job: Job) -> bool {
        if self.jobs.is_none() {
            let (tx, rx) = crossbeam_channel::unbounded::<Job>();
            for n in 0..THREADS {
                let rx = rx.clone();
                let done = self.done.clone();
                let fail = self.fail.clone();
                match std::thread::Builder::new()
                    .name(format!("gaio-file-{n}"))
                    .spawn(move || worker(rx, done, &fail))
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

fn worker<C>(jobs: Receiver<Job>, done: Sender<LoopMsg<C>>, fail: &Failpoints) {
    log_debug!(
        "epoll file thread {} started",
        std::thread::current().name().unwrap_or("?")
    );
    serve(jobs, done, fail);
    log_debug!(
        "epoll file thread {} stopped",
        std::thread::current().name().unwrap_or("?")
    );
}

fn serve<C>(jobs: Receiver<Job>, done: Sender<LoopMsg<C>>, fail: &Failpoints) {
    while let Ok(job) = jobs.recv() {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fail.check(Thread::File);
            // SAFETY: see `Job`'s Send impl: the buffer tail and the descriptor stay ours
            // until `Completed` is handled.
            unsafe { blocking(&job.run) }
        }));
        let (outcome, failed) = match run {
            Ok(outcome) => (outcome, None),
            Err(p) => {
                let why = failure::reason("gaio-file", &*p);
                (
                    Outcome::Failed(std::io::Error::other(why.clone())),
                    Some(why),
                )
            }
        };
        let msg = LoopMsg::Completed {
            key: job.key,
            seq: job.seq,
            outcome,
        };
        if done.send(msg).is_err() {
            return;
        }
        // The job's request has its outcome; the watcher fails closed after it.
        if let Some(why) = failed {
            let _ = done.send(LoopMsg::Failed(why));
        }
    }
}
