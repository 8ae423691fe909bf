//! The `http-server` example's server loop (`examples/http/server.rs`) over loopback on both
//! backends: pipelined requests in one write, requests split byte by byte, 1000 keep-alive
//! requests on one connection, bodies, `Connection: close` and HTTP/1.0, refusals (400, 431),
//! and 100 concurrent connections. Every client socket has a read timeout, so a missing
//! response fails the test instead of hanging it.
//!
//! The parser's and the responses' own unit tests (`examples/http/{parse,response}.rs`) run in
//! this binary too, as it includes the module.

#[macro_use]
mod util;

#[path = "../examples/http/mod.rs"]
mod http;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gaio::{Backend, Watcher};
use http::response::OK_KEEP_ALIVE;
use http::server::HttpServer;

/// Longest wait for any response byte.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

fn server(backend: Backend) -> Option<HttpServer> {
    let w: Watcher<http::server::Ctx> = util::build(backend, Watcher::builder())?;
    Some(HttpServer::start(util::listen(), w).expect("start the http server"))
}

fn client(srv: &HttpServer) -> TcpStream {
    let c = util::dial(srv.addr());
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_nodelay(true).unwrap();
    c
}

/// Reads exactly `n` bytes (or fails after [`IO_TIMEOUT`] without progress).
fn read_n(c: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    c.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("reading {n} response bytes: {e}"));
    buf
}

/// Reads until the server closes; returns what came before the close.
fn read_to_eof(c: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    match c.read_to_end(&mut all) {
        Ok(_) => all,
        Err(e) => panic!(
            "expected the server to close, got {e} after {:?}",
            String::from_utf8_lossy(&all)
        ),
    }
}

/// Asserts that nothing more arrives for a moment (the connection stays open and quiet).
fn assert_quiet_open(c: &mut TcpStream) {
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 1];
    match c.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected an open, quiet connection, got {other:?}"),
    }
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// The status line and the whole text of a closing response.
fn status_of(resp: &[u8]) -> String {
    let text = String::from_utf8_lossy(resp);
    text.lines().next().unwrap_or("").to_string()
}

backend_tests! {
    /// 16 requests in one write get 16 responses, in order, and the connection stays open.
    fn pipelined_in_one_write(backend) {
        let Some(srv) = server(backend) else { return };
        let mut c = client(&srv);
        c.write_all(&GET.repeat(16)).unwrap();
        assert_eq!(read_n(&mut c, 16 * OK_KEEP_ALIVE.len()), OK_KEEP_ALIVE.repeat(16));
        assert_quiet_open(&mut c);
        // And it still answers.
        c.write_all(GET).unwrap();
        assert_eq!(read_n(&mut c, OK_KEEP_ALIVE.len()), OK_KEEP_ALIVE);
        assert_eq!(srv.stats().requests.load(Ordering::Relaxed), 17);
        srv.shutdown().unwrap();
    }

    /// Three requests (one with a body) sent one byte per write.
    fn split_byte_by_byte(backend) {
        let Some(srv) = server(backend) else { return };
        let mut c = client(&srv);
        let mut stream = GET.to_vec();
        stream.extend_from_slice(b"POST /p HTTP/1.1\r\nContent-Length: 7\r\n\r\npayload");
        stream.extend_from_slice(GET);
        for b in &stream {
            c.write_all(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(read_n(&mut c, 3 * OK_KEEP_ALIVE.len()), OK_KEEP_ALIVE.repeat(3));
        assert_quiet_open(&mut c);
        srv.shutdown().unwrap();
    }

    /// 1000 requests one after another on one connection, each answered before the next.
    fn keep_alive_1000_requests(backend) {
        let Some(srv) = server(backend) else { return };
        let mut c = client(&srv);
        for i in 0..1000 {
            c.write_all(GET).unwrap();
            let got = read_n(&mut c, OK_KEEP_ALIVE.len());
            assert_eq!(got, OK_KEEP_ALIVE, "response {i}");
        }
        let stats = srv.stats();
        assert_eq!(stats.accepted.load(Ordering::Relaxed), 1);
        assert_eq!(stats.requests.load(Ordering::Relaxed), 1000);
        srv.shutdown().unwrap();
    }

    /// `Connection: close` gets its response with `Connection: close`, then the server
    /// closes; requests pipelined after it are not answered.
    fn connection_close(backend) {
        let Some(srv) = server(backend) else { return };
        let mut c = client(&srv);
        let mut stream = GET.to_vec();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        stream.extend_from_slice(GET);
        c.write_all(&stream).unwrap();
        let all = read_to_eof(&mut c);
        let first = &all[..OK_KEEP_ALIVE.len()];
        assert_eq!(first, OK_KEEP_ALIVE);
        let second = String::from_utf8_lossy(&all[OK_KEEP_ALIVE.len()..]).to_string();
        assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second:?}");
        assert!(second.contains("\r\nConnection: close\r\n"), "{second:?}");
        assert!(second.ends_with("\r\n\r\nHello, World!"), "{second:?}");
        // Our close ends the server's drain at once (not after its LINGER).
        drop(c);
        util::eventually(IO_TIMEOUT, "the server frees the closed connection", || {
            srv.stats().closed.load(Ordering::Relaxed) == 1
        });
        srv.shutdown().unwrap();
    }

    /// HTTP/1.0 closes after one response unless it asks for keep-alive.
    fn http10(backend) {
        let Some(srv) = server(backend) else { return };
        let mut c = client(&srv);
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let all = read_to_eof(&mut c);
        assert!(all.ends_with(b"Hello, World!"), "{:?}", String::from_utf8_lossy(&all));

        let mut c = client(&srv);
        c.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\r\nHello, World!";
        assert_eq!(read_n(&mut c, head.len()), head);
        assert_quiet_open(&mut c);
        srv.shutdown().unwrap();
    }

    /// A `HEAD` request gets the headers without the body.
    fn head_request(backend) {
        let Some(srv) = server(backend) else { return };
        let mut c = client(&srv);
        c.write_all(b"HEAD / HTTP/1.1\r\n\r\n").unwrap();
        c.write_all(GET).unwrap();
        let head_len = OK_KEEP_ALIVE.len() - 13;
        let got = read_n(&mut c, head_len + OK_KEEP_ALIVE.len());
        assert_eq!(&got[..head_len], &OK_KEEP_ALIVE[..head_len]);
        assert_eq!(&got[head_len..], OK_KEEP_ALIVE);
        srv.shutdown().unwrap();
    }

    /// A malformed request after a good one: the good one is answered, then a 400, then the
    /// server closes.
    fn malformed_gets_400_and_close(backend) {
        let Some(srv) = server(backend) else { return };
        let mut c = client(&srv);
        let mut stream = GET.to_vec();
        stream.extend_from_slice(b"GET /a b HTTP/1.1\r\n\r\n");
        c.write_all(&stream).unwrap();
        let all = read_to_eof(&mut c);
        assert_eq!(&all[..OK_KEEP_ALIVE.len()], OK_KEEP_ALIVE);
        assert_eq!(status_of(&all[OK_KEEP_ALIVE.len()..]), "HTTP/1.1 400 Bad Request");
        assert_eq!(srv.stats().refused.load(Ordering::Relaxed), 1);
        srv.shutdown().unwrap();
    }

    /// A head over 8 KiB gets a 431 and the connection closes, while the client is still
    /// sending (the server drains before it closes, so the 431 is not lost to a reset).
    fn oversize_head_gets_431(backend) {
        let Some(srv) = server(backend) else { return };
        let mut c = client(&srv);
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.resize(64 * 1024, b'a');
        c.write_all(&big).unwrap();
        // Stop sending, so that the server's drain sees our FIN.
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let all = read_to_eof(&mut c);
        assert_eq!(status_of(&all), "HTTP/1.1 431 Request Header Fields Too Large");
        srv.shutdown().unwrap();
    }

    /// `Transfer-Encoding` is refused with a 501.
    fn transfer_encoding_gets_501(backend) {
        let Some(srv) = server(backend) else { return };
        let mut c = client(&srv);
        c.write_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").unwrap();
        let all = read_to_eof(&mut c);
        assert_eq!(status_of(&all), "HTTP/1.1 501 Not Implemented");
        srv.shutdown().unwrap();
    }

    /// 100 connections at once, each with 10 rounds of 4 pipelined requests; the server
    /// accounts for every connection once the clients close.
    fn concurrent_100_connections(backend) {
        let Some(srv) = server(backend) else { return };
        let mut clients: Vec<TcpStream> = (0..100).map(|_| client(&srv)).collect();
        let batch = GET.repeat(4);
        let want = OK_KEEP_ALIVE.repeat(4);
        for round in 0..10 {
            for c in &mut clients {
                c.write_all(&batch).unwrap();
            }
            for (i, c) in clients.iter_mut().enumerate() {
                assert_eq!(read_n(c, want.len()), want, "round {round}, connection {i}");
            }
        }
        drop(clients);
        let stats = srv.stats();
        util::eventually(IO_TIMEOUT, "the server frees all 100 connections", || {
            stats.closed.load(Ordering::Relaxed) == 100
        });
        assert_eq!(stats.accepted.load(Ordering::Relaxed), 100);
        assert_eq!(stats.requests.load(Ordering::Relaxed), 4000);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
        srv.shutdown().unwrap();
    }

    /// Shutting the server down with connections open (one mid-request) ends every one of
    /// them and leaves no descriptor behind.
    fn shutdown_with_open_connections(backend) {
        if !util::own_process("shutdown_with_open_connections") {
            return;
        }
        let before = util::open_fds();
        let Some(srv) = server(backend) else { return };
        let mut idle = client(&srv);
        let mut partial = client(&srv);
        partial.write_all(b"GET / HT").unwrap();
        idle.write_all(GET).unwrap();
        read_n(&mut idle, OK_KEEP_ALIVE.len());
        srv.shutdown().unwrap();
        // The partial request's bytes may still sit unread in the server's socket when it
        // closes, and then the kernel resets the connection instead of sending FIN: either
        // way it ended, with nothing sent.
        let mut rest = Vec::new();
        match partial.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        }
        assert!(read_to_eof(&mut idle).is_empty());
        drop((idle, partial));
        util::assert_fds(&before, before.len(), "after the server shut down");
    }
}
