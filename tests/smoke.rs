use gaio::{OpType, Watcher};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[test]
fn echo_100mib_with_caller_buffers() {
    let ln = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = ln.local_addr().unwrap();
    let w: Watcher<()> = Watcher::new().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (s, _) = ln.accept().unwrap();
    let conn = w.watch(&s).unwrap();
    drop(s);
    w.read((), &conn, Some(vec![0; 65536])).unwrap();
    let total = 100 << 20;
    let tx: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut wc = client.try_clone().unwrap();
    let txc = tx.clone();
    let writer = std::thread::spawn(move || wc.write_all(&txc).unwrap());
    let mut rc = client;
    let reader = std::thread::spawn(move || {
        let mut rx = vec![0u8; total];
        rc.read_exact(&mut rx).unwrap();
        rx
    });
    let start = Instant::now();
    let mut echoed = 0;
    while echoed < total {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out");
        for res in w.wait_io_timeout(Duration::from_secs(1)).unwrap() {
            assert!(res.error.is_none(), "{:?}", res.error);
            match res.op {
                OpType::Read => {
                    let n = res.size;
                    let mut buf = res.buffer.into_vec().unwrap();
                    let out = buf[..n].to_vec();
                    buf.iter_mut().for_each(|b| *b = 0);
                    w.write((), &res.conn, out).unwrap();
                    w.read((), &res.conn, Some(buf)).unwrap();
                }
                OpType::Write => echoed += res.size,
                _ => {}
            }
        }
    }
    writer.join().unwrap();
    let rx = reader.join().unwrap();
    assert!(rx == tx);
    println!("{:.0} MB/s", total as f64 / start.elapsed().as_secs_f64() / 1e6);
}
