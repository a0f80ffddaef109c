//! What the data-service costs per GetItem against what the AWS SDK alone costs, measured
//! from outside on the release binaries: dynalite and moto, the auth-service and the
//! data-service run as processes (as `scripts/stack` runs them); this program is the client.
//!
//! - **CPU per GetItem, concurrent**: `--concurrency` loops (one HTTP/2 connection each) call
//!   GetItem on the data-service for `--secs`; the data-service's CPU time (utime + stime from
//!   `/proc/PID/stat`) divided by the calls. The baseline: as many loops calling GetItem on the
//!   same dynalite with one direct `aws-sdk-dynamodb` client in this process, divided into
//!   this process's own CPU time over that phase.
//! - **Latency, sequential**: one call at a time, interleaved: GetItem through the
//!   data-service, the direct SDK GetItem, and a Health/Check on the data-service (the bare
//!   gRPC hop, same client and connection kind).
//!
//! Each is repeated `--rounds` times; the table shows medians of the rounds. With
//! `--perf-data FILE`, `perf record` samples the data-service during the first concurrent phase.
//!
//! Run: `cargo build --release --workspace --bins && target/release/dataperf --out perf.md`.
//! Needs dynalite and moto from `scripts/install-tools`.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use aws_sdk_dynamodb::types::AttributeValue;
use clap::Parser;
use common::proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    data::v1::{GetItemRequest, PutItemRequest, data_service_client::DataServiceClient},
};
use tests::{
    auth::{TestUser, with_bearer},
    data::string,
    emulators::{Emulator, Kind, workspace_root},
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Data-path CPU and latency bench.
#[derive(Parser, Debug)]
struct Args {
    /// Directory holding the auth-service and data-service release binaries.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Concurrent GetItem loops in the CPU phases.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Length of each concurrent phase, in seconds.
    #[arg(long, default_value_t = 8)]
    secs: u64,
    /// Sequential calls per path per round.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Rounds of every measure.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Record a perf profile of the data-service during the first concurrent phase.
    #[arg(long)]
    perf_data: Option<PathBuf>,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

const TABLE_ARN_PREFIX: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/";
const DATA_SERVICE: &str = "dynagate.data.v1.DataService";
const KEY: &str = "bench";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release"));
    let dynalite = Emulator::start(Kind::Dynalite, false).await;
    let moto = Emulator::start(Kind::Moto, false).await;
    let prefix = tests::unique_prefix();
    let items_table = format!("{prefix}-items");
    let env = Env {
        dynamodb: dynalite.endpoint(),
        sts: moto.endpoint(),
        prefix,
    };

    let auth_addr = free_addr()?;
    let _auth = env.spawn(
        &bin_dir.join("auth-service"),
        &[
            ("DYNAGATE_AUTH_LISTEN_ADDR", auth_addr.to_string()),
            ("DYNAGATE_AUTH_METRICS_ADDR", "127.0.0.1:0".into()),
            ("DYNAGATE_DEV_EPHEMERAL_SIGNING_KEY", "true".into()),
            ("DYNAGATE_THROTTLE_PER_SECOND", "0".into()),
            (
                "DYNAGATE_CREDENTIALS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/dynagate-data-access".into(),
            ),
            (
                "DYNAGATE_ITEMS_TABLE_ARN",
                format!("{TABLE_ARN_PREFIX}{items_table}"),
            ),
        ],
    )?;
    wait_serving(auth_addr, "dynagate.auth.v1.AuthService").await?;
    let data_addr = free_addr()?;
    let data = env.spawn(
        &bin_dir.join("data-service"),
        &[
            ("DYNAGATE_DATA_LISTEN_ADDR", data_addr.to_string()),
            ("DYNAGATE_DATA_METRICS_ADDR", "127.0.0.1:0".into()),
            ("DYNAGATE_AUTH_URL", format!("http://{auth_addr}")),
            ("DYNAGATE_ITEMS_TABLE", items_table.clone()),
            ("DYNAGATE_DEV_EPHEMERAL_PAGE_TOKEN_KEY", "true".into()),
        ],
    )?;
    wait_serving(data_addr, DATA_SERVICE).await?;
    let rss_idle = rss_mib(data.id())?;

    let mut auth_client = AuthServiceClient::new(connect(auth_addr).await?);
    let user = TestUser::register(&mut auth_client).await;
    let token = user.login(&mut auth_client).await.access_token;
    let mut client = DataServiceClient::new(connect(data_addr).await?);
    let put = PutItemRequest {
        key: KEY.into(),
        attributes: [("text".to_owned(), string("a small item"))].into(),
        ..Default::default()
    };
    client.put_item(with_bearer(put, &token)).await?;
    let direct = tests::dynamodb_client(&env.dynamodb);
    let get = GetItem {
        token: Arc::from(token.as_str()),
        direct: direct.clone(),
        table: Arc::from(items_table.as_str()),
        owner: Arc::from(user.user_id.as_str()),
    };
    // Warm up both paths: connections, caches, credentials.
    for _ in 0..200 {
        get.via_service(&mut client).await?;
        get.direct().await?;
    }

    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let perf = match (&args.perf_data, round) {
            (Some(path), 0) => Some(perf_record(data.id(), path, args.secs)?),
            _ => None,
        };
        let service_cpu = concurrent_via_service(&get, data_addr, data.id(), &args).await?;
        if let Some(mut perf) = perf {
            perf.wait()?;
        }
        let sdk_cpu = concurrent_direct(&get, &args).await?;
        let latency = sequential(&get, &mut client, data_addr, args.calls).await?;
        eprintln!(
            "round {round}: service {:.0} µs/GetItem, SDK {:.0} µs/GetItem, p50 service {:.0} µs, SDK {:.0} µs, health {:.0} µs",
            service_cpu, sdk_cpu, latency[0], latency[1], latency[2]
        );
        rounds.push([service_cpu, sdk_cpu, latency[0], latency[1], latency[2]]);
    }
    let rss_after = rss_mib(data.id())?;
    let median = |i: usize| {
        let mut values: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        if values.len().is_multiple_of(2) {
            (values[middle - 1] + values[middle]) / 2.0
        } else {
            values[middle]
        }
    };
    let (service_cpu, sdk_cpu) = (median(0), median(1));
    let (via_service, via_sdk, hop) = (median(2), median(3), median(4));
    let rows = [
        (
            format!("data-service CPU per GetItem (c{})", args.concurrency),
            format!("{service_cpu:.0} µs"),
        ),
        (
            format!(
                "direct SDK client's CPU per GetItem (c{})",
                args.concurrency
            ),
            format!("{sdk_cpu:.0} µs"),
        ),
        (
            "**CPU ratio** (target ≤ 1.25×)".into(),
            format!("**{:.2}×**", service_cpu / sdk_cpu),
        ),
        (
            "GetItem p50, sequential, via the data-service".into(),
            format!("{via_service:.0} µs"),
        ),
        (
            "GetItem p50, sequential, direct SDK".into(),
            format!("{via_sdk:.0} µs"),
        ),
        (
            "Health/Check p50, sequential (the bare gRPC hop)".into(),
            format!("{hop:.0} µs"),
        ),
        (
            "**added latency** (via data-service − direct SDK) vs the hop (target ≤ 1.15×)".into(),
            format!(
                "{:.0} µs, **{:.2}×**",
                via_service - via_sdk,
                (via_service - via_sdk) / hop
            ),
        ),
        (
            "data-service RSS: started and SERVING / after the run".into(),
            format!("{rss_idle:.1} MiB / {rss_after:.1} MiB"),
        ),
    ];
    let mut table = format!(
        "GetItem of one small item, release binaries, {} cores, median of {} rounds \
         ({} s per concurrent phase, {} sequential calls per path)\n\n| measure | value |\n|---|---|\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        args.rounds,
        args.secs,
        args.calls,
    );
    for (measure, value) in rows {
        table.push_str(&format!("| {measure} | {value} |\n"));
    }
    println!("{table}");
    if let Some(out) = args.out {
        std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Where the emulators are, and the table names of this run.
struct Env {
    dynamodb: String,
    sts: String,
    prefix: String,
}

/// A child process, killed when dropped.
struct Running(Child);

impl Running {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Env {
    /// Creates the tables of `binary`, then starts it with `vars` on top of the shared ones.
    fn spawn(&self, binary: &Path, vars: &[(&str, String)]) -> anyhow::Result<Running> {
        let command = || {
            let mut command = Command::new(binary);
            command
                .env_remove("AWS_PROFILE")
                .env("AWS_ENDPOINT_URL_DYNAMODB", &self.dynamodb)
                .env("AWS_ENDPOINT_URL_STS", &self.sts)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("DYNAGATE_USERS_TABLE", format!("{}-users", self.prefix))
                .env(
                    "DYNAGATE_SESSIONS_TABLE",
                    format!("{}-sessions", self.prefix),
                )
                .env(
                    "DYNAGATE_ATTEMPTS_TABLE",
                    format!("{}-attempts", self.prefix),
                )
                .env(
                    "DYNAGATE_REVOCATIONS_TABLE",
                    format!("{}-revocations", self.prefix),
                )
                .env("RUST_LOG", "warn");
            for (name, value) in vars {
                command.env(name, value);
            }
            command
        };
        let created = command()
            .arg("create-tables")
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {}", binary.display()))?;
        ensure!(created.success(), "create-tables failed: {created}");
        let name = binary.file_name().unwrap_or_default().to_string_lossy();
        let log = std::env::temp_dir().join(format!("dataperf-{}-{name}.log", self.prefix));
        let child = command()
            .stdout(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Running(child))
    }
}

/// A loopback address nobody listens on now.
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Waits (30 s at most) until a freshly started process listens on `addr` and reports
/// `service` SERVING.
async fn wait_serving(addr: SocketAddr, service: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "nothing listens on {addr} (logs in {})",
            std::env::temp_dir().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        tests::wait_serving(addr, service).await,
        "{service} did not report SERVING"
    );
    Ok(())
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

/// One GetItem, through the data-service or straight to dynalite.
#[derive(Clone)]
struct GetItem {
    token: Arc<str>,
    direct: aws_sdk_dynamodb::Client,
    table: Arc<str>,
    owner: Arc<str>,
}

impl GetItem {
    async fn via_service(&self, client: &mut DataServiceClient<Channel>) -> anyhow::Result<()> {
        let request = GetItemRequest {
            key: KEY.into(),
            ..Default::default()
        };
        let item = client.get_item(with_bearer(request, &self.token)).await?;
        ensure!(item.into_inner().item.is_some(), "GetItem without an item");
        Ok(())
    }

    async fn direct(&self) -> anyhow::Result<()> {
        let item = self
            .direct
            .get_item()
            .table_name(&*self.table)
            .key("owner", AttributeValue::S(self.owner.to_string()))
            .key("key", AttributeValue::S(KEY.into()))
            .send()
            .await?;
        ensure!(item.item.is_some(), "direct GetItem without an item");
        Ok(())
    }
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: &str) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)?;
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        bail!("unexpected {path}: {stat}");
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state is field 3, utime 14 and stime 15 (in clock ticks).
    let ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let per_second = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// Resident memory of process `pid` now (VmRSS), in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("VmRSS in /proc/PID/status")?
        .parse::<f64>()?;
    Ok(kib / 1024.0)
}

/// Runs `call(i)` for each of `concurrency` loops; returns how many calls they made.
async fn concurrently<F, Fut>(concurrency: usize, call: F) -> anyhow::Result<u64>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let mut loops = Vec::new();
    for i in 0..concurrency {
        loops.push(tokio::spawn(call(i)));
    }
    let mut calls = 0;
    for handle in loops {
        calls += handle.await??;
    }
    Ok(calls)
}

/// The data-service's CPU per GetItem at `args.concurrency`, in µs.
async fn concurrent_via_service(
    get: &GetItem,
    addr: SocketAddr,
    pid: u32,
    args: &Args,
) -> anyhow::Result<f64> {
    let mut clients = Vec::new();
    for _ in 0..args.concurrency {
        clients.push(DataServiceClient::new(connect(addr).await?));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pid = pid.to_string();
    let before = cpu_time(&pid)?;
    let timer = stopper(&stop, args.secs);
    let calls = concurrently(args.concurrency, |i| {
        let (get, stop, mut client) = (get.clone(), Arc::clone(&stop), clients[i].clone());
        async move {
            let mut calls = 0;
            while !stop.load(Ordering::Relaxed) {
                get.via_service(&mut client).await?;
                calls += 1;
            }
            Ok(calls)
        }
    })
    .await?;
    timer.await?;
    let used = cpu_time(&pid)? - before;
    Ok(used.as_secs_f64() * 1e6 / calls as f64)
}

/// This process's CPU per direct GetItem at `args.concurrency`, in µs.
async fn concurrent_direct(get: &GetItem, args: &Args) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let before = cpu_time("self")?;
    let timer = stopper(&stop, args.secs);
    let calls = concurrently(args.concurrency, |_| {
        let (get, stop) = (get.clone(), Arc::clone(&stop));
        async move {
            let mut calls = 0;
            while !stop.load(Ordering::Relaxed) {
                get.direct().await?;
                calls += 1;
            }
            Ok(calls)
        }
    })
    .await?;
    timer.await?;
    let used = cpu_time("self")? - before;
    Ok(used.as_secs_f64() * 1e6 / calls as f64)
}

fn stopper(stop: &Arc<AtomicBool>, secs: u64) -> tokio::task::JoinHandle<()> {
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
    })
}

/// p50 in µs of GetItem via the data-service, direct GetItem, and Health/Check, one call at
/// a time, interleaved.
async fn sequential(
    get: &GetItem,
    client: &mut DataServiceClient<Channel>,
    addr: SocketAddr,
    calls: usize,
) -> anyhow::Result<[f64; 3]> {
    let mut health = HealthClient::new(connect(addr).await?);
    let check = HealthCheckRequest {
        service: DATA_SERVICE.into(),
    };
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for _ in 0..calls {
        let start = Instant::now();
        get.via_service(client).await?;
        samples[0].push(start.elapsed());
        let start = Instant::now();
        get.direct().await?;
        samples[1].push(start.elapsed());
        let start = Instant::now();
        health.check(check.clone()).await?;
        samples[2].push(start.elapsed());
    }
    Ok(samples.map(|mut s| {
        s.sort();
        s[s.len() / 2].as_secs_f64() * 1e6
    }))
}

/// Starts `perf record` on `pid` for `secs`.
fn perf_record(pid: u32, out: &Path, secs: u64) -> anyhow::Result<Child> {
    Command::new("perf")
        .args(["record", "-F", "999", "-g", "--call-graph", "dwarf", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string(), "--", "sleep", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf")
}
