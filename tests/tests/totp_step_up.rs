//! Step-up for EnrollTotp, against dynalite, time moved by a `ManualClock`: a stolen access
//! token alone (no password, or a wrong one) enrols nothing and counts toward the username's
//! lockout, exactly like a failed login; with the password it works, 30 racing enrolments
//! leave one pending secret, and a call cut short by its deadline lands whole or not at all.

use std::{sync::Arc, time::Duration};

use common::{
    clock::{Clock, ManualClock},
    proto::auth::v1::{
        ConfirmTotpRequest, EnrollTotpRequest, EnrollTotpResponse, LoginRequest,
        auth_service_client::AuthServiceClient,
    },
};
use tests::{
    audit::AuditLog,
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    delay::DelayProxy,
    emulators::Emulator,
    totp::code,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

type Client = AuthServiceClient<Channel>;

/// Far from any real "now": only the injected clock makes codes of this time valid.
const START: i64 = 1_900_000_000 - 1_900_000_000 % 30 + 10;

/// An auth-service with TOTP on and a manual clock, and one signed-in user: the access token
/// is all a thief would hold.
struct Fixture {
    auth: TestAuth,
    clock: Arc<ManualClock>,
    client: Client,
    user: TestUser,
    access: String,
    log: AuditLog,
}

impl Fixture {
    async fn new() -> Self {
        let log = AuditLog::capture();
        let at = time::OffsetDateTime::from_unix_timestamp(START).expect("a time");
        let clock = Arc::new(ManualClock::new(at));
        let endpoints = Endpoints::dynalite_only().await;
        let auth = TestAuth::spawn_with_clock(
            TestAuth::settings_with_totp(),
            endpoints,
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
            log,
        }
    }

    async fn enroll(&self, password: &str) -> Result<EnrollTotpResponse, Status> {
        enroll(self.client.clone(), &self.access, password).await
    }

    async fn confirm(&self, code: &str) -> Result<Vec<String>, Status> {
        let request = with_bearer(ConfirmTotpRequest { code: code.into() }, &self.access);
        let response = self.client.clone().confirm_totp(request).await?;
        Ok(response.into_inner().recovery_codes)
    }

    /// Whether a pending secret is stored, asked through the API: ConfirmTotp with a code that
    /// cannot match is INVALID_ARGUMENT when one is, FAILED_PRECONDITION when none is.
    async fn has_pending_secret(&self) -> bool {
        match self.confirm("000000").await {
            Err(status) if status.code() == Code::FailedPrecondition => false,
            Err(status) if status.code() == Code::InvalidArgument => true,
            other => panic!("ConfirmTotp with a made-up code: {other:?}"),
        }
    }

    /// The `mfa_enrolled` audit outcomes of this user, in order.
    fn enrol_outcomes(&self) -> Vec<String> {
        self.log
            .of_user(&self.user.user_id)
            .iter()
            .filter(|fields| fields["event"] == "mfa_enrolled")
            .map(|fields| fields["outcome"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn login(&self) -> Result<(), Status> {
        let request = LoginRequest {
            username: self.user.username.clone(),
            password: self.user.password.clone(),
            ..Default::default()
        };
        self.client.clone().login(request).await.map(drop)
    }

    fn threshold(&self) -> u32 {
        self.auth.settings.lockout.threshold
    }
}

async fn enroll(
    mut client: Client,
    access: &str,
    password: &str,
) -> Result<EnrollTotpResponse, Status> {
    let message = EnrollTotpRequest {
        password: password.into(),
    };
    let response = client.enroll_totp(with_bearer(message, access)).await?;
    Ok(response.into_inner())
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, expected: Code, what: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), expected, "{what}: {status:?}"),
        Ok(value) => panic!("{what}: expected {expected:?}, got {value:?}"),
    }
}

/// The status a wrong password gets at Login: a failed step-up must look exactly like it.
async fn wrong_login_status(f: &Fixture) -> Status {
    let request = LoginRequest {
        username: f.user.username.clone(),
        password: "not the password at all".into(),
        ..Default::default()
    };
    f.client.clone().login(request).await.expect_err("wrong")
}

#[tokio::test]
async fn a_stolen_token_without_the_password_enrols_nothing_and_is_counted() {
    let f = Fixture::new().await;
    let threshold = f.threshold();
    assert!(threshold >= 3, "arrangement: room for two failures");
    let like_login = wrong_login_status(&f).await;

    for (what, password) in [("no password", ""), ("a wrong password", "guess-guess-1")] {
        let status = f.enroll(password).await.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert_eq!(status.message(), like_login.message(), "{what}: uniform");
        assert!(status.get_error_details().error_info().is_none(), "{what}");
        assert!(!f.has_pending_secret().await, "{what}: nothing enrolled");
    }
    // Login's wrong password, then these two: the next failure but the last locks the name.
    let left = threshold - 3;
    for _ in 0..left {
        assert_code(f.enroll("").await, Code::Unauthenticated, "counted failure");
    }
    let locked = f.enroll(&f.user.password).await.expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    assert!(
        locked.get_error_details().retry_info().is_some(),
        "RetryInfo"
    );
    let login = f.login().await.expect_err("the login shares the count");
    assert_eq!(login.code(), Code::ResourceExhausted, "{login:?}");
    assert!(!f.has_pending_secret().await, "still nothing enrolled");

    let outcomes = f.enrol_outcomes();
    let failed = outcomes.iter().filter(|o| *o == "failed").count();
    assert_eq!(failed, 2 + left as usize, "{outcomes:?}");
    assert!(outcomes.iter().any(|o| o == "refused"), "{outcomes:?}");
    assert!(!outcomes.iter().any(|o| o == "succeeded"), "{outcomes:?}");
    f.log
        .assert_free_of(&["guess-guess-1", f.user.password.as_str()]);
}

#[tokio::test]
async fn once_the_lock_ends_the_right_password_enrols_and_the_secret_confirms() {
    let f = Fixture::new().await;
    for _ in 0..f.threshold() {
        assert_code(f.enroll("wrong-password").await, Code::Unauthenticated, "");
    }
    assert_code(
        f.enroll(&f.user.password).await,
        Code::ResourceExhausted,
        "locked",
    );
    let lock = Duration::from_secs(f.auth.settings.lockout.first_secs);
    f.clock.advance(lock + Duration::from_secs(1));

    let enrolment = f.enroll(&f.user.password).await.expect("the password");
    assert!(f.has_pending_secret().await);
    let step = f.clock.now().unix_timestamp() / 30;
    let codes = f.confirm(&code(&enrolment.secret, step)).await.expect("on");
    assert_eq!(codes.len(), 10);
    assert_eq!(
        f.enrol_outcomes().last().map(String::as_str),
        Some("succeeded")
    );
}

#[tokio::test]
async fn a_right_password_clears_the_failures_before_it() {
    let f = Fixture::new().await;
    // Twice threshold − 1 failures, each run cleared by a success: never locked.
    for round in 0..2 {
        for _ in 1..f.threshold() {
            assert_code(f.enroll("wrong-password").await, Code::Unauthenticated, "");
        }
        f.enroll(&f.user.password)
            .await
            .unwrap_or_else(|status| panic!("round {round}: {status:?}"));
    }
    f.login().await.expect("not locked");
}

#[tokio::test]
async fn a_password_of_impossible_length_is_invalid_argument_and_not_counted() {
    let f = Fixture::new().await;
    for password in ["short", &"p".repeat(257)] {
        for _ in 0..=f.threshold() {
            let status = f.enroll(password).await.expect_err("impossible length");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert_eq!(tests::violated_fields(&status), ["password"]);
        }
    }
    assert!(!f.has_pending_secret().await);
    f.enroll(&f.user.password)
        .await
        .expect("no guess was counted");
}

#[tokio::test]
async fn thirty_racing_enrolments_with_the_password_leave_one_pending_secret() {
    let f = Fixture::new().await;
    let calls = (0..30).map(|_| {
        let (client, access, password) =
            (f.client.clone(), f.access.clone(), f.user.password.clone());
        tokio::spawn(async move { enroll(client, &access, &password).await })
    });
    let mut secrets = Vec::new();
    for result in futures::future::join_all(calls).await {
        match result.expect("the call's task") {
            Ok(enrolment) => secrets.push(enrolment.secret),
            // Counted before checking: past the threshold, concurrent attempts are refused.
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    assert!(!secrets.is_empty(), "some enrolment went through");
    let step = f.clock.now().unix_timestamp() / 30;
    let mut confirmed = 0;
    for secret in &secrets {
        match f.confirm(&code(secret, step)).await {
            Ok(_) => confirmed += 1,
            Err(status) => assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::FailedPrecondition
                ),
                "{status:?}"
            ),
        }
    }
    assert_eq!(confirmed, 1, "the last secret written, and only it");
    let succeeded = f
        .enrol_outcomes()
        .iter()
        .filter(|o| *o == "succeeded")
        .count();
    assert_eq!(succeeded, secrets.len(), "one audit line per enrolment");
}

/// With every DynamoDB answer late, deadlines end EnrollTotp at every stage: before the
/// password is checked nothing happens (the attempt stays counted), after it the enrolment
/// lands whole: the count cleared, the pending secret written, the audit line logged.
#[tokio::test]
async fn an_enrolment_cut_short_by_its_deadline_lands_whole_or_not_at_all() {
    const DELAY: Duration = Duration::from_millis(150);
    let log = AuditLog::capture();
    let fast = TestAuth::spawn_with(
        TestAuth::settings_with_totp(),
        Endpoints::dynalite_only().await,
    )
    .await;
    let dynalite = Emulator::shared_dynalite().await;
    let proxy = DelayProxy::start(dynalite.addr(), DELAY).await;
    let mut settings = fast.settings.clone();
    settings.listen_addr = "127.0.0.1:0".parse().expect("an address");
    let endpoints = Endpoints {
        dynamodb: format!("http://{}", proxy.addr()),
        ..Endpoints::dynalite_only().await
    };
    let slow = TestAuth::spawn_with(settings, endpoints).await;
    let (mut client, slow_client) = (fast.client().await, slow.client().await);

    // EnrollTotp makes four DynamoDB calls before the password is checked (session, lockout
    // read and write, user) and three after it (clear the count, read the user, write).
    let (mut landed_cut_short, mut not_landed) = (0, 0);
    // Denser and longer than the nominal window, since a loaded machine stretches every
    // stage; the sweep stops once both outcomes have been seen.
    for tenths in (20..=120).step_by(5) {
        if landed_cut_short > 0 && not_landed > 0 {
            break;
        }
        let user = TestUser::register(&mut client).await;
        let access = user.login(&mut client).await.access_token;
        let mut request = with_bearer(
            EnrollTotpRequest {
                password: user.password.clone(),
            },
            &access,
        );
        request.set_timeout(DELAY * tenths / 10);
        let result = slow_client.clone().enroll_totp(request).await;

        let audited = || {
            let log = log.clone();
            let user_id = user.user_id.clone();
            async move {
                log.of_user(&user_id)
                    .iter()
                    .any(|f| f["event"] == "mfa_enrolled" && f["outcome"] == "succeeded")
            }
        };
        let limit = DELAY * 10;
        if tests::eventually(limit, audited).await {
            assert!(pending(&fast, &user).await, "{tenths}: audited, not stored");
            assert!(
                !counted(&fast, &user).await,
                "{tenths}: stored, still counted"
            );
            landed_cut_short += usize::from(result.is_err());
        } else {
            let status = result.expect_err("a success is audited");
            // The server's DEADLINE_EXCEEDED, or the client's own timer (CANCELLED).
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{tenths}: {status:?}"
            );
            assert!(
                !pending(&fast, &user).await,
                "{tenths}: stored, not audited"
            );
            not_landed += 1;
        }
    }
    assert!(
        landed_cut_short > 0,
        "arrangement: a call cut short after its check"
    );
    assert!(
        not_landed > 0,
        "arrangement: a call cut short before its check"
    );
}

/// Whether the user item holds a pending TOTP secret.
async fn pending(auth: &TestAuth, user: &TestUser) -> bool {
    let item = auth.user_item(&user.username).await.expect("the user item");
    item.contains_key("totp_pending")
}

/// Whether the username has failed attempts counted.
async fn counted(auth: &TestAuth, user: &TestUser) -> bool {
    auth.attempts_counted(&user.username).await
}
