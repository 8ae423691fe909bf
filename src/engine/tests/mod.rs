//! The engine against a fake driver whose every answer the test scripts: what `start` comes
//! back with (done at once with an outcome, or in flight until the test calls
//! `Engine::complete`), whether swap space is back, whether an adopt is refused. Every call
//! the engine makes is recorded, so the tests assert on what the engine asked of its driver as
//! well as on the results it delivered.
//!
//! Both driver modes run each test: readiness (`READINESS = true`, epoll-like: an EAGAIN waits
//! for `Engine::ready`) and completion (`false`, io_uring-like: the request is started again
//! at once with `poll_first` set). Slots hold one end of a real socket pair; the test keeps
//! the other end and sees the engine's end close (EOF on a peek), and the fake checks at each
//! `forget` that the descriptor is still open and that nothing of its connection is in flight.
//!
//! `fake.rs` is the driver, `harness.rs` the engine around it and the checks every result
//! goes through; the tests are `streams.rs`, `lifecycle.rs` (accept, free, detach, drop,
//! close), `files.rs` and `random.rs` (a seeded random interleaving and its invariants).
//! Run them with `cargo test --release --lib engine`.

/// Runs a generic test in both driver modes.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn readiness() {
                super::$name::<true>()
            }
            #[test]
            fn completion() {
                super::$name::<false>()
            }
        }
    )*};
}

mod fake;
mod harness;

mod files;
mod lifecycle;
mod random;
mod streams;
