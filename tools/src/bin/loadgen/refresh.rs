//! Refresh loops: each user rotates its refresh token again and again; the auth-service's CPU
//! time over the run divided by the refreshes it answered.

use std::time::{Duration, Instant};

use anyhow::Context;
use common::proto::auth::v1::auth_service_client::AuthServiceClient;
use tests::auth::{TestUser, refresh};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use tests::process::ServiceProcess as Service;
use tools::cpu::CpuUse;

use crate::report::{Row, millis, row, times};

/// Keycloak's sizing guide: one vCPU per 120 refreshes per second.
const KEYCLOAK_PER_REFRESH: Duration = Duration::from_micros(8_333);

/// The row: CPU per Refresh against Keycloak's sizing.
pub async fn cpu_per_refresh(
    service: &Service,
    channel: &Channel,
    users: &[TestUser],
    duration: Duration,
) -> anyhow::Result<Row> {
    let mut tokens = Vec::new();
    let mut client = AuthServiceClient::new(channel.clone());
    for user in users {
        tokens.push(user.login(&mut client).await.refresh_token);
    }
    let before = service.cpu_time()?;
    let until = Instant::now() + duration;
    let mut loops = JoinSet::new();
    for token in tokens {
        let mut client = AuthServiceClient::new(channel.clone());
        loops.spawn(async move {
            let (mut token, mut ok, mut failed) = (token, 0_u64, 0_u64);
            while Instant::now() < until {
                match refresh(&mut client, &token).await {
                    Ok(answer) => {
                        token = answer.refresh_token;
                        ok += 1;
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(counts) = loops.join_next().await {
        let (done, lost) = counts.context("a refresh loop")?;
        ok += done;
        failed += lost;
    }
    let cpu = service.cpu_time()? - before;
    let per_refresh = cpu / u32::try_from(ok.max(1)).unwrap_or(u32::MAX);
    Ok(row(
        format!(
            "**auth CPU per Refresh** ({} loops × {} s)",
            users.len(),
            duration.as_secs()
        ),
        format!(
            "Keycloak's sizing (1 vCPU per 120 refreshes/s) {}",
            millis(KEYCLOAK_PER_REFRESH)
        ),
        format!(
            "**{}** ({ok} refreshes, {:.0}/s, {failed} failed)",
            millis(per_refresh),
            ok as f64 / duration.as_secs_f64()
        ),
        times(per_refresh.as_secs_f64() / KEYCLOAK_PER_REFRESH.as_secs_f64()),
        "≤ 0.4 ms",
    ))
}
