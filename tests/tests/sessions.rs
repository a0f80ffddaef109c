//! Sessions through the auth-service's API, against dynalite: refresh-token rotation, the
//! retry grace, reuse detection, logout and the per-user session cap.

use std::{collections::HashSet, sync::Arc, time::Duration};

use auth_service::config::Settings;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::clock::ManualClock;
use common::proto::auth::v1::{
    LogoutAllRequest, LogoutRequest, auth_service_client::AuthServiceClient,
};
use tests::auth::{Endpoints, TestAuth, TestUser, refresh, with_bearer};
use time::OffsetDateTime;
use tonic::{Code, Status, transport::Channel};

type Client = AuthServiceClient<Channel>;

/// An auth-service on the shared dynalite with `change` applied to the test settings.
async fn auth_with(change: impl FnOnce(&mut Settings)) -> TestAuth {
    let mut settings = TestAuth::settings();
    change(&mut settings);
    TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await
}

async fn logout(client: &mut Client, token: &str) -> Result<(), Status> {
    client
        .logout(LogoutRequest {
            refresh_token: token.to_owned(),
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn refresh_rotates_tokens_and_the_new_access_token_verifies() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let login = user.login(&mut client).await;

    let refreshed = refresh(&mut client, &login.refresh_token).await.unwrap();

    assert_ne!(refreshed.refresh_token, login.refresh_token);
    assert_ne!(refreshed.access_token, login.access_token);
    let keys = auth.published_keys().await;
    let before = auth.verifier().verify(&keys, &login.access_token).unwrap();
    let after = auth
        .verifier()
        .verify(&keys, &refreshed.access_token)
        .unwrap();
    assert_eq!(after.user_id, user.user_id);
    assert_eq!(after.session_id, before.session_id, "same session");
    assert_ne!(after.token_id, before.token_id);
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_all_get_one_successor() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let mut token = user.login(&mut client).await.refresh_token;

    for round in 0..4 {
        let attempts = (0..30).map(|_| {
            let (mut client, token) = (client.clone(), token.clone());
            async move { refresh(&mut client, &token).await }
        });
        let results = futures::future::join_all(attempts).await;

        let successors: HashSet<_> = results
            .iter()
            .map(|r| {
                r.as_ref()
                    .expect("every racer succeeds")
                    .refresh_token
                    .clone()
            })
            .collect();
        assert_eq!(successors.len(), 1, "round {round}: one successor");
        let successor = successors.into_iter().next().unwrap();
        assert_ne!(successor, token, "round {round}: rotated");
        token = successor;
    }
    refresh(&mut client, &token)
        .await
        .expect("the last successor lives on");
}

#[tokio::test]
async fn a_retry_within_the_grace_gets_the_same_successor() {
    let auth = auth_with(|s| s.refresh_retry_grace_secs = 60).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let first = user.login(&mut client).await.refresh_token;

    let lost = refresh(&mut client, &first).await.unwrap();
    let retried = refresh(&mut client, &first).await.unwrap();

    assert_eq!(retried.refresh_token, lost.refresh_token);
    assert_eq!(
        retried.refresh_token_expires_at,
        lost.refresh_token_expires_at
    );
    assert_ne!(
        retried.access_token, lost.access_token,
        "a fresh access token"
    );
    let next = refresh(&mut client, &retried.refresh_token)
        .await
        .expect("the successor still works");
    refresh(&mut client, &next.refresh_token)
        .await
        .expect("and so does the session");
}

#[tokio::test]
async fn reused_refresh_token_revokes_the_session() {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let mut settings = TestAuth::settings();
    settings.refresh_retry_grace_secs = 1;
    let endpoints = Endpoints::dynalite_only().await;
    let auth = TestAuth::spawn_with_clock(settings, endpoints, clock.clone()).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let first = user.login(&mut client).await.refresh_token;
    let second = refresh(&mut client, &first).await.unwrap().refresh_token;

    let grace = Duration::from_secs(auth.settings.refresh_retry_grace_secs);
    clock.advance(grace + Duration::from_millis(500));
    let reuse = refresh(&mut client, &first).await.unwrap_err();
    let newest = refresh(&mut client, &second).await.unwrap_err();

    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert_eq!(
        newest.code(),
        Code::Unauthenticated,
        "the whole family is revoked"
    );
    let other_session = user.login(&mut client).await;
    refresh(&mut client, &other_session.refresh_token)
        .await
        .expect("other sessions are untouched");
}

#[tokio::test]
async fn a_token_two_generations_old_revokes_the_session_at_once() {
    let auth = auth_with(|s| s.refresh_retry_grace_secs = 60).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let first = user.login(&mut client).await.refresh_token;
    let second = refresh(&mut client, &first).await.unwrap().refresh_token;
    let third = refresh(&mut client, &second).await.unwrap().refresh_token;

    let reuse = refresh(&mut client, &first).await.unwrap_err();
    let newest = refresh(&mut client, &third).await.unwrap_err();

    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert_eq!(newest.code(), Code::Unauthenticated, "revoked within grace");
}

/// `dgr1_` + user id ‖ session id ‖ a random secret: what anyone who has seen one of the
/// victim's access tokens (even an expired one) can build.
fn forge_refresh_token(user_id: &str, session_id: &str) -> String {
    let mut raw = Vec::new();
    raw.extend_from_slice(uuid::Uuid::parse_str(user_id).unwrap().as_bytes());
    raw.extend_from_slice(uuid::Uuid::parse_str(session_id).unwrap().as_bytes());
    raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("dgr1_{}", URL_SAFE_NO_PAD.encode(raw))
}

#[tokio::test]
async fn a_forged_refresh_token_is_refused_and_revokes_nothing() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let victim = TestUser::register(&mut client).await;
    let login = victim.login(&mut client).await;
    let keys = auth.published_keys().await;
    let claims = auth.verifier().verify(&keys, &login.access_token).unwrap();
    let forged = forge_refresh_token(&claims.user_id, &claims.session_id);

    let refreshed = refresh(&mut client, &forged).await.unwrap_err();
    let logged_out = logout(&mut client, &forged).await.unwrap_err();

    assert_eq!(refreshed.code(), Code::Unauthenticated);
    assert_eq!(logged_out.code(), Code::Unauthenticated);
    refresh(&mut client, &login.refresh_token)
        .await
        .expect("the victim's session keeps working");
}

#[tokio::test]
async fn logout_accepts_the_previous_token_within_the_grace() {
    let auth = auth_with(|s| s.refresh_retry_grace_secs = 60).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let first = user.login(&mut client).await.refresh_token;
    let lost = refresh(&mut client, &first).await.unwrap().refresh_token;

    let logged_out = logout(&mut client, &first).await;
    let retried = logout(&mut client, &first).await;
    let after = refresh(&mut client, &lost).await.unwrap_err();

    assert!(logged_out.is_ok(), "{logged_out:?}");
    assert!(retried.is_ok(), "{retried:?}");
    assert_eq!(after.code(), Code::Unauthenticated, "the session ended");
}

#[tokio::test]
async fn logout_ends_the_session_and_may_be_retried() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let token = user.login(&mut client).await.refresh_token;

    logout(&mut client, &token).await.unwrap();
    let retried = logout(&mut client, &token).await;
    let refreshed = refresh(&mut client, &token).await.unwrap_err();

    assert!(retried.is_ok(), "{retried:?}");
    assert_eq!(refreshed.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn garbage_refresh_tokens_are_unauthenticated() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    for token in [
        "",
        "dgr1_",
        "dgr1_not-base64!!",
        &format!("dgr1_{}", "A".repeat(86)),
        "x".repeat(10_000).as_str(),
    ] {
        let refreshed = refresh(&mut client, token).await.unwrap_err();
        let logged_out = logout(&mut client, token).await.unwrap_err();
        assert_eq!(refreshed.code(), Code::Unauthenticated, "{token:.20}");
        assert_eq!(logged_out.code(), Code::Unauthenticated, "{token:.20}");
    }
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_caller_only() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let bystander = TestUser::register(&mut client).await;
    let sessions = [
        user.login(&mut client).await,
        user.login(&mut client).await,
        user.login(&mut client).await,
    ];
    logout(&mut client, &sessions[2].refresh_token)
        .await
        .unwrap();
    let bystander_session = bystander.login(&mut client).await;

    let revoked = client
        .logout_all(with_bearer(LogoutAllRequest {}, &sessions[0].access_token))
        .await
        .unwrap()
        .into_inner()
        .sessions_revoked;

    assert_eq!(revoked, 2, "the two sessions still active");
    for session in &sessions {
        let status = refresh(&mut client, &session.refresh_token)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    refresh(&mut client, &bystander_session.refresh_token)
        .await
        .expect("another user's session is untouched");
}

/// A user's session items as stored: (created_at, session_id, revoked, ttl).
async fn stored_sessions(auth: &TestAuth, user_id: &str) -> Vec<(i64, String, bool, i64)> {
    let number = |item: &std::collections::HashMap<String, AttributeValue>, name: &str| {
        item[name].as_n().unwrap().parse::<i64>().unwrap()
    };
    auth.dynamodb
        .query()
        .table_name(&auth.settings.sessions_table)
        .key_condition_expression("user_id = :user")
        .expression_attribute_values(":user", AttributeValue::S(user_id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|item| {
            (
                number(item, "created_at"),
                item["session_id"].as_s().unwrap().clone(),
                item.contains_key("revoked_at"),
                number(item, "ttl"),
            )
        })
        .collect()
}

#[tokio::test]
async fn logins_beyond_the_session_cap_end_the_oldest_sessions() {
    let auth = auth_with(|s| s.max_sessions_per_user = 3).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    let mut logins = Vec::new();
    for _ in 0..5 {
        logins.push(user.login(&mut client).await);
    }

    for (i, login) in logins.iter().enumerate() {
        let outcome = refresh(&mut client, &login.refresh_token).await;
        assert_eq!(outcome.is_ok(), i >= 2, "login {i}: {outcome:?}");
    }
    let day_from_now = time::OffsetDateTime::now_utc().unix_timestamp() + 86_400;
    let stored = stored_sessions(&auth, &user.user_id).await;
    let revoked_ttls: Vec<_> = stored.iter().filter(|s| s.2).map(|s| s.3).collect();
    assert_eq!(revoked_ttls.len(), 2);
    assert!(
        revoked_ttls.iter().all(|&ttl| ttl <= day_from_now),
        "revoked items leave within a day: {revoked_ttls:?}"
    );
    let revoked = client
        .logout_all(with_bearer(LogoutAllRequest {}, &logins[4].access_token))
        .await
        .unwrap()
        .into_inner()
        .sessions_revoked;
    assert_eq!(revoked, 3);
}

#[tokio::test]
async fn a_burst_of_logins_converges_to_the_newest_sessions_under_the_cap() {
    let auth = auth_with(|s| {
        s.max_sessions_per_user = 3;
        // Each login counts toward the lockout until it succeeds: 8 at once need room for 8.
        s.lockout.threshold = 10;
    })
    .await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    let logins = (0..8).map(|_| {
        let (mut client, user) = (client.clone(), user.clone());
        async move { user.login(&mut client).await }
    });
    let logins = futures::future::join_all(logins).await;

    let mut stored = stored_sessions(&auth, &user.user_id).await;
    stored.sort();
    let live: Vec<_> = stored.iter().filter(|s| !s.2).map(|s| &s.1).collect();
    let newest: Vec<_> = stored.iter().rev().take(3).rev().map(|s| &s.1).collect();
    assert_eq!(stored.len(), 8);
    assert_eq!(live, newest, "the newest three live on");
    let keys = auth.published_keys().await;
    let live_login = logins
        .iter()
        .find(|login| {
            let claims = auth.verifier().verify(&keys, &login.access_token).unwrap();
            live.contains(&&claims.session_id)
        })
        .expect("a login of a live session");
    let revoked = client
        .logout_all(with_bearer(LogoutAllRequest {}, &live_login.access_token))
        .await
        .unwrap()
        .into_inner()
        .sessions_revoked;
    assert_eq!(revoked, 3);
}
