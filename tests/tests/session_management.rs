//! A user's own sessions through the auth-service's API, against dynalite: ListSessions (what
//! a login records, newest first, which one is current), RevokeSession (NOT_FOUND for anything
//! not the caller's, idempotent, raced), and every bearer RPC refusing the access token of an
//! ended session.
//!
//! Every test starts with `AuditLog::capture()` (one subscriber per test binary) and tells its
//! audit lines apart by its own user ids.

use auth_service::config::Settings;
use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::auth::v1::{
    ChangePasswordRequest, DisableTotpRequest, EnrollTotpRequest, GetCredentialsRequest,
    ListSessionsRequest, LoginRequest, LoginResponse, LogoutAllRequest, LogoutRequest,
    RevokeSessionRequest, Session, auth_service_client::AuthServiceClient,
};
use tests::{
    audit::AuditLog,
    auth::{Endpoints, TestAuth, TestUser, refresh, with_bearer},
};
use tonic::{Code, Request, Status, transport::Channel};

type Client = AuthServiceClient<Channel>;

/// Captures the log, then spawns an auth-service on the shared dynalite with `change` applied
/// to the test settings.
async fn spawn(change: impl FnOnce(&mut Settings)) -> (AuditLog, TestAuth, Client) {
    let log = AuditLog::capture();
    let mut settings = TestAuth::settings();
    change(&mut settings);
    let auth = TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await;
    let client = auth.client().await;
    (log, auth, client)
}

/// A Login of `user` carrying these metadata entries.
async fn login_with(
    client: &mut Client,
    user: &TestUser,
    metadata: &[(&str, &str)],
) -> LoginResponse {
    let mut request = Request::new(LoginRequest {
        username: user.username.clone(),
        password: user.password.clone(),
        ..Default::default()
    });
    for (name, value) in metadata {
        let name: tonic::metadata::MetadataKey<tonic::metadata::Ascii> =
            name.parse().expect("metadata name");
        request
            .metadata_mut()
            .insert(name, value.parse().expect("metadata value"));
    }
    client.login(request).await.expect("Login").into_inner()
}

async fn list(client: &mut Client, access_token: &str) -> Result<Vec<Session>, Status> {
    client
        .list_sessions(with_bearer(ListSessionsRequest {}, access_token))
        .await
        .map(|response| response.into_inner().sessions)
}

async fn revoke(client: &mut Client, access_token: &str, session_id: &str) -> Result<(), Status> {
    let request = RevokeSessionRequest {
        session_id: session_id.to_owned(),
    };
    client
        .revoke_session(with_bearer(request, access_token))
        .await
        .map(drop)
}

fn ids(sessions: &[Session]) -> Vec<&str> {
    sessions.iter().map(|s| s.session_id.as_str()).collect()
}

#[tokio::test]
async fn sessions_list_newest_first_with_where_they_logged_in_from() {
    // The test connects from 127.0.0.1: a trusted proxy, which may name the end user; so is
    // the proxy in front of it (10.0.0.1), skipped from the right.
    let (_log, auth, mut client) = spawn(|settings| {
        settings.trusted_proxies = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
    })
    .await;
    let user = TestUser::register(&mut client).await;
    let first = login_with(
        &mut client,
        &user,
        &[
            ("user-agent", "phone-app/1.0"),
            ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
        ],
    )
    .await;
    let second = login_with(&mut client, &user, &[]).await;
    let long_agent = "x".repeat(300);
    let third = login_with(&mut client, &user, &[("user-agent", &long_agent)]).await;
    let sids = [
        auth.session_of(&first.access_token).await,
        auth.session_of(&second.access_token).await,
        auth.session_of(&third.access_token).await,
    ];

    let sessions = list(&mut client, &second.access_token).await.unwrap();

    assert_eq!(
        ids(&sessions),
        [&*sids[2], &*sids[1], &*sids[0]],
        "newest first"
    );
    let current: Vec<_> = sessions.iter().map(|s| s.current).collect();
    assert_eq!(
        current,
        [false, true, false],
        "the bearer's own session is current"
    );
    let [newest, middle, oldest] = &sessions[..] else {
        panic!("three sessions: {sessions:?}");
    };
    assert_eq!(
        oldest.client_addr, "203.0.113.7",
        "the trusted proxy's word"
    );
    // tonic appends its own name to the user agent a request sets.
    assert!(
        oldest.user_agent.starts_with("phone-app/1.0"),
        "{:?}",
        oldest.user_agent
    );
    assert_eq!(
        middle.client_addr, "127.0.0.1",
        "no header: the peer itself"
    );
    assert_eq!(
        newest.user_agent.chars().count(),
        256,
        "cut to 256 characters"
    );
    assert!(
        newest.user_agent.starts_with("xxx"),
        "{:?}",
        newest.user_agent
    );
    for session in &sessions {
        let created = session.created_at.expect("created_at");
        let expires = session.expires_at.expect("expires_at");
        assert_eq!(
            expires.seconds - created.seconds,
            i64::try_from(auth.settings.refresh_token_ttl_secs).unwrap(),
            "{session:?}"
        );
        assert!(
            session.last_refreshed_at.is_none(),
            "never refreshed: {session:?}"
        );
    }
}

#[tokio::test]
async fn an_untrusted_peer_cannot_name_the_address_recorded() {
    let (_log, auth, mut client) = spawn(|_| {}).await;
    let user = TestUser::register(&mut client).await;
    let login = login_with(&mut client, &user, &[("x-forwarded-for", "198.51.100.9")]).await;

    let sessions = list(&mut client, &login.access_token).await.unwrap();

    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].client_addr, "127.0.0.1",
        "the spoofed header is ignored"
    );
    assert!(sessions[0].current);
    auth.stop().await;
}

#[tokio::test]
async fn sessions_written_before_addresses_were_recorded_list_them_as_empty() {
    let (_log, auth, mut client) = spawn(|_| {}).await;
    let user = TestUser::register(&mut client).await;
    let login = login_with(&mut client, &user, &[("user-agent", "old-client")]).await;
    let sid = auth.session_of(&login.access_token).await;
    auth.dynamodb
        .update_item()
        .table_name(&auth.settings.sessions_table)
        .key("user_id", AttributeValue::S(user.user_id.clone()))
        .key("session_id", AttributeValue::S(sid))
        .update_expression("REMOVE client_addr, user_agent")
        .send()
        .await
        .expect("UpdateItem");

    let sessions = list(&mut client, &login.access_token).await.unwrap();

    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].client_addr, "");
    assert_eq!(sessions[0].user_agent, "");
}

#[tokio::test]
async fn a_refresh_sets_last_refreshed_at() {
    let (_log, _auth, mut client) = spawn(|_| {}).await;
    let user = TestUser::register(&mut client).await;
    let login = user.login(&mut client).await;

    let refreshed = refresh(&mut client, &login.refresh_token).await.unwrap();
    let sessions = list(&mut client, &refreshed.access_token).await.unwrap();

    let session = &sessions[0];
    let refreshed_at = session.last_refreshed_at.expect("set after a Refresh");
    let millis = |t: prost_types::Timestamp| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
    assert!(
        millis(refreshed_at) >= millis(session.created_at.unwrap()),
        "{session:?}"
    );
    assert_eq!(
        session.expires_at, refreshed.refresh_token_expires_at,
        "the refresh slid the expiry"
    );
}

#[tokio::test]
async fn ended_and_expired_sessions_are_not_listed() {
    let (_log, auth, mut client) = spawn(|_| {}).await;
    let user = TestUser::register(&mut client).await;
    let current = user.login(&mut client).await;
    let logged_out = user.login(&mut client).await;
    let expired = user.login(&mut client).await;
    client
        .logout(LogoutRequest {
            refresh_token: logged_out.refresh_token.clone(),
        })
        .await
        .unwrap();
    // Sessions read the system clock (a ManualClock would move only the lockout and TOTP
    // rules): the session expires by its stored deadline moving into the past.
    let expired_sid = auth.session_of(&expired.access_token).await;
    auth.dynamodb
        .update_item()
        .table_name(&auth.settings.sessions_table)
        .key("user_id", AttributeValue::S(user.user_id.clone()))
        .key("session_id", AttributeValue::S(expired_sid))
        .update_expression("SET expires_at = :past")
        .expression_attribute_values(
            ":past",
            AttributeValue::N((common::clock::now_unix() - 1).to_string()),
        )
        .send()
        .await
        .expect("UpdateItem");

    let sessions = list(&mut client, &current.access_token).await.unwrap();

    assert_eq!(
        ids(&sessions),
        [auth.session_of(&current.access_token).await]
    );
}

#[tokio::test]
async fn the_list_is_bounded_by_the_session_cap() {
    let (_log, _auth, mut client) = spawn(|settings| settings.max_sessions_per_user = 3).await;
    let user = TestUser::register(&mut client).await;
    let mut last = None;
    for _ in 0..6 {
        last = Some(user.login(&mut client).await);
    }

    let sessions = list(&mut client, &last.unwrap().access_token)
        .await
        .unwrap();

    assert_eq!(sessions.len(), 3, "the cap ended the oldest");
    assert!(sessions[0].current, "the newest is this one");
}

#[tokio::test]
async fn revoking_a_listed_session_ends_it_and_only_it() {
    let (log, auth, mut client) = spawn(|_| {}).await;
    let user = TestUser::register(&mut client).await;
    let mine = user.login(&mut client).await;
    let other = login_with(&mut client, &user, &[("user-agent", "laptop")]).await;
    let other_sid = auth.session_of(&other.access_token).await;
    assert_eq!(
        list(&mut client, &mine.access_token).await.unwrap().len(),
        2
    );

    revoke(&mut client, &mine.access_token, &other_sid)
        .await
        .unwrap();

    let status = refresh(&mut client, &other.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let left = list(&mut client, &mine.access_token).await.unwrap();
    assert_eq!(ids(&left), [auth.session_of(&mine.access_token).await]);
    let item = auth.session_item(&user.user_id, &other_sid).await.unwrap();
    assert_eq!(
        item["revoked_reason"],
        AttributeValue::S("revoke_session".into())
    );
    revoke(&mut client, &mine.access_token, &other_sid)
        .await
        .expect("revoking again answers OK");
    refresh(&mut client, &mine.refresh_token)
        .await
        .expect("the caller's own session lives");

    let lines = log.of_user(&user.user_id);
    let revoked: Vec<_> = lines
        .iter()
        .filter(|line| line["event"] == "session_revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "only the call that ended it: {lines:#?}");
    assert_eq!(revoked[0]["outcome"], "succeeded");
    assert_eq!(revoked[0]["session_id"], other_sid.as_str());
    assert_eq!(
        revoked[0]["username"],
        user.username.to_lowercase().as_str()
    );
    assert_eq!(revoked[0]["client_addr"], "127.0.0.1");
    log.assert_free_of(&[
        &user.password,
        &mine.access_token,
        &mine.refresh_token,
        &other.access_token,
        &other.refresh_token,
    ]);
}

#[tokio::test]
async fn sessions_not_the_callers_are_not_found_and_garbage_is_invalid() {
    let (log, auth, mut client) = spawn(|_| {}).await;
    let alice = TestUser::register(&mut client).await;
    let bob = TestUser::register(&mut client).await;
    let alice_login = alice.login(&mut client).await;
    let bob_login = bob.login(&mut client).await;
    let bob_sid = auth.session_of(&bob_login.access_token).await;

    let others = revoke(&mut client, &alice_login.access_token, &bob_sid)
        .await
        .unwrap_err();
    let unknown = revoke(
        &mut client,
        &alice_login.access_token,
        &uuid::Uuid::new_v4().to_string(),
    )
    .await
    .unwrap_err();
    for status in [&others, &unknown] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(status.message(), "session not found");
    }
    refresh(&mut client, &bob_login.refresh_token)
        .await
        .expect("bob's session still works");
    assert!(
        auth.session_item(&alice.user_id, &bob_sid).await.is_none(),
        "nothing written"
    );

    for garbage in ["", "not-a-uuid", "../../etc"] {
        let status = revoke(&mut client, &alice_login.access_token, garbage)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{garbage:?}: {status:?}"
        );
        let fields = tests::violated_fields(&status);
        assert_eq!(fields, ["session_id"]);
    }
    let failed: Vec<_> = log
        .of_user(&alice.user_id)
        .into_iter()
        .filter(|line| line["event"] == "session_revoked")
        .collect();
    assert_eq!(failed.len(), 2, "both NOT_FOUNDs audited: {failed:#?}");
    assert!(failed.iter().all(|line| line["outcome"] == "failed"));
}

#[tokio::test]
async fn revoking_the_current_session_logs_it_out() {
    let (_log, auth, mut client) = spawn(|_| {}).await;
    let user = TestUser::register(&mut client).await;
    let login = user.login(&mut client).await;
    let sid = auth.session_of(&login.access_token).await;

    revoke(&mut client, &login.access_token, &sid)
        .await
        .unwrap();

    let status = refresh(&mut client, &login.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = list(&mut client, &login.access_token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = revoke(&mut client, &login.access_token, &sid)
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "a retry with the ended session's own token is refused like any bearer call"
    );
}

#[tokio::test]
async fn thirty_racing_revocations_of_one_session_all_succeed_and_end_it_once() {
    let (log, auth, mut client) = spawn(|_| {}).await;
    let user = TestUser::register(&mut client).await;
    let mine = user.login(&mut client).await;
    let target = user.login(&mut client).await;
    let target_sid = auth.session_of(&target.access_token).await;

    let attempts = (0..30).map(|_| {
        let (mut client, token, sid) = (
            client.clone(),
            mine.access_token.clone(),
            target_sid.clone(),
        );
        async move { revoke(&mut client, &token, &sid).await }
    });
    let results = futures::future::join_all(attempts).await;

    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    let item = auth.session_item(&user.user_id, &target_sid).await.unwrap();
    assert!(item.contains_key("revoked_at"));
    let succeeded: Vec<_> = log
        .of_user(&user.user_id)
        .into_iter()
        .filter(|line| line["event"] == "session_revoked")
        .collect();
    assert_eq!(succeeded.len(), 1, "ended once: {succeeded:#?}");
    assert_eq!(succeeded[0]["outcome"], "succeeded");
    assert_eq!(
        list(&mut client, &mine.access_token).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn every_bearer_call_refuses_the_access_token_of_an_ended_session() {
    // Vending on (its STS is dead): GetCredentials must refuse before it would ask STS.
    let _log = AuditLog::capture();
    let auth = TestAuth::spawn_with(
        TestAuth::settings_with_vending(),
        Endpoints::dynalite_only().await,
    )
    .await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let ended = user.login(&mut client).await;
    let alive = user.login(&mut client).await;
    client
        .logout(LogoutRequest {
            refresh_token: ended.refresh_token.clone(),
        })
        .await
        .unwrap();
    let bad = client
        .logout_all(with_bearer(LogoutAllRequest {}, "v4.public.garbage"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::Unauthenticated);

    let token = ended.access_token.as_str();
    let mut c = client.clone();
    let refusals = [
        (
            "LogoutAll",
            c.logout_all(with_bearer(LogoutAllRequest {}, token))
                .await
                .err(),
        ),
        (
            "GetCredentials",
            c.get_credentials(with_bearer(GetCredentialsRequest {}, token))
                .await
                .err(),
        ),
        (
            "ListSessions",
            c.list_sessions(with_bearer(ListSessionsRequest {}, token))
                .await
                .err(),
        ),
        (
            "RevokeSession",
            c.revoke_session(with_bearer(RevokeSessionRequest::default(), token))
                .await
                .err(),
        ),
        (
            "ChangePassword",
            c.change_password(with_bearer(
                ChangePasswordRequest {
                    old_password: user.password.clone(),
                    new_password: "a much longer and stranger passphrase 9!".into(),
                },
                token,
            ))
            .await
            .err(),
        ),
        (
            "EnrollTotp",
            c.enroll_totp(with_bearer(
                EnrollTotpRequest {
                    password: user.password.clone(),
                },
                token,
            ))
            .await
            .err(),
        ),
        (
            "DisableTotp",
            c.disable_totp(with_bearer(DisableTotpRequest::default(), token))
                .await
                .err(),
        ),
    ];
    for (rpc, refusal) in refusals {
        let status = refusal.unwrap_or_else(|| panic!("{rpc} accepted an ended session's token"));
        assert_eq!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
        assert_eq!(status.message(), bad.message(), "{rpc}: like any bad token");
    }
    // LogoutAll answered 0 before: now nothing was ended by it, and the live session lives.
    refresh(&mut client, &alive.refresh_token)
        .await
        .expect("the other session was not touched");
}
