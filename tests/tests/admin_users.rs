//! ListUsers, GetUser, UnlockUser and DeleteUser through the admin listener, against dynalite
//! with a manual clock: paging through more than one page (and refusing a forged token), what
//! GetUser reports, bad input, a lockout cleared, and an account erased like DeleteAccount.

use std::{collections::HashSet, sync::Arc, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    clock::ManualClock,
    proto::{
        admin::v1::{
            DeleteUserRequest, GetUserRequest, ListUsersRequest, UnlockUserRequest,
            admin_service_client::AdminServiceClient, delete_user_request, get_user_request,
            unlock_user_request,
        },
        auth::v1::{RegisterRequest, auth_service_client::AuthServiceClient},
    },
};
use tests::{
    admin::AdminPki,
    auth::{Endpoints, TestAuth, TestUser, refresh, try_login},
};
use time::OffsetDateTime;
use tonic::{Code, transport::Channel};

/// How long the tests wait for background work (sweeps run every second).
const PATIENCE: Duration = Duration::from_secs(30);

struct Fixture {
    auth: TestAuth,
    clock: Arc<ManualClock>,
    admin: AdminServiceClient<Channel>,
    client: AuthServiceClient<Channel>,
    _pki: AdminPki,
}

impl Fixture {
    async fn new() -> Self {
        let pki = AdminPki::new();
        let mut settings = TestAuth::settings();
        pki.enable(&mut settings);
        settings.erasure.sweep_secs = 1;
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let endpoints = Endpoints::dynalite_only().await;
        let auth = TestAuth::spawn_with_clock(settings, endpoints, Arc::clone(&clock) as _).await;
        let admin = pki.admin(auth.admin_addr.expect("on")).await;
        let client = auth.client().await;
        Self {
            auth,
            clock,
            admin,
            client,
            _pki: pki,
        }
    }

    async fn get(
        &mut self,
        username: &str,
    ) -> Result<common::proto::admin::v1::User, tonic::Status> {
        let request = GetUserRequest {
            user: Some(get_user_request::User::Username(username.to_owned())),
        };
        let answer = self.admin.get_user(request).await?;
        Ok(answer.into_inner().user.expect("a user"))
    }
}

#[tokio::test]
async fn list_users_pages_through_every_account_and_refuses_a_forged_token() {
    let mut f = Fixture::new().await;
    let mut registered = HashSet::new();
    for _ in 0..7 {
        registered.insert(TestUser::register(&mut f.client).await.user_id);
    }

    let (mut listed, mut token, mut pages) = (HashSet::new(), String::new(), 0);
    loop {
        let request = ListUsersRequest {
            page_size: 3,
            page_token: token.clone(),
        };
        let page = f
            .admin
            .list_users(request)
            .await
            .expect("a page")
            .into_inner();
        assert!(page.users.len() <= 3);
        pages += 1;
        for user in page.users {
            assert!(user.created_at.is_some() && !user.totp_enabled);
            assert!(listed.insert(user.user_id), "listed once");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "the listing ends");
    }
    assert_eq!(listed, registered);
    assert!(pages >= 3, "{pages} pages of 3 for 7 users");

    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    for bad in [
        String::from_utf8(forged).expect("ASCII"),
        "v4.local.not-a-token".to_owned(),
        "x".repeat(5_000),
    ] {
        let request = ListUsersRequest {
            page_size: 3,
            page_token: bad,
        };
        let refused = f.admin.list_users(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    let request = ListUsersRequest {
        page_size: 501,
        page_token: String::new(),
    };
    let refused = f.admin.list_users(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

#[tokio::test]
async fn get_user_describes_an_account_by_name_or_id_and_refuses_bad_input() {
    let mut f = Fixture::new().await;
    let user = TestUser::register(&mut f.client).await;
    user.login(&mut f.client).await;

    let by_name = f.get(&user.username.to_uppercase()).await.expect("by name");
    let request = GetUserRequest {
        user: Some(get_user_request::User::UserId(user.user_id.clone())),
    };
    let by_id = f.admin.get_user(request).await.expect("by id").into_inner();
    assert_eq!(by_id.user.as_ref(), Some(&by_name));
    assert_eq!(by_name.user_id, user.user_id);
    assert_eq!(by_name.username, user.username.to_lowercase());
    assert_eq!(by_name.active_sessions, 1);
    assert!(!by_name.totp_enabled);
    let created = by_name.created_at.expect("created_at").seconds;
    assert!((created - common::clock::Clock::now(&*f.clock).unix_timestamp()).abs() < 60);
    assert!(by_name.disabled_at.is_none() && by_name.deletion_requested_at.is_none());
    assert!(by_name.locked_until.is_none() && by_name.failed_attempts == 0);

    let cases = [
        (None, Code::InvalidArgument),
        (
            Some(get_user_request::User::UserId("not-a-uuid".into())),
            Code::InvalidArgument,
        ),
        (
            Some(get_user_request::User::Username("a".into())),
            Code::InvalidArgument,
        ),
        (
            Some(get_user_request::User::Username("x".repeat(300))),
            Code::InvalidArgument,
        ),
        (
            Some(get_user_request::User::UserId(
                uuid::Uuid::new_v4().to_string(),
            )),
            Code::NotFound,
        ),
        (
            Some(get_user_request::User::Username("nobody-here".into())),
            Code::NotFound,
        ),
    ];
    for (user, code) in cases {
        let refused = f
            .admin
            .get_user(GetUserRequest { user: user.clone() })
            .await;
        let refused = refused.expect_err("refused");
        assert_eq!(refused.code(), code, "{user:?}: {refused:?}");
    }
}

#[tokio::test]
async fn unlock_user_clears_a_lockout() {
    let mut f = Fixture::new().await;
    let user = TestUser::register(&mut f.client).await;
    let threshold = f.auth.settings.lockout.threshold;
    for _ in 0..threshold {
        let _ = try_login(&mut f.client, &user.username, "not the password").await;
    }
    let locked = try_login(&mut f.client, &user.username, &user.password).await;
    assert_eq!(locked.unwrap_err().code(), Code::ResourceExhausted);
    let described = f.get(&user.username).await.expect("GetUser");
    assert!(described.locked_until.is_some(), "{described:?}");
    assert!(described.failed_attempts >= threshold, "{described:?}");

    let request = || UnlockUserRequest {
        user: Some(unlock_user_request::User::Username(user.username.clone())),
    };
    f.admin.unlock_user(request()).await.expect("UnlockUser");
    f.admin
        .unlock_user(request())
        .await
        .expect("unlocking twice");

    let described = f.get(&user.username).await.expect("GetUser");
    assert!(described.locked_until.is_none() && described.failed_attempts == 0);
    user.login(&mut f.client).await;
}

async fn user_item(auth: &TestAuth, username: &str) -> bool {
    let key = AttributeValue::S(username.to_lowercase());
    let output = auth
        .dynamodb
        .get_item()
        .table_name(&auth.settings.users_table)
        .key("username", key)
        .consistent_read(true)
        .send()
        .await
        .expect("read the user");
    output.item.is_some()
}

#[tokio::test]
async fn delete_user_erases_the_account_like_delete_account() {
    let mut f = Fixture::new().await;
    let user = TestUser::register(&mut f.client).await;
    let login = user.login(&mut f.client).await;

    let request = || DeleteUserRequest {
        user: Some(delete_user_request::User::UserId(user.user_id.clone())),
    };
    f.admin.delete_user(request()).await.expect("DeleteUser");

    let refused = try_login(&mut f.client, &user.username, &user.password).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let refreshed = refresh(&mut f.client, &login.refresh_token).await;
    assert_eq!(refreshed.unwrap_err().code(), Code::Unauthenticated);

    // Until the erasure is over the account shows as being deleted, and the name stays taken.
    if let Ok(pending) = f.get(&user.username).await {
        assert!(pending.deletion_requested_at.is_some(), "{pending:?}");
        assert_eq!(pending.active_sessions, 0);
    }
    f.clock.advance(Duration::from_secs(120));
    let auth = &f.auth;
    let erased = tests::eventually(PATIENCE, || async {
        !user_item(auth, &user.username).await
    })
    .await;
    assert!(erased, "the account is erased");
    let gone = f.get(&user.username).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = f.admin.delete_user(request()).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    f.client
        .register(RegisterRequest {
            username: user.username.clone(),
            password: "another password entirely".into(),
        })
        .await
        .expect("the name is free");
}
