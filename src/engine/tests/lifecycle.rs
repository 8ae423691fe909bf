//! Connections coming and going: accept, free, detach, a dropped handle, close.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use crate::conn::ConnId;
use crate::engine::{LoopMsg, Start};
use crate::request::{Kind, Outcome};

use super::fake::*;
use super::harness::*;

both!(
    free_in_flight,
    submit_to_freed_conn,
    detach_returns_descriptor,
    close_counts_down,
    dropped_handle_releases,
    accept_adopts,
    accept_adopt_error,
    accept_completing_after_close,
);

fn free_in_flight<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read_full(&s, 8, vec![moved(2), flight()]);
    let b = h.read(&s, 8, vec![]);
    let c = h.read(&s, 8, vec![]);
    // Readiness: waits for an edge (not in flight); completion: in flight.
    let w = h.write(&s, 8, vec![moved(3), if R { eagain() } else { flight() }]);
    let w2 = h.write(&s, 8, vec![]);
    h.free(&s);
    assert_eq!(h.fake().cancels(a), 1);
    if R {
        // The write direction had nothing in flight: ended at once, in order.
        let r = h.expect(&[w, w2]);
        assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 3));
    } else {
        assert_eq!(h.fake().cancels(w), 1);
        h.expect(&[]);
        h.complete(w, Outcome::Moved(2, None));
        let r = h.expect(&[w, w2]);
        assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 5));
    }
    // Nothing forgotten or closed while the read is in flight.
    assert_eq!(h.forgets(&s), 0);
    assert!(!peer_closed(&s.peer));
    h.free(&s);
    assert_eq!(h.fake().cancels(a), 1, "a second free asks nothing more");
    h.complete(a, Outcome::Canceled);
    let r = h.expect(&[a, b, c]);
    assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 2));
    assert_eq!(err(&r[1]), "ClosedPipe");
    assert_eq!(err(&r[2]), "ClosedPipe");
    assert_eq!(h.forgets(&s), 1);
    assert!(peer_closed(&s.peer));
    assert_eq!(h.fake().starts(b), 0);
    h.all_done();
}

fn submit_to_freed_conn<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    h.free(&s);
    // Released, descriptor not yet closed.
    let b = h.read(&s, 8, vec![]);
    let r = h.expect(&[b]);
    assert_eq!(err(&r[0]), "ConnClosed");
    h.complete(a, Outcome::Moved(3, None));
    let r = h.expect(&[a]);
    assert_eq!((err(&r[0]), r[0].size), ("ok", 3));
    assert!(peer_closed(&s.peer));
    // Gone from the table.
    let c = h.write(&s, 8, vec![]);
    let d = h.file(Kind::WriteAt, &s, 8, vec![]);
    let r = h.expect(&[c, d]);
    assert_eq!((err(&r[0]), err(&r[1])), ("ConnClosed", "ConnClosed"));
    assert_eq!(
        h.fake().starts(b) + h.fake().starts(c) + h.fake().starts(d),
        0
    );
    assert_eq!(h.forgets(&s), 1);
    h.all_done();
}

fn detach_returns_descriptor<const R: bool>() {
    let mut h = H::<R>::new();
    // Idle: the descriptor comes back at once, open.
    let s = h.sock();
    // Waiting for swap space: pending, not in flight.
    let q = h.swap_read(&s, vec![Start::Done(Outcome::NoSwap)]);
    let (tx, rx) = crossbeam_channel::bounded(1);
    s.conn.0.freed.store(true, Ordering::Release);
    h.e.detach(s.id(), tx);
    let fd = rx.try_recv().unwrap().expect("descriptor back");
    assert_eq!(ino(fd.as_raw_fd()), Some(s.ino));
    assert!(!peer_closed(&s.peer), "detached, not closed");
    assert_eq!(h.forgets(&s), 1);
    let r = h.expect(&[q]);
    assert_eq!(err(&r[0]), "ClosedPipe");
    drop(fd);
    assert!(peer_closed(&s.peer));
    // A second detach (or one after free): None.
    let (tx, rx) = crossbeam_channel::bounded(1);
    h.e.detach(s.id(), tx);
    assert!(rx.try_recv().unwrap().is_none());

    // Busy: the reply waits for the request in flight.
    let t = h.sock();
    let a = h.write(&t, 4, vec![flight()]);
    let (tx, rx) = crossbeam_channel::bounded(1);
    h.e.detach(t.id(), tx);
    assert!(rx.try_recv().is_err());
    assert_eq!(h.fake().cancels(a), 1);
    h.complete(a, Outcome::Moved(1, None));
    let fd = rx.try_recv().unwrap().expect("descriptor back");
    assert_eq!(ino(fd.as_raw_fd()), Some(t.ino));
    let r = h.expect(&[a]);
    assert_eq!((err(&r[0]), r[0].size), ("ClosedPipe", 1));
    // Freed first: detach finds it closing.
    let u = h.sock();
    let b = h.read(&u, 4, vec![flight()]);
    h.free(&u);
    let (tx, rx) = crossbeam_channel::bounded(1);
    h.e.detach(u.id(), tx);
    assert!(rx.try_recv().unwrap().is_none());
    h.complete(b, Outcome::Canceled);
    h.expect(&[b]);
    assert!(peer_closed(&u.peer));
    h.all_done();
}

fn close_counts_down<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let t = h.sock();
    let idle = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    let b = h.read(&s, 8, vec![]);
    let w = h.write(&t, 8, vec![flight()]);
    let f = h.file(Kind::WriteAt, &t, 8, vec![flight()]);
    assert_eq!(h.e.in_flight(), 3);
    assert!(!h.e.handle(LoopMsg::Close));
    assert!(h.e.is_closed());
    assert_eq!(
        h.fake().cancels(a) + h.fake().cancels(w) + h.fake().cancels(f),
        3
    );
    assert!(peer_closed(&idle.peer), "an idle connection closes at once");
    assert!(!peer_closed(&s.peer) && !peer_closed(&t.peer));
    let late = h.read(&idle, 8, vec![]);
    let late2 = h.write(&s, 8, vec![]);
    let r = h.expect(&[late, late2]);
    assert_eq!((err(&r[0]), err(&r[1])), ("ClosedPipe", "ClosedPipe"));
    // A descriptor taken over after close is forgotten and closed at once.
    let u = h.sock();
    assert!(peer_closed(&u.peer));
    assert_eq!(h.forgets(&u), 1);
    h.complete(a, Outcome::Canceled);
    assert_eq!(h.e.in_flight(), 2);
    h.expect(&[a, b]);
    h.complete(w, Outcome::Moved(8, None));
    assert_eq!(h.e.in_flight(), 1);
    assert!(!peer_closed(&t.peer), "its file request is in flight");
    h.complete(f, Outcome::Moved(2, None));
    assert_eq!(h.e.in_flight(), 0);
    let r = h.take();
    assert_eq!(r.len(), 2);
    for x in [&s, &t, &idle] {
        assert!(peer_closed(&x.peer));
        assert_eq!(h.forgets(x), 1);
    }
    h.all_done();
}

fn dropped_handle_releases<const R: bool>() {
    let mut h = H::<R>::new();
    let s = h.sock();
    let a = h.read(&s, 8, vec![flight()]);
    h.complete(a, Outcome::Moved(1, None));
    h.expect(&[a]);
    let Sock { conn, peer, ino } = s;
    let id = conn.id();
    drop(conn);
    assert_eq!(*h.owner.0.lock().unwrap(), vec![id]);
    h.e.handle(LoopMsg::Dropped(id));
    assert!(peer_closed(&peer));
    assert_eq!(h.e.driver.forgets(ino), 1);
    // Late (after close, say): no second release.
    h.e.handle(LoopMsg::Dropped(id));
    assert_eq!(h.e.driver.forgets(ino), 1);
    assert_eq!(h.e.gc.closed.load(Ordering::Relaxed), 2);
    h.all_done();
}

fn accept_adopts<const R: bool>() {
    let mut h = H::<R>::new();
    let l = h.sock();
    let (mine, peer) = socketpair();
    let ino1 = ino(mine.as_raw_fd()).unwrap();
    let a = h.sub(
        Kind::Accept,
        &l,
        None,
        None,
        false,
        vec![Start::Done(Outcome::Accepted(mine))],
    );
    let (mine2, peer2) = socketpair();
    let b = h.sub(Kind::Accept, &l, None, None, false, vec![flight()]);
    h.complete(b, Outcome::Accepted(mine2));
    let mut r = h.expect(&[a, b]);
    let adopted: Vec<ConnId> = h
        .fake()
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::Adopt { id } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(adopted.len(), 2);
    assert!(
        !adopted.contains(&l.id()) && adopted[0] != adopted[1],
        "fresh ids"
    );
    let c1 = r[0].accepted.take().expect("a Conn");
    let c2 = r[1].accepted.take().expect("a Conn");
    assert_eq!((c1.id(), c2.id()), (adopted[0], adopted[1]));
    assert!(r.iter().all(|r| r.is_ok()));
    drop(r);
    // The new connection serves requests.
    let s = Sock {
        conn: c1,
        peer,
        ino: ino1,
    };
    let q = h.read(&s, 4, vec![moved(4)]);
    h.expect(&[q]);
    h.free(&s);
    assert!(peer_closed(&s.peer));
    assert_eq!(h.forgets(&s), 1);
    // Dropping the other handle releases it.
    let id2 = c2.id();
    drop(c2);
    assert_eq!(*h.owner.0.lock().unwrap(), vec![id2]);
    h.e.handle(LoopMsg::Dropped(id2));
    assert!(peer_closed(&peer2));
    h.all_done();
}

fn accept_adopt_error<const R: bool>() {
    let mut h = H::<R>::new();
    let l = h.sock();
    let (mine, peer) = socketpair();
    h.fake()
        .adopt
        .push_back(Err(std::io::Error::from_raw_os_error(libc::ENOSPC)));
    let a = h.sub(
        Kind::Accept,
        &l,
        None,
        None,
        false,
        vec![Start::Done(Outcome::Accepted(mine))],
    );
    let r = h.expect(&[a]);
    assert_eq!(err(&r[0]), "Io");
    assert!(r[0].accepted.is_none());
    assert!(peer_closed(&peer), "the refused descriptor is closed");
    // Its id went back: the next adopt gets the slot again, under a new generation.
    let refused = match h.fake().calls.last() {
        Some(Call::Adopt { id }) => *id,
        c => panic!("last call {c:?}"),
    };
    let (mine, _peer) = socketpair();
    let b = h.sub(
        Kind::Accept,
        &l,
        None,
        None,
        false,
        vec![Start::Done(Outcome::Accepted(mine))],
    );
    let r = h.expect(&[b]);
    let c = r[0].accepted.as_ref().unwrap().id();
    assert_eq!(c.index, refused.index);
    assert_ne!(c.gen, refused.gen);
    drop(r);
    h.e.close();
    h.all_done();
}

/// An accept in flight when the watcher closes may still come back with a descriptor (the
/// kernel accepted before the cancel reached it). Nothing can serve that connection any more:
/// it must not be taken over, and its descriptor must close.
fn accept_completing_after_close<const R: bool>() {
    let mut h = H::<R>::new();
    let l = h.sock();
    let a = h.sub(Kind::Accept, &l, None, None, false, vec![flight()]);
    h.e.close();
    assert_eq!(h.fake().cancels(a), 1);
    let (mine, peer) = socketpair();
    h.complete(a, Outcome::Accepted(mine));
    let r = h.expect(&[a]);
    assert_eq!(err(&r[0]), "ClosedPipe");
    assert!(r[0].accepted.is_none());
    drop(r);
    assert!(peer_closed(&peer), "the accepted descriptor is closed");
    assert!(peer_closed(&l.peer));
    assert_eq!(h.e.in_flight(), 0);
    assert!(
        (0..h.e.table.len()).all(|i| h.e.table.get(i).is_none()),
        "no connection left in the table after close"
    );
    h.all_done();
}
