//! The auth-service through its gRPC API, against dynalite.

use std::{collections::HashSet, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    proto::auth::v1::{LoginRequest, LogoutAllRequest, RegisterRequest},
    tokens::TokenError,
};
use tests::auth::{Endpoints, TestAuth, TestUser, kid_of, with_bearer};
use tonic::Code;

#[tokio::test]
async fn a_registered_user_logs_in_and_gets_tokens_the_published_keys_verify() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    let login = user.login(&mut client).await;

    assert_eq!(login.user_id, user.user_id);
    let keys = auth.published_keys().await;
    let principal = auth.verifier().verify(&keys, &login.access_token).unwrap();
    assert_eq!(principal.user_id, user.user_id);
    let expires_at = login.access_token_expires_at.unwrap();
    assert_eq!(principal.expires_at.unix_timestamp(), expires_at.seconds);
    let refresh_expires = login.refresh_token_expires_at.unwrap();
    assert!(refresh_expires.seconds > expires_at.seconds);
    assert!(kid_of(&login.access_token).starts_with("k4.pid."));
}

#[tokio::test]
async fn usernames_are_case_insensitive_and_unique() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    let shouting = client
        .register(RegisterRequest {
            username: user.username.to_uppercase(),
            password: "another good password".into(),
        })
        .await
        .unwrap_err();
    let login = client
        .login(LoginRequest {
            username: user.username.to_uppercase(),
            password: user.password.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(shouting.code(), Code::AlreadyExists);
    assert_eq!(login.user_id, user.user_id);
}

#[tokio::test]
async fn concurrent_registrations_of_one_username_have_exactly_one_winner() {
    let auth = TestAuth::spawn().await;
    let client = auth.client().await;
    let username = format!("race-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    let attempts = (0..8).map(|i| {
        let mut client = client.clone();
        let username = username.clone();
        async move {
            client
                .register(RegisterRequest {
                    username,
                    password: format!("password number {i}"),
                })
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;

    let winners = results.iter().filter(|r| r.is_ok()).count();
    let losers: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        losers
            .iter()
            .all(|status| status.code() == Code::AlreadyExists),
        "{losers:?}"
    );
}

#[tokio::test]
async fn invalid_registrations_name_every_bad_field() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;

    let status = client
        .register(RegisterRequest {
            username: "no spaces allowed".into(),
            password: "short".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = tests::violated_fields(&status);
    assert_eq!(fields, ["username", "password"]);
}

#[tokio::test]
async fn common_passwords_and_out_of_range_lengths_are_refused() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    for (username, password) in [
        ("ab", "a perfectly fine password"),
        ("x".repeat(65).as_str(), "a perfectly fine password"),
        ("fine-name", "password123"),
        ("fine-name", &"p".repeat(257)),
    ] {
        let status = client
            .register(RegisterRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{username} / {password}"
        );
    }
}

#[tokio::test]
async fn login_failures_look_the_same_and_cost_the_same_argon2_work() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let verifications = || auth.metrics.password_verifications.get();

    let before = verifications();
    let wrong_password = client
        .login(LoginRequest {
            username: user.username.clone(),
            password: "not the password".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let after_wrong_password = verifications();
    let unknown_user = client
        .login(LoginRequest {
            username: "nobody-by-this-name".into(),
            password: "not the password".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let after_unknown_user = verifications();
    let malformed_user = client
        .login(LoginRequest {
            username: "not a valid name!".into(),
            password: "not the password".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();

    for status in [&wrong_password, &unknown_user, &malformed_user] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), wrong_password.message());
        assert!(status.details().is_empty());
    }
    assert_eq!(after_wrong_password - before, 1);
    assert_eq!(after_unknown_user - after_wrong_password, 1);
    assert_eq!(verifications() - after_unknown_user, 1);
}

#[tokio::test]
async fn logout_all_refuses_missing_tampered_expired_and_foreign_tokens() {
    let auth = TestAuth::spawn().await;
    let other = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let token = user.login(&mut client).await.access_token;
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let mut expired = auth.claims(&user.user_id);
    expired["exp"] = serde_json::json!("2020-01-01T00:00:00Z");
    let mut foreign_client = other.client().await;
    let foreign = TestUser::register(&mut foreign_client)
        .await
        .login(&mut foreign_client)
        .await;

    let missing = client.logout_all(LogoutAllRequest {}).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    for bad in [
        String::from_utf8(tampered).unwrap(),
        auth.forge(&expired),
        foreign.access_token,
        "v4.public.garbage".to_owned(),
    ] {
        let status = client
            .logout_all(with_bearer(LogoutAllRequest {}, &bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{bad:.40}");
        assert_eq!(
            status.message(),
            missing.message(),
            "one message for every failure"
        );
    }
}

#[tokio::test]
async fn the_verifier_rejects_every_kind_of_bad_token() {
    let auth = TestAuth::spawn().await;
    let keys = auth.published_keys().await;
    let verifier = auth.verifier();
    let user_id = uuid::Uuid::new_v4().to_string();
    let genuine = auth.forge(&auth.claims(&user_id));
    assert!(
        verifier.verify(&keys, &genuine).is_ok(),
        "the baseline must pass"
    );

    let with = |claim: &str, value: serde_json::Value| {
        let mut claims = auth.claims(&user_id);
        claims[claim] = value;
        auth.forge(&claims)
    };
    let without = |claim: &str| {
        let mut claims = auth.claims(&user_id);
        claims.as_object_mut().unwrap().remove(claim);
        auth.forge(&claims)
    };
    let rejected = [
        ("expired", with("exp", "2020-01-01T00:00:00Z".into())),
        ("not yet valid", with("nbf", "2999-01-01T00:00:00Z".into())),
        (
            "issued in the future",
            with("iat", "2999-01-01T00:00:00Z".into()),
        ),
        ("wrong audience", with("aud", "someone-else".into())),
        ("wrong issuer", with("iss", "evil-issuer".into())),
        ("no expiry", without("exp")),
        ("no subject", without("sub")),
        ("no session", without("sid")),
        ("empty subject", with("sub", "".into())),
    ];
    for (case, token) in &rejected {
        assert_eq!(
            verifier.verify(&keys, token),
            Err(TokenError::Rejected),
            "{case}"
        );
    }

    let (body, _footer) = genuine.rsplit_once('.').unwrap();
    let unknown_kid = format!(
        "{body}.{}",
        b64(br#"{"kid":"k4.pid.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#)
    );
    assert!(matches!(
        verifier.verify(&keys, &unknown_kid),
        Err(TokenError::UnknownKey { .. })
    ));
    for (case, token) in [
        ("no footer", body.to_owned()),
        ("footer not json", format!("{body}.{}", b64(b"kid"))),
        (
            "footer with extra fields",
            format!("{body}.{}", b64(br#"{"kid":"k4.pid.x","x":1}"#)),
        ),
        (
            "oversized footer",
            format!(
                "{body}.{}",
                b64(format!(r#"{{"kid":"k4.pid.{}"}}"#, "A".repeat(200)).as_bytes())
            ),
        ),
        ("oversized token", format!("{genuine}{}", "A".repeat(3000))),
        (
            "local token",
            genuine.replacen("v4.public.", "v4.local.", 1),
        ),
        ("v3 token", genuine.replacen("v4.public.", "v3.public.", 1)),
    ] {
        assert_eq!(
            verifier.verify(&keys, &token),
            Err(TokenError::Malformed),
            "{case}"
        );
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn login_rehashes_a_password_when_the_cost_changes() {
    let mut settings = TestAuth::settings();
    let old = TestAuth::spawn_with(settings.clone(), Endpoints::dynalite_only().await).await;
    let mut client = old.client().await;
    let user = TestUser::register(&mut client).await;
    let stored_hash = |auth: &TestAuth| {
        let (dynamodb, table, username) = (
            auth.dynamodb.clone(),
            auth.settings.users_table.clone(),
            user.username.clone(),
        );
        async move {
            let item = dynamodb
                .get_item()
                .table_name(table)
                .key("username", AttributeValue::S(username))
                .send()
                .await
                .unwrap()
                .item
                .unwrap();
            item["password_hash"].as_s().unwrap().clone()
        }
    };
    let before = stored_hash(&old).await;
    old.stop().await;

    settings.argon2_memory_kib *= 2;
    let new = TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await;
    user.login(&mut new.client().await).await;
    let after = stored_hash(&new).await;

    assert!(
        before.contains(&format!("m={}", tests::auth::TEST_ARGON2_MEMORY_KIB)),
        "{before}"
    );
    assert!(
        after.contains(&format!("m={}", tests::auth::TEST_ARGON2_MEMORY_KIB * 2)),
        "{after}"
    );
    user.login(&mut new.client().await).await;
}

#[tokio::test]
async fn health_turns_serving_once_the_tables_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let auth = TestAuth::spawn().await;

    let service = tests::wait_serving(auth.addr, "dynagate.auth.v1.AuthService").await;
    // Checked once, not awaited: the overall status moves together with the service's.
    let overall = tests::wait_status(auth.addr, "", ServingStatus::Serving, Duration::ZERO).await;

    assert!(service, "the AuthService status");
    assert!(overall, "the whole server's status");
}

#[tokio::test]
async fn every_signing_key_is_published_and_only_the_newest_signs() {
    let (old_key, old_kid) = auth_service::keys::generate_paserk().unwrap();
    let (new_key, new_kid) = auth_service::keys::generate_paserk().unwrap();
    let mut settings = TestAuth::settings();
    settings.signing_keys = Some(secrecy::SecretString::from(format!(
        "{}\n{}",
        secrecy::ExposeSecret::expose_secret(&old_key),
        secrecy::ExposeSecret::expose_secret(&new_key)
    )));
    let auth = TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await;
    let mut client = auth.client().await;

    let listed = client
        .list_signing_keys(common::proto::auth::v1::ListSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let user = TestUser::register(&mut client).await;
    let token = user.login(&mut client).await.access_token;

    let kids: HashSet<_> = listed.iter().map(|k| k.kid.clone()).collect();
    assert_eq!(kids, HashSet::from([old_kid, new_kid.clone()]));
    let active: Vec<_> = listed
        .iter()
        .filter(|k| k.active)
        .map(|k| k.kid.clone())
        .collect();
    assert_eq!(active, std::slice::from_ref(&new_kid));
    assert!(
        listed
            .iter()
            .all(|k| k.public_key.starts_with("k4.public."))
    );
    assert_eq!(kid_of(&token), new_kid);
}
