//! ChangePassword through the gRPC API, against dynalite: the old password must be right (and
//! wrong ones count toward the lockout), the new one must pass every rule, and every other
//! session of the user ends while the caller's own lives on.

use std::{collections::HashSet, sync::Arc, time::Duration};

use auth_service::config::Settings;
use common::{
    clock::ManualClock,
    proto::auth::v1::{
        ChangePasswordRequest, ChangePasswordResponse, LogoutRequest, RefreshRequest,
        auth_service_client::AuthServiceClient,
    },
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, try_login, with_bearer},
    delay::DelayProxy,
    emulators::Emulator,
};
use time::OffsetDateTime;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

type Client = AuthServiceClient<Channel>;

const NEW_PASSWORD: &str = "a brand new passphrase";

async fn auth_with(change: impl FnOnce(&mut Settings)) -> TestAuth {
    let mut settings = TestAuth::settings();
    change(&mut settings);
    TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await
}

async fn change_password(
    client: &mut Client,
    access_token: &str,
    old: &str,
    new: &str,
) -> Result<ChangePasswordResponse, Status> {
    let request = ChangePasswordRequest {
        old_password: old.to_owned(),
        new_password: new.to_owned(),
    };
    client
        .change_password(with_bearer(request, access_token))
        .await
        .map(tonic::Response::into_inner)
}

async fn refresh(client: &mut Client, token: &str) -> Result<(), Status> {
    let request = RefreshRequest {
        refresh_token: token.to_owned(),
    };
    client.refresh(request).await.map(drop)
}

#[tokio::test]
async fn every_other_session_ends_and_the_callers_own_lives_on() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let own = user.login(&mut client).await;
    let others = [user.login(&mut client).await, user.login(&mut client).await];

    let changed = change_password(&mut client, &own.access_token, &user.password, NEW_PASSWORD)
        .await
        .expect("ChangePassword");

    assert_eq!(changed.sessions_revoked, 2);
    for other in &others {
        let status = refresh(&mut client, &other.refresh_token)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    refresh(&mut client, &own.refresh_token)
        .await
        .expect("the caller's own session lives on");
}

#[tokio::test]
async fn the_new_password_logs_in_and_the_old_one_does_not() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let own = user.login(&mut client).await;

    change_password(&mut client, &own.access_token, &user.password, NEW_PASSWORD)
        .await
        .expect("ChangePassword");

    let old = try_login(&mut client, &user.username, &user.password)
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    let new = try_login(&mut client, &user.username, NEW_PASSWORD)
        .await
        .expect("the new password logs in");
    assert_eq!(new.user_id, user.user_id);
}

#[tokio::test]
async fn a_wrong_old_password_is_unauthenticated_and_counts_toward_the_lockout() {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let auth = TestAuth::spawn_with_clock(
        TestAuth::settings(),
        Endpoints::dynalite_only().await,
        clock,
    )
    .await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let own = user.login(&mut client).await;

    for _ in 0..2 {
        let status = change_password(
            &mut client,
            &own.access_token,
            "not the password",
            NEW_PASSWORD,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    for _ in 0..3 {
        let status = try_login(&mut client, &user.username, "not the password")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    let before = auth.metrics.password_verifications.get();
    let locked = change_password(&mut client, &own.access_token, &user.password, NEW_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    assert!(locked.get_error_details().retry_info().is_some());
    let login = try_login(&mut client, &user.username, &user.password)
        .await
        .unwrap_err();
    assert_eq!(
        login.code(),
        Code::ResourceExhausted,
        "5 failures lock the name"
    );
    assert_eq!(auth.metrics.password_verifications.get(), before);
}

#[tokio::test]
async fn weak_new_passwords_are_invalid_arguments_and_change_nothing() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let own = user.login(&mut client).await;

    for weak in ["short", "password123", &"p".repeat(257)] {
        let status = change_password(&mut client, &own.access_token, &user.password, weak)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let fields = tests::violated_fields(&status);
        assert_eq!(fields, ["new_password"]);
        assert!(!status.message().contains(weak), "{status:?}");
    }
    try_login(&mut client, &user.username, &user.password)
        .await
        .expect("the password is unchanged");
}

#[tokio::test]
async fn ended_missing_and_forged_tokens_are_unauthenticated() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let own = user.login(&mut client).await;
    client
        .logout(LogoutRequest {
            refresh_token: own.refresh_token.clone(),
        })
        .await
        .expect("Logout");

    let ended = change_password(&mut client, &own.access_token, &user.password, NEW_PASSWORD)
        .await
        .unwrap_err();
    let missing = client
        .change_password(ChangePasswordRequest {
            old_password: user.password.clone(),
            new_password: NEW_PASSWORD.into(),
        })
        .await
        .unwrap_err();
    let forged = auth.forge(&auth.claims(&user.user_id));
    let foreign_session = change_password(&mut client, &forged, &user.password, NEW_PASSWORD)
        .await
        .unwrap_err();
    for status in [ended, missing, foreign_session] {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    try_login(&mut client, &user.username, &user.password)
        .await
        .expect("the password is unchanged");
}

#[tokio::test]
async fn thirty_concurrent_changes_with_one_token_have_one_winner() {
    // The lockout off, so all thirty check the old password and race to the write itself.
    let auth = auth_with(|s| s.lockout.threshold = 0).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let own = user.login(&mut client).await;

    let changes = (0..30).map(|i| {
        let (mut client, token, old) = (
            client.clone(),
            own.access_token.clone(),
            user.password.clone(),
        );
        async move {
            let new = format!("{NEW_PASSWORD} number {i}");
            let result = change_password(&mut client, &token, &old, &new).await;
            (new, result)
        }
    });
    let results = futures::future::join_all(changes).await;

    let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    // A loser that read the user before the winner's write loses the conditional write
    // (FAILED_PRECONDITION); one that read it after finds the old password no longer
    // stored (UNAUTHENTICATED). Which of the two each gets depends on the scheduling.
    for (_, result) in &results {
        if let Err(status) = result {
            assert!(
                matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::Unauthenticated
                ),
                "{status:?}"
            );
        }
    }
    let (winner, _) = winners[0];
    try_login(&mut client, &user.username, winner)
        .await
        .expect("the winner's password logs in");
    let passwords: HashSet<_> = results.iter().map(|(new, _)| new).collect();
    for loser in passwords.iter().filter(|&&new| new != winner).take(3) {
        let status = try_login(&mut client, &user.username, loser)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    refresh(&mut client, &own.refresh_token)
        .await
        .expect("the caller's session lives on");
    let item = auth
        .dynamodb
        .get_item()
        .table_name(&auth.settings.users_table)
        .key(
            "username",
            aws_sdk_dynamodb::types::AttributeValue::S(user.username.to_lowercase()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["user_id"].as_s().unwrap(), &user.user_id);
    assert_eq!(
        item["password_version"].as_n().unwrap(),
        "1",
        "one change landed"
    );
}

/// A login that read the old password's hash before a change and starts its session after the
/// change ended the user's other sessions must not keep that session.
#[tokio::test]
async fn a_login_racing_a_password_change_keeps_no_session() {
    let changer = TestAuth::spawn().await;
    // A replica whose password checks take half a second or so (calibrated at its dearer cost,
    // then padded to it), so the change on the other replica happens while its login is
    // between reading the user and starting the session.
    let mut slow_settings = changer.settings.clone();
    slow_settings.listen_addr = "127.0.0.1:0".parse().unwrap();
    slow_settings.argon2_memory_kib = 16 * 1024;
    slow_settings.argon2_iterations = 32;
    slow_settings.hash_workers = 1;
    let slow = TestAuth::spawn_with(slow_settings, Endpoints::dynalite_only().await).await;
    let mut client = changer.client().await;
    let user = TestUser::register(&mut client).await;
    let own = user.login(&mut client).await;

    let mut slow_client = slow.client().await;
    let racing = {
        let (username, password) = (user.username.clone(), user.password.clone());
        tokio::spawn(async move { try_login(&mut slow_client, &username, &password).await })
    };
    let checking = tests::eventually(Duration::from_secs(10), || async {
        slow.metrics.hash_jobs_running.get() == 1
    })
    .await;
    assert!(checking, "the slow replica checks the password");
    change_password(&mut client, &own.access_token, &user.password, NEW_PASSWORD)
        .await
        .expect("ChangePassword");
    assert_eq!(
        slow.metrics.hash_jobs_running.get(),
        1,
        "arrangement: the change finished while the racing login was still checking"
    );

    match racing.await.unwrap() {
        Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        Ok(login) => {
            let status = refresh(&mut client, &login.refresh_token)
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "the racing session lives"
            );
        }
    }
}

/// A change whose caller gives up after the new hash is stored still ends the other sessions:
/// the password and the sweep land together or not at all.
#[tokio::test]
async fn a_change_cut_short_by_its_deadline_lands_whole_or_not_at_all() {
    const DELAY: Duration = Duration::from_millis(200);
    let fast = TestAuth::spawn().await;
    let dynalite = Emulator::shared_dynalite().await;
    // Every DynamoDB answer to this replica comes DELAY late; its ChangePassword makes five
    // calls before the write that stores the hash, so deadlines around 5.5 × DELAY end the
    // call while that write is landing.
    let proxy = DelayProxy::start(dynalite.addr(), DELAY).await;
    let mut settings = fast.settings.clone();
    settings.listen_addr = "127.0.0.1:0".parse().unwrap();
    let endpoints = Endpoints {
        dynamodb: format!("http://{}", proxy.addr()),
        ..Endpoints::dynalite_only().await
    };
    let slow = TestAuth::spawn_with(settings, endpoints).await;
    let (mut client, mut slow_client) = (fast.client().await, slow.client().await);
    let keys = fast.published_keys().await;

    let mut cut_short_after_landing = 0;
    // Past the nominal window too, since a loaded machine stretches every stage; the sweep
    // stops once a call has been cut short after its write landed.
    for tenths in (50..=110).step_by(3) {
        if cut_short_after_landing > 0 {
            break;
        }
        let user = TestUser::register(&mut client).await;
        let own = user.login(&mut client).await;
        let other = user.login(&mut client).await;
        let other_session = fast
            .verifier()
            .verify(&keys, &other.access_token)
            .unwrap()
            .session_id;

        let mut request = with_bearer(
            ChangePasswordRequest {
                old_password: user.password.clone(),
                new_password: NEW_PASSWORD.into(),
            },
            &own.access_token,
        );
        request.set_timeout(DELAY * tenths / 10);
        let result = slow_client.change_password(request).await;

        let changed = stored_password_version(&fast, &user.username).await == Some(1);
        let other_ended = || revoked(&fast, &user.user_id, &other_session);
        if changed {
            let ended = tests::eventually(Duration::from_secs(5), other_ended).await;
            assert!(
                ended,
                "deadline {tenths}: password changed, other session alive"
            );
            cut_short_after_landing += usize::from(result.is_err());
        } else {
            assert!(
                result.is_err(),
                "deadline {tenths}: success without a change"
            );
            assert!(
                !other_ended().await,
                "deadline {tenths}: ended, but unchanged"
            );
        }
    }
    assert!(
        cut_short_after_landing > 0,
        "arrangement: some deadline ended a call after its write landed"
    );
}

async fn stored_password_version(auth: &TestAuth, username: &str) -> Option<u64> {
    auth.user_item(username).await?;
    auth.user_number(username, "password_version").await
}

async fn revoked(auth: &TestAuth, user_id: &str, session_id: &str) -> bool {
    let item = auth
        .session_item(user_id, session_id)
        .await
        .expect("the session item");
    item.contains_key("revoked_at")
}
