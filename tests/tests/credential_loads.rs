//! A user's credentials are loaded once for all of that user's concurrent requests, and no one
//! request can spoil the load for the others: not with a deadline that passes during the load,
//! not with the token of a session that has ended. The auth-service's answers are held back (a
//! proxy) until every request has met the load, so the order of events is the test's, not the
//! scheduler's: the first request starts the load (the service counts it), the others arrive
//! while it runs (the service counts their tokens), and only then does the load end.

use std::time::Duration;

use common::proto::{
    auth::v1::LogoutRequest,
    data::v1::{GetItemRequest, data_service_client::DataServiceClient},
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    data::{TestData, TestStack},
    delay::DelayProxy,
    eventually, unique_prefix,
};
use tokio::task::JoinHandle;
use tonic::{Code, transport::Channel};

/// The bound on waiting for an event the test causes (a loaded machine is slow, never this
/// slow); also the patient requests' deadline and the data-service's auth timeout, so nothing
/// but the test's own release ends the held load.
const PATIENCE: Duration = Duration::from_secs(30);

/// The impatient request's deadline: it passes while the load is held, however long the
/// machine takes, and leaves the request ample time (microseconds of work) to start the load.
const IMPATIENT: Duration = Duration::from_secs(3);

/// A stack whose data-service reaches the auth-service through a [`DelayProxy`] that adds no
/// delay until the test holds it.
async fn held_auth_stack() -> (TestStack, DelayProxy) {
    let endpoints = Endpoints::shared().await;
    let items_table = format!("{}-items", unique_prefix());
    let auth_settings = TestAuth::settings_for_items(&items_table);
    let auth = TestAuth::spawn_with(auth_settings, endpoints.clone()).await;
    let proxy = DelayProxy::start(auth.addr, Duration::ZERO).await;
    let mut settings = TestData::settings(&items_table, proxy.addr());
    settings.auth_timeout_ms = PATIENCE.as_millis() as u64;
    settings.request_timeout_ms = 2 * PATIENCE.as_millis() as u64;
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

/// Requests whose token the data-service has accepted (checked in full or found in its cache
/// of verdicts): each is then on its way to its user's client, with nothing left to wait for
/// but the load.
fn admitted(stack: &TestStack) -> u64 {
    let metrics = &stack.data.metrics;
    metrics.token_verifications.count("valid") + metrics.token_cache_hits.get()
}

/// The requests of one round: the first, which starts the load, and five that join it.
struct Round {
    first: JoinHandle<Code>,
    others: Vec<JoinHandle<Code>>,
}

/// With `proxy` holding, starts one request and waits until the data-service has started its
/// credential load, then five more, and waits until all five are admitted.
async fn first_then_five(stack: &TestStack, first: (String, Duration), others: String) -> Round {
    let client = stack.data.client().await;
    let loads = || stack.data.metrics.credential_loads.get();
    let loads_before = loads();
    let first = tokio::spawn(get_missing(client.clone(), first.0, first.1));
    assert!(
        eventually(PATIENCE, || async { loads() > loads_before }).await,
        "the first request started a credential load (before its deadline, if it has one)"
    );
    let admitted_before = admitted(stack);
    let others = (0..5)
        .map(|_| tokio::spawn(get_missing(client.clone(), others.clone(), PATIENCE)))
        .collect();
    assert!(
        eventually(PATIENCE, || async {
            admitted(stack) >= admitted_before + 5
        })
        .await,
        "the other five requests were admitted while the load ran"
    );
    Round { first, others }
}

/// The codes the five other requests ended with.
async fn codes(others: Vec<JoinHandle<Code>>) -> Vec<Code> {
    let mut codes = Vec::new();
    for other in others {
        codes.push(other.await.expect("other request"));
    }
    codes
}

#[tokio::test]
async fn a_request_whose_deadline_passes_does_not_fail_the_load_the_others_wait_for() {
    let (stack, proxy) = held_auth_stack().await;
    let user = stack.user().await;
    proxy.hold();

    let impatient = (user.token.clone(), IMPATIENT);
    let round = first_then_five(&stack, impatient, user.token.clone()).await;
    let first = round.first.await.expect("first request");
    proxy.release();
    let others = codes(round.others).await;

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
    let (stack, proxy) = held_auth_stack().await;
    let mut auth = stack.auth.client().await;
    let user = TestUser::register(&mut auth).await;
    let ended = user.login(&mut auth).await;
    let live = user.login(&mut auth).await;
    // Held from before the Logout, so the feed has not told the data-service yet: the ended
    // session's token is admitted and starts the load, which the auth-service then refuses.
    proxy.hold();
    auth.logout(LogoutRequest {
        refresh_token: ended.refresh_token,
    })
    .await
    .expect("Logout");

    let stale = (ended.access_token, PATIENCE);
    let round = first_then_five(&stack, stale, live.access_token).await;
    proxy.release();
    let first = round.first.await.expect("first request");
    let others = codes(round.others).await;

    assert_eq!(first, Code::Unauthenticated, "the ended session is refused");
    assert_eq!(others, [Code::NotFound; 5], "the live session is served");
}
