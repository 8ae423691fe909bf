//! The UDP echo loop of `examples/udp-echo.rs`, which `benches/udp.rs` measures.
//!
//! One watched UDP socket, `receives` `recv_from`s kept pending, each into a buffer of its
//! own; every datagram is sent back to its source with `send_to` of that same buffer (no copy,
//! no allocation: a buffer goes round receive, send, receive), and the buffer's next
//! `recv_from` is submitted when its send completes. Each `wait_io` batch is handled corked,
//! so on epoll its sends go out as one `sendmmsg` and the receives it submits come in by
//! `recvmmsg` (on io_uring a cork holds nothing).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gaio::{Conn, OpResult, OpType, Watcher};

/// What the loop counts.
#[derive(Default)]
pub struct UdpStats {
    /// Datagrams received and echoed (a coalesced receive counts each of its datagrams).
    pub echoed: AtomicU64,
    /// Datagrams longer than the receive buffer (echoed cut, as received).
    pub truncated: AtomicU64,
    /// Receives and sends that failed (each logged to stderr when `verbose`).
    pub errors: AtomicU64,
}

/// The loop's settings.
pub struct UdpEcho {
    /// `recv_from`s kept pending.
    pub receives: usize,
    /// Bytes per receive buffer.
    pub buffer_size: usize,
    /// Log every failed request to stderr.
    pub verbose: bool,
    /// Turn UDP GRO on: a receive may hold several datagrams of one source, echoed back
    /// with one segmented send (`send_to_gso`) of the same segment size.
    pub gro: bool,
}

/// Takes `socket` over and echoes every datagram until `stop` is set (checked every 100 ms
/// at least) or `wait_io` fails.
pub fn udp_echo_loop(
    w: &Watcher<usize>,
    socket: &UdpSocket,
    cfg: &UdpEcho,
    stop: &AtomicBool,
    stats: &UdpStats,
) -> Result<(), gaio::Error> {
    let conn = w.watch(socket)?;
    if cfg.gro {
        w.set_udp_gro(&conn, true)?;
    }
    for i in 0..cfg.receives {
        w.recv_from(i, &conn, Some(vec![0; cfg.buffer_size]))
            .map_err(|e| e.error)?;
    }
    let mut results: Vec<OpResult<usize>> = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        w.wait_io_into(&mut results, Some(Duration::from_millis(100)))?;
        let cork = w.cork(&conn)?;
        for res in results.drain(..) {
            handle(w, &conn, res, cfg, stats)?;
        }
        drop(cork);
    }
    w.free(&conn)
}

fn handle(
    w: &Watcher<usize>,
    conn: &Conn,
    res: OpResult<usize>,
    cfg: &UdpEcho,
    stats: &UdpStats,
) -> Result<(), gaio::Error> {
    let ctx = res.context;
    if let Some(e) = &res.error {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        if cfg.verbose {
            eprintln!("udp-echo: {:?} failed: {e}", res.op);
        }
        // Whatever failed, keep the buffer going round: receive into it again.
        let buf = res.buffer.into_vec().unwrap_or_default();
        return again(w, conn, ctx, buf, cfg);
    }
    match res.op {
        OpType::RecvFrom => {
            if res.truncated.is_some() {
                stats.truncated.fetch_add(1, Ordering::Relaxed);
            }
            let Some(to) = res.addr else {
                // A datagram with no IP source cannot be echoed.
                return again(w, conn, ctx, res.buffer.into_vec().unwrap_or_default(), cfg);
            };
            let mut buf = res.buffer.into_vec().unwrap_or_default();
            buf.truncate(res.size);
            match res.segment_size {
                // Several datagrams coalesced (GRO): back as the same datagrams.
                Some(seg) if seg < buf.len() => {
                    let n = buf.len().div_ceil(seg) as u64;
                    stats.echoed.fetch_add(n, Ordering::Relaxed);
                    w.send_to_gso(ctx, conn, buf, to, seg)
                        .map_err(|e| e.error)?;
                }
                _ => {
                    stats.echoed.fetch_add(1, Ordering::Relaxed);
                    w.send_to(ctx, conn, buf, to).map_err(|e| e.error)?;
                }
            }
        }
        OpType::SendTo => {
            let buf = res.buffer.into_vec().unwrap_or_default();
            again(w, conn, ctx, buf, cfg)?;
        }
        _ => {}
    }
    Ok(())
}

/// The next receive into `buf`, grown back to the buffer size (within its capacity: no
/// allocation once it has gone round once).
fn again(
    w: &Watcher<usize>,
    conn: &Conn,
    ctx: usize,
    mut buf: Vec<u8>,
    cfg: &UdpEcho,
) -> Result<(), gaio::Error> {
    buf.resize(cfg.buffer_size, 0);
    w.recv_from(ctx, conn, Some(buf)).map_err(|e| e.error)?;
    Ok(())
}
