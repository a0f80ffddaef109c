//! The session cap with its bound on the user item (`family/cap.rs`): logins that race it
//! still converge on the newest sessions, users whose item has no record (registered before
//! it) or a record that cannot be right get the cap enforced by the Query, and a login that
//! runs the Query below the cap records what it left.

use std::collections::HashMap;

use auth_service::config::Settings;
use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::auth::v1::{LogoutAllRequest, LogoutRequest};
use tests::auth::{TestAuth, TestUser, with_bearer};

async fn auth_with(change: impl FnOnce(&mut Settings)) -> TestAuth {
    let mut settings = TestAuth::settings();
    change(&mut settings);
    TestAuth::spawn_with(settings, tests::auth::Endpoints::dynalite_only().await).await
}

/// A user's sessions as stored, oldest first: (created_at, session_id, ended).
async fn stored_sessions(auth: &TestAuth, user_id: &str) -> Vec<(i64, String, bool)> {
    let mut sessions: Vec<_> = auth
        .dynamodb
        .query()
        .table_name(&auth.settings.sessions_table)
        .key_condition_expression("user_id = :user")
        .expression_attribute_values(":user", AttributeValue::S(user_id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|item| {
            (
                item["created_at"].as_n().unwrap().parse().unwrap(),
                item["session_id"].as_s().unwrap().clone(),
                item.contains_key("revoked_at"),
            )
        })
        .collect();
    sessions.sort();
    sessions
}

/// The ids of the live sessions, and of the newest `n`, oldest first.
fn live_and_newest(stored: &[(i64, String, bool)], n: usize) -> (Vec<&String>, Vec<&String>) {
    let live = stored.iter().filter(|s| !s.2).map(|s| &s.1).collect();
    let newest = stored.iter().rev().take(n).rev().map(|s| &s.1).collect();
    (live, newest)
}

/// Writes `values` onto the user item as they are, and removes `removed`.
async fn rewrite_user(auth: &TestAuth, username: &str, values: &[(&str, u64)], removed: &[&str]) {
    let mut set = Vec::new();
    let mut names = HashMap::new();
    let mut numbers = HashMap::new();
    for (i, (name, value)) in values.iter().enumerate() {
        set.push(format!("#s{i} = :s{i}"));
        names.insert(format!("#s{i}"), (*name).to_owned());
        numbers.insert(format!(":s{i}"), AttributeValue::N(value.to_string()));
    }
    let mut expression = String::new();
    if !set.is_empty() {
        expression = format!("SET {}", set.join(", "));
    }
    if !removed.is_empty() {
        let list: Vec<String> = (0..removed.len()).map(|i| format!("#r{i}")).collect();
        for (i, name) in removed.iter().enumerate() {
            names.insert(format!("#r{i}"), (*name).to_owned());
        }
        expression = format!("{expression} REMOVE {}", list.join(", "));
    }
    auth.dynamodb
        .update_item()
        .table_name(&auth.settings.users_table)
        .key("username", AttributeValue::S(username.to_owned()))
        .update_expression(expression)
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values((!numbers.is_empty()).then_some(numbers))
        .condition_expression("attribute_exists(username)")
        .send()
        .await
        .expect("rewrite the user item");
}

#[tokio::test]
async fn thirty_concurrent_logins_with_the_right_password_converge_under_the_cap() {
    let auth = auth_with(|s| {
        s.max_sessions_per_user = 3;
        // Each login is counted by the lockout until it succeeds: 30 at once need room.
        s.lockout.threshold = 40;
    })
    .await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;

    let logins = (0..30).map(|_| {
        let (mut client, user) = (client.clone(), user.clone());
        async move { user.login(&mut client).await }
    });
    let logins = futures::future::join_all(logins).await;

    let stored = stored_sessions(&auth, &user.user_id).await;
    let (live, newest) = live_and_newest(&stored, 3);
    assert_eq!(stored.len(), 30);
    assert_eq!(live, newest, "the newest three live on");
    assert_eq!(auth.user_number(&user.username, "logins").await, Some(30));
    let keys = auth.published_keys().await;
    let live_login = logins
        .iter()
        .find(|login| {
            let claims = auth.verifier().verify(&keys, &login.access_token).unwrap();
            live.contains(&&claims.session_id)
        })
        .expect("a login of a live session");
    let revoked = client
        .logout_all(with_bearer(LogoutAllRequest {}, &live_login.access_token))
        .await
        .unwrap()
        .into_inner()
        .sessions_revoked;
    assert_eq!(revoked, 3);
}

/// A user registered before the count has none of its attributes: its first login queries
/// and enforces the cap; one that leaves room records it, and the next login trusts it.
#[tokio::test]
async fn a_user_from_before_the_count_gets_the_cap_enforced_and_a_record() {
    let auth = auth_with(|s| s.max_sessions_per_user = 2).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    for _ in 0..2 {
        user.login(&mut client).await;
    }
    // As an item of the previous release: no count, no record, two live sessions.
    rewrite_user(
        &auth,
        &user.username,
        &[],
        &["logins", "cap_live", "cap_logins"],
    )
    .await;

    let mut logins = vec![user.login(&mut client).await];
    let stored = stored_sessions(&auth, &user.user_id).await;
    let (live, newest) = live_and_newest(&stored, 2);
    assert_eq!(stored.len(), 3);
    assert_eq!(live, newest, "the cap holds for a user from before");
    assert_eq!(auth.user_number(&user.username, "logins").await, Some(1));
    assert_eq!(
        auth.user_number(&user.username, "cap_logins").await,
        None,
        "at the cap: nothing worth recording"
    );

    // Both live sessions logged out: the next login (no record yet) queries, finds only its
    // own, and records it; the one after trusts the record (1 + 1 login since, within 2).
    logins.push(user.login(&mut client).await);
    for login in &logins {
        client
            .logout(LogoutRequest {
                refresh_token: login.refresh_token.clone(),
            })
            .await
            .expect("Logout");
    }
    user.login(&mut client).await;
    assert_eq!(
        auth.user_number(&user.username, "cap_logins").await,
        Some(3)
    );
    assert_eq!(auth.user_number(&user.username, "cap_live").await, Some(1));
    user.login(&mut client).await;
    assert_eq!(auth.user_number(&user.username, "logins").await, Some(4));
    assert_eq!(
        auth.user_number(&user.username, "cap_logins").await,
        Some(3),
        "within the bound: no Query, nothing recorded"
    );
    let stored = stored_sessions(&auth, &user.user_id).await;
    assert_eq!(live_and_newest(&stored, 2).0.len(), 2);
}

/// A record that cannot be right (from a later login than any counted, or not a number) is no
/// record: the Query runs and the cap holds.
#[tokio::test]
async fn a_record_that_cannot_be_right_is_ignored() {
    let auth = auth_with(|s| s.max_sessions_per_user = 2).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    for _ in 0..2 {
        user.login(&mut client).await;
    }
    rewrite_user(
        &auth,
        &user.username,
        &[("cap_live", 0), ("cap_logins", 1_000)],
        &[],
    )
    .await;
    user.login(&mut client).await;
    let stored = stored_sessions(&auth, &user.user_id).await;
    let (live, newest) = live_and_newest(&stored, 2);
    assert_eq!(live, newest, "a record from the future is ignored");

    auth.dynamodb
        .update_item()
        .table_name(&auth.settings.users_table)
        .key("username", AttributeValue::S(user.username.clone()))
        .update_expression("SET cap_live = :text, cap_logins = :zero")
        .expression_attribute_values(":text", AttributeValue::S("few".into()))
        .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        .send()
        .await
        .unwrap();
    user.login(&mut client).await;
    let stored = stored_sessions(&auth, &user.user_id).await;
    let (live, newest) = live_and_newest(&stored, 2);
    assert_eq!(live, newest, "a record that does not read is ignored");
}
