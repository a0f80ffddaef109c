//! TOTP MFA through the auth-service's API, against dynalite, time moved by a `ManualClock`:
//! enrolment, confirmation, login with codes and recovery codes, replays (also 30 at once),
//! disabling, the secret at rest, and the logs. Codes come from an independent RFC 6238
//! generator (`tests/src/totp.rs`), not from the service's code.

use std::{
    collections::HashSet,
    io::Write,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use auth_service::error::{AUTH_ERROR_DOMAIN, MFA_REQUIRED};
use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    clock::ManualClock,
    proto::auth::v1::{
        ConfirmTotpRequest, DisableTotpRequest, EnrollTotpRequest, EnrollTotpResponse,
        LoginRequest, LoginResponse, auth_service_client::AuthServiceClient,
    },
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    totp::{base32_decode, code},
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

type Client = AuthServiceClient<Channel>;

/// A step boundary plus 10 s, far from any real "now": only the injected clock can make codes
/// of this time valid.
const START: i64 = 1_900_000_000 - 1_900_000_000 % 30 + 10;
const STEP: Duration = Duration::from_secs(30);

// ---- the independent RFC 6238 generator (tests/src/totp.rs) ----

#[test]
fn the_generator_matches_rfc_6238() {
    // Appendix B's SHA1 secret "12345678901234567890"; its 8-digit codes end in these 6.
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    assert_eq!(code(secret, 59 / 30), "287082");
    assert_eq!(code(secret, 1_111_111_109 / 30), "081804");
    assert_eq!(code(secret, 2_000_000_000 / 30), "279037");
}

// ---- log capture ----

/// Every log line of this test binary, captured as JSON from the first service started.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::{EnvFilter, fmt, prelude::*};
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let writer = move || Sink(Arc::clone(&sink));
        let filter = EnvFilter::new("debug,h2=info,hyper=info,tower=info,aws=info,aws_smithy_runtime=info,aws_smithy_runtime_api=info,aws_config=info");
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt::layer().json().with_current_span(true).with_writer(writer))
            .try_init()
            .expect("the first subscriber of this binary");
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// The audit lines about `user_id`.
fn audit_lines(user_id: &str) -> Vec<serde_json::Value> {
    captured()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "audit" && line["fields"]["user_id"] == user_id)
        .collect()
}

// ---- the fixture ----

/// An auth-service with a TOTP key and a manual clock, and one signed-in user.
struct Fixture {
    auth: TestAuth,
    clock: Arc<ManualClock>,
    client: Client,
    user: TestUser,
    access: String,
}

impl Fixture {
    async fn new() -> Self {
        logs();
        let mut settings = TestAuth::settings();
        TestAuth::turn_totp_on(&mut settings);
        let at = time::OffsetDateTime::from_unix_timestamp(START).unwrap();
        let clock = Arc::new(ManualClock::new(at));
        let auth = TestAuth::spawn_with_clock(
            settings,
            Endpoints::dynalite_only().await,
            Arc::clone(&clock) as _,
        )
        .await;
        let mut client = auth.client().await;
        let user = TestUser::register(&mut client).await;
        let access = user.login(&mut client).await.access_token;
        Self {
            auth,
            clock,
            client,
            user,
            access,
        }
    }

    /// The current time step.
    fn step(&self) -> i64 {
        use common::clock::Clock;
        self.clock.now().unix_timestamp() / 30
    }

    async fn enroll(&mut self) -> Result<EnrollTotpResponse, Status> {
        let password = self.user.password.clone();
        let request = with_bearer(EnrollTotpRequest { password }, &self.access);
        self.client
            .enroll_totp(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn confirm(&mut self, code: &str) -> Result<Vec<String>, Status> {
        let request = with_bearer(ConfirmTotpRequest { code: code.into() }, &self.access);
        let response = self.client.confirm_totp(request).await?;
        Ok(response.into_inner().recovery_codes)
    }

    /// Enrols and confirms; returns the secret and the recovery codes, one step later (the
    /// confirmation's code is spent).
    async fn enable(&mut self) -> (String, Vec<String>) {
        let secret = self.enroll().await.expect("EnrollTotp").secret;
        let codes = self
            .confirm(&code(&secret, self.step()))
            .await
            .expect("ConfirmTotp");
        self.clock.advance(STEP);
        (secret, codes)
    }

    async fn disable(&mut self, code: &str, recovery_code: &str) -> Result<(), Status> {
        let message = DisableTotpRequest {
            code: code.into(),
            recovery_code: recovery_code.into(),
        };
        let request = with_bearer(message, &self.access);
        self.client.disable_totp(request).await.map(drop)
    }

    async fn login(&self, totp_code: &str, recovery_code: &str) -> Result<LoginResponse, Status> {
        login(
            self.client.clone(),
            &self.user,
            &self.user.password,
            totp_code,
            recovery_code,
        )
        .await
    }
}

async fn login(
    mut client: Client,
    user: &TestUser,
    password: &str,
    totp_code: &str,
    recovery_code: &str,
) -> Result<LoginResponse, Status> {
    let request = LoginRequest {
        username: user.username.clone(),
        password: password.into(),
        totp_code: totp_code.into(),
        recovery_code: recovery_code.into(),
    };
    client.login(request).await.map(|r| r.into_inner())
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, expected: Code, what: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), expected, "{what}: {status:?}"),
        Ok(value) => panic!("{what}: expected {expected:?}, got {value:?}"),
    }
}

fn assert_mfa_required(result: Result<LoginResponse, Status>) {
    let status = result.expect_err("a login without its second factor");
    assert_eq!(status.code(), Code::Unauthenticated);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo details");
    assert_eq!(info.reason, MFA_REQUIRED);
    assert_eq!(info.domain, AUTH_ERROR_DOMAIN);
}

// ---- the story ----

#[tokio::test]
async fn enrol_confirm_then_logins_need_a_code_each_code_works_once_and_disable_ends_it() {
    let mut f = Fixture::new().await;

    let enrolment = f.enroll().await.unwrap();
    assert_eq!(base32_decode(&enrolment.secret).len(), 20, "160 bits");
    assert_eq!(
        enrolment.otpauth_uri,
        format!(
            "otpauth://totp/Dynagate:{}?secret={}&issuer=Dynagate",
            f.user.username, enrolment.secret
        )
    );
    f.login("", "").await.expect("not active until confirmed");

    let recovery = f.confirm(&code(&enrolment.secret, f.step())).await.unwrap();
    assert_eq!(recovery.len(), 10);
    assert_eq!(recovery.iter().collect::<HashSet<_>>().len(), 10);

    assert_mfa_required(f.login("", "").await);
    let wrong_password = login(f.client.clone(), &f.user, "wrong password", "", "").await;
    let status = wrong_password.expect_err("a wrong password");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.get_error_details().error_info().is_none(),
        "no MFA hint for a guesser"
    );

    f.clock.advance(STEP);
    let current = code(&enrolment.secret, f.step());
    let tokens = f.login(&current, "").await.expect("the current code");
    assert!(!tokens.access_token.is_empty());
    assert_code(
        f.login(&current, "").await,
        Code::Unauthenticated,
        "the same code again",
    );

    f.clock.advance(STEP);
    f.disable(&code(&enrolment.secret, f.step()), "")
        .await
        .expect("DisableTotp");
    f.login("", "")
        .await
        .expect("TOTP off: the password is enough");
}

#[tokio::test]
async fn codes_one_step_either_side_are_accepted_and_two_steps_off_are_not() {
    let mut f = Fixture::new().await;
    let (secret, _) = f.enable().await;
    f.clock.advance(STEP); // the confirming code's step is no longer "previous"
    let now = f.step();

    for off in [-2, 2] {
        let refused = f.login(&code(&secret, now + off), "").await;
        assert_code(refused, Code::Unauthenticated, &format!("{off} steps off"));
    }
    f.login(&code(&secret, now - 1), "")
        .await
        .expect("previous step");
    f.login(&code(&secret, now + 1), "")
        .await
        .expect("next step");
    let earlier = f.login(&code(&secret, now), "").await;
    assert_code(
        earlier,
        Code::Unauthenticated,
        "a step before the last one used",
    );
}

#[tokio::test]
async fn a_wrong_password_does_not_spend_the_code_it_came_with() {
    let mut f = Fixture::new().await;
    let (secret, recovery) = f.enable().await;
    let current = code(&secret, f.step());

    let guess = login(f.client.clone(), &f.user, "wrong password", &current, "").await;
    assert_code(guess, Code::Unauthenticated, "wrong password");
    let guess = login(
        f.client.clone(),
        &f.user,
        "wrong password",
        "",
        &recovery[0],
    )
    .await;
    assert_code(guess, Code::Unauthenticated, "wrong password");

    f.login(&current, "")
        .await
        .expect("the code is still unused");
    f.login("", &recovery[0])
        .await
        .expect("the recovery code is still unused");
}

#[tokio::test]
async fn thirty_concurrent_logins_with_one_code_let_exactly_one_in() {
    let mut f = Fixture::new().await;
    let (secret, _) = f.enable().await;
    let current = code(&secret, f.step());
    assert_eq!(
        concurrent_logins(&f, &current, "").await,
        1,
        "one code, one login"
    );
}

#[tokio::test]
async fn thirty_concurrent_logins_with_one_recovery_code_let_exactly_one_in() {
    let mut f = Fixture::new().await;
    let (_, recovery) = f.enable().await;
    let succeeded = concurrent_logins(&f, "", &recovery[0]).await;
    assert_eq!(succeeded, 1, "one recovery code, one login");
}

/// Starts 30 logins with these factors at once; returns how many succeeded.
async fn concurrent_logins(f: &Fixture, totp_code: &str, recovery_code: &str) -> usize {
    let logins = (0..30).map(|_| {
        let (client, user) = (f.client.clone(), f.user.clone());
        let (totp_code, recovery_code) = (totp_code.to_owned(), recovery_code.to_owned());
        tokio::spawn(async move {
            login(client, &user, &user.password, &totp_code, &recovery_code).await
        })
    });
    let mut succeeded = 0;
    for result in futures::future::join_all(logins).await {
        match result.unwrap() {
            Ok(_) => succeeded += 1,
            // RESOURCE_EXHAUSTED: a lockout or a full hashing queue may refuse some first.
            Err(status) => assert!(
                matches!(
                    status.code(),
                    Code::Unauthenticated | Code::ResourceExhausted
                ),
                "{status:?}"
            ),
        }
    }
    succeeded
}

#[tokio::test]
async fn concurrent_confirmations_turn_totp_on_once_with_one_set_of_recovery_codes() {
    let mut f = Fixture::new().await;
    let secret = f.enroll().await.unwrap().secret;
    let current = code(&secret, f.step());

    let confirmations = (0..10).map(|_| {
        let (mut client, access) = (f.client.clone(), f.access.clone());
        let message = ConfirmTotpRequest {
            code: current.clone(),
        };
        tokio::spawn(async move { client.confirm_totp(with_bearer(message, &access)).await })
    });
    let mut issued = Vec::new();
    for result in futures::future::join_all(confirmations).await {
        match result.unwrap() {
            Ok(response) => issued.push(response.into_inner().recovery_codes),
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(issued.len(), 1, "one confirmation wins");
    f.clock.advance(STEP);
    f.login("", &issued[0][0])
        .await
        .expect("the winner's recovery codes are the ones stored");
}

#[tokio::test]
async fn a_recovery_code_logs_in_once_however_it_is_typed() {
    let mut f = Fixture::new().await;
    let (_, recovery) = f.enable().await;

    f.login("", &recovery[0]).await.expect("a recovery code");
    assert_code(
        f.login("", &recovery[0]).await,
        Code::Unauthenticated,
        "the same one again",
    );
    let loosely = recovery[1].to_uppercase().replace('-', " ");
    f.login("", &loosely)
        .await
        .expect("upper case, spaces for dashes");
    let invented = "0000-0000-0000-0000";
    assert_code(
        f.login("", invented).await,
        Code::Unauthenticated,
        "not one of them",
    );
    let both = f.login("123456", &recovery[2]).await;
    assert_code(
        both,
        Code::InvalidArgument,
        "a code and a recovery code at once",
    );
}

#[tokio::test]
async fn disabling_needs_one_right_unspent_code_or_recovery_code() {
    let mut f = Fixture::new().await;
    assert_code(
        f.disable("123456", "").await,
        Code::FailedPrecondition,
        "TOTP not on",
    );
    let (secret, recovery) = f.enable().await;

    assert_code(f.disable("", "").await, Code::InvalidArgument, "neither");
    let both = f.disable(&code(&secret, f.step()), &recovery[0]).await;
    assert_code(both, Code::InvalidArgument, "both");
    let wrong = code(&secret, f.step() + 5);
    assert_code(
        f.disable(&wrong, "").await,
        Code::Unauthenticated,
        "a wrong code",
    );
    let wrong = "zzzz-zzzz-zzzz-zzzz";
    assert_code(
        f.disable("", wrong).await,
        Code::Unauthenticated,
        "a wrong recovery code",
    );
    let current = code(&secret, f.step());
    f.login(&current, "").await.expect("login");
    assert_code(
        f.disable(&current, "").await,
        Code::Unauthenticated,
        "a spent code",
    );

    f.disable("", &recovery[0])
        .await
        .expect("with a recovery code");
    f.login("", "").await.expect("TOTP off");

    let (secret, _) = f.enable().await;
    assert_mfa_required(f.login("", "").await);
    f.disable(&code(&secret, f.step()), "")
        .await
        .expect("with a code");
    f.login("", "").await.expect("TOTP off again");
}

#[tokio::test]
async fn enrolling_again_replaces_a_pending_secret_and_states_are_checked() {
    let mut f = Fixture::new().await;
    assert_code(
        f.confirm("123456").await,
        Code::FailedPrecondition,
        "nothing enrolled",
    );

    let first = f.enroll().await.unwrap().secret;
    let second = f.enroll().await.unwrap().secret;
    assert_ne!(first, second);
    let stale = f.confirm(&code(&first, f.step())).await;
    assert_code(stale, Code::InvalidArgument, "the replaced secret's code");
    f.confirm(&code(&second, f.step()))
        .await
        .expect("the new secret's code");

    assert_code(f.enroll().await, Code::FailedPrecondition, "already on");
    f.clock.advance(STEP);
    let again = f.confirm(&code(&second, f.step())).await;
    assert_code(again, Code::FailedPrecondition, "already on");
}

#[tokio::test]
async fn the_confirming_code_cannot_log_in_again() {
    let mut f = Fixture::new().await;
    let secret = f.enroll().await.unwrap().secret;
    let current = code(&secret, f.step());
    f.confirm(&current).await.unwrap();
    assert_code(
        f.login(&current, "").await,
        Code::Unauthenticated,
        "the confirming code",
    );
}

#[tokio::test]
async fn secrets_and_recovery_codes_are_not_readable_in_the_users_table() {
    let mut f = Fixture::new().await;
    let pending = f.enroll().await.unwrap().secret;
    let item = users_item(&f).await;
    assert!(attribute_text(&item["totp_pending"]).starts_with("v4.local."));
    assert_no_secret(&item, &[&pending]);

    let (secret, recovery) = f.enable().await;
    let item = users_item(&f).await;
    assert!(attribute_text(&item["totp_secret"]).starts_with("v4.local."));
    let AttributeValue::Ss(hashes) = &item["recovery_codes"] else {
        panic!("recovery_codes is a string set")
    };
    assert_eq!(hashes.len(), 10);
    let plain: Vec<String> = recovery.iter().map(|c| c.replace('-', "")).collect();
    let mut secrets: Vec<&str> = vec![&secret];
    secrets.extend(recovery.iter().map(String::as_str));
    secrets.extend(plain.iter().map(String::as_str));
    assert_no_secret(&item, &secrets);
}

async fn users_item(f: &Fixture) -> std::collections::HashMap<String, AttributeValue> {
    f.auth
        .user_item(&f.user.username)
        .await
        .expect("the user item")
}

fn attribute_text(value: &AttributeValue) -> &str {
    value.as_s().expect("a string attribute")
}

fn assert_no_secret(item: &std::collections::HashMap<String, AttributeValue>, secrets: &[&str]) {
    let dump = format!("{item:?}").to_lowercase();
    for secret in secrets {
        assert!(
            !dump.contains(&secret.to_lowercase()),
            "{secret} is in the users item"
        );
    }
}

#[tokio::test]
async fn the_audit_log_records_each_step_and_no_log_line_holds_a_secret() {
    let mut f = Fixture::new().await;
    let enrolment = f.enroll().await.unwrap();
    let confirming = code(&enrolment.secret, f.step());
    let recovery = f.confirm(&confirming).await.unwrap();
    f.clock.advance(STEP);
    assert_mfa_required(f.login("", "").await);
    let current = code(&enrolment.secret, f.step());
    f.login(&current, "").await.unwrap();
    f.login("", &recovery[0]).await.unwrap();
    f.clock.advance(STEP);
    let disabling = code(&enrolment.secret, f.step());
    f.disable(&disabling, "").await.unwrap();

    let events: Vec<String> = audit_lines(&f.user.user_id)
        .iter()
        .inspect(|line| {
            assert_eq!(
                line["fields"]["username"],
                f.user.username.as_str(),
                "{line}"
            );
            assert!(line["fields"]["client_addr"].is_string(), "{line}");
        })
        .map(|line| {
            let fields = &line["fields"];
            format!(
                "{} {}",
                fields["event"].as_str().unwrap(),
                fields["outcome"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "mfa_enrolled succeeded",
        "mfa_confirmed succeeded",
        "mfa_required failed",
        "recovery_code_used succeeded",
        "mfa_disabled succeeded",
    ] {
        assert!(
            events.iter().any(|e| e == expected),
            "{expected} in {events:?}"
        );
    }

    let logs = captured();
    assert!(logs.contains(&f.user.user_id), "the capture works");
    let mut secrets = vec![
        enrolment.secret.as_str(),
        confirming.as_str(),
        current.as_str(),
        disabling.as_str(),
        f.user.password.as_str(),
    ];
    secrets.extend(recovery.iter().map(String::as_str));
    for secret in secrets {
        assert!(!mentions(&logs, secret), "{secret} was logged");
    }
}

/// Whether `logs` hold `secret` as a token of its own: a 6-digit code inside a longer number
/// or a timestamp's fraction of a second (`.123456Z`) is a coincidence, not a leak.
fn mentions(logs: &str, secret: &str) -> bool {
    logs.match_indices(secret).any(|(at, _)| {
        let before = logs[..at].chars().next_back();
        let after = logs[at + secret.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[tokio::test]
async fn without_a_totp_key_the_totp_calls_are_unimplemented() {
    logs();
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let access = user.login(&mut client).await.access_token;

    let enroll = client
        .enroll_totp(with_bearer(
            EnrollTotpRequest {
                password: user.password.clone(),
            },
            &access,
        ))
        .await;
    assert_code(enroll, Code::Unimplemented, "EnrollTotp");
    let confirm = ConfirmTotpRequest {
        code: "123456".into(),
    };
    let confirm = client.confirm_totp(with_bearer(confirm, &access)).await;
    assert_code(confirm, Code::Unimplemented, "ConfirmTotp");
}

#[tokio::test]
async fn wrong_codes_with_the_right_password_count_toward_the_lockout() {
    let mut f = Fixture::new().await;
    let (secret, _) = f.enable().await;
    let threshold = f.auth.settings.lockout.threshold;
    // The right password each time, a code of a step long gone each time: failures all.
    let stale = code(&secret, f.step() - 10);
    for attempt in 0..threshold {
        assert_code(
            f.login(&stale, "").await,
            Code::Unauthenticated,
            &format!("wrong code #{attempt}"),
        );
    }
    let locked = f.login(&code(&secret, f.step()), "").await;
    let status = locked.expect_err("locked, even with a right code");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.get_error_details().retry_info().is_some());
}

#[tokio::test]
async fn wrong_codes_to_disable_totp_count_toward_the_lockout() {
    let mut f = Fixture::new().await;
    let (secret, _) = f.enable().await;
    let threshold = f.auth.settings.lockout.threshold;
    let stale = code(&secret, f.step() - 10);
    for attempt in 0..threshold {
        assert_code(
            f.disable(&stale, "").await,
            Code::Unauthenticated,
            &format!("wrong code #{attempt}"),
        );
    }
    let right = code(&secret, f.step());
    assert_code(
        f.disable(&right, "").await,
        Code::ResourceExhausted,
        "locked",
    );
}
