//! The io_uring backend. One thread owns the ring and the engine (`ring.rs`): it takes
//! messages from the submit side, pushes SQEs, reaps CQEs and runs the deadlines (the poller
//! and the loop of the epoll backend merged, which lets the ring use SINGLE_ISSUER and
//! DEFER_TASKRUN).
//!
//! Construction probes everything the backend relies on, each feature on its own:
//! - ring setup: SINGLE_ISSUER|DEFER_TASKRUN (6.1), else COOP_TASKRUN (5.19), else plain; a
//!   setup that fails in every form (ENOSYS, EPERM, EACCES, ENOMEM, EINVAL) makes the backend
//!   unavailable, and `Backend::Auto` falls back to epoll;
//! - opcodes RECV, SEND, READ, WRITE, ASYNC_CANCEL (required), SHUTDOWN (5.11, optional:
//!   without it a shutdown is a `shutdown(2)` done at once by the ring thread);
//! - the provided buffer ring (5.19, required) and its incremental consumption (6.12, optional:
//!   without it each swap read uses a whole buffer).

mod buf_ring;
mod ring;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use io_uring::{opcode, IoUring, Probe};

use crate::conn::lock;
use crate::driver::{Core, KernelWake};
use crate::{Error, Result};

/// The eventfd that wakes the ring thread from its kernel wait. A read of it is always pending
/// on the ring; a sender writes it only when the thread has announced it is going to sleep, so
/// a busy loop costs senders one atomic swap.
///
/// `Conn` handles and swap slices reach the loop through this too and may outlive the watcher,
/// so the descriptor sits behind a lock and is closed by `close` once the ring thread is gone
/// (a write that raced past the sleeping check then finds `None`, never a reused number).
pub(crate) struct RingWake {
    sleeping: AtomicBool,
    efd: Mutex<Option<OwnedFd>>,
    /// The descriptor number, for the ring thread's pending read (valid while it runs).
    pub(super) raw: RawFd,
}

impl RingWake {
    pub(crate) fn new() -> Result<RingWake> {
        let fd = crate::sys::eventfd()?;
        Ok(RingWake {
            sleeping: AtomicBool::new(false),
            raw: fd.as_raw_fd(),
            efd: Mutex::new(Some(fd)),
        })
    }

    /// Writes the eventfd regardless of the sleeping flag (shutdown).
    pub(crate) fn force(&self) {
        // Kept open by the lock while we write (closed only after the ring thread is gone).
        if let Some(fd) = lock(&self.efd).as_ref() {
            crate::sys::eventfd_signal(fd.as_fd());
        }
    }

    /// Closes the eventfd. Only after the ring thread has exited.
    pub(crate) fn close(&self) {
        lock(&self.efd).take();
    }

    /// The ring thread is about to block: senders must write the eventfd from now on.
    fn announce_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// The ring thread is awake again.
    fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

impl KernelWake for RingWake {
    fn notify(&self) {
        // Pairs with `announce_sleep` followed by the channel check in the loop: either the loop
        // sees the message, or we see it sleeping and wake it.
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.force();
        }
    }
}

/// Why io_uring cannot run here, in words a user can act on.
fn explain(stage: &str, e: &io::Error) -> Error {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let why = match e.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)".to_string(),
        Some(libc::EPERM) | Some(libc::EACCES) if disabled == "2" || disabled == "1" => {
            format!("disabled by sysctl kernel.io_uring_disabled={disabled} ({e})")
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("not permitted, likely blocked by a seccomp profile such as Docker's ({e})")
        }
        Some(libc::ENOMEM) => format!("out of locked memory: raise RLIMIT_MEMLOCK ({e})"),
        Some(libc::EINVAL) => format!("the kernel refused the ring parameters ({e})"),
        _ => e.to_string(),
    };
    Error::BackendUnavailable(format!("io_uring {stage}: {why}"))
}

/// Sets the ring up with the best task-work mode the kernel accepts. Must run on the thread
/// that will submit (SINGLE_ISSUER).
fn setup_ring(entries: u32) -> Result<IoUring> {
    // The completion queue gets four times the submission queue (at least twice, as io_uring
    // wants; `setup_clamp` caps both at the kernel's limits).
    let cq = entries.saturating_mul(4);
    let attempts: [fn(&mut io_uring::Builder); 3] = [
        |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag();
        },
        |b| {
            b.setup_coop_taskrun().setup_taskrun_flag();
        },
        |_| {},
    ];
    let mut last = None;
    for set in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq).setup_clamp();
        set(&mut b);
        match b.build(entries) {
            Ok(r) => return Ok(r),
            // A flag the kernel does not know: try the next, plainer form.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(explain("setup", &e)),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
    Err(explain("setup", &e))
}

/// What the probe found beyond the required opcodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Features {
    /// The kernel has IORING_OP_SHUTDOWN.
    pub(crate) shutdown: bool,
}

/// Checks that every opcode the backend uses is there, and which optional ones are.
fn probe(ring: &IoUring) -> Result<Features> {
    let mut p = Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| explain("probe", &e))?;
    let needed = [
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::Read::CODE, "READ"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ];
    for (code, name) in needed {
        if !p.is_supported(code) {
            return Err(Error::BackendUnavailable(format!(
                "io_uring: the kernel lacks opcode {name}"
            )));
        }
    }
    Ok(Features {
        shutdown: p.is_supported(opcode::Shutdown::CODE),
    })
}

/// Starts the ring thread. The ring is built on that thread (SINGLE_ISSUER binds it to its
/// creator); any failure comes back here before this returns.
pub(crate) fn start<C: Send + 'static>(
    core: Core<C>,
    wake: Arc<RingWake>,
) -> Result<Vec<JoinHandle<()>>> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<()>>(1);
    let slot = core.loop_slot.clone();
    let guard = core.results.close_on_panic();
    let watcher = core.watcher_id;
    let thread = std::thread::Builder::new()
        .name("gaio-uring".into())
        .spawn(move || {
            let _guard = guard;
            let (ring, features) =
                match setup_ring(core.ring_entries).and_then(|r| probe(&r).map(|f| (r, f))) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
            let lp = match ring::RingLoop::new(ring, features, core, wake) {
                Ok(lp) => lp,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            slot.enter();
            log_debug!("watcher {watcher}: io_uring ring thread started");
            let _ = ready_tx.send(Ok(()));
            lp.run();
            slot.exit();
            log_debug!("watcher {watcher}: io_uring ring thread stopped");
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(vec![thread]),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(Error::BackendUnavailable(
                "io_uring: the ring thread failed to start".into(),
            ))
        }
    }
}
