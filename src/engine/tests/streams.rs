//! Stream requests: FIFO per direction, the progress rules, EAGAIN in both modes, swap space,
//! deadlines and cancels, the submit tick.

use std::time::{Duration, Instant};

use crate::engine::Start;
use crate::request::{Kind, Outcome};

use super::fake::*;
use super::harness::*;

both!(
    fifo_per_direction,
    partial_write_continues,
    read_completes_on_any_data,
    read_full_only_when_full,
    zero_bytes_is_eof,
    write_of_zero_waits,
    failure_ends_with_io,
    swap_read_done_with_slice,
    no_swap_starves,
    starving_true_retries_at_once,
    starved_front_cancelled_lets_buffered_read_run,
    deadline_in_flight,
    cancel_in_flight,
    cancel_queued_and_unknown,
    deadline_tick,
    kernel_cancel_without_ending,
    connect_on_write_lane,
    shutdown_behind_writes,
);

fn fifo_per_direction<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    let b = h.read(&s, 8, vec![moved(3)]);
    let w = h.write(&s, 4, vec![flight()]);
    let w2 = h.write(&s, 4, vec![moved(4)]);
    // Only each direction's front started; the write did not wait for the read.
    assert_eq!(h.fake().starts(a), 1);
    assert_eq!(h.fake().starts(b), 0);
    assert_eq!(h.fake().starts(w), 1);
    assert_eq!(h.fake().starts(w2), 0);
    h.expect(&[]);
    h.complete(a, Outcome::Moved(2, None));
    // The front done, the next one starts (and completes at once).
    assert_eq!(h.fake().starts(b), 1);
    let rs = h.expect(&[a, b]);
    assert_eq!((rs[0].size, rs[1].size), (2, 3));
    assert_eq!(h.fake().starts(w2), 0, "the write direction still waits");
    h.complete(w, Outcome::Moved(4, None));
    h.expect(&[w, w2]);
    h.all_done();
}

fn partial_write_continues<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let w = h.write(&s, 10, vec![moved(4), moved(3), flight(), flight()]);
    h.expect(&[]);
    h.complete(w, Outcome::Moved(2, None));
    h.expect(&[]);
    // Restarted at once for the last byte.
    assert_eq!(h.fake().sizes(w), vec![0, 4, 7, 9]);
    h.complete(w, Outcome::Moved(1, None));
    let r = h.expect(&[w]);
    assert_eq!((r[0].size, err(&r[0])), (10, "ok"));
    h.all_done();
}

fn read_completes_on_any_data<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![moved(3)]);
    let b = h.read(&s, 8, vec![flight()]);
    h.complete(b, Outcome::Moved(1, None));
    let r = h.expect(&[a, b]);
    assert_eq!((r[0].size, err(&r[0])), (3, "ok"));
    assert_eq!((r[1].size, err(&r[1])), (1, "ok"));
    assert_eq!(h.fake().starts(a), 1);
    h.all_done();
}

fn read_full_only_when_full<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(3), moved(2), flight()]);
    h.expect(&[]);
    h.complete(a, Outcome::Moved(3, None));
    let r = h.expect(&[a]);
    assert_eq!((r[0].size, err(&r[0])), (8, "ok"));
    assert_eq!(h.fake().sizes(a), vec![0, 3, 5]);
    h.all_done();
}

fn zero_bytes_is_eof<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(3), moved(0)]);
    let b = h.read(&s, 8, vec![flight()]);
    h.complete(b, Outcome::Moved(0, None));
    let c = h.swap_read(&s, vec![moved(0)]);
    let r = h.expect(&[a, b, c]);
    assert_eq!((r[0].size, err(&r[0])), (3, "Eof"));
    assert_eq!((r[1].size, err(&r[1])), (0, "Eof"));
    assert_eq!((r[2].size, err(&r[2])), (0, "Eof"));
    h.all_done();
}

fn write_of_zero_waits<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let w = h.write(&s, 4, vec![moved(1), moved(0), moved(3)]);
    if R {
        // Waits for the next write edge; a read edge does not wake it.
        assert_eq!(h.fake().starts(w), 2);
        h.e.ready(s.id(), true, false);
        assert_eq!(h.fake().starts(w), 2);
        h.expect(&[]);
        h.e.ready(s.id(), false, true);
    }
    // Completion mode: started again at once, polling first.
    assert_eq!(h.fake().poll_firsts(w), vec![false, false, true]);
    let r = h.expect(&[w]);
    assert_eq!((r[0].size, err(&r[0])), (4, "ok"));
    h.all_done();
}

fn failure_ends_with_io<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(3), Start::Done(failed())]);
    let w = h.write(&s, 8, vec![flight()]);
    h.complete(w, failed());
    let r = h.expect(&[a, w]);
    assert_eq!((r[0].size, err(&r[0])), (3, "Io"));
    assert_eq!((r[1].size, err(&r[1])), (0, "Io"));
    h.all_done();
}

fn swap_read_done_with_slice<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let slice = fill(&mut h.swap, 0x5a, 5).unwrap();
    let a = h.swap_read(&s, vec![Start::Done(Outcome::Moved(5, Some(slice)))]);
    let b = h.swap_read(&s, vec![flight()]);
    let slice = fill(&mut h.swap, 0x3c, 7).unwrap();
    h.complete(b, Outcome::Moved(7, Some(slice)));
    let r = h.expect(&[a, b]);
    assert!(r[0].buffer.is_swap() && r[1].buffer.is_swap());
    assert_eq!(r[0].data(), &[0x5a; 5]);
    assert_eq!(r[1].data(), &[0x3c; 7]);
    // A swap read's data without a slice is an error, not a panic.
    let c = h.swap_read(&s, vec![moved(3)]);
    let r = h.expect(&[c]);
    assert_eq!(err(&r[0]), "Io");
    h.all_done();
}

fn no_swap_starves<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let t = h.sock();
    let a = h.swap_read(&s, vec![Start::Done(Outcome::NoSwap), flight()]);
    let b = h.swap_read(&s, vec![flight()]);
    // Another connection's swap read starves too; its writes are unaffected.
    let c = h.swap_read(&t, vec![flight(), flight()]);
    h.complete(c, Outcome::NoSwap);
    let w = h.write(&t, 2, vec![moved(2)]);
    h.expect(&[w]);
    assert_eq!(h.fake().count(&Call::Starving), 2);
    assert_eq!(
        (h.fake().starts(a), h.fake().starts(b), h.fake().starts(c)),
        (1, 0, 1)
    );
    // A readiness edge does not restart a starved reader.
    h.e.ready(s.id(), true, true);
    h.e.ready(t.id(), true, true);
    assert_eq!(h.fake().starts(a), 1);
    assert_eq!(h.fake().starts(c), 1);
    // Space came back.
    h.e.retry_starved();
    assert_eq!(h.fake().count(&Call::Retrying), 1);
    assert_eq!(h.fake().starts(a), 2);
    assert_eq!(h.fake().starts(c), 2);
    assert_eq!(h.fake().starts(b), 0);
    let slice = fill(&mut h.swap, 2, 2).unwrap();
    h.complete(c, Outcome::Moved(2, Some(slice)));
    h.expect(&[c]);
    let slice = fill(&mut h.swap, 1, 4).unwrap();
    h.complete(a, Outcome::Moved(4, Some(slice)));
    let r = h.expect(&[a]);
    assert_eq!(r[0].data(), &[1; 4]);
    drop(r);
    assert_eq!(h.fake().starts(b), 1);
    let slice = fill(&mut h.swap, 3, 1).unwrap();
    h.complete(b, Outcome::Moved(1, Some(slice)));
    h.expect(&[b]);
    // Nothing starved any more: a later retry starts nothing.
    h.e.retry_starved();
    h.all_done();
}

fn starving_true_retries_at_once<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    h.fake().starving.push_back(true);
    let slice = fill(&mut h.swap, 9, 3).unwrap();
    let a = h.swap_read(
        &s,
        vec![
            Start::Done(Outcome::NoSwap),
            Start::Done(Outcome::Moved(3, Some(slice))),
        ],
    );
    let calls: Vec<Call> = h
        .fake()
        .calls
        .iter()
        .filter(|c| !matches!(c, Call::Start { .. }))
        .cloned()
        .collect();
    assert_eq!(calls, vec![Call::Starving, Call::Retrying]);
    assert_eq!(h.fake().starts(a), 2);
    let r = h.expect(&[a]);
    assert_eq!(r[0].data(), &[9; 3]);
    h.all_done();
}

fn starved_front_cancelled_lets_buffered_read_run<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.swap_read(&s, vec![Start::Done(Outcome::NoSwap)]);
    let b = h.read(&s, 4, vec![moved(4)]);
    let c = h.swap_read(&s, vec![moved(1)]);
    assert_eq!(h.fake().starts(b), 0);
    assert!(h.cancel(&s, a));
    // The read with its own buffer needs no swap space; the swap read behind it waits.
    let r = h.expect(&[a, b]);
    assert_eq!(err(&r[0]), "Canceled");
    assert_eq!((err(&r[1]), r[1].size), ("ok", 4));
    assert_eq!(h.fake().starts(c), 0);
    h.e.retry_starved();
    assert_eq!(h.fake().starts(c), 1);
    h.expect(&[c]);
    h.all_done();
}

fn deadline_in_flight<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    // Ends with the deadline, keeping what it moved.
    let a = h.sub(
        Kind::ReadFull,
        &s,
        Some(vec![0; 8]),
        Some(past()),
        false,
        vec![moved(3), flight()],
    );
    // Queued behind: its own deadline (far) does not fire.
    let far = Instant::now() + Duration::from_secs(3600);
    let b = h.sub(
        Kind::Read,
        &s,
        Some(vec![0; 8]),
        Some(far),
        false,
        vec![flight()],
    );
    // In flight when its deadline passes, and completes anyway: its real result.
    let w = h.sub(
        Kind::Write,
        &s,
        Some(vec![0; 4]),
        Some(past()),
        false,
        vec![flight()],
    );
    h.e.expire();
    h.e.expire();
    assert_eq!(h.fake().cancels(a), 1);
    assert_eq!(h.fake().cancels(w), 1);
    assert_eq!(h.fake().cancels(b), 0);
    h.expect(&[]);
    h.complete(a, Outcome::Moved(2, None));
    assert_eq!(h.fake().starts(b), 1);
    h.complete(w, Outcome::Moved(4, None));
    let r = h.expect(&[a, w]);
    assert_eq!((err(&r[0]), r[0].size), ("Deadline", 5));
    assert_eq!((err(&r[1]), r[1].size), ("ok", 4));
    // Cancelled by the kernel: the ending's error, the partial size.
    let c = h.sub(
        Kind::Write,
        &s,
        Some(vec![0; 9]),
        Some(past()),
        false,
        vec![moved(2), flight()],
    );
    h.e.expire();
    h.complete(c, Outcome::Canceled);
    let r = h.expect(&[c]);
    assert_eq!((err(&r[0]), r[0].size), ("Deadline", 2));
    assert_eq!(h.fake().cancels(c), 1);
    h.complete(b, Outcome::Moved(1, None));
    h.expect(&[b]);
    h.all_done();
}

fn cancel_in_flight<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(1), flight()]);
    let b = h.read(&s, 8, vec![flight()]);
    assert!(h.cancel(&s, a));
    assert!(
        h.cancel(&s, a),
        "still pending: cancelling again is no error"
    );
    assert_eq!(h.fake().cancels(a), 1, "the driver is asked once");
    h.expect(&[]);
    assert_eq!(h.fake().starts(b), 0);
    // EAGAIN (or EINTR) after a cancel ends it rather than waiting.
    h.complete(a, Outcome::WouldBlock);
    let r = h.expect(&[a]);
    assert_eq!((err(&r[0]), r[0].size), ("Canceled", 1));
    assert!(!h.cancel(&s, a), "finished: false");
    // The next one started; cancelled, it completes with data after all: its real result.
    assert!(h.cancel(&s, b));
    h.complete(b, Outcome::Moved(5, None));
    let r = h.expect(&[b]);
    assert_eq!((err(&r[0]), r[0].size), ("ok", 5));
    assert!(!h.cancel(&s, b));
    h.all_done();
}

fn cancel_queued_and_unknown<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let t = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    let b = h.read(&s, 8, vec![moved(1)]);
    let c = h.read(&s, 8, vec![moved(2)]);
    // Queued (not in flight): ends at once, the driver is not involved.
    assert!(h.cancel(&s, b));
    assert_eq!(h.fake().cancels(b), 0);
    let r = h.expect(&[b]);
    assert_eq!(err(&r[0]), "Canceled");
    assert!(!h.cancel(&s, 9999), "unknown id");
    assert!(!h.cancel(&t, a), "right seq, wrong connection");
    h.complete(a, Outcome::Moved(1, None));
    h.expect(&[a, c]);
    h.all_done();
}

fn deadline_tick<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let t0 = Instant::now() + Duration::from_secs(100);
    // Nothing planned: any deadline is earlier.
    h.sub(
        Kind::Read,
        &s,
        Some(vec![0; 4]),
        Some(t0),
        false,
        vec![flight()],
    );
    assert!(h.tick);
    assert_eq!(h.e.plan_sleep(), Some(t0));
    // Later than the planned wake-up: no tick.
    h.sub(
        Kind::Read,
        &s,
        Some(vec![0; 4]),
        Some(t0 + Duration::from_secs(1)),
        false,
        vec![],
    );
    assert!(!h.tick);
    // Earlier: tick.
    let t1 = t0 - Duration::from_secs(50);
    h.sub(
        Kind::Write,
        &s,
        Some(vec![0; 4]),
        Some(t1),
        false,
        vec![flight()],
    );
    assert!(h.tick);
    // No deadline: no tick.
    h.sub(Kind::Write, &s, Some(vec![0; 4]), None, false, vec![]);
    assert!(!h.tick);
    // Finished at once: no deadline armed, no tick.
    let t2 = t1 - Duration::from_secs(10);
    h.sub(
        Kind::ReadAt,
        &s,
        Some(vec![0; 4]),
        Some(t2),
        false,
        vec![moved(4)],
    );
    assert!(!h.tick);
    assert_eq!(h.e.plan_sleep(), Some(t1));
    h.e.close();
    let held: Vec<u64> = h.fake().held.keys().copied().collect();
    for q in held {
        h.complete(q, Outcome::Canceled);
    }
    h.all_done();
}

/// ECANCELED with no ending of ours (io_uring's teardown): `ClosedPipe`, keeping the size;
/// the request behind starts.
fn kernel_cancel_without_ending<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.write(&s, 8, vec![moved(3), flight()]);
    let b = h.write(&s, 8, vec![moved(8)]);
    h.complete(a, Outcome::Canceled);
    let r = h.expect(&[a, b]);
    assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 3));
    assert_eq!((err(&r[1]), r[1].size), ("ok", 8));
    assert_eq!(h.fake().cancels(a), 0);
    h.all_done();
}

/// A connect is served in the write direction: reads are not held up by it, writes wait.
fn connect_on_write_lane<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let c = h.sub(Kind::Connect, &s, None, None, false, vec![flight()]);
    let w = h.write(&s, 4, vec![moved(4)]);
    let r = h.read(&s, 4, vec![moved(1)]);
    assert_eq!(h.fake().starts(w), 0);
    h.expect(&[r]);
    h.complete(c, Outcome::Finished);
    let got = h.expect(&[c, w]);
    assert!(got[0].is_ok() && got[0].accepted.is_none());
    h.all_done();
}

/// A shutdown is a write-direction request: it starts only once the writes before it
/// completed (one of them in several steps), its result comes after theirs, and a failure
/// (ENOTCONN) is its own `Io` result that does not stop the request behind it.
fn shutdown_behind_writes<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let w = h.write(&s, 10, vec![moved(4), flight()]);
    let sd = h.sub(
        Kind::Shutdown,
        &s,
        None,
        None,
        false,
        vec![Start::Done(Outcome::Finished)],
    );
    let enotconn = Start::Done(Outcome::Failed(std::io::Error::from_raw_os_error(
        libc::ENOTCONN,
    )));
    let sd2 = h.sub(Kind::Shutdown, &s, None, None, false, vec![enotconn]);
    let w2 = h.write(&s, 2, vec![moved(2)]);
    assert_eq!(h.fake().starts(sd), 0, "the shutdown waits for the write");
    h.expect(&[]);
    h.complete(w, Outcome::Moved(6, None));
    let got = h.expect(&[w, sd, sd2, w2]);
    assert_eq!(got[0].size, 10);
    assert_eq!((got[1].op, got[1].size), (crate::OpType::Shutdown, 0));
    assert!(got[1].is_ok() && got[1].addr.is_none());
    assert!(
        matches!(&got[2].error, Some(crate::Error::Io(e)) if e.raw_os_error() == Some(libc::ENOTCONN)),
        "{:?}",
        got[2].error
    );
    assert!(got[3].is_ok());
    h.all_done();
}

/// EAGAIN in readiness mode: the request waits for `ready`; one submitted with `poll_first`
/// (it met EAGAIN on the submitting thread) is attempted at once only if an edge came while
/// the direction's queue was empty.
#[test]
fn readiness_waits_for_edge() {
    let mut h = H::<true>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![eagain(), moved(2)]);
    assert_eq!(h.fake().starts(a), 1);
    h.e.ready(s.id(), false, true);
    assert_eq!(h.fake().starts(a), 1, "a write edge does not serve reads");
    h.e.ready(s.id(), true, false);
    assert_eq!(h.fake().poll_firsts(a), vec![false, true]);
    h.expect(&[a]);
    // No edge since the EAGAIN: a poll-first submission waits.
    let b = h.sub(Kind::Read, &s, Some(vec![0; 8]), None, true, vec![moved(1)]);
    assert_eq!(h.fake().starts(b), 0);
    h.e.ready(s.id(), true, false);
    assert_eq!(h.fake().starts(b), 1);
    h.expect(&[b]);
    // An edge came while the queue was empty: attempted at once.
    h.e.ready(s.id(), true, false);
    let c = h.sub(
        Kind::Read,
        &s,
        Some(vec![0; 8]),
        None,
        true,
        vec![eagain(), moved(1)],
    );
    assert_eq!(h.fake().starts(c), 1);
    // ... and its EAGAIN used the edge up.
    h.e.ready(s.id(), true, false);
    h.expect(&[c]);
    let d = h.sub(Kind::Read, &s, Some(vec![0; 8]), None, true, vec![moved(1)]);
    assert_eq!(
        h.fake().starts(d),
        0,
        "the last attempt met EAGAIN; no edge since"
    );
    // Without poll_first: attempted regardless.
    let t = h.sock();
    h.e.ready(t.id(), true, false);
    let e = h.read(&t, 8, vec![eagain()]);
    let f = h.read(&t, 8, vec![]);
    h.free(&t);
    h.expect(&[e, f]);
    let w = h.write(&s, 8, vec![eagain()]);
    h.free(&s);
    h.expect(&[d, w]);
    assert!(peer_closed(&s.peer));
    h.all_done();
}

/// EAGAIN in completion mode: started again at once, with `poll_first` set; a poll-first
/// submission is started at once (the driver polls).
#[test]
fn completion_restarts_polling_first() {
    let mut h = H::<false>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![eagain(), flight(), flight()]);
    assert_eq!(h.fake().poll_firsts(a), vec![false, true]);
    h.complete(a, Outcome::WouldBlock);
    assert_eq!(h.fake().poll_firsts(a), vec![false, true, true]);
    h.complete(a, Outcome::Moved(2, None));
    let r = h.expect(&[a]);
    assert_eq!(r[0].size, 2);
    let b = h.sub(
        Kind::Write,
        &s,
        Some(vec![0; 4]),
        None,
        true,
        vec![flight()],
    );
    assert_eq!(h.fake().poll_firsts(b), vec![true]);
    // EINTR (or a stale ENOBUFS): again at once, as it was.
    h.complete(b, Outcome::Retry);
    assert_eq!(h.fake().poll_firsts(b), vec![true, false]);
    h.complete(b, Outcome::Moved(4, None));
    h.expect(&[b]);
    h.all_done();
}
