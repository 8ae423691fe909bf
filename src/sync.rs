//! The synchronization types of the modules the `loom` models check (`lane`, `swap`,
//! `results`): std's normally, loom's under `--cfg gaio_loom`, where only the models run
//! (`RUSTFLAGS="--cfg gaio_loom" cargo test --release --lib loom`). Other modules keep
//! std's types.

#[cfg(not(all(test, gaio_loom)))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize},
    Condvar, Mutex, MutexGuard,
};

#[cfg(all(test, gaio_loom))]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize},
    Condvar, Mutex, MutexGuard,
};

#[cfg(all(test, gaio_loom))]
pub(crate) use loom::thread::yield_now as spin_loop;
/// A busy-wait hint. Under loom a yield: a spin loop must let the other threads run, or the
/// model never ends.
#[cfg(not(all(test, gaio_loom)))]
pub(crate) use std::hint::spin_loop;

#[cfg(all(test, gaio_loom))]
pub(crate) use loom::thread::yield_now;
#[cfg(not(all(test, gaio_loom)))]
pub(crate) use std::thread::yield_now;

/// Locks `m`; a panic while holding one of our locks leaves plain data behind, so keep going
/// (as `crate::conn::lock`, for this module's `Mutex`).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
