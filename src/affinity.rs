//! CPU affinity of the watcher's own threads.
//!
//! Each thread records its kernel thread id when it starts; the affinity calls then pin it with
//! `sched_setaffinity(tid, …)` from the caller's thread. That is synchronous, reports the
//! kernel's error, and cannot deadlock on a busy loop (Go sends the request to the loop over an
//! unbuffered channel, which can block while the loop is stuck delivering results).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::{Error, Result};

/// One of the watcher's threads, as the affinity calls see it.
#[derive(Default)]
pub(crate) struct ThreadSlot {
    tid: AtomicI32,
    alive: AtomicBool,
}

impl ThreadSlot {
    /// Called first thing on the thread.
    pub(crate) fn enter(&self) {
        self.tid.store(current_tid(), Ordering::Release);
        self.alive.store(true, Ordering::Release);
    }

    /// Called last thing on the thread.
    pub(crate) fn exit(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Pins the thread to `cpu`; `gone` is returned if the thread has exited.
    pub(crate) fn pin(&self, cpu: usize, gone: Error) -> Result<()> {
        check_cpu(cpu)?;
        if !self.alive.load(Ordering::Acquire) {
            return Err(gone);
        }
        pin(self.tid.load(Ordering::Acquire), cpu)
    }
}

/// The calling thread's kernel thread id (0 where there is no such thing).
pub(crate) fn current_tid() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and cannot fail.
        unsafe { libc::gettid() }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Number of CPU ids this machine has (configured, not only online or allowed).
pub(crate) fn cpu_count() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

/// Checks `cpu` against the machine: [`Error::CpuId`] when it cannot exist.
pub(crate) fn check_cpu(cpu: usize) -> Result<()> {
    if cpu >= cpu_count() {
        return Err(Error::CpuId);
    }
    Ok(())
}

/// Pins thread `tid` to `cpu`.
#[cfg(target_os = "linux")]
pub(crate) fn pin(tid: i32, cpu: usize) -> Result<()> {
    check_cpu(cpu)?;
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(Error::CpuId);
    }
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE` was checked above, so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; `tid` is a thread of this process
    // (the caller checked that the thread is still running).
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // EINVAL: the CPU is offline or outside this process's cpuset.
    if err.raw_os_error() == Some(libc::EINVAL) {
        return Err(Error::CpuId);
    }
    Err(Error::Io(err))
}

/// Affinity is only implemented on Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn pin(_tid: i32, cpu: usize) -> Result<()> {
    check_cpu(cpu)?;
    Err(Error::BackendUnavailable(
        "thread affinity is only supported on Linux".into(),
    ))
}
