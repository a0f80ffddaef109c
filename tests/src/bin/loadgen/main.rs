//! Login load against the real auth-service release binary, measured from outside: its
//! memory idle and after a login flood, how many argon2 jobs run at once during a
//! cancellation flood, and its CPU per login against one argon2 verify measured here.
//!
//! Run (release, after `cargo build --release --workspace`):
//! `target/release/loadgen --out bench.md` (60 s flood; `--flood-secs 5` for a quick look).
//! Needs dynalite from `scripts/install-tools`. Prints a markdown table.

mod floods;
mod service;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
};
use clap::Parser;
use rustix::time::{ClockId, clock_gettime};
use tests::{
    auth::TestUser,
    emulators::{Emulator, Kind, workspace_root},
};
use tonic::transport::Channel;

use crate::{
    floods::{Outcomes, Sampler},
    service::Service,
};

/// The auth-service's default argon2 cost (m=19456 KiB, t=2, p=1).
const MEMORY_KIB: u32 = 19_456;
const ITERATIONS: u32 = 2;
const PASSWORD: &[u8] = b"bench password";

/// Login bench for the auth-service.
#[derive(Parser, Debug)]
struct Args {
    /// The auth-service binary (built with `cargo build --release --workspace`).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Password hashing threads the service runs with.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Length of the login flood, in seconds.
    #[arg(long, default_value_t = 60)]
    flood_secs: u64,
    /// Concurrent login loops in the flood (one user each).
    #[arg(long, default_value_t = 8)]
    flood_loops: usize,
    /// Length of the cancellation flood, in seconds.
    #[arg(long, default_value_t = 10)]
    cancel_secs: u64,
    /// Concurrent loops in the cancellation flood.
    #[arg(long, default_value_t = 64)]
    cancel_tasks: usize,
    /// Deadline of each cancelled login, in milliseconds.
    #[arg(long, default_value_t = 1)]
    cancel_deadline_ms: u64,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = args
        .binary
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release/auth-service"));
    let dynalite = Emulator::start(Kind::Dynalite, false).await;
    let service = Service::start(&binary, &dynalite.endpoint(), args.workers)?;
    let serving = tests::wait_serving(service.addr, "dynagate.auth.v1.AuthService").await;
    anyhow::ensure!(serving, "the auth-service did not report SERVING");
    let channel = Channel::from_shared(format!("http://{}", service.addr))?
        .connect()
        .await?;
    let mut rows = Vec::new();

    // Each hashing thread allocates its argon2 block and times one verification as it
    // starts, after the server already answers: let that settle before calling it idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle, _) = service.memory_mib()?;
    rows.push(("auth-service RSS idle".to_owned(), format!("{idle:.1} MiB")));
    let (allocating, reused) = tokio::task::spawn_blocking(|| argon2_verify_cpu(20)).await??;
    rows.push((
        "one argon2 verify, here (thread CPU, median of 20)".to_owned(),
        format!(
            "{:.1} ms with `verify_password` (allocates each time); {:.1} ms into reused memory \
             (as the service's workers)",
            allocating.as_secs_f64() * 1e3,
            reused.as_secs_f64() * 1e3
        ),
    ));

    let mut client =
        common::proto::auth::v1::auth_service_client::AuthServiceClient::new(channel.clone());
    let mut users = Vec::new();
    for _ in 0..args.flood_loops {
        users.push(TestUser::register(&mut client).await);
    }
    let threads = service.hashing_threads()?;
    rows.push(login_flood(&service, &channel, &users, &args, &threads).await?);
    let (after, peak) = service.memory_mib()?;
    rows.push((
        format!("RSS after the {} s login flood (peak)", args.flood_secs),
        format!("{after:.1} MiB ({peak:.1} MiB)"),
    ));

    let first = users.first().context("--flood-loops must be at least 1")?;
    rows.extend(cancellation_flood(&channel, first, &args, &threads).await?);
    let (after, peak) = service.memory_mib()?;
    rows.push((
        "RSS after the cancellation flood (peak)".to_owned(),
        format!("{after:.1} MiB ({peak:.1} MiB)"),
    ));

    let stats = service.stop()?;
    rows.push((
        "service's own stats at shutdown".to_owned(),
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
    print_table(&args, &rows)
}

/// The login flood: throughput, outcomes, and CPU per login against one verify.
async fn login_flood(
    service: &Service,
    channel: &Channel,
    users: &[TestUser],
    args: &Args,
    threads: &[PathBuf],
) -> anyhow::Result<(String, String)> {
    let cpu_before = service.cpu_time()?;
    let sampler = Sampler::start(threads.to_vec());
    let duration = Duration::from_secs(args.flood_secs);
    let outcomes = floods::login_flood(channel, users, duration).await;
    let (most_running, _) = sampler.finish();
    let cpu = service.cpu_time()? - cpu_before;
    let per_login = cpu.as_secs_f64() / outcomes.ok.max(1) as f64;
    Ok((
        format!(
            "login flood: {} loops × {} s",
            args.flood_loops, args.flood_secs
        ),
        format!(
            "{} logins ({:.0}/s), {} refused, {} failed; hashing threads running at most {}; \
             **CPU per login {:.1} ms** (service utime + stime / logins)",
            outcomes.ok,
            outcomes.ok as f64 / duration.as_secs_f64(),
            outcomes.refused,
            outcomes.connection + outcomes.other + outcomes.timed_out,
            most_running,
            per_login * 1e3
        ),
    ))
}

/// The cancellation flood: how many hashing threads ever ran at once.
async fn cancellation_flood(
    channel: &Channel,
    user: &TestUser,
    args: &Args,
    threads: &[PathBuf],
) -> anyhow::Result<Vec<(String, String)>> {
    let sampler = Sampler::start(threads.to_vec());
    let outcomes: Outcomes = floods::cancellation_flood(
        channel,
        user,
        args.cancel_tasks,
        Duration::from_millis(args.cancel_deadline_ms),
        Duration::from_secs(args.cancel_secs),
    )
    .await;
    let (most_running, samples) = sampler.finish();
    Ok(vec![
        (
            format!(
                "cancellation flood: {} tasks × {} s, {} ms deadlines",
                args.cancel_tasks, args.cancel_secs, args.cancel_deadline_ms
            ),
            format!(
                "{} calls: {} timed out, {} refused (queue full), {} connection-level \
                 (GOAWAY, transport), {} answered",
                outcomes.total(),
                outcomes.timed_out,
                outcomes.refused,
                outcomes.connection,
                outcomes.ok + outcomes.other
            ),
        ),
        (
            "**argon2 jobs running at most** (hash-worker threads in state R)".to_owned(),
            format!(
                "**{most_running}** of {} workers ({samples} samples, ~1 ms apart)",
                threads.len()
            ),
        ),
    ])
}

/// CPU time of one argon2id verify at the service's default cost on this thread (median of
/// `rounds`): with the crate's `verify_password`, which allocates (and page-faults) its memory
/// each time, and recomputed into memory allocated once, as the service's workers do.
fn argon2_verify_cpu(rounds: usize) -> anyhow::Result<(Duration, Duration)> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, 1, None)
        .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let phc = argon2
        .hash_password(PASSWORD)
        .map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))?
        .to_string();
    let hash = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("PHC: {e}"))?;
    let salt = hash.salt.context("salt")?;
    let mut memory = vec![Block::new(); params.block_count()];
    let mut out = [0u8; 32];
    let allocating = median_cpu(rounds, || {
        argon2
            .verify_password(PASSWORD, &hash)
            .map_err(|e| anyhow::anyhow!("argon2 verify: {e}"))
    })?;
    let reused = median_cpu(rounds, || {
        argon2
            .hash_password_into_with_memory(PASSWORD, &salt, &mut out, memory.as_mut_slice())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    })?;
    Ok((allocating, reused))
}

fn median_cpu(
    rounds: usize,
    mut work: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = thread_cpu();
        work()?;
        samples.push(thread_cpu().saturating_sub(start));
    }
    samples.sort();
    samples.get(rounds / 2).copied().context("no samples")
}

fn thread_cpu() -> Duration {
    let now = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

fn print_table(args: &Args, rows: &[(String, String)]) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut table = format!(
        "auth-service, argon2id m={MEMORY_KIB} t={ITERATIONS} p=1, --hash-workers {}, \
         {cores} cores\n\n| measure | value |\n|---|---|\n",
        args.workers
    );
    for (measure, value) in rows {
        table.push_str(&format!("| {measure} | {value} |\n"));
    }
    print!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
