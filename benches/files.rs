//! File I/O: gaio's epoll backend, its io_uring backend and a `pread`/`pwrite` thread pool,
//! side by side in one run (issue 4).
//!
//! ```text
//! cargo bench --bench files                         # 3 rounds, about 2 minutes
//! cargo bench --bench files -- --quick              # smoke check on a 64 MiB file, a few s
//! cargo bench --bench files -- --rounds 5 --secs 3
//! cargo bench --bench files -- --only rand4k-direct,seqread-direct --out /tmp/f.md
//! ```
//!
//! Cases (all with `--depth` requests in flight, 32 by default, as fio's `iodepth=32`):
//!
//! - **rand4k-direct**: 4 KiB reads at random 4 KiB-aligned offsets, `O_DIRECT` (every read
//!   goes to the device; the page cache is bypassed): IOPS;
//! - **seqread-direct**, **seqread-buffered**: 128 KiB reads at consecutive offsets, wrapping
//!   at the end of the file: MiB/s. The buffered case is page-cache warm: the file is read
//!   once, untimed, before it in every round (cold buffered reads on this VM range from 0.5 to
//!   3.4 GiB/s from one run to the next, research/files-uring.md §4.1);
//! - **seqwrite-direct**, **seqwrite-buffered**: 128 KiB writes at consecutive offsets of a
//!   second file, overwriting it (its blocks are allocated when it is created), wrapping at its
//!   end: MiB/s. The rate excludes the final fsync, as fio's does; every write measurement
//!   ends with an untimed fsync so that the next one starts without dirty pages.
//!
//! Implementations, each given the same case for the same time (`--secs`, default 2):
//!
//! - **gaio epoll** and **gaio io_uring**: one `Watcher` on that backend, the file taken over
//!   with `watch`, `--depth` `read_at`/`write_at` requests kept in flight from one thread's
//!   `wait_io` loop (each completion submits the next request with the buffer it returned);
//! - **pread pool**: `--depth` plain `std` threads, each looping on `pread`/`pwrite`
//!   (`FileExt::read_exact_at`/`write_all_at`) with its own buffer: the same total
//!   concurrency, no library at all.
//!
//! Every read is checked: the test file holds its own block number in the first 8 bytes of
//! each 4 KiB block, and a read that returns anything else (or short) fails the run. Buffers
//! are `AlignedBuf`s (4 KiB-aligned) for every implementation, `O_DIRECT` or not.
//!
//! Rounds rotate the order of the three implementations (round 1: epoll, io_uring, pool;
//! round 2: io_uring, pool, epoll; ...). The report gives each case's median per
//! implementation, the ratio to the pool, and the fraction of the fio figure for the same case
//! from research/files-uring.md §4 (fio 3.33, io_uring engine, QD 32, on this machine). It is
//! printed and, for a full run, written to `benches/results/files.md` (`--out PATH` to write
//! elsewhere; a `--quick` run writes no file unless `--out` is given).
//!
//! The test files (`--size-mib`, default 1024, each: one to read, one to write) live in
//! `target/tmp/gaio-bench-files/` (on the project's disk, which supports `O_DIRECT`; `/tmp`
//! may be tmpfs). They are created on the first run and **kept for reuse** (a later run checks
//! their size and block numbers and reuses them; creating them costs a few seconds);
//! `--remove` deletes them at the end, `cargo clean` does too. A `--quick` run uses separate
//! 64 MiB files and always deletes them.
//!
//! Run with no argument at all (as `cargo test --benches` runs it), it is a `--quick` smoke
//! test. A watchdog ends the run with exit code 3 if it overruns.

mod common;

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::example::workloads::{set_phase, spawn_watchdog, splitmix64, BenchResult};
use common::example::Args;
use common::run_info::{self, kernel_release, utc_now, CpuSnapshot};
use common::stats::{median, thousands};
use common::{cli, outputs};
use gaio::{AlignedBuf, Backend, Buffer, IoBuf, Watcher};

const USAGE: &str = "\
usage: cargo bench --bench files [-- OPTIONS]

File I/O on gaio (both backends) against plain threads: 4 KiB random O_DIRECT reads and
128 KiB sequential reads and writes, every block verified.

options:
  --quick                  1 round of 0.3 s on a 64 MiB file; writes no report unless --out
  --rounds N               rounds per case (1 to 100; default 3)
  --secs S                 seconds per measurement (0.1 to 60; default 2)
  --depth N                requests in flight (1 to 1024; default 32)
  --size-mib N             size of the test file in MiB (8 to 65536; default 1024)
  --only LIST              comma-separated cases: rand4k-direct, seqread-direct,
                           seqread-buffered, seqwrite-direct, seqwrite-buffered (default all)
  --remove                 delete the test files at the end
  --out PATH               write the report here (default benches/results/files.md)
  -h, --help               print this help";

const KIB: usize = 1024;
const MIB: u64 = 1 << 20;
/// The unit of the block numbers written into the read file.
const HEADER_BLOCK: usize = 4 * KIB;
/// Mixed into every block number, so that a block of zeros never passes the check.
const MAGIC: u64 = 0x6761_696f_2d66_696c;
/// Alignment of every buffer (a page: enough for any `O_DIRECT` file).
const BUF_ALIGN: usize = 4 * KIB;
/// Longest wait for any completion before a measurement is declared stuck.
const STALL: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------------------------
// Cases and implementations
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Rand4kDirect,
    SeqReadDirect,
    SeqReadBuffered,
    SeqWriteDirect,
    SeqWriteBuffered,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::Rand4kDirect,
        Case::SeqReadDirect,
        Case::SeqReadBuffered,
        Case::SeqWriteDirect,
        Case::SeqWriteBuffered,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Rand4kDirect => "rand4k-direct",
            Case::SeqReadDirect => "seqread-direct",
            Case::SeqReadBuffered => "seqread-buffered",
            Case::SeqWriteDirect => "seqwrite-direct",
            Case::SeqWriteBuffered => "seqwrite-buffered",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::Rand4kDirect => "4 KiB random read, O_DIRECT",
            Case::SeqReadDirect => "128 KiB sequential read, O_DIRECT",
            Case::SeqReadBuffered => "128 KiB sequential read, buffered (page cache warm)",
            Case::SeqWriteDirect => "128 KiB sequential write, O_DIRECT",
            Case::SeqWriteBuffered => "128 KiB sequential write, buffered",
        }
    }

    fn block(self) -> usize {
        match self {
            Case::Rand4kDirect => 4 * KIB,
            _ => 128 * KIB,
        }
    }

    fn direct(self) -> bool {
        matches!(
            self,
            Case::Rand4kDirect | Case::SeqReadDirect | Case::SeqWriteDirect
        )
    }

    fn write(self) -> bool {
        matches!(self, Case::SeqWriteDirect | Case::SeqWriteBuffered)
    }

    fn random(self) -> bool {
        self == Case::Rand4kDirect
    }

    /// The headline unit: IOPS for random reads, MiB/s for the sequential cases.
    fn unit(self) -> &'static str {
        if self.random() {
            "IOPS"
        } else {
            "MiB/s"
        }
    }

    /// The fio figure for the same case on this machine (research/files-uring.md §4, fio
    /// 3.33, io_uring engine, iodepth 32, 1 GiB file), in [`unit`](Case::unit), and what it is.
    fn fio(self) -> (f64, &'static str) {
        match self {
            Case::Rand4kDirect => (87_235.0, "§4.2 io_uring QD32 randread direct"),
            Case::SeqReadDirect => (1397.0, "§4.1 io_uring QD32 read direct"),
            Case::SeqReadBuffered => (22_340.0, "§4.1 io_uring QD32 read buffered, warm"),
            Case::SeqWriteDirect => (4671.0, "§4.1 io_uring QD32 write direct"),
            Case::SeqWriteBuffered => (2292.0, "§4.1 io_uring QD32 write buffered, 12 s"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imp {
    Epoll,
    Uring,
    Pool,
}

const IMPS: [Imp; 3] = [Imp::Epoll, Imp::Uring, Imp::Pool];

impl Imp {
    fn name(self) -> &'static str {
        match self {
            Imp::Epoll => "gaio epoll",
            Imp::Uring => "gaio io_uring",
            Imp::Pool => "pread pool",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ops: u64,
    bytes: u64,
    secs: f64,
    /// CPU time of the whole process (every thread, the watcher's included) over the wall
    /// time: cores kept busy.
    cores: f64,
}

impl Sample {
    fn iops(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn mibs(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.secs
    }
    /// The value in the case's headline unit.
    fn value(&self, case: Case) -> f64 {
        if case.random() {
            self.iops()
        } else {
            self.mibs()
        }
    }
}

// ------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------

struct Options {
    quick: bool,
    rounds: usize,
    secs: f64,
    depth: usize,
    size_mib: u64,
    only: Vec<Case>,
    remove: bool,
    out: Option<String>,
}

fn parse_args() -> BenchResult<Options> {
    let mut o = Options {
        quick: run_info::no_arguments(),
        rounds: 3,
        secs: 2.0,
        depth: 32,
        size_mib: 1024,
        only: Case::ALL.to_vec(),
        remove: false,
        out: None,
    };
    let (mut rounds, mut secs, mut size) = (None, None, None);
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--quick" => {
                o.quick = true;
            }
            "--remove" => {
                o.remove = true;
            }
            "--rounds" => {
                let n: usize = args.parse_within(&flag, 1..=100)?;
                rounds = Some(n);
            }
            "--secs" => {
                let s: f64 = args.parse_within(&flag, 0.1..=60.0)?;
                secs = Some(s);
            }
            "--depth" => {
                let n: usize = args.parse_within(&flag, 1..=1024)?;
                o.depth = n;
            }
            "--size-mib" => {
                let n: u64 = args.parse_within(&flag, 8..=64 * 1024)?;
                size = Some(n);
            }
            "--only" => {
                let list = args.value(&flag)?;
                o.only = cli::pick(&list, "--only", USAGE, &Case::ALL, Case::name)?;
            }
            "--out" => o.out = Some(args.value(&flag)?),
            other => cli::other_flag(other, USAGE)?,
        }
    }
    if o.quick {
        o.rounds = 1;
        o.secs = 0.3;
        o.size_mib = 64;
    }
    o.rounds = rounds.unwrap_or(o.rounds);
    o.secs = secs.unwrap_or(o.secs);
    o.size_mib = size.unwrap_or(o.size_mib);
    Ok(o)
}

// ------------------------------------------------------------------------------------------
// Test files
// ------------------------------------------------------------------------------------------

struct Files {
    read: PathBuf,
    write: PathBuf,
    size: u64,
    /// Whether the files were already there and were reused.
    reused: bool,
}

/// The block number stored at the start of the 4 KiB block at `offset`.
fn header(offset: u64) -> u64 {
    (offset / HEADER_BLOCK as u64) ^ MAGIC
}

/// Fills `buf` (the bytes at file offset `offset`) with the file's content: each 4 KiB block
/// starts with its block number, the rest is pseudo-random.
fn fill(buf: &mut [u8], offset: u64) {
    for (i, block) in buf.chunks_mut(HEADER_BLOCK).enumerate() {
        let at = offset + (i * HEADER_BLOCK) as u64;
        let mut state = at;
        for word in block.chunks_mut(8) {
            let r = splitmix64(&mut state).to_le_bytes();
            word.copy_from_slice(&r[..word.len()]);
        }
        block[..8].copy_from_slice(&header(at).to_le_bytes());
    }
}

/// Checks the block numbers of the bytes read at `offset`.
fn check(buf: &[u8], offset: u64) -> BenchResult<()> {
    for (i, block) in buf.chunks(HEADER_BLOCK).enumerate() {
        let at = offset + (i * HEADER_BLOCK) as u64;
        let got = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
        if got != header(at) {
            return Err(format!(
                "read at {offset}: the block at {at} holds block number {:#x}, expected {:#x}",
                got ^ MAGIC,
                at / HEADER_BLOCK as u64
            ));
        }
    }
    Ok(())
}

/// Whether `path` is a test file of `size` bytes (its size, and the block numbers of a few
/// blocks spread over it).
fn usable(path: &Path, size: u64) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    if f.metadata().map(|m| m.len()).ok() != Some(size) {
        return false;
    }
    let mut buf = vec![0u8; HEADER_BLOCK];
    (0..16u64).all(|i| {
        let at = (size / HEADER_BLOCK as u64 * i / 16) * HEADER_BLOCK as u64;
        f.read_exact_at(&mut buf, at).is_ok() && check(&buf, at).is_ok()
    })
}

/// Writes a test file of `size` bytes (buffered, 4 MiB at a time) and flushes it.
fn create(path: &Path, size: u64) -> BenchResult<()> {
    let tmp = path.with_extension("partial");
    let mut f = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        fill(&mut buf[..n], at);
        f.write_all(&buf[..n])
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        at += n as u64;
    }
    f.sync_all()
        .map_err(|e| format!("fsync {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn prepare(o: &Options) -> BenchResult<Files> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gaio-bench-files");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tag = if o.quick {
        format!("quick-{}", std::process::id())
    } else {
        format!("{}M", o.size_mib)
    };
    let size = o.size_mib * MIB;
    let files = Files {
        read: dir.join(format!("read-{tag}.dat")),
        write: dir.join(format!("write-{tag}.dat")),
        size,
        reused: false,
    };
    let mut reused = true;
    for p in [&files.read, &files.write] {
        if !usable(p, size) {
            reused = false;
            eprintln!(
                "files: creating {} ({} MiB), once; later runs reuse it",
                p.display(),
                o.size_mib
            );
            let t = Instant::now();
            create(p, size)?;
            eprintln!("files: created in {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    // O_DIRECT must work where the files are.
    open(&files.read, false, true)?;
    Ok(Files { reused, ..files })
}

fn open(path: &Path, write: bool, direct: bool) -> BenchResult<File> {
    let mut oo = OpenOptions::new();
    oo.read(true).write(write);
    if direct {
        oo.custom_flags(libc::O_DIRECT);
    }
    oo.open(path).map_err(|e| {
        let hint = if direct && e.raw_os_error() == Some(libc::EINVAL) {
            " (O_DIRECT refused by this filesystem)"
        } else {
            ""
        };
        format!("open {}: {e}{hint}", path.display())
    })
}

/// Reads the whole file once, buffered, so that it is in the page cache.
fn warm(path: &Path) -> BenchResult<()> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("warming {}: {e}", path.display())),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Measurements
// ------------------------------------------------------------------------------------------

/// Where the next request goes: consecutive blocks wrapping at the end of the file, or random
/// block-aligned offsets.
struct Offsets {
    random: bool,
    block: u64,
    blocks: u64,
    next: u64,
    rng: u64,
}

impl Offsets {
    fn new(case: Case, size: u64, seed: u64) -> Offsets {
        let block = case.block() as u64;
        Offsets {
            random: case.random(),
            block,
            blocks: size / block,
            next: 0,
            rng: seed,
        }
    }

    fn next(&mut self) -> u64 {
        if self.random {
            splitmix64(&mut self.rng) % self.blocks * self.block
        } else {
            let at = self.next % self.blocks * self.block;
            self.next += 1;
            at
        }
    }
}

/// User plus system CPU time of this process (every thread), in seconds.
fn cpu_time() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct we pass, which is valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A buffer for one request: aligned, and for writes filled with data.
fn buffer(case: Case) -> BenchResult<AlignedBuf> {
    let mut b = AlignedBuf::new(case.block(), BUF_ALIGN).map_err(|e| format!("buffer: {e}"))?;
    if case.write() {
        fill(&mut b, 0);
    }
    Ok(b)
}

fn measure(imp: Imp, case: Case, files: &Files, o: &Options, seed: u64) -> BenchResult<Sample> {
    let path = if case.write() {
        &files.write
    } else {
        &files.read
    };
    let file = open(path, case.write(), case.direct())?;
    match imp {
        Imp::Epoll => run_gaio(Backend::Epoll, case, file, files.size, o, seed),
        Imp::Uring => run_gaio(Backend::Uring, case, file, files.size, o, seed),
        Imp::Pool => run_pool(case, file, files.size, o, seed),
    }
}

/// `--depth` requests in flight on one watcher, driven by one `wait_io` loop.
fn run_gaio(
    backend: Backend,
    case: Case,
    file: File,
    size: u64,
    o: &Options,
    seed: u64,
) -> BenchResult<Sample> {
    let w: Watcher<u64> = Watcher::builder()
        .backend(backend)
        .build()
        .map_err(|e| format!("watcher on {backend}: {e}"))?;
    let fc = w.watch(&file).map_err(|e| format!("watch: {e}"))?;
    let block = case.block();
    let mut offsets = Offsets::new(case, size, seed);
    let submit = |buf: IoBuf, at: u64| -> BenchResult<()> {
        let r = if case.write() {
            w.write_at(at, &fc, buf, at, None)
        } else {
            w.read_at(at, &fc, buf, at, None)
        };
        r.map(|_| ())
            .map_err(|e| format!("submit at {at}: {}", e.error))
    };
    let bufs = (0..o.depth)
        .map(|_| buffer(case))
        .collect::<BenchResult<Vec<_>>>()?;

    let cpu = cpu_time();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.secs);
    let mut in_flight = 0usize;
    for b in bufs {
        submit(IoBuf::Aligned(b), offsets.next())?;
        in_flight += 1;
    }
    let (mut ops, mut bytes) = (0u64, 0u64);
    let mut going = true;
    while in_flight > 0 {
        let batch = w
            .wait_io_timeout(STALL)
            .map_err(|e| format!("wait_io: {e}"))?;
        if batch.is_empty() {
            return Err(format!(
                "no completion in {} s ({in_flight} in flight)",
                STALL.as_secs()
            ));
        }
        going = going && Instant::now() < end;
        for res in batch {
            in_flight -= 1;
            let at = res.context;
            if let Some(e) = &res.error {
                return Err(format!("{:?} at {at}: {e}", res.op));
            }
            if res.size != block {
                return Err(format!(
                    "{:?} at {at}: {} of {block} bytes",
                    res.op, res.size
                ));
            }
            let buf = match res.buffer {
                Buffer::Aligned(b) => IoBuf::Aligned(b),
                other => return Err(format!("{:?} at {at} returned {other:?}", res.op)),
            };
            if !case.write() {
                check(&buf, at)?;
            }
            ops += 1;
            bytes += block as u64;
            if going {
                submit(buf, offsets.next())?;
                in_flight += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cores = (cpu_time() - cpu) / secs;
    if case.write() {
        // Untimed: the next measurement starts without dirty pages.
        w.fsync(0, &fc, None)
            .map_err(|e| format!("fsync: {}", e.error))?;
        let batch = w
            .wait_io_timeout(Duration::from_secs(120))
            .map_err(|e| format!("wait_io: {e}"))?;
        match batch.into_iter().next() {
            Some(r) if r.error.is_none() => {}
            Some(r) => return Err(format!("fsync: {:?}", r.error)),
            None => return Err("fsync did not complete in 120 s".into()),
        }
    }
    Ok(Sample {
        ops,
        bytes,
        secs,
        cores,
    })
}

/// `--depth` threads, each looping on `pread`/`pwrite` with its own buffer.
fn run_pool(case: Case, file: File, size: u64, o: &Options, seed: u64) -> BenchResult<Sample> {
    let file = Arc::new(file);
    let next = Arc::new(AtomicU64::new(0));
    let go = Arc::new(Barrier::new(o.depth + 1));
    let secs = Duration::from_secs_f64(o.secs);
    let mut threads = Vec::with_capacity(o.depth);
    for t in 0..o.depth {
        let (file, next, go) = (file.clone(), next.clone(), go.clone());
        let mut buf = buffer(case)?;
        let mut offsets = Offsets::new(case, size, seed ^ (t as u64 + 1).wrapping_mul(MAGIC));
        let spawned = std::thread::Builder::new().name(format!("pool-{t}")).spawn(
            move || -> BenchResult<u64> {
                go.wait();
                let end = Instant::now() + secs;
                let mut ops = 0u64;
                while Instant::now() < end {
                    let at = if case.random() {
                        offsets.next()
                    } else {
                        next.fetch_add(1, Ordering::Relaxed) % offsets.blocks * offsets.block
                    };
                    if case.write() {
                        file.write_all_at(&buf, at)
                            .map_err(|e| format!("pwrite at {at}: {e}"))?;
                    } else {
                        file.read_exact_at(&mut buf, at)
                            .map_err(|e| format!("pread at {at}: {e}"))?;
                        check(&buf, at)?;
                    }
                    ops += 1;
                }
                Ok(ops)
            },
        );
        match spawned {
            Ok(h) => threads.push(h),
            // The threads already started stay blocked on the barrier; the run ends with
            // this error anyway.
            Err(e) => return Err(format!("spawning pool thread {t}: {e}")),
        }
    }
    go.wait();
    let cpu = cpu_time();
    let start = Instant::now();
    let mut ops = 0u64;
    let mut failed = None;
    for h in threads {
        match h.join() {
            Ok(Ok(n)) => ops += n,
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some("a pool thread panicked".into()),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cores = (cpu_time() - cpu) / secs;
    if let Some(e) = failed {
        return Err(e);
    }
    if case.write() {
        file.sync_all().map_err(|e| format!("fsync: {e}"))?;
    }
    Ok(Sample {
        ops,
        bytes: ops * case.block() as u64,
        secs,
        cores,
    })
}

// ------------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------------

fn run(o: Options) -> BenchResult<()> {
    let per = o.secs + 3.0;
    let budget = 120.0 + o.size_mib as f64 / 50.0 + (o.rounds * o.only.len() * 3) as f64 * per;
    spawn_watchdog("files", Duration::from_secs_f64(budget));
    for b in [Backend::Epoll, Backend::Uring] {
        Watcher::builder()
            .backend(b)
            .build::<()>()
            .map_err(|e| format!("backend {b} cannot run here: {e}"))?;
    }
    set_phase("test files");
    let files = prepare(&o)?;
    let outcome = measure_all(&o, &files);
    if o.quick || o.remove {
        for p in [&files.read, &files.write] {
            let _ = std::fs::remove_file(p);
        }
    }
    let (values, info) = outcome?;
    set_phase("report");
    let report = report(&o, &files, &values, &info);
    print!("{report}");
    outputs::write_report("files", !o.quick, o.out.as_deref(), &report)
}

/// values[case index in o.only][imp index][round]
type Values = Vec<[Vec<Sample>; 3]>;

struct RunInfo {
    took: Duration,
    /// The share of the machine's CPU time other processes used: over the run, and per round.
    other_cpu: Option<f64>,
    other_rounds: Vec<Option<f64>>,
}

fn measure_all(o: &Options, files: &Files) -> BenchResult<(Values, RunInfo)> {
    let mut values: Values = o.only.iter().map(|_| [vec![], vec![], vec![]]).collect();
    let start = Instant::now();
    let load = CpuSnapshot::take();
    eprintln!(
        "files: {} rounds x {} cases x 3 implementations, {:.1} s each, depth {}, {} MiB files; \
         progress on stderr, report on stdout",
        o.rounds,
        o.only.len(),
        o.secs,
        o.depth,
        o.size_mib
    );
    let mut other_rounds = Vec::with_capacity(o.rounds);
    for round in 0..o.rounds {
        let round_load = CpuSnapshot::take();
        for (ci, &case) in o.only.iter().enumerate() {
            if case == Case::SeqReadBuffered {
                set_phase("warming the page cache");
                warm(&files.read)?;
            }
            for k in 0..IMPS.len() {
                let ii = (round + k) % IMPS.len();
                let imp = IMPS[ii];
                set_phase(case.name());
                let seed = 0x5EED ^ ((round as u64) << 32) ^ ci as u64;
                let s = measure(imp, case, files, o, seed).map_err(|e| {
                    format!(
                        "round {}, {} on {}: {e}",
                        round + 1,
                        case.name(),
                        imp.name()
                    )
                })?;
                eprintln!(
                    "[{:6.1}s] round {}/{} {:<17} {:<13} {:>9.0} IOPS {:>7.0} MiB/s  CPU {:.2} \
                     cores",
                    start.elapsed().as_secs_f64(),
                    round + 1,
                    o.rounds,
                    case.name(),
                    imp.name(),
                    s.iops(),
                    s.mibs(),
                    s.cores
                );
                values[ci][ii].push(s);
            }
        }
        other_rounds.push(run_info::round_load(round_load, round));
    }
    let info = RunInfo {
        took: start.elapsed(),
        other_cpu: CpuSnapshot::other_since(load),
        other_rounds,
    };
    Ok((values, info))
}

fn report(o: &Options, files: &Files, values: &Values, info: &RunInfo) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "# gaio file I/O: epoll, io_uring and a pread/pwrite pool"
    );
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Written by `benches/files.rs`; regenerate with `cargo bench --bench files` (see \
         `benches/README.md`)."
    );
    let _ = writeln!(r);
    let _ = writeln!(r, "- command: `{}`", run_info::command("files"));
    let _ = writeln!(r, "- date: {}", utc_now());
    let _ = writeln!(r, "- kernel: {}", kernel_release());
    let _ = writeln!(r, "- cores: {}", run_info::cores());
    let _ = writeln!(
        r,
        "- plan: {} rounds, {:.1} s per measurement, {} requests in flight (gaio: one watcher, \
         one `wait_io` loop; pool: {} threads, one blocking call each); implementation order \
         rotating per round; run took {:.0} s",
        o.rounds,
        o.secs,
        o.depth,
        o.depth,
        info.took.as_secs_f64()
    );
    let _ = writeln!(
        r,
        "- files: two of {} MiB (one read, one overwritten) on {}, {}; every read's block \
         numbers checked",
        o.size_mib,
        fs_type(&files.read),
        if files.reused {
            "reused from an earlier run"
        } else {
            "created by this run"
        }
    );
    if let Some(load) = run_info::other_load_text(info.other_cpu, &info.other_rounds) {
        let _ = writeln!(r, "- other load: {load}");
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "| case | unit | gaio epoll | gaio io_uring | pread pool | epoll/pool | io_uring/pool \
         | fio | epoll/fio | io_uring/fio | pool/fio |"
    );
    let _ = writeln!(r, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (ci, &case) in o.only.iter().enumerate() {
        let m: Vec<f64> = (0..3)
            .map(|ii| {
                let v: Vec<f64> = values[ci][ii].iter().map(|s| s.value(case)).collect();
                median(&v)
            })
            .collect();
        let (fio, _) = case.fio();
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.2} |",
            case.label(),
            case.unit(),
            thousands(m[0]),
            thousands(m[1]),
            thousands(m[2]),
            m[0] / m[2],
            m[1] / m[2],
            thousands(fio),
            m[0] / fio,
            m[1] / fio,
            m[2] / fio
        );
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Medians over the rounds. The pool column is `pread` for reads and `pwrite` for writes. \
         fio: the figure for the same case on this machine from research/files-uring.md §4 \
         (fio 3.33, io_uring engine, iodepth 32, 1 GiB file): {}. Write rates exclude the \
         final fsync (as fio's do); each write measurement ends with an untimed fsync.",
        o.only
            .iter()
            .map(|c| format!("{} = {}", c.name(), c.fio().1))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Both units and the CPU the process used (all its threads, in cores), medians:"
    );
    let _ = writeln!(r);
    let _ = writeln!(r, "| case | implementation | IOPS | MiB/s | CPU (cores) |");
    let _ = writeln!(r, "|---|---|--:|--:|--:|");
    for (ci, &case) in o.only.iter().enumerate() {
        for (ii, imp) in IMPS.iter().enumerate() {
            let v = &values[ci][ii];
            let pick = |f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {:.2} |",
                case.name(),
                imp.name(),
                thousands(pick(Sample::iops)),
                thousands(pick(Sample::mibs)),
                pick(|s| s.cores)
            );
        }
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Every round's values, in the case's unit (round 1 first):"
    );
    let _ = writeln!(r);
    let _ = writeln!(r, "| case | implementation | values |");
    let _ = writeln!(r, "|---|---|---|");
    for (ci, &case) in o.only.iter().enumerate() {
        for (ii, imp) in IMPS.iter().enumerate() {
            let vals: Vec<String> = values[ci][ii]
                .iter()
                .map(|s| thousands(s.value(case)))
                .collect();
            let _ = writeln!(
                r,
                "| {} | {} | {} |",
                case.name(),
                imp.name(),
                vals.join(", ")
            );
        }
    }
    r
}

/// The filesystem type holding `path` (from /proc/self/mounts, longest mount prefix).
fn fs_type(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt).then(|| (mnt.len(), ty.to_string()))
        })
        .max_by_key(|(n, _)| *n)
        .map_or_else(|| "an unknown filesystem".into(), |(_, t)| t)
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = io::stdout().flush();
            eprintln!("files: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
