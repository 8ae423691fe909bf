//! Request/response on the mio client: `n` connections, each with one 64 B request
//! outstanding at a time (ping-pong with 1000 connections, the latency workload with 1 and
//! 16). A request's latency runs from an `Instant` taken just before its write to one taken
//! once its whole echo has been read and checked; only requests completed inside the measured
//! window (after the warm-up) count, for the rate and the percentiles.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{check_abort, connect, on_threads, poll, share, ThreadTimes, POLL_SLICE};
use crate::common::example::workloads::{
    first_difference, pp_request, BenchResult, PingPongResult, IO_TIMEOUT, PP_MAX_REQUESTS, PP_MSG,
};

/// One connection.
struct Conn {
    sock: TcpStream,
    index: u32,
    /// Sequence number of the request outstanding.
    seq: u64,
    sent: Instant,
    req: [u8; PP_MSG],
    /// Bytes of `req` written.
    written: usize,
    echo: [u8; PP_MSG],
    /// Bytes of `echo` read.
    read: usize,
    /// A request is outstanding.
    busy: bool,
}

/// What one thread measured.
struct Part {
    measured: u64,
    latencies: Vec<u64>,
}

/// `n` connections (dialled first, on the calling thread) split over `threads` client
/// threads; `warmup`, then `secs` measured; every echo must be back within `IO_TIMEOUT` of
/// the end. `what` names the workload in messages.
pub fn request_response(
    addr: SocketAddr,
    n: usize,
    warmup: Duration,
    secs: Duration,
    threads: usize,
    what: &str,
) -> BenchResult<(PingPongResult, ThreadTimes)> {
    let n = n.max(1);
    let threads = threads.clamp(1, n);
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        socks.push(Some(connect(addr, what, i)?));
    }
    let socks = Mutex::new(socks);
    let t0 = Instant::now();
    let measure_from = t0 + warmup;
    let stop_at = measure_from + secs;
    let max_per_thread = PP_MAX_REQUESTS / threads as u64;
    let (parts, times) = on_threads(threads, what, |k, abort| {
        let mine: Vec<Conn> = share(n, threads, k)
            .map(|i| Conn {
                sock: socks.lock().unwrap_or_else(|e| e.into_inner())[i]
                    .take()
                    .expect("each socket is taken once"),
                index: i as u32,
                seq: 0,
                sent: t0,
                req: [0; PP_MSG],
                written: 0,
                echo: [0; PP_MSG],
                read: 0,
                busy: false,
            })
            .collect();
        run(mine, measure_from, stop_at, max_per_thread, abort, what)
    })?;
    let window = stop_at.min(Instant::now()).duration_since(measure_from);
    let requests = parts.iter().map(|p| p.measured).sum();
    let mut latencies: Vec<u64> = Vec::with_capacity(parts.iter().map(|p| p.latencies.len()).sum());
    for p in parts {
        latencies.extend(p.latencies);
    }
    latencies.sort_unstable();
    Ok((
        PingPongResult {
            conns: n,
            requests,
            window,
            latencies,
        },
        times,
    ))
}

fn run(
    mut conns: Vec<Conn>,
    measure_from: Instant,
    stop_at: Instant,
    max_requests: u64,
    abort: &AtomicBool,
    what: &str,
) -> BenchResult<Part> {
    let mut p = Poll::new().map_err(|e| format!("{what}: mio Poll: {e}"))?;
    for (k, c) in conns.iter_mut().enumerate() {
        p.registry()
            .register(
                &mut c.sock,
                Token(k),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("{what}: connection {}: register: {e}", c.index))?;
    }
    let mut events = Events::with_capacity(1024);
    let mut part = Part {
        measured: 0,
        latencies: Vec::with_capacity(1 << 16),
    };
    let mut sent_total: u64 = 0;
    for c in &mut conns {
        send(c, what)?;
        sent_total += 1;
    }
    let mut busy = conns.len();
    let hard_end = stop_at + IO_TIMEOUT;
    while busy > 0 {
        if Instant::now() >= hard_end {
            return Err(format!(
                "{what}: timed out with {busy} of {} connections still waiting for an echo",
                conns.len()
            ));
        }
        check_abort(abort, what)?;
        poll(&mut p, &mut events, POLL_SLICE, what)?;
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            let more = |sent: u64| Instant::now() < stop_at && sent < max_requests;
            if drive(
                c,
                &mut part,
                measure_from,
                stop_at,
                &more,
                &mut sent_total,
                what,
            )? {
                busy -= 1;
            }
        }
    }
    Ok(part)
}

/// Writes connection `c`'s next request (what the socket does not take now goes on
/// WRITABLE).
fn send(c: &mut Conn, what: &str) -> BenchResult<()> {
    c.seq += 1;
    pp_request(c.index, c.seq, &mut c.req);
    c.written = 0;
    c.read = 0;
    c.busy = true;
    c.sent = Instant::now();
    flush(c, what)
}

/// Writes what is left of the request until done or `EAGAIN`.
fn flush(c: &mut Conn, what: &str) -> BenchResult<()> {
    while c.written < PP_MSG {
        match c.sock.write(&c.req[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "{what}: connection {}, request {}: write: {e}",
                    c.index, c.seq
                ))
            }
        }
    }
    Ok(())
}

/// On any event of `c`: flushes its request, reads until its echo is complete or `EAGAIN`; a
/// complete echo is checked, timed, and followed by the next request while
/// `more(sent_total)`. Returns true
/// when the connection has finished (its last echo came back and no request follows).
fn drive(
    c: &mut Conn,
    part: &mut Part,
    measure_from: Instant,
    stop_at: Instant,
    more: &impl Fn(u64) -> bool,
    sent_total: &mut u64,
    what: &str,
) -> BenchResult<bool> {
    flush(c, what)?;
    let mut finished = false;
    let mut scratch = [0u8; 4 * PP_MSG];
    let mut expected = [0u8; PP_MSG];
    loop {
        let got = match c.sock.read(&mut scratch) {
            Ok(0) => {
                return Err(format!(
                    "{what}: connection {}, request {}: the server closed the connection",
                    c.index, c.seq
                ))
            }
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(finished),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "{what}: connection {}, request {}: read: {e}",
                    c.index, c.seq
                ))
            }
        };
        // One request outstanding: anything beyond its echo (or before the request was
        // written) is bytes the server made up.
        if !c.busy || c.read + got > c.written {
            return Err(format!(
                "{what}: connection {}, request {}: {} bytes echoed, {} sent",
                c.index,
                c.seq,
                c.read + got,
                if c.busy { c.written } else { 0 }
            ));
        }
        c.echo[c.read..c.read + got].copy_from_slice(&scratch[..got]);
        c.read += got;
        if c.read < PP_MSG {
            continue;
        }
        let now = Instant::now();
        pp_request(c.index, c.seq, &mut expected);
        if c.echo != expected {
            return Err(format!(
                "{what}: connection {}, request {}: the echo differs: {}",
                c.index,
                c.seq,
                first_difference(&expected, &c.echo)
            ));
        }
        if now >= measure_from && now <= stop_at {
            part.measured += 1;
            part.latencies
                .push(now.duration_since(c.sent).as_nanos() as u64);
        }
        c.busy = false;
        if more(*sent_total) {
            send(c, what)?;
            *sent_total += 1;
            // No read on to EAGAIN: with one request outstanding the socket held nothing
            // beyond this echo (bytes the server made up would come first in the next read,
            // and fail its check), and on Linux every arrival of data is a new edge, so the
            // next echo wakes this connection. One syscall fewer per request.
            return Ok(false);
        }
        // The last echo: read on to EAGAIN, so that any extra byte fails the run.
        finished = true;
    }
}
