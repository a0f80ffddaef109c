//! Password strength through Register, against dynalite: easily guessed passwords and
//! passwords holding the username are refused with a BadRequest that says why and never
//! quotes the password.

use common::proto::auth::v1::{RegisterRequest, auth_service_client::AuthServiceClient};
use tests::auth::TestAuth;
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

fn unique_name() -> String {
    format!("user-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Registers `username` with `password`: the password violation's description if refused.
async fn password_violation(
    client: &mut AuthServiceClient<Channel>,
    username: &str,
    password: &str,
) -> Option<String> {
    let status = client
        .register(RegisterRequest {
            username: username.into(),
            password: password.into(),
        })
        .await
        .err()?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(!status.message().contains(password), "{status:?}");
    let details = status.get_error_details();
    let violations = &details.bad_request().expect("BadRequest").field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, "password");
    assert!(
        !violations[0].description.contains(password),
        "{violations:?}"
    );
    Some(violations[0].description.clone())
}

#[tokio::test]
async fn easily_guessed_passwords_are_refused_with_advice() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;

    for password in [
        "qwertyuiop123",
        "Summer2024!",
        "correcthorse",
        "jennifer1984",
    ] {
        let refused = password_violation(&mut client, &unique_name(), password).await;

        let description = refused.unwrap_or_else(|| panic!("{password:?} was accepted"));
        assert!(
            description.starts_with("too easy to guess: "),
            "{description}"
        );
        assert!(
            description.to_lowercase().contains("add another word"),
            "{description}"
        );
    }
}

#[tokio::test]
async fn passwords_containing_the_username_are_refused() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let username = unique_name();

    for password in [
        format!("{username} is my name"),
        format!("Kx7#{}!", username.to_uppercase()),
    ] {
        let refused = password_violation(&mut client, &username, &password).await;

        assert_eq!(
            refused.as_deref(),
            Some("must not contain the username"),
            "{password}"
        );
    }
}

#[tokio::test]
async fn strong_passwords_are_accepted() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;

    for password in [
        "correct horse battery staple".to_owned(),
        format!("pw-{}", uuid::Uuid::new_v4()),
        "Xk9#mQ2$vL7!pR4^wN8&zT3*bY6@cH1%".repeat(8),
    ] {
        let refused = password_violation(&mut client, &unique_name(), &password).await;

        assert_eq!(refused, None, "{password}");
    }
}

#[tokio::test]
async fn the_minimum_score_is_a_setting() {
    let mut lenient = TestAuth::settings();
    lenient.passwords.min_password_score = 0;
    let mut strict = TestAuth::settings();
    strict.passwords.min_password_score = 4;
    let endpoints = tests::auth::Endpoints::dynalite_only().await;
    let lenient = TestAuth::spawn_with(lenient, endpoints.clone()).await;
    let strict = TestAuth::spawn_with(strict, endpoints).await;

    // zxcvbn scores it 2: easy to guess, but not a listed common password.
    let weak = "correcthorse";
    let refused = password_violation(&mut lenient.client().await, &unique_name(), weak).await;
    assert_eq!(refused, None, "score 0 turns the strength check off");
    // Scored 3: enough by default, not for a minimum of 4.
    let fair = "ilovemydog";
    let refused = password_violation(&mut strict.client().await, &unique_name(), fair).await;
    assert_eq!(
        refused.as_deref(),
        Some("too easy to guess: add another word or two")
    );
    // The other rules still hold with the check off.
    let username = unique_name();
    let holding_name = format!("{username} is my name");
    let refused = password_violation(&mut lenient.client().await, &username, &holding_name).await;
    assert_eq!(refused.as_deref(), Some("must not contain the username"));
}
