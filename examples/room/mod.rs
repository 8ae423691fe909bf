//! The `chat` example's room: one gaio `wait_io` loop.
//!
//! `examples/chat.rs` includes this directory with `mod room;` (Cargo builds only
//! `examples/*.rs` and `examples/*/main.rs` as examples, so this is not one of its own);
//! `tests/chat.rs` includes it with `#[path]`.
//!
//! Members connect over TCP (the loop keeps one `accept` request outstanding on the watched
//! listener) and are named `guest<N>` in the order they join. Every line a member sends
//! (bytes up to `\n`) goes to every *other* member as `<name>: <line>\n`; joining and leaving
//! are announced the same way (`* guest3 joined`, `* guest3 left`), and a new member is
//! greeted with its name and who is there. Each message is built once as an `Arc<[u8]>` and
//! every member's write takes a clone of it: one allocation per message, whatever the number
//! of members, and the kernel reads the same bytes for all of them.
//!
//! Reads go into the watcher's swap buffers (an idle member holds no buffer); only the
//! unfinished tail of a line is kept per member. A member whose line grows past
//! [`MAX_LINE`] bytes, or who has [`MAX_PENDING`] messages not yet written (a reader too slow
//! to keep up), is disconnected, so no member makes the server buffer without bound.

use std::collections::HashMap;
use std::sync::Arc;

use gaio::{Buffer, Conn, Error, OpResult, OpType, Watcher};

/// Longest line a member may send, in bytes (the newline not counted).
pub const MAX_LINE: usize = 4096;

/// Messages a member may have unwritten before it is disconnected as too slow.
pub const MAX_PENDING: usize = 1024;

/// One member of the room.
struct Member {
    name: String,
    /// The start of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    /// Writes submitted and not yet completed.
    pending: usize,
}

/// The room: the watcher, its listener and its members.
pub struct Room<'w> {
    w: &'w Watcher<()>,
    listener: Conn,
    members: HashMap<Conn, Member>,
    /// Members to disconnect once the current result is handled (EOF, an error, too slow, a
    /// line too long): collected rather than freed on the spot, so a broadcast never recurses.
    gone: Vec<Conn>,
    stats: RoomStats,
}

/// What the loop counted, returned when the watcher closes.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoomStats {
    /// Members who ever joined (their names count up from `guest1`).
    pub joined: u64,
    /// Lines received and broadcast.
    pub lines: u64,
    /// Members disconnected for having [`MAX_PENDING`] messages unwritten.
    pub dropped_slow: u64,
}

impl<'w> Room<'w> {
    /// A room serving `listener`, a listening socket already watched by `w`.
    pub fn new(w: &'w Watcher<()>, listener: Conn) -> Room<'w> {
        Room {
            w,
            listener,
            members: HashMap::new(),
            gone: Vec::new(),
            stats: RoomStats::default(),
        }
    }

    /// Runs the room until the watcher is closed (from another thread: `Watcher::close`).
    pub fn run(mut self) -> Result<RoomStats, Error> {
        self.w.accept((), &self.listener).map_err(|e| e.error)?;
        let mut results: Vec<OpResult<()>> = Vec::new();
        loop {
            match self.w.wait_io_into(&mut results, None) {
                Ok(_) => {}
                Err(Error::WatcherClosed) => return Ok(self.stats),
                Err(e) => return Err(e),
            }
            for res in results.drain(..) {
                self.on_result(res);
                // Leaving is announced, and the announcement may find more members to drop.
                while let Some(conn) = self.gone.pop() {
                    self.leave(&conn);
                }
            }
        }
    }

    fn on_result(&mut self, res: OpResult<()>) {
        match res.op {
            OpType::Accept => {
                match (res.accepted, &res.error) {
                    (Some(conn), _) => self.join(conn),
                    (None, Some(Error::ClosedPipe | Error::WatcherClosed)) => return,
                    (None, Some(e)) => {
                        eprintln!("chat: accept: {e}");
                        // Out of descriptors or memory: give the system a moment rather than
                        // fail the same accept in a tight loop.
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                        ) {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                    (None, None) => {}
                }
                // One accept outstanding at all times (unless the watcher is closing).
                let _ = self.w.accept((), &self.listener);
            }
            OpType::Read => match res.error {
                None => self.received(res),
                Some(_) => self.gone.push(res.conn),
            },
            OpType::Write => {
                if let Some(m) = self.members.get_mut(&res.conn) {
                    m.pending -= 1;
                }
                if res.error.is_some() {
                    self.gone.push(res.conn);
                }
            }
            _ => {}
        }
    }

    fn join(&mut self, conn: Conn) {
        self.stats.joined += 1;
        let name = format!("guest{}", self.stats.joined);
        let mut here: Vec<&str> = self.members.values().map(|m| m.name.as_str()).collect();
        here.sort_unstable();
        let welcome = if here.is_empty() {
            format!("* welcome {name}, you are alone\n")
        } else {
            format!("* welcome {name}, here: {}\n", here.join(", "))
        };
        self.broadcast(&conn, format!("* {name} joined\n").into_bytes());
        self.members.insert(
            conn.clone(),
            Member {
                name,
                partial: Vec::new(),
                pending: 0,
            },
        );
        self.send(&conn, Arc::from(welcome.into_bytes()));
        if self.w.read((), &conn, None).is_err() {
            self.gone.push(conn);
        }
    }

    /// A swap read completed: split it into lines, broadcast each, read again.
    fn received(&mut self, res: OpResult<()>) {
        let conn = res.conn.clone();
        let Some(m) = self.members.get_mut(&conn) else {
            return;
        };
        let mut lines = Vec::new();
        let mut too_long = false;
        for &b in res.data() {
            if b == b'\n' {
                lines.push(std::mem::take(&mut m.partial));
            } else if m.partial.len() == MAX_LINE {
                too_long = true;
                break;
            } else {
                m.partial.push(b);
            }
        }
        // The swap slice goes back before the broadcast writes are submitted.
        drop(res);
        let name = m.name.clone();
        for line in lines {
            self.stats.lines += 1;
            let mut msg = Vec::with_capacity(name.len() + 3 + line.len());
            msg.extend_from_slice(name.as_bytes());
            msg.extend_from_slice(b": ");
            msg.extend_from_slice(strip_cr(&line));
            msg.push(b'\n');
            self.broadcast(&conn, msg);
        }
        if too_long {
            eprintln!("chat: {name}: a line over {MAX_LINE} bytes; disconnected");
            self.gone.push(conn);
        } else if self.w.read((), &conn, None).is_err() {
            self.gone.push(conn);
        }
    }

    /// Sends `msg` to every member but `from`, as one shared buffer.
    fn broadcast(&mut self, from: &Conn, msg: Vec<u8>) {
        let shared: Arc<[u8]> = Arc::from(msg);
        let to: Vec<Conn> = self
            .members
            .keys()
            .filter(|c| *c != from)
            .cloned()
            .collect();
        for conn in to {
            self.send(&conn, shared.clone());
        }
    }

    /// Queues `msg` to `conn`, or marks it to be disconnected if it is too far behind.
    fn send(&mut self, conn: &Conn, msg: Arc<[u8]>) {
        let Some(m) = self.members.get_mut(conn) else {
            return;
        };
        if m.pending >= MAX_PENDING {
            if !self.gone.contains(conn) {
                self.stats.dropped_slow += 1;
                eprintln!(
                    "chat: {}: {MAX_PENDING} messages unwritten; disconnected",
                    m.name
                );
                self.gone.push(conn.clone());
            }
            return;
        }
        match self.w.write((), conn, Buffer::Shared(msg)) {
            Ok(_) => m.pending += 1,
            Err(_) => self.gone.push(conn.clone()),
        }
    }

    /// A member is gone: free it and tell the others.
    fn leave(&mut self, conn: &Conn) {
        let Some(m) = self.members.remove(conn) else {
            return; // already gone: a later result of a freed member
        };
        let _ = self.w.free(conn);
        self.broadcast(conn, format!("* {} left\n", m.name).into_bytes());
    }
}

/// A line without the `\r` of a `\r\n` ending (telnet and nc -C send them).
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}
