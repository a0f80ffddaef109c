//! The load report, measured from outside against the release binaries: the local stack
//! (dynalite, moto, the auth-service and the data-service, each a process of its own), the
//! data path against a direct `aws-sdk-dynamodb` client on the same dynalite and against the
//! bare gRPC hop, CPU per call of each process from `/proc/<pid>/stat`, h2load with a prepared
//! gRPC frame, STS calls for concurrent first requests, refresh and login CPU, a login flood
//! next to the data path, memory idle and after, a cancellation flood, the password strength
//! check on hostile input, and revocation propagation (revbench). One markdown table.
//!
//! Run: `scripts/bench` (builds, installs what it needs, runs this); `scripts/bench --quick`
//! for a look in a few minutes. `loadgen drive` is the child process each data-path load runs
//! in; `loadgen frame` writes a gRPC request frame for h2load.

mod argon2_cpu;
mod auth_calls;
mod calls;
mod cgroups;
mod datapath;
mod drive;
mod floods;
mod h2load;
mod isolation;
mod latency;
mod login_flood;
mod login_side;
mod logins;
mod memory;
mod refresh;
mod report;
mod revocation;
mod stack;
mod strength;
mod sts;
mod weights;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tests::emulators::workspace_root;

use crate::{
    argon2_cpu::{ITERATIONS, MEMORY_KIB},
    drive::{DriveArgs, Driver},
    h2load::FrameArgs,
    report::{Row, note, row},
    stack::{BenchUser, Stack, channel},
};

/// The load report for Dynagate's release binaries.
#[derive(Parser, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one data-path load and print its figures as JSON (what the report runs for each).
    Drive(DriveArgs),
    /// Write a gRPC request frame (GetItem, or Health/Check) for `h2load --data`.
    Frame(FrameArgs),
}

/// The whole report (the default command).
#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Directory of the release binaries (auth-service, data-service, revbench).
    #[arg(long, env = "LOADGEN_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Short runs (1–5 s each, fewer revocations) for trying it out; overrides the lengths.
    #[arg(long, env = "LOADGEN_QUICK")]
    quick: bool,
    /// Password hashing threads the auth-service runs with.
    #[arg(long, env = "LOADGEN_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Measured seconds of each data-path load (after a 0.5 s warm-up), per round.
    #[arg(long, env = "LOADGEN_LOAD_SECS", default_value_t = 2.0)]
    load_secs: f64,
    /// Rounds of each data-path comparison (direct SDK and data-service alternating).
    #[arg(long, env = "LOADGEN_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// Seconds of the quiet probes (ListSigningKeys and GetItem; others run during the flood).
    #[arg(long, env = "LOADGEN_PROBE_SECS", default_value_t = 10)]
    probe_secs: u64,
    /// Seconds of the login flood.
    #[arg(long, env = "LOADGEN_FLOOD_SECS", default_value_t = 60)]
    flood_secs: u64,
    /// Concurrent login loops in the flood (one user each); also the refresh loops.
    #[arg(long, env = "LOADGEN_FLOOD_LOOPS", default_value_t = 8)]
    flood_loops: usize,
    /// Seconds of the refresh loops.
    #[arg(long, env = "LOADGEN_REFRESH_SECS", default_value_t = 10)]
    refresh_secs: u64,
    /// Seconds of the cancellation flood.
    #[arg(long, env = "LOADGEN_CANCEL_SECS", default_value_t = 10)]
    cancel_secs: u64,
    /// Concurrent loops in the cancellation flood.
    #[arg(long, env = "LOADGEN_CANCEL_TASKS", default_value_t = 64)]
    cancel_tasks: usize,
    /// Deadline of each cancelled login, in milliseconds.
    #[arg(long, env = "LOADGEN_CANCEL_DEADLINE_MS", default_value_t = 1)]
    cancel_deadline_ms: u64,
    /// New users sending first requests at once (STS row).
    #[arg(long, env = "LOADGEN_STS_USERS", default_value_t = 5)]
    sts_users: usize,
    /// Concurrent first requests per user (STS row).
    #[arg(long, env = "LOADGEN_STS_CONCURRENT", default_value_t = 20)]
    sts_concurrent: usize,
    /// Requests of each h2load run (skipped when h2load is not on PATH).
    #[arg(long, env = "LOADGEN_H2LOAD_REQUESTS", default_value_t = 20_000)]
    h2load_requests: u64,
    /// Sessions revbench ends per layout.
    #[arg(long, env = "LOADGEN_REVOCATIONS", default_value_t = 200)]
    revocations: usize,
    /// Do not run revbench (the table then names its command).
    #[arg(long, env = "LOADGEN_NO_REVBENCH")]
    no_revbench: bool,
    /// Do not run the login flood a second time with each service in a CPU cgroup weighted as
    /// its Kubernetes manifest requests (needs a writable cgroup v1 `cpu` or v2 hierarchy,
    /// i.e. root; skipped with a note otherwise).
    #[arg(long, env = "LOADGEN_NO_CGROUPS")]
    no_cgroups: bool,
    /// Only the data path (loads, DynamoDB calls per RPC, h2load): no STS, refresh, login,
    /// cancellation or revocation rows.
    #[arg(long, env = "LOADGEN_DATA_PATH_ONLY")]
    data_path_only: bool,
    /// Extra environment for the auth-service, `NAME=VALUE` (repeatable; space-separated in
    /// the variable), e.g. `DYNAGATE_HASH_SCHED=normal`.
    #[arg(long = "auth-env", env = "LOADGEN_AUTH_ENV", value_delimiter = ' ')]
    auth_env: Vec<String>,
    /// Record a `perf` profile (999 Hz, DWARF call graphs) of the data-service during the
    /// first GetItem c8 load through it, into this file (`perf report -i FILE --children`).
    #[arg(long, env = "LOADGEN_PERF_DATA")]
    perf_data: Option<PathBuf>,
    /// Also write the table to this file.
    #[arg(long, env = "LOADGEN_OUT", default_value = "bench.md")]
    out: PathBuf,
}

impl BenchArgs {
    fn apply_quick(&mut self) {
        if self.quick {
            self.load_secs = 1.0;
            self.rounds = 1;
            self.probe_secs = 2;
            self.flood_secs = 5;
            self.refresh_secs = 2;
            self.cancel_secs = 2;
            self.h2load_requests = 2_000;
            self.revocations = 20;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Drive(args)) => drive::run(args).await,
        Some(Command::Frame(args)) => h2load::write_frame(&args),
        None => {
            let mut args = cli.bench;
            args.apply_quick();
            bench(&args).await
        }
    }
}

async fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release"));
    eprintln!("loadgen: starting dynalite, moto, the auth-service and the data-service");
    let auth_extra = args
        .auth_env
        .iter()
        .map(|pair| {
            let (key, value) = pair.split_once('=').context("--auth-env NAME=VALUE")?;
            anyhow::Ok((key.to_owned(), value.to_owned()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stack = Stack::start(&bin_dir, args.workers, &auth_extra).await?;
    let (auth_channel, data_channel) = (channel(&stack.auth).await?, channel(&stack.data).await?);
    let mut rows = Vec::new();

    // Each hashing thread allocates its argon2 block and times one verification as it starts,
    // after the server already answers: let that settle before calling it idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (data_idle, _) = stack.data.memory_mib()?;
    let auth_memory = memory::Baseline::take(&stack.auth, &auth_channel).await?;
    rows.push(idle_row("auth-service", auth_memory.idle.mib));
    rows.push(idle_row("data-service", data_idle));

    let bench_user = BenchUser::create(auth_channel.clone(), data_channel.clone()).await?;
    eprintln!("loadgen: data path, {} s per load", args.load_secs);
    let driver = Driver {
        exe: std::env::current_exe()?,
        secs: args.load_secs,
        warmup_ms: if args.quick { 200 } else { 500 },
        rounds: args.rounds,
        flags: driver_flags(&stack, &bench_user)?,
        env: bench_user.driver_env(),
        perf: std::sync::Mutex::new(args.perf_data.clone().map(|path| (path, stack.data.pid()))),
        metrics: Some(stack.data.metrics_addr),
    };
    let (data_rows, baselines) = datapath::measure(&driver).await?;
    rows.extend(data_rows);
    let metrics = stack.data.metrics_addr;
    rows.push(calls::per_rpc(data_channel.clone(), metrics, &bench_user.token).await?);
    if let Some(h2load) = h2load::find() {
        eprintln!("loadgen: h2load");
        rows.extend(
            h2load::measure(
                &h2load,
                &stack.data,
                data_channel.clone(),
                &bench_user.token,
                args.h2load_requests,
                baselines.direct_get_cpu,
            )
            .await?,
        );
    } else {
        rows.push(note(
            "h2load",
            "not on PATH (scripts/bench installs it): skipped",
        ));
    }
    let (data_after, data_peak) = stack.data.memory_mib()?;
    rows.push(note(
        "data-service RSS after the data-path loads (peak)",
        format!("{data_after:.1} MiB ({data_peak:.1} MiB), idle {data_idle:.1} MiB"),
    ));

    if args.data_path_only {
        stack.auth.stop()?;
        stack.data.stop()?;
        return print_table(args, &rows);
    }
    eprintln!("loadgen: STS first requests, refresh, logins");
    rows.push(
        sts::first_requests(
            auth_channel.clone(),
            data_channel.clone(),
            &stack.moto.endpoint(),
            args.sts_users,
            args.sts_concurrent,
        )
        .await?,
    );
    rows.extend(login_side::auth_rows(args, &stack, &bench_user, &auth_memory).await?);

    let stats = stack.auth.stop()?;
    if let Some(stats) = stats {
        rows.push(note(
            "auth-service's own hashing stats at shutdown",
            format!(
                "peak running {}, peak queued {}, verifications {}, skipped (caller gone) {}, \
                 rejected {}",
                stats["peak_running"],
                stats["peak_queued"],
                stats["verifications"],
                stats["skipped_cancelled"],
                stats["rejected"]
            ),
        ));
    }
    stack.data.stop()?;
    eprintln!("loadgen: revocation propagation (revbench)");
    let sizes = revocation::Sizes {
        revocations: args.revocations,
        rounds: if args.quick { 2 } else { 10 },
        calls: if args.quick { 100 } else { 500 },
        preload: if args.quick { 1_000 } else { 10_000 },
    };
    let revbench = if args.no_revbench {
        PathBuf::new()
    } else {
        bin_dir.join("revbench")
    };
    rows.push(revocation::propagation(&revbench, &sizes).await?);
    print_table(args, &rows)
}

fn idle_row(name: &str, idle: f64) -> Row {
    row(
        format!("{name} RSS idle"),
        "—",
        format!("{idle:.1} MiB"),
        "—",
        "≤ 20 MB (19.1 MiB)",
    )
}

fn driver_flags(stack: &Stack, user: &BenchUser) -> anyhow::Result<Vec<String>> {
    Ok([
        ("--addr", stack.data.addr.to_string()),
        ("--endpoint", stack.dynalite.endpoint()),
        ("--table", stack.items_table.clone()),
        ("--owner", user.user.user_id.clone()),
        ("--watch", format!("data={}", stack.data.pid())),
        ("--watch", format!("auth={}", stack.auth.pid())),
        ("--watch", format!("dynalite={}", stack.dynalite_pid()?)),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect())
}

fn print_table(args: &BenchArgs, rows: &[Row]) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let binaries = args.bin_dir.as_ref().map_or_else(
        || "target/release".to_owned(),
        |dir| dir.display().to_string(),
    );
    let header = format!(
        "Binaries of {binaries}, {cores} cores; argon2id m={MEMORY_KIB} t={ITERATIONS} p=1, \
         --hash-workers {}; data-path loads {} × {} s each{}",
        args.workers,
        args.rounds,
        args.load_secs,
        if args.quick { " (--quick)" } else { "" }
    );
    let table = report::render(&header, rows);
    print!("{table}");
    std::fs::write(&args.out, &table).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
