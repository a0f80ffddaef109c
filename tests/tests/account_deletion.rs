//! DeleteAccount against dynalite, time moved by a `ManualClock`: the account is unusable when
//! the call answers, every item of the user's partition and every row of the user is erased
//! once the temporary credentials vended before have expired, and the username is free only
//! then. A wrong password or a missing second factor changes nothing and is counted; a stolen
//! token alone, a second call, 30 racing calls and calls cut short by their deadline all end
//! in one erasure or none.

use std::{sync::Arc, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    clock::{Clock, ManualClock},
    proto::auth::v1::{
        ConfirmTotpRequest, DeleteAccountRequest, EnrollTotpRequest, ListSessionsRequest,
        LoginRequest, RegisterRequest, auth_service_client::AuthServiceClient,
    },
};
use tests::{
    audit::AuditLog,
    auth::{Endpoints, TestAuth, TestUser, refresh, try_login, with_bearer},
    delay::DelayProxy,
    emulators::Emulator,
    totp::code,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

type Client = AuthServiceClient<Channel>;

/// Far from any real "now": only the injected clock makes codes of this time valid.
const START: i64 = 1_900_000_000 - 1_900_000_000 % 30 + 10;
/// How long the tests wait for background work (sweeps run every second).
const PATIENCE: Duration = Duration::from_secs(30);

/// Settings with TOTP and credential vending on (so erasure reaches an items table), sweeps
/// every second.
fn settings() -> auth_service::config::Settings {
    let mut settings = TestAuth::settings_with_vending();
    TestAuth::turn_totp_on(&mut settings);
    settings.erasure.sweep_secs = 1;
    settings
}

/// An auth-service with a manual clock, its items table, and one signed-in user.
struct Fixture {
    auth: TestAuth,
    clock: Arc<ManualClock>,
    client: Client,
    user: TestUser,
    access: String,
    refresh_token: String,
    items_table: String,
    log: AuditLog,
}

impl Fixture {
    async fn new() -> Self {
        Self::with(settings()).await
    }

    async fn with(settings: auth_service::config::Settings) -> Self {
        let log = AuditLog::capture();
        let at = time::OffsetDateTime::from_unix_timestamp(START).expect("a time");
        let clock = Arc::new(ManualClock::new(at));
        let endpoints = Endpoints::dynalite_only().await;
        let auth = TestAuth::spawn_with_clock(settings, endpoints, Arc::clone(&clock) as _).await;
        let items_table = items_table_of(&auth);
        common::dynamo::ensure_string_keyed_table(
            &auth.dynamodb,
            &items_table,
            "owner",
            Some("key"),
        )
        .await
        .expect("items table");
        let mut client = auth.client().await;
        let user = TestUser::register(&mut client).await;
        let tokens = user.login(&mut client).await;
        Self {
            auth,
            clock,
            client,
            user,
            access: tokens.access_token,
            refresh_token: tokens.refresh_token,
            items_table,
            log,
        }
    }

    async fn delete(&self, password: &str, totp_code: &str) -> Result<(), Status> {
        delete(self.client.clone(), &self.access, password, totp_code).await
    }

    /// Writes `count` items into `owner`'s partition.
    async fn put_items(&self, owner: &str, count: usize) {
        let (dynamodb, table) = (&self.auth.dynamodb, &self.items_table);
        tests::tables::put_items(dynamodb, table, owner, "notes/", count).await;
    }

    /// Items left in `owner`'s partition.
    async fn items_of(&self, owner: &str) -> usize {
        tests::tables::count_rows(&self.auth.dynamodb, &self.items_table, "owner", owner).await
    }

    /// Whether the user item (the username) still exists.
    async fn user_item(&self) -> Option<std::collections::HashMap<String, AttributeValue>> {
        self.auth.user_item(&self.user.username).await
    }

    async fn session_still_works(&self) -> bool {
        let request = with_bearer(ListSessionsRequest {}, &self.access);
        self.client.clone().list_sessions(request).await.is_ok()
    }

    /// The events of the user's audit lines with `outcome`, in order.
    fn events(&self, outcome: &str) -> Vec<String> {
        self.log
            .of_user(&self.user.user_id)
            .iter()
            .filter(|fields| fields["outcome"] == outcome)
            .map(|fields| fields["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Past the time the credentials vended before the deletion could still write.
    fn let_the_credentials_expire(&self) {
        let duration = Duration::from_secs(self.auth.settings.credentials_duration_secs);
        self.clock.advance(duration + Duration::from_secs(120));
    }

    async fn erased(&self) -> bool {
        let auth = &self.auth;
        let username = self.user.username.clone();
        tests::eventually(PATIENCE, || async {
            auth.user_item(&username).await.is_none()
        })
        .await
    }

    /// Turns TOTP on for the user; returns the secret.
    async fn turn_totp_on(&self) -> String {
        let message = EnrollTotpRequest {
            password: self.user.password.clone(),
        };
        let enrolment = self
            .client
            .clone()
            .enroll_totp(with_bearer(message, &self.access))
            .await
            .expect("EnrollTotp")
            .into_inner();
        let code = code(&enrolment.secret, self.step());
        let message = ConfirmTotpRequest { code };
        self.client
            .clone()
            .confirm_totp(with_bearer(message, &self.access))
            .await
            .expect("ConfirmTotp");
        enrolment.secret
    }

    /// `dynagate_account_erasures_<name>_total` as exported on /metrics.
    async fn metric(&self, name: &str) -> u64 {
        let (_, text) = tests::process::http_get(self.auth.metrics_addr, "/metrics").await;
        let wanted = format!("dynagate_account_erasures_{name}_total ");
        text.lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("{wanted} in {text}"))
    }

    fn step(&self) -> i64 {
        self.clock.now().unix_timestamp() / 30
    }
}

fn items_table_of(auth: &TestAuth) -> String {
    let arn = auth
        .settings
        .items_table_arn
        .as_deref()
        .expect("vending on");
    arn.rsplit('/').next().expect("a table name").to_owned()
}

async fn delete(
    mut client: Client,
    access: &str,
    password: &str,
    totp_code: &str,
) -> Result<(), Status> {
    let message = DeleteAccountRequest {
        password: password.into(),
        totp_code: totp_code.into(),
        recovery_code: String::new(),
    };
    client.delete_account(with_bearer(message, access)).await?;
    Ok(())
}

#[tokio::test]
async fn a_deleted_account_is_unusable_at_once_and_erased_entirely_before_its_name_is_free() {
    let f = Fixture::new().await;
    f.put_items(&f.user.user_id, 300).await;
    let other = uuid::Uuid::new_v4().to_string();
    f.put_items(&other, 3).await;
    let wrong_login = try_login(&mut f.client.clone(), &f.user.username, "not the password")
        .await
        .expect_err("wrong");

    f.delete(&f.user.password, "").await.expect("DeleteAccount");

    // Unusable when the call answers: login (like a wrong password), bearer calls, refresh.
    let login = try_login(&mut f.client.clone(), &f.user.username, &f.user.password).await;
    let login = login.expect_err("no login");
    assert_eq!(
        (login.code(), login.message()),
        (wrong_login.code(), wrong_login.message())
    );
    assert!(!f.session_still_works().await, "its tokens are refused");
    let refreshed = refresh(&mut f.client.clone(), &f.refresh_token).await;
    assert_eq!(
        refreshed.expect_err("no refresh").code(),
        Code::Unauthenticated
    );

    // The first pass empties the partition; the name stays taken until the end.
    let emptied = tests::eventually(PATIENCE, || async {
        f.items_of(&f.user.user_id).await == 0
    })
    .await;
    assert!(emptied, "the first pass erases the items");
    let retaken = f
        .client
        .clone()
        .register(RegisterRequest {
            username: f.user.username.clone(),
            password: "another password entirely".into(),
        })
        .await
        .expect_err("the name is still taken");
    assert_eq!(retaken.code(), Code::AlreadyExists);
    assert!(
        f.user_item().await.is_some(),
        "parked until the credentials expire"
    );
    assert!(
        f.auth.attempts_counted(&f.user.username).await,
        "the login above was counted"
    );

    // An item written meanwhile with credentials vended before is erased by the last pass.
    f.put_items(&f.user.user_id, 2).await;
    f.let_the_credentials_expire();
    assert!(f.erased().await, "the username is freed");

    assert_eq!(f.items_of(&f.user.user_id).await, 0, "no item left");
    assert_eq!(
        f.items_of(&other).await,
        3,
        "another user's items untouched"
    );
    let sessions = &f.auth.settings.sessions_table;
    assert_eq!(
        tests::tables::count_rows(&f.auth.dynamodb, sessions, "user_id", &f.user.user_id).await,
        0,
        "no session row"
    );
    assert!(
        !f.auth.attempts_counted(&f.user.username).await,
        "no attempts row"
    );
    assert_eq!(f.metric("completed").await, 1);
    assert_eq!(f.metric("items_deleted").await, 302);
    let events = f.events("succeeded");
    for event in [
        "account_deletion",
        "account_sessions_ended",
        "account_items_erased",
        "account_erased",
    ] {
        assert!(events.iter().any(|e| e == event), "{event} in {events:?}");
    }
    f.log.assert_free_of(&[f.user.password.as_str()]);

    // The name is free: a new account with it starts empty.
    let mut client = f.client.clone();
    let again = client
        .register(RegisterRequest {
            username: f.user.username.clone(),
            password: "another password entirely".into(),
        })
        .await
        .expect("the name is free")
        .into_inner();
    assert_ne!(again.user_id, f.user.user_id);
}

#[tokio::test]
async fn a_wrong_password_or_a_missing_code_changes_nothing_and_is_counted() {
    let f = Fixture::new().await;
    let secret = f.turn_totp_on().await;
    f.put_items(&f.user.user_id, 5).await;

    let wrong = f.delete("not the password", "").await.expect_err("wrong");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let missing = f.delete(&f.user.password, "").await.expect_err("no code");
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let details = missing.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "MFA_REQUIRED");
    let bad_code = f
        .delete(&f.user.password, "000000")
        .await
        .expect_err("bad code");
    assert_eq!(bad_code.code(), Code::Unauthenticated, "{bad_code:?}");

    assert!(f.session_still_works().await, "nothing changed");
    let item = f.user_item().await.expect("the user");
    assert!(
        !item.contains_key("deletion_requested_at"),
        "no deletion record"
    );
    assert_eq!(f.items_of(&f.user.user_id).await, 5);
    assert!(
        f.auth.attempts_counted(&f.user.username).await,
        "the failures were counted"
    );
    let failed = f.events("failed");
    assert_eq!(
        failed.iter().filter(|e| *e == "account_deletion").count(),
        3,
        "{failed:?}"
    );

    // Counted like logins: at the threshold the name locks, the right proof included.
    for _ in 3..f.auth.settings.lockout.threshold {
        let _ = f.delete("not the password", "").await;
    }
    let current = code(&secret, f.step());
    let locked = f
        .delete(&f.user.password, &current)
        .await
        .expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    assert!(f.session_still_works().await, "still nothing changed");

    // Past the lock, and into a later TOTP step than the one confirmation spent.
    f.clock.advance(Duration::from_secs(30));
    let current = code(&secret, f.step());
    f.delete(&f.user.password, &current)
        .await
        .expect("the right proof");
    assert!(!f.session_still_works().await);
}

#[tokio::test]
async fn a_stolen_token_alone_cannot_delete_and_a_second_call_is_refused() {
    let f = Fixture::new().await;
    let stolen = f.delete("", "").await.expect_err("no password");
    assert_eq!(stolen.code(), Code::Unauthenticated, "{stolen:?}");
    assert!(f.session_still_works().await);
    assert!(
        f.user_item()
            .await
            .is_some_and(|item| !item.contains_key("deletion_requested_at"))
    );

    f.delete(&f.user.password, "").await.expect("DeleteAccount");
    let second = f.delete(&f.user.password, "").await.expect_err("second");
    assert_eq!(second.code(), Code::Unauthenticated, "{second:?}");
}

#[tokio::test]
async fn thirty_racing_deletions_make_one_erasure() {
    let f = Fixture::new().await;
    f.put_items(&f.user.user_id, 40).await;
    let calls = (0..30).map(|_| {
        let (client, access, password) =
            (f.client.clone(), f.access.clone(), f.user.password.clone());
        tokio::spawn(async move { delete(client, &access, &password, "").await })
    });
    let mut succeeded = 0;
    for result in futures::future::join_all(calls).await {
        match result.expect("the call's task") {
            Ok(()) => succeeded += 1,
            // Ended meanwhile, or counted past the threshold by the racing calls.
            Err(status) => assert!(
                matches!(
                    status.code(),
                    Code::Unauthenticated | Code::ResourceExhausted
                ),
                "{status:?}"
            ),
        }
    }
    assert!(succeeded >= 1, "some call went through");
    assert!(!f.session_still_works().await);
    f.let_the_credentials_expire();
    assert!(f.erased().await);
    assert_eq!(f.items_of(&f.user.user_id).await, 0);
    assert_eq!(f.metric("started").await, 1, "one deletion record");
    assert_eq!(f.metric("completed").await, 1, "one erasure");
}

/// With every DynamoDB answer late, deadlines end DeleteAccount at every stage: before the
/// proof is checked nothing happens; after it the deletion runs to its end (the record written,
/// the sessions ended, the account erased) though the caller has gone.
#[tokio::test]
async fn a_deletion_cut_short_by_its_deadline_finishes_or_never_starts() {
    const DELAY: Duration = Duration::from_millis(150);
    let mut plain = TestAuth::settings(); // no items table: nothing to wait for
    plain.erasure.sweep_secs = 1;
    let fast = TestAuth::spawn_with(plain, Endpoints::dynalite_only().await).await;
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

    let (mut finished_cut_short, mut never_started) = (0, 0);
    // Longer than the nominal window, since a loaded machine stretches every stage; the
    // sweep stops once both outcomes have been seen.
    for tenths in (20..=200).step_by(15) {
        if finished_cut_short > 0 && never_started > 0 {
            break;
        }
        let user = TestUser::register(&mut client).await;
        let access = user.login(&mut client).await.access_token;
        let message = DeleteAccountRequest {
            password: user.password.clone(),
            ..Default::default()
        };
        let mut request = with_bearer(message, &access);
        request.set_timeout(DELAY * tenths / 10);
        let result = slow_client.clone().delete_account(request).await;

        let username = user.username.clone();
        let gone = || async { fast.user_item(&username).await.is_none() };
        if tests::eventually(PATIENCE.min(DELAY * 60), gone).await {
            let list = with_bearer(ListSessionsRequest {}, &access);
            let refused = client.list_sessions(list).await.expect_err("ended");
            assert_eq!(
                refused.code(),
                Code::Unauthenticated,
                "{tenths}: {refused:?}"
            );
            finished_cut_short += usize::from(result.is_err());
        } else {
            let status = result.expect_err("a success erases");
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{tenths}: {status:?}"
            );
            let item = fast.user_item(&user.username).await.expect("the user");
            assert!(
                !item.contains_key("deletion_requested_at"),
                "{tenths}: half started"
            );
            let login = LoginRequest {
                username: user.username.clone(),
                password: user.password.clone(),
                ..Default::default()
            };
            client.login(login).await.expect("the account still works");
            never_started += 1;
        }
    }
    assert!(
        finished_cut_short > 0,
        "arrangement: a call cut short after its check"
    );
    assert!(
        never_started > 0,
        "arrangement: a call cut short before its check"
    );
}
