//! The submit-side fast path's bookkeeping: per connection and direction, whether the loop
//! holds requests and whether a submitting thread is attempting one itself right now.
//!
//! A read or write submitted while its direction has nothing pending at the loop is attempted
//! at once on the submitting thread (the immediate attempt gaio makes on the loop thread, moved
//! to where the request starts). When it completes there, its result goes straight to the
//! result queue and no thread is woken; only a request that would block travels to the loop.
//! This keeps a busy connection's steady state on the consumer's thread, as a hand-written
//! readiness loop would, while an idle one still waits in the loop.
//!
//! The word per direction holds:
//! - the number of requests handed to the loop whose results are not yet in the result queue
//!   (the loop counts one down as it publishes each result, under the queue's lock, so a later
//!   inline result can never overtake an earlier one of the same direction);
//! - `INLINE`: a submitter is in its non-blocking syscall on the descriptor now; the loop waits
//!   for it before it closes the descriptor (so a syscall never meets a reused fd number);
//! - `ORDER`: a submitter holds the direction from its claim until its request is either
//!   complete or handed to the backend; other submitters wait for it (so requests reach the
//!   backend in submission order: a write that went out in part is never overtaken by the
//!   next one). Held without `INLINE` during the hand-off, which on epoll takes the state's
//!   lock, under which the loop may be waiting for `INLINE` to clear;
//! - `CLOSED`: the loop released the connection; later requests go to the loop, which refuses
//!   them.

use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;

const INLINE: u64 = 1 << 63;
const CLOSED: u64 = 1 << 62;
const ORDER: u64 = 1 << 61;
/// The pending count: the low 61 bits of the word.
const COUNT: u64 = ORDER - 1;

// The count can never reach the flags: every request it counts is a distinct live request
// (sent to the engine, or in its queues) until its result is published, so there can be no
// more of them than the address space holds requests, each of at least
// `request::MIN_REQUEST_BYTES` (asserted there). With 61 bits (a 64-bit word), that bound is
// far below `COUNT`; the 29-bit count of a 32-bit word could in principle have overflowed into
// `ORDER` with 2^29 requests pending on one connection.
pub(crate) const MAX_PENDING: u128 = COUNT as u128;
const _: () = assert!(MAX_PENDING >= (usize::MAX as u128 + 1) / 64);

/// Read or write: the two FIFO directions of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Read = 0,
    Write = 1,
}

/// What a submitter may do with its request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Nothing is pending in this direction: attempt it here, then call [`Lanes::done_inline`]
    /// or [`Lanes::forward`].
    Inline,
    /// Counted as pending at the loop: send it there.
    Queue,
}

/// Both directions' words of one connection.
#[derive(Default)]
pub(crate) struct Lanes([AtomicU64; 2]);

impl Lanes {
    /// Claims the direction for an inline attempt if nothing is pending there and `inline` is
    /// allowed; otherwise counts the request as pending at the loop.
    pub(crate) fn claim(&self, lane: Lane, inline: bool) -> Claim {
        let w = &self.0[lane as usize];
        let mut spins = 0u32;
        let mut s = w.load(Ordering::Acquire);
        loop {
            if s & (INLINE | ORDER) != 0 {
                // Another thread is attempting a request of this direction: ours must reach
                // the loop after it, so wait for that attempt (one non-blocking syscall, and
                // its hand-off if it would block).
                backoff(&mut spins);
                s = w.load(Ordering::Acquire);
                continue;
            }
            debug_assert!(s & COUNT < COUNT, "lane count overflow");
            let (next, claim) = if inline && s == 0 {
                (INLINE | ORDER, Claim::Inline)
            } else {
                (s + 1, Claim::Queue)
            };
            match w.compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return claim,
                Err(now) => s = now,
            }
        }
    }

    /// The inline attempt finished the request (its result is already queued), or the request
    /// it forwarded has been handed to the backend: the direction is free again.
    pub(crate) fn done_inline(&self, lane: Lane) {
        self.0[lane as usize].fetch_and(!(INLINE | ORDER), Ordering::Release);
    }

    /// The inline attempt would block: count the request as pending at the loop and end the
    /// syscall part of the claim (the loop may close the descriptor from now on), keeping its
    /// order part. Call before handing it to the backend, then
    /// [`done_inline`](Lanes::done_inline) after.
    pub(crate) fn forward(&self, lane: Lane) {
        // One atomic step: count + 1, INLINE (set: this thread holds it) cleared.
        let before = self.0[lane as usize].fetch_sub(INLINE - 1, Ordering::AcqRel);
        debug_assert!(before & INLINE != 0, "forward without an inline claim");
    }

    /// The loop published the result of a request it was handed (under the queue's lock).
    pub(crate) fn delivered(&self, lane: Lane) {
        let before = self.0[lane as usize].fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before & COUNT != 0, "lane count underflow");
    }

    /// The loop releases the connection: no inline attempt starts after this returns, and none
    /// is still running.
    pub(crate) fn close(&self) {
        for w in &self.0 {
            let mut spins = 0u32;
            while w.fetch_or(CLOSED, Ordering::AcqRel) & INLINE != 0 {
                backoff(&mut spins);
            }
        }
    }

    /// Requests of `lane` pending at the loop (tests).
    /// Holds `lane`'s syscall part for a call on the descriptor that is not a request
    /// (`Watcher::peer_addr`, `local_addr`): like an inline claim it keeps
    /// [`close`](Lanes::close), and so the release that closes the descriptor, waiting until
    /// [`unhold`](Lanes::unhold), but it takes no place in the lane's order and works with
    /// requests pending. It waits for a running inline attempt (and its hand-off) to end, and
    /// claims wait for it. False, holding nothing, once the lanes are closed: the descriptor
    /// may be gone.
    pub(crate) fn hold(&self, lane: Lane) -> bool {
        let w = &self.0[lane as usize];
        let mut spins = 0u32;
        let mut s = w.load(Ordering::Acquire);
        loop {
            if s & CLOSED != 0 {
                return false;
            }
            // ORDER too: an inline holder's `done_inline` clears INLINE with it.
            if s & (INLINE | ORDER) != 0 {
                backoff(&mut spins);
                s = w.load(Ordering::Acquire);
                continue;
            }
            match w.compare_exchange_weak(s, s | INLINE, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Ends a [`hold`](Lanes::hold) that returned true.
    pub(crate) fn unhold(&self, lane: Lane) {
        let before = self.0[lane as usize].fetch_and(!INLINE, Ordering::Release);
        debug_assert!(before & INLINE != 0, "unhold without a hold");
    }

    #[cfg(test)]
    fn pending(&self, lane: Lane) -> u64 {
        self.0[lane as usize].load(Ordering::Acquire) & COUNT
    }
}

/// Spin briefly, then yield: the other side holds the word for one non-blocking syscall, but
/// may have been preempted in it.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        crate::sync::spin_loop();
    } else {
        crate::sync::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_only_when_nothing_is_pending() {
        let l = Lanes::default();
        assert_eq!(l.claim(Lane::Write, true), Claim::Inline);
        l.forward(Lane::Write);
        l.done_inline(Lane::Write);
        assert_eq!(l.pending(Lane::Write), 1);
        // One pending at the loop: the next goes there too, even though inline is allowed.
        assert_eq!(l.claim(Lane::Write, true), Claim::Queue);
        assert_eq!(l.pending(Lane::Write), 2);
        // The read direction is independent.
        assert_eq!(l.claim(Lane::Read, true), Claim::Inline);
        l.done_inline(Lane::Read);
        l.delivered(Lane::Write);
        l.delivered(Lane::Write);
        assert_eq!(l.claim(Lane::Write, true), Claim::Inline);
        l.done_inline(Lane::Write);
        assert_eq!(l.claim(Lane::Write, false), Claim::Queue);
    }

    /// The pending count holds more than 2^29 - 1 requests (a 29-bit field, whose next
    /// increment used to spill into the `ORDER` flag and make every later claim spin forever)
    /// without touching the flags.
    #[test]
    fn count_beyond_29_bits_leaves_the_flags_alone() {
        let l = Lanes::default();
        let old_max = (1u64 << 29) - 1;
        l.0[Lane::Write as usize].store(old_max as _, Ordering::Release);
        assert_eq!(l.claim(Lane::Write, true), Claim::Queue);
        assert_eq!(l.pending(Lane::Write), old_max + 1, "the count overflowed");
        // The flags are clear: the next claim queues at once (with `ORDER` set by an overflow
        // it would spin), and the count goes down again as results are published.
        assert_eq!(l.claim(Lane::Write, true), Claim::Queue);
        assert_eq!(l.pending(Lane::Write), old_max + 2);
        l.delivered(Lane::Write);
        l.delivered(Lane::Write);
        assert_eq!(l.pending(Lane::Write), old_max);
    }

    #[test]
    fn closed_lanes_send_everything_to_the_loop() {
        let l = Lanes::default();
        l.close();
        assert_eq!(l.claim(Lane::Read, true), Claim::Queue);
        assert_eq!(l.pending(Lane::Read), 1);
    }

    #[test]
    fn a_hold_keeps_close_waiting_and_fails_after_it() {
        let l = std::sync::Arc::new(Lanes::default());
        assert_eq!(l.claim(Lane::Read, false), Claim::Queue); // pending requests: still holds
        assert!(l.hold(Lane::Read));
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l2, c2) = (l.clone(), closed.clone());
        let t = std::thread::spawn(move || {
            l2.close();
            c2.store(true, Ordering::SeqCst);
        });
        // `close` cannot return while the hold lasts.
        for _ in 0..1000 {
            assert!(
                !closed.load(Ordering::SeqCst),
                "close returned during a hold"
            );
            std::thread::yield_now();
        }
        l.unhold(Lane::Read);
        t.join().unwrap();
        assert!(!l.hold(Lane::Read), "a hold after close");
        assert_eq!(l.pending(Lane::Read), 1);
    }

    #[test]
    fn a_claim_waits_for_a_running_inline_attempt() {
        let l = std::sync::Arc::new(Lanes::default());
        assert_eq!(l.claim(Lane::Read, true), Claim::Inline);
        let l2 = l.clone();
        let t = std::thread::spawn(move || l2.claim(Lane::Read, true));
        // The attempt forwards its request: the waiting claim must then queue behind it.
        l.forward(Lane::Read);
        l.done_inline(Lane::Read);
        assert_eq!(t.join().unwrap(), Claim::Queue);
        assert_eq!(l.pending(Lane::Read), 2);
    }
}

/// `loom` models of the claim words (`RUSTFLAGS="--cfg gaio_loom" cargo test --release --lib
/// loom`). A submitter's "syscall" and "hand-off to the backend" are steps on model state; the
/// loop thread publishes results (`delivered`) and closes the connection.
#[cfg(all(test, gaio_loom))]
mod loom_model {
    use super::*;
    use crate::sync::{lock, AtomicBool, AtomicUsize, Condvar, Mutex};
    use loom::sync::Arc;
    use loom::thread;

    /// How an inline attempt ends.
    #[derive(Clone, Copy)]
    enum Outcome {
        /// The syscall finished the request: its result is queued on the spot.
        Completes,
        /// It would block: the request goes to the backend.
        WouldBlock,
    }

    #[derive(Default)]
    struct World {
        lanes: Lanes,
        /// Submitters in their inline syscall now.
        in_syscall: AtomicUsize,
        /// Claim order: a ticket drawn right after `claim` returns (while an inline holder
        /// still holds ORDER, so it orders every claim the ORDER part makes wait).
        tickets: AtomicUsize,
        /// Requests as the backend received them, (ticket, forwarded by an inline holder),
        /// and the number of submitters finished.
        backend: Mutex<(Vec<(usize, bool)>, usize)>,
        /// Wakes the loop.
        wake: Condvar,
        /// `Lanes::close` has returned.
        closed: AtomicBool,
    }

    impl World {
        /// One submitter: claim, then the syscall and its outcome, or the trip to the loop.
        fn submit(&self, outcome: Outcome) {
            let claim = self.lanes.claim(Lane::Write, true);
            let ticket = self.tickets.fetch_add(1, Ordering::SeqCst);
            match claim {
                Claim::Inline => {
                    assert_eq!(
                        self.in_syscall.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two inline holders at once"
                    );
                    assert!(
                        !self.closed.load(Ordering::SeqCst),
                        "an inline attempt runs after close returned"
                    );
                    // (the syscall)
                    assert!(
                        !self.closed.load(Ordering::SeqCst),
                        "close returned during an inline attempt"
                    );
                    self.in_syscall.fetch_sub(1, Ordering::SeqCst);
                    match outcome {
                        Outcome::Completes => self.lanes.done_inline(Lane::Write),
                        Outcome::WouldBlock => {
                            self.lanes.forward(Lane::Write);
                            lock(&self.backend).0.push((ticket, true));
                            self.lanes.done_inline(Lane::Write);
                        }
                    }
                }
                Claim::Queue => lock(&self.backend).0.push((ticket, false)),
            }
            lock(&self.backend).1 += 1;
            self.wake.notify_one();
        }

        /// The loop: publishes results of what the backend holds, in order, closing the
        /// connection after `close_after` of them (or never); ends once every submitter is
        /// done and everything is delivered. It sleeps on `wake` (no polling: a spinning
        /// model thread multiplies the schedules loom has to explore).
        fn run_loop(&self, submitters: usize, close_after: Option<usize>) {
            let mut delivered = 0;
            loop {
                if close_after == Some(delivered) && !self.closed.load(Ordering::SeqCst) {
                    self.lanes.close();
                    self.closed.store(true, Ordering::SeqCst);
                }
                let mut g = lock(&self.backend);
                while g.0.len() == delivered && g.1 < submitters {
                    g = self.wake.wait(g).unwrap();
                }
                if g.0.len() == delivered {
                    return;
                }
                drop(g);
                // Under the queue's lock in the crate; the count must cover it.
                let word = self.lanes.0[Lane::Write as usize].fetch_or(0, Ordering::AcqRel);
                assert!(word & COUNT != 0, "lane count underflow: {word:#x}");
                self.lanes.delivered(Lane::Write);
                delivered += 1;
            }
        }

        /// An ORDER holder's request is never overtaken: every request claimed after it
        /// reaches the backend after it.
        fn check_order(&self) {
            let backend = &lock(&self.backend).0;
            for (pos, &(ticket, forwarded)) in backend.iter().enumerate() {
                if forwarded {
                    for &(t, _) in &backend[..pos] {
                        assert!(
                            t < ticket,
                            "request {t} reached the backend before the earlier-claimed {ticket} \
                             forwarded by its inline holder: {backend:?}"
                        );
                    }
                }
            }
        }
    }

    fn run(outcomes: &'static [Outcome], close_after: Option<usize>, preemptions: usize) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(preemptions);
        b.max_branches = 100_000;
        b.check(move || {
            let w = Arc::new(World::default());
            let subs: Vec<_> = outcomes
                .iter()
                .map(|&o| {
                    let w = w.clone();
                    thread::spawn(move || w.submit(o))
                })
                .collect();
            w.run_loop(outcomes.len(), close_after);
            for s in subs {
                s.join().unwrap();
            }
            w.check_order();
            let word = w.lanes.0[Lane::Write as usize].load(Ordering::SeqCst);
            let closed = if w.closed.load(Ordering::SeqCst) {
                CLOSED
            } else {
                0
            };
            assert_eq!(word, closed, "the word after everything was delivered");
        });
    }

    /// Two submitters whose inline attempts would block, with the loop delivering: one inline
    /// holder at a time, claim order kept, the count back to zero.
    #[test]
    fn loom_two_forwarding_submitters_keep_order() {
        run(&[Outcome::WouldBlock, Outcome::WouldBlock], None, 3);
    }

    /// Three submitters, one of them completing inline.
    #[test]
    fn loom_three_submitters_keep_order() {
        run(
            &[Outcome::WouldBlock, Outcome::Completes, Outcome::WouldBlock],
            None,
            1,
        );
    }

    /// The loop closes the connection while two submitters claim: after `close` returns no
    /// inline attempt runs or starts.
    #[test]
    fn loom_close_waits_for_and_stops_inline_attempts() {
        run(&[Outcome::WouldBlock, Outcome::Completes], Some(0), 2);
    }

    /// Close after the first delivery.
    #[test]
    fn loom_close_after_a_delivery() {
        run(&[Outcome::WouldBlock, Outcome::WouldBlock], Some(1), 3);
    }
}
