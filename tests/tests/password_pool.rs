//! The password hashing pool through the gRPC API, against dynalite: however clients cancel
//! their calls, at most `--hash-workers` argon2 jobs run and at most `--hash-queue` wait.

use std::time::Duration;

use auth_service::config::Settings;
use common::proto::auth::v1::{LoginRequest, auth_service_client::AuthServiceClient};
use tests::auth::{Endpoints, TestAuth, TestUser, hopeless_login};
use tokio::task::JoinSet;
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

/// A cost that takes several milliseconds, longer than the flood's deadlines, so a job
/// outlives the call that asked for it.
fn slow_hashing(workers: usize, queue: usize) -> Settings {
    let mut settings = TestAuth::settings();
    settings.argon2_memory_kib = 8192;
    settings.argon2_iterations = 3;
    settings.hash_workers = workers;
    settings.hash_queue = queue;
    // These floods measure the pool: a lockout would refuse them before any hashing.
    settings.lockout.threshold = 0;
    settings
}

/// `tasks` concurrent loops of `rounds` Logins each, every one with a 1–5 ms deadline,
/// half for a real user, half for a malformed name (no table lookup: straight to argon2).
/// Returns how many were sent.
async fn cancellation_flood(channel: &Channel, user: &TestUser, tasks: u64, rounds: u64) -> u64 {
    let mut flood = JoinSet::new();
    for task in 0..tasks {
        let mut client = AuthServiceClient::new(channel.clone());
        let username = user.username.clone();
        flood.spawn(async move {
            for round in 0..rounds {
                let deadline = Duration::from_millis(1 + (task + round) % 5);
                if let Err(status) = client
                    .login(hopeless_login(&username, round, deadline))
                    .await
                {
                    // A call the server ends at its deadline while the client still sends
                    // may fail on the client's side as a transport error: not the service's.
                    let transport =
                        status.code() == Code::Unknown && status.message() == "transport error";
                    assert!(
                        status.code() != Code::Internal
                            && (status.code() != Code::Unknown || transport),
                        "{status:?}"
                    );
                }
            }
        });
    }
    while let Some(task) = flood.join_next().await {
        task.expect("flood task");
    }
    tasks * rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_logins_never_run_more_hashes_than_there_are_workers() {
    let auth = TestAuth::spawn_with(slow_hashing(1, 8), Endpoints::dynalite_only().await).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let channel = auth.channel().await;

    let mut requests = 0;
    for _ in 0..3 {
        requests += cancellation_flood(&channel, &user, 32, 10).await;
    }

    let metrics = &auth.metrics;
    assert_eq!(
        metrics.hash_jobs_running.peak(),
        1,
        "argon2 jobs ran at once"
    );
    assert!(metrics.hash_jobs_queued.peak() <= 8, "queue over its bound");
    assert!(
        metrics.password_verifications.get() < requests,
        "{} verifications for {requests} cancelled logins",
        metrics.password_verifications.get()
    );
    let idle = tests::eventually(Duration::from_secs(10), || async {
        metrics.hash_jobs_queued.get() == 0 && metrics.hash_jobs_running.get() == 0
    })
    .await;
    assert!(idle, "the pool drains its abandoned jobs");
    // Read once the pool is idle: the worker (at idle priority) may still be running the
    // flood's first job when the last call ends, and only then reaches the abandoned ones.
    assert!(
        metrics.hash_jobs_skipped.get() > 0,
        "no cancelled job was skipped"
    );
    let login = user.login(&mut client).await;
    assert_eq!(login.user_id, user.user_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_resource_exhausted_and_says_when_to_retry() {
    let auth = TestAuth::spawn_with(slow_hashing(1, 1), Endpoints::dynalite_only().await).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let channel = auth.channel().await;

    let logins = (0..16).map(|_| {
        let mut client = AuthServiceClient::new(channel.clone());
        let request = LoginRequest {
            username: user.username.clone(),
            password: user.password.clone(),
            ..Default::default()
        };
        async move { client.login(request).await }
    });
    let results = futures::future::join_all(logins).await;

    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        !refused.is_empty(),
        "16 logins at once on one worker and a queue of one"
    );
    assert!(refused.len() < results.len(), "at least one got the worker");
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.get_error_details().retry_info().is_some());
    }
    assert_eq!(auth.metrics.hash_jobs_rejected.get(), refused.len() as u64);
}

#[tokio::test]
async fn a_wrong_password_for_a_user_with_an_older_cheaper_hash_is_padded_like_an_unknown_user() {
    let settings = TestAuth::settings();
    let old = TestAuth::spawn_with(settings.clone(), Endpoints::dynalite_only().await).await;
    let user = TestUser::register(&mut old.client().await).await;
    old.stop().await;
    let mut dearer = slow_hashing(1, 8);
    (dearer.users_table, dearer.sessions_table) = (settings.users_table, settings.sessions_table);
    let auth = TestAuth::spawn_with(dearer, Endpoints::dynalite_only().await).await;
    let mut client = auth.client().await;
    let wrong = |username: &str| LoginRequest {
        username: username.to_owned(),
        password: "not the password".into(),
        ..Default::default()
    };

    let unknown = client
        .login(wrong("nobody-by-this-name"))
        .await
        .unwrap_err();
    let padded_for_unknown = auth.metrics.password_verifications_padded.get();
    let known = client.login(wrong(&user.username)).await.unwrap_err();

    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(known.code(), Code::Unauthenticated);
    assert_eq!(
        padded_for_unknown, 0,
        "the unknown user is checked at the current cost"
    );
    assert_eq!(auth.metrics.password_verifications_padded.get(), 1);
}
