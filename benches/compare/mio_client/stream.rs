//! The stream workload on the mio client: `conns` connections, each written 64 KiB at a time
//! with the stream pattern for `secs` while its echo is read and every byte compared with
//! what was sent at that offset; MB/s of verified bytes, from the first write to the last
//! byte verified.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{check_abort, connect, on_threads, poll, share, ThreadTimes, POLL_SLICE};
use crate::common::example::workloads::{
    first_difference, stream_pattern, BenchResult, StreamResult, IO_TIMEOUT, PATTERN_PERIOD,
    STREAM_CHUNK, STREAM_MAX_BYTES,
};

/// One stream connection.
struct Conn {
    sock: TcpStream,
    /// Names the connection in messages.
    who: String,
    /// Where this connection starts in the pattern (spread over the period, so that data
    /// echoed on the wrong connection never matches).
    base: u64,
    /// Bytes written, bytes echoed and verified.
    written: u64,
    verified: u64,
}

/// `conns` connections (dialled first, on the calling thread), split over `threads` client
/// threads; writes stop after `secs`, then every written byte must come back within
/// `IO_TIMEOUT`.
pub fn stream(
    addr: SocketAddr,
    conns: usize,
    secs: Duration,
    threads: usize,
) -> BenchResult<(StreamResult, ThreadTimes)> {
    let conns = conns.max(1);
    let threads = threads.clamp(1, conns);
    let pattern = stream_pattern();
    let who = |c: usize| {
        if conns == 1 {
            "stream".to_string()
        } else {
            format!("stream: connection {c}")
        }
    };
    let mut socks = Vec::with_capacity(conns);
    for c in 0..conns {
        socks.push(Some(connect(addr, "stream", c)?));
    }
    let socks = std::sync::Mutex::new(socks);
    let start = Instant::now();
    let stop_at = start + secs;
    let max_per_conn = STREAM_MAX_BYTES / conns as u64;
    let (parts, times) = on_threads(threads, "stream", |k, abort| {
        let mine: Vec<Conn> = share(conns, threads, k)
            .map(|c| Conn {
                sock: socks.lock().unwrap_or_else(|e| e.into_inner())[c]
                    .take()
                    .expect("each socket is taken once"),
                who: who(c),
                base: (c * (PATTERN_PERIOD / conns)) as u64,
                written: 0,
                verified: 0,
            })
            .collect();
        run(mine, &pattern, stop_at, max_per_conn, abort)
    })?;
    let bytes = parts.iter().map(|p| p.0).sum();
    let last = parts.iter().map(|p| p.1).max().unwrap_or(start);
    Ok((
        StreamResult {
            bytes,
            elapsed: last.duration_since(start),
        },
        times,
    ))
}

/// One thread's connections until each has stopped writing and had every byte echoed:
/// (bytes verified, when the last one was).
fn run(
    mut conns: Vec<Conn>,
    pattern: &[u8],
    stop_at: Instant,
    max_per_conn: u64,
    abort: &AtomicBool,
) -> BenchResult<(u64, Instant)> {
    let mut p = Poll::new().map_err(|e| format!("stream: mio Poll: {e}"))?;
    for (k, c) in conns.iter_mut().enumerate() {
        p.registry()
            .register(
                &mut c.sock,
                Token(k),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("{}: register: {e}", c.who))?;
    }
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; STREAM_CHUNK];
    let hard_end = stop_at + IO_TIMEOUT;
    let mut last = Instant::now();
    let mut writing = true;
    loop {
        let now = Instant::now();
        if writing && now >= stop_at {
            // Time is up: no more writes. A connection whose echo is complete is done, and
            // the others finish on their next READABLE.
            writing = false;
        }
        if !writing && conns.iter().all(|c| c.verified == c.written) {
            let bytes = conns.iter().map(|c| c.verified).sum();
            return Ok((bytes, last));
        }
        if now >= hard_end {
            let c = conns
                .iter()
                .find(|c| c.verified != c.written)
                .expect("one is not done");
            return Err(format!(
                "{}: timed out with {} of {} bytes echoed",
                c.who, c.verified, c.written
            ));
        }
        check_abort(abort, "stream")?;
        let slice = if writing {
            POLL_SLICE.min(stop_at.saturating_duration_since(now))
        } else {
            POLL_SLICE
        };
        poll(&mut p, &mut events, slice, "stream")?;
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            let limit = if writing && Instant::now() < stop_at {
                max_per_conn
            } else {
                c.written
            };
            if drive(c, pattern, &mut buf, limit)? {
                last = Instant::now();
            }
        }
    }
}

/// On any event of `c`: writes up to `limit` bytes in all until the socket is full, then reads
/// until it is empty, checking each byte. One pass suffices with edge-triggered readiness:
/// each direction stops at `EAGAIN` (or at the limit, which only time moves), so whatever
/// changes later brings a new edge. Returns whether anything was verified.
fn drive(c: &mut Conn, pattern: &[u8], buf: &mut [u8], limit: u64) -> BenchResult<bool> {
    while c.written < limit {
        let at = ((c.base + c.written) % PATTERN_PERIOD as u64) as usize;
        let len = (STREAM_CHUNK as u64).min(limit - c.written) as usize;
        match c.sock.write(&pattern[at..at + len]) {
            Ok(n) => c.written += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{}: write after {} bytes: {e}", c.who, c.written)),
        }
    }
    let mut verified_any = false;
    loop {
        let n = match c.sock.read(buf) {
            Ok(0) => {
                return Err(format!(
                    "{}: the server closed the connection after echoing {} of {} bytes",
                    c.who, c.verified, c.written
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(verified_any),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{}: read after {} bytes: {e}", c.who, c.verified)),
        };
        if c.verified + n as u64 > c.written {
            return Err(format!(
                "{}: {} bytes echoed, but only {} sent",
                c.who,
                c.verified + n as u64,
                c.written
            ));
        }
        let at = ((c.base + c.verified) % PATTERN_PERIOD as u64) as usize;
        let expected = &pattern[at..at + n];
        if expected != &buf[..n] {
            return Err(format!(
                "{}: echoed data differs from what was sent at stream offset {}: {}",
                c.who,
                c.verified,
                first_difference(expected, &buf[..n])
            ));
        }
        c.verified += n as u64;
        verified_any = true;
    }
}
