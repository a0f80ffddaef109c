//! The load driver: a child process (`loadgen drive`) that makes one kind of call, one at a
//! time or from several tasks at once, for a while, and reports its latencies, its own CPU
//! time and the CPU time of the processes it watches over exactly the measured window. A
//! process of its own, so that the direct-SDK client's CPU per call is the SDK client's alone.
//!
//! Secrets come from the environment, never from flags: `LOADGEN_TOKEN` (the data-service's
//! bearer token) and `LOADGEN_AWS_ACCESS_KEY_ID`, `LOADGEN_AWS_SECRET_ACCESS_KEY`,
//! `LOADGEN_AWS_SESSION_TOKEN` (the direct client's vended credentials).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use aws_sdk_dynamodb::types::AttributeValue;
use clap::ValueEnum;
use common::proto::data::v1::{
    GetItemRequest, PutItemRequest, QueryItemsRequest, data_service_client::DataServiceClient,
};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tools::cpu::cpu_time;

use crate::{
    datapath::CONCURRENT,
    latency::{Latencies, Summary},
};

/// The key GetItem reads (written before the run).
pub const GET_KEY: &str = "bench";
/// The prefix QueryItems reads (items written before the run).
pub const QUERY_PREFIX: &str = "q/";
/// Items QueryItems asks for.
pub const QUERY_LIMIT: u32 = 10;
/// The data-service's gRPC service name.
pub const DATA_SERVICE: &str = "dynagate.data.v1.DataService";

/// Who answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The data-service over gRPC (tonic client, one connection).
    Data,
    /// DynamoDB through a direct `aws-sdk-dynamodb` client (the baseline).
    Direct,
}

/// Which call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// GetItem of [`GET_KEY`].
    Get,
    /// PutItem of a new key each time, only if absent (one conditional write either way).
    Put,
    /// PutItem replacing an existing item, unconditional: each task rewrites one key of its
    /// own (the case that took a read and a write before the one-call writes).
    Replace,
    /// QueryItems of [`QUERY_PREFIX`], [`QUERY_LIMIT`] items.
    Query,
    /// grpc.health.v1 Health/Check on the data-service: the bare gRPC hop.
    Health,
}

impl Op {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "GetItem",
            Self::Put => "PutItem",
            Self::Replace => "PutItem replacing",
            Self::Query => "QueryItems",
            Self::Health => "Health/Check",
        }
    }
}

/// `loadgen drive`: run one load and print its figures as one JSON line.
#[derive(clap::Args, Debug)]
pub struct DriveArgs {
    /// Who answers.
    #[arg(long, value_enum)]
    target: Target,
    /// Which call.
    #[arg(long, value_enum)]
    op: Op,
    /// Tasks calling at once (each one call at a time).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Calls made before the measured window, for this long (milliseconds).
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Each task starts a call at most once per this many microseconds (0: back to back).
    #[arg(long, default_value_t = 0)]
    pace_us: u64,
    /// The data-service's address (`--target data`).
    #[arg(long)]
    addr: Option<String>,
    /// The DynamoDB endpoint (`--target direct`).
    #[arg(long)]
    endpoint: Option<String>,
    /// The items table (`--target direct`).
    #[arg(long)]
    table: Option<String>,
    /// The partition key value, the user's id (`--target direct`).
    #[arg(long)]
    owner: Option<String>,
    /// A process whose CPU time to report over the measured window, as NAME=PID.
    #[arg(long = "watch")]
    watch: Vec<String>,
}

/// What one load (or several rounds of it) measured.
#[derive(Default)]
pub struct Driven {
    /// Latency of every successful measured call.
    samples: Vec<Duration>,
    /// Calls that failed.
    failed: u64,
    /// Length of the measured windows.
    elapsed: Duration,
    /// CPU time over the measured windows: `self` (the driver) and each watched process.
    cpu: HashMap<String, Duration>,
    /// Calls made, warm-up included, and the data-service's DynamoDB requests meanwhile (from
    /// its metrics; loads through the data-service only).
    dynamodb: Option<(u64, f64)>,
    /// Its percentiles.
    pub latencies: Summary,
}

impl Driven {
    /// Successful calls per second.
    pub fn throughput(&self) -> f64 {
        self.latencies.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU time of `who` per successful call.
    pub fn cpu_per_call(&self, who: &str) -> Duration {
        let calls = u32::try_from(self.latencies.calls.max(1)).unwrap_or(u32::MAX);
        self.cpu.get(who).copied().unwrap_or_default() / calls
    }

    /// The data-service's DynamoDB requests per RPC, warm-up included (through it only).
    pub fn dynamodb_calls_per_rpc(&self) -> Option<f64> {
        self.dynamodb
            .map(|(calls, requests)| requests / calls.max(1) as f64)
    }

    /// Adds another round's figures.
    fn merge(&mut self, round: Self) {
        if let Some((calls, requests)) = round.dynamodb {
            let (all, sent) = self.dynamodb.get_or_insert((0, 0.0));
            *all += calls;
            *sent += requests;
        }
        self.samples.extend(round.samples);
        self.failed += round.failed;
        self.elapsed += round.elapsed;
        for (who, used) in round.cpu {
            *self.cpu.entry(who).or_default() += used;
        }
        self.latencies = Latencies::new(self.samples.clone(), self.failed).summary();
    }
}

/// The calling side of one task.
#[derive(Clone)]
enum Caller {
    Data {
        client: DataServiceClient<Channel>,
        token: String,
    },
    Health(HealthClient<Channel>),
    Direct {
        client: aws_sdk_dynamodb::Client,
        table: String,
        owner: String,
    },
}

impl Caller {
    async fn connect(args: &DriveArgs) -> anyhow::Result<Self> {
        let env = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
        match args.target {
            Target::Data => {
                let addr = args.addr.as_deref().context("--addr")?;
                let channel = Channel::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await?;
                if args.op == Op::Health {
                    return Ok(Self::Health(HealthClient::new(channel)));
                }
                Ok(Self::Data {
                    client: DataServiceClient::new(channel),
                    token: env("LOADGEN_TOKEN")?,
                })
            }
            Target::Direct => {
                let credentials = Credentials::new(
                    env("LOADGEN_AWS_ACCESS_KEY_ID")?,
                    env("LOADGEN_AWS_SECRET_ACCESS_KEY")?,
                    Some(env("LOADGEN_AWS_SESSION_TOKEN")?),
                    None,
                    "vended",
                );
                let endpoint = args.endpoint.as_deref().context("--endpoint")?;
                let config = tests::sdk_config(endpoint)
                    .into_builder()
                    .credentials_provider(SharedCredentialsProvider::new(credentials))
                    .build();
                Ok(Self::Direct {
                    client: aws_sdk_dynamodb::Client::new(&config),
                    table: args.table.clone().context("--table")?,
                    owner: args.owner.clone().context("--owner")?,
                })
            }
        }
    }

    /// One call; true if it succeeded with the expected answer.
    async fn call(&mut self, op: Op, put_key: &str) -> bool {
        match self {
            Self::Health(client) => {
                let request = HealthCheckRequest {
                    service: DATA_SERVICE.to_owned(),
                };
                client.check(request).await.is_ok()
            }
            Self::Data { client, token } => data_call(client, token, op, put_key).await,
            Self::Direct {
                client,
                table,
                owner,
            } => direct_call(client, table, owner, op, put_key).await,
        }
    }
}

async fn data_call(
    client: &mut DataServiceClient<Channel>,
    token: &str,
    op: Op,
    put_key: &str,
) -> bool {
    match op {
        Op::Get => {
            let request = GetItemRequest {
                key: GET_KEY.to_owned(),
                ..Default::default()
            };
            let answer = client
                .get_item(tests::auth::with_bearer(request, token))
                .await;
            answer.is_ok_and(|answer| answer.into_inner().item.is_some())
        }
        Op::Put | Op::Replace => {
            let request = PutItemRequest {
                key: put_key.to_owned(),
                attributes: [("text".to_owned(), tests::data::string("a small item"))].into(),
                if_absent: op == Op::Put,
                expected_version: None,
                expires_at: None,
            };
            let answer = client
                .put_item(tests::auth::with_bearer(request, token))
                .await;
            answer.is_ok()
        }
        Op::Query => {
            let request = QueryItemsRequest {
                key_prefix: QUERY_PREFIX.to_owned(),
                limit: QUERY_LIMIT,
                ..Default::default()
            };
            let answer = client
                .query_items(tests::auth::with_bearer(request, token))
                .await;
            answer.is_ok_and(|answer| answer.into_inner().items.len() == QUERY_LIMIT as usize)
        }
        Op::Health => false,
    }
}

/// The same work as the data-service's, as a user with the vended credentials would do it.
async fn direct_call(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    owner: &str,
    op: Op,
    put_key: &str,
) -> bool {
    let s = |text: &str| AttributeValue::S(text.to_owned());
    match op {
        Op::Get => {
            let answer = client
                .get_item()
                .table_name(table)
                .key("owner", s(owner))
                .key("key", s(GET_KEY))
                .send()
                .await;
            answer.is_ok_and(|answer| answer.item.is_some())
        }
        Op::Put => {
            let now = AttributeValue::N(tests_now_millis().to_string());
            let answer = client
                .put_item()
                .table_name(table)
                .item("owner", s(owner))
                .item("key", s(put_key))
                .item("text", s("a small item"))
                .item("version", AttributeValue::N("1".to_owned()))
                .item("created_at", now.clone())
                .item("updated_at", now)
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", "key")
                .send()
                .await;
            answer.is_ok()
        }
        // Keys of their own: the direct writes are in the older layout, which the
        // data-service would rewrite (in three calls) on its first replacement.
        Op::Replace => {
            let now = AttributeValue::N(tests_now_millis().to_string());
            let answer = client
                .put_item()
                .table_name(table)
                .item("owner", s(owner))
                .item("key", s(&format!("direct-{put_key}")))
                .item("text", s("a small item"))
                .item("version", AttributeValue::N("1".to_owned()))
                .item("created_at", now.clone())
                .item("updated_at", now)
                .send()
                .await;
            answer.is_ok()
        }
        Op::Query => {
            let answer = client
                .query()
                .table_name(table)
                .key_condition_expression("#o = :o AND begins_with(#k, :p)")
                .expression_attribute_names("#o", "owner")
                .expression_attribute_names("#k", "key")
                .expression_attribute_values(":o", s(owner))
                .expression_attribute_values(":p", s(QUERY_PREFIX))
                .limit(QUERY_LIMIT as i32)
                .send()
                .await;
            answer.is_ok_and(|answer| answer.count == QUERY_LIMIT as i32)
        }
        Op::Health => false,
    }
}

fn tests_now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

/// `loadgen drive`: runs the load and prints one JSON line.
pub async fn run(args: DriveArgs) -> anyhow::Result<()> {
    if args.op == Op::Health && args.target != Target::Data {
        bail!("--op health needs --target data");
    }
    let mut watched = Vec::new();
    for watch in &args.watch {
        let (name, pid) = watch.split_once('=').context("--watch NAME=PID")?;
        watched.push((name.to_owned(), pid.parse::<i32>()?));
    }
    let caller = Caller::connect(&args).await?;
    let callers = vec![caller; args.concurrency.max(1)];
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let warm_until = Instant::now() + Duration::from_millis(args.warmup_ms);
    let pace = Duration::from_micros(args.pace_us);
    let (callers, warm, warm_failed) =
        calls(callers, (args.op, pace), warm_until, &format!("{run_id}w")).await;

    let before = cpu_readings(&watched)?;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.secs);
    let (_, samples, failed) = calls(callers, (args.op, pace), until, &run_id).await;
    let elapsed = started.elapsed();
    let after = cpu_readings(&watched)?;

    let cpu: BTreeMap<String, u128> = after
        .iter()
        .map(|(name, used)| {
            let was = before.get(name).copied().unwrap_or_default();
            (name.clone(), used.saturating_sub(was).as_micros())
        })
        .collect();
    let samples: Vec<u128> = samples.iter().map(Duration::as_micros).collect();
    let line = json!({
        "samples_us": samples,
        "failed": failed,
        "elapsed_us": elapsed.as_micros(),
        "warmup_calls": warm.len() as u64 + warm_failed,
        "cpu_us": cpu,
    });
    println!("{line}");
    Ok(())
}

/// Runs every caller as a task until `until`, each starting a call at most once per `pace`;
/// returns them with every latency and the failures.
async fn calls(
    callers: Vec<Caller>,
    (op, pace): (Op, Duration),
    until: Instant,
    run_id: &str,
) -> (Vec<Caller>, Vec<Duration>, u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for (task, mut caller) in callers.into_iter().enumerate() {
        let prefix = format!("put/{run_id}/{task}/");
        tasks.spawn(async move {
            let (mut samples, mut failed) = (Vec::new(), 0_u64);
            let mut round = 0_u64;
            let mut ticks = (!pace.is_zero()).then(|| {
                let mut ticks = tokio::time::interval(pace);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks
            });
            while Instant::now() < until {
                if let Some(ticks) = &mut ticks {
                    ticks.tick().await;
                }
                round += 1;
                let put_key = if op == Op::Replace {
                    format!("replace/{task}")
                } else {
                    format!("{prefix}{round}")
                };
                let start = Instant::now();
                if caller.call(op, &put_key).await {
                    samples.push(start.elapsed());
                } else {
                    failed += 1;
                }
            }
            (caller, samples, failed)
        });
    }
    let (mut callers, mut all, mut failures) = (Vec::new(), Vec::new(), 0);
    while let Some(Ok((caller, samples, failed))) = tasks.join_next().await {
        callers.push(caller);
        all.extend(samples);
        failures += failed;
    }
    (callers, all, failures)
}

/// This process's CPU time (precise) and each watched process's (clock ticks).
fn cpu_readings(watched: &[(String, i32)]) -> anyhow::Result<HashMap<String, Duration>> {
    let own = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let mut readings = HashMap::from([(
        "self".to_owned(),
        Duration::new(
            u64::try_from(own.tv_sec).unwrap_or(0),
            u32::try_from(own.tv_nsec).unwrap_or(0),
        ),
    )]);
    for (name, pid) in watched {
        readings.insert(name.clone(), cpu_time(*pid)?);
    }
    Ok(readings)
}

/// Runs `loadgen drive` as a child process and reads its figures.
pub struct Driver {
    /// This very binary.
    pub exe: PathBuf,
    /// Measured window of each load.
    pub secs: f64,
    /// Warm-up before it.
    pub warmup_ms: u64,
    /// Rounds of each comparison, alternating which side goes first.
    pub rounds: usize,
    /// Flags naming the data-service, the DynamoDB endpoint, the table and the owner, and
    /// the processes to watch.
    pub flags: Vec<String>,
    /// The token and the vended credentials.
    pub env: Vec<(String, String)>,
    /// Where to record a `perf` profile of which process (the data-service) during the first
    /// GetItem c8 load through it; taken by that load.
    pub perf: std::sync::Mutex<Option<(PathBuf, i32)>>,
    /// The data-service's metrics endpoint, to count its DynamoDB requests per load.
    pub metrics: Option<std::net::SocketAddr>,
}

impl Driver {
    /// `op` from `concurrency` tasks through the direct SDK and through the data-service, in
    /// [`Driver::rounds`] rounds alternating which goes first, so that drift on a shared machine
    /// hits both alike.
    pub async fn compare(&self, op: Op, concurrency: usize) -> anyhow::Result<(Driven, Driven)> {
        let (mut direct, mut via) = (Driven::default(), Driven::default());
        for round in 0..self.rounds.max(1) {
            let order = if round % 2 == 0 {
                [Target::Direct, Target::Data]
            } else {
                [Target::Data, Target::Direct]
            };
            for target in order {
                let driven = self.drive(target, op, concurrency, Duration::ZERO).await?;
                match target {
                    Target::Direct => direct.merge(driven),
                    Target::Data => via.merge(driven),
                }
            }
        }
        Ok((direct, via))
    }

    /// `rounds` loads of `op` against `target` from `concurrency` tasks, each task starting a
    /// call at most once per `pace` (zero: back to back).
    pub async fn drive_rounds(
        &self,
        target: Target,
        op: Op,
        concurrency: usize,
        pace: Duration,
    ) -> anyhow::Result<Driven> {
        let mut all = Driven::default();
        for _ in 0..self.rounds.max(1) {
            all.merge(self.drive(target, op, concurrency, pace).await?);
        }
        Ok(all)
    }

    /// One load: `op` against `target` from `concurrency` tasks.
    async fn drive(
        &self,
        target: Target,
        op: Op,
        concurrency: usize,
        pace: Duration,
    ) -> anyhow::Result<Driven> {
        let profile = (target == Target::Data && op == Op::Get && concurrency == CONCURRENT)
            .then(|| self.perf.lock().ok().and_then(|mut perf| perf.take()))
            .flatten();
        let recorder = match profile {
            Some((path, pid)) => {
                let secs = self.secs + self.warmup_ms as f64 / 1e3;
                Some(perf_record(pid, &path, secs)?)
            }
            None => None,
        };
        let metrics = self.metrics.filter(|_| target == Target::Data);
        let requests_before = match metrics {
            Some(metrics) => Some(crate::calls::dynamodb_calls(metrics).await?),
            None => None,
        };
        let target_name = format!("{target:?}").to_lowercase();
        let op_name = format!("{op:?}").to_lowercase();
        let output = tokio::process::Command::new(&self.exe)
            .arg("drive")
            .args(["--target", &target_name, "--op", &op_name])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--secs", &self.secs.to_string()])
            .args(["--warmup-ms", &self.warmup_ms.to_string()])
            .args(["--pace-us", &pace.as_micros().to_string()])
            .args(&self.flags)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .context("running loadgen drive")?;
        if let Some(mut recorder) = recorder {
            let status = recorder.wait().await?;
            anyhow::ensure!(status.success(), "perf record failed: {status}");
        }
        anyhow::ensure!(
            output.status.success(),
            "loadgen drive failed: {}",
            output.status
        );
        let line: Value = serde_json::from_slice(&output.stdout).context("loadgen drive's JSON")?;
        let micros = |value: &Value| Duration::from_micros(value.as_u64().unwrap_or(0));
        let samples: Vec<Duration> = line["samples_us"]
            .as_array()
            .context("samples_us")?
            .iter()
            .map(micros)
            .collect();
        let failed = line["failed"].as_u64().unwrap_or(0);
        let dynamodb = match (metrics, requests_before) {
            (Some(metrics), Some(before)) => {
                let calls =
                    samples.len() as u64 + failed + line["warmup_calls"].as_u64().unwrap_or(0);
                Some((calls, crate::calls::dynamodb_calls(metrics).await? - before))
            }
            _ => None,
        };
        let cpu = line["cpu_us"]
            .as_object()
            .map(|cpu| {
                cpu.iter()
                    .map(|(name, used)| (name.clone(), micros(used)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Driven {
            latencies: Latencies::new(samples.clone(), failed).summary(),
            samples,
            failed,
            elapsed: micros(&line["elapsed_us"]),
            cpu,
            dynamodb,
        })
    }
}

/// Starts `perf record` (999 Hz, DWARF call graphs) on `pid` for `secs`, into `out`.
fn perf_record(
    pid: i32,
    out: &std::path::Path,
    secs: f64,
) -> anyhow::Result<tokio::process::Child> {
    eprintln!(
        "loadgen: perf record of the data-service into {}",
        out.display()
    );
    tokio::process::Command::new("perf")
        .args(["record", "-F", "999", "-g", "--call-graph", "dwarf", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string(), "--", "sleep", &format!("{secs:.1}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting perf (linux-perf)")
}
