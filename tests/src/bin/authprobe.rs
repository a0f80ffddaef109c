//! A measuring tool, not a test: the auth-service's CPU per Login (split into the hashing
//! threads and everything else) and per Refresh, its memory idle and after a login flood, and
//! the data-service's GetItem latency quiet and during that flood on the same host. Both
//! release binaries run as child processes, each in its own session (`setsid`) as
//! `scripts/stack` starts them, so the kernel's autogroups weigh them as separate services.
//!
//! Run (release, after `cargo build --release --workspace`):
//! `target/release/authprobe --flood-secs 20 --repeat 3`. Needs dynalite and moto from
//! `scripts/install-tools`. Prints one markdown row per run.

#[path = "loadgen/argon2_cpu.rs"]
mod argon2_cpu;

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt;

use anyhow::{Context, ensure};
use clap::Parser;
use common::proto::{
    auth::v1::{LoginRequest, RefreshRequest, auth_service_client::AuthServiceClient},
    data::v1::{GetItemRequest, PutItemRequest, data_service_client::DataServiceClient},
};
use tests::{
    auth::{TestUser, with_bearer},
    data::string,
    emulators::{Emulator, Kind, workspace_root},
};
use tokio::{task::JoinSet, time::MissedTickBehavior};
use tonic::transport::Channel;

/// Auth-service CPU and memory, and the data path during a login flood.
#[derive(Parser, Debug)]
struct Args {
    /// Directory holding the release `auth-service` and `data-service` binaries.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Password hashing threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Length of the quiet GetItem probe, in seconds.
    #[arg(long, default_value_t = 10)]
    probe_secs: u64,
    /// Length of the login flood (with a GetItem probe meanwhile), in seconds.
    #[arg(long, default_value_t = 20)]
    flood_secs: u64,
    /// Concurrent login loops in the flood (one user each).
    #[arg(long, default_value_t = 8)]
    flood_loops: usize,
    /// Refreshes measured (spread over `refresh_loops` sessions).
    #[arg(long, default_value_t = 2000)]
    refreshes: usize,
    /// Concurrent refresh loops.
    #[arg(long, default_value_t = 4)]
    refresh_loops: usize,
    /// Extra environment for the auth-service, `NAME=VALUE` (repeatable), e.g.
    /// `DYNAGATE_HASH_SCHED=normal`.
    #[arg(long = "auth-env")]
    auth_env: Vec<String>,
    /// Write this to `/proc/PID/autogroup` of the auth-service (its session's CPU weight,
    /// nice -20..19) before measuring.
    #[arg(long)]
    autogroup_nice: Option<i32>,
    /// Runs, each on fresh processes.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release"));
    let (reused, _) = tokio::task::spawn_blocking(|| argon2_cpu::verify_cpu(20)).await??;
    let verify_ms = millis(reused);
    println!(
        "one argon2 verify here (thread CPU, median of 20, reused memory): {verify_ms:.1} ms\n"
    );
    println!(
        "| run | RSS after registering → after flood (MiB) | logins/s | CPU/login ms (hash threads + rest) | \
         login ÷ verify | CPU/refresh ms | GetItem p50/p99 quiet µs | during flood µs | p99 ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for run in 1..=args.repeat {
        let row = measure(&args, &bins, verify_ms).await?;
        println!("| {run} | {row} |");
    }
    Ok(())
}

/// One run on fresh emulators and services; the table row.
async fn measure(args: &Args, bins: &Path, verify_ms: f64) -> anyhow::Result<String> {
    let dynalite = Emulator::start(Kind::Dynalite, false).await;
    let moto = Emulator::start(Kind::Moto, false).await;
    let stack = Stack::start(args, bins, &dynalite.endpoint(), &moto.endpoint()).await?;
    let auth = Channel::from_shared(format!("http://{}", stack.auth_addr))?
        .connect()
        .await?;
    let mut client = AuthServiceClient::new(auth.clone());
    let prober = TestUser::register(&mut client).await;
    let mut users = Vec::new();
    for _ in 0..args.flood_loops {
        users.push(TestUser::register(&mut client).await);
    }
    let data = Channel::from_shared(format!("http://{}", stack.data_addr))?
        .connect()
        .await?;
    let token = prober.login(&mut client).await.access_token;
    let mut items = DataServiceClient::new(data.clone());
    let put = PutItemRequest {
        key: "probe".to_owned(),
        attributes: [("text".to_owned(), string("hello"))].into(),
        ..Default::default()
    };
    items.put_item(with_bearer(put, &token)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle, _) = stack.auth.memory_mib()?;

    let quiet = get_probe(data.clone(), &token, secs(args.probe_secs)).await;
    let cpu = stack.auth.cpu()?;
    let (logins, during) = tokio::join!(
        login_flood(&auth, &users, secs(args.flood_secs)),
        get_probe(data.clone(), &token, secs(args.flood_secs))
    );
    let used = stack.auth.cpu()? - cpu;
    let (after, _) = stack.auth.memory_mib()?;
    let per_login = |cpu: Duration| millis(cpu) / logins.max(1) as f64;
    let (total, hashing) = (per_login(used.total), per_login(used.hashing));

    let refresh_cpu = refresh_cpu(&stack.auth, &auth, &users, args).await?;
    Ok(format!(
        "{idle:.1} → {after:.1} | {:.0} | {total:.1} ({hashing:.1} + {:.1}) | {:.2}× | {:.3} | \
         {} / {} | {} / {} | {:.2}× |",
        logins as f64 / args.flood_secs as f64,
        total - hashing,
        total / verify_ms,
        refresh_cpu,
        quiet.percentile(0.5),
        quiet.percentile(0.99),
        during.percentile(0.5),
        during.percentile(0.99),
        during.percentile(0.99) as f64 / quiet.percentile(0.99).max(1) as f64,
    )
    .trim_end_matches(" |")
    .to_owned())
}

/// One login loop per user until `duration` passes; the number of successful logins.
async fn login_flood(channel: &Channel, users: &[TestUser], duration: Duration) -> u64 {
    let until = Instant::now() + duration;
    let mut loops = JoinSet::new();
    for user in users.iter().cloned() {
        let mut client = AuthServiceClient::new(channel.clone());
        loops.spawn(async move {
            let mut ok = 0;
            while Instant::now() < until {
                let request = LoginRequest {
                    username: user.username.clone(),
                    password: user.password.clone(),
                    ..Default::default()
                };
                ok += u64::from(client.login(request).await.is_ok());
            }
            ok
        });
    }
    loops.join_all().await.into_iter().sum()
}

/// Service CPU per Refresh in ms: `refresh_loops` sessions refreshed one after another each,
/// `refreshes` in all, minus what the service burns idle over as long.
async fn refresh_cpu(
    service: &Proc,
    channel: &Channel,
    users: &[TestUser],
    args: &Args,
) -> anyhow::Result<f64> {
    let mut client = AuthServiceClient::new(channel.clone());
    let mut tokens = Vec::new();
    for user in users.iter().cycle().take(args.refresh_loops) {
        tokens.push(user.login(&mut client).await.refresh_token);
    }
    let per_loop = args.refreshes / args.refresh_loops.max(1);
    let before = service.cpu()?;
    let started = Instant::now();
    let mut loops = JoinSet::new();
    for mut token in tokens {
        let mut client = AuthServiceClient::new(channel.clone());
        loops.spawn(async move {
            for _ in 0..per_loop {
                let answer = client
                    .refresh(RefreshRequest {
                        refresh_token: token.clone(),
                    })
                    .await?;
                token = answer.into_inner().refresh_token;
            }
            anyhow::Ok(())
        });
    }
    for result in loops.join_all().await {
        result?;
    }
    let took = started.elapsed();
    let used = service.cpu()? - before;
    // What the service spends with nothing to do (its revocation poll, health probes).
    let idle_before = service.cpu()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rate = millis(service.cpu()?.total - idle_before.total) / 2000.0;
    let refreshes = (per_loop * args.refresh_loops).max(1) as f64;
    Ok((millis(used.total) - idle_rate * took.as_secs_f64() * 1e3) / refreshes)
}

/// GetItem on the data-service every 2 ms for `duration`; latencies in µs, sorted.
async fn get_probe(channel: Channel, token: &str, duration: Duration) -> Latencies {
    let mut client = DataServiceClient::new(channel);
    let until = Instant::now() + duration;
    let mut ticks = tokio::time::interval(Duration::from_millis(2));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut micros = Vec::new();
    while Instant::now() < until {
        ticks.tick().await;
        let request = GetItemRequest {
            key: "probe".to_owned(),
            ..Default::default()
        };
        let start = Instant::now();
        if client.get_item(with_bearer(request, token)).await.is_ok() {
            micros.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
    }
    micros.sort_unstable();
    Latencies(micros)
}

struct Latencies(Vec<u64>);

impl Latencies {
    fn percentile(&self, p: f64) -> u64 {
        let rank = (p * self.0.len().saturating_sub(1) as f64).round() as usize;
        self.0.get(rank).copied().unwrap_or(0)
    }
}

/// Both services as child processes, each in its own session.
struct Stack {
    auth: Proc,
    auth_addr: SocketAddr,
    data_addr: SocketAddr,
    _data: Proc,
}

impl Stack {
    async fn start(args: &Args, bins: &Path, dynamodb: &str, sts: &str) -> anyhow::Result<Self> {
        let prefix = tests::unique_prefix();
        let items = format!("{prefix}-items");
        let (auth_addr, data_addr) = (free_addr()?, free_addr()?);
        let aws = [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb),
            ("AWS_ENDPOINT_URL_STS", sts),
            ("RUST_LOG", "warn"),
        ];
        let auth_env = [
            ("DYNAGATE_USERS_TABLE", format!("{prefix}-users")),
            ("DYNAGATE_SESSIONS_TABLE", format!("{prefix}-sessions")),
            ("DYNAGATE_ATTEMPTS_TABLE", format!("{prefix}-attempts")),
            (
                "DYNAGATE_REVOCATIONS_TABLE",
                format!("{prefix}-revocations"),
            ),
            ("DYNAGATE_AUTH_LISTEN_ADDR", auth_addr.to_string()),
            ("DYNAGATE_AUTH_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("DYNAGATE_DEV_EPHEMERAL_SIGNING_KEY", "true".to_owned()),
            ("DYNAGATE_HASH_WORKERS", args.workers.to_string()),
            // The flood comes from one address: measure logins, not the address throttle.
            ("DYNAGATE_THROTTLE_PER_SECOND", "0".to_owned()),
            (
                "DYNAGATE_CREDENTIALS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/dynagate-data-access".to_owned(),
            ),
            (
                "DYNAGATE_ITEMS_TABLE_ARN",
                format!("arn:aws:dynamodb:us-east-1:123456789012:table/{items}"),
            ),
        ];
        let extra = args
            .auth_env
            .iter()
            .map(|pair| pair.split_once('=').context("--auth-env NAME=VALUE"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let auth = |sub: Option<&str>| {
            let mut command = Command::new(bins.join("auth-service"));
            command.args(sub);
            command.envs(aws).envs(auth_env.clone()).envs(extra.clone());
            command
        };
        ensure!(
            auth(Some("create-tables")).status()?.success(),
            "auth create-tables"
        );
        let mut auth = Proc::spawn(auth(None), "auth-service")?;
        anyhow::ensure!(
            serving(auth_addr, "dynagate.auth.v1.AuthService").await,
            "auth-service not SERVING: {:?}",
            auth.child.as_mut().map(Child::try_wait)
        );
        if let Some(nice) = args.autogroup_nice {
            std::fs::write(format!("/proc/{}/autogroup", auth.pid), nice.to_string())
                .context("writing /proc/PID/autogroup")?;
        }
        let data = |sub: Option<&str>| {
            let mut command = Command::new(bins.join("data-service"));
            command.args(sub);
            command.envs(aws).envs([
                ("DYNAGATE_ITEMS_TABLE", items.clone()),
                ("DYNAGATE_DATA_LISTEN_ADDR", data_addr.to_string()),
                ("DYNAGATE_DATA_METRICS_ADDR", "127.0.0.1:0".to_owned()),
                ("DYNAGATE_AUTH_URL", format!("http://{auth_addr}")),
                ("DYNAGATE_DEV_EPHEMERAL_PAGE_TOKEN_KEY", "true".to_owned()),
            ]);
            command
        };
        ensure!(
            data(Some("create-tables")).status()?.success(),
            "data create-tables"
        );
        let data = Proc::spawn(data(None), "data-service")?;
        anyhow::ensure!(
            serving(data_addr, "dynagate.data.v1.DataService").await,
            "data-service not SERVING"
        );
        Ok(Self {
            auth,
            auth_addr,
            data_addr,
            _data: data,
        })
    }
}

/// CPU time of a process: all its threads, and its `hash-worker-N` threads.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    total: Duration,
    hashing: Duration,
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

/// A child process seen through /proc; killed when dropped.
struct Proc {
    child: Option<Child>,
    pid: u32,
}

impl Proc {
    /// Starts `command` in a session of its own (its own autogroup, as `scripts/stack` does
    /// with `setsid`), its log going to `authprobe-NAME.log` in the temporary directory.
    fn spawn(mut command: Command, name: &str) -> anyhow::Result<Self> {
        // SAFETY: setsid and prctl are async-signal-safe and touch no memory of this process.
        // The death signal stops the service if the probe is killed before its Drop runs.
        unsafe {
            command.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                Ok(())
            });
        }
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("authprobe-{name}.log")))?;
        let child = command
            .stdin(Stdio::null())
            .stderr(log.try_clone()?)
            .stdout(log)
            .spawn()
            .context("starting a service")?;
        Ok(Self {
            pid: child.id(),
            child: Some(child),
        })
    }

    fn memory_mib(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib = |key: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|line| line.starts_with(key))
                .with_context(|| format!("{key} in /proc/PID/status"))?;
            Ok(line
                .split_whitespace()
                .nth(1)
                .context("a value")?
                .parse::<f64>()?
                / 1024.0)
        };
        Ok((kib("VmRSS:")?, kib("VmHWM:")?))
    }

    fn cpu(&self) -> anyhow::Result<Cpu> {
        let total = ticks(&stat_fields(Path::new(&format!(
            "/proc/{}/stat",
            self.pid
        )))?)?;
        let mut hashing = Duration::ZERO;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let task = task?.path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if name.starts_with("hash-worker-") {
                hashing += ticks(&stat_fields(&task.join("stat"))?)?;
            }
        }
        Ok(Cpu { total, hashing })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// utime + stime of a `/proc/.../stat` line's fields.
fn ticks(fields: &[String]) -> anyhow::Result<Duration> {
    // After the name: state is field 3, utime 14 and stime 15 (in clock ticks).
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let per_second = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// The fields of a `/proc/.../stat` line after the parenthesised name (state first).
fn stat_fields(path: &Path) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(path)?;
    let (_, rest) = stat.rsplit_once(") ").context("a stat line")?;
    Ok(rest.split(' ').map(str::to_owned).collect())
}

/// Waits for `addr` to accept connections (30 s at most), then for `service` to be SERVING.
async fn serving(addr: SocketAddr, service: &str) -> bool {
    let until = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tests::wait_serving(addr, service).await
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
