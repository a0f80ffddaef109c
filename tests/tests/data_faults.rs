//! The data-service when things go wrong or change underneath it: the auth-service or
//! DynamoDB down or hung, signing keys rotated, health following its dependencies, and one
//! connection pool for every user.

use std::{sync::Arc, time::Duration};

use common::proto::data::v1::{GetItemRequest, PutItemRequest};
use secrecy::{ExposeSecret, SecretString};
use tests::{
    auth::Endpoints,
    data::{SignedIn, TestData, TestStack},
    emulators::{Emulator, Kind},
    proxy::RecordingProxy,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

async fn get_with_deadline(
    user: &mut SignedIn,
    key: &str,
    deadline: Duration,
) -> Result<(), tonic::Status> {
    let mut request = user.request(GetItemRequest {
        key: key.to_owned(),
        ..Default::default()
    });
    request.set_timeout(deadline);
    user.client.get_item(request).await.map(|_| ())
}

async fn health_becomes(data: &TestData, status: ServingStatus) -> bool {
    let service = "dynagate.data.v1.DataService";
    tests::wait_status(data.addr, service, status, Duration::from_secs(15)).await
}

#[tokio::test]
async fn with_the_auth_service_down_cached_users_keep_working_and_new_ones_wait() {
    let stack = TestStack::spawn().await;
    let mut regular = stack.user().await;
    let mut newcomer = stack.user().await;
    regular.put_text("k", "before the outage").await;

    let TestStack { auth, data, .. } = stack;
    auth.stop().await;

    regular.put_text("k", "during the outage").await;
    let refused = newcomer
        .client
        .put_item(newcomer.request(PutItemRequest {
            key: "k".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.get_error_details().retry_info().is_some());
    assert!(
        health_becomes(&data, ServingStatus::NotServing).await,
        "auth-service unreachable"
    );
}

#[tokio::test]
async fn with_dynamodb_down_calls_fail_fast_and_recover_when_it_returns() {
    let mut dynalite = Emulator::start(Kind::Dynalite, true).await;
    let endpoints = Endpoints {
        dynamodb: dynalite.endpoint(),
        sts: Emulator::shared_moto().await.endpoint(),
    };
    let stack = TestStack::spawn_on(endpoints).await;
    let mut user = stack.user().await;
    user.put_text("k", "kept on disk").await;

    dynalite.stop().await;
    let down = get_with_deadline(&mut user, "k", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(health_becomes(&stack.data, ServingStatus::NotServing).await);

    dynalite.restart().await;
    assert!(health_becomes(&stack.data, ServingStatus::Serving).await);
    get_with_deadline(&mut user, "k", Duration::from_secs(2))
        .await
        .expect("service resumes");
}

#[tokio::test]
async fn a_hung_dynamodb_is_unavailable_within_the_callers_deadline() {
    let dynalite = Emulator::start(Kind::Dynalite, false).await;
    let endpoints = Endpoints {
        dynamodb: dynalite.endpoint(),
        sts: Emulator::shared_moto().await.endpoint(),
    };
    let stack = TestStack::spawn_on(endpoints).await;
    let mut user = stack.user().await;
    user.put_text("k", "v").await;

    dynalite.pause();
    let hung = get_with_deadline(&mut user, "k", Duration::from_millis(1500))
        .await
        .unwrap_err();
    dynalite.resume();

    assert_eq!(
        hung.code(),
        Code::Unavailable,
        "answered before the caller's deadline, not DEADLINE_EXCEEDED: {hung:?}"
    );
    get_with_deadline(&mut user, "k", Duration::from_secs(2))
        .await
        .expect("works again");
}

#[tokio::test]
async fn a_rotated_signing_key_is_picked_up_on_first_sight_and_a_withdrawn_one_stops_working() {
    let endpoints = Endpoints::shared().await;
    let dynamodb = endpoints.dynamodb.clone();
    // One auth replica, and no grace for a key it stops listing: the first refresh after the
    // removal withdraws it (tests/tests/key_rollout.rs runs the grace across replicas).
    let stack = TestStack::spawn_tuned(endpoints, &dynamodb, |settings| {
        settings.key_withdrawal_grace_secs = 0;
    })
    .await;
    let mut veteran = stack.user().await;
    veteran.put_text("k", "signed by the first key").await;
    let (new_key, new_kid) = auth_service::keys::generate_paserk().unwrap();
    let old_key = stack.auth.signing_key.clone();

    // Rotation step 1: append a key; it signs from now on.
    let TestStack {
        auth,
        data,
        endpoints,
    } = stack;
    let both = SecretString::from(format!(
        "{}\n{}",
        old_key.expose_secret(),
        new_key.expose_secret()
    ));
    let auth = auth
        .restart(endpoints.clone(), |s| s.signing_keys = Some(both))
        .await;
    let stack = TestStack {
        auth,
        data,
        endpoints,
    };
    let refreshes_before = stack.data.metrics.key_refreshes.get();
    let mut newcomer = stack.user().await;
    assert_eq!(tests::auth::kid_of(&newcomer.token), new_kid);

    newcomer.put_text("k", "signed by the new key").await;
    assert!(
        stack.data.metrics.key_refreshes.get() > refreshes_before,
        "fetched on first sight"
    );
    veteran.put_text("k", "old tokens still verify").await;

    // Rotation step 3: drop the old key. The next refresh withdraws it and forgets the tokens
    // it signed.
    let TestStack {
        auth,
        data,
        endpoints,
    } = stack;
    let auth = auth
        .restart(endpoints.clone(), |s| s.signing_keys = Some(new_key))
        .await;
    let stack = TestStack {
        auth,
        data,
        endpoints,
    };
    // A token with an unknown kid makes the data-service refresh its keys, once its
    // on-demand rate limit allows: retry until a refresh has happened, whatever the limit.
    let mut third = stack.user().await;
    let mut forged_kid = stack.auth.claims(&third.user.user_id);
    forged_kid["jti"] = "trigger a refresh".into();
    let unknown = {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let token = stack.auth.forge(&forged_kid);
        let body = token.rsplit_once('.').unwrap().0.to_owned();
        format!(
            "{body}.{}",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"kid":"k4.pid.{}"}}"#, "Z".repeat(44)))
        )
    };
    let metrics = Arc::clone(&stack.data.metrics);
    let refreshes_before = metrics.key_refreshes.get();
    let refreshed = tests::eventually(Duration::from_secs(10), || {
        let (mut client, unknown, metrics) = (third.client.clone(), unknown.clone(), &metrics);
        async move {
            let request = GetItemRequest {
                key: "k".into(),
                ..Default::default()
            };
            let _ = client
                .get_item(tests::auth::with_bearer(request, &unknown))
                .await;
            metrics.key_refreshes.get() > refreshes_before
        }
    })
    .await;
    assert!(refreshed, "an unknown kid never caused a key refresh");

    let withdrawn = veteran
        .client
        .get_item(veteran.request(GetItemRequest {
            key: "k".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        withdrawn.code(),
        Code::Unauthenticated,
        "the withdrawn key's tokens are refused"
    );
    third.put_text("k", "the current key works").await;
}

#[tokio::test]
async fn every_users_client_shares_one_connection_pool() {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    let stack = TestStack::spawn_custom(Endpoints::shared().await, &proxy.endpoint()).await;
    let mut users = Vec::new();
    for _ in 0..10 {
        users.push(stack.user().await);
    }
    let before = proxy.connections();

    for user in &mut users {
        user.put_text("k", "one write per user").await;
    }

    let opened = proxy.connections() - before;
    assert!(
        opened <= 2,
        "10 users with their own credentials opened {opened} connections"
    );
}
