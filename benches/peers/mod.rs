//! The echo servers `benches/compare` measures, one file each, every one started in a child
//! process of its own (`common::server_proc`) and counting what it does in the same
//! [`EchoStats`]:
//!
//! - `gaio-epoll`, `gaio-uring`: the examples' `EchoServer` (swap-buffer reads) on each
//!   backend ([`gaio_echo`]);
//! - `mio`: a hand-written single-thread edge-triggered loop, the readiness floor
//!   ([`mio_edge`]);
//! - `tokio`: one task per connection on the default multi-thread runtime ([`tokio_tasks`]);
//! - `monoio`: one task per connection on one io_uring thread ([`monoio_uring`]).
//!
//! The peers are dev-dependencies only.

pub mod gaio_echo;
pub mod mio_edge;
#[cfg(target_os = "linux")]
pub mod monoio_uring;
pub mod tokio_tasks;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::common::example::{self, EchoServer, EchoStats};
use crate::common::server_proc;

/// Read buffer of the peers that own one (tokio and monoio per connection, mio shared): as
/// large as gaio's swap-buffer reads and the stream workload's writes.
pub const PEER_BUF: usize = 64 * 1024;

/// The spin of the `-spin` gaio servers (`Builder::busy_poll`): a few round trips on loopback.
pub const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// A reset, a broken pipe or a timeout is an ordinary way for a client to go.
pub fn is_normal_close(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNRESET | libc::EPIPE | libc::ETIMEDOUT | libc::ECONNABORTED)
    )
}

/// Counts the end of a peer's connection; an error other than an ordinary close is logged
/// (prefixed with `who`) and counted, which fails the measurement.
pub fn conn_ended(stats: &EchoStats, who: &str, outcome: io::Result<()>) {
    if let Err(e) = outcome {
        if !is_normal_close(&e) {
            eprintln!("{who}: {e}");
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    stats.closed.fetch_add(1, Ordering::Relaxed);
}

/// An echo server implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    GaioEpoll,
    GaioUring,
    /// gaio with `Builder::busy_poll` ([`SPIN`]): opt-in (`--impls`), not in the default run.
    GaioEpollSpin,
    GaioUringSpin,
    Mio,
    Tokio,
    Monoio,
}

impl Impl {
    pub const ALL: [Impl; 5] = [
        Impl::GaioEpoll,
        Impl::GaioUring,
        Impl::Mio,
        Impl::Tokio,
        Impl::Monoio,
    ];

    /// Every implementation `--impls` knows: the default run's, then the opt-in ones.
    pub const KNOWN: [Impl; 7] = [
        Impl::GaioEpoll,
        Impl::GaioUring,
        Impl::Mio,
        Impl::Tokio,
        Impl::Monoio,
        Impl::GaioEpollSpin,
        Impl::GaioUringSpin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Impl::GaioEpoll => "gaio-epoll",
            Impl::GaioUring => "gaio-uring",
            Impl::GaioEpollSpin => "gaio-epoll-spin",
            Impl::GaioUringSpin => "gaio-uring-spin",
            Impl::Mio => "mio",
            Impl::Tokio => "tokio",
            Impl::Monoio => "monoio",
        }
    }

    pub fn parse(s: &str) -> Option<Impl> {
        Impl::KNOWN.into_iter().find(|i| i.name() == s)
    }

    /// How the server is built, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Impl::GaioEpoll | Impl::GaioUring => {
                "the examples' `EchoServer`: an accept thread, one `wait_io` loop thread, one \
                 operation in flight per connection, reads without a buffer (swap buffers) \
                 whose `SwapSlice` is written back as it is"
            }
            Impl::GaioEpollSpin | Impl::GaioUringSpin => {
                "as gaio-epoll / gaio-uring, with `Builder::busy_poll(200 µs)`: `wait_io` (and \
                 on io_uring the ring thread) spins up to 200 µs before it sleeps"
            }
            Impl::Mio => mio_edge::DESCRIPTION,
            Impl::Tokio => tokio_tasks::DESCRIPTION,
            Impl::Monoio => monoio_uring::DESCRIPTION,
        }
    }

    /// What one idle connection's pending read holds, for the report.
    pub fn idle_holds(self) -> &'static str {
        match self {
            Impl::GaioEpoll | Impl::GaioEpollSpin => "no buffer: a queued swap-buffer read request",
            Impl::GaioUring | Impl::GaioUringSpin => {
                "no buffer: a swap-buffer read, a recv with buffer selection in the kernel (a \
                 ring buffer is taken only when data arrives)"
            }
            Impl::Mio => "no buffer: a slab entry (socket, empty pending-output `Vec`)",
            Impl::Tokio => "its task, with its 64 KiB `Vec` (zeroed: allocated, pages not written)",
            Impl::Monoio => {
                "its task, with its 64 KiB `Vec` owned by the in-flight recv (allocated, never \
                 written)"
            }
        }
    }
}

/// What the child must stop at the end.
enum Running {
    /// Shut down cleanly (which also checks gaio's shutdown path).
    Gaio(EchoServer),
    /// Threads that end with the process.
    Detached,
}

/// The re-executed bench binary's `main` when `GAIO_BENCH_SERVER` is set: runs the `kind`
/// server on a fresh loopback listener until stdin closes.
pub fn child_main(kind: &str) -> ExitCode {
    server_proc::die_with_parent();
    match serve(kind) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{kind} server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(kind: &str) -> Result<(), String> {
    let imp = Impl::parse(kind).ok_or_else(|| format!("unknown server kind {kind:?}"))?;
    example::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let ln = example::listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("cannot listen: {e}"))?;
    let addr = ln.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    let (running, stats) = start(imp, ln).map_err(|e| format!("cannot start: {e}"))?;
    server_proc::serve_stdin(addr, || server_proc::echo_counters(&stats))?;
    match running {
        Running::Gaio(server) => server.shutdown().map_err(|e| format!("shutdown: {e}")),
        Running::Detached => Ok(()),
    }
}

fn start(imp: Impl, ln: TcpListener) -> io::Result<(Running, Arc<EchoStats>)> {
    let stats = Arc::new(EchoStats::default());
    let running = match imp {
        Impl::GaioEpoll | Impl::GaioUring | Impl::GaioEpollSpin | Impl::GaioUringSpin => {
            let backend = match imp {
                Impl::GaioEpoll | Impl::GaioEpollSpin => gaio::Backend::Epoll,
                _ => gaio::Backend::Uring,
            };
            let spin = match imp {
                Impl::GaioEpollSpin | Impl::GaioUringSpin => SPIN,
                _ => std::time::Duration::ZERO,
            };
            let server = gaio_echo::start(ln, backend, spin)?;
            let stats = server.stats();
            return Ok((Running::Gaio(server), stats));
        }
        Impl::Mio => {
            mio_edge::start(ln, stats.clone())?;
            Running::Detached
        }
        Impl::Tokio => {
            tokio_tasks::start(ln, stats.clone())?;
            Running::Detached
        }
        Impl::Monoio => {
            monoio_uring::start(ln, stats.clone())?;
            Running::Detached
        }
    };
    Ok((running, stats))
}
