//! Revocation end to end, against dynalite and moto: two auth-service replicas and two
//! data-service replicas, each data replica holding one revocation stream per auth replica.
//! Whichever way a session ends (Logout, LogoutAll, reuse detection, RevokeSession,
//! ChangePassword), every data replica refuses its access tokens within 2 s, like any bad
//! token, while the user's other sessions keep working; a data replica started later, or one
//! whose streams were cut meanwhile, loses no revocation; a data replica that hears no feed
//! stops trusting tokens (UNAVAILABLE, NOT_SERVING) until it hears one again.
//!
//! Also what a data-service does without a feed it can trust: an auth-service that answers
//! WatchRevocations with UNIMPLEMENTED (one built before the feed, or the feed cut by
//! [`FeedProxy`]) never counts as current, so the data-service stays NOT_SERVING and answers
//! UNAVAILABLE with RetryInfo rather than trust tokens that may have been revoked.

use std::{sync::Arc, time::Duration};

use common::{
    clock::ManualClock,
    proto::{
        auth::v1::{
            ChangePasswordRequest, ListSessionsRequest, LoginResponse, LogoutAllRequest,
            LogoutRequest, RevokeSessionRequest, auth_service_client::AuthServiceClient,
        },
        data::v1::GetItemRequest,
    },
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, refresh, with_bearer},
    data::{TestData, TestStack},
    eventually,
    feed_proxy::FeedProxy,
    unique_prefix, wait_serving, wait_status,
};
use time::OffsetDateTime;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

/// How soon every data replica must refuse the token of an ended session.
const PROPAGATION: Duration = Duration::from_secs(2);

/// Two auth replicas and two data replicas on the same tables, and one user signed in twice.
struct Fleet {
    auth: Vec<TestAuth>,
    data: Vec<TestData>,
    endpoints: Endpoints,
    user: TestUser,
    /// The user's first session.
    a: LoginResponse,
    /// The user's second session.
    b: LoginResponse,
}

impl Fleet {
    async fn spawn() -> Self {
        let endpoints = Endpoints::shared().await;
        let items_table = format!("{}-items", unique_prefix());
        let settings = TestAuth::settings_for_items(&items_table);
        let first = TestAuth::spawn_with(settings, endpoints.clone()).await;
        let second = first.spawn_replica().await;
        let mut template = TestData::settings(&items_table, first.addr);
        template.auth_url = [&first, &second]
            .iter()
            .map(|auth| format!("http://{}", auth.addr))
            .collect();
        let mut data = Vec::new();
        for _ in 0..2 {
            data.push(TestData::spawn_with(template.clone(), &endpoints.dynamodb, true).await);
        }
        let mut client = first.client().await;
        let user = TestUser::register(&mut client).await;
        let (a, b) = (user.login(&mut client).await, user.login(&mut client).await);
        let fleet = Self {
            auth: vec![first, second],
            data,
            endpoints,
            user,
            a,
            b,
        };
        for token in [&fleet.a.access_token, &fleet.b.access_token] {
            fleet.accepted_everywhere(token).await;
        }
        fleet
    }

    /// A client of auth replica `i`.
    async fn auth(&self, i: usize) -> AuthServiceClient<Channel> {
        self.auth[i].client().await
    }

    /// Another data replica like the fleet's, watching the same auth replicas.
    async fn spawn_data(&self, wait: bool) -> TestData {
        let settings = self.data[0].settings.clone();
        TestData::spawn_with(settings, &self.endpoints.dynamodb, wait).await
    }

    /// Asserts every data replica accepts `token` (GetItem of a missing key: NOT_FOUND).
    async fn accepted_everywhere(&self, token: &str) {
        for data in &self.data {
            accepted(data, token).await;
        }
    }

    /// Asserts every data replica refuses `token`, like any bad token, within
    /// [`PROPAGATION`].
    async fn refused_everywhere(&self, token: &str) {
        for data in &self.data {
            refused_within(data, token, PROPAGATION).await;
        }
    }
}

/// GetItem of a key nobody wrote, as the holder of `token`.
async fn get(data: &TestData, token: &str) -> Result<(), Status> {
    let request = with_bearer(
        GetItemRequest {
            key: "never-written".into(),
            ..Default::default()
        },
        token,
    );
    data.client().await.get_item(request).await.map(|_| ())
}

/// Asserts `data` lets `token` through to the table.
async fn accepted(data: &TestData, token: &str) {
    let status = get(data, token).await.expect_err("no such item");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

/// Asserts `data` refuses `token` exactly as it refuses garbage, polling every 50 ms until
/// `limit` passes: whether it happens by then, not how fast.
async fn refused_within(data: &TestData, token: &str, limit: Duration) {
    let garbage = get(data, "v4.public.garbage").await.unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let answer = get(data, token).await;
        if let Err(status) = &answer
            && status.code() == Code::Unauthenticated
        {
            assert_eq!(status.message(), garbage.message(), "tells nothing more");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still answers {answer:?} after {limit:?}",
            data.addr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn logout(auth: &mut AuthServiceClient<Channel>, refresh_token: &str) {
    auth.logout(LogoutRequest {
        refresh_token: refresh_token.to_owned(),
    })
    .await
    .expect("Logout");
}

/// The session of `token` (its `sid`), as ListSessions marks it current.
async fn current_session(auth: &mut AuthServiceClient<Channel>, token: &str) -> String {
    let listed = auth
        .list_sessions(with_bearer(ListSessionsRequest {}, token))
        .await
        .expect("ListSessions")
        .into_inner();
    listed
        .sessions
        .into_iter()
        .find(|session| session.current)
        .expect("the caller's session is listed")
        .session_id
}

#[tokio::test]
async fn logout_on_one_auth_replica_is_refused_by_every_data_replica() {
    let fleet = Fleet::spawn().await;

    logout(&mut fleet.auth(0).await, &fleet.a.refresh_token).await;

    fleet.refused_everywhere(&fleet.a.access_token).await;
    fleet.accepted_everywhere(&fleet.b.access_token).await;
}

#[tokio::test]
async fn logout_all_on_the_other_auth_replica_ends_every_session_everywhere() {
    let fleet = Fleet::spawn().await;

    let ended = fleet
        .auth(1)
        .await
        .logout_all(with_bearer(LogoutAllRequest {}, &fleet.a.access_token))
        .await
        .expect("LogoutAll")
        .into_inner();

    assert_eq!(ended.sessions_revoked, 2);
    fleet.refused_everywhere(&fleet.a.access_token).await;
    fleet.refused_everywhere(&fleet.b.access_token).await;
}

#[tokio::test]
async fn a_reused_refresh_token_ends_its_session_everywhere() {
    let fleet = Fleet::spawn().await;
    let mut first = fleet.auth(0).await;
    // Two rotations retire the login's refresh token: presenting it again is reuse at once,
    // whatever the retry grace (which covers only the token rotated out last).
    let rotated = refresh(&mut first, &fleet.a.refresh_token).await.unwrap();
    let latest = refresh(&mut first, &rotated.refresh_token).await.unwrap();
    fleet.accepted_everywhere(&latest.access_token).await;

    let reuse = refresh(&mut fleet.auth(1).await, &fleet.a.refresh_token).await;

    assert_eq!(reuse.unwrap_err().code(), Code::Unauthenticated);
    for token in [
        &fleet.a.access_token,
        &rotated.access_token,
        &latest.access_token,
    ] {
        fleet.refused_everywhere(token).await;
    }
    fleet.accepted_everywhere(&fleet.b.access_token).await;
}

#[tokio::test]
async fn revoke_session_ends_a_listed_session_everywhere_and_never_another_users() {
    let fleet = Fleet::spawn().await;
    let mut first = fleet.auth(0).await;
    let listed = first
        .list_sessions(with_bearer(ListSessionsRequest {}, &fleet.b.access_token))
        .await
        .expect("ListSessions")
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), 2);
    let other = listed.iter().find(|s| !s.current).expect("session a");
    assert_eq!(
        other.session_id,
        current_session(&mut first, &fleet.a.access_token).await
    );

    fleet
        .auth(1)
        .await
        .revoke_session(with_bearer(
            RevokeSessionRequest {
                session_id: other.session_id.clone(),
            },
            &fleet.b.access_token,
        ))
        .await
        .expect("RevokeSession");

    fleet.refused_everywhere(&fleet.a.access_token).await;
    fleet.accepted_everywhere(&fleet.b.access_token).await;

    // Someone else's session is not the caller's to end, and is not even found.
    let stranger = TestUser::register(&mut first).await;
    let theirs = stranger.login(&mut first).await.access_token;
    let their_session = current_session(&mut first, &theirs).await;
    let refused = first
        .revoke_session(with_bearer(
            RevokeSessionRequest {
                session_id: their_session,
            },
            &fleet.b.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    fleet.accepted_everywhere(&theirs).await;
}

#[tokio::test]
async fn change_password_ends_the_other_sessions_everywhere_and_keeps_the_callers() {
    let fleet = Fleet::spawn().await;

    let changed = fleet
        .auth(1)
        .await
        .change_password(with_bearer(
            ChangePasswordRequest {
                old_password: fleet.user.password.clone(),
                new_password: format!("new-pw-{}", uuid::Uuid::new_v4()),
            },
            &fleet.b.access_token,
        ))
        .await
        .expect("ChangePassword")
        .into_inner();

    assert_eq!(changed.sessions_revoked, 1);
    fleet.refused_everywhere(&fleet.a.access_token).await;
    fleet.accepted_everywhere(&fleet.b.access_token).await;
}

#[tokio::test]
async fn a_data_replica_started_after_a_revocation_refuses_the_token_from_its_first_answer() {
    let fleet = Fleet::spawn().await;
    logout(&mut fleet.auth(0).await, &fleet.a.refresh_token).await;
    fleet.refused_everywhere(&fleet.a.access_token).await;

    let late = fleet.spawn_data(false).await;

    // Until its replay completes it trusts no token (UNAVAILABLE); after that, its very first
    // verdict on the revoked token is a refusal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first_verdict = loop {
        match get(&late, &fleet.a.access_token).await {
            Err(status) if status.code() == Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "never replayed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            verdict => break verdict,
        }
    };
    let status = first_verdict.expect_err("the revoked token is refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(wait_serving(late.addr, "dynagate.data.v1.DataService").await);
    accepted(&late, &fleet.b.access_token).await;
}

#[tokio::test]
async fn a_revocation_made_while_every_stream_was_cut_still_arrives() {
    let mut fleet = Fleet::spawn().await;
    // A third auth replica that no data replica watches; then both watched ones stop, so
    // no data replica has a stream open when the session ends.
    let unwatched = fleet.auth[0].spawn_replica().await;
    let second = fleet.auth.pop().expect("two replicas");
    let first = fleet.auth.pop().expect("two replicas");
    second.stop().await;
    let mut settings = first.settings.clone();
    settings.listen_addr = first.addr;
    let held = first.stop_holding_port().await;

    logout(&mut unwatched.client().await, &fleet.a.refresh_token).await;

    // One watched replica comes back on its address; the data replicas reconnect to it and
    // it replays what they missed.
    fleet
        .auth
        .push(TestAuth::spawn_with(settings, fleet.endpoints.clone()).await);
    drop(held);
    for data in &fleet.data {
        // Reconnecting is a backoff away (at most 5 s); the 2 s bound is for live streams.
        refused_within(data, &fleet.a.access_token, Duration::from_secs(8)).await;
    }
    fleet.accepted_everywhere(&fleet.b.access_token).await;
}

#[tokio::test]
async fn a_data_replica_that_hears_no_feed_stops_trusting_tokens_and_recovers_by_itself() {
    let fleet = Fleet::spawn().await;
    let proxy = FeedProxy::start(fleet.auth[0].addr).await;
    let mut settings = fleet.data[0].settings.clone();
    settings.auth_url = vec![proxy.url()];
    settings.revocation_max_staleness = 2;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let dynamodb = &fleet.endpoints.dynamodb;
    let data = TestData::spawn_with_clock(settings, dynamodb, true, clock.clone()).await;
    accepted(&data, &fleet.a.access_token).await;

    proxy.block_feed();

    // Past the maximum staleness at each look, whatever the cut stream still delivered.
    let stale = eventually(Duration::from_secs(5), || async {
        clock.advance(Duration::from_secs(3));
        get(&data, &fleet.a.access_token)
            .await
            .is_err_and(|status| status.code() == Code::Unavailable)
    })
    .await;
    assert!(stale, "still trusting tokens without a feed");
    let status = get(&data, &fleet.a.access_token).await.unwrap_err();
    assert!(
        status.get_error_details().retry_info().is_some(),
        "{status:?}"
    );
    let not_serving = wait_status(
        data.addr,
        "dynagate.data.v1.DataService",
        ServingStatus::NotServing,
        Duration::from_secs(3),
    )
    .await;
    assert!(not_serving);

    proxy.unblock_feed();

    assert!(wait_serving(data.addr, "dynagate.data.v1.DataService").await);
    let recovered = eventually(Duration::from_secs(5), || async {
        get(&data, &fleet.a.access_token)
            .await
            .is_err_and(|status| status.code() == Code::NotFound)
    })
    .await;
    assert!(recovered, "calls work again");
}

#[tokio::test]
async fn a_users_cached_client_is_dropped_whenever_one_of_their_sessions_ends() {
    let fleet = Fleet::spawn().await;
    let loads = |fleet: &Fleet| -> Vec<u64> {
        fleet
            .data
            .iter()
            .map(|d| d.metrics.credential_loads.get())
            .collect()
    };
    let released = |fleet: &Fleet| -> Vec<u64> {
        fleet
            .data
            .iter()
            .map(|d| d.metrics.clients_released.get())
            .collect()
    };
    // Both sessions were used on both replicas, on one client per replica.
    assert_eq!(loads(&fleet), [1, 1]);

    // The revocation names the user: the client goes even though session b lives (it may
    // have been a compromise; after a plain Logout the reload returns the same credentials).
    let mut auth = fleet.auth(0).await;
    logout(&mut auth, &fleet.a.refresh_token).await;
    fleet.refused_everywhere(&fleet.a.access_token).await;
    let dropped = eventually(PROPAGATION, || async { released(&fleet) == [1, 1] }).await;
    assert!(dropped, "released {:?}", released(&fleet));
    fleet.accepted_everywhere(&fleet.b.access_token).await;
    assert_eq!(
        loads(&fleet),
        [2, 2],
        "b's next call loads credentials again"
    );

    logout(&mut auth, &fleet.b.refresh_token).await;
    fleet.refused_everywhere(&fleet.b.access_token).await;
    let dropped = eventually(PROPAGATION, || async { released(&fleet) == [2, 2] }).await;
    assert!(dropped, "released {:?}", released(&fleet));

    // A new session finds no client cached: its first call loads credentials again.
    let again = fleet.user.login(&mut auth).await;
    fleet.accepted_everywhere(&again.access_token).await;
    assert_eq!(loads(&fleet), [3, 3]);
}

#[tokio::test]
async fn an_auth_service_without_the_feed_is_never_trusted() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let proxy = FeedProxy::start(stack.auth.addr).await;
    proxy.block_feed();
    let mut settings = stack.data.settings.clone();
    settings.auth_url = vec![proxy.url()];
    settings.revocation_max_staleness = 30;
    let data = TestData::spawn_with(settings, &stack.endpoints.dynamodb, false).await;

    // Keys, the items table and the auth-service's health are all fine within two probes;
    // only the feed is missing, and that keeps the replica out of rotation.
    let serving = tokio::time::timeout(
        Duration::from_millis(2500),
        wait_serving(data.addr, "dynagate.data.v1.DataService"),
    )
    .await;
    assert!(!matches!(serving, Ok(true)), "SERVING without a feed");
    let not_serving = wait_status(
        data.addr,
        "",
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;
    assert!(not_serving);

    let request = with_bearer(
        GetItemRequest {
            key: "k".into(),
            ..Default::default()
        },
        &user.token,
    );
    let status = data.client().await.get_item(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_error_details().retry_info().is_some());

    // The same token works on the replica running with the feed off.
    let mut trusting = user;
    assert_eq!(trusting.get("k").await.unwrap_err().code(), Code::NotFound);
}
