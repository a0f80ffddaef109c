//! Login and Register throttling per end-user address, through the gRPC API against dynalite:
//! the status and RetryInfo, separate budgets per address, `0` turning it off, what is not
//! throttled, and the trusted-proxy rule for `x-forwarded-for`. Time stands still (a manual
//! clock) unless a test moves it, so buckets refill only when told.

use std::{sync::Arc, time::Duration};

use auth_service::config::Settings;
use common::{
    clock::ManualClock,
    proto::auth::v1::{
        ListSigningKeysRequest, LogoutAllRequest, RefreshRequest, RegisterRequest,
        auth_service_client::AuthServiceClient,
    },
};
use tests::auth::{Endpoints, TestAuth, TestUser, with_bearer};
use time::OffsetDateTime;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

/// Test settings with a budget of `burst` calls per address, refilled at one per second.
fn throttled(burst: u32) -> Settings {
    let mut settings = TestAuth::settings();
    settings.throttle.throttle_per_second = 1;
    settings.throttle.throttle_burst = burst;
    settings
}

async fn spawn(settings: Settings) -> (TestAuth, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let endpoints = Endpoints::dynalite_only().await;
    let auth = TestAuth::spawn_with_clock(settings, endpoints, clock.clone()).await;
    (auth, clock)
}

/// A Register that can only fail validation (a malformed name): it costs no hash, but the
/// throttle counts it like any other. `forwarded` goes in `x-forwarded-for`.
async fn cheap_register(
    client: &mut AuthServiceClient<Channel>,
    forwarded: Option<&str>,
) -> Result<(), Status> {
    let mut request = Request::new(RegisterRequest {
        username: "not a valid name!".into(),
        password: "irrelevant here".into(),
    });
    if let Some(forwarded) = forwarded {
        request
            .metadata_mut()
            .insert("x-forwarded-for", forwarded.parse().unwrap());
    }
    match client.register(request).await {
        Err(status) if status.code() == Code::InvalidArgument => Ok(()),
        Err(status) => Err(status),
        Ok(_) => panic!("a malformed name was registered"),
    }
}

/// The RetryInfo delay of a throttled call.
fn throttled_for(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status.get_error_details().retry_info().cloned();
    retry
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay")
}

#[tokio::test]
async fn calls_beyond_the_budget_are_refused_with_retry_info_until_it_refills() {
    let (auth, clock) = spawn(throttled(3)).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    user.login(&mut client).await;
    user.login(&mut client).await;

    let refused = client
        .login(common::proto::auth::v1::LoginRequest {
            username: user.username.clone(),
            password: user.password.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();

    let delay = throttled_for(&refused);
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );
    assert!(
        cheap_register(&mut client, None).await.is_err(),
        "still empty"
    );
    clock.advance(delay);
    user.login(&mut client).await;
}

#[tokio::test]
async fn a_spoofed_forwarded_address_from_an_untrusted_peer_is_ignored() {
    let (auth, _clock) = spawn(throttled(2)).await;
    let mut client = auth.client().await;

    cheap_register(&mut client, Some("198.51.100.1"))
        .await
        .unwrap();
    cheap_register(&mut client, Some("198.51.100.2"))
        .await
        .unwrap();
    let refused = cheap_register(&mut client, Some("198.51.100.3")).await;

    throttled_for(&refused.unwrap_err());
    let without_header = cheap_register(&mut client, None).await;
    throttled_for(&without_header.unwrap_err());
}

#[tokio::test]
async fn a_trusted_proxy_gives_each_forwarded_address_its_own_budget() {
    let mut settings = throttled(2);
    settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let (auth, _clock) = spawn(settings).await;
    let mut client = auth.client().await;

    for _ in 0..2 {
        cheap_register(&mut client, Some("198.51.100.1, 127.0.0.1"))
            .await
            .unwrap();
    }
    let refused = cheap_register(&mut client, Some("198.51.100.1")).await;

    throttled_for(&refused.unwrap_err());
    cheap_register(&mut client, Some("198.51.100.2"))
        .await
        .unwrap();
    cheap_register(&mut client, Some("198.51.100.2"))
        .await
        .unwrap();
    // The proxy's own calls (no header) are a third end user.
    cheap_register(&mut client, None).await.unwrap();
}

#[tokio::test]
async fn a_zero_rate_or_burst_turns_throttling_off() {
    for (rate, burst) in [(0, 1), (1, 0)] {
        let mut settings = TestAuth::settings();
        settings.throttle.throttle_per_second = rate;
        settings.throttle.throttle_burst = burst;
        let (auth, _clock) = spawn(settings).await;
        let mut client = auth.client().await;
        for _ in 0..20 {
            cheap_register(&mut client, None).await.unwrap();
        }
    }
}

#[tokio::test]
async fn refresh_and_bearer_calls_are_not_throttled() {
    let (auth, _clock) = spawn(throttled(2)).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let mut login = user.login(&mut client).await;
    throttled_for(&cheap_register(&mut client, None).await.unwrap_err());

    for _ in 0..5 {
        let refreshed = client
            .refresh(RefreshRequest {
                refresh_token: login.refresh_token.clone(),
            })
            .await
            .expect("Refresh is not throttled")
            .into_inner();
        login.refresh_token = refreshed.refresh_token;
        login.access_token = refreshed.access_token;
        client
            .list_signing_keys(ListSigningKeysRequest {})
            .await
            .expect("ListSigningKeys is not throttled");
    }
    let ended = client
        .logout_all(with_bearer(LogoutAllRequest {}, &login.access_token))
        .await
        .expect("LogoutAll is not throttled");

    assert_eq!(ended.into_inner().sessions_revoked, 1);
}
