//! How fast an ended session stops working on every data-service, and what the revocation
//! check costs the data path: two auth-service and two data-service replicas in this process
//! (release build, real gRPC over loopback, dynalite and moto as for the tests), with the
//! auth-service's production feed timing (poll 1 s, heartbeat 2 s).
//!
//! - **Propagation**: a new user logs in on a random auth replica, both data replicas accept
//!   the access token, then a Logout on a random auth replica; each data replica is asked every
//!   2 ms until it refuses the token. Measured from the Logout's answer to the first refusal,
//!   once per data replica per revocation, in two layouts: each data replica watching **both**
//!   auth replicas (the documented deployment: the replica that ended the session pushes it at
//!   once), and each watching **one** (a revocation made on the other auth replica then travels
//!   through DynamoDB and the watched replica's poll; the Logouts are spread over the poll
//!   interval at random, as real ones are).
//! - **Data path**: sequential GetItem of one item, p50, on a data replica with the feed on
//!   (holding `--preload` revocations) and on one with it off (`--revocation-max-staleness 0`),
//!   in alternating rounds so that drift on a shared machine hits both alike.
//!
//! Run: `cargo build --release -p tests --bin revbench && target/release/revbench --out rev.md`.
//! Needs dynalite and moto from `scripts/install-tools`. Prints a markdown table.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use auth_service::revocations::Revocation;
use clap::Parser;
use common::proto::{
    auth::v1::{LogoutRequest, auth_service_client::AuthServiceClient},
    data::v1::{GetItemRequest, data_service_client::DataServiceClient},
};
use rand::Rng;
use tests::{
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    data::{SignedIn, TestData},
    replicas::probe,
    unique_prefix,
};
use tonic::{Code, transport::Channel};

/// Revocation bench.
#[derive(Parser, Debug)]
struct Args {
    /// Sessions ended per layout.
    #[arg(long, default_value_t = 200)]
    revocations: usize,
    /// Revocations the feed-on data replica holds during the data-path rounds.
    #[arg(long, default_value_t = 10_000)]
    preload: usize,
    /// Alternating data-path rounds (each data replica gets as many).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Sequential GetItem calls per data replica per round.
    #[arg(long, default_value_t = 500)]
    calls: usize,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// How often a data replica is asked whether it still accepts a revoked token.
const ASK_EVERY: Duration = Duration::from_millis(2);

/// A token still accepted this long after its Logout fails the bench.
const GIVE_UP: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endpoints = Endpoints::shared().await;
    let items_table = format!("{}-items", unique_prefix());
    let mut settings = TestAuth::settings_with_vending();
    settings.items_table_arn = Some(format!(
        "arn:aws:dynamodb:us-east-1:123456789012:table/{items_table}"
    ));
    // The production timing, not the tests' quicker one.
    settings.revocations.poll_ms = 1000;
    settings.revocations.heartbeat_ms = 2000;
    let first = TestAuth::spawn_with(settings, endpoints.clone()).await;
    let second = first.spawn_replica().await;
    let auth = [&first, &second];
    let url = |replica: &TestAuth| format!("http://{}", replica.addr);
    let mut rows = Vec::new();

    let both = vec![url(&first), url(&second)];
    let data = [
        spawn_data(&items_table, &endpoints, both.clone(), 30).await,
        spawn_data(&items_table, &endpoints, both, 30).await,
    ];
    let samples = propagation(&auth, &data, args.revocations, Duration::ZERO).await?;
    let all: Vec<_> = samples.iter().map(|s| s.latency).collect();
    rows.push((
        "propagation, each data replica watching both auth replicas".to_owned(),
        describe(all),
    ));
    for replica in data {
        replica.stop().await;
    }

    let data = [
        spawn_data(&items_table, &endpoints, vec![url(&first)], 30).await,
        spawn_data(&items_table, &endpoints, vec![url(&second)], 30).await,
    ];
    let poll = Duration::from_millis(first.settings.revocations.poll_ms);
    let samples = propagation(&auth, &data, args.revocations, poll).await?;
    let (direct, polled): (Vec<_>, Vec<_>) = samples.iter().partition(|s| s.revoker == s.data);
    rows.push((
        "propagation, each data replica watching one auth replica: revoked on the watched one"
            .to_owned(),
        describe(direct.iter().map(|s| s.latency).collect()),
    ));
    rows.push((
        "… revoked on the other one (through DynamoDB and the poll)".to_owned(),
        describe(polled.iter().map(|s| s.latency).collect()),
    ));
    let [feed_on, other] = data;
    other.stop().await;

    let feed_off = spawn_data(&items_table, &endpoints, vec![url(&first)], 0).await;
    preload(&first, args.preload);
    // Let the stream carry the preload to the feed-on replica.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (on, off) = data_path(&first, &feed_on, &feed_off, &args).await?;
    rows.push((
        format!(
            "GetItem p50, sequential, feed on ({} revocations held)",
            args.preload
        ),
        format!("{} µs", on.as_micros()),
    ));
    rows.push((
        "GetItem p50, sequential, feed off".to_owned(),
        format!("{} µs", off.as_micros()),
    ));
    rows.push((
        "**feed on vs off**".to_owned(),
        format!("**{:.2}×**", on.as_secs_f64() / off.as_secs_f64()),
    ));

    let mut table = format!(
        "2 auth-service + 2 data-service replicas in one process (release), auth poll {} ms, \
         {} revocations per layout, {} cores\n\n| measure | value |\n|---|---|\n",
        first.settings.revocations.poll_ms,
        args.revocations,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    for (measure, value) in rows {
        table.push_str(&format!("| {measure} | {value} |\n"));
    }
    println!("{table}");
    if let Some(path) = args.out {
        std::fs::write(&path, table).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A data-service on the shared items table watching `auth_urls`, with the feed's maximum
/// staleness `max_staleness` (0: off).
async fn spawn_data(
    items_table: &str,
    endpoints: &Endpoints,
    auth_urls: Vec<String>,
    max_staleness: u64,
) -> TestData {
    let mut settings = TestData::settings(items_table, "127.0.0.1:1".parse().expect("address"));
    settings.auth_url = auth_urls;
    settings.revocation_max_staleness = max_staleness;
    TestData::spawn_with(settings, &endpoints.dynamodb, true).await
}

/// One revocation seen by one data replica.
struct Sample {
    /// The auth replica that ended the session.
    revoker: usize,
    /// The data replica that refused the token.
    data: usize,
    /// From the Logout's answer to the first refusal.
    latency: Duration,
}

/// Ends `count` sessions, each on a random auth replica after a random pause of up to
/// `jitter`, and times each data replica's refusal. The pause keeps the revocations from
/// falling into step with the auth replicas' polls (each iteration takes about as long as the
/// last, so without it every revocation would land just after a poll, or just before one).
async fn propagation(
    auth: &[&TestAuth; 2],
    data: &[TestData; 2],
    count: usize,
    jitter: Duration,
) -> anyhow::Result<Vec<Sample>> {
    let mut auth_clients = [auth[0].client().await, auth[1].client().await];
    let data_clients = [data[0].client().await, data[1].client().await];
    let mut samples = Vec::with_capacity(count * 2);
    for _ in 0..count {
        let (login_on, revoker, pause) = {
            let mut rng = rand::rng();
            let pause = jitter.mul_f64(rng.random_range(0.0..1.0));
            (rng.random_range(0..2), rng.random_range(0..2), pause)
        };
        let user = TestUser::register(&mut auth_clients[login_on]).await;
        let session = user.login(&mut auth_clients[login_on]).await;
        for client in &data_clients {
            let status = probe(&mut client.clone(), &session.access_token).await;
            ensure!(
                status != Code::Unauthenticated,
                "a live token was refused before its Logout"
            );
        }
        tokio::time::sleep(pause).await;
        logout(&mut auth_clients[revoker], &session.refresh_token).await?;
        let since = Instant::now();
        let refusals = data_clients
            .iter()
            .map(|client| refused(client.clone(), &session.access_token, since));
        let latencies = futures_join(refusals).await?;
        for (data, latency) in latencies.into_iter().enumerate() {
            samples.push(Sample {
                revoker,
                data,
                latency,
            });
        }
    }
    Ok(samples)
}

/// Awaits both futures at once.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> anyhow::Result<Vec<Duration>>
where
    F: Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await??);
    }
    Ok(out)
}

async fn logout(
    client: &mut AuthServiceClient<Channel>,
    refresh_token: &str,
) -> anyhow::Result<()> {
    client
        .logout(LogoutRequest {
            refresh_token: refresh_token.to_owned(),
        })
        .await
        .context("Logout")?;
    Ok(())
}

/// How long after `since` the data replica first refuses `token`.
fn refused(
    client: DataServiceClient<Channel>,
    token: &str,
    since: Instant,
) -> impl Future<Output = anyhow::Result<Duration>> + Send + 'static {
    let token = token.to_owned();
    async move {
        loop {
            if probe(&mut client.clone(), &token).await == Code::Unauthenticated {
                return Ok(since.elapsed());
            }
            if since.elapsed() > GIVE_UP {
                bail!("a revoked token was still accepted after {GIVE_UP:?}");
            }
            tokio::time::sleep(ASK_EVERY).await;
        }
    }
}

/// Puts `count` revocations of random session ids into `auth`'s hub, from where its watchers
/// stream them: the size of set a busy deployment holds.
fn preload(auth: &TestAuth, count: usize) {
    let hub = &auth.revocations;
    let now_ms = hub.now_ms();
    for _ in 0..count {
        hub.add(Revocation {
            session_id: uuid::Uuid::new_v4().to_string(),
            user_id: Some(uuid::Uuid::new_v4().to_string()),
            revoked_at_ms: now_ms,
            not_after: now_ms / 1000 + 3600,
        });
    }
}

/// GetItem p50 on `on` and on `off`, in alternating rounds.
async fn data_path(
    auth: &TestAuth,
    on: &TestData,
    off: &TestData,
    args: &Args,
) -> anyhow::Result<(Duration, Duration)> {
    let mut auth_client = auth.client().await;
    let user = TestUser::register(&mut auth_client).await;
    let token = user.login(&mut auth_client).await.access_token;
    let mut writer = SignedIn {
        user,
        token: token.clone(),
        client: on.client().await,
    };
    writer.put_text("bench", "a small item").await;
    let clients = [on.client().await, off.client().await];
    let mut latencies = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        // Alternate which replica goes first.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            for _ in 0..args.calls {
                let request = with_bearer(
                    GetItemRequest {
                        key: "bench".into(),
                        ..Default::default()
                    },
                    &token,
                );
                let started = Instant::now();
                clients[which]
                    .clone()
                    .get_item(request)
                    .await
                    .context("GetItem")?;
                latencies[which].push(started.elapsed());
            }
        }
    }
    let [on, off] = latencies.map(|mut all| {
        all.sort();
        all[all.len() / 2]
    });
    Ok((on, off))
}

/// `p50 … ms, p99 … ms, max … ms (n)` of `latencies`.
fn describe(mut latencies: Vec<Duration>) -> String {
    if latencies.is_empty() {
        return "no samples".to_owned();
    }
    latencies.sort();
    let at = |p: f64| {
        let rank = (p * (latencies.len() - 1) as f64).round() as usize;
        latencies[rank].as_secs_f64() * 1e3
    };
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} refusals)",
        at(0.5),
        at(0.99),
        at(1.0),
        latencies.len()
    )
}
