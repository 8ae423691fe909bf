//! The `log` cargo feature: `log_debug!`, `log_info!`, `log_warn!` and `log_error!` forward to
//! the `log` crate's macros of the same level when the feature is on, and compile to nothing
//! without it (their arguments are still type-checked, inside an `if false`, so a value used
//! only in a record gives no unused warning), so call sites need no `cfg`. Records go to the
//! target of the module they are written in (`gaio::builder`, `gaio::driver::epoll`, …).
//!
//! What is logged: the backend a watcher starts on and, when `Backend::Auto` falls back to
//! epoll, why io_uring could not run (`crate::builder`); each backend thread's start and stop
//! (`crate::driver::epoll`, `crate::driver::uring`, the file threads); and what a backend
//! thread cannot hand to a request: a thread's failure (`crate::driver::failure::reason`), an
//! io_uring submit error or a cancel that could not be queued (`crate::driver::uring::ring`),
//! the poller's wait failing (`crate::driver::epoll::poller`).

#[cfg(feature = "log")]
macro_rules! log_at {
    ($level:ident, $($arg:tt)+) => {
        ::log::$level!($($arg)+)
    };
}

#[cfg(not(feature = "log"))]
macro_rules! log_at {
    ($level:ident, $($arg:tt)+) => {
        if false {
            let _ = ::std::format!($($arg)+);
        }
    };
}

/// A `log::debug!` record with the `log` feature; nothing without it.
#[allow(unused_macros)] // not every level has a user in every build
macro_rules! log_debug {
    ($($arg:tt)+) => { log_at!(debug, $($arg)+) };
}

/// A `log::info!` record with the `log` feature; nothing without it.
#[allow(unused_macros)] // not every level has a user in every build
macro_rules! log_info {
    ($($arg:tt)+) => { log_at!(info, $($arg)+) };
}

/// A `log::warn!` record with the `log` feature; nothing without it.
#[allow(unused_macros)] // not every level has a user in every build
macro_rules! log_warn {
    ($($arg:tt)+) => { log_at!(warn, $($arg)+) };
}

/// A `log::error!` record with the `log` feature; nothing without it.
#[allow(unused_macros)] // not every level has a user in every build
macro_rules! log_error {
    ($($arg:tt)+) => { log_at!(error, $($arg)+) };
}
