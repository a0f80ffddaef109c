//! CPU time of the service processes, read from /proc: the whole process, and the
//! `hash-worker-N` threads apart (the auth-service's argon2 work), so the load report's
//! figures are the service's own, not the caller's.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, ensure};
use tests::process::ServiceProcess;

/// CPU time of a process: all its threads, and its `hash-worker-N` threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// Every thread, user + system.
    pub total: Duration,
    /// The `hash-worker-N` threads (zero for the data-service).
    pub hashing: Duration,
}

impl std::ops::Sub for Cpu {
    type Output = Self;
    fn sub(self, other: Self) -> Self {
        Self {
            total: self.total.saturating_sub(other.total),
            hashing: self.hashing.saturating_sub(other.hashing),
        }
    }
}

/// What a measuring program reads of a running service's CPU use.
pub trait CpuUse {
    /// CPU time used so far by every thread, user + system.
    fn cpu_time(&self) -> anyhow::Result<Duration>;
    /// CPU time used so far, all threads and the hashing threads apart.
    fn cpu(&self) -> anyhow::Result<Cpu>;
    /// The `/proc` stat files of the hashing threads (named `hash-worker-N`).
    fn hashing_threads(&self) -> anyhow::Result<Vec<PathBuf>>;
}

impl CpuUse for ServiceProcess {
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid())
    }

    fn cpu(&self) -> anyhow::Result<Cpu> {
        let mut hashing = Duration::ZERO;
        for thread in self.hashing_threads()? {
            // A thread that has ended since the listing no longer counts.
            if let Ok(fields) = stat_fields(&thread.to_string_lossy()) {
                hashing += ticks(&fields)?;
            }
        }
        Ok(Cpu {
            total: self.cpu_time()?,
            hashing,
        })
    }

    fn hashing_threads(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut threads = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let task = task?.path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if name.starts_with("hash-worker-") {
                threads.push(task.join("stat"));
            }
        }
        Ok(threads)
    }
}

/// CPU time process `pid` has used so far, every thread, user + system (`/proc/PID/stat`,
/// clock-tick resolution).
pub fn cpu_time(pid: i32) -> anyhow::Result<Duration> {
    ticks(&stat_fields(&format!("/proc/{pid}/stat"))?)
}

/// utime + stime of a `/proc/.../stat` line's fields (from [`stat_fields`]).
fn ticks(fields: &[String]) -> anyhow::Result<Duration> {
    // After the name: state is field 3, utime 14 and stime 15 (in clock ticks).
    ensure!(fields.len() > 12, "a short stat line");
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let per_second = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// The fields of a `/proc/.../stat` line after the parenthesised name (state first).
pub fn stat_fields(path: &str) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(path)?;
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        bail!("unexpected {path}: {stat}");
    };
    Ok(rest.split(' ').map(str::to_owned).collect())
}
