//! A user's credentials are loaded once for all of that user's concurrent requests, and no one
//! request can spoil the load for the others: not with a tiny deadline, not with the token of
//! a session that has ended. The auth-service is made slow (a delaying proxy) so the requests
//! are sure to meet inside one load.

use std::time::Duration;

use common::proto::{
    auth::v1::LogoutRequest,
    data::v1::{GetItemRequest, data_service_client::DataServiceClient},
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    data::{TestData, TestStack},
    delay::DelayProxy,
    unique_prefix,
};
use tonic::{Code, transport::Channel};

/// How long the auth-service takes to answer the data-service.
const AUTH_DELAY: Duration = Duration::from_millis(400);

/// A stack whose data-service reaches the auth-service through a [`DelayProxy`].
async fn slow_auth_stack() -> (TestStack, DelayProxy) {
    let endpoints = Endpoints::shared().await;
    let items_table = format!("{}-items", unique_prefix());
    let auth_settings = TestAuth::settings_for_items(&items_table);
    let auth = TestAuth::spawn_with(auth_settings, endpoints.clone()).await;
    let proxy = DelayProxy::start(auth.addr, AUTH_DELAY).await;
    let mut settings = TestData::settings(&items_table, proxy.addr());
    settings.auth_timeout_ms = 2000;
    settings.request_timeout_ms = 5000;
    let data = TestData::spawn_with(settings, &endpoints.dynamodb, true).await;
    let stack = TestStack {
        auth,
        data,
        endpoints,
    };
    (stack, proxy)
}

/// GetItem of a key nobody wrote, with `token` and a deadline: NOT_FOUND proves the request
/// got the user's DynamoDB client.
async fn get_missing(
    mut client: DataServiceClient<Channel>,
    token: String,
    deadline: Duration,
) -> Code {
    let mut request = with_bearer(
        GetItemRequest {
            key: "never-written".into(),
            ..Default::default()
        },
        &token,
    );
    request.set_timeout(deadline);
    match client.get_item(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Starts one request, then (once it is surely waiting on the load) five more.
async fn first_then_five(
    stack: &TestStack,
    first: (String, Duration),
    others: String,
) -> (Code, Vec<Code>) {
    let client = stack.data.client().await;
    let first = tokio::spawn(get_missing(client.clone(), first.0, first.1));
    tokio::time::sleep(AUTH_DELAY / 8).await;
    let others: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(get_missing(
                client.clone(),
                others.clone(),
                Duration::from_secs(5),
            ))
        })
        .collect();
    let first = first.await.expect("first request");
    let mut codes = Vec::new();
    for other in others {
        codes.push(other.await.expect("other request"));
    }
    (first, codes)
}

#[tokio::test]
async fn a_request_with_a_tiny_deadline_does_not_fail_the_load_the_others_wait_for() {
    let (stack, _proxy) = slow_auth_stack().await;
    let user = stack.user().await;

    let impatient = (user.token.clone(), Duration::from_millis(60));
    let (first, others) = first_then_five(&stack, impatient, user.token.clone()).await;

    assert_ne!(first, Code::NotFound, "the impatient request gave up");
    assert_eq!(others, [Code::NotFound; 5], "the patient ones were served");
    assert_eq!(
        stack.data.metrics.credential_loads.get(),
        1,
        "the load outlived its impatient starter and was shared"
    );
}

#[tokio::test]
async fn an_ended_sessions_token_does_not_fail_the_users_live_session() {
    let (stack, _proxy) = slow_auth_stack().await;
    let mut auth = stack.auth.client().await;
    let user = TestUser::register(&mut auth).await;
    let ended = user.login(&mut auth).await;
    let live = user.login(&mut auth).await;
    auth.logout(LogoutRequest {
        refresh_token: ended.refresh_token,
    })
    .await
    .expect("Logout");

    let stale = (ended.access_token, Duration::from_secs(5));
    let (first, others) = first_then_five(&stack, stale, live.access_token).await;

    assert_eq!(first, Code::Unauthenticated, "the ended session is refused");
    assert_eq!(others, [Code::NotFound; 5], "the live session is served");
}
