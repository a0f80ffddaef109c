//! WatchRevocations streams that never read, against the auth-service binary as a process (so
//! its resident memory is its own): with 10,000 revocations in the log, 2,000 such streams
//! cost the service at most 64 MiB, Login and Logout keep answering (their latency beside
//! the quiet figures is printed, not asserted: the machine is shared), and closing the
//! streams frees their slots. Needs the binaries: `cargo build --workspace --bins`.
//!
//! `DYNAGATE_IDLE_WATCHERS` sets the number of streams (default 2,000), for measuring.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use auth_service::revocations::{Revocation, RevocationTable};
use common::proto::auth::v1::{
    LogoutRequest, WatchRevocationsRequest, WatchRevocationsResponse,
    auth_service_client::AuthServiceClient,
};
use futures::StreamExt;
use tests::{
    auth::TestUser,
    dynamodb_client,
    emulators::Emulator,
    eventually,
    process::{ServiceProcess, aws_env, http_get, owned_env},
    unique_prefix,
};
use tonic::{Streaming, transport::Channel};

const REVOCATIONS: usize = 10_000;
const DEFAULT_WATCHERS: usize = 2_000;
/// Streams per connection: below any server's concurrent-stream limit.
const STREAMS_PER_CONNECTION: usize = 100;
/// Calls timed for each latency figure.
const TIMED_CALLS: usize = 30;
const RSS_LIMIT_MIB: f64 = 64.0;

/// Writes `count` revocations made over the last few minutes straight into `table`.
async fn fill(table: &RevocationTable, count: usize) {
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let revocations = (0..count).map(|n| {
        let revoked_at_ms = now_ms - 180_000 + i64::try_from(n).expect("small") * 17;
        Revocation {
            session_id: uuid::Uuid::new_v4().to_string(),
            user_id: Some(uuid::Uuid::new_v4().to_string()),
            revoked_at_ms,
            not_after: revoked_at_ms / 1000 + 960,
        }
    });
    let mut puts = futures::stream::iter(revocations)
        .map(|revocation| async move { table.put(&revocation).await })
        .buffer_unordered(16);
    while let Some(put) = puts.next().await {
        put.expect("put a revocation");
    }
}

/// The samples of the service's metrics page, by series.
async fn scrape(process: &ServiceProcess) -> HashMap<String, f64> {
    let (status, text) = http_get(process.metrics_addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_owned(), value.parse().ok()?)))
        .collect()
}

async fn cache_entries(process: &ServiceProcess, cache: &str) -> Option<f64> {
    let series = format!("dynagate_cache_entries{{cache=\"{cache}\"}}");
    scrape(process).await.get(&series).copied()
}

/// A connection whose windows stay at HTTP/2's 64 KiB: a client that never reads holds
/// that much of the service's output, and the rest stays with the service.
async fn stingy_client(url: &str) -> AuthServiceClient<Channel> {
    let channel = Channel::from_shared(url.to_owned())
        .expect("a valid url")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect");
    AuthServiceClient::new(channel)
}

/// Median and maximum of `TIMED_CALLS` Logins and of as many Logouts.
async fn latencies(client: &mut AuthServiceClient<Channel>, user: &TestUser) -> [Duration; 4] {
    let (mut logins, mut logouts) = (Vec::new(), Vec::new());
    for _ in 0..TIMED_CALLS {
        let started = Instant::now();
        let login = user.login(client).await;
        logins.push(started.elapsed());
        let started = Instant::now();
        client
            .logout(LogoutRequest {
                refresh_token: login.refresh_token,
            })
            .await
            .expect("Logout");
        logouts.push(started.elapsed());
    }
    logins.sort();
    logouts.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let max = |v: &[Duration]| v[v.len() - 1];
    [
        median(&logins),
        max(&logins),
        median(&logouts),
        max(&logouts),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watchers_of_a_large_log_cost_the_service_little() {
    let watchers = std::env::var("DYNAGATE_IDLE_WATCHERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_WATCHERS);
    let dynalite = Emulator::shared_dynalite().await.endpoint();
    let prefix = unique_prefix();
    let table = RevocationTable::new(dynamodb_client(&dynalite), format!("{prefix}-revocations"));
    table.create_table().await.expect("create the table");
    fill(&table, REVOCATIONS).await;

    let env: Vec<_> = aws_env(&dynalite, None)
        .into_iter()
        .chain(owned_env(&[
            ("DYNAGATE_USERS_TABLE", format!("{prefix}-users")),
            ("DYNAGATE_SESSIONS_TABLE", format!("{prefix}-sessions")),
            ("DYNAGATE_ATTEMPTS_TABLE", format!("{prefix}-attempts")),
            (
                "DYNAGATE_REVOCATIONS_TABLE",
                format!("{prefix}-revocations"),
            ),
            ("DYNAGATE_DEV_EPHEMERAL_SIGNING_KEY", "true".into()),
            ("DYNAGATE_ARGON2_MEMORY_KIB", "256".into()),
            ("DYNAGATE_ARGON2_ITERATIONS", "1".into()),
            ("DYNAGATE_THROTTLE_PER_SECOND", "0".into()),
            (
                "DYNAGATE_MAX_REVOCATION_WATCHERS",
                (watchers + 100).to_string(),
            ),
            ("DYNAGATE_WATCH_SEND_TIMEOUT_MS", "600000".into()),
        ]))
        .collect();
    let auth = ServiceProcess::start_binary(
        &tests::process::binary("auth-service").expect("the binary"),
        &env,
    )
    .expect("start the auth-service");
    let loaded = eventually(Duration::from_secs(60), || async {
        cache_entries(&auth, "revocation_log").await == Some(REVOCATIONS as f64)
    })
    .await;
    assert!(loaded, "the service loaded the revocations");

    let mut client = AuthServiceClient::connect(auth.url())
        .await
        .expect("connect");
    let user = TestUser::register(&mut client).await;
    latencies(&mut client, &user).await; // warm-up
    let quiet = latencies(&mut client, &user).await;
    let rss_before = auth.memory_mib().expect("RSS").0;

    let mut streams: Vec<Streaming<WatchRevocationsResponse>> = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..watchers.div_ceil(STREAMS_PER_CONNECTION) {
        connections.push(stingy_client(&auth.url()).await);
    }
    let opened = futures::stream::iter(0..watchers)
        .map(|n| {
            let mut client = connections[n / STREAMS_PER_CONNECTION].clone();
            async move {
                client
                    .watch_revocations(WatchRevocationsRequest::default())
                    .await
                    .expect("WatchRevocations")
                    .into_inner()
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    streams.extend(opened);
    // Let the service push what the windows take and settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_open = auth.memory_mib().expect("RSS").0;
    let busy = latencies(&mut client, &user).await;
    let grown = rss_open - rss_before;
    println!(
        "{watchers} idle watchers of {REVOCATIONS} revocations: RSS {rss_before:.1} → \
         {rss_open:.1} MiB (+{grown:.1} MiB, {:.1} KiB each)",
        grown * 1024.0 / watchers as f64
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "Login median/max {:.1}/{:.1} ms quiet, {:.1}/{:.1} ms with the watchers ({:.2}×)",
        ms(quiet[0]),
        ms(quiet[1]),
        ms(busy[0]),
        ms(busy[1]),
        ms(busy[0]) / ms(quiet[0])
    );
    println!(
        "Logout median/max {:.1}/{:.1} ms quiet, {:.1}/{:.1} ms with the watchers ({:.2}×)",
        ms(quiet[2]),
        ms(quiet[3]),
        ms(busy[2]),
        ms(busy[3]),
        ms(busy[2]) / ms(quiet[2])
    );
    assert!(
        grown <= RSS_LIMIT_MIB,
        "{watchers} idle watchers grew the service by {grown:.1} MiB"
    );
    assert_eq!(
        cache_entries(&auth, "revocation_watchers").await,
        Some(watchers as f64),
        "every stream is open and counted"
    );

    drop(streams);
    drop(connections);
    let freed = eventually(Duration::from_secs(30), || async {
        cache_entries(&auth, "revocation_watchers").await == Some(0.0)
    })
    .await;
    assert!(freed, "closed streams leave no subscriber behind");
    auth.stop().expect("a clean stop");
}
