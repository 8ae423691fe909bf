//! The readiness floor: a hand-written single-thread `mio` echo loop, edge-triggered, as a
//! skilled user would write it. On every event of a connection it first flushes that
//! connection's pending output, then reads until `EAGAIN` into one buffer shared by all
//! connections and writes each chunk straight back; what the socket does not take is kept
//! in the connection's pending output, and the connection is not read again until a
//! WRITABLE event has flushed it (so a client that stops reading is no longer read from).

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mio::net::{TcpListener as MioListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::{conn_ended, PEER_BUF};
use crate::common::example::EchoStats;

pub const DESCRIPTION: &str = "a hand-written single-thread `mio` loop, edge-triggered: \
    accept until `EAGAIN`, read until `EAGAIN` into one 64 KiB buffer shared by all \
    connections, write each chunk straight back, keep what the socket did not take as the \
    connection's pending output and flush it on WRITABLE before reading again";

const LISTENER: Token = Token(usize::MAX);

/// One connection: its socket and the output it still owes its client.
struct Conn {
    sock: TcpStream,
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    sent: usize,
}

pub fn start(ln: TcpListener, stats: Arc<EchoStats>) -> io::Result<()> {
    ln.set_nonblocking(true)?;
    let mut ln = MioListener::from_std(ln);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut ln, LISTENER, Interest::READABLE)?;
    std::thread::Builder::new()
        .name("mio-echo".into())
        .spawn(move || {
            if let Err(e) = run(poll, ln, &stats) {
                eprintln!("mio echo loop: {e}");
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        })?;
    Ok(())
}

fn run(mut poll: Poll, ln: MioListener, stats: &EchoStats) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; PEER_BUF];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&poll, &ln, &mut conns, stats)?;
                continue;
            }
            let key = ev.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            // Any event (readable, writable, closed, error) runs the same steps: the edge
            // says something changed, the syscalls say what.
            let outcome = drive(conn, &mut buf, stats);
            if !matches!(outcome, Ok(true)) {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.sock);
                conn_ended(stats, "mio echo", outcome.map(drop));
            }
        }
    }
}

fn accept_all(
    poll: &Poll,
    ln: &MioListener,
    conns: &mut Slab<Conn>,
    stats: &EchoStats,
) -> io::Result<()> {
    loop {
        match ln.accept() {
            Ok((mut sock, _)) => {
                sock.set_nodelay(true)?;
                let entry = conns.vacant_entry();
                poll.registry().register(
                    &mut sock,
                    Token(entry.key()),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                entry.insert(Conn {
                    sock,
                    pending: Vec::new(),
                    sent: 0,
                });
                stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(e) => {
                // Out of descriptors or memory: the connection stays in the backlog, and no
                // new edge comes for it; a short pause, then the next accept retries.
                eprintln!("mio echo: accept: {e}; retrying in 100 ms");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Flushes `conn`'s pending output, then echoes what it can read. `Ok(true)`: keep the
/// connection; `Ok(false)`: the client closed it; `Err`: it failed.
fn drive(conn: &mut Conn, buf: &mut [u8], stats: &EchoStats) -> io::Result<bool> {
    while conn.sent < conn.pending.len() {
        match conn.sock.write(&conn.pending[conn.sent..]) {
            Ok(n) => {
                conn.sent += n;
                stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            // Still full: wait for WRITABLE, and read nothing more meanwhile.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.pending.clear();
    conn.sent = 0;
    loop {
        let n = match conn.sock.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut off = 0;
        while off < n {
            match conn.sock.write(&buf[off..n]) {
                Ok(w) => {
                    off += w;
                    stats.bytes.fetch_add(w as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.pending.extend_from_slice(&buf[off..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
