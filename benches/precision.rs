//! Deadline precision (issue 12; the shape of smol-rs/polling's `tests/precision.rs`, and
//! DESIGN.md property 7): how late a deadline's result is seen.
//!
//! One idle Unix socket connection (nothing is ever sent), watched by a gaio watcher; each wait
//! submits a `read_timeout` with its deadline `d` ahead (100 µs, 1 ms, 10 ms), then waits in
//! `wait_io` for its result, which must be `Deadline`; the lateness is the instant the result
//! is seen minus the deadline. Many waits per duration (1000, 500, 100), one at a time, on
//! `gaio-epoll` and `gaio-uring`, and, done by hand with no library in between, the same wait
//! in `epoll_pwait2` with a nanosecond timeout (`epoll_pwait2`: the kernel's floor) and in
//! `mio::Poll::poll(timeout)` (`mio-poll`: what a mio loop gets; epoll_wait takes whole
//! milliseconds, which mio rounds up). Per duration and implementation: min, p50, p99 and max lateness, in
//! µs; each round gives one set, and the report shows the medians over the rounds (3 by
//! default), the implementations' order rotating from round to round.
//!
//! A benchmark, not a timed test: it fails only if a wait ends with anything but `Deadline`,
//! or before its deadline, or not within a second after it.
//!
//! ```text
//! cargo bench --bench precision                 # 3 rounds, about 30 s: benches/results/precision.md, target/bench-results/precision.json
//! cargo bench --bench precision -- --quick      # 1 round, a tenth of the waits; writes no file unless --out / --json
//! cargo bench --bench precision -- --rounds 5 --waits 2
//! ```
//!
//! `--waits K` multiplies the waits per duration; run with no argument at all (as `cargo test
//! --benches` does) it is a `--quick` smoke test.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::example::workloads::{set_phase, spawn_watchdog, BenchResult};
use common::example::Args;
use common::results::{BenchFile, Better, ImplResult, Workload};
use common::run_info::{self, CpuSnapshot};
use common::stats::median;
use common::{cli, outputs};
use gaio::{Backend, Error, Watcher};

/// The deadlines measured, and how many waits each (before `--waits`).
const DURATIONS: [(Duration, usize, &str); 3] = [
    (Duration::from_micros(100), 1000, "100 µs"),
    (Duration::from_millis(1), 500, "1 ms"),
    (Duration::from_millis(10), 100, "10 ms"),
];

/// The statistics per duration, in the report's order.
const STATS: [&str; 4] = ["min", "p50", "p99", "max"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imp {
    Epoll,
    Uring,
    Pwait2,
    MioPoll,
}

impl Imp {
    const ALL: [Imp; 4] = [Imp::Epoll, Imp::Uring, Imp::Pwait2, Imp::MioPoll];

    fn name(self) -> &'static str {
        match self {
            Imp::Epoll => "gaio-epoll",
            Imp::Uring => "gaio-uring",
            Imp::Pwait2 => "epoll_pwait2",
            Imp::MioPoll => "mio-poll",
        }
    }
}

const USAGE: &str = "\
usage: cargo bench --bench precision [-- [--quick] [--rounds N] [--waits K]
           [--impls gaio-epoll,gaio-uring,epoll_pwait2,mio-poll] [--out PATH] [--json PATH]]";

struct Options {
    quick: bool,
    rounds: usize,
    waits: usize,
    impls: Vec<Imp>,
    out: Option<String>,
    json: Option<String>,
}

fn parse_args() -> BenchResult<Options> {
    let mut o = Options {
        quick: run_info::no_arguments(),
        rounds: 3,
        waits: 1,
        impls: Imp::ALL.to_vec(),
        out: None,
        json: None,
    };
    let mut rounds = None;
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => rounds = Some(args.parse_within(&flag, 1..=100)?),
            "--waits" => o.waits = args.parse_within(&flag, 1..=100)?,
            "--impls" => {
                let list = args.value(&flag)?;
                o.impls = cli::pick(&list, "--impls", USAGE, &Imp::ALL, Imp::name)?;
            }
            "--out" => o.out = Some(args.value(&flag)?),
            "--json" => o.json = Some(args.value(&flag)?),
            other => cli::other_flag(other, USAGE)?,
        }
    }
    o.rounds = rounds.unwrap_or(if o.quick { 1 } else { 3 });
    Ok(o)
}

/// Lateness of every wait, in µs.
type Samples = Vec<f64>;

/// `n` waits of `d` on a gaio watcher of `backend`.
fn gaio_waits(backend: Backend, d: Duration, n: usize) -> BenchResult<Samples> {
    let w: Watcher<u32> = Watcher::builder()
        .backend(backend)
        .build()
        .map_err(|e| format!("cannot start a {backend} watcher: {e}"))?;
    let (mine, _peer) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let conn = w.watch(&mine).map_err(|e| format!("watch: {e}"))?;
    drop(mine);
    let mut out = Vec::with_capacity(n);
    let mut buf = Some(vec![0u8; 1]);
    for i in 0..n as u32 {
        let deadline = Instant::now() + d;
        w.read_timeout(i, &conn, buf.take(), deadline)
            .map_err(|e| format!("read_timeout refused: {}", e.error))?;
        let bound = deadline + Duration::from_secs(1);
        let res = loop {
            let left = bound.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{backend}: no result a second after a {d:?} deadline"
                ));
            }
            let mut batch = w
                .wait_io_timeout(left)
                .map_err(|e| format!("wait_io: {e}"))?;
            if let Some(r) = batch.next() {
                let seen = Instant::now();
                if batch.next().is_some() {
                    return Err("two results for one wait".into());
                }
                break (r, seen);
            }
        };
        let (r, seen) = res;
        if !matches!(r.error, Some(Error::Deadline)) || r.context != i {
            return Err(format!("{backend}: expected a Deadline, got {r:?}"));
        }
        if seen < deadline {
            return Err(format!(
                "{backend}: the Deadline result came before the deadline"
            ));
        }
        out.push((seen - deadline).as_secs_f64() * 1e6);
        buf = r.buffer.into_vec();
    }
    w.close().map_err(|e| format!("close: {e}"))?;
    Ok(out)
}

/// `n` waits of `d` in `mio::Poll::poll` on the same idle socket: the floor.
fn mio_waits(d: Duration, n: usize) -> BenchResult<Samples> {
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new().map_err(|e| format!("mio poll: {e}"))?;
    let (mine, _peer) = mio::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let mut mine = mine;
    poll.registry()
        .register(&mut mine, Token(0), Interest::READABLE)
        .map_err(|e| format!("register: {e}"))?;
    let mut events = Events::with_capacity(8);
    // The first poll reports the registration's initial state (writable is not asked for; a
    // Unix socket reports nothing readable): drain it once.
    let _ = poll.poll(&mut events, Some(Duration::ZERO));
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            poll.poll(&mut events, Some(left))
                .map_err(|e| format!("mio poll: {e}"))?;
            if !events.is_empty() {
                return Err("mio: an event on an idle socket".into());
            }
            // epoll_wait rounds the timeout to milliseconds (up, in mio); a wake before the
            // deadline would wait again, as a timer loop does.
            if Instant::now() >= deadline {
                break;
            }
        }
        out.push((Instant::now() - deadline).as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// `n` waits of `d` in `epoll_pwait2` (a nanosecond timeout) on the same idle socket: the
/// kernel's floor, no library.
fn pwait2_waits(d: Duration, n: usize) -> BenchResult<Samples> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: epoll_create1 takes no memory; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(os("epoll_create1"));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let (mine, _peer) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: both descriptors are open; `ev` is a valid event for the call's duration.
    if unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            mine.as_raw_fd(),
            &mut ev,
        )
    } != 0
    {
        return Err(os("epoll_ctl"));
    }
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `events` has room for the 8 entries passed; `ts` lives for the call.
            let k = unsafe {
                libc::epoll_pwait2(
                    ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    8,
                    &ts,
                    std::ptr::null(),
                )
            };
            if k < 0 {
                return Err(os("epoll_pwait2"));
            }
            if k > 0 {
                return Err("epoll_pwait2: an event on an idle socket".into());
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        out.push((Instant::now() - deadline).as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// min, p50, p99, max of `s` (µs).
fn summary(s: &mut [f64]) -> [f64; 4] {
    s.sort_by(f64::total_cmp);
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    [s[0], at(0.5), at(0.99), s[s.len() - 1]]
}

/// `[duration][imp]` → per round `[min, p50, p99, max]`.
type Table = Vec<BTreeMap<&'static str, Vec<[f64; 4]>>>;

fn run(o: Options) -> BenchResult<()> {
    let scale = |n: usize| {
        if o.quick {
            (n / 10).max(10)
        } else {
            n * o.waits
        }
    };
    let planned: Duration = DURATIONS
        .iter()
        .map(|(d, n, _)| *d * scale(*n) as u32)
        .sum::<Duration>()
        * (o.rounds * o.impls.len()) as u32;
    spawn_watchdog("precision", Duration::from_secs(60) + planned * 4);
    let load_from = CpuSnapshot::take();
    let mut other_rounds = Vec::new();
    let mut table: Table = vec![BTreeMap::new(); DURATIONS.len()];
    for round in 0..o.rounds {
        let round_from = CpuSnapshot::take();
        let mut order = o.impls.clone();
        let k = round % order.len().max(1);
        order.rotate_left(k);
        for &imp in &order {
            for (di, (d, n, label)) in DURATIONS.iter().enumerate() {
                set_phase(label);
                let n = scale(*n);
                let mut s = match imp {
                    Imp::Epoll => gaio_waits(Backend::Epoll, *d, n)?,
                    Imp::Uring => gaio_waits(Backend::Uring, *d, n)?,
                    Imp::Pwait2 => pwait2_waits(*d, n)?,
                    Imp::MioPoll => mio_waits(*d, n)?,
                };
                let st = summary(&mut s);
                eprintln!(
                    "round {} {:<10} {:>6}: {n} waits, lateness min {:.0} p50 {:.0} p99 {:.0} max {:.0} µs",
                    round + 1,
                    imp.name(),
                    label,
                    st[0],
                    st[1],
                    st[2],
                    st[3]
                );
                table[di].entry(imp.name()).or_default().push(st);
            }
        }
        other_rounds.push(run_info::round_load(round_from, round));
    }
    let other = CpuSnapshot::other_since(load_from);
    let file = BenchFile {
        bench: "precision".into(),
        date: run_info::utc_now(),
        kernel: run_info::kernel_release(),
        cores: run_info::cores(),
        command: run_info::command("precision"),
        other_load: run_info::other_load_text(other, &other_rounds),
        workloads: workloads(&o, &table),
        notes: vec![
            "Lateness of a deadline: when its `Deadline` result is seen in `wait_io` minus the \
             deadline, one `read_timeout` at a time on an idle Unix socket; `epoll_pwait2` and \
             `mio-poll` are the same wait by hand (the kernel's nanosecond timeout, and mio's \
             millisecond one)."
                .into(),
        ],
    };
    let md = report(&file, &o, &table, scale);
    println!("\n{md}");
    let full = !o.quick && o.impls.len() == Imp::ALL.len();
    outputs::write_report("precision", full, o.out.as_deref(), &md)?;
    outputs::write_results(full, o.json.as_deref(), &file)
}

fn workloads(o: &Options, table: &Table) -> Vec<Workload> {
    let mut out = Vec::new();
    for (di, (_, _, label)) in DURATIONS.iter().enumerate() {
        for (si, stat) in STATS.iter().enumerate() {
            out.push(Workload {
                name: format!("deadline {label}: lateness {stat}"),
                metric: "µs late".into(),
                better: Better::Lower,
                results: o
                    .impls
                    .iter()
                    .filter_map(|imp| {
                        let rounds: Vec<f64> =
                            table[di].get(imp.name())?.iter().map(|s| s[si]).collect();
                        Some(ImplResult {
                            imp: imp.name().into(),
                            median: median(&rounds),
                            rounds,
                        })
                    })
                    .collect(),
                extra: BTreeMap::new(),
            });
        }
    }
    out
}

fn report(file: &BenchFile, o: &Options, table: &Table, scale: impl Fn(usize) -> usize) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# Deadline precision\n");
    let _ = writeln!(
        r,
        "`{}`: {}, kernel {}, {} cores, {} round(s). Other load: {}.\n",
        file.command,
        file.date,
        file.kernel,
        file.cores,
        o.rounds,
        file.other_load
            .as_deref()
            .unwrap_or("unknown (/proc/stat unreadable)")
    );
    let _ = writeln!(
        r,
        "How late a deadline's result is seen: one `read_timeout` at a time on an idle Unix \
         socket, its deadline 100 µs, 1 ms or 10 ms ahead, the lateness being the instant \
         `wait_io` hands over its `Deadline` result minus the deadline. The same wait done by \
         hand, with no library: `epoll_pwait2` (a nanosecond timeout: the kernel's floor) and \
         `mio-poll` (`mio::Poll::poll(timeout)`: epoll_wait's whole milliseconds, rounded up). \
         Waits per duration: \
         {}. Microseconds; the median over the rounds of each round's statistic.\n",
        DURATIONS
            .iter()
            .map(|(_, n, l)| format!("{} for {l}", scale(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = write!(r, "| deadline | statistic |");
    for imp in &o.impls {
        let _ = write!(r, " {} |", imp.name());
    }
    let _ = write!(r, "\n|---|---|");
    for _ in &o.impls {
        let _ = write!(r, "---:|");
    }
    let _ = writeln!(r);
    for (di, (_, _, label)) in DURATIONS.iter().enumerate() {
        for (si, stat) in STATS.iter().enumerate() {
            let _ = write!(r, "| {label} | {stat} |");
            for imp in &o.impls {
                let v = table[di]
                    .get(imp.name())
                    .map(|rs| median(&rs.iter().map(|s| s[si]).collect::<Vec<_>>()));
                match v {
                    Some(v) => {
                        let _ = write!(r, " {v:.0} |");
                    }
                    None => {
                        let _ = write!(r, " - |");
                    }
                }
            }
            let _ = writeln!(r);
        }
    }
    r
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("precision: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
