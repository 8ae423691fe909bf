//! # gaio: proactor-style I/O without a runtime
//!
//! A [`Watcher`] takes over descriptors (TCP and Unix sockets, pipes, eventfds: anything
//! pollable), performs the reads and writes on its own threads, and hands the completions back
//! in batches from [`Watcher::wait_io`]. There are no futures and no runtime: one loop calls
//! `wait_io` and submits the next operation for each result. A port of Go's
//! [gaio](https://github.com/xtaci/gaio), in Rust's ownership terms:
//!
//! - a request owns its buffer until its result hands it back, so no thread can write into
//!   memory the caller can still touch;
//! - reads without a buffer land in the watcher's swap buffers and come back as a
//!   [`SwapSlice`], valid for as long as it lives (explicit release; Go's "valid until the next
//!   `WaitIO`" is a guess that can race);
//! - connections are [`Conn`] handles keyed by slot and generation, so a freed handle can never
//!   touch a later connection; dropping the last handle releases it (Go's GC finalizer);
//! - every accepted submission yields exactly one [`OpResult`], also through
//!   [`Watcher::free`], deadlines and [`Watcher::close`].
//!
//! ```
//! use gaio::{OpType, Watcher};
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//!
//! let ln = TcpListener::bind("127.0.0.1:0")?;
//! let mut client = TcpStream::connect(ln.local_addr()?)?;
//! let (server_side, _) = ln.accept()?;
//!
//! let w: Watcher<&str> = Watcher::new()?;
//! let conn = w.watch(&server_side)?;
//! drop(server_side); // the watcher holds its own descriptor
//! w.read("first read", &conn, None)?; // None: read into the swap buffer
//!
//! client.write_all(b"hello")?;
//! let mut echoed = false;
//! while !echoed {
//!     for res in w.wait_io_timeout(Duration::from_secs(5))? {
//!         match res.op {
//!             OpType::Read => {
//!                 assert_eq!(res.context, "first read");
//!                 w.write("echo", &res.conn, res.data().to_vec())?;
//!             }
//!             OpType::Write => echoed = true,
//!             _ => {}
//!         }
//!     }
//! }
//! let mut back = [0u8; 5];
//! client.read_exact(&mut back)?;
//! assert_eq!(&back, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Cargo features
//!
//! - `io-uring` (on by default): the io_uring backend ([`Backend::Uring`], Linux only; the
//!   `io-uring` crate). Without it the crate builds and runs on epoll alone:
//!   [`Backend::Auto`] picks epoll and [`Backend::Uring`] is refused with
//!   [`Error::BackendUnavailable`]`("io_uring support not compiled in (cargo feature
//!   io-uring)")`. [`Backend::compiled_in`] says which backends a build has.
//! - `log` (off by default): records through the [`log`](https://docs.rs/log) crate, with the
//!   module as target (`gaio::builder`, `gaio::driver::epoll`, …): the backend a watcher
//!   starts on (debug) and, when [`Backend::Auto`] falls back to epoll, why io_uring could not
//!   run (info); each backend thread's start and stop (debug); and what a backend thread
//!   cannot hand to a request: a thread that fails (error, before [`Error::WatcherFailed`]
//!   reaches `wait_io`), an io_uring submit or cancel error (warn), the epoll poller's wait
//!   failing (error). Without the feature none of it is compiled in.
#![deny(unsafe_op_in_unsafe_fn)]
// docs.rs (nightly, `--cfg docsrs`): items limited to one platform or cargo feature say so in
// the docs with `#[cfg_attr(docsrs, doc(cfg(...)))]`. Today every public item exists on every
// Unix; the io_uring backend is chosen at run time (`Backend::Uring` is there everywhere and
// answers `BackendUnavailable` off Linux or without the `io-uring` feature).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

#[cfg(not(unix))]
compile_error!(
    "gaio supports Unix-like systems only (epoll on Linux, kqueue through mio elsewhere)"
);

// First: its macros (`log_debug!`, …) are in scope in every module declared after it.
#[macro_use]
mod logging;

mod affinity;
mod backend;
mod buf;
mod buffer;
mod builder;
mod conn;
mod deadline;
mod driver;
mod engine;
mod error;
mod lane;
mod op;
mod request;
mod results;
mod stats;
mod swap;
mod sync;
mod sys;
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub mod tls;
mod waker;
mod watcher;

pub use backend::Backend;
pub use buf::{dio_alignment, AlignedBuf, DioAlignment, IoBuf};
pub use buffer::Buffer;
pub use builder::{
    Builder, DEFAULT_RING_ENTRIES, DEFAULT_SWAP_BUFFERS, DEFAULT_SWAP_BUFFER_SIZE, MAX_BUSY_POLL,
    MAX_RING_ENTRIES, MAX_SWAP_BUFFERS, MAX_SWAP_BUFFER_SIZE, MAX_SWAP_TOTAL,
};
pub use conn::Conn;
pub use error::{Error, Result, SubmitError};
pub use op::{OpId, OpResult, OpType};
pub use request::datagram::{MAX_DATAGRAM, MAX_GSO_SEGMENTS};
pub use results::Batch;
pub use stats::{DatagramStats, GcStats, SwapStats};
pub use swap::SwapSlice;
pub use waker::Waker;
pub use watcher::{Cork, Watcher, MAX_FILE_OFFSET};

/// The README's examples, compiled as doctests so that they stay true to the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
