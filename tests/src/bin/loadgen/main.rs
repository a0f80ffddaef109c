//! Login load against the real auth-service release binary, measured from outside: its
//! memory idle and after a login flood, logins per second at the default argon2 cost, the
//! latency of a cheap RPC (ListSigningKeys) quiet and during the flood, how many argon2 jobs
//! run at once during a cancellation flood, its CPU per login against one argon2 verify
//! measured here, and what the password strength check costs on hostile input.
//!
//! Run (release, after `cargo build --release --workspace`):
//! `target/release/loadgen --out bench.md` (60 s flood; `--flood-secs 5` for a quick look).
//! Needs dynalite from `scripts/install-tools`. Prints a markdown table.

mod argon2_cpu;
mod floods;
mod latency;
mod service;
mod strength;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use tests::{
    auth::TestUser,
    emulators::{Emulator, Kind, workspace_root},
};
use tonic::transport::Channel;

use crate::{
    argon2_cpu::{ITERATIONS, MEMORY_KIB},
    floods::{Outcomes, Sampler},
    service::Service,
};

/// Login bench for the auth-service.
#[derive(Parser, Debug)]
struct Args {
    /// The auth-service binary (built with `cargo build --release --workspace`).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Password hashing threads the service runs with.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Length of the quiet ListSigningKeys probe, in seconds (another runs during the flood).
    #[arg(long, default_value_t = 10)]
    probe_secs: u64,
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
    let (allocating, reused) = tokio::task::spawn_blocking(|| argon2_cpu::verify_cpu(20)).await??;
    rows.push((
        "one argon2 verify, here (thread CPU, median of 20)".to_owned(),
        format!(
            "{:.1} ms with `verify_password` (allocates each time); {:.1} ms into reused memory \
             (as the service's workers)",
            allocating.as_secs_f64() * 1e3,
            reused.as_secs_f64() * 1e3
        ),
    ));

    rows.push(strength::measure().await?);
    let probe_channel = Channel::from_shared(format!("http://{}", service.addr))?
        .connect()
        .await?;
    let quiet = latency::probe(probe_channel.clone(), Duration::from_secs(args.probe_secs)).await;
    rows.push((
        "ListSigningKeys latency, quiet (one call every 2 ms, own connection)".to_owned(),
        quiet.describe(),
    ));

    let mut client =
        common::proto::auth::v1::auth_service_client::AuthServiceClient::new(channel.clone());
    let mut users = Vec::new();
    for _ in 0..args.flood_loops {
        users.push(TestUser::register(&mut client).await);
    }
    let threads = service.hashing_threads()?;
    let flood = Flood {
        channel: &channel,
        probe_channel,
        users: &users,
        threads: &threads,
    };
    rows.extend(login_flood(&service, flood, &args, &quiet).await?);
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

/// What the login flood needs.
struct Flood<'a> {
    channel: &'a Channel,
    /// A connection of its own for the ListSigningKeys probe.
    probe_channel: Channel,
    users: &'a [TestUser],
    threads: &'a [PathBuf],
}

/// The login flood: throughput, outcomes, CPU per login against one verify, and the latency
/// of ListSigningKeys meanwhile against `quiet`.
async fn login_flood(
    service: &Service,
    flood: Flood<'_>,
    args: &Args,
    quiet: &latency::Latencies,
) -> anyhow::Result<Vec<(String, String)>> {
    let cpu_before = service.cpu_time()?;
    let sampler = Sampler::start(flood.threads.to_vec());
    let duration = Duration::from_secs(args.flood_secs);
    let (outcomes, during) = tokio::join!(
        floods::login_flood(flood.channel, flood.users, duration),
        latency::probe(flood.probe_channel, duration)
    );
    let (most_running, _) = sampler.finish();
    let cpu = service.cpu_time()? - cpu_before;
    let per_login = cpu.as_secs_f64() / outcomes.ok.max(1) as f64;
    let per_second = outcomes.ok as f64 / duration.as_secs_f64();
    let (p50, p99) = (0.5, 0.99);
    Ok(vec![
        (
            format!(
                "login flood: {} loops × {} s",
                args.flood_loops, args.flood_secs
            ),
            format!(
                "{} logins, {} refused, {} failed; hashing threads running at most {}; \
                 **CPU per login {:.1} ms** (service utime + stime / logins)",
                outcomes.ok,
                outcomes.refused,
                outcomes.connection + outcomes.other + outcomes.timed_out,
                most_running,
                per_login * 1e3
            ),
        ),
        (
            "**logins per second** at the default argon2 cost".to_owned(),
            format!("**{per_second:.0}/s** ({} hash workers)", args.workers),
        ),
        (
            "ListSigningKeys latency during the login flood".to_owned(),
            during.describe(),
        ),
        (
            "**ListSigningKeys during the flood vs quiet**".to_owned(),
            format!(
                "**p99 {}**, p50 {}",
                latency::ratio(during.percentile(p99), quiet.percentile(p99)),
                latency::ratio(during.percentile(p50), quiet.percentile(p50))
            ),
        ),
    ])
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
