//! A service release binary (auth-service or data-service) as a child process, observed from
//! outside through /proc: its memory, its CPU time, its hashing threads, and the stats line the
//! auth-service logs at shutdown.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

/// A running service.
pub struct Service {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    stats: Arc<Mutex<Option<Value>>>,
    reader: Option<JoinHandle<()>>,
}

impl Service {
    /// Runs `binary create-tables`, then starts `binary` with `env` (which must make it listen
    /// on a free port) and waits until it logs `<name> listening`.
    pub fn start(binary: &Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        let name = binary
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .context("a binary name")?;
        let command = || {
            let mut command = Command::new(binary);
            command
                .env_remove("AWS_PROFILE")
                .env_remove("AWS_ENDPOINT_URL")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("RUST_LOG", "info")
                .envs(env.iter().map(|(key, value)| (key, value)));
            command
        };
        let created = command()
            .arg("create-tables")
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {}", binary.display()))?;
        ensure!(created.success(), "{name} create-tables failed: {created}");

        let mut child = command()
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let stats = Arc::new(Mutex::new(None));
        let (listening, addr) = mpsc::channel();
        let reader = thread::spawn({
            let stats = Arc::clone(&stats);
            let wanted = format!("{name} listening");
            move || read_logs(stdout, &wanted, &listening, &stats)
        });
        let addr = addr
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("{name} did not log its address within 30 s"))?;
        Ok(Self {
            child,
            addr,
            stats,
            reader: Some(reader),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resident memory now (VmRSS) and at most so far (VmHWM), in MiB.
    pub fn memory_mib(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib = |key: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|line| line.starts_with(key))
                .with_context(|| format!("{key} in /proc/PID/status"))?;
            let value = line.split_whitespace().nth(1).context("a value")?;
            Ok(value.parse::<f64>()? / 1024.0)
        };
        Ok((kib("VmRSS:")?, kib("VmHWM:")?))
    }

    /// CPU time used so far by every thread, user + system.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid())
    }

    /// The `/proc` stat files of the hashing threads (named `hash-worker-N`).
    pub fn hashing_threads(&self) -> anyhow::Result<Vec<PathBuf>> {
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

    /// Stops it with SIGTERM, like an orchestrator would, and returns the fields of its
    /// "password hashing stats" line (the auth-service's; `None` for the data-service).
    pub fn stop(mut self) -> anyhow::Result<Option<Value>> {
        let pid = Pid::from_raw(self.pid()).context("child pid")?;
        kill_process(pid, Signal::TERM)?;
        let status = self.child.wait()?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        ensure!(status.success(), "service exited with {status}");
        let stats = self.stats.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(stats.clone())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time process `pid` has used so far, every thread, user + system (`/proc/PID/stat`,
/// clock-tick resolution).
pub fn cpu_time(pid: i32) -> anyhow::Result<Duration> {
    let fields = stat_fields(&format!("/proc/{pid}/stat"))?;
    // After the name: state is field 3, utime 14 and stime 15 (in clock ticks).
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

/// Follows the service's JSON log lines: reports its address, keeps the auth-service's
/// shutdown stats. Every line is read (the pipe must not fill); only the wanted ones are parsed.
fn read_logs(
    stdout: impl std::io::Read,
    listening_message: &str,
    listening: &mpsc::Sender<SocketAddr>,
    stats: &Mutex<Option<Value>>,
) {
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let wanted = line.contains(listening_message) || line.contains("password hashing stats");
        let Some(fields) = wanted
            .then(|| serde_json::from_str::<Value>(&line).ok())
            .flatten()
            .map(|entry| entry["fields"].clone())
        else {
            continue;
        };
        if fields["message"] == listening_message {
            if let Some(addr) = fields["addr"].as_str().and_then(|a| a.parse().ok()) {
                let _ = listening.send(addr);
            }
        } else if fields["message"] == "password hashing stats"
            && let Ok(mut stats) = stats.lock()
        {
            *stats = Some(fields);
        }
    }
}
