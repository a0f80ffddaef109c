//! The login flood: concurrent loops of real logins for a while, the two probes quiet just
//! before and beside it, the auth-service's CPU over it (the hashing threads apart, the
//! ListSigningKeys probe's share subtracted), and its rows.

use std::{path::PathBuf, time::Duration};

use tests::auth::TestUser;
use tonic::transport::Channel;

use tests::process::ServiceProcess as Service;
use tools::cpu::{Cpu, CpuUse};

use crate::{
    floods::{self, Outcomes, Sampler},
    latency::Latencies,
    logins::Probes,
    report::{Row, millis, note, ratio, row},
};

/// What the login flood needs.
pub struct Flood<'a> {
    /// The auth-service.
    pub service: &'a Service,
    /// The flood's connection.
    pub channel: &'a Channel,
    /// One user per loop.
    pub users: &'a [TestUser],
    /// The `hash-worker-N` threads.
    pub threads: &'a [PathBuf],
    /// How long.
    pub duration: Duration,
    /// How long the quiet probes run before it.
    pub quiet: Duration,
}

/// What one login flood measured: the probes quiet just before, and everything during it.
pub struct FloodRun {
    /// How the logins ended.
    pub outcomes: Outcomes,
    /// Hashing threads seen running at once, at most.
    pub most_running: u64,
    /// The auth-service's CPU over the flood.
    pub cpu: Cpu,
    /// The auth-service's CPU over the quiet probes (the ListSigningKeys probe's cost).
    pub quiet_cpu: Duration,
    /// Logins per second.
    pub per_second: f64,
    /// ListSigningKeys and GetItem, quiet.
    pub quiet: (Latencies, Latencies),
    /// ListSigningKeys and GetItem, during the flood.
    pub during: (Latencies, Latencies),
}

impl FloodRun {
    /// The auth-service's CPU per login: all of it, and its hashing threads', without what
    /// the ListSigningKeys probe cost it meanwhile ([`Self::probe_cpu`]).
    pub fn per_login(&self) -> (Duration, Duration) {
        let logins = u32::try_from(self.outcomes.ok.max(1)).unwrap_or(u32::MAX);
        let total = self.cpu.total.saturating_sub(self.probe_cpu());
        (total / logins, self.cpu.hashing / logins)
    }

    /// The ListSigningKeys probe's share of the auth-service's CPU during the flood: its calls
    /// then at the quiet window's CPU per call (which includes the idle background, e.g. the
    /// revocation feed's poll).
    pub fn probe_cpu(&self) -> Duration {
        let calls = |probe: &Latencies| probe.count() as f64 + probe.failed as f64;
        let per_call = self.quiet_cpu.as_secs_f64() / calls(&self.quiet.0).max(1.0);
        Duration::from_secs_f64(per_call * calls(&self.during.0))
    }

    /// GetItem p99 during the flood over quiet.
    pub fn get_p99_ratio(&self) -> f64 {
        let (quiet, during) = (&self.quiet.1, &self.during.1);
        during.percentile(0.99).as_secs_f64() / quiet.percentile(0.99).as_secs_f64().max(1e-9)
    }
}

/// The quiet probes, then the flood with both probes running beside it.
pub async fn login_flood(flood: &Flood<'_>, probes: &Probes) -> anyhow::Result<FloodRun> {
    let quiet_before = flood.service.cpu_time()?;
    let quiet = probes.run(flood.quiet).await;
    let quiet_cpu = flood.service.cpu_time()? - quiet_before;
    let cpu_before = flood.service.cpu()?;
    let sampler = Sampler::start(flood.threads.to_vec());
    let (outcomes, during) = tokio::join!(
        floods::login_flood(flood.channel, flood.users, flood.duration),
        probes.run(flood.duration)
    );
    let (most_running, _) = sampler.finish();
    let cpu = flood.service.cpu()? - cpu_before;
    Ok(FloodRun {
        outcomes,
        most_running,
        cpu,
        quiet_cpu,
        per_second: outcomes.ok as f64 / flood.duration.as_secs_f64(),
        quiet,
        during,
    })
}

/// The flood's own rows, `how` naming its configuration (and `configuration` describing it):
/// what it did, ListSigningKeys and GetItem quiet and during it (`target` for GetItem's p99
/// ratio).
pub fn flood_rows(
    flood: &Flood<'_>,
    (how, configuration): (&str, &str),
    run: &FloodRun,
    target: &str,
) -> Vec<Row> {
    let quiet = flood.quiet.as_secs();
    vec![
        note(
            format!(
                "login flood, {configuration}: {} loops × {} s",
                flood.users.len(),
                flood.duration.as_secs()
            ),
            format!(
                "{} logins, {} refused, {} failed; hashing threads running at most {}; \
                 **{:.0} logins/s**",
                run.outcomes.ok,
                run.outcomes.refused,
                run.outcomes.connection + run.outcomes.other + run.outcomes.timed_out,
                run.most_running,
                run.per_second,
            ),
        ),
        probe_row(
            format!("ListSigningKeys on the auth-service during the flood, {how}"),
            quiet,
            (&run.quiet.0, &run.during.0),
            "—",
        ),
        probe_row(
            format!("**GetItem p99 on the data-service during the flood, {how}**"),
            quiet,
            (&run.quiet.1, &run.during.1),
            target,
        ),
    ]
}

fn probe_row(
    figure: String,
    quiet_secs: u64,
    (quiet, during): (&Latencies, &Latencies),
    target: &str,
) -> Row {
    let p99 = ratio(during.percentile(0.99), quiet.percentile(0.99));
    row(
        format!(
            "{figure} (one call every 2 ms, own connection; quiet: {quiet_secs} s just before, \
             same configuration)"
        ),
        format!("quiet: {}", quiet.describe()),
        during.describe(),
        format!(
            "{}, p50 {}",
            if target == "—" {
                format!("p99 {p99}")
            } else {
                format!("**p99 {p99}**")
            },
            ratio(during.percentile(0.5), quiet.percentile(0.5))
        ),
        target,
    )
}

/// The auth-service's CPU per Login (against one argon2 verify into reused memory, `verify`),
/// and apart its CPU outside the hashing threads, in each configuration measured.
pub fn cpu_rows(runs: &[(&str, &FloodRun)], verify: Duration) -> Vec<Row> {
    let Some((first, run)) = runs.first() else {
        return Vec::new();
    };
    let (per_login, hashing) = run.per_login();
    let others = runs[1..]
        .iter()
        .map(|(how, run)| format!("; {how}: {}", millis(run.per_login().0)))
        .collect::<String>();
    vec![
        row(
            format!(
                "**auth CPU per Login** (service utime + stime during the flood {first}, minus \
                 the ListSigningKeys probe's calls at their quiet CPU per call ({} µs \
                 subtracted per login), / logins; the hash-worker threads + the rest)",
                probe_per_login(run).as_micros()
            ),
            format!(
                "one argon2id verify here, into reused memory as the workers do: {}",
                millis(verify)
            ),
            format!(
                "**{}** ({} + {}){others}",
                millis(per_login),
                millis(hashing),
                millis(outside(run))
            ),
            format!("**{}**", ratio(per_login, verify)),
            "≤ 1.1×",
        ),
        outside_row(runs),
    ]
}

/// CPU per Login outside the hashing threads, in each configuration.
fn outside_row(runs: &[(&str, &FloodRun)]) -> Row {
    row(
        "**auth CPU per Login outside the hashing threads** (the same, without the \
         hash-worker threads: DynamoDB calls, the token, the session, logs)",
        "—",
        runs.iter()
            .map(|(how, run)| {
                format!(
                    "{how}: **{}** ({} with the probe's share)",
                    millis(outside(run)),
                    millis(outside(run) + probe_per_login(run))
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        "—",
        "≤ 1.5 ms",
    )
}

fn outside(run: &FloodRun) -> Duration {
    let (all, hashing) = run.per_login();
    all.saturating_sub(hashing)
}

fn probe_per_login(run: &FloodRun) -> Duration {
    run.probe_cpu() / u32::try_from(run.outcomes.ok.max(1)).unwrap_or(u32::MAX)
}
