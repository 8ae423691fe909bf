//! `connect` for sockets the caller set up (`connect_socket`) and for Unix-socket paths
//! (`connect_unix`), on both backends: the connection comes from the address the caller bound,
//! carries data both ways, and bad input is refused with a typed error that hands the context
//! back.
#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use gaio::{Error, OpResult, OpType};
use util::*;

/// The one result the watcher hands back within 10 s.
fn one(w: &gaio::Watcher<u32>, what: &str) -> OpResult<u32> {
    let mut got = None;
    wait_until(w, Duration::from_secs(10), what, |r| {
        got = Some(r);
        true
    });
    got.unwrap()
}

fn temp_path(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("gaio-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

backend_tests! {
    /// A socket with options set and a local address bound is connected as it is: the
    /// listener sees the bound address, and bytes go both ways through the watcher.
    fn connect_socket_keeps_the_callers_setup(backend) {
        let Some(w) = watcher_for::<u32>(backend) else { return };
        for ip in ["127.0.0.1", "::1"] {
            let Ok(ln) = TcpListener::bind((ip, 0)) else { continue };
            let local: SocketAddr = if ip.contains(':') {
                format!("[{ip}]:0")
            } else {
                format!("{ip}:0")
            }
            .parse()
            .unwrap();
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(local),
                socket2::Type::STREAM,
                None,
            )
            .unwrap();
            sock.set_tcp_nodelay(true).unwrap();
            sock.bind(&local.into()).unwrap();
            let bound = sock.local_addr().unwrap().as_socket().unwrap();
            w.connect_socket(7, sock, ln.local_addr().unwrap(), None).unwrap();
            let r = one(&w, "the connect");
            assert_eq!((r.op, r.context), (OpType::Connect, 7));
            assert!(r.error.is_none(), "{ip}: {:?}", r.error);
            let (mut peer, from) = ln.accept().unwrap();
            assert_eq!(from, bound, "{ip}: the connection came from the bound address");
            w.write(8, &r.conn, b"ping".to_vec()).unwrap();
            assert!(one(&w, "the write").error.is_none());
            let mut b = [0u8; 4];
            peer.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"ping");
            w.free(&r.conn).unwrap();
        }
    }

    /// `connect_unix` reaches a Unix listener; the connection works both ways.
    fn connect_unix_path(backend) {
        let Some(w) = watcher_for::<u32>(backend) else { return };
        let path = temp_path(&format!("unix-{backend}"));
        let ln = UnixListener::bind(&path).unwrap();
        w.connect_unix(1, &path, None).unwrap();
        let r = one(&w, "the connect");
        assert!(r.error.is_none(), "{:?}", r.error);
        let (mut peer, _) = ln.accept().unwrap();
        peer.write_all(b"hello").unwrap();
        w.read_full(2, &r.conn, vec![0; 5], None).unwrap();
        let got = one(&w, "the read");
        assert_eq!(got.data(), b"hello");
        drop(ln);
        let _ = std::fs::remove_file(&path);
    }

    /// Nothing at the path: the connect fails with the OS error, as its result.
    fn connect_unix_missing_path(backend) {
        let Some(w) = watcher_for::<u32>(backend) else { return };
        let path = temp_path(&format!("missing-{backend}"));
        w.connect_unix(3, &path, None).unwrap();
        let r = one(&w, "the connect");
        assert_eq!(r.context, 3);
        assert!(
            matches!(errno_of(&r.error), Some(libc::ENOENT) | Some(libc::ECONNREFUSED)),
            "{:?}",
            r.error
        );
    }

    /// Bad input gets a typed error and the context back: a descriptor that is not a socket,
    /// and a path too long for a Unix socket address.
    fn connect_refuses_bad_input(backend) {
        let Some(w) = watcher_for::<u32>(backend) else { return };
        let (rd, _wr) = pipe();
        let e = w.connect_socket(4, rd, "127.0.0.1:9".parse().unwrap(), None).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{:?}", e.error);
        assert_eq!(e.context, 4);
        let long = std::path::PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        let e = w.connect_unix(5, &long, None).unwrap_err();
        assert!(matches!(e.error, Error::InvalidArgument(_)), "{:?}", e.error);
        assert_eq!(e.context, 5);
        expect_quiet(&w, Duration::from_millis(50));
    }
}
