//! Facts about a bench run for its report header: the command that ran it, the machine's
//! cores, and how much of the machine other processes took meanwhile. (The date and kernel
//! come from `example::workloads`, which the `echo-bench` example shares.)

use std::time::Instant;

pub use super::example::workloads::{kernel_release, utc_now};

/// CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The arguments the bench was given, without the `--bench` flag `cargo bench` adds.
pub fn given_args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect()
}

/// True when the binary runs with no argument at all, as `cargo test --benches` and
/// `--all-targets` run bench binaries: then it must be a quick smoke test.
pub fn no_arguments() -> bool {
    std::env::args().len() == 1
}

/// How the run was started, for the report: `cargo bench --bench NAME -- ARGS` when cargo ran
/// it (cargo passes `--bench`), else the binary's own command line.
pub fn command(bench: &str) -> String {
    let given = given_args();
    if std::env::args().any(|a| a == "--bench") {
        if given.is_empty() {
            format!("cargo bench --bench {bench}")
        } else {
            format!("cargo bench --bench {bench} -- {}", given.join(" "))
        }
    } else {
        let mut c = std::env::args().next().unwrap_or_default();
        for a in &given {
            c.push(' ');
            c.push_str(a);
        }
        if given.is_empty() {
            c.push_str(" (no arguments: a --quick smoke test)");
        }
        c
    }
}

/// CPU time this process has used so far (user + system, every thread, those that ended
/// included; not its children), in seconds, from `/proc/self/stat` (clock ticks: 10 ms steps
/// at the usual 100 Hz).
pub fn own_cpu_secs() -> Option<f64> {
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // utime and stime are fields 14 and 15: 11 and 12 after the command name.
    let rest: Vec<u64> = me
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks: u64 = rest.get(11..13)?.iter().sum();
    // SAFETY: sysconf has no memory preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// Machine-wide busy CPU time and this process's own (with its waited-for children, such as
/// server processes), to tell how much of the machine other processes took during a span.
#[derive(Clone, Copy)]
pub struct CpuSnapshot {
    /// Non-idle ticks of all CPUs (`/proc/stat`: user, nice, system, irq, softirq, steal).
    busy: u64,
    /// utime + stime + cutime + cstime of this process (`/proc/self/stat`).
    own: u64,
    at: Instant,
}

impl CpuSnapshot {
    pub fn take() -> Option<CpuSnapshot> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum();
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces): state is field 3, so
        // utime..cstime (fields 14 to 17) are at 11..15 here.
        let rest: Vec<u64> = me
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let own = rest.get(11..15)?.iter().sum();
        Some(CpuSnapshot {
            busy,
            own,
            at: Instant::now(),
        })
    }

    /// Percent of all CPUs' time since `from` that went to other processes. Children count
    /// as this process's own once they have been waited for.
    pub fn other_since(from: Option<CpuSnapshot>) -> Option<f64> {
        let (from, now) = (from?, CpuSnapshot::take()?);
        // SAFETY: sysconf has no memory preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let span = now.at.duration_since(from.at).as_secs_f64() * hz as f64 * cores() as f64;
        let other =
            now.busy.saturating_sub(from.busy) as f64 - now.own.saturating_sub(from.own) as f64;
        (span > 0.0).then(|| (other / span * 100.0).max(0.0))
    }
}

/// At the end of round `round` (from 0) begun at `from`: the share other processes took,
/// also printed to stderr.
pub fn round_load(from: Option<CpuSnapshot>, round: usize) -> Option<f64> {
    let other = CpuSnapshot::other_since(from);
    if let Some(pct) = other {
        eprintln!(
            "         round {}: other processes used {pct:.0}% of the CPUs",
            round + 1
        );
    }
    other
}

/// The report's "other load" sentence: the share over the whole run, and per round when the
/// run had rounds (`rounds` empty: none).
pub fn other_load_text(total: Option<f64>, rounds: &[Option<f64>]) -> Option<String> {
    let pct = total?;
    let per = if rounds.is_empty() {
        String::new()
    } else {
        let each: Vec<String> = rounds
            .iter()
            .map(|p| p.map_or("?".into(), |p| format!("{p:.0}%")))
            .collect();
        format!(" (per round: {})", each.join(", "))
    };
    Some(format!(
        "processes outside this bench used {pct:.0}% of the CPUs' time during the run{per}; \
         near 0% on a quiet machine, and the numbers are only comparable when it is"
    ))
}
