//! The burst workload on the mio client (gaio's `Test8k`): `n` connections, each writing its
//! own 1 KiB message once and reading it back, every byte checked. Connections are dialled
//! one after the other (blocking connects, as the gaio-driven client dials); each writes its
//! message as soon as it is connected, and echoes are collected between dials, so they flow
//! while later connections are dialled. The time runs from the first dial to the last echo
//! verified.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{check_abort, connect, on_threads, poll, share, ThreadTimes, POLL_SLICE};
use crate::common::example::workloads::{
    burst_message, first_difference, BenchResult, BurstResult, BURST_MSG,
};

/// Dials between two looks at the events (a zero-timeout poll).
const DIALS_PER_POLL: usize = 32;

/// One burst connection.
struct Conn {
    sock: TcpStream,
    /// Its index among all `n`: the message it sends is `burst_message(index)`.
    index: u32,
    /// The message, then the echo read so far.
    msg: Vec<u8>,
    /// Bytes of `msg` written.
    sent: usize,
    echo: Vec<u8>,
    done: bool,
}

/// `n` connections split over `threads` client threads (each dials its share); all must be
/// echoed within `timeout` of the start.
pub fn burst(
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
    threads: usize,
) -> BenchResult<(BurstResult, ThreadTimes)> {
    let threads = threads.clamp(1, n.max(1));
    let start = Instant::now();
    let deadline = start + timeout;
    // (when its last connection was open, when its last echo was verified)
    let (parts, times) = on_threads(threads, "burst", |k, abort| {
        run(addr, share(n, threads, k), n, deadline, abort)
    })?;
    let connected = parts.iter().map(|p| p.0).max().unwrap_or(start);
    let last = parts.iter().map(|p| p.1).max().unwrap_or(start);
    Ok((
        BurstResult {
            conns: n,
            connect: connected.duration_since(start),
            total: last.duration_since(start),
        },
        times,
    ))
}

/// One thread's share `range` of the `n` connections, each dialled, written, echoed and
/// checked; they are closed (dropped) once all are done.
fn run(
    addr: SocketAddr,
    range: std::ops::Range<usize>,
    n: usize,
    deadline: Instant,
    abort: &AtomicBool,
) -> BenchResult<(Instant, Instant)> {
    let mut p = Poll::new().map_err(|e| format!("burst: mio Poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Conn> = Vec::with_capacity(range.len());
    let mut echoed = 0usize;
    let mut last = Instant::now();
    for (k, i) in range.clone().enumerate() {
        if Instant::now() >= deadline {
            return Err(format!(
                "burst: timed out after dialling {} of {n} connections",
                conns.len()
            ));
        }
        check_abort(abort, "burst")?;
        let mut sock = connect(addr, "burst", i)?;
        p.registry()
            .register(&mut sock, Token(k), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("burst: connection {i}: register: {e}"))?;
        let index = i as u32;
        let mut c = Conn {
            sock,
            index,
            msg: burst_message(index),
            sent: 0,
            echo: Vec::with_capacity(BURST_MSG),
            done: false,
        };
        if drive(&mut c)? {
            echoed += 1;
            last = Instant::now();
        }
        conns.push(c);
        if conns.len() % DIALS_PER_POLL == 0 {
            echoed += collect(&mut p, &mut events, &mut conns, Duration::ZERO, &mut last)?;
        }
    }
    let connected = Instant::now();
    while echoed < conns.len() {
        if Instant::now() >= deadline {
            return Err(format!(
                "burst: timed out: {echoed} of {} echoes verified on this client thread \
                 (connections {}..{} of {n})",
                conns.len(),
                range.start,
                range.end
            ));
        }
        check_abort(abort, "burst")?;
        let slice = POLL_SLICE.min(deadline.saturating_duration_since(Instant::now()));
        echoed += collect(&mut p, &mut events, &mut conns, slice, &mut last)?;
    }
    Ok((connected, last))
}

/// One poll (waiting at most `t`) and the events it gives: the number of echoes completed.
fn collect(
    p: &mut Poll,
    events: &mut Events,
    conns: &mut [Conn],
    t: Duration,
    last: &mut Instant,
) -> BenchResult<usize> {
    poll(p, events, t, "burst")?;
    let mut done = 0;
    for ev in events.iter() {
        if drive(&mut conns[ev.token().0])? {
            done += 1;
            *last = Instant::now();
        }
    }
    Ok(done)
}

/// On any event of `c`: writes what is left of its message, then reads until `EAGAIN`.
/// Returns true when this call completed (and checked) the echo.
fn drive(c: &mut Conn) -> BenchResult<bool> {
    let i = c.index;
    while c.sent < c.msg.len() {
        match c.sock.write(&c.msg[c.sent..]) {
            Ok(w) => c.sent += w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("burst: connection {i}: write: {e}")),
        }
    }
    let mut scratch = [0u8; 2 * BURST_MSG];
    loop {
        match c.sock.read(&mut scratch) {
            Ok(0) if !c.done => {
                return Err(format!(
                    "burst: connection {i}: the server closed it after echoing {} of {BURST_MSG} \
                     bytes",
                    c.echo.len()
                ))
            }
            Ok(0) => return Ok(false),
            Ok(got) => {
                if c.echo.len() + got > c.sent {
                    return Err(format!(
                        "burst: connection {i}: {} bytes echoed, {} sent",
                        c.echo.len() + got,
                        c.sent
                    ));
                }
                c.echo.extend_from_slice(&scratch[..got]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("burst: connection {i}: read: {e}")),
        }
    }
    if c.done || c.echo.len() < BURST_MSG {
        return Ok(false);
    }
    if c.echo != c.msg {
        return Err(format!(
            "burst: connection {i}: the echo differs from what was sent: {}",
            first_difference(&c.msg, &c.echo)
        ));
    }
    c.done = true;
    Ok(true)
}
