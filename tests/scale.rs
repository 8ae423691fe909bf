//! Scale: 10 000 concurrent connections echoing through one watcher, on each backend.
//!
//! The server is a `Watcher` echo loop in this process (swap-buffer reads, each answered with a
//! write of the same bytes); the 10 000 client ends live in a child process
//! ([`util::ChildClients`]), so that each side fits the 20 000-descriptor hard limit of the
//! machine this was written on. The child writes 4 KiB on every connection, then reads every
//! echo back and compares it, three times; then it closes everything and the server must see 10 000
//! EOFs and free each connection. What was reached is printed (`--no-capture`), and if the
//! descriptor limit does not allow 10 000, the test runs as many as fit and says so.

#[macro_use]
mod util;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gaio::{Error, OpType};

/// Connections wanted.
const N: usize = 10_000;
/// Bytes per connection per round.
const MSG: usize = 4096;
const ROUNDS: usize = 3;

/// Stops the echo loop and wakes the acceptor when the test ends, also by a panic, so that the
/// thread scope can end.
struct StopOnDrop<'a> {
    stop: &'a AtomicBool,
    listener: &'a std::net::TcpListener,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // SAFETY: shutdown(2) on a descriptor we own; a blocked accept returns EINVAL.
        unsafe {
            libc::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(self.listener),
                libc::SHUT_RDWR,
            )
        };
    }
}

#[test]
#[ignore = "helper process for the many-connection tests, started by them"]
fn client_process() {
    util::client_process_main();
}

backend_tests! {
    /// 10 000 connections × 3 rounds × 4 KiB echoed, every byte compared by the client; then
    /// 10 000 EOFs, each freed; no error anywhere, exactly the expected number of results, and
    /// every descriptor closed at the end (in a process of its own, to count them).
    fn echo_10k_connections(backend) {
        // Held while the child runs too: no other many-connection test of this process
        // overlaps it.
        let _heavy = util::many_fds_guard();
        if !util::own_process("echo_10k_connections") {
            return;
        }
        let (soft, _) = util::raise_nofile();
        let n = N.min((soft as usize).saturating_sub(util::fd_count() + 200));
        if n < N {
            eprintln!("{backend}: descriptor limit {soft}: {n} connections instead of {N}");
        }
        let fds0 = util::open_fds();
        {
            let Some(w) = util::watcher_for::<usize>(backend) else { return };
            let ln = util::listen();
            let addr = ln.local_addr().unwrap();
            let stop = AtomicBool::new(false);
            let failure: Mutex<Option<String>> = Mutex::new(None);
            let fail = |what: String| {
                eprintln!("{backend}: {what}");
                failure.lock().unwrap().get_or_insert(what);
            };
            let (echoed, results) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let eofs = AtomicUsize::new(0);
            let start = Instant::now();
            std::thread::scope(|s| {
                let acceptor = s.spawn(|| {
                    for i in 0..n {
                        let stream: TcpStream = match ln.accept() {
                            Ok((st, _)) => st,
                            Err(_) if stop.load(Ordering::Acquire) => return,
                            Err(e) => return fail(format!("accept {i}: {e}")),
                        };
                        let conn = match w.watch(&stream) {
                            Ok(c) => c,
                            Err(e) => return fail(format!("watch {i}: {e}")),
                        };
                        drop(stream);
                        if let Err(e) = w.read(i, &conn, None) {
                            return fail(format!("read {i}: {}", e.error));
                        }
                    }
                });
                s.spawn(|| {
                    // The echo loop.
                    while !stop.load(Ordering::Acquire) {
                        let batch = match w.wait_io_timeout(Duration::from_millis(50)) {
                            Ok(b) => b,
                            Err(e) => return fail(format!("wait_io: {e}")),
                        };
                        for r in batch {
                            results.fetch_add(1, Ordering::Relaxed);
                            let i = r.context;
                            match (&r.error, r.op) {
                                (None, OpType::Read) => {
                                    let data = r.data().to_vec();
                                    if let Err(e) = w.write(i, &r.conn, data) {
                                        fail(format!("write {i}: {}", e.error));
                                    }
                                }
                                (None, _) => {
                                    echoed.fetch_add(r.size, Ordering::Relaxed);
                                    if let Err(e) = w.read(i, &r.conn, None) {
                                        fail(format!("read {i}: {}", e.error));
                                    }
                                }
                                (Some(Error::Eof), OpType::Read) => {
                                    eofs.fetch_add(1, Ordering::Relaxed);
                                    if let Err(e) = w.free(&r.conn) {
                                        fail(format!("free {i}: {e}"));
                                    }
                                }
                                (Some(e), op) => fail(format!("connection {i}: {op:?}: {e:?}")),
                            }
                        }
                    }
                });
                let _stop = StopOnDrop { stop: &stop, listener: &ln };
                let check = || {
                    if let Some(f) = failure.lock().unwrap().clone() {
                        stop.store(true, Ordering::Release);
                        panic!("{backend}: {f}");
                    }
                };
                let mut clients = util::ChildClients::connect(addr, n, MSG);
                acceptor.join().unwrap();
                check();
                let connected = start.elapsed();
                let mut rounds = Vec::new();
                for round in 0..ROUNDS {
                    let t = Instant::now();
                    clients.echo(round, Duration::from_secs(60));
                    rounds.push(t.elapsed());
                    check();
                }
                let t = Instant::now();
                drop(clients); // the child closes every connection
                util::eventually(Duration::from_secs(60), format!("{n} EOFs"), || {
                    eofs.load(Ordering::Relaxed) == n || failure.lock().unwrap().is_some()
                });
                let closed = t.elapsed();
                stop.store(true, Ordering::Release);
                check();
                let echoed = echoed.load(Ordering::Relaxed);
                assert_eq!(echoed, n * MSG * ROUNDS, "{backend}: bytes echoed");
                println!(
                    "{backend}: {n} concurrent connections: accepted and watched in \
                     {connected:?}; {ROUNDS} echo rounds of {MSG} bytes each ({} MiB verified \
                     by the client) in {rounds:?}; {n} EOFs freed in {closed:?}; {} results",
                    echoed >> 20,
                    results.load(Ordering::Relaxed)
                );
            });
            util::expect_quiet(&w, Duration::from_millis(50));
        }
        util::assert_fds(&fds0, fds0.len(), "after 10k connections and the watcher's drop");
    }
}
