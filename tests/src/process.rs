//! The service binaries as child processes, observed from outside: their address and metrics
//! endpoint (from their JSON logs), their resident memory (from /proc), a graceful stop.
//! For tests whose figures must be the service's own (a soak's RSS), not the test process's.
//!
//! The binaries are looked up next to the running test (`target/debug/`), so build them first
//! (`cargo build --workspace --bins`), or point `DYNAGATE_BIN_DIR` at another build
//! (`target/release`).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context, ensure};
use rustix::process::{Pid, Signal, kill_process};

/// A service binary running as a child process; killed if dropped unstopped.
pub struct ServiceProcess {
    child: Child,
    /// The binary's name (`auth-service`).
    pub name: &'static str,
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// Where it serves `/metrics`.
    pub metrics_addr: SocketAddr,
}

/// Where the binary `name` of this build is.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("DYNAGATE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        // target/debug/deps/<test> → target/debug
        None => std::env::current_exe()?
            .parent()
            .and_then(|deps| deps.parent())
            .context("the test binary's directory")?
            .to_owned(),
    };
    let path = dir.join(name);
    ensure!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (or set DYNAGATE_BIN_DIR)",
        path.display()
    );
    Ok(path)
}

impl ServiceProcess {
    /// Runs `name create-tables`, then starts `name` with `env` (plus listen and metrics
    /// addresses on free ports) and waits until it logs both addresses.
    pub fn start(name: &'static str, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let binary = binary(name)?;
        let prefix = if name == "auth-service" {
            "AUTH"
        } else {
            "DATA"
        };
        let command = || {
            let mut command = Command::new(&binary);
            command
                .env_remove("AWS_PROFILE")
                .envs(env)
                .env(format!("DYNAGATE_{prefix}_LISTEN_ADDR"), "127.0.0.1:0")
                .env(format!("DYNAGATE_{prefix}_METRICS_ADDR"), "127.0.0.1:0")
                .env("RUST_LOG", "info");
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
        let (found, addresses) = mpsc::channel();
        thread::spawn(move || read_addresses(name, stdout, &found));
        let wait = Duration::from_secs(30);
        let take = || {
            addresses
                .recv_timeout(wait)
                .with_context(|| format!("{name} did not log its addresses within 30 s"))
        };
        let (mut addr, mut metrics_addr) = (None, None);
        while addr.is_none() || metrics_addr.is_none() {
            match take()? {
                (true, found) => metrics_addr = Some(found),
                (false, found) => addr = Some(found),
            }
        }
        Ok(Self {
            child,
            name,
            addr: addr.context("an address")?,
            metrics_addr: metrics_addr.context("a metrics address")?,
        })
    }

    /// Resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .context("VmRSS in /proc/PID/status")?;
        let value = line.split_whitespace().nth(1).context("a value")?;
        Ok(value.parse()?)
    }

    /// Stops it with SIGTERM, as an orchestrator would, and checks it exited cleanly.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw);
        kill_process(pid.context("child pid")?, Signal::TERM)?;
        let status = self.child.wait()?;
        ensure!(status.success(), "{} exited with {status}", self.name);
        Ok(())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Follows the JSON log lines (all of them: the pipe must not fill), sending the gRPC
/// address (`false`) and the metrics address (`true`) as they are logged.
fn read_addresses(
    name: &str,
    stdout: impl std::io::Read,
    found: &mpsc::Sender<(bool, SocketAddr)>,
) {
    let listening = format!("{name} listening");
    let metrics = format!("{name} metrics at /metrics");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if !line.contains(&listening) && !line.contains(&metrics) {
            continue;
        }
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let fields = &entry["fields"];
        let addr = fields["addr"].as_str().and_then(|a| a.parse().ok());
        if let Some(addr) = addr {
            let _ = found.send((fields["message"] == metrics.as_str(), addr));
        }
    }
}

/// GET `path` on `addr`: the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent.get(&url).call().expect("GET");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("a text body");
        (status, body)
    })
    .await
    .expect("the GET task")
}
