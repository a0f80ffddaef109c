//! The auth-service's rows: argon2 here, the strength check, refresh CPU, the login flood with
//! both probes as is and weighted by CPU cgroups, memory after it, the cancellation flood.

use std::time::Duration;

use anyhow::Context;
use common::proto::auth::v1::auth_service_client::AuthServiceClient;
use tests::auth::TestUser;
use tools::cpu::CpuUse;

use crate::{
    BenchArgs, argon2_cpu,
    argon2_cpu::MEMORY_KIB,
    auth_calls, isolation,
    login_flood::{self, Flood, FloodRun},
    logins::{self, Probes},
    memory::{self, Baseline, Reading},
    refresh,
    report::{self, Row, note, row, times},
    stack::{self, BenchUser, Stack},
    strength,
};

/// New connections opened to price one (memory row).
const PRICED_CONNECTIONS: usize = 50;

/// Every row of the login side.
pub async fn auth_rows(
    args: &BenchArgs,
    stack: &Stack,
    bench_user: &BenchUser,
    baseline: &Baseline,
) -> anyhow::Result<Vec<Row>> {
    let (mut rows, verify) = yardsticks().await?;
    let channel = stack::channel(&stack.auth).await?;
    let mut client = AuthServiceClient::new(channel.clone());
    let mut users = Vec::new();
    for _ in 0..args.flood_loops {
        users.push(TestUser::register(&mut client).await);
    }
    let refresh_time = Duration::from_secs(args.refresh_secs);
    rows.push(refresh::cpu_per_refresh(&stack.auth, &channel, &users, refresh_time).await?);
    let first = users.first().context("--flood-loops must be at least 1")?;
    let metrics = stack.auth.metrics_addr;
    rows.extend(auth_calls::per_login_and_refresh(&channel, metrics, first).await?);

    let probes = Probes {
        auth: stack::channel(&stack.auth).await?,
        data: stack::channel(&stack.data).await?,
        token: bench_user.token.clone(),
    };
    let threads = stack.auth.hashing_threads()?;
    let flood = Flood {
        service: &stack.auth,
        channel: &channel,
        users: &users,
        threads: &threads,
        duration: Duration::from_secs(args.flood_secs),
        quiet: Duration::from_secs(args.probe_secs),
    };
    rows.extend(floods_both_ways(args, stack, (&flood, &probes), baseline, verify).await?);

    let cancel = (
        args.cancel_tasks,
        Duration::from_millis(args.cancel_deadline_ms),
        Duration::from_secs(args.cancel_secs),
    );
    rows.extend(logins::cancellation_flood(&channel, first, &threads, cancel).await);
    let (after, peak) = stack.auth.memory_mib()?;
    rows.push(note(
        "auth-service RSS after the cancellation flood (peak)",
        format!("{after:.1} MiB ({peak:.1} MiB)"),
    ));
    Ok(rows)
}

/// The login flood as is, memory after it, the flood weighted; their rows, CPU per Login
/// both ways against `verify`, the weighted login rate, then the memory rows.
async fn floods_both_ways(
    args: &BenchArgs,
    stack: &Stack,
    (flood, probes): (&Flood<'_>, &Probes),
    baseline: &Baseline,
    verify: Duration,
) -> anyhow::Result<Vec<Row>> {
    let as_is = login_flood::login_flood(flood, probes).await?;
    let memory_rows = memory_rows(args, stack, baseline).await?;
    let how = (
        "as is",
        "as is (each service in a session, so an autogroup, of its own)",
    );
    let mut rows = login_flood::flood_rows(flood, how, &as_is, "— (weighted below)");
    let weighted = weighted_flood(args, stack, flood, probes).await?;
    let mut runs = vec![("as is", &as_is)];
    match &weighted {
        Ok((description, run)) => {
            let how = ("weighted", description.as_str());
            rows.extend(login_flood::flood_rows(flood, how, run, "p99 ≤ 2×"));
            runs.push(("weighted", run));
        }
        Err(reason) => rows.push(note("login flood with CPU weights", reason.clone())),
    }
    rows.extend(login_flood::cpu_rows(&runs, verify));
    if let Ok((_, run)) = &weighted {
        rows.push(isolation::comparison_row(&as_is, run));
    }
    rows.extend(memory_rows);
    Ok(rows)
}

/// One argon2 verify here and the strength check on hostile input: their rows, and the
/// verify into reused memory that CPU per Login is held against.
async fn yardsticks() -> anyhow::Result<(Vec<Row>, Duration)> {
    let (allocating, reused) = tokio::task::spawn_blocking(|| argon2_cpu::verify_cpu(20)).await??;
    let verify = note(
        "one argon2id verify, here (thread CPU, median of 20)",
        format!(
            "{} with `verify_password` (allocates each time); {} into reused memory (as the \
             service's workers)",
            report::millis(allocating),
            report::millis(reused)
        ),
    );
    let (unbounded, bounded) = strength::measure().await?;
    let strength = row(
        "password strength check, hostile 256-character password (wall, median of 5)",
        format!("zxcvbn as the crate runs it (first 100 characters): {unbounded}"),
        format!("**{bounded}** for the service's check (first 16, off the runtime)"),
        "—",
        "—",
    );
    Ok((vec![verify, strength], reused))
}

/// The flood again with each process in its CPU cgroup, or why not: `--no-cgroups`, or no
/// writable CPU hierarchy. The groups are gone when it returns.
async fn weighted_flood(
    args: &BenchArgs,
    stack: &Stack,
    flood: &Flood<'_>,
    probes: &Probes,
) -> anyhow::Result<Result<(String, FloodRun), String>> {
    if args.no_cgroups {
        return Ok(Err("skipped (--no-cgroups)".to_owned()));
    }
    let weighted = match isolation::weigh(stack) {
        Ok(weighted) => weighted,
        Err(error) => return Ok(Err(format!("skipped: {error:#}"))),
    };
    eprintln!("loadgen: the login flood again, {}", weighted.description);
    let run = login_flood::login_flood(flood, probes).await?;
    let description = weighted.description.clone();
    drop(weighted.groups);
    Ok(Ok((description, run)))
}

/// RSS after the flood against idle + zxcvbn + workers × m_cost + 5 MiB, and where the
/// memory lies.
async fn memory_rows(
    args: &BenchArgs,
    stack: &Stack,
    baseline: &Baseline,
) -> anyhow::Result<Vec<Row>> {
    let after = Reading::take(&stack.auth)?;
    let connections = memory::connections_to(stack.auth.addr.port())?;
    let per_connection = memory::per_connection_kib(&stack.auth, PRICED_CONNECTIONS).await?;
    let (idle, zxcvbn) = (baseline.idle.mib, baseline.zxcvbn());
    let block = f64::from(MEMORY_KIB) / 1024.0;
    let workers = args.workers as f64;
    let bound = idle + zxcvbn + workers * block + 5.0;
    let bound_row = row(
        format!(
            "**auth-service RSS after the {} s login flood** (peak)",
            args.flood_secs
        ),
        format!(
            "idle {idle:.1} + zxcvbn {zxcvbn:.1} (RSS growth of a first Register refused as \
             too weak: the strength check builds the word lists, no hash runs) + {} workers × \
             m_cost {block:.1} + 5 = {bound:.1} MiB",
            args.workers
        ),
        format!("**{:.1} MiB** ({:.1} MiB)", after.mib, after.peak),
        times(after.mib / bound),
        "≤ 1.00× (idle + zxcvbn + workers × m_cost + 5 MiB)",
    );
    let rest = after.mib - idle - zxcvbn - workers * block;
    let breakdown = note(
        "auth-service memory, where it lies (`/proc/PID/smaps` Rss: the main arena's heap, \
         files (code, read-only data), anonymous (thread arenas, argon2 blocks, stacks))",
        format!(
            "the first password check: {}; the flood (after it − after the check; workers × \
             m_cost in it): {}; beyond \
             idle + zxcvbn + workers × m_cost: {rest:.1} MiB, with {connections} connections \
             open to the auth-service at {per_connection:.0} KiB each (RSS growth over \
             {PRICED_CONNECTIONS} new connections, one ListSigningKeys on each)",
            baseline
                .checked
                .breakdown
                .growth_since(&baseline.idle.breakdown),
            after.breakdown.growth_since(&baseline.checked.breakdown),
        ),
    );
    Ok(vec![bound_row, breakdown])
}
