//! File requests: side by side, the fsync barrier, EOF and short reads, release.

use crate::engine::{LoopMsg, Start};
use crate::request::{Kind, Outcome};

use super::fake::*;
use super::harness::*;

both!(
    files_side_by_side,
    fsync_barrier,
    fsync_waiting_ended,
    read_at_eof_and_short,
    free_with_file_in_flight,
    completed_message_checks_seq,
);

fn files_side_by_side<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let w1 = h.file(Kind::WriteAt, &f, 8, vec![]);
    let r1 = h.file(Kind::ReadAt, &f, 8, vec![]);
    let w2 = h.file(Kind::WriteAt, &f, 8, vec![moved(3), eagain(), flight()]);
    for q in [w1, r1] {
        assert_eq!(h.fake().starts(q), 1);
    }
    // A file request is never polled: EAGAIN starts it again at once.
    assert_eq!(h.fake().starts(w2), 3);
    h.complete(w2, Outcome::Moved(5, None));
    h.complete(r1, Outcome::Moved(8, None));
    h.complete(w1, Outcome::Moved(4, None));
    let w1_again = h.held(w1);
    assert!(w1_again, "a short write_at continues");
    h.complete(w1, Outcome::Moved(4, None));
    let r = h.expect(&[w2, r1, w1]);
    assert!(r.iter().all(|r| r.size == 8 && r.is_ok()));
    h.all_done();
}

fn fsync_barrier<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let w1 = h.file(Kind::WriteAt, &f, 4, vec![flight()]);
    let w2 = h.file(Kind::WriteAt, &f, 4, vec![flight()]);
    let r1 = h.file(Kind::ReadAt, &f, 4, vec![flight()]);
    let s1 = h.file(Kind::Fsync, &f, 0, vec![flight()]);
    let w3 = h.file(Kind::WriteAt, &f, 4, vec![flight()]);
    let s2 = h.file(Kind::Fdatasync, &f, 0, vec![flight()]);
    // The fsyncs wait; the write after the first fsync does not wait for it.
    assert_eq!(h.fake().starts(s1), 0);
    assert_eq!(h.fake().starts(s2), 0);
    assert_eq!(h.fake().starts(w3), 1);
    h.complete(w2, Outcome::Moved(4, None));
    h.complete(r1, Outcome::Moved(4, None));
    assert_eq!(h.fake().starts(s1), 0);
    // The last earlier write done: the first fsync starts; the second still waits for w3.
    h.complete(w1, Outcome::Moved(4, None));
    assert_eq!(h.fake().starts(s1), 1);
    assert_eq!(h.fake().starts(s2), 0);
    h.complete(w3, failed());
    assert_eq!(
        h.fake().starts(s2),
        1,
        "a failed write releases the barrier too"
    );
    h.complete(s2, Outcome::Finished);
    h.complete(s1, Outcome::Finished);
    let r = h.expect(&[w2, r1, w1, w3, s2, s1]);
    assert_eq!(err(&r[3]), "Io");
    assert!(r[4].is_ok() && r[5].is_ok());
    // No earlier write: starts at once.
    let s3 = h.file(Kind::Fsync, &f, 0, vec![Start::Done(Outcome::Finished)]);
    h.expect(&[s3]);
    h.all_done();
}

fn fsync_waiting_ended<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let w1 = h.file(Kind::WriteAt, &f, 4, vec![flight()]);
    let s1 = h.file(Kind::Fsync, &f, 0, vec![]);
    let s2 = h.sub(Kind::Fsync, &f, None, Some(past()), false, vec![]);
    let s3 = h.file(Kind::Fsync, &f, 0, vec![flight()]);
    assert!(h.cancel(&f, s1));
    h.e.expire();
    let r = h.expect(&[s1, s2]);
    assert_eq!((err(&r[0]), err(&r[1])), ("Canceled", "Deadline"));
    assert_eq!(h.fake().cancels(s1) + h.fake().cancels(s2), 0);
    h.complete(w1, Outcome::Moved(4, None));
    assert_eq!(h.fake().starts(s1) + h.fake().starts(s2), 0);
    assert_eq!(h.fake().starts(s3), 1);
    // An fsync in flight when cancelled ends with the cancel, even when it finished.
    assert!(h.cancel(&f, s3));
    assert_eq!(h.fake().cancels(s3), 1);
    h.complete(s3, Outcome::Finished);
    let r = h.expect(&[w1, s3]);
    assert_eq!(err(&r[1]), "Canceled");
    h.all_done();
}

fn read_at_eof_and_short<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let a = h.file(Kind::ReadAt, &f, 8, vec![moved(0)]);
    let b = h.file(Kind::ReadAt, &f, 8, vec![moved(3), flight()]);
    h.complete(b, Outcome::Moved(0, None));
    let c = h.file(Kind::ReadAt, &f, 8, vec![moved(8)]);
    let r = h.expect(&[a, b, c]);
    assert_eq!((err(&r[0]), r[0].size), ("Eof", 0));
    assert_eq!((err(&r[1]), r[1].size), ("ok", 3));
    assert_eq!((err(&r[2]), r[2].size), ("ok", 8));
    h.all_done();
}

fn free_with_file_in_flight<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let w1 = h.file(Kind::WriteAt, &f, 8, vec![flight()]);
    let s1 = h.file(Kind::Fsync, &f, 0, vec![]);
    let r1 = h.file(Kind::ReadAt, &f, 8, vec![moved(2), flight()]);
    h.free(&f);
    assert_eq!((h.fake().cancels(w1), h.fake().cancels(r1)), (1, 1));
    let r = h.expect(&[s1]);
    assert_eq!(err(&r[0]), "ClosedPipe");
    h.complete(r1, Outcome::Moved(1, None));
    let r = h.expect(&[r1]);
    assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 3));
    assert!(!peer_closed(&f.peer));
    assert_eq!(h.forgets(&f), 0);
    h.complete(w1, Outcome::Moved(8, None));
    let r = h.expect(&[w1]);
    assert_eq!((err(&r[0]), r[0].size), ("ok", 8));
    assert!(peer_closed(&f.peer));
    assert_eq!(h.forgets(&f), 1);
    assert_eq!(h.fake().starts(s1), 0);
    h.all_done();
}

/// `LoopMsg::Completed` (a file thread's outcome) reaches only the request it was for: a stale
/// one (same slab key, another request) is dropped.
fn completed_message_checks_seq<const R: bool>() {
    let mut h = H::<R>::new();
    let f = h.sock();
    let a = h.file(Kind::ReadAt, &f, 8, vec![flight()]);
    let (key, _) = h.fake().held[&a];
    h.e.handle(LoopMsg::Completed {
        key,
        seq: a + 100,
        outcome: Outcome::Moved(8, None),
    });
    h.expect(&[]);
    assert_eq!(h.e.in_flight(), 1);
    h.fake().held.remove(&a);
    h.e.handle(LoopMsg::Completed {
        key,
        seq: a,
        outcome: Outcome::Moved(8, None),
    });
    let r = h.expect(&[a]);
    assert_eq!((err(&r[0]), r[0].size), ("ok", 8));
    // Late: the request is gone.
    h.e.handle(LoopMsg::Completed {
        key,
        seq: a,
        outcome: Outcome::Moved(8, None),
    });
    h.all_done();
}
