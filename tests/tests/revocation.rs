//! What a data-service does without a revocation feed it can trust: an auth-service that
//! answers WatchRevocations with UNIMPLEMENTED (one built before the feed, or the feed cut by
//! [`FeedProxy`]) never counts as current, so the data-service stays NOT_SERVING and answers
//! UNAVAILABLE with RetryInfo rather than trust tokens that may have been revoked.

use std::time::Duration;

use common::proto::data::v1::GetItemRequest;
use tests::{
    auth::with_bearer,
    data::{TestData, TestStack},
    feed_proxy::FeedProxy,
    wait_serving, wait_status,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

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
