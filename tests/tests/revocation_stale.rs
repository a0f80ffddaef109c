//! A replica that cannot read the revocations table keeps no verifier fresh. Two auth replicas
//! on one table set, B reaching DynamoDB through a [`Gate`] the test cuts; a data-service
//! watching both (A through a [`FeedProxy`], so the test can also take A's feed away). While
//! A's feed flows, the data-service hears A's revocations from A, B's silence costs nothing;
//! once only B is left, the data-service stops trusting tokens within its maximum staleness
//! and stays so however often it reconnects to B (B refuses new watches, and every message
//! says how old B's view is), until B reads the table again and replays what it missed.

use std::time::Duration;

use common::proto::auth::v1::{
    LoginResponse, LogoutRequest, WatchRevocationsRequest, auth_service_client::AuthServiceClient,
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser},
    data::TestData,
    emulators::Emulator,
    eventually,
    feed_proxy::FeedProxy,
    gate::Gate,
    replicas::probe,
    unique_prefix,
};
use tonic::{Code, transport::Channel};

/// The data-service's `--revocation-max-staleness`, short so the test is.
const MAX_STALENESS_SECS: u64 = 5;
/// Longer than the data-service's idle timeout (6 s) plus B's wait before refusing a watch
/// (5 s): the data-service tries B again within it.
const RECONNECT_CYCLE: Duration = Duration::from_secs(15);

async fn logout(client: &mut AuthServiceClient<Channel>, login: &LoginResponse) {
    client
        .logout(LogoutRequest {
            refresh_token: login.refresh_token.clone(),
        })
        .await
        .expect("Logout");
}

/// Waits until `data` answers `code` for `token` (GetItem of a missing key: NOT_FOUND while
/// the token is trusted).
async fn answers(data: &TestData, token: &str, code: Code, limit: Duration) -> bool {
    let client = data.client().await;
    eventually(limit, || {
        let mut client = client.clone();
        async move { probe(&mut client, token).await == code }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_dynamodb_keeps_no_verifier_fresh_and_replays_when_back() {
    let endpoints = Endpoints::shared().await;
    let items_table = format!("{}-items", unique_prefix());
    let a = TestAuth::spawn_with(
        TestAuth::settings_for_items(&items_table),
        endpoints.clone(),
    )
    .await;
    let gate = Gate::open(Emulator::shared_dynalite().await.addr()).await;
    let mut b_settings = a.settings.clone();
    b_settings.listen_addr = "127.0.0.1:0".parse().expect("an address");
    let through_gate = Endpoints {
        dynamodb: format!("http://{}", gate.addr()),
        sts: endpoints.sts.clone(),
    };
    let b = TestAuth::spawn_with(b_settings, through_gate).await;
    let feed_a = FeedProxy::start(a.addr).await;
    let mut settings = TestData::settings(&items_table, a.addr);
    settings.auth_url = vec![feed_a.url(), format!("http://{}", b.addr)];
    settings.revocation_max_staleness = MAX_STALENESS_SECS;
    let data = TestData::spawn_with(settings, &endpoints.dynamodb, true).await;
    let mut on_a = a.client().await;
    // A user per session, each with credentials cached on the data-service, so a refusal can
    // only come from the feed: a data-service that fetches a user's credentials anew asks the
    // auth-service, which knows the session ended.
    let mut logins = Vec::new();
    for _ in 0..3 {
        let user = TestUser::register(&mut on_a).await;
        logins.push(user.login(&mut on_a).await);
    }
    let [first, second, third] = [&logins[0], &logins[1], &logins[2]];
    let limit = Duration::from_secs(10);
    for login in [first, second, third] {
        assert!(answers(&data, &login.access_token, Code::NotFound, limit).await);
    }

    // B loses DynamoDB: it refuses new watches, and A's feed still carries A's revocations.
    gate.cut();
    assert!(eventually(limit, || async { !b.revocations.is_current() }).await);
    let refused = b
        .client()
        .await
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .expect_err("a watch of a replica that cannot read the table");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    logout(&mut on_a, first).await;
    assert!(
        answers(&data, &first.access_token, Code::Unauthenticated, limit).await,
        "heard from A"
    );

    // Only B is left: what A revokes now, B cannot know, so tokens stop being trusted.
    feed_a.block_feed();
    logout(&mut on_a, second).await;
    let stale_within = Duration::from_secs(MAX_STALENESS_SECS) + Duration::from_secs(5);
    assert!(
        answers(&data, &second.access_token, Code::Unavailable, stale_within).await,
        "stale within the maximum staleness"
    );
    let mut client = data.client().await;
    let deadline = tokio::time::Instant::now() + RECONNECT_CYCLE;
    while tokio::time::Instant::now() < deadline {
        let code = probe(&mut client, &second.access_token).await;
        assert_eq!(
            code,
            Code::Unavailable,
            "kept fresh by a replica that cannot read"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // B reads the table again: it replays the revocation it missed, and trust returns.
    gate.restore().await;
    let recovery = Duration::from_secs(30);
    assert!(
        answers(&data, &second.access_token, Code::Unauthenticated, recovery).await,
        "B replayed what A revoked while B was cut off"
    );
    assert!(answers(&data, &third.access_token, Code::NotFound, limit).await);
    feed_a.unblock_feed();
}
