//! DynamoDB calls per Login and per Refresh: 20 sequential calls of each (one user, a fresh
//! session per Login; one token chain for Refresh), the auth-service's
//! `dynagate_dynamodb_calls_total{operation}` read before and after each call, minus the
//! background over a quiet interval as long as the calls took together (the revocation
//! feed's poll, a Query about once a second). Table-level operations (health checks'
//! DescribeTable) are left out: no Login or Refresh sends one.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use common::proto::auth::v1::auth_service_client::AuthServiceClient;
use tests::auth::{TestUser, refresh};
use tonic::transport::Channel;

use crate::report::{Row, row};

/// Calls of each kind.
const CALLS: u32 = 20;

/// Calls so far, by operation.
type Counts = BTreeMap<String, f64>;

/// Table-level operations: no Login or Refresh sends one (health checks send DescribeTable
/// at their own times), so they are left out rather than subtracted.
const NOT_PER_CALL: [&str; 3] = ["DescribeTable", "CreateTable", "UpdateTimeToLive"];

/// The auth-service's `dynagate_dynamodb_calls_total`, by operation.
async fn counts(metrics: SocketAddr) -> anyhow::Result<Counts> {
    let (status, text) = tests::process::http_get(metrics, "/metrics").await;
    ensure!(status == 200, "GET /metrics on {metrics}: {status}");
    let mut counts = Counts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("dynagate_dynamodb_calls_total{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once(' ').context("a metric line")?;
        let operation = labels
            .split_once("operation=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or("?", |(operation, _)| operation);
        if NOT_PER_CALL.contains(&operation) {
            continue;
        }
        *counts.entry(operation.to_owned()).or_default() += value.parse::<f64>()?;
    }
    ensure!(
        !counts.is_empty(),
        "no dynagate_dynamodb_calls_total on {metrics}"
    );
    Ok(counts)
}

/// `after − before`, added into `total`.
fn add_change(total: &mut Counts, before: &Counts, after: &Counts) {
    for (operation, count) in after {
        let change = count - before.get(operation).copied().unwrap_or_default();
        *total.entry(operation.clone()).or_default() += change;
    }
}

/// What `CALLS` calls of one kind sent, by operation, with the background of the same length
/// subtracted: per call.
struct PerCall {
    per_operation: Counts,
    background: f64,
}

impl PerCall {
    fn total(&self) -> f64 {
        self.per_operation.values().sum()
    }

    fn describe(&self) -> String {
        let operations: Vec<String> = self
            .per_operation
            .iter()
            .filter(|(_, count)| count.abs() >= 0.005)
            .map(|(operation, count)| format!("{operation} {count:.2}"))
            .collect();
        format!(
            "**{:.2}** ({}; background subtracted: {:.0} calls over the same time, so ± 1 \
             poll in the windows reads ± {:.2})",
            self.total(),
            operations.join(", "),
            self.background,
            1.0 / f64::from(CALLS)
        )
    }
}

/// Runs `call` [`CALLS`] times, one at a time, counting around each; then counts a quiet
/// interval as long as the calls took and subtracts it.
async fn per_call(
    metrics: SocketAddr,
    mut call: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<PerCall> {
    let (mut sent, mut elapsed) = (Counts::new(), Duration::ZERO);
    for _ in 0..CALLS {
        let before = counts(metrics).await?;
        let started = Instant::now();
        call().await?;
        elapsed += started.elapsed();
        add_change(&mut sent, &before, &counts(metrics).await?);
    }
    let before = counts(metrics).await?;
    tokio::time::sleep(elapsed).await;
    let mut background = Counts::new();
    add_change(&mut background, &before, &counts(metrics).await?);
    let per_operation = sent
        .iter()
        .map(|(operation, count)| {
            let quiet = background.get(operation).copied().unwrap_or_default();
            (operation.clone(), (count - quiet) / f64::from(CALLS))
        })
        .collect();
    Ok(PerCall {
        per_operation,
        background: background.values().sum(),
    })
}

/// The rows: DynamoDB calls per Login and per Refresh.
pub async fn per_login_and_refresh(
    channel: &Channel,
    metrics: SocketAddr,
    user: &TestUser,
) -> anyhow::Result<Vec<Row>> {
    let mut client = AuthServiceClient::new(channel.clone());
    let logins = per_call(metrics, async || {
        user.login(&mut client).await;
        Ok(())
    })
    .await?;
    // Each refresh presents the token the one before it got: one chain, rotated honestly.
    let mut token = user.login(&mut client).await.refresh_token;
    let refreshes = per_call(metrics, async || {
        token = refresh(&mut client, &token)
            .await
            .context("Refresh")?
            .refresh_token;
        Ok(())
    })
    .await?;
    Ok(vec![
        calls_row(
            "Login",
            "fresh sessions, one user, below the session cap; the bench runs the lockout off, \
             and on it adds its count and its reset: 2 more, tests/tests/login_round_trips.rs",
            &logins,
            "≤ 4",
        ),
        calls_row(
            "Refresh",
            "one token chain",
            &refreshes,
            "exactly 1 per honest rotation",
        ),
    ])
}

fn calls_row(kind: &str, how: &str, per_call: &PerCall, target: &str) -> Row {
    row(
        format!(
            "**DynamoDB calls per {kind}** ({CALLS} sequential, {how}; the auth-service's \
             dynagate_dynamodb_calls_total by operation around each call, minus the background \
             (the revocation poll) over a quiet interval as long; DescribeTable left out)"
        ),
        "—",
        per_call.describe(),
        "—",
        target,
    )
}
