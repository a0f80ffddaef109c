//! The credentials epoch at its edges: the data-service drops a user's client when a
//! revocation names the user, even while another session of theirs lives, and signs the next
//! call with the new credentials (seen by a recording proxy in front of dynalite); a LogoutAll
//! cut short by its deadline that ended anything has bumped; sessions without a recorded
//! username, and a malformed epoch written straight into the users table.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::auth::v1::{
    ChangePasswordRequest, GetCredentialsRequest, LogoutAllRequest,
    auth_service_client::AuthServiceClient,
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    data::TestStack,
    emulators::Emulator,
    eventually,
    proxy::{Recorded, RecordingProxy},
};
use tonic::{Code, Status, transport::Channel};

type Client = AuthServiceClient<Channel>;

/// A user's item write: the data-service writes each PutItem as one UpdateItem, signed with
/// the user's temporary credentials (which carry a session token; the services' own keys
/// here do not).
fn user_write(request: &Recorded) -> bool {
    request.operation() == "UpdateItem" && request.security_token.is_some()
}

async fn key_of(client: &mut Client, token: &str) -> Result<String, Status> {
    client
        .get_credentials(with_bearer(GetCredentialsRequest {}, token))
        .await
        .map(|response| response.into_inner().access_key_id)
}

async fn vending() -> TestAuth {
    TestAuth::spawn_with(TestAuth::settings_with_vending(), Endpoints::shared().await).await
}

/// Writes `value` as attribute `name` of the user's item, bypassing the service.
async fn set_user_attribute(auth: &TestAuth, user: &TestUser, name: &str, value: AttributeValue) {
    auth.dynamodb
        .update_item()
        .table_name(&auth.settings.users_table)
        .key("username", AttributeValue::S(user.username.to_lowercase()))
        .update_expression("SET #a = :v")
        .expression_attribute_names("#a", name)
        .expression_attribute_values(":v", value)
        .send()
        .await
        .expect("UpdateItem on the users table");
}

/// The user's `credentials_epoch` as stored (absent: 0).
async fn epoch(auth: &TestAuth, user: &TestUser) -> u64 {
    auth.user_number(&user.username, "credentials_epoch")
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_logout_all_the_data_service_signs_with_the_new_sessions_credentials() {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    let stack = TestStack::spawn_custom(Endpoints::shared().await, &proxy.endpoint()).await;
    let mut user = stack.user().await;
    let mut auth = stack.auth.client().await;
    let last_put_signer = || {
        proxy
            .requests()
            .into_iter()
            .rev()
            .find(user_write)
            .and_then(|request| request.access_key_id)
            .expect("a user's write went through the proxy")
    };
    user.put_text("k", "before").await;
    let before = last_put_signer();
    assert_eq!(before, key_of(&mut auth, &user.token).await.unwrap());

    auth.logout_all(with_bearer(LogoutAllRequest {}, &user.token))
        .await
        .unwrap();
    let released = eventually(Duration::from_secs(5), || async {
        stack.data.metrics.clients_released.get() >= 1
    })
    .await;
    assert!(
        released,
        "the revocation named the user: the client is dropped"
    );
    user.token = user.user.login(&mut auth).await.access_token;
    user.put_text("k", "after").await;

    let after = last_put_signer();
    assert_ne!(after, before, "signed with new credentials");
    assert_eq!(after, key_of(&mut auth, &user.token).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_change_password_the_callers_kept_session_signs_with_new_credentials() {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    let stack = TestStack::spawn_custom(Endpoints::shared().await, &proxy.endpoint()).await;
    let mut caller = stack.user().await;
    let mut auth = stack.auth.client().await;
    let other = caller.user.login(&mut auth).await.access_token;
    let signers = || -> Vec<String> {
        proxy
            .requests()
            .into_iter()
            .filter(user_write)
            .filter_map(|request| request.access_key_id)
            .collect()
    };
    caller.put_text("k", "before").await;
    let caller_token = std::mem::replace(&mut caller.token, other);
    caller.put_text("k", "from the other session").await;
    caller.token = caller_token;
    let before = signers();
    assert!(
        before.len() == 2 && before[0] == before[1],
        "one client: {before:?}"
    );

    let change = ChangePasswordRequest {
        old_password: caller.user.password.clone(),
        new_password: "a brand new passphrase".into(),
    };
    auth.change_password(with_bearer(change, &caller.token))
        .await
        .unwrap();
    let released = eventually(Duration::from_secs(5), || async {
        stack.data.metrics.clients_released.get() >= 1
    })
    .await;
    assert!(
        released,
        "the revocation of the other session named the user"
    );
    caller.put_text("k", "after").await;

    let after = signers().pop().unwrap();
    assert_ne!(
        after, before[0],
        "the caller's session, still live, signs with new credentials"
    );
    assert_eq!(after, key_of(&mut auth, &caller.token).await.unwrap());
}

#[tokio::test]
async fn a_logout_all_cut_short_that_ended_a_session_has_bumped_the_epoch() {
    let auth = vending().await;
    let mut client = auth.client().await;
    let (mut bumped, mut untouched) = (0, 0);
    for millis in 1..=20 {
        let user = TestUser::register(&mut client).await;
        let mut tokens = Vec::new();
        for _ in 0..4 {
            tokens.push(user.login(&mut client).await.access_token);
        }
        let before = key_of(&mut client, &tokens[0]).await.unwrap();
        let mut request = with_bearer(LogoutAllRequest {}, &tokens[0]);
        request.set_timeout(Duration::from_millis(millis));

        let _ = client.logout_all(request).await;

        let mut ended = 0;
        for token in &tokens {
            let session = auth.session_of(token).await;
            let item = auth.session_item(&user.user_id, &session).await.unwrap();
            ended += usize::from(item.contains_key("revoked_at"));
        }
        let epoch = epoch(&auth, &user).await;
        assert!(
            ended == 0 || epoch >= 1,
            "{millis} ms: {ended} sessions ended, epoch {epoch}"
        );
        let next = user.login(&mut client).await.access_token;
        let key = key_of(&mut client, &next).await.unwrap();
        assert_eq!(key != before, epoch > 0, "{millis} ms: epoch {epoch}");
        if epoch > 0 {
            bumped += 1
        } else {
            untouched += 1
        }
    }
    eprintln!("LogoutAll with 1-20 ms deadlines: {bumped} bumped, {untouched} untouched");
}

#[tokio::test]
async fn sessions_without_a_username_get_credentials_shared_with_no_other_session() {
    let auth = vending().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(user.login(&mut client).await.access_token);
    }
    // Sessions started before usernames were recorded look like this.
    for token in &tokens[..2] {
        let session = auth.session_of(token).await;
        auth.dynamodb
            .update_item()
            .table_name(&auth.settings.sessions_table)
            .key("user_id", AttributeValue::S(user.user_id.clone()))
            .key("session_id", AttributeValue::S(session))
            .update_expression("REMOVE username")
            .send()
            .await
            .expect("UpdateItem on the sessions table");
    }

    let mut keys = Vec::new();
    for token in &tokens {
        keys.push(key_of(&mut client, token).await.unwrap());
    }

    assert!(
        keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2],
        "{keys:?}"
    );
    assert_eq!(
        key_of(&mut client, &tokens[0]).await.unwrap(),
        keys[0],
        "cached"
    );
    let ended = client
        .logout_all(with_bearer(LogoutAllRequest {}, &tokens[0]))
        .await
        .expect("LogoutAll works from such a session")
        .into_inner();
    assert_eq!(ended.sessions_revoked, 3);
    let refused = key_of(&mut client, &tokens[2]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_malformed_epoch_in_the_users_table_gets_no_credentials_and_leaks_nothing() {
    let auth = vending().await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let token = user.login(&mut client).await.access_token;
    set_user_attribute(
        &auth,
        &user,
        "credentials_epoch",
        AttributeValue::S("two".into()),
    )
    .await;

    let status = key_of(&mut client, &token).await.unwrap_err();

    assert_eq!(status.code(), Code::Internal);
    assert!(
        !status.message().contains("credentials_epoch"),
        "{status:?}"
    );
    assert_eq!(auth.metrics.assume_role_calls.get(), 0, "STS never asked");
}
