//! DisableUser, EnableUser and ForceLogout through the admin listener, against dynalite and
//! moto with a data-service listening to the auth-service: a disabled user's existing access
//! and refresh tokens are refused everywhere (Refresh, bearer calls, GetCredentials, the
//! data-service through the revocation feed) and its login is refused like a wrong password,
//! until EnableUser; ForceLogout ends every session and leaves login open.

use common::proto::{
    admin::v1::{
        DisableUserRequest, EnableUserRequest, ForceLogoutRequest, GetUserRequest,
        admin_service_client::AdminServiceClient, disable_user_request, enable_user_request,
        force_logout_request, get_user_request,
    },
    auth::v1::auth_service_client::AuthServiceClient,
};
use tests::{
    admin::AdminPki,
    auth::{Endpoints, TestAuth, TestUser, try_login},
    data::TestData,
    endings::{Held, refused_by_auth, refused_by_data},
    unique_prefix,
};
use tonic::{Code, transport::Channel};

/// An auth-service with vending and the admin listener on, and a data-service beside it.
struct Stack {
    auth: TestAuth,
    data: TestData,
    admin: AdminServiceClient<Channel>,
    client: AuthServiceClient<Channel>,
    _pki: AdminPki,
}

impl Stack {
    async fn spawn() -> Self {
        let pki = AdminPki::new();
        let endpoints = Endpoints::shared().await;
        let items_table = format!("{}-items", unique_prefix());
        let mut settings = TestAuth::settings_for_items(&items_table);
        pki.enable(&mut settings);
        let auth = TestAuth::spawn_with(settings, endpoints.clone()).await;
        let data_settings = TestData::settings(&items_table, auth.addr);
        let data = TestData::spawn_with(data_settings, &endpoints.dynamodb, true).await;
        let admin = pki.admin(auth.admin_addr.expect("on")).await;
        let client = auth.client().await;
        Self {
            auth,
            data,
            admin,
            client,
            _pki: pki,
        }
    }

    /// A registered user and two of its sessions.
    async fn user_with_sessions(&mut self) -> (TestUser, Vec<Held>) {
        let user = TestUser::register(&mut self.client).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let login = user.login(&mut self.client).await;
            held.push(Held::from_login(&self.auth, &login).await);
        }
        (user, held)
    }

    async fn get(&mut self, user_id: &str) -> common::proto::admin::v1::User {
        let request = GetUserRequest {
            user: Some(get_user_request::User::UserId(user_id.to_owned())),
        };
        let answer = self.admin.get_user(request).await.expect("GetUser");
        answer.into_inner().user.expect("a user")
    }
}

#[tokio::test]
async fn a_disabled_users_tokens_are_refused_everywhere_until_it_is_enabled() {
    let mut stack = Stack::spawn().await;
    let (user, held) = stack.user_with_sessions().await;
    let wrong = try_login(&mut stack.client, &user.username, "not the password")
        .await
        .expect_err("a wrong password");

    let by_name = || DisableUserRequest {
        user: Some(disable_user_request::User::Username(
            user.username.to_uppercase(),
        )),
    };
    let disabled = stack.admin.disable_user(by_name()).await.expect("disable");
    let disabled = disabled.into_inner();
    assert_eq!(disabled.sessions_ended, 2);
    let again = stack.admin.disable_user(by_name()).await.expect("again");
    let again = again.into_inner();
    assert_eq!(again.sessions_ended, 0, "disabling twice is fine");
    assert_eq!(
        again.disabled_at, disabled.disabled_at,
        "the first time stays"
    );

    for session in &held {
        refused_by_auth(&mut stack.client, session).await;
        refused_by_data(&stack.data, session).await;
    }
    let login = try_login(&mut stack.client, &user.username, &user.password).await;
    let login = login.expect_err("a disabled user cannot log in");
    assert_eq!(
        (login.code(), login.message()),
        (wrong.code(), wrong.message()),
        "refused like a wrong password"
    );
    let described = stack.get(&user.user_id).await;
    assert!(described.disabled_at.is_some());
    assert_eq!(described.active_sessions, 0);

    let enable = EnableUserRequest {
        user: Some(enable_user_request::User::UserId(user.user_id.clone())),
    };
    stack
        .admin
        .enable_user(enable.clone())
        .await
        .expect("enable");
    stack
        .admin
        .enable_user(enable)
        .await
        .expect("enabling twice");
    let login = user.login(&mut stack.client).await;
    assert_eq!(login.user_id, user.user_id, "enabled: login works again");
    for session in &held {
        refused_by_auth(&mut stack.client, session).await;
    }
    assert!(stack.get(&user.user_id).await.disabled_at.is_none());
}

#[tokio::test]
async fn force_logout_ends_every_session_and_leaves_login_open() {
    let mut stack = Stack::spawn().await;
    let (user, held) = stack.user_with_sessions().await;
    assert_eq!(stack.get(&user.user_id).await.active_sessions, 2);

    let request = || ForceLogoutRequest {
        user: Some(force_logout_request::User::UserId(user.user_id.clone())),
    };
    let ended = stack
        .admin
        .force_logout(request())
        .await
        .expect("ForceLogout");
    assert_eq!(ended.into_inner().sessions_ended, 2);
    let ended = stack.admin.force_logout(request()).await.expect("again");
    assert_eq!(ended.into_inner().sessions_ended, 0);

    for session in &held {
        refused_by_auth(&mut stack.client, session).await;
        refused_by_data(&stack.data, session).await;
    }
    assert_eq!(stack.get(&user.user_id).await.active_sessions, 0);
    user.login(&mut stack.client).await;
    assert_eq!(stack.get(&user.user_id).await.active_sessions, 1);
}

#[tokio::test]
async fn disabling_or_logging_out_someone_unknown_is_not_found() {
    let mut stack = Stack::spawn().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = stack
        .admin
        .disable_user(DisableUserRequest {
            user: Some(disable_user_request::User::UserId(unknown.clone())),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let refused = stack
        .admin
        .force_logout(ForceLogoutRequest {
            user: Some(force_logout_request::User::Username("no-such-user".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
}

#[tokio::test]
async fn thirty_racing_disables_agree_and_end_each_session_once() {
    let mut stack = Stack::spawn().await;
    let (user, held) = stack.user_with_sessions().await;
    let calls = (0..30).map(|_| {
        let mut admin = stack.admin.clone();
        let request = DisableUserRequest {
            user: Some(disable_user_request::User::UserId(user.user_id.clone())),
        };
        async move { admin.disable_user(request).await.map(|r| r.into_inner()) }
    });
    let answers: Vec<_> = futures::future::join_all(calls).await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.expect("OK")).collect();
    let first = answers[0].disabled_at;
    assert!(answers.iter().all(|answer| answer.disabled_at == first));
    let ended: u32 = answers.iter().map(|answer| answer.sessions_ended).sum();
    assert_eq!(ended, 2, "each session ended by exactly one call");
    for session in &held {
        refused_by_auth(&mut stack.client, session).await;
    }
}

#[tokio::test]
async fn a_disable_cut_short_by_its_deadline_is_never_left_half_done() {
    let mut stack = Stack::spawn().await;
    for deadline_ms in [1, 3, 10, 30] {
        let (user, held) = stack.user_with_sessions().await;
        let mut request = tonic::Request::new(DisableUserRequest {
            user: Some(disable_user_request::User::UserId(user.user_id.clone())),
        });
        request.set_timeout(std::time::Duration::from_millis(deadline_ms));
        let _ = stack.admin.disable_user(request).await;

        // Untouched, or disabled with every session ended: never disabled with a live one.
        let settled = tests::eventually(std::time::Duration::from_secs(10), || {
            let mut stack_admin = stack.admin.clone();
            let user_id = user.user_id.clone();
            async move {
                let request = GetUserRequest {
                    user: Some(get_user_request::User::UserId(user_id)),
                };
                let user = stack_admin.get_user(request).await.expect("GetUser");
                let user = user.into_inner().user.expect("a user");
                (user.disabled_at.is_some() && user.active_sessions == 0)
                    || (user.disabled_at.is_none() && user.active_sessions == 2)
            }
        })
        .await;
        assert!(
            settled,
            "deadline {deadline_ms} ms left the user half disabled"
        );
        if stack.get(&user.user_id).await.disabled_at.is_some() {
            for session in &held {
                refused_by_auth(&mut stack.client, session).await;
            }
        }
    }
}
