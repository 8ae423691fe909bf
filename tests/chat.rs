//! The `chat` example's room (`examples/room/mod.rs`) on both backends: members are greeted
//! and announced, each line reaches every other member (not its sender) whole and in order,
//! even when it arrives in pieces, leaving is announced, and one line reaches 40 members.

#[macro_use]
mod util;

#[allow(dead_code)]
#[path = "../examples/room/mod.rs"]
mod room;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use gaio::Watcher;

const T10: Duration = Duration::from_secs(10);

/// A running room and the thread that runs it; closing the watcher stops it.
struct Server {
    w: Arc<Watcher<()>>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<Result<room::RoomStats, gaio::Error>>>,
}

impl Server {
    fn start(backend: gaio::Backend) -> Option<Server> {
        let w = Arc::new(util::watcher_for::<()>(backend)?);
        let ln = util::listen();
        let addr = ln.local_addr().unwrap();
        let lconn = w.watch(&ln).unwrap();
        drop(ln);
        let w2 = w.clone();
        let thread = std::thread::spawn(move || room::Room::new(&w2, lconn).run());
        Some(Server {
            w,
            addr,
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> room::RoomStats {
        self.w.close().unwrap();
        let t = self.thread.take().unwrap();
        t.join()
            .expect("room thread")
            .expect("room ended with an error")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.w.close();
    }
}

/// A member: the socket and a line reader over it.
struct Member {
    out: TcpStream,
    lines: BufReader<TcpStream>,
}

impl Member {
    fn join(addr: SocketAddr) -> (Member, String) {
        let s = util::dial(addr);
        s.set_read_timeout(Some(T10)).unwrap();
        let mut m = Member {
            out: s.try_clone().unwrap(),
            lines: BufReader::new(s),
        };
        let welcome = m.line();
        let name = welcome
            .strip_prefix("* welcome ")
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("not a welcome: {welcome:?}"))
            .to_string();
        (m, name)
    }

    /// The next line, without its newline; fails after 10 s.
    fn line(&mut self) -> String {
        let mut l = String::new();
        match self.lines.read_line(&mut l) {
            Ok(0) => panic!("EOF instead of a line"),
            Ok(_) => l.trim_end_matches('\n').to_string(),
            Err(e) => panic!("no line within 10 s: {e}"),
        }
    }

    fn say(&mut self, bytes: &[u8]) {
        self.out.write_all(bytes).unwrap();
    }
}

backend_tests! {
    /// Three members: greetings and join announcements, a line split across two writes
    /// reaches the two others whole (and not its sender), leaving is announced.
    fn lines_reach_every_other_member(backend) {
        let Some(server) = Server::start(backend) else { return };
        let (mut a, an) = Member::join(server.addr);
        let (mut b, bn) = Member::join(server.addr);
        assert_eq!(a.line(), format!("* {bn} joined"));
        let (mut c, cn) = Member::join(server.addr);
        assert_eq!(a.line(), format!("* {cn} joined"));
        assert_eq!(b.line(), format!("* {cn} joined"));
        a.say(b"hel");
        a.say(b"lo\r\nsecond\n");
        for m in [&mut b, &mut c] {
            assert_eq!(m.line(), format!("{an}: hello"));
            assert_eq!(m.line(), format!("{an}: second"));
        }
        b.say(b"from b\n");
        // a's next line is b's, not an echo of its own.
        assert_eq!(a.line(), format!("{bn}: from b"));
        assert_eq!(c.line(), format!("{bn}: from b"));
        drop(c);
        assert_eq!(a.line(), format!("* {cn} left"));
        assert_eq!(b.line(), format!("* {cn} left"));
        let stats = server.stop();
        assert_eq!((stats.joined, stats.lines), (3, 3));
    }

    /// One line reaches 40 other members, each exactly once, then a second one behind it.
    fn one_line_to_forty_members(backend) {
        let Some(server) = Server::start(backend) else { return };
        let (mut speaker, sn) = Member::join(server.addr);
        let mut others = Vec::new();
        for _ in 0..40 {
            let (m, _) = Member::join(server.addr);
            others.push(m);
            // Wait for the announcement, so every member is in before the line is sent.
            assert!(speaker.line().ends_with(" joined"));
        }
        speaker.say(b"to all\nagain\n");
        for m in &mut others {
            let mut l = m.line();
            while l.starts_with("* ") {
                l = m.line(); // later members' join announcements
            }
            assert_eq!(l, format!("{sn}: to all"));
            assert_eq!(m.line(), format!("{sn}: again"));
        }
        drop(others);
        server.stop();
    }
}
