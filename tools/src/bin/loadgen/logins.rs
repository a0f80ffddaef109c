//! The login side: a login flood (CPU per login against one argon2 verify, logins per second,
//! what it does to ListSigningKeys on the auth-service and to GetItem on the data-service next
//! to it) and a cancellation flood (how many argon2 jobs ever run at once).

use std::{path::PathBuf, time::Duration};

use common::proto::{
    auth::v1::{ListSigningKeysRequest, auth_service_client::AuthServiceClient},
    data::v1::{GetItemRequest, data_service_client::DataServiceClient},
};
use tests::auth::{TestUser, with_bearer};
use tonic::transport::Channel;

use tests::process::ServiceProcess as Service;
use tools::cpu::CpuUse;

use crate::{
    drive::GET_KEY,
    floods::{self, Outcomes, Sampler},
    latency::{self, Latencies},
    report::{Row, millis, note, ratio, row},
};

/// The two paced probes, each on its own connection: ListSigningKeys (auth-service) and
/// GetItem (data-service).
#[derive(Clone)]
pub struct Probes {
    /// A connection to the auth-service.
    pub auth: Channel,
    /// A connection to the data-service.
    pub data: Channel,
    /// The bench user's access token.
    pub token: String,
}

impl Probes {
    /// Both probes at once for `duration`.
    pub async fn run(&self, duration: Duration) -> (Latencies, Latencies) {
        let auth = AuthServiceClient::new(self.auth.clone());
        let data = DataServiceClient::new(self.data.clone());
        let token = self.token.clone();
        tokio::join!(
            latency::probe(duration, || {
                let mut auth = auth.clone();
                async move {
                    auth.list_signing_keys(ListSigningKeysRequest {})
                        .await
                        .is_ok()
                }
            }),
            latency::probe(duration, || {
                let (mut data, token) = (data.clone(), token.clone());
                async move {
                    let request = GetItemRequest {
                        key: GET_KEY.to_owned(),
                        ..Default::default()
                    };
                    data.get_item(with_bearer(request, &token)).await.is_ok()
                }
            })
        )
    }
}

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
    /// One argon2 verify into reused memory, measured here.
    pub verify: Duration,
}

/// The login flood's rows, against `quiet` probes taken before it.
pub async fn login_flood(
    flood: Flood<'_>,
    probes: &Probes,
    quiet: &(Latencies, Latencies),
) -> anyhow::Result<Vec<Row>> {
    let cpu_before = flood.service.cpu()?;
    let sampler = Sampler::start(flood.threads.to_vec());
    let (outcomes, during) = tokio::join!(
        floods::login_flood(flood.channel, flood.users, flood.duration),
        probes.run(flood.duration)
    );
    let (most_running, _) = sampler.finish();
    let cpu = flood.service.cpu()? - cpu_before;
    let logins = u32::try_from(outcomes.ok.max(1)).unwrap_or(u32::MAX);
    let (per_login, hashing) = (cpu.total / logins, cpu.hashing / logins);
    let per_second = outcomes.ok as f64 / flood.duration.as_secs_f64();
    let (quiet_keys, quiet_get) = quiet;
    let (during_keys, during_get) = &during;
    Ok(vec![
        note(
            format!(
                "login flood: {} loops × {} s",
                flood.users.len(),
                flood.duration.as_secs()
            ),
            format!(
                "{} logins, {} refused, {} failed; hashing threads running at most {}; \
                 **{per_second:.0} logins/s**",
                outcomes.ok,
                outcomes.refused,
                outcomes.connection + outcomes.other + outcomes.timed_out,
                most_running,
            ),
        ),
        row(
            "**auth CPU per Login** (service utime + stime / logins, during the flood; the \
             hash-worker threads + the rest)",
            format!(
                "one argon2id verify here, into reused memory as the workers do: {}",
                millis(flood.verify)
            ),
            format!(
                "**{}** ({} + {})",
                millis(per_login),
                millis(hashing),
                millis(per_login.saturating_sub(hashing))
            ),
            format!("**{}**", ratio(per_login, flood.verify)),
            "≤ 1.1×",
        ),
        row(
            "ListSigningKeys on the auth-service during the flood (one call every 2 ms, own \
             connection)",
            format!("quiet: {}", quiet_keys.describe()),
            during_keys.describe(),
            format!(
                "p99 {}, p50 {}",
                ratio(during_keys.percentile(0.99), quiet_keys.percentile(0.99)),
                ratio(during_keys.percentile(0.5), quiet_keys.percentile(0.5))
            ),
            "—",
        ),
        row(
            "**GetItem p99 on the data-service during the flood** (one call every 2 ms, own \
             connection)",
            format!("quiet: {}", quiet_get.describe()),
            during_get.describe(),
            format!(
                "**p99 {}**, p50 {}",
                ratio(during_get.percentile(0.99), quiet_get.percentile(0.99)),
                ratio(during_get.percentile(0.5), quiet_get.percentile(0.5))
            ),
            "p99 ≤ 2×",
        ),
    ])
}

/// The cancellation flood's rows: how many hashing threads ever ran at once.
pub async fn cancellation_flood(
    channel: &Channel,
    user: &TestUser,
    threads: &[PathBuf],
    (tasks, deadline, duration): (usize, Duration, Duration),
) -> Vec<Row> {
    let sampler = Sampler::start(threads.to_vec());
    let outcomes: Outcomes =
        floods::cancellation_flood(channel, user, tasks, deadline, duration).await;
    let (most_running, samples) = sampler.finish();
    vec![
        note(
            format!(
                "cancellation flood: {tasks} tasks × {} s, {} ms deadlines",
                duration.as_secs(),
                deadline.as_millis()
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
        row(
            "**argon2 jobs running at most** (hash-worker threads in state R)",
            format!("{} workers", threads.len()),
            format!("**{most_running}** ({samples} samples, ~1 ms apart)"),
            "—",
            "≤ workers",
        ),
    ]
}
