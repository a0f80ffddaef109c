//! The revocation feed (WatchRevocations) against dynalite, across two auth replicas on one
//! table set: every way a session ends reaches watchers of either replica, a fresh watch
//! replays what still matters, `since` resumes without loss, quiet streams carry heartbeats
//! only while the table is readable, expired revocations leave the log, and dropped watches
//! leave nothing behind.

use std::{collections::HashSet, sync::Arc, time::Duration};

use common::{
    clock::ManualClock,
    proto::auth::v1::{
        LoginResponse, LogoutAllRequest, LogoutRequest, RefreshRequest, Revocation,
        WatchRevocationsRequest, WatchRevocationsResponse, auth_service_client::AuthServiceClient,
    },
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    eventually,
};
use tonic::{Code, Streaming, transport::Channel};

type Client = AuthServiceClient<Channel>;

/// How long a revocation may take to show up before the test fails: far above the 250 ms
/// poll of the test settings, so only a lost revocation fails it.
const ARRIVAL_LIMIT: Duration = Duration::from_secs(5);

async fn watch(
    client: &mut Client,
    since: Option<prost_types::Timestamp>,
) -> Streaming<WatchRevocationsResponse> {
    client
        .watch_revocations(WatchRevocationsRequest {
            since,
            ..Default::default()
        })
        .await
        .expect("WatchRevocations")
        .into_inner()
}

async fn next_message(
    stream: &mut Streaming<WatchRevocationsResponse>,
) -> WatchRevocationsResponse {
    tokio::time::timeout(ARRIVAL_LIMIT, stream.message())
        .await
        .expect("a message in time")
        .expect("stream healthy")
        .expect("stream open")
}

/// Reads the replay; returns what it held, checking only its last message is marked.
async fn replay(stream: &mut Streaming<WatchRevocationsResponse>) -> Vec<Revocation> {
    let mut replayed = Vec::new();
    loop {
        let message = next_message(stream).await;
        replayed.extend(message.revocations);
        if message.replay_complete {
            return replayed;
        }
    }
}

/// Reads until every session in `wanted` was announced; returns their revocations. Fails
/// after [`ARRIVAL_LIMIT`], heartbeats or not.
async fn until_announced(
    stream: &mut Streaming<WatchRevocationsResponse>,
    wanted: &[String],
) -> Vec<Revocation> {
    let mut missing: HashSet<&String> = wanted.iter().collect();
    let mut found = Vec::new();
    let reading = async {
        while !missing.is_empty() {
            let message = next_message(stream).await;
            assert!(!message.replay_complete, "replay_complete after the replay");
            for revocation in message.revocations {
                if missing.remove(&revocation.session_id) {
                    found.push(revocation);
                }
            }
        }
    };
    if tokio::time::timeout(ARRIVAL_LIMIT, reading).await.is_err() {
        panic!("not announced in time: {missing:?}");
    }
    found
}

/// The session id (`sid`) of a login's access token.
async fn session_of(auth: &TestAuth, login: &LoginResponse) -> String {
    auth.verifier()
        .verify(&auth.published_keys().await, &login.access_token)
        .expect("a valid access token")
        .session_id
}

async fn logout(client: &mut Client, login: &LoginResponse) {
    client
        .logout(LogoutRequest {
            refresh_token: login.refresh_token.clone(),
        })
        .await
        .expect("Logout");
}

/// Two replicas on one table set, a user, and a client of each replica.
async fn two_replicas() -> (TestAuth, TestAuth, TestUser, Client, Client) {
    let a = TestAuth::spawn().await;
    let b = a.spawn_replica().await;
    let (mut on_a, on_b) = (a.client().await, b.client().await);
    let user = TestUser::register(&mut on_a).await;
    (a, b, user, on_a, on_b)
}

#[tokio::test]
async fn a_logout_on_one_replica_reaches_a_watch_on_the_other() {
    let (a, _b, user, mut on_a, mut on_b) = two_replicas().await;
    let (ended, kept) = (user.login(&mut on_a).await, user.login(&mut on_a).await);
    let mut stream = watch(&mut on_b, None).await;
    replay(&mut stream).await;

    logout(&mut on_a, &ended).await;

    let ended_sid = session_of(&a, &ended).await;
    let found = until_announced(&mut stream, std::slice::from_ref(&ended_sid)).await;
    let revocation = &found[0];
    let (revoked_at, not_after) = (
        revocation.revoked_at.unwrap(),
        revocation.not_after.unwrap(),
    );
    let ttl = i64::try_from(a.settings.access_token_ttl_secs).unwrap();
    assert!(
        not_after.seconds >= revoked_at.seconds + ttl,
        "outlives every access token"
    );
    let kept_sid = session_of(&a, &kept).await;
    let replayed = replay(&mut watch(&mut on_b, None).await).await;
    assert!(
        replayed.iter().all(|r| r.session_id != kept_sid),
        "the other session lives"
    );
}

#[tokio::test]
async fn logout_all_of_three_sessions_reaches_the_other_replica() {
    let (a, _b, user, mut on_a, mut on_b) = two_replicas().await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let login = user.login(&mut on_a).await;
        sessions.push((session_of(&a, &login).await, login));
    }
    let mut stream = watch(&mut on_b, None).await;
    replay(&mut stream).await;

    let ended = on_a
        .logout_all(with_bearer(
            LogoutAllRequest {},
            &sessions[0].1.access_token,
        ))
        .await
        .expect("LogoutAll")
        .into_inner()
        .sessions_revoked;

    assert_eq!(ended, 3);
    let sids: Vec<String> = sessions.into_iter().map(|(sid, _)| sid).collect();
    assert_eq!(until_announced(&mut stream, &sids).await.len(), 3);
}

#[tokio::test]
async fn reuse_detection_on_refresh_reaches_the_other_replica() {
    let (a, _b, user, mut on_a, mut on_b) = two_replicas().await;
    let login = user.login(&mut on_a).await;
    let sid = session_of(&a, &login).await;
    let refresh = |token: String| RefreshRequest {
        refresh_token: token,
    };
    let first = on_a
        .refresh(refresh(login.refresh_token.clone()))
        .await
        .expect("Refresh");
    on_a.refresh(refresh(first.into_inner().refresh_token))
        .await
        .expect("Refresh");
    let mut stream = watch(&mut on_b, None).await;
    replay(&mut stream).await;

    // Two rotations old: reuse whatever the grace, and it ends the session.
    let reused = on_a.refresh(refresh(login.refresh_token.clone())).await;

    assert_eq!(reused.unwrap_err().code(), Code::Unauthenticated);
    until_announced(&mut stream, &[sid]).await;
}

#[tokio::test]
async fn a_replica_started_after_a_logout_replays_it_to_a_fresh_watch() {
    let a = TestAuth::spawn().await;
    let mut on_a = a.client().await;
    let user = TestUser::register(&mut on_a).await;
    let login = user.login(&mut on_a).await;
    logout(&mut on_a, &login).await;

    let b = a.spawn_replica().await;
    let replayed = replay(&mut watch(&mut b.client().await, None).await).await;

    let sid = session_of(&a, &login).await;
    assert!(replayed.iter().any(|r| r.session_id == sid), "{replayed:?}");
    assert_eq!(b.revocations.len(), 1);
}

#[tokio::test]
async fn since_resumes_without_losing_a_revocation_made_while_no_stream_was_open() {
    let (a, b, user, mut on_a, mut on_b) = two_replicas().await;
    let (first, second) = (user.login(&mut on_a).await, user.login(&mut on_a).await);
    let mut stream = watch(&mut on_b, None).await;
    replay(&mut stream).await;
    logout(&mut on_a, &first).await;
    let seen = until_announced(&mut stream, &[session_of(&a, &first).await]).await;
    drop(stream);

    logout(&mut on_a, &second).await;
    // Let replica B learn of it while nobody watches.
    let second_sid = session_of(&a, &second).await;
    let b_knows = eventually(ARRIVAL_LIMIT, || async { b.revocations.len() == 2 }).await;
    assert!(b_knows);
    let resumed = replay(&mut watch(&mut on_b, seen[0].revoked_at).await).await;

    assert!(
        resumed.iter().any(|r| r.session_id == second_sid),
        "{resumed:?}"
    );
}

#[tokio::test]
async fn a_quiet_stream_carries_heartbeats_only_while_the_table_is_readable() {
    let auth = TestAuth::spawn().await;
    let mut stream = watch(&mut auth.client().await, None).await;
    assert!(replay(&mut stream).await.is_empty());

    for _ in 0..2 {
        let heartbeat = next_message(&mut stream).await;
        assert!(heartbeat.revocations.is_empty() && !heartbeat.replay_complete);
    }

    // The poller can no longer read the table: heartbeats stop, and come back with it.
    let table = &auth.settings.revocations.table;
    auth.dynamodb
        .delete_table()
        .table_name(table)
        .send()
        .await
        .expect("DeleteTable");
    let stale = eventually(ARRIVAL_LIMIT, || async { !auth.revocations.is_current() }).await;
    assert!(stale, "the replica notices it cannot read");
    while let Ok(Ok(Some(_))) =
        tokio::time::timeout(Duration::from_millis(600), stream.message()).await
    {}
    let silence = Duration::from_secs(1);
    assert!(
        tokio::time::timeout(silence, stream.message())
            .await
            .is_err(),
        "no heartbeat while stale"
    );
    startup_tables(&auth).await;
    next_message(&mut stream).await;
}

async fn startup_tables(auth: &TestAuth) {
    let aws = auth_service::startup::AwsClients {
        dynamodb: auth.dynamodb.clone(),
        sts: tests::sts_client(&auth.endpoints.sts),
    };
    auth_service::startup::create_tables(&auth.settings, &aws)
        .await
        .expect("create tables");
}

#[tokio::test]
async fn expired_revocations_leave_the_log_and_the_replay() {
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let endpoints = Endpoints::dynalite_only().await;
    let auth = TestAuth::spawn_with_clock(TestAuth::settings(), endpoints, clock.clone()).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let login = user.login(&mut client).await;
    logout(&mut client, &login).await;
    assert_eq!(auth.revocations.len(), 1);

    // Past the last access token of the session (lifetime plus the slack).
    let ttl = Duration::from_secs(auth.settings.access_token_ttl_secs);
    clock.advance(ttl + auth_service::revocations::NOT_AFTER_SLACK + Duration::from_secs(2));

    let pruned = eventually(ARRIVAL_LIMIT, || async { auth.revocations.is_empty() }).await;
    assert!(pruned, "pruned at the next poll");
    assert!(replay(&mut watch(&mut client, None).await).await.is_empty());
}

#[tokio::test]
async fn cancelled_watches_leave_no_subscriber_behind() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let mut streams = Vec::new();
    for n in 0..50 {
        let mut stream = watch(&mut client, None).await;
        // Half mid-replay (nothing read yet), half live.
        if n % 2 == 0 {
            replay(&mut stream).await;
        }
        streams.push(stream);
    }
    assert_eq!(auth.revocations.subscribers(), 50);

    drop(streams);

    let freed = eventually(ARRIVAL_LIMIT, || async {
        auth.revocations.subscribers() == 0
    })
    .await;
    assert!(freed, "{} subscribers left", auth.revocations.subscribers());
}

#[tokio::test]
async fn a_since_no_date_can_hold_is_invalid() {
    let auth = TestAuth::spawn().await;
    let since = prost_types::Timestamp {
        seconds: 0,
        nanos: -1,
    };
    let refused = auth
        .client()
        .await
        .watch_revocations(WatchRevocationsRequest {
            since: Some(since),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn stopping_a_replica_ends_its_watches_with_unavailable() {
    let auth = TestAuth::spawn().await;
    let mut stream = watch(&mut auth.client().await, None).await;
    replay(&mut stream).await;

    auth.stop().await;

    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
}
