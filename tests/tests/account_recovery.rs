//! ResetPassword against dynalite, time moved by a `ManualClock`, tokens issued in-process by
//! the library function the admin service calls (`tests::recovery`): a token sets a new
//! password once and ends every session; racing, replayed, expired, replaced and made-up
//! tokens all fail alike; a token for an unknown name looks and costs the same and never
//! works; TOTP is needed unless the token resets it; failures count toward the lockout of the
//! token's username; a call cut short lands whole or not at all. And CreateRecoveryToken on the
//! admin listener (mTLS, the test PKI): audited with the certificate subject, the same answer
//! for an unknown user, absent from the public listener.

use std::{sync::Arc, time::Duration};

use auth_service::recovery::{Recovery, RecoveryToken};
use common::{
    clock::{Clock, ManualClock},
    proto::admin::v1::{
        CreateRecoveryTokenRequest, CreateRecoveryTokenResponse,
        admin_service_client::AdminServiceClient,
    },
    proto::auth::v1::{
        ConfirmTotpRequest, DeleteAccountRequest, EnrollTotpRequest, ListSessionsRequest,
        LoginRequest, ResetPasswordRequest, auth_service_client::AuthServiceClient,
    },
};
use secrecy::ExposeSecret;
use tests::{
    admin::{ADMIN_CN, ADMIN_ORG, AdminPki},
    audit::AuditLog,
    auth::{Endpoints, TestAuth, TestUser, refresh, try_login, with_bearer},
    emulators::Emulator,
    proxy::RecordingProxy,
    recovery::{recovery_of, recovery_via},
    totp::code,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

type Client = AuthServiceClient<Channel>;

/// Far from any real "now": only the injected clock makes codes of this time valid.
const START: i64 = 1_900_000_000 - 1_900_000_000 % 30 + 10;
/// The message of every refused token.
const REFUSED: &str = "invalid or expired recovery token";

/// An auth-service with TOTP on and a manual clock, one registered user, and the tokens of
/// its users table.
struct Fixture {
    auth: TestAuth,
    clock: Arc<ManualClock>,
    client: Client,
    user: TestUser,
    recovery: Recovery,
    log: AuditLog,
}

impl Fixture {
    async fn new() -> Self {
        Self::with(TestAuth::settings_with_totp()).await
    }

    async fn with(settings: auth_service::config::Settings) -> Self {
        let log = AuditLog::capture();
        let at = time::OffsetDateTime::from_unix_timestamp(START).expect("a time");
        let clock = Arc::new(ManualClock::new(at));
        let endpoints = Endpoints::dynalite_only().await;
        let auth = TestAuth::spawn_with_clock(settings, endpoints, Arc::clone(&clock) as _).await;
        let mut client = auth.client().await;
        let user = TestUser::register(&mut client).await;
        let recovery = recovery_of(&auth, Arc::clone(&clock) as _);
        Self {
            auth,
            clock,
            client,
            user,
            recovery,
            log,
        }
    }

    /// A new token for the user.
    async fn issue(&self, reset_second_factor: bool) -> String {
        let issued = self
            .recovery
            .issue(&self.user.username, reset_second_factor)
            .await
            .expect("issue a token");
        assert!(issued.stored, "the user's item took it");
        issued.token.expose_secret().to_owned()
    }

    async fn reset(&self, token: &str, new_password: &str, totp_code: &str) -> Result<(), Status> {
        reset(self.client.clone(), token, new_password, totp_code).await
    }

    async fn login(&self, password: &str) -> Result<(), Status> {
        try_login(&mut self.client.clone(), &self.user.username, password)
            .await
            .map(drop)
    }

    /// Turns TOTP on for the user; returns its secret. The clock then moves a step on, so
    /// the next code is unspent.
    async fn enable_totp(&self) -> String {
        let mut client = self.client.clone();
        let access = self.user.login(&mut client).await.access_token;
        let request = EnrollTotpRequest {
            password: self.user.password.clone(),
        };
        let enrolment = client
            .enroll_totp(with_bearer(request, &access))
            .await
            .expect("EnrollTotp")
            .into_inner();
        let code = code(&enrolment.secret, self.step());
        let confirm = with_bearer(ConfirmTotpRequest { code }, &access);
        client.confirm_totp(confirm).await.expect("ConfirmTotp");
        self.clock.advance(Duration::from_secs(30));
        enrolment.secret
    }

    fn step(&self) -> i64 {
        self.clock.now().unix_timestamp() / 30
    }

    /// The outcomes of this user's audit lines of `event`, in order.
    fn outcomes(&self, event: &str) -> Vec<String> {
        self.log
            .of_user(&self.user.user_id)
            .iter()
            .filter(|fields| fields["event"] == event)
            .map(|fields| fields["outcome"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn item_has(&self, attribute: &str) -> bool {
        let item = self.auth.user_item(&self.user.username).await;
        item.expect("the user item").contains_key(attribute)
    }
}

async fn reset(
    mut client: Client,
    token: &str,
    new_password: &str,
    totp_code: &str,
) -> Result<(), Status> {
    let request = ResetPasswordRequest {
        recovery_token: token.into(),
        new_password: new_password.into(),
        totp_code: totp_code.into(),
        recovery_code: String::new(),
    };
    client.reset_password(request).await.map(drop)
}

/// A password every rule accepts.
fn strong_password() -> String {
    format!("new-{}", uuid::Uuid::new_v4())
}

fn assert_mfa_required(status: &Status) {
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "MFA_REQUIRED");
}

fn assert_refused(result: Result<(), Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(status.message(), REFUSED, "{what}: uniform");
    assert!(status.get_error_details().error_info().is_none(), "{what}");
}

#[tokio::test]
async fn a_reset_sets_the_new_password_and_ends_every_session() {
    let f = Fixture::new().await;
    let mut client = f.client.clone();
    let (first, second) = (
        f.user.login(&mut client).await,
        f.user.login(&mut client).await,
    );
    let token = f.issue(false).await;
    let new = strong_password();

    f.reset(&token, &new, "").await.expect("ResetPassword");

    assert_eq!(
        f.login(&f.user.password).await.expect_err("old").code(),
        Code::Unauthenticated
    );
    f.login(&new).await.expect("the new password");
    for tokens in [&first, &second] {
        let refreshed = refresh(&mut client, &tokens.refresh_token).await;
        assert_eq!(refreshed.expect_err("ended").code(), Code::Unauthenticated);
        let listing = with_bearer(ListSessionsRequest {}, &tokens.access_token);
        let listed = client.list_sessions(listing).await;
        assert_eq!(listed.expect_err("ended").code(), Code::Unauthenticated);
    }
    let username = &f.user.username;
    assert_eq!(
        f.auth.user_number(username, "password_version").await,
        Some(1)
    );
    let epoch = f.auth.user_number(username, "credentials_epoch").await;
    assert!(epoch >= Some(1), "credentials epoch bumped: {epoch:?}");
    assert!(!f.item_has("recovery_token_hash").await, "token spent");
    assert!(!f.item_has("recovery_expires_at").await);
    assert_eq!(f.outcomes("password_reset"), ["succeeded"]);
    assert!(f.outcomes("second_factor_reset").is_empty());
    f.log.assert_free_of(&[token.as_str(), new.as_str()]);
    let secret_part = token.trim_start_matches("dgrec1_");
    f.log.assert_free_of(&[&secret_part[..42]]);
}

#[tokio::test]
async fn a_token_works_once_and_a_newer_one_replaces_it() {
    let f = Fixture::new().await;
    let older = f.issue(false).await;
    let token = f.issue(false).await;
    assert_ne!(older, token);
    assert_refused(f.reset(&older, &strong_password(), "").await, "replaced");

    let new = strong_password();
    f.reset(&token, &new, "").await.expect("first use");
    assert_refused(f.reset(&token, &strong_password(), "").await, "used");
    f.login(&new)
        .await
        .expect("the first reset's password stays");
    assert_eq!(
        f.outcomes("password_reset"),
        ["failed", "succeeded", "failed"]
    );
}

#[tokio::test]
async fn thirty_racing_resets_with_one_token_let_exactly_one_win() {
    let mut settings = TestAuth::settings_with_totp();
    // Every racer must reach the write: with the lockout on, attempts in flight past its
    // threshold (or racing its row too often) are refused before any check.
    settings.lockout.threshold = 0;
    let f = Fixture::with(settings).await;
    let token = f.issue(false).await;
    let passwords: Vec<String> = (0..30).map(|_| strong_password()).collect();
    let calls = passwords.iter().map(|password| {
        let (client, token, password) = (f.client.clone(), token.clone(), password.clone());
        tokio::spawn(async move { reset(client, &token, &password, "").await })
    });
    let results = futures::future::join_all(calls).await;

    let mut winners = Vec::new();
    for (password, result) in passwords.iter().zip(results) {
        match result.expect("the call's task") {
            Ok(()) => winners.push(password),
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                assert_eq!(status.message(), REFUSED);
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one reset lands");
    f.login(winners[0]).await.expect("the winner's password");
    for loser in passwords.iter().filter(|p| *p != winners[0]).take(3) {
        assert!(f.login(loser).await.is_err(), "a loser's password");
    }
    assert_eq!(
        f.auth
            .user_number(&f.user.username, "password_version")
            .await,
        Some(1)
    );
    let outcomes = f.outcomes("password_reset");
    assert_eq!(outcomes.iter().filter(|o| *o == "succeeded").count(), 1);
}

#[tokio::test]
async fn an_expired_token_fails_like_a_wrong_one() {
    let f = Fixture::new().await;
    let ttl = Duration::from_secs(f.auth.settings.recovery.token_ttl_secs);
    assert_eq!(ttl, Duration::from_secs(900), "15 minutes by default");
    let token = f.issue(false).await;
    f.clock.advance(ttl);
    assert_refused(f.reset(&token, &strong_password(), "").await, "expired");
    f.login(&f.user.password).await.expect("unchanged");

    let token = f.issue(false).await;
    f.clock.advance(ttl - Duration::from_secs(1));
    f.reset(&token, &strong_password(), "")
        .await
        .expect("a second before it expires");
}

#[tokio::test]
async fn a_token_for_an_unknown_name_has_the_same_shape_and_cost_and_never_works() {
    let f = Fixture::new().await;
    let dynalite = Emulator::shared_dynalite().await;
    let proxy = RecordingProxy::start(dynalite.addr()).await;
    let recovery = recovery_via(&f.auth, &proxy.endpoint(), Arc::clone(&f.clock) as _);
    // A name as long as the user's, so the tokens' lengths can be compared.
    let unknown = format!(
        "nobody-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..14]
    );
    assert_eq!(unknown.len(), f.user.username.len(), "arrangement");

    let mut answers = Vec::new();
    for name in [f.user.username.as_str(), unknown.as_str()] {
        proxy.clear();
        let issued = recovery.issue(name, false).await.expect("issued");
        let operations: Vec<String> = proxy
            .requests()
            .iter()
            .map(|r| r.operation().to_owned())
            .collect();
        answers.push((issued, operations));
    }
    let ((known, known_ops), (ghost, ghost_ops)) = (&answers[0], &answers[1]);
    assert_eq!(known_ops, &["UpdateItem"], "one write for an account");
    assert_eq!(ghost_ops, known_ops, "the same work for no account");
    let (known_text, ghost_text) = (known.token.expose_secret(), ghost.token.expose_secret());
    assert_eq!(known_text.len(), ghost_text.len());
    assert!(ghost_text.starts_with("dgrec1_") && known_text.starts_with("dgrec1_"));
    assert_eq!(known.expires_at, ghost.expires_at);
    assert!(known.stored && !ghost.stored);
    assert!(f.auth.user_item(&unknown).await.is_none(), "no row created");

    assert_refused(f.reset(ghost_text, &strong_password(), "").await, "unknown");
    let made_up = RecoveryToken::generate(&f.user.username).encode();
    assert_refused(
        f.reset(made_up.expose_secret(), &strong_password(), "")
            .await,
        "made up",
    );
    assert!(f.auth.user_item(&unknown).await.is_none(), "still none");
}

#[tokio::test]
async fn a_weak_password_is_refused_before_the_token_is_touched() {
    let f = Fixture::new().await;
    let token = f.issue(false).await;
    let with_name = format!("{}-and-more-words", f.user.username);
    for weak in ["short", "password123", with_name.as_str(), &"p".repeat(257)] {
        for _ in 0..=f.auth.settings.lockout.threshold {
            let status = f.reset(&token, weak, "").await.expect_err(weak);
            assert_eq!(status.code(), Code::InvalidArgument, "{weak}: {status:?}");
            assert_eq!(tests::violated_fields(&status), ["new_password"]);
        }
    }
    assert!(!f.auth.attempts_counted(&f.user.username).await);
    assert!(f.item_has("recovery_token_hash").await, "not consumed");
    f.reset(&token, &strong_password(), "")
        .await
        .expect("the token still works");
}

#[tokio::test]
async fn with_totp_on_a_code_is_needed_and_a_wrong_one_counts() {
    let f = Fixture::new().await;
    let secret = f.enable_totp().await;
    let token = f.issue(false).await;
    let new = strong_password();

    let missing = f.reset(&token, &new, "").await.expect_err("no code");
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_mfa_required(&missing);
    let wrong = f
        .reset(&token, &new, "000000")
        .await
        .expect_err("wrong code");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    assert!(f.auth.attempts_counted(&f.user.username).await, "counted");
    assert!(f.item_has("recovery_token_hash").await, "not consumed");

    f.reset(&token, &new, &code(&secret, f.step()))
        .await
        .expect("the right code");
    assert!(f.item_has("totp_secret").await, "TOTP stays on");
    assert!(!f.auth.attempts_counted(&f.user.username).await, "cleared");
    let login = f.login(&new).await.expect_err("needs the code");
    assert_mfa_required(&login);
    assert_eq!(
        f.outcomes("password_reset"),
        ["failed", "failed", "succeeded"]
    );
}

#[tokio::test]
async fn a_token_issued_to_reset_the_second_factor_turns_totp_off() {
    let f = Fixture::new().await;
    f.enable_totp().await;
    let token = f.issue(true).await;
    let new = strong_password();

    f.reset(&token, &new, "").await.expect("no code needed");
    for attribute in ["totp_secret", "totp_last_step", "recovery_codes"] {
        assert!(!f.item_has(attribute).await, "{attribute} removed");
    }
    f.login(&new).await.expect("no second factor any more");
    assert_eq!(f.outcomes("second_factor_reset"), ["succeeded"]);
    assert_eq!(f.outcomes("password_reset"), ["succeeded"]);
}

#[tokio::test]
async fn repeated_bad_tokens_lock_the_name_like_failed_logins() {
    let f = Fixture::new().await;
    let token = f.issue(false).await;
    let threshold = f.auth.settings.lockout.threshold;
    for _ in 0..threshold {
        let made_up = RecoveryToken::generate(&f.user.username).encode();
        let result = f
            .reset(made_up.expose_secret(), &strong_password(), "")
            .await;
        assert_refused(result, "made up");
    }
    let locked = f
        .reset(&token, &strong_password(), "")
        .await
        .expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    assert!(locked.get_error_details().retry_info().is_some());
    let login = f.login(&f.user.password).await.expect_err("shared count");
    assert_eq!(login.code(), Code::ResourceExhausted);
    assert!(f.item_has("recovery_token_hash").await, "not consumed");

    f.clock
        .advance(Duration::from_secs(f.auth.settings.lockout.first_secs + 1));
    f.reset(&token, &strong_password(), "")
        .await
        .expect("the real token once the lock ends");
}

#[tokio::test]
async fn raw_and_oversized_inputs_get_clear_statuses_and_count_nothing() {
    let f = Fixture::new().await;
    let empty = f
        .reset("", &strong_password(), "")
        .await
        .expect_err("empty");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(tests::violated_fields(&empty), ["recovery_token"]);
    let long_name = format!("{}{}", f.user.username, "x".repeat(64));
    let hostile = [
        "garbage".to_owned(),
        "dgrec1_".to_owned(),
        format!("dgrec1_{}", "A".repeat(60_000)),
        format!("dgr1_{}", "A".repeat(86)),
        format!("dgrec1_{}", f.user.username),
        RecoveryToken::generate(&long_name[..64])
            .encode()
            .expose_secret()
            .to_uppercase(),
        "dgrec1_\u{0}\u{7f}\u{1F600}".to_owned(),
    ];
    for token in &hostile {
        assert_refused(f.reset(token, &strong_password(), "").await, "malformed");
    }
    let too_big = format!("dgrec1_{}", "A".repeat(70_000));
    let status = f
        .reset(&too_big, &strong_password(), "")
        .await
        .expect_err("too big");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(!f.auth.attempts_counted(&f.user.username).await);

    f.enable_totp().await;
    let both = ResetPasswordRequest {
        recovery_token: f.issue(false).await,
        new_password: strong_password(),
        totp_code: "123456".into(),
        recovery_code: "abcd-efgh-jkmn-pqrs".into(),
    };
    let status = f
        .client
        .clone()
        .reset_password(both)
        .await
        .expect_err("both");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // The password is unchanged: a login with it lacks only its second factor.
    let login = f.login(&f.user.password).await.expect_err("needs the code");
    assert_mfa_required(&login);
}

/// Deadlines from 1 to 50 ms end ResetPassword at every stage: before its checks nothing
/// changes; after them the token is spent with the new password in one write and every
/// session ends, even when the caller has gone. Never a spent token without the new password,
/// nor the reverse.
#[tokio::test]
async fn a_reset_cut_short_by_its_deadline_lands_whole_or_not_at_all() {
    let f = Fixture::new().await;
    let mut client = f.client.clone();
    let (mut landed, mut landed_cut_short, mut not_landed) = (0, 0, 0);
    for millis in (1..=50).step_by(2) {
        let user = TestUser::register(&mut client).await;
        let session = user.login(&mut client).await;
        let issued = f
            .recovery
            .issue(&user.username, false)
            .await
            .expect("token");
        let new = strong_password();
        let mut request = tonic::Request::new(ResetPasswordRequest {
            recovery_token: issued.token.expose_secret().to_owned(),
            new_password: new.clone(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_millis(millis));
        let result = client.clone().reset_password(request).await;

        // A reset past its checks runs on without its caller: give it time to finish.
        let audited = || {
            let (log, user_id) = (f.log.clone(), user.user_id.clone());
            async move {
                log.of_user(&user_id)
                    .iter()
                    .any(|l| l["event"] == "password_reset" && l["outcome"] == "succeeded")
            }
        };
        let finished = tests::eventually(Duration::from_secs(1), audited).await;
        let item = f.auth.user_item(&user.username).await.expect("the item");
        let spent = !item.contains_key("recovery_token_hash");
        let version = f.auth.user_number(&user.username, "password_version").await;
        assert_eq!(
            spent,
            version == Some(1),
            "{millis} ms: token and password apart"
        );
        assert_eq!(
            spent, finished,
            "{millis} ms: spent without its sessions ended"
        );
        if spent {
            let refreshed = refresh(&mut client, &session.refresh_token).await;
            assert!(refreshed.is_err(), "{millis} ms: the old session ended");
            try_login(&mut client, &user.username, &new)
                .await
                .expect("new password");
            landed += 1;
            landed_cut_short += usize::from(result.is_err());
        } else {
            let status = result.expect_err("a success spends the token");
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{millis} ms: {status:?}"
            );
            refresh(&mut client, &session.refresh_token)
                .await
                .expect("nothing ended");
            try_login(&mut client, &user.username, &user.password)
                .await
                .expect("old password");
            not_landed += 1;
        }
    }
    assert!(
        not_landed > 0,
        "arrangement: a call cut short before its write"
    );
    assert!(landed > 0, "arrangement: a call that landed");
    eprintln!("landed: {landed} ({landed_cut_short} cut short), not landed: {not_landed}");
}

#[tokio::test]
async fn a_login_racing_a_reset_keeps_no_session_with_the_old_password() {
    let f = Fixture::new().await;
    let token = f.issue(false).await;
    let new = strong_password();
    let login = {
        let (mut client, user) = (f.client.clone(), f.user.clone());
        tokio::spawn(async move {
            client
                .login(LoginRequest {
                    username: user.username,
                    password: user.password,
                    ..Default::default()
                })
                .await
        })
    };
    f.reset(&token, &new, "").await.expect("reset");
    if let Ok(response) = login.await.expect("the login's task") {
        let mut client = f.client.clone();
        let tokens = response.into_inner();
        let refreshed = refresh(&mut client, &tokens.refresh_token).await;
        assert!(
            refreshed.is_err(),
            "a session with the old password survived"
        );
    }
}

#[tokio::test]
async fn a_token_dies_with_its_account() {
    let f = Fixture::new().await;
    let token = f.issue(false).await;
    let mut client = f.client.clone();
    let access = f.user.login(&mut client).await.access_token;
    let deletion = DeleteAccountRequest {
        password: f.user.password.clone(),
        ..Default::default()
    };
    client
        .delete_account(with_bearer(deletion, &access))
        .await
        .expect("DeleteAccount");

    assert_refused(f.reset(&token, &strong_password(), "").await, "deleting");
    let issued = f
        .recovery
        .issue(&f.user.username, false)
        .await
        .expect("issued");
    assert!(!issued.stored, "no token for an account being deleted");
    let erased = || async { f.auth.user_item(&f.user.username).await.is_none() };
    assert!(
        tests::eventually(Duration::from_secs(30), erased).await,
        "erased, token and all"
    );
    assert_refused(f.reset(&token, &strong_password(), "").await, "erased");
}

/// An auth-service with TOTP on, a manual clock and the admin listener (test PKI), one user,
/// and a client presenting the admin certificate.
struct AdminFixture {
    f: Fixture,
    admin: AdminServiceClient<Channel>,
    _pki: AdminPki,
}

impl AdminFixture {
    async fn new() -> Self {
        let pki = AdminPki::new();
        let mut settings = TestAuth::settings_with_totp();
        pki.enable(&mut settings);
        let f = Fixture::with(settings).await;
        let admin = pki.admin(f.auth.admin_addr.expect("on")).await;
        Self {
            f,
            admin,
            _pki: pki,
        }
    }

    async fn create(
        &self,
        username: &str,
        reset_second_factor: bool,
    ) -> Result<CreateRecoveryTokenResponse, Status> {
        let request = CreateRecoveryTokenRequest {
            username: username.to_owned(),
            reset_second_factor,
        };
        let answer = self.admin.clone().create_recovery_token(request).await?;
        Ok(answer.into_inner())
    }
}

fn admin_subject() -> String {
    format!("CN={ADMIN_CN}, O={ADMIN_ORG}")
}

#[tokio::test]
async fn the_admin_service_issues_a_token_over_mtls_that_resets_the_password() {
    let a = AdminFixture::new().await;
    let f = &a.f;
    f.enable_totp().await;
    // Typed in another case: usernames are case-insensitive.
    let typed = f.user.username.to_uppercase();
    let answer = a.create(&typed, true).await.expect("CreateRecoveryToken");
    assert!(answer.recovery_token.starts_with("dgrec1_"));
    let expires_at = answer.expires_at.expect("expires_at").seconds;
    assert_eq!(expires_at, f.clock.now().unix_timestamp() + 900);

    let new = strong_password();
    f.reset(&answer.recovery_token, &new, "")
        .await
        .expect("reset");
    f.login(&new).await.expect("TOTP reset too");
    assert_refused(
        f.reset(&answer.recovery_token, &strong_password(), "")
            .await,
        "used",
    );

    let issued = f.log.events(|e| {
        e["event"] == "recovery_token_issued" && e["username"] == f.user.username.as_str()
    });
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["outcome"], "succeeded");
    assert_eq!(issued[0]["admin_subject"], admin_subject().as_str());
    assert_eq!(f.outcomes("second_factor_reset"), ["succeeded"]);
    f.log
        .assert_free_of(&[answer.recovery_token.as_str(), new.as_str()]);
}

#[tokio::test]
async fn the_admin_service_answers_the_same_for_an_unknown_user() {
    let a = AdminFixture::new().await;
    let f = &a.f;
    let unknown = format!(
        "nobody-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..14]
    );
    assert_eq!(unknown.len(), f.user.username.len(), "arrangement");

    let known = a.create(&f.user.username, false).await.expect("known");
    let ghost = a
        .create(&unknown, false)
        .await
        .expect("unknown: same answer");
    assert_eq!(known.recovery_token.len(), ghost.recovery_token.len());
    assert_eq!(known.expires_at, ghost.expires_at);
    assert!(ghost.recovery_token.starts_with("dgrec1_"));
    assert!(f.auth.user_item(&unknown).await.is_none(), "no row created");
    assert_refused(
        f.reset(&ghost.recovery_token, &strong_password(), "").await,
        "unknown user's token",
    );

    let failed = f.log.events(|e| {
        e["event"] == "recovery_token_issued"
            && e["outcome"] == "failed"
            && e["admin_subject"] == admin_subject().as_str()
    });
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["username"].is_null(),
        "no name that is no account's"
    );
    assert!(failed[0]["username_hash"].is_string());

    let malformed = a.create("not a name!", false).await.expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
    assert_eq!(tests::violated_fields(&malformed), ["username"]);
}

#[tokio::test]
async fn create_recovery_token_is_not_on_the_public_listener() {
    let a = AdminFixture::new().await;
    let mut public = AdminServiceClient::new(a.f.auth.channel().await);
    let request = CreateRecoveryTokenRequest {
        username: a.f.user.username.clone(),
        reset_second_factor: true,
    };
    let refused = public.create_recovery_token(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    assert!(!a.f.item_has("recovery_token_hash").await, "nothing issued");
}
