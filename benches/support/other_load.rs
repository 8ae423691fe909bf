//! How much of the machine's CPU time went to other processes during a run: the benches
//! share a 2-core machine, and their report says whether it was quiet.
//!
//! Included by `benches/http.rs` and `benches/allocs.rs` with `#[path]`.
#![allow(dead_code)]

use std::time::Instant;

/// CPU counters at one instant.
#[derive(Clone, Copy)]
pub struct CpuSnapshot {
    /// Non-idle ticks of all CPUs (`/proc/stat`: user, nice, system, irq, softirq, steal).
    busy: u64,
    /// utime + stime + cutime + cstime of this process (`/proc/self/stat`): its own time and
    /// that of its children once they are waited for.
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

    /// Percent of all CPUs' time since `from` that went to other processes (children that
    /// have been waited for count as ours).
    pub fn other_since(from: Option<CpuSnapshot>) -> Option<f64> {
        let (from, now) = (from?, CpuSnapshot::take()?);
        // SAFETY: sysconf has no memory preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let cores = std::thread::available_parallelism().ok()?.get();
        let span = now.at.duration_since(from.at).as_secs_f64() * hz as f64 * cores as f64;
        let other =
            now.busy.saturating_sub(from.busy) as f64 - now.own.saturating_sub(from.own) as f64;
        (span > 0.0).then(|| (other / span * 100.0).max(0.0))
    }
}
