//! File copy: many `read_at`/`write_at` requests in flight on one `wait_io` loop, then an
//! `fsync`, then a byte-for-byte check of the copy.
//!
//! ```text
//! cargo run --release --example file-copy -- SRC DST [--direct] [--depth N] [--block BYTES]
//!                                                    [--backend epoll|uring|auto]
//! ```
//!
//! The copy runs `--depth` requests at once (default 32): each slot reads a block of
//! `--block` bytes (default 128 KiB) at the next offset, writes it to the same offset of
//! `DST`, then reads the next block, so reads and writes of different blocks overlap, all on
//! one thread calling `wait_io`. Once every write has completed, one `fsync` on `DST` makes the
//! copy durable (an `fsync` waits for the writes submitted before it; here they are also all
//! complete already). The program then reads both files back with plain `std` reads, 1 MiB at
//! a time, and compares them. It prints the size, the copy time (reads, writes and the
//! `fsync`), the rate and the backend, and exits non-zero on any error or difference.
//!
//! `DST` is created or truncated, then sized to `SRC`'s length before the first write, so that
//! the parallel writes do not extend the file (ext4 waits for an `O_DIRECT` write that extends
//! a file before returning from it, which would serialise them).
//!
//! `--direct` opens both files with `O_DIRECT` and uses [`AlignedBuf`] buffers aligned as both
//! files need ([`gaio::dio_alignment`], what [`AlignedBuf::for_file`] uses; 512 bytes on the
//! project's machine); the block size must then be a multiple of that alignment. **The tail**: when the
//! source's size is not a multiple of that alignment, the last block is read with the full,
//! aligned buffer (`read_at` returns the short count at the end of the file), written with its
//! length rounded up to the alignment (the padding is zeros), and `DST` is cut back to the
//! source's size with `set_len` before the `fsync`. Every request stays `O_DIRECT`; no second,
//! buffered descriptor is needed.
//!
//! `O_DIRECT` needs a filesystem that supports it: tmpfs (a common `/tmp`) refuses it on older
//! kernels; `target/` on the project's disk (ext4) is fine.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gaio::{AlignedBuf, Backend, Buffer, Conn, IoBuf, OpResult, OpType, Watcher};

const USAGE: &str = "\
usage: file-copy SRC DST [OPTIONS]

Copies SRC to DST with many read_at/write_at requests in flight on one gaio wait_io loop,
then fsync, then checks the copy byte for byte.

options:
  --direct                        open both files with O_DIRECT (aligned buffers)
  --depth N                       requests in flight (1 to 4096; default 32)
  --block BYTES                   bytes per request (1 to 64 MiB; default 131072)
  --backend epoll|uring|auto      the gaio backend (default: GAIO_BACKEND, else auto)
  -h, --help                      print this help";

/// Longest wait for any completion before the copy is declared stuck.
const STALL: Duration = Duration::from_secs(60);
/// Chunk size of the verification pass.
const VERIFY_CHUNK: usize = 1 << 20;

struct Options {
    src: PathBuf,
    dst: PathBuf,
    direct: bool,
    depth: usize,
    block: usize,
    backend: Option<Backend>,
}

fn parse_args() -> Result<Options, String> {
    let mut positional = Vec::new();
    let mut o = Options {
        src: PathBuf::new(),
        dst: PathBuf::new(),
        direct: false,
        depth: 32,
        block: 128 * 1024,
        backend: None,
    };
    // lexopt: `--flag value` and `--flag=value`, positional SRC and DST anywhere.
    let mut p = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| format!("{e}\n{USAGE}");
    // The value of `flag`, parsed; errors name the flag.
    fn value<T: std::str::FromStr>(p: &mut lexopt::Parser, flag: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let v = p
            .value()
            .map_err(|_| format!("{flag} needs a value\n{USAGE}"))?
            .into_string()
            .map_err(|v| format!("{flag} {v:?}: not UTF-8"))?;
        v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
    }
    while let Some(arg) = p.next().map_err(err)? {
        use lexopt::Arg::{Long, Short, Value};
        match arg {
            Long("direct") => o.direct = true,
            Long("depth") => o.depth = value(&mut p, "--depth")?,
            Long("block") => o.block = value(&mut p, "--block")?,
            Long("backend") => o.backend = Some(value(&mut p, "--backend")?),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) => positional.push(PathBuf::from(v)),
            other => return Err(err(other.unexpected())),
        }
    }
    let [src, dst]: [PathBuf; 2] = positional
        .try_into()
        .map_err(|_| format!("expected SRC and DST\n{USAGE}"))?;
    if !(1..=4096).contains(&o.depth) {
        return Err(format!("--depth {}: expected 1 to 4096", o.depth));
    }
    if o.block == 0 || o.block > 64 << 20 {
        return Err(format!("--block {}: expected 1 to 64 MiB", o.block));
    }
    o.src = src;
    o.dst = dst;
    Ok(o)
}

/// What a request was for; comes back in its result.
#[derive(Debug, Clone, Copy)]
enum Ctx {
    /// Read of the block at this offset, expecting this many bytes.
    Read {
        offset: u64,
        want: usize,
    },
    /// Write of the block at this offset, with this many bytes of data (the buffer may be
    /// longer by the `O_DIRECT` padding).
    Write {
        offset: u64,
        data: usize,
    },
    Fsync,
}

/// The copy's state: the next block to read and the requests in flight.
struct Copy<'a> {
    w: &'a Watcher<Ctx>,
    src: &'a Conn,
    dst: &'a Conn,
    size: u64,
    block: usize,
    /// `O_DIRECT` length alignment (1 without `--direct`).
    align: usize,
    next: u64,
    in_flight: usize,
    copied: u64,
}

impl Copy<'_> {
    /// Reads the next block into `buf`, if any block is left; otherwise drops `buf`.
    fn read_next(&mut self, buf: IoBuf) -> Result<(), String> {
        if self.next >= self.size {
            return Ok(());
        }
        let offset = self.next;
        let want = (self.size - offset).min(self.block as u64) as usize;
        self.next += want as u64;
        self.w
            .read_at(Ctx::Read { offset, want }, self.src, buf, offset, None)
            .map_err(|e| format!("read_at {offset}: {}", e.error))?;
        self.in_flight += 1;
        Ok(())
    }

    /// A read completed: write its bytes to the same offset of the destination.
    fn write_block(&mut self, offset: u64, want: usize, res: OpResult<Ctx>) -> Result<(), String> {
        if res.size != want {
            return Err(format!(
                "short read at {offset}: {} of {want} bytes (did the source change?)",
                res.size
            ));
        }
        let buf = match res.buffer {
            Buffer::User(mut v) => {
                v.truncate(want);
                IoBuf::Vec(v)
            }
            Buffer::Aligned(b) if want == b.len() => IoBuf::Aligned(b),
            Buffer::Aligned(b) => {
                // The tail under O_DIRECT: the length must stay a multiple of the alignment,
                // so write `want` rounded up; the padding is zeros and `set_len` cuts it off.
                let padded = want.div_ceil(self.align) * self.align;
                if padded == b.len() {
                    let mut b = b;
                    b[want..].fill(0);
                    IoBuf::Aligned(b)
                } else {
                    let mut tail = AlignedBuf::new(padded, b.align())
                        .map_err(|e| format!("tail buffer: {e}"))?;
                    tail[..want].copy_from_slice(&b[..want]);
                    IoBuf::Aligned(tail)
                }
            }
            other => return Err(format!("read at {offset} came back with {other:?}")),
        };
        self.w
            .write_at(
                Ctx::Write { offset, data: want },
                self.dst,
                buf,
                offset,
                None,
            )
            .map_err(|e| format!("write_at {offset}: {}", e.error))?;
        self.in_flight += 1;
        Ok(())
    }

    /// A write completed: the slot's buffer reads the next block.
    fn reuse(&mut self, offset: u64, data: usize, res: OpResult<Ctx>) -> Result<(), String> {
        let expect = match &res.buffer {
            Buffer::User(v) => v.len(),
            Buffer::Aligned(b) => b.len(),
            other => return Err(format!("write at {offset} came back with {other:?}")),
        };
        if res.size != expect {
            return Err(format!(
                "short write at {offset}: {} of {expect} bytes",
                res.size
            ));
        }
        self.copied += data as u64;
        let buf = match res.buffer {
            Buffer::User(mut v) => {
                v.resize(self.block, 0);
                IoBuf::Vec(v)
            }
            // A padded tail buffer is shorter than a block; it is the last block anyway.
            Buffer::Aligned(b) if b.len() == self.block => IoBuf::Aligned(b),
            _ => return Ok(()),
        };
        self.read_next(buf)
    }
}

struct Report {
    size: u64,
    copy: Duration,
    verify: Duration,
    backend: Backend,
    align: usize,
}

fn open(path: &PathBuf, write: bool, direct: bool) -> Result<File, String> {
    let mut oo = OpenOptions::new();
    if write {
        oo.read(true).write(true).create(true).truncate(true);
    } else {
        oo.read(true);
    }
    if direct {
        oo.custom_flags(libc::O_DIRECT);
    }
    oo.open(path).map_err(|e| {
        let hint = if direct && e.raw_os_error() == Some(libc::EINVAL) {
            " (this filesystem refuses O_DIRECT; try a path on a disk, e.g. under target/)"
        } else {
            ""
        };
        format!("open {}: {e}{hint}", path.display())
    })
}

fn copy(o: &Options) -> Result<Report, String> {
    let mut builder = Watcher::builder();
    if let Some(b) = o.backend {
        builder = builder.backend(b);
    }
    let w: Watcher<Ctx> = builder
        .build()
        .map_err(|e| format!("cannot start the watcher: {e}"))?;

    let src = open(&o.src, false, o.direct)?;
    let size = src
        .metadata()
        .map_err(|e| format!("{}: {e}", o.src.display()))?
        .len();
    let dst = open(&o.dst, true, o.direct)?;
    // O_DIRECT: (memory alignment, length and offset alignment) both files accept.
    let (mem_align, align) = if o.direct {
        let a = gaio::dio_alignment(&src).map_err(|e| format!("dio alignment: {e}"))?;
        let b = gaio::dio_alignment(&dst).map_err(|e| format!("dio alignment: {e}"))?;
        let (mem, len) = (a.memory.max(b.memory), a.offset.max(b.offset));
        if o.block % len != 0 {
            return Err(format!(
                "--block {} is not a multiple of the O_DIRECT alignment ({len} bytes)",
                o.block
            ));
        }
        (mem, len)
    } else {
        (1, 1)
    };

    let start = Instant::now();
    // Sized up front, so that no write extends the file (see the top of the file).
    dst.set_len(size)
        .map_err(|e| format!("set_len {}: {e}", o.dst.display()))?;
    let src_conn = w.watch(&src).map_err(|e| format!("watch source: {e}"))?;
    let dst_conn = w
        .watch(&dst)
        .map_err(|e| format!("watch destination: {e}"))?;
    let mut c = Copy {
        w: &w,
        src: &src_conn,
        dst: &dst_conn,
        size,
        block: o.block,
        align,
        next: 0,
        in_flight: 0,
        copied: 0,
    };
    let slots = (size.div_ceil(o.block as u64)).min(o.depth as u64) as usize;
    for _ in 0..slots {
        let buf = if o.direct {
            let b = AlignedBuf::new(o.block, mem_align).map_err(|e| format!("buffer: {e}"))?;
            IoBuf::Aligned(b)
        } else {
            IoBuf::Vec(vec![0; o.block])
        };
        c.read_next(buf)?;
    }
    while c.in_flight > 0 {
        let batch = w
            .wait_io_timeout(STALL)
            .map_err(|e| format!("wait_io: {e}"))?;
        if batch.is_empty() {
            return Err(format!(
                "no completion for {} s with {} requests in flight",
                STALL.as_secs(),
                c.in_flight
            ));
        }
        for res in batch {
            c.in_flight -= 1;
            if let Some(err) = &res.error {
                return Err(format!("{:?} {:?} failed: {err}", res.op, res.context));
            }
            match (res.op, res.context) {
                (OpType::ReadAt, Ctx::Read { offset, want }) => c.write_block(offset, want, res)?,
                (OpType::WriteAt, Ctx::Write { offset, data }) => c.reuse(offset, data, res)?,
                (op, ctx) => return Err(format!("unexpected result {op:?} for {ctx:?}")),
            }
        }
    }
    if c.copied != size {
        return Err(format!("copied {} of {size} bytes", c.copied));
    }
    // A padded O_DIRECT tail wrote past the source's size: cut it back, then flush (the fsync
    // then also covers the new size).
    if size % align as u64 != 0 {
        dst.set_len(size)
            .map_err(|e| format!("set_len {}: {e}", o.dst.display()))?;
    }
    w.fsync(Ctx::Fsync, &dst_conn, None)
        .map_err(|e| format!("fsync: {}", e.error))?;
    loop {
        let batch = w
            .wait_io_timeout(STALL)
            .map_err(|e| format!("wait_io: {e}"))?;
        if batch.is_empty() {
            return Err(format!("fsync did not complete in {} s", STALL.as_secs()));
        }
        let mut done = false;
        for res in batch {
            match (&res.error, res.op) {
                (Some(err), _) => return Err(format!("{:?} failed: {err}", res.op)),
                (None, OpType::Fsync) => done = true,
                (None, op) => return Err(format!("unexpected result {op:?} after the copy")),
            }
        }
        if done {
            break;
        }
    }
    let copy = start.elapsed();
    let backend = w.backend();
    drop((src_conn, dst_conn));
    w.close().map_err(|e| format!("close: {e}"))?;

    let start = Instant::now();
    verify(&o.src, &o.dst, size)?;
    Ok(Report {
        size,
        copy,
        verify: start.elapsed(),
        backend,
        align,
    })
}

/// Reads both files with plain buffered reads, 1 MiB at a time, and compares them.
fn verify(src: &PathBuf, dst: &PathBuf, size: u64) -> Result<(), String> {
    let dst_len = std::fs::metadata(dst)
        .map_err(|e| format!("{}: {e}", dst.display()))?
        .len();
    if dst_len != size {
        return Err(format!(
            "verify: {} is {dst_len} bytes, the source {size}",
            dst.display()
        ));
    }
    let mut a = File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let mut b = File::open(dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    let (mut ba, mut bb) = (vec![0u8; VERIFY_CHUNK], vec![0u8; VERIFY_CHUNK]);
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(VERIFY_CHUNK as u64) as usize;
        a.read_exact(&mut ba[..n])
            .map_err(|e| format!("verify: read {} at {at}: {e}", src.display()))?;
        b.read_exact(&mut bb[..n])
            .map_err(|e| format!("verify: read {} at {at}: {e}", dst.display()))?;
        if ba[..n] != bb[..n] {
            let i = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y);
            return Err(format!(
                "verify: MISMATCH at byte {}",
                at + i.unwrap_or(0) as u64
            ));
        }
        at += n as u64;
    }
    let mut extra = [0u8; 1];
    if b.read(&mut extra).map_err(|e| format!("verify: {e}"))? != 0 {
        return Err("verify: the copy is longer than the source".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("file-copy: {e}");
            return ExitCode::from(2);
        }
    };
    match copy(&o) {
        Ok(r) => {
            let secs = r.copy.as_secs_f64().max(1e-9);
            let direct = if o.direct {
                format!("O_DIRECT (alignment {})", r.align)
            } else {
                "buffered".into()
            };
            println!(
                "file-copy: {} bytes ({:.1} MiB) in {:.3} s: {:.0} MB/s ({:.0} MiB/s), backend \
                 {}, {direct}, depth {}, block {}; fsync included; verified in {:.3} s",
                r.size,
                r.size as f64 / (1 << 20) as f64,
                secs,
                r.size as f64 / 1e6 / secs,
                r.size as f64 / (1 << 20) as f64 / secs,
                r.backend,
                o.depth,
                o.block,
                r.verify.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("file-copy: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
