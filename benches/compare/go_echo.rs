//! The client of Go gaio's `BenchmarkEcho*` (`benchmarkEcho(bufsize, numconn)` in its
//! `aio_test.go`, research/gaio.md §3.4), with every byte verified and true bytes counted.
//!
//! As in Go: one client watcher (here gaio's own, on `--client-backend`, epoll by default);
//! `conns` connections (1, or 128 for the `Parallel` shapes), each with one write of `size`
//! bytes and one read of up to `size` bytes always outstanding: when a write completes the
//! next one is submitted, when a read completes the next read is. Writes and reads are
//! pipelined, not request/response. Go writes zeros and counts `size` bytes per read
//! completion whatever the read returned; here each connection writes consecutive blocks of
//! a pseudo-random pattern, every echoed byte is compared with what was sent at its offset,
//! and the rate counts the bytes actually echoed (the Go-style count is kept too).
//!
//! Go's benchmark stops after `b.N` blocks per connection; this one stops submitting writes
//! after `secs`, then waits (bounded) for every written byte to come back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gaio::{Backend, Conn, OpType};

use crate::common::example::workloads::{
    client_watcher, close_clients, dial, first_difference, stream_pattern, BenchResult, IO_TIMEOUT,
    PATTERN_PERIOD,
};

/// What one run of a shape measured.
pub struct EchoResult {
    /// Bytes echoed and verified, all connections together.
    pub bytes: u64,
    /// Go's count: `size` per read completion.
    pub go_bytes: u64,
    /// From the first write to the last byte verified.
    pub elapsed: Duration,
}

/// One connection's state.
struct EchoConn {
    conn: Conn,
    /// Where this connection starts in the pattern, so that echoes on the wrong connection
    /// never match.
    base: u64,
    /// Bytes of the pattern handed to writes.
    submitted: u64,
    /// Bytes echoed and verified.
    read: u64,
    writing: bool,
    /// Writes are over (time is up).
    stopped: bool,
}

impl EchoConn {
    fn done(&self) -> bool {
        self.stopped && !self.writing && self.read == self.submitted
    }
}

/// Copies `out.len()` bytes of the pattern (period `PATTERN_PERIOD`) from stream offset `at`.
fn fill(pattern: &[u8], at: u64, out: &mut [u8]) {
    let mut p = (at % PATTERN_PERIOD as u64) as usize;
    let mut done = 0;
    while done < out.len() {
        let n = (out.len() - done).min(PATTERN_PERIOD - p);
        out[done..done + n].copy_from_slice(&pattern[p..p + n]);
        done += n;
        p = 0;
    }
}

/// Whether `got` is the pattern from stream offset `at`; `scratch` receives the expected bytes.
fn matches(pattern: &[u8], at: u64, got: &[u8], scratch: &mut Vec<u8>) -> bool {
    scratch.resize(got.len(), 0);
    fill(pattern, at, scratch);
    scratch[..] == *got
}

pub fn go_echo(
    addr: SocketAddr,
    size: usize,
    conns: usize,
    secs: Duration,
    backend: Option<Backend>,
) -> BenchResult<EchoResult> {
    let pattern = stream_pattern();
    let w = client_watcher(backend)?;
    let mut cs = Vec::with_capacity(conns);
    for i in 0..conns {
        cs.push(EchoConn {
            conn: dial(&w, addr, "echo", i)?,
            base: (i * (PATTERN_PERIOD / conns.max(1))) as u64,
            submitted: 0,
            read: 0,
            writing: false,
            stopped: false,
        });
    }
    let start = Instant::now();
    let stop_at = start + secs;
    let give_up = stop_at + IO_TIMEOUT;
    for (i, c) in cs.iter_mut().enumerate() {
        let mut buf = vec![0u8; size];
        fill(&pattern, c.base, &mut buf);
        w.write(i as u32, &c.conn, buf)
            .map_err(|e| format!("echo: connection {i}: write refused: {e}"))?;
        w.read(i as u32, &c.conn, Some(vec![0u8; size]))
            .map_err(|e| format!("echo: connection {i}: read refused: {e}"))?;
        c.submitted = size as u64;
        c.writing = true;
    }

    let (mut bytes, mut go_bytes) = (0u64, 0u64);
    let mut last = start;
    let mut left = conns;
    let mut scratch = Vec::with_capacity(size);
    while left > 0 {
        if Instant::now() >= give_up {
            return Err(format!(
                "echo {size} B x {conns}: timed out with {left} connections still owed echoes \
                 ({bytes} bytes verified)"
            ));
        }
        let batch = w
            .wait_io_timeout(Duration::from_millis(100))
            .map_err(|e| format!("echo: wait_io: {e}"))?;
        let now = Instant::now();
        for res in batch {
            let i = res.context as usize;
            let Some(c) = cs.get_mut(i) else {
                return Err(format!("echo: result for unknown connection {i}"));
            };
            if c.done() {
                continue;
            }
            if let Some(err) = &res.error {
                return Err(format!(
                    "echo: connection {i}: {:?} failed after {} bytes: {err}",
                    res.op, res.size
                ));
            }
            match res.op {
                OpType::Write => {
                    c.writing = false;
                    if res.size != size {
                        return Err(format!("echo: connection {i}: short write {}", res.size));
                    }
                    if now < stop_at {
                        let mut buf = res.buffer.into_vec().unwrap_or_default();
                        buf.resize(size, 0);
                        fill(&pattern, c.base + c.submitted, &mut buf);
                        w.write(i as u32, &c.conn, buf)
                            .map_err(|e| format!("echo: connection {i}: write refused: {e}"))?;
                        c.submitted += size as u64;
                        c.writing = true;
                    } else {
                        c.stopped = true;
                    }
                }
                OpType::Read => {
                    let got = res.data();
                    if got.is_empty() {
                        return Err(format!("echo: connection {i}: empty read"));
                    }
                    if c.read + got.len() as u64 > c.submitted {
                        return Err(format!(
                            "echo: connection {i}: {} bytes echoed, only {} sent",
                            c.read + got.len() as u64,
                            c.submitted
                        ));
                    }
                    if !matches(&pattern, c.base + c.read, got, &mut scratch) {
                        return Err(format!(
                            "echo: connection {i}: echoed data differs from what was sent at \
                             offset {}: {}",
                            c.read,
                            first_difference(&scratch, got)
                        ));
                    }
                    c.read += got.len() as u64;
                    bytes += got.len() as u64;
                    go_bytes += size as u64;
                    last = now;
                    let mut buf = res.buffer.into_vec().unwrap_or_default();
                    buf.resize(size, 0);
                    w.read(i as u32, &c.conn, Some(buf))
                        .map_err(|e| format!("echo: connection {i}: read refused: {e}"))?;
                }
                other => return Err(format!("echo: unexpected result type {other:?}")),
            }
            if c.done() {
                left -= 1;
            }
        }
    }
    // Each finished connection still has a read outstanding; freeing ends it.
    close_clients(w, cs.into_iter().map(|c| c.conn))?;
    Ok(EchoResult {
        bytes,
        go_bytes,
        elapsed: last.duration_since(start),
    })
}
