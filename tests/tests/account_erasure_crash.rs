//! An erasure whose replica dies (SIGKILL) midway through a user's 5,000 items: the deletion
//! record outlives it, and another replica takes it up once its lease has lapsed and finishes
//! it — no row of the user left in any table, the username free.

use std::{sync::Arc, time::Duration};

use common::{
    clock::ManualClock,
    proto::auth::v1::{
        DeleteAccountRequest, RegisterRequest, auth_service_client::AuthServiceClient,
    },
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    auth_process::{self, AuthProcess},
    eventually,
    tables::{count_rows, put_items},
    unique_prefix,
};
use time::OffsetDateTime;

const ITEMS: usize = 5_000;

/// The test whose process the crash test starts as the replica it kills.
const DOOMED_REPLICA: &str = "auth_replica_killed_while_erasing";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the auth-service process the crash test starts, then kills"]
async fn auth_replica_killed_while_erasing() {
    auth_process::serve_if_child().await;
}

#[tokio::test]
async fn an_erasure_whose_replica_is_killed_midway_is_finished_by_another() {
    let endpoints = Endpoints::dynalite_only().await;
    let items_table = format!("{}-items", unique_prefix());
    let mut settings = TestAuth::settings_for_items(&items_table);
    settings.erasure.sweep_secs = 1;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let survivor =
        TestAuth::spawn_with_clock(settings.clone(), endpoints.clone(), clock.clone()).await;
    common::dynamo::ensure_string_keyed_table(
        &survivor.dynamodb,
        &items_table,
        "owner",
        Some("key"),
    )
    .await
    .expect("items table");
    let mut doomed = AuthProcess::start(settings.clone(), &endpoints, DOOMED_REPLICA).await;
    let mut doomed_client = AuthServiceClient::connect(format!("http://{}", doomed.addr))
        .await
        .expect("connect to the doomed replica");
    let user = TestUser::register(&mut doomed_client).await;
    let access = user.login(&mut doomed_client).await.access_token;
    put_items(&survivor.dynamodb, &items_table, &user.user_id, "k/", ITEMS).await;

    let message = DeleteAccountRequest {
        password: user.password.clone(),
        ..Default::default()
    };
    doomed_client
        .delete_account(with_bearer(message, &access))
        .await
        .expect("DeleteAccount");
    let midway = eventually(Duration::from_secs(60), || async {
        count_rows(&survivor.dynamodb, &items_table, "owner", &user.user_id).await < ITEMS - 500
    })
    .await;
    assert!(midway, "the doomed replica erases");
    doomed.kill();
    let left = count_rows(&survivor.dynamodb, &items_table, "owner", &user.user_id).await;
    assert!(
        left > 0,
        "arrangement: killed before the first pass ended ({left} left)"
    );
    assert!(
        survivor.user_item(&user.username).await.is_some(),
        "the record outlives its replica"
    );

    // Its lease lapses; the survivor's next sweep takes the record up and parks it until the
    // credentials vended before the deletion have expired, then finishes.
    clock.set(OffsetDateTime::now_utc() + Duration::from_secs(61));
    let first_pass = eventually(Duration::from_secs(60), || async {
        count_rows(&survivor.dynamodb, &items_table, "owner", &user.user_id).await == 0
    })
    .await;
    assert!(first_pass, "the survivor erases the rest of the items");
    assert!(survivor.user_item(&user.username).await.is_some(), "parked");
    let settle = Duration::from_secs(settings.credentials_duration_secs + 120);
    clock.set(OffsetDateTime::now_utc() + settle);
    let erased = eventually(Duration::from_secs(60), || async {
        survivor.user_item(&user.username).await.is_none()
    })
    .await;
    assert!(erased, "the survivor frees the username");

    let sessions = &settings.sessions_table;
    assert_eq!(
        count_rows(&survivor.dynamodb, sessions, "user_id", &user.user_id).await,
        0
    );
    assert_eq!(
        count_rows(&survivor.dynamodb, &items_table, "owner", &user.user_id).await,
        0
    );
    let mut client = survivor.client().await;
    client
        .register(RegisterRequest {
            username: user.username.clone(),
            password: "a new owner's password".into(),
        })
        .await
        .expect("the name is free");
}
