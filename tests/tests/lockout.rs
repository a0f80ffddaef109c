//! The brute-force lockout through the gRPC API, against dynalite, with a manual clock: failed
//! logins lock a username (known, unknown or malformed alike) for a doubling time, locked
//! attempts are refused before any password work, and racing attempts cannot get past it.

use std::{sync::Arc, time::Duration};

use auth_service::config::Settings;
use common::{
    clock::{Clock, ManualClock},
    proto::auth::v1::auth_service_client::AuthServiceClient,
};
use tests::auth::{Endpoints, TestAuth, TestUser, try_login};
use time::OffsetDateTime;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

type Client = AuthServiceClient<Channel>;

const WRONG: &str = "not the password";

/// An auth-service with `change` applied to its test settings, reading a manual clock.
async fn auth_with(change: impl FnOnce(&mut Settings)) -> (TestAuth, Arc<ManualClock>) {
    let mut settings = TestAuth::settings();
    change(&mut settings);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let auth =
        TestAuth::spawn_with_clock(settings, Endpoints::dynalite_only().await, clock.clone()).await;
    (auth, clock)
}

/// `n` wrong passwords for `username`, each refused as a plain failed login.
async fn fail(client: &mut Client, username: &str, n: usize) {
    for i in 0..n {
        let status = try_login(client, username, WRONG).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "failure {i}: {status:?}"
        );
    }
}

/// The RetryInfo delay of a lockout refusal (which must be one).
fn locked_for(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a lockout refusal carries a RetryInfo delay")
}

#[tokio::test]
async fn five_failures_lock_the_name_and_each_further_failure_doubles_the_lock() {
    let (auth, clock) = auth_with(|_| {}).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    fail(&mut client, &user.username, 5).await;
    let refused = try_login(&mut client, &user.username, WRONG)
        .await
        .unwrap_err();
    assert_eq!(locked_for(&refused), Duration::from_secs(1));

    for lock in [2, 4, 8] {
        clock.advance(Duration::from_secs(lock / 2));
        fail(&mut client, &user.username, 1).await;
        let refused = try_login(&mut client, &user.username, WRONG)
            .await
            .unwrap_err();
        assert_eq!(locked_for(&refused), Duration::from_secs(lock));
    }
}

#[tokio::test]
async fn the_lock_is_capped_and_the_numbers_come_from_the_settings() {
    let (auth, clock) = auth_with(|s| {
        s.lockout.threshold = 2;
        s.lockout.first_secs = 10;
        s.lockout.max_secs = 15;
    })
    .await;
    let mut client = auth.client().await;

    fail(&mut client, "someone", 2).await;
    let refused = try_login(&mut client, "someone", WRONG).await.unwrap_err();
    assert_eq!(locked_for(&refused), Duration::from_secs(10));
    clock.advance(Duration::from_secs(10));
    fail(&mut client, "someone", 1).await;
    let refused = try_login(&mut client, "someone", WRONG).await.unwrap_err();
    assert_eq!(
        locked_for(&refused),
        Duration::from_secs(15),
        "20 s, capped"
    );
}

#[tokio::test]
async fn retry_info_gives_the_time_that_remains() {
    let (auth, clock) = auth_with(|_| {}).await;
    let mut client = auth.client().await;

    fail(&mut client, "counted-down", 5).await;
    clock.advance(Duration::from_millis(400));
    let refused = try_login(&mut client, "counted-down", WRONG)
        .await
        .unwrap_err();
    assert_eq!(locked_for(&refused), Duration::from_millis(600));
    clock.advance(Duration::from_millis(600));
    fail(&mut client, "counted-down", 1).await;
}

#[tokio::test]
async fn the_right_password_is_refused_unchecked_while_locked() {
    let (auth, clock) = auth_with(|_| {}).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    fail(&mut client, &user.username, 5).await;

    let before = auth.metrics.password_verifications.get();
    let refused = try_login(&mut client, &user.username, &user.password)
        .await
        .unwrap_err();
    assert_eq!(locked_for(&refused), Duration::from_secs(1));
    assert_eq!(
        auth.metrics.password_verifications.get(),
        before,
        "no password was checked"
    );

    clock.advance(Duration::from_secs(1));
    let login = try_login(&mut client, &user.username, &user.password)
        .await
        .expect("the lock has run out");
    assert_eq!(login.user_id, user.user_id);
}

#[tokio::test]
async fn a_success_resets_the_count() {
    let (auth, _clock) = auth_with(|_| {}).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    fail(&mut client, &user.username, 4).await;
    user.login(&mut client).await;
    fail(&mut client, &user.username, 4).await;
    user.login(&mut client).await;
    fail(&mut client, &user.username, 5).await;
    let refused = try_login(&mut client, &user.username, WRONG)
        .await
        .unwrap_err();
    locked_for(&refused);
}

#[tokio::test]
async fn a_quiet_hour_resets_the_count() {
    let (auth, clock) = auth_with(|_| {}).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    fail(&mut client, &user.username, 4).await;
    clock.advance(Duration::from_secs(3600));
    fail(&mut client, &user.username, 4).await;
    clock.advance(Duration::from_secs(3599));
    fail(&mut client, &user.username, 1).await;
    let refused = try_login(&mut client, &user.username, WRONG)
        .await
        .unwrap_err();
    assert_eq!(
        locked_for(&refused),
        Duration::from_secs(1),
        "59 min 59 s is not quiet enough"
    );
}

#[tokio::test]
async fn unknown_and_malformed_names_lock_exactly_like_known_ones() {
    let (auth, _clock) = auth_with(|_| {}).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    let mut refusals = Vec::new();
    for name in [
        user.username.as_str(),
        "nobody-by-this-name",
        "not a valid name!",
    ] {
        fail(&mut client, name, 5).await;
        refusals.push(try_login(&mut client, name, WRONG).await.unwrap_err());
    }

    let known = &refusals[0];
    for refused in &refusals {
        assert_eq!(refused.code(), known.code());
        assert_eq!(refused.message(), known.message());
        assert_eq!(refused.details(), known.details(), "same RetryInfo");
        assert_eq!(locked_for(refused), Duration::from_secs(1));
    }
}

#[tokio::test]
async fn twenty_concurrent_wrong_passwords_check_at_most_five() {
    let (auth, _clock) = auth_with(|_| {}).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let before = auth.metrics.password_verifications.get();

    let attempts = (0..20).map(|_| {
        let (mut client, username) = (client.clone(), user.username.clone());
        async move { try_login(&mut client, &username, WRONG).await }
    });
    let results = futures::future::join_all(attempts).await;

    let verified = auth.metrics.password_verifications.get() - before;
    let failed = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|s| s.code() == Code::Unauthenticated))
        .count();
    let refused: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| s.code() != Code::Unauthenticated)
        .collect();
    assert!(verified <= 5, "{verified} passwords checked");
    assert_eq!(failed as u64, verified, "every check was a failed login");
    assert_eq!(failed + refused.len(), 20);
    for status in refused {
        locked_for(status);
    }
    let after_the_race = try_login(&mut client, &user.username, &user.password)
        .await
        .unwrap_err();
    locked_for(&after_the_race);
}

#[tokio::test]
async fn a_lock_holds_across_replicas() {
    let (first, clock) = auth_with(|_| {}).await;
    let mut settings = first.settings.clone();
    settings.listen_addr = "127.0.0.1:0".parse().unwrap();
    let second =
        TestAuth::spawn_with_clock(settings, Endpoints::dynalite_only().await, clock).await;
    let mut client = first.client().await;
    let user = TestUser::register(&mut client).await;

    fail(&mut client, &user.username, 5).await;

    let mut other = second.client().await;
    let refused = try_login(&mut other, &user.username, &user.password)
        .await
        .unwrap_err();
    locked_for(&refused);
}

#[tokio::test]
async fn stored_counts_name_no_username_and_expire() {
    let (auth, clock) = auth_with(|_| {}).await;
    let mut client = auth.client().await;
    fail(&mut client, "Mixed.Case-Name", 2).await;
    fail(&mut client, "mixed.case-name", 1).await;

    let items = auth
        .dynamodb
        .scan()
        .table_name(&auth.settings.lockout.attempts_table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert_eq!(items.len(), 1, "one count per folded name: {items:?}");
    let item = &items[0];
    assert!(!format!("{item:?}").contains("case-name"), "{item:?}");
    assert_eq!(item["count"].as_n().unwrap(), "3");
    let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
    let quiet_end = clock.now().unix_timestamp() + 3600;
    assert!((quiet_end..=quiet_end + 1).contains(&ttl), "ttl {ttl}");
}
