//! WatchRevocations bounded whatever watchers do. Against the auth-service binary as a process
//! (so its resident memory is its own): with 10,000 revocations in the log, 2,000 streams that
//! never read cost the service at most 64 MiB, Login and Logout keep answering (their latency
//! beside the quiet figures is printed, not asserted: the machine is shared), and closing the
//! streams frees their slots. In process: watcher 1,025 is refused with RetryInfo, a stream
//! whose reader stops reading is ended after the send timeout and frees its slot, and closed
//! streams give back their share of the log. The process test needs the binaries: `cargo build
//! --workspace --bins`; `DYNAGATE_IDLE_WATCHERS` sets its number of streams (default 2,000).

use std::{
    collections::HashMap,
    future::Future,
    time::{Duration, Instant},
};

use auth_service::{
    revocations::{Revocation, RevocationTable},
    sessions::RevokeReason,
};
use common::proto::auth::v1::{
    LogoutRequest, WatchRevocationsRequest, WatchRevocationsResponse,
    auth_service_client::AuthServiceClient,
};
use futures::StreamExt;
use tests::{
    auth::{Endpoints, TestAuth, TestUser},
    dynamodb_client,
    emulators::Emulator,
    eventually,
    process::{ServiceProcess, aws_env, http_get, owned_env},
    unique_prefix,
};
use tonic::{Code, Streaming, transport::Channel};
use tonic_types::StatusExt;

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
            // No user: nothing for a replica to repair (no such session exists).
            user_id: None,
            revoked_at_ms,
            not_after: revoked_at_ms / 1000 + 960,
        }
    });
    let mut puts = futures::stream::iter(revocations)
        .map(|revocation| async move { table.put(&revocation, RevokeReason::Logout).await })
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

/// Adds `count` revocations made now to `auth`'s log, as its own Logouts would.
fn announce(auth: &TestAuth, count: usize) {
    let hub = &auth.revocations;
    for _ in 0..count {
        hub.add(Revocation {
            session_id: uuid::Uuid::new_v4().to_string(),
            user_id: Some(uuid::Uuid::new_v4().to_string()),
            revoked_at_ms: hub.now_ms(),
            not_after: hub.now_secs() + 900,
        });
    }
}

/// Opens `count` streams, at most [`STREAMS_PER_CONNECTION`] on each of as many connections
/// from `connect`; none is read.
async fn open_streams<F, Fut>(count: usize, connect: F) -> Vec<Streaming<WatchRevocationsResponse>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = AuthServiceClient<Channel>>,
{
    let mut connections = Vec::new();
    for _ in 0..count.div_ceil(STREAMS_PER_CONNECTION) {
        connections.push(connect().await);
    }
    futures::stream::iter(0..count)
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
        .collect()
        .await
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

    let url = auth.url();
    let streams = open_streams(watchers, || stingy_client(&url)).await;
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
    let freed = eventually(Duration::from_secs(30), || async {
        cache_entries(&auth, "revocation_watchers").await == Some(0.0)
    })
    .await;
    assert!(freed, "closed streams leave no subscriber behind");
    auth.stop().expect("a clean stop");
}

/// Reads `stream` to its end: the revocations it carried and how it ended.
async fn read_to_end(
    stream: &mut Streaming<WatchRevocationsResponse>,
) -> (usize, Option<tonic::Status>) {
    let mut revocations = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(message))) => revocations += message.revocations.len(),
            Ok(Ok(None)) => return (revocations, None),
            Ok(Err(status)) => return (revocations, Some(status)),
            Err(_) => panic!("the stream neither sent nor ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_beyond_the_maximum_is_refused_with_retry_info() {
    let auth = TestAuth::spawn().await;
    assert_eq!(auth.settings.revocations.max_watchers, 1024, "the default");
    let mut streams = open_streams(1024, || auth.client()).await;
    assert_eq!(auth.revocations.subscribers(), 1024);

    let refused = auth
        .client()
        .await
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .expect_err("watcher 1025");

    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let retry = refused.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.is_some_and(|delay| !delay.is_zero()));
    drop(streams.pop());
    let freed = eventually(Duration::from_secs(10), || async {
        auth.revocations.subscribers() == 1023
    })
    .await;
    assert!(freed, "a closed stream frees its slot");
    let mut again = auth.client().await;
    let mut stream = again
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .expect("a slot is free again")
        .into_inner();
    let first = stream.message().await.expect("a message").expect("open");
    assert!(first.replay_complete, "an empty replay");
}

#[tokio::test]
async fn a_stream_whose_reader_stops_reading_is_ended_and_frees_its_slot() {
    let mut settings = TestAuth::settings();
    settings.revocations.send_timeout_ms = 300;
    settings.revocations.max_watchers = 1;
    let auth = TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await;
    // About 300 KB of replay: far more than a 64 KiB window takes.
    announce(&auth, 3_000);
    let mut stalled = stingy_client(&format!("http://{}", auth.addr))
        .await
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .expect("WatchRevocations")
        .into_inner();

    // Nothing read: the stream is ended after the send timeout, unpolled.
    let ended = eventually(Duration::from_secs(10), || async {
        auth.revocations.subscribers() == 0
    })
    .await;
    assert!(ended, "the stalled stream still holds its subscription");

    let mut reader = auth
        .client()
        .await
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .expect("the only slot is free again")
        .into_inner();
    let mut replayed = 0;
    loop {
        let message = reader.message().await.expect("healthy").expect("open");
        replayed += message.revocations.len();
        if message.replay_complete {
            break;
        }
    }
    assert_eq!(replayed, 3_000, "a reader that reads gets everything");
    let (received, status) = read_to_end(&mut stalled).await;
    assert!(
        received < 3_000,
        "{received} revocations reached the stalled reader"
    );
    let status = status.expect("ended with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn closed_streams_give_back_their_share_of_the_log() {
    let auth = TestAuth::spawn().await;
    announce(&auth, 1_000);
    let hub = &auth.revocations;
    let alone = hub.snapshot_refs();
    let mut client = auth.client().await;
    let mut streams = Vec::new();
    for n in 0..50 {
        let mut stream = client
            .watch_revocations(WatchRevocationsRequest::default())
            .await
            .expect("WatchRevocations")
            .into_inner();
        if n % 2 == 0 {
            while !stream.message().await.unwrap().unwrap().replay_complete {}
        }
        streams.push(stream);
    }
    assert_eq!(hub.subscribers(), 50);
    assert_eq!(
        hub.snapshot_refs(),
        alone + 50,
        "one shared snapshot, no copies"
    );

    drop(streams);

    let freed = eventually(Duration::from_secs(10), || async {
        hub.subscribers() == 0 && hub.snapshot_refs() == alone
    })
    .await;
    assert!(
        freed,
        "{} subscribers, {} snapshot holders",
        hub.subscribers(),
        hub.snapshot_refs()
    );
}
