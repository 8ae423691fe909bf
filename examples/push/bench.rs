//! `push-server --bench N`: what one shared `Arc<[u8]>` saves against a `Vec` per connection.
//!
//! For each buffer mode (shared, then `--copy`) it starts this same program as a child
//! process (`--push-once-at N --pad BYTES`), connects N clients to it, and waits until every
//! client has received the one message the server pushes to all once they are connected. The
//! clients are one `mio` thread (edge-triggered, non-blocking), not gaio, and check every byte:
//! the message is `<seq> <unix ms>`, dots up to `BYTES - 1`, then a newline, the same for every
//! client. The server reports the time from its first write submitted to its last completed
//! and its peak RSS (`VmHWM`, read by the server itself just before it exits); the clients
//! report the time from their last connect to the last byte received.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

/// Longest a whole round (start, connect, push, receive) may take before it fails.
const ROUND_LIMIT: Duration = Duration::from_secs(120);

/// What one round measured.
struct Round {
    mode: &'static str,
    /// The server's own line: `write_us`, `vm_hwm_kib`, `vm_rss_kib`.
    write_us: u64,
    hwm_kib: u64,
    rss_kib: u64,
    /// From the last client connected to the last byte received.
    receive: Duration,
}

/// Runs both rounds against `n` clients with a `size`-byte message and prints the table.
pub fn run(n: usize, size: usize, backend: Option<gaio::Backend>) -> Result<(), String> {
    let limit = crate::common::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    if (limit as usize) < n + 64 {
        return Err(format!(
            "--bench {n} needs {} descriptors, RLIMIT_NOFILE allows {limit}",
            n + 64
        ));
    }
    let started = Instant::now();
    let mut rounds = Vec::new();
    for copy in [false, true] {
        rounds.push(round(n, size, copy, backend)?);
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "push-server bench: {n} connections x {size} B pushed once; backend {}; kernel {}; \
         {} cores; {:.1} s",
        backend.map_or("auto".to_string(), |b| b.to_string()),
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<14} {:>16} {:>18} {:>16} {:>14}",
        "buffer", "server write ms", "client receive ms", "server peak MiB", "server RSS MiB"
    );
    for r in &rounds {
        println!(
            "{:<14} {:>16.1} {:>18.1} {:>16.1} {:>14.1}",
            r.mode,
            r.write_us as f64 / 1000.0,
            r.receive.as_secs_f64() * 1000.0,
            r.hwm_kib as f64 / 1024.0,
            r.rss_kib as f64 / 1024.0
        );
    }
    let (s, c) = (&rounds[0], &rounds[1]);
    println!(
        "per-connection Vec / shared Arc: peak RSS {:.2}x, server write time {:.2}x, client \
         receive time {:.2}x",
        c.hwm_kib as f64 / s.hwm_kib.max(1) as f64,
        c.write_us as f64 / s.write_us.max(1) as f64,
        c.receive.as_secs_f64() / s.receive.as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// Kills the child server on every way out of a round.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn round(
    n: usize,
    size: usize,
    copy: bool,
    backend: Option<gaio::Backend>,
) -> Result<Round, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["--addr", "127.0.0.1:0", "--push-once-at", &n.to_string()])
        .args(["--pad", &size.to_string()])
        .args(["--write-timeout-ms", "60000", "--max-pending", "4"]);
    if copy {
        cmd.arg("--copy");
    }
    if let Some(b) = backend {
        cmd.args(["--backend", &b.to_string()]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let mut server = Server(child);
    let stdout = server.0.stdout.take().ok_or("no server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .ok_or("the server exited before listening")?
        .map_err(|e| format!("server stdout: {e}"))?;
    let addr: SocketAddr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected first line from the server: {first:?}"))?;
    let deadline = Instant::now() + ROUND_LIMIT;
    let receive = receive_all(addr, n, size, deadline)?;
    let line = lines
        .next()
        .ok_or("the server exited without its bench line")?
        .map_err(|e| format!("server stdout: {e}"))?;
    let field = |key: &str| -> Result<u64, String> {
        let mut words = line.split_whitespace();
        words
            .find(|w| *w == key)
            .and_then(|_| words.next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in the server's line {line:?}"))
    };
    Ok(Round {
        mode: if copy { "Vec per conn" } else { "shared Arc" },
        write_us: field("write_us")?,
        hwm_kib: field("vm_hwm_kib")?,
        rss_kib: field("vm_rss_kib")?,
        receive,
    })
}

/// One client: its socket and what it has received so far.
struct Client {
    sock: MioStream,
    got: usize,
    /// The message's header (`<seq> <unix ms>`), which must be the same for every client.
    header: Vec<u8>,
}

/// Connects `n` clients to `addr` and reads until each has its `size`-byte message, checking
/// every byte. Returns the time from the last connect to the last byte.
fn receive_all(
    addr: SocketAddr,
    n: usize,
    size: usize,
    deadline: Instant,
) -> Result<Duration, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        // Blocking connects: loopback completes the handshake at once, whatever the server
        // has accepted (the backlog is 4096 and the server accepts as fast as we dial).
        let s = TcpStream::connect(addr).map_err(|e| format!("connect {i}: {e}"))?;
        s.set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        let mut sock = MioStream::from_std(s);
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE)
            .map_err(|e| format!("register: {e}"))?;
        clients.push(Client {
            sock,
            got: 0,
            header: Vec::new(),
        });
        if Instant::now() > deadline {
            return Err(format!("connecting {n} clients took too long"));
        }
    }
    let start = Instant::now();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 << 10];
    let mut done = 0;
    let mut want_header: Option<Vec<u8>> = None;
    while done < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{done} of {n} clients got the message in time"));
        }
        poll.poll(&mut events, Some(left.min(Duration::from_secs(1))))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let c = &mut clients[ev.token().0];
            // Edge-triggered: read until EAGAIN.
            loop {
                match c.sock.read(&mut buf) {
                    Ok(0) => {
                        if c.got < size {
                            return Err(format!(
                                "client {}: EOF after {} bytes",
                                ev.token().0,
                                c.got
                            ));
                        }
                        break;
                    }
                    Ok(k) => {
                        check(c, &buf[..k], size)
                            .map_err(|e| format!("client {}: {e}", ev.token().0))?;
                        if c.got == size {
                            done += 1;
                            match &want_header {
                                None => want_header = Some(c.header.clone()),
                                Some(h) if *h != c.header => {
                                    return Err("two clients got different messages".into())
                                }
                                Some(_) => {}
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("client {}: {e}", ev.token().0)),
                }
            }
        }
    }
    Ok(start.elapsed())
}

/// Checks `bytes`, the next part of client `c`'s message of `size` bytes: a header of digits
/// and one space, dots, and a newline as the last byte; nothing after it.
fn check(c: &mut Client, bytes: &[u8], size: usize) -> Result<(), String> {
    for &b in bytes {
        let at = c.got;
        if at >= size {
            return Err(format!("more than the {size}-byte message"));
        }
        let in_header = c.header.len() == at && (b.is_ascii_digit() || b == b' ');
        let ok = if at == size - 1 {
            b == b'\n'
        } else {
            in_header || (b == b'.' && !c.header.is_empty())
        };
        if !ok {
            return Err(format!("byte {at} is {b:#x}, not the message's"));
        }
        if in_header {
            c.header.push(b);
        }
        c.got += 1;
    }
    Ok(())
}
