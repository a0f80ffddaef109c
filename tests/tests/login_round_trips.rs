//! Login's DynamoDB calls: an honest login below the session cap is five (the lockout's count
//! in one conditional UpdateItem, the user read, the session write, the user item's check and
//! count, the lockout's reset) and no Query; an attempt the one-write count declines (it may
//! lock, or the count has lapsed) reads and decides as before, from the item DynamoDB hands
//! back with the refusal (moto does too) or from a read (dynalite does not).
//!
//! Calls are counted by the auth-service's `dynagate_dynamodb_calls_total{operation}`. Item
//! operations are exact; the revocation feed's poller also sends Queries, so these tests poll
//! once a minute and measure after the first poll (each test takes seconds).

use std::{collections::HashMap, sync::Arc, time::Duration};

use auth_service::config::Settings;
use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    clock::{Clock, ManualClock, unix_millis},
    proto::auth::v1::WatchRevocationsRequest,
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, try_login},
    emulators::{Emulator, dead_addr},
};
use time::OffsetDateTime;
use tonic::Code;

const WRONG: &str = "not the password";
const OPERATIONS: [&str; 5] = ["GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"];

/// What `auth` sent since `before`, by operation, leaving out the operations not sent.
fn since(auth: &TestAuth, before: &HashMap<&'static str, u64>) -> HashMap<&'static str, u64> {
    auth.dynamodb_calls_since(before, &OPERATIONS)
}

fn expected(calls: &[(&'static str, u64)]) -> HashMap<&'static str, u64> {
    calls.iter().copied().collect()
}

/// Test settings with `change`, on dynalite, reading a manual clock; the revocation feed polls
/// once a minute, and the first poll has been sent.
async fn auth_with(change: impl FnOnce(&mut Settings)) -> (TestAuth, Arc<ManualClock>) {
    let mut settings = TestAuth::settings();
    settings.revocations.poll_ms = 60_000;
    change(&mut settings);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let auth =
        TestAuth::spawn_with_clock(settings, Endpoints::dynalite_only().await, clock.clone()).await;
    // WatchRevocations answers once the replica's view of the table is current: its first
    // poll (a Query per minute bucket) is done, and the next is a minute away.
    auth.client()
        .await
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .expect("the revocation feed's first poll");
    (auth, clock)
}

#[tokio::test]
async fn an_honest_login_below_the_cap_makes_five_calls_and_no_query() {
    let (auth, _) = auth_with(|s| s.max_sessions_per_user = 3).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    for login in 1..=3 {
        let before = auth.dynamodb_calls();
        user.login(&mut client).await;
        assert_eq!(
            since(&auth, &before),
            expected(&[
                ("UpdateItem", 2),
                ("GetItem", 1),
                ("PutItem", 1),
                ("DeleteItem", 1)
            ]),
            "login {login}"
        );
    }
    assert!(!auth.attempts_counted(&user.username).await, "reset");

    // The fourth is beyond the cap: the Query, and the oldest session's ending (its
    // announcement and its mark); the cap is full, so nothing is recorded.
    let before = auth.dynamodb_calls();
    user.login(&mut client).await;
    assert_eq!(
        since(&auth, &before),
        expected(&[
            ("UpdateItem", 3),
            ("GetItem", 1),
            ("PutItem", 2),
            ("DeleteItem", 1),
            ("Query", 1)
        ])
    );
}

#[tokio::test]
async fn a_wrong_password_is_one_write_and_one_read() {
    let (auth, _) = auth_with(|_| {}).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    for name in [user.username.as_str(), "nobody-at-all"] {
        let before = auth.dynamodb_calls();
        let status = try_login(&mut client, name, WRONG).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            since(&auth, &before),
            expected(&[("UpdateItem", 1), ("GetItem", 1)]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_attempt_that_may_lock_reads_decides_and_locks_at_the_threshold() {
    let (auth, _) = auth_with(|s| s.lockout.threshold = 3).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    for _ in 0..2 {
        try_login(&mut client, &user.username, WRONG)
            .await
            .unwrap_err();
    }

    // Two counted: the third may lock, so the one write declines and dynalite returns no
    // item with the refusal: read the attempts, write conditionally, then read the user.
    let before = auth.dynamodb_calls();
    let status = try_login(&mut client, &user.username, WRONG)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        since(&auth, &before),
        expected(&[("UpdateItem", 1), ("GetItem", 2), ("PutItem", 1)])
    );
    let before = auth.dynamodb_calls();
    let status = try_login(&mut client, &user.username, &user.password)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "locked: {status:?}");
    assert_eq!(
        since(&auth, &before),
        expected(&[("UpdateItem", 1), ("GetItem", 1)]),
        "refused on the read, unchecked"
    );
}

#[tokio::test]
async fn a_count_past_its_quiet_period_starts_again_through_the_read() {
    let (auth, clock) = auth_with(|s| s.lockout.threshold = 3).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    for _ in 0..2 {
        try_login(&mut client, &user.username, WRONG)
            .await
            .unwrap_err();
    }
    clock.advance(Duration::from_secs(auth.settings.lockout.quiet_secs));

    let before = auth.dynamodb_calls();
    try_login(&mut client, &user.username, WRONG)
        .await
        .unwrap_err();
    assert_eq!(
        since(&auth, &before),
        expected(&[("UpdateItem", 1), ("GetItem", 2), ("PutItem", 1)]),
        "declined (the count lapsed), read, written"
    );
    let stored = attempts_item(&auth, &user.username).await.expect("counted");
    assert_eq!(
        stored["count"].as_n().unwrap(),
        "1",
        "the count started again"
    );
    // One more is within the bounds again: one write, and the name is not locked.
    try_login(&mut client, &user.username, WRONG)
        .await
        .unwrap_err();
    user.login(&mut client).await;
}

/// A lock stored beside a count below the threshold (the threshold was raised since) is still
/// a lock: the one write requires no lock, so the read decides and refuses.
#[tokio::test]
async fn a_stored_lock_is_honoured_whatever_its_count() {
    let (auth, clock) = auth_with(|s| s.lockout.threshold = 10).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let now = unix_millis(clock.now());
    let key = auth_service::lockout::key_of(&user.username);
    auth.dynamodb
        .put_item()
        .table_name(&auth.settings.lockout.attempts_table)
        .item("username_hash", AttributeValue::S(key))
        .item("count", AttributeValue::N("2".into()))
        .item("last_at", AttributeValue::N(now.to_string()))
        .item(
            "locked_until",
            AttributeValue::N((now + 60_000).to_string()),
        )
        .item("rev", AttributeValue::S("before-the-upgrade".into()))
        .send()
        .await
        .unwrap();

    let status = try_login(&mut client, &user.username, &user.password)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// DynamoDB (and moto) hand back the item that failed the one write's condition: the attempt
/// decides on it and writes, without reading the attempts first.
#[tokio::test]
async fn with_the_item_returned_a_declined_count_needs_no_read() {
    let mut settings = TestAuth::settings();
    settings.lockout.threshold = 3;
    let endpoints = Endpoints {
        dynamodb: Emulator::shared_moto().await.endpoint(),
        sts: format!("http://{}", dead_addr()),
    };
    let auth = TestAuth::spawn_with(settings, endpoints).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    for _ in 0..2 {
        try_login(&mut client, &user.username, WRONG)
            .await
            .unwrap_err();
    }

    let before = auth.dynamodb_calls();
    try_login(&mut client, &user.username, WRONG)
        .await
        .unwrap_err();
    let sent = since(&auth, &before);
    assert_eq!(
        (
            sent.get("UpdateItem"),
            sent.get("GetItem"),
            sent.get("PutItem")
        ),
        (Some(&1), Some(&1), Some(&1)),
        "the one write, the user read, the conditional write: {sent:?}"
    );
    let status = try_login(&mut client, &user.username, &user.password)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "locked: {status:?}");
}

async fn attempts_item(auth: &TestAuth, username: &str) -> Option<HashMap<String, AttributeValue>> {
    let key = auth_service::lockout::key_of(&username.to_lowercase());
    auth.dynamodb
        .get_item()
        .table_name(&auth.settings.lockout.attempts_table)
        .key("username_hash", AttributeValue::S(key))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}
