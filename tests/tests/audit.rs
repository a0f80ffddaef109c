//! The security audit log, captured from the auth-service's own JSON log output in this test
//! process: every security event is one line under target `audit` with its event, outcome and
//! who (user id, folded username, client address, session), and no line anywhere carries a
//! password, a token or a signing key.
//!
//! To add an event: drive it through the API in a test that starts with `AuditLog::capture()`,
//! find its line with `of_username`/`of_user`, check it with [`expect_line`], and pass every
//! secret the test handled to `assert_free_of`.

use auth_service::config::Settings;
use common::proto::auth::v1::{
    LoginRequest, LogoutAllRequest, LogoutRequest, RefreshRequest, RegisterRequest,
    auth_service_client::AuthServiceClient,
};
use secrecy::ExposeSecret;
use serde_json::Value;
use tests::{
    audit::AuditLog,
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
};
use tonic::{Code, Request, transport::Channel};

/// What one audit line must say: `event`, `outcome`, and these fields (absent when `None`).
struct Expected<'a> {
    event: &'a str,
    outcome: &'a str,
    user_id: Option<&'a str>,
    username: Option<&'a str>,
    session_id: Option<&'a str>,
    client_addr: &'a str,
}

/// Finds the one line of `expected.event` among `lines` and checks every field of it.
fn expect_line(lines: &[Value], expected: &Expected) {
    let found: Vec<_> = lines
        .iter()
        .filter(|line| line["event"] == expected.event)
        .collect();
    assert_eq!(found.len(), 1, "one {} line in {lines:#?}", expected.event);
    let line = found[0];
    assert_eq!(line["message"], "security event", "{line}");
    assert_eq!(line["outcome"], expected.outcome, "{line}");
    assert_eq!(line["client_addr"], expected.client_addr, "{line}");
    for (name, value) in [
        ("user_id", expected.user_id),
        ("username", expected.username),
        ("session_id", expected.session_id),
    ] {
        match value {
            Some(value) => assert_eq!(line[name], value, "{name} in {line}"),
            None => assert!(line.get(name).is_none(), "no {name} in {line}"),
        }
    }
}

/// The signing key and every password and token a test handled: none may be logged.
fn secrets_of(auth: &TestAuth, users: &[&TestUser], tokens: &[&str]) -> Vec<String> {
    let mut secrets = vec![auth.signing_key.expose_secret().to_owned()];
    secrets.extend(users.iter().map(|user| user.password.clone()));
    secrets.extend(tokens.iter().map(|token| (*token).to_owned()));
    secrets
}

async fn spawn(settings: Settings) -> (TestAuth, AuthServiceClient<Channel>) {
    let auth = TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await;
    let client = auth.client().await;
    (auth, client)
}

#[tokio::test]
async fn register_login_and_logouts_are_audited_without_secrets() {
    let log = AuditLog::capture();
    let (auth, mut client) = spawn(TestAuth::settings()).await;
    let user = TestUser::register(&mut client).await;
    let first = user.login(&mut client).await;
    let second = user.login(&mut client).await;
    let wrong = "not the password at all";
    let failed = client
        .login(LoginRequest {
            username: user.username.to_uppercase(),
            password: wrong.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    client
        .logout(LogoutRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap();
    client
        .logout_all(with_bearer(LogoutAllRequest {}, &second.access_token))
        .await
        .unwrap();

    assert_eq!(failed.code(), Code::Unauthenticated);
    let lines = log.of_username(&user.username);
    let events: Vec<_> = lines.iter().map(|line| line["event"].clone()).collect();
    assert_eq!(events, ["register", "login", "login", "login", "logout"]);
    let (uid, name) = (user.user_id.as_str(), user.username.as_str());
    expect_line(
        &lines[..1],
        &Expected {
            event: "register",
            outcome: "succeeded",
            user_id: Some(uid),
            username: Some(name),
            session_id: None,
            client_addr: "127.0.0.1",
        },
    );
    let first_session = auth.session_of(&first.access_token).await;
    expect_line(
        &lines[1..2],
        &Expected {
            event: "login",
            outcome: "succeeded",
            user_id: Some(uid),
            username: Some(name),
            session_id: Some(&first_session),
            client_addr: "127.0.0.1",
        },
    );
    expect_line(
        &lines[3..4],
        &Expected {
            event: "login",
            outcome: "failed",
            user_id: None,
            username: Some(name),
            session_id: None,
            client_addr: "127.0.0.1",
        },
    );
    expect_line(
        &lines,
        &Expected {
            event: "logout",
            outcome: "succeeded",
            user_id: Some(uid),
            username: Some(name),
            session_id: Some(&first_session),
            client_addr: "127.0.0.1",
        },
    );
    // LogoutAll acts on a bearer token: the user and the caller's session, no username.
    expect_line(
        &log.of_user(uid),
        &Expected {
            event: "logout_all",
            outcome: "succeeded",
            user_id: Some(uid),
            username: None,
            session_id: Some(&auth.session_of(&second.access_token).await),
            client_addr: "127.0.0.1",
        },
    );
    let tokens = [
        first.access_token.as_str(),
        &first.refresh_token,
        &second.access_token,
        &second.refresh_token,
        wrong,
    ];
    log.assert_free_of(&secrets_of(&auth, &[&user], &tokens));
}

#[tokio::test]
async fn a_reused_refresh_token_is_audited() {
    let log = AuditLog::capture();
    let (auth, mut client) = spawn(TestAuth::settings()).await;
    let user = TestUser::register(&mut client).await;
    let login = user.login(&mut client).await;
    let mut current = login.refresh_token.clone();
    let mut handed_out = vec![current.clone()];
    for _ in 0..2 {
        let refreshed = client
            .refresh(RefreshRequest {
                refresh_token: current.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        current = refreshed.refresh_token;
        handed_out.extend([current.clone(), refreshed.access_token]);
    }

    // Two generations old: reuse at once, whatever the grace.
    let reused = client
        .refresh(RefreshRequest {
            refresh_token: login.refresh_token.clone(),
        })
        .await
        .unwrap_err();

    assert_eq!(reused.code(), Code::Unauthenticated);
    expect_line(
        &log.of_user(&user.user_id),
        &Expected {
            event: "refresh_reuse",
            outcome: "failed",
            user_id: Some(&user.user_id),
            username: Some(&user.username),
            session_id: Some(&auth.session_of(&login.access_token).await),
            client_addr: "127.0.0.1",
        },
    );
    handed_out.push(login.access_token);
    let tokens: Vec<&str> = handed_out.iter().map(String::as_str).collect();
    log.assert_free_of(&secrets_of(&auth, &[&user], &tokens));
}

#[tokio::test]
async fn a_throttled_call_is_audited_with_the_forwarded_address() {
    let log = AuditLog::capture();
    let mut settings = TestAuth::settings();
    settings.throttle.throttle_per_second = 1;
    settings.throttle.throttle_burst = 1;
    settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let (_auth, mut client) = spawn(settings).await;
    // An address no other test of this binary uses.
    let end_user = format!("2001:db8:{:x}::7", rand::random::<u16>());
    let password = "a password never to be logged";
    let register = || {
        let mut request = Request::new(RegisterRequest {
            username: format!("user-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            password: password.into(),
        });
        request
            .metadata_mut()
            .insert("x-forwarded-for", end_user.parse().unwrap());
        request
    };
    client.register(register()).await.unwrap();

    let refused = client.register(register()).await.unwrap_err();

    assert_eq!(refused.code(), Code::ResourceExhausted);
    let lines = log.events(|fields| fields["client_addr"] == end_user.as_str());
    let events: Vec<_> = lines.iter().map(|line| line["event"].clone()).collect();
    assert_eq!(events, ["register", "rate_limited"]);
    expect_line(
        &lines,
        &Expected {
            event: "rate_limited",
            outcome: "refused",
            user_id: None,
            username: None,
            session_id: None,
            client_addr: &end_user,
        },
    );
    log.assert_free_of(&[password]);
}
