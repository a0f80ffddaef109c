//! Resuming the revocation feed compares no clocks. A resume token is a position in the
//! serving replica's own log, so a watcher that applied a revocation stamped by a replica
//! whose clock runs 60 s ahead still gets, on resuming, everything it missed; a token from
//! another replica (or run) replays everything; and a `since` from a clock ahead (watchers
//! without tokens) is clamped to the serving replica's clock. End to end: with one auth
//! replica 60 s ahead, no revocation made on the other is lost by any data-service.

use std::{collections::HashSet, sync::Arc, time::Duration};

use auth_service::revocations::Revocation;
use common::{
    clock::Clock,
    proto::auth::v1::{
        LoginResponse, LogoutRequest, WatchRevocationsRequest, WatchRevocationsResponse,
        auth_service_client::AuthServiceClient,
    },
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser},
    data::TestData,
    eventually,
    feed_proxy::FeedProxy,
    replicas::probe,
    unique_prefix,
};
use time::OffsetDateTime;
use tonic::{Code, Streaming, transport::Channel};

type Client = AuthServiceClient<Channel>;

const SKEW: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(10);

/// The system clock plus an offset: a replica whose clock runs ahead.
#[derive(Debug)]
struct Ahead(Duration);

impl Clock for Ahead {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.0
    }
}

async fn watch(
    client: &mut Client,
    request: WatchRevocationsRequest,
) -> Streaming<WatchRevocationsResponse> {
    client
        .watch_revocations(request)
        .await
        .expect("WatchRevocations")
        .into_inner()
}

async fn next(stream: &mut Streaming<WatchRevocationsResponse>) -> WatchRevocationsResponse {
    tokio::time::timeout(LIMIT, stream.message())
        .await
        .expect("a message in time")
        .expect("healthy")
        .expect("open")
}

/// The sessions of the replay, and the resume token after it.
async fn replay(stream: &mut Streaming<WatchRevocationsResponse>) -> (HashSet<String>, String) {
    let mut sessions = HashSet::new();
    loop {
        let message = next(stream).await;
        sessions.extend(message.revocations.into_iter().map(|r| r.session_id));
        if message.replay_complete {
            return (sessions, message.resume_token);
        }
    }
}

async fn logout(client: &mut Client, login: &LoginResponse) {
    client
        .logout(LogoutRequest {
            refresh_token: login.refresh_token.clone(),
        })
        .await
        .expect("Logout");
}

/// Puts in `auth`'s log the revocation of `session_id` stamped `SKEW` ahead: what a replica
/// relays once its poller reads one made by a replica whose clock runs ahead (at once when it
/// lands in a minute bucket the poll reads, else as the reader's clock comes within the
/// lookback of it).
fn relay_from_ahead(auth: &TestAuth, session_id: &str) -> Revocation {
    let hub = &auth.revocations;
    let skew_ms = i64::try_from(SKEW.as_millis()).expect("small");
    let revocation = Revocation {
        session_id: session_id.to_owned(),
        user_id: None,
        revoked_at_ms: hub.now_ms() + skew_ms,
        not_after: hub.now_secs() + 960,
    };
    assert!(hub.add(revocation.clone()));
    revocation
}

#[tokio::test]
async fn a_resume_token_replays_what_was_missed_whatever_the_stamps_say() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let login = user.login(&mut client).await;
    let mut stream = watch(&mut client, WatchRevocationsRequest::default()).await;
    replay(&mut stream).await;
    let ahead = relay_from_ahead(&auth, "stamped-ahead");
    let message = next(&mut stream).await;
    assert_eq!(message.revocations[0].session_id, ahead.session_id);
    let (token, since) = (message.resume_token, message.revocations[0].revoked_at);
    drop(stream);

    logout(&mut client, &login).await;

    let sid = auth.session_of(&login.access_token).await;
    let by_token = WatchRevocationsRequest {
        resume_token: token,
        since,
    };
    let (resumed, _) = replay(&mut watch(&mut client, by_token).await).await;
    assert_eq!(
        resumed,
        HashSet::from([sid.clone()]),
        "exactly what was missed"
    );
    let by_since = WatchRevocationsRequest {
        since,
        ..Default::default()
    };
    let (resumed, _) = replay(&mut watch(&mut client, by_since).await).await;
    assert!(
        resumed.contains(&sid),
        "a `since` ahead is clamped to this replica's clock"
    );
}

#[tokio::test]
async fn a_token_from_another_replica_or_run_replays_everything() {
    let a = TestAuth::spawn().await;
    let b = a.spawn_replica().await;
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    let user = TestUser::register(&mut on_a).await;
    let login = user.login(&mut on_a).await;
    logout(&mut on_a, &login).await;
    let sid = a.session_of(&login.access_token).await;
    let (_, token) = replay(&mut watch(&mut on_a, WatchRevocationsRequest::default()).await).await;
    assert!(eventually(LIMIT, || async { b.revocations.len() == 1 }).await);

    let elsewhere = WatchRevocationsRequest {
        resume_token: token.clone(),
        ..Default::default()
    };
    let (replayed, _) = replay(&mut watch(&mut on_b, elsewhere).await).await;
    assert_eq!(replayed, HashSet::from([sid.clone()]));
    let here = WatchRevocationsRequest {
        resume_token: token,
        ..Default::default()
    };
    let (replayed, _) = replay(&mut watch(&mut on_a, here).await).await;
    assert!(
        replayed.is_empty(),
        "nothing new on the replica that issued the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sixty_seconds_ahead_loses_no_revocation_made_on_the_other() {
    let endpoints = Endpoints::shared().await;
    let items_table = format!("{}-items", unique_prefix());
    let a = TestAuth::spawn_with(
        TestAuth::settings_for_items(&items_table),
        endpoints.clone(),
    )
    .await;
    let mut ahead_settings = a.settings.clone();
    ahead_settings.listen_addr = "127.0.0.1:0".parse().expect("an address");
    let ahead =
        TestAuth::spawn_with_clock(ahead_settings, endpoints.clone(), Arc::new(Ahead(SKEW))).await;
    let feed_a = FeedProxy::start(a.addr).await;
    let mut settings = TestData::settings(&items_table, a.addr);
    settings.auth_url = vec![feed_a.url(), format!("http://{}", ahead.addr)];
    let mut data = Vec::new();
    for _ in 0..2 {
        data.push(TestData::spawn_with(settings.clone(), &endpoints.dynamodb, true).await);
    }
    let mut on_a = a.client().await;
    let mut logins = Vec::new();
    for _ in 0..4 {
        let user = TestUser::register(&mut on_a).await;
        logins.push(user.login(&mut on_a).await);
    }
    let answers_everywhere = async |login: &LoginResponse, code: Code, limit: Duration| {
        for replica in &data {
            let client = replica.client().await;
            let answered = eventually(limit, || {
                let mut client = client.clone();
                async move { probe(&mut client, &login.access_token).await == code }
            })
            .await;
            assert!(answered, "{code:?} expected");
        }
    };
    // A user per session, each in use on every data replica, so each user's credentials stay
    // cached there and a refusal can only come from the feed (fetching credentials anew would
    // ask the auth-service, which knows the session ended).
    for login in &logins {
        answers_everywhere(login, Code::NotFound, LIMIT).await;
    }

    // The replica ahead ends a session: its revocation is stamped 60 s ahead.
    logout(&mut ahead.client().await, &logins[0]).await;
    answers_everywhere(&logins[0], Code::Unauthenticated, LIMIT).await;
    // A relays such a revocation on its own feed: a clock-based resume point would now lie
    // 60 s ahead of A's clock on every data replica's stream from A.
    let sid = a.session_of(&logins[1].access_token).await;
    relay_from_ahead(&a, &sid);
    answers_everywhere(&logins[1], Code::Unauthenticated, LIMIT).await;

    // A's feed is cut while A ends a session: the replica ahead never reads it (its polls
    // start 45 s past A's stamps), so only A's feed can bring it, on resuming.
    feed_a.block_feed();
    logout(&mut on_a, &logins[2]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    feed_a.unblock_feed();

    answers_everywhere(&logins[2], Code::Unauthenticated, Duration::from_secs(20)).await;
    answers_everywhere(&logins[3], Code::NotFound, LIMIT).await;
}
