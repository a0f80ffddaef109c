//! The service binaries as child processes, observed from outside: their address and metrics
//! endpoint (from their JSON logs), their memory from /proc, the auth-service's hashing stats
//! logged at shutdown, a graceful stop. For tests and the measuring programs (`tools`, which
//! add CPU time), whose figures must be the service's own (a soak's RSS), not the caller's.
//!
//! Each service runs in a session of its own (`setsid`), as `scripts/stack` starts them, so
//! the kernel's autogroup scheduling weighs it apart from the caller and from the other
//! service; a parent-death signal (SIGKILL) ends it if the spawning thread dies before
//! [`ServiceProcess`]'s `Drop` runs (spawn from a thread that outlives the process: the main
//! thread or a test's thread, not a blocking-pool one).
//!
//! [`binary`] looks the binaries up next to the running test (`target/debug/`), so build them
//! first (`cargo build --workspace --bins`), or point `DYNAGATE_BIN_DIR` at another build
//! (`target/release`).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, ensure};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

/// The environment every service process starts from: the emulators' test identity and
/// region, instance metadata off, and the endpoints of DynamoDB and (for the auth-service) STS.
pub fn aws_env(dynamodb: &str, sts: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "testing".to_owned()),
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), dynamodb.to_owned()),
    ];
    if let Some(sts) = sts {
        env.push(("AWS_ENDPOINT_URL_STS".to_owned(), sts.to_owned()));
    }
    env
}

/// The auth-service settings for a fresh set of tables named after `prefix`, credentials
/// scoped to `items_table`, and an ephemeral signing key.
pub fn auth_tables_env(prefix: &str, items_table: &str) -> Vec<(String, String)> {
    [
        ("DYNAGATE_USERS_TABLE", format!("{prefix}-users")),
        ("DYNAGATE_SESSIONS_TABLE", format!("{prefix}-sessions")),
        ("DYNAGATE_ATTEMPTS_TABLE", format!("{prefix}-attempts")),
        (
            "DYNAGATE_REVOCATIONS_TABLE",
            format!("{prefix}-revocations"),
        ),
        ("DYNAGATE_DEV_EPHEMERAL_SIGNING_KEY", "true".to_owned()),
        (
            "DYNAGATE_CREDENTIALS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/dynagate-data-access".to_owned(),
        ),
        (
            "DYNAGATE_ITEMS_TABLE_ARN",
            format!("arn:aws:dynamodb:us-east-1:123456789012:table/{items_table}"),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// `pairs` as owned environment entries, to extend [`aws_env`] or [`auth_tables_env`] with.
pub fn owned_env(pairs: &[(&str, String)]) -> impl Iterator<Item = (String, String)> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
}

/// A service binary running as a child process; killed if dropped unstopped.
pub struct ServiceProcess {
    child: Child,
    /// The binary's name (`auth-service`).
    pub name: String,
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// Where it serves `/metrics`.
    pub metrics_addr: SocketAddr,
    stats: Arc<Mutex<Option<Value>>>,
    reader: Option<JoinHandle<()>>,
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
    /// Runs `name create-tables`, then starts `name` (found by [`binary`]) with `env` and
    /// waits until it logs both addresses; see [`Self::start_binary`].
    pub fn start(name: &str, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let env: Vec<_> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Self::start_binary(&binary(name)?, &env)
    }

    /// Runs `binary create-tables`, then starts `binary` (auth-service or data-service) with
    /// `env` (plus listen and metrics addresses on free ports) in a session of its own, and
    /// waits until it logs both addresses.
    pub fn start_binary(binary: &Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        let name = binary
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .context("a binary name")?;
        let prefix = if name == "auth-service" {
            "AUTH"
        } else {
            "DATA"
        };
        let command = || {
            let mut command = Command::new(binary);
            command
                .env_remove("AWS_PROFILE")
                .env_remove("AWS_ENDPOINT_URL")
                // Spans go where a test says, never to a collector of the caller's environment.
                .env_remove("DYNAGATE_OTLP_ENDPOINT")
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .env("RUST_LOG", "info")
                .envs(env.iter().map(|(key, value)| (key, value)))
                .env(format!("DYNAGATE_{prefix}_LISTEN_ADDR"), "127.0.0.1:0")
                .env(format!("DYNAGATE_{prefix}_METRICS_ADDR"), "127.0.0.1:0")
                .stdin(Stdio::null());
            command
        };
        let created = command()
            .arg("create-tables")
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {}", binary.display()))?;
        ensure!(created.success(), "{name} create-tables failed: {created}");

        let mut command = command();
        // SAFETY: setsid and prctl are async-signal-safe and touch no memory of this process.
        unsafe {
            command.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                Ok(())
            });
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let stats = Arc::new(Mutex::new(None));
        let (found, addresses) = mpsc::channel();
        let reader = thread::spawn({
            let (name, stats) = (name.clone(), Arc::clone(&stats));
            move || read_logs(&name, stdout, &found, &stats)
        });
        let take = || {
            addresses
                .recv_timeout(Duration::from_secs(30))
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

    /// Resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmRSS:")
    }

    /// Resident memory now (VmRSS) and at most so far (VmHWM), in MiB.
    pub fn memory_mib(&self) -> anyhow::Result<(f64, f64)> {
        let mib = |key| anyhow::Ok(self.status_kib(key)? as f64 / 1024.0);
        Ok((mib("VmRSS:")?, mib("VmHWM:")?))
    }

    fn status_kib(&self, key: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find(|line| line.starts_with(key))
            .with_context(|| format!("{key} in /proc/PID/status"))?;
        let value = line.split_whitespace().nth(1).context("a value")?;
        Ok(value.parse()?)
    }

    /// The names of its threads now (`/proc/PID/task/*/comm`, at most 15 bytes each).
    pub fn thread_names(&self) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            // A thread that has ended since the listing has no name to read.
            if let Ok(name) = std::fs::read_to_string(task?.path().join("comm")) {
                names.push(name.trim_end().to_owned());
            }
        }
        Ok(names)
    }

    /// Stops it with SIGTERM, as an orchestrator would, checks it exited cleanly, and returns
    /// the fields of its "password hashing stats" line (the auth-service's; `None` for the
    /// data-service).
    pub fn stop(mut self) -> anyhow::Result<Option<Value>> {
        let pid = Pid::from_raw(self.pid()).context("child pid")?;
        kill_process(pid, Signal::TERM)?;
        let status = self.child.wait()?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        ensure!(status.success(), "{} exited with {status}", self.name);
        let stats = self.stats.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(stats.clone())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Follows the JSON log lines (all of them: the pipe must not fill), sending the gRPC
/// address (`false`) and the metrics address (`true`) as they are logged, and keeping the
/// auth-service's shutdown stats.
fn read_logs(
    name: &str,
    stdout: impl std::io::Read,
    found: &mpsc::Sender<(bool, SocketAddr)>,
    stats: &Mutex<Option<Value>>,
) {
    let listening = format!("{name} listening");
    let metrics = format!("{name} metrics at /metrics");
    const STATS: &str = "password hashing stats";
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if !line.contains(&listening) && !line.contains(&metrics) && !line.contains(STATS) {
            continue;
        }
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let fields = &entry["fields"];
        if fields["message"] == STATS {
            if let Ok(mut stats) = stats.lock() {
                *stats = Some(fields.clone());
            }
            continue;
        }
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

/// grpcurl (from `.local/bin`) with `-max-time 5` and `args`, off the runtime's threads: its
/// exit status and its output (stdout, then stderr).
pub async fn grpcurl(args: &[&str]) -> (bool, String) {
    let mut command = std::process::Command::new(crate::emulators::tool("grpcurl"));
    command.args(["-max-time", "5"]).args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run grpcurl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
