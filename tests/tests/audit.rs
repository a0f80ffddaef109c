//! The security audit log, captured from the auth-service's own JSON log output in this test
//! process: every security event is one line under target `audit` with its event, outcome and
//! who (user id, folded username, client address, session), and no line anywhere carries a
//! password, a token or a signing key.
//!
//! To add an event: drive it through the API in a test that starts with `AuditLog::capture()`,
//! find its line with `of_username`/`of_user`, check it with [`expect_line`], and pass every
//! secret the test handled to `assert_free_of`.

use std::sync::Arc;

use auth_service::config::Settings;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::clock::ManualClock;
use common::proto::auth::v1::{
    ListSessionsRequest, LoginRequest, LogoutAllRequest, LogoutRequest, RefreshRequest,
    RegisterRequest, auth_service_client::AuthServiceClient,
};
use secrecy::ExposeSecret;
use serde_json::Value;
use tests::{
    audit::AuditLog,
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    raw::call_raw,
};
use time::OffsetDateTime;
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

/// A Login as `username` with a wrong password, in trace `trace_id` (32 hex digits): refused
/// as a wrong password, or as locked.
async fn failed_login(client: &mut AuthServiceClient<Channel>, username: &str, trace_id: &str) {
    let mut request = Request::new(LoginRequest {
        username: username.to_owned(),
        password: "certainly not the password".into(),
        ..Default::default()
    });
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    request
        .metadata_mut()
        .insert(common::trace::TRACEPARENT, traceparent.parse().unwrap());
    let status = client.login(request).await.unwrap_err();
    let codes = [Code::Unauthenticated, Code::ResourceExhausted];
    assert!(codes.contains(&status.code()), "{status:?}");
}

fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The one audit line of `event` logged in trace `trace_id`.
fn audit_line_of_trace(log: &AuditLog, trace_id: &str, event: &str) -> Value {
    let lines: Vec<Value> = log
        .of_trace(trace_id)
        .into_iter()
        .filter(|line| line["target"] == auth_service::audit::TARGET)
        .map(|line| line["fields"].clone())
        .filter(|fields| fields["event"] == event)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one {event} line in trace {trace_id}: {lines:#?}"
    );
    lines[0].clone()
}

/// Test settings with an audit key, a lockout that locks at the second failure, and
/// Register's and Login's throttle off.
fn keyed_settings(key: &str) -> Settings {
    let mut settings = TestAuth::settings();
    settings.audit.audit_key = Some(key.to_owned().into());
    settings.lockout.threshold = 2;
    settings
}

fn random_key() -> String {
    format!("audit-key-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn a_password_typed_as_the_username_is_never_logged() {
    let log = AuditLog::capture();
    // Time stands still: the lock the second failure starts holds for the third attempt.
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let endpoints = Endpoints::dynalite_only().await;
    let auth = TestAuth::spawn_with_clock(keyed_settings(&random_key()), endpoints, clock).await;
    let mut client = auth.client().await;
    // Passwords a user could type into the wrong field: one that is a valid username too, and
    // one that is not (as most passwords are not).
    let plain = format!("correcthorse{}", &new_trace_id()[..10]);
    let symbols = format!("Tr0ub4dor&3!{}", &new_trace_id()[..10]);
    let mut hashes = Vec::new();
    for typed in [&plain, &symbols] {
        let trace_ids = [new_trace_id(), new_trace_id(), new_trace_id()];
        for trace_id in &trace_ids {
            failed_login(&mut client, typed, trace_id).await;
        }
        let refused = client
            .register(RegisterRequest {
                username: typed.clone(),
                password: "short".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);

        let failed = audit_line_of_trace(&log, &trace_ids[0], "login");
        assert_eq!(failed["outcome"], "failed", "{failed}");
        assert!(failed.get("username").is_none(), "{failed}");
        let hash = failed["username_hash"]
            .as_str()
            .expect("a username_hash")
            .to_owned();
        // The second failure locks the name (threshold 2): its line carries the hash only.
        let locked = audit_line_of_trace(&log, &trace_ids[1], "locked");
        assert_eq!(locked["username_hash"], hash.as_str(), "{locked}");
        assert!(locked.get("username").is_none(), "{locked}");
        let refused = audit_line_of_trace(&log, &trace_ids[2], "login");
        assert_eq!(refused["outcome"], "refused", "{refused}");
        assert_eq!(refused["username_hash"], hash.as_str(), "{refused}");
        hashes.push(hash);
    }

    assert_ne!(hashes[0], hashes[1]);
    let register_failures = log.events(|fields| {
        fields["event"] == "register"
            && fields["outcome"] == "failed"
            && hashes
                .iter()
                .any(|hash| fields["username_hash"] == hash.as_str())
    });
    assert_eq!(register_failures.len(), 2, "{register_failures:#?}");
    assert!(
        register_failures
            .iter()
            .all(|line| line.get("username").is_none())
    );
    // Any line, any target, any level the service logs at debug: and in any case.
    log.assert_free_of(&[
        plain.as_str(),
        &plain.to_lowercase(),
        &symbols,
        &symbols.to_lowercase(),
    ]);
}

#[tokio::test]
async fn a_60000_character_username_costs_one_short_line() {
    let log = AuditLog::capture();
    let (_auth, mut client) = spawn(keyed_settings(&random_key())).await;
    let marker = new_trace_id();
    let typed = format!("{marker}{}", "p".repeat(60_000 - marker.len()));
    let trace_id = new_trace_id();

    failed_login(&mut client, &typed, &trace_id).await;

    let lines: Vec<String> = log
        .text()
        .lines()
        .filter(|line| line.contains(&trace_id))
        .map(str::to_owned)
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            line.len() <= 1024,
            "a {}-byte line: {line:.300}",
            line.len()
        );
    }
    let audit_lines: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains(r#""target":"audit""#))
        .collect();
    assert_eq!(audit_lines.len(), 1, "{audit_lines:#?}");
    // Not even the name's first 64 characters, anywhere: it is no account's.
    log.assert_free_of(&[&typed[..64]]);
    log.assert_free_of(&[&marker]);
}

#[tokio::test]
async fn an_unknown_name_hashes_alike_across_replicas_and_restarts_and_other_names_apart() {
    let log = AuditLog::capture();
    let key = random_key();
    let (auth, mut client) = spawn(keyed_settings(&key)).await;
    let replica = auth.spawn_replica().await;
    let mut replica_client = replica.client().await;
    let name = format!("nobody-{}", &new_trace_id()[..12]);
    let other = format!("{name}x");
    let traces = [new_trace_id(), new_trace_id(), new_trace_id()];

    failed_login(&mut client, &name, &traces[0]).await;
    failed_login(&mut replica_client, &name.to_uppercase(), &traces[1]).await;
    failed_login(&mut client, &other, &traces[2]).await;
    drop((replica, replica_client, auth, client));
    // A restart with the same key: the same hash. Another key: another one.
    let (_restarted, mut restarted_client) = spawn(keyed_settings(&key)).await;
    let (_rekeyed, mut rekeyed_client) = spawn(keyed_settings(&random_key())).await;
    let later = [new_trace_id(), new_trace_id()];
    failed_login(&mut restarted_client, &name, &later[0]).await;
    failed_login(&mut rekeyed_client, &name, &later[1]).await;

    let hash =
        |trace_id: &str| audit_line_of_trace(&log, trace_id, "login")["username_hash"].clone();
    let first = hash(&traces[0]);
    assert!(first.is_string(), "{first}");
    assert_eq!(
        hash(&traces[1]),
        first,
        "another replica, the name in another case"
    );
    assert_ne!(hash(&traces[2]), first, "another name");
    assert_eq!(hash(&later[0]), first, "after a restart");
    assert_ne!(hash(&later[1]), first, "under another key");
    log.assert_free_of(&[name.as_str(), &other]);
}

#[tokio::test]
async fn an_existing_users_failed_login_names_the_user_and_its_hash() {
    let log = AuditLog::capture();
    let (_auth, mut client) = spawn(keyed_settings(&random_key())).await;
    let user = TestUser::register(&mut client).await;
    let typo = format!("{}-typo", user.username);
    let traces = [new_trace_id(), new_trace_id()];

    failed_login(&mut client, &user.username.to_uppercase(), &traces[0]).await;
    failed_login(&mut client, &typo, &traces[1]).await;

    let known = audit_line_of_trace(&log, &traces[0], "login");
    assert_eq!(known["username"], user.username.as_str(), "{known}");
    assert!(known["username_hash"].is_string(), "{known}");
    let unknown = audit_line_of_trace(&log, &traces[1], "login");
    assert!(unknown.get("username").is_none(), "{unknown}");
    assert_ne!(unknown["username_hash"], known["username_hash"]);
    log.assert_free_of(&[typo.as_str()]);
}

#[tokio::test]
async fn a_made_up_method_path_and_a_forged_key_id_never_reach_the_log_in_full() {
    let log = AuditLog::capture();
    let (auth, mut client) = spawn(TestAuth::settings()).await;
    let marker = new_trace_id();
    let path = format!("/{marker}.{}/Login", "y".repeat(8_000));
    // A real token with its footer replaced: a key id no key has, as long as the footer allows.
    let user = TestUser::register(&mut client).await;
    let token = user.login(&mut client).await.access_token;
    let kid = format!("k4.pid.{marker}{}", "z".repeat(60));
    let footer = URL_SAFE_NO_PAD.encode(format!(r#"{{"kid":"{kid}"}}"#));
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{footer}");

    let unknown = call_raw(&auth.channel().await, &path, None, Vec::new()).await;
    let refused = client
        .list_sessions(with_bearer(ListSessionsRequest {}, &forged))
        .await
        .unwrap_err();

    assert_eq!(unknown.code(), Code::Unimplemented);
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        log.text()
            .contains(&format!("unknown signing key {}", &kid[..48])),
        "the refused key id is logged, cut"
    );
    // Nothing logs a call to an unknown method today (not even at debug); should anything
    // come to log inside its request span, the span's method is cut like the key id.
    log.assert_free_of(&[&path[..64], &kid[..64]]);
}
