//! Credentials after a compromise, against dynalite and moto with two auth-service replicas:
//! LogoutAll, ChangePassword and a reused refresh token on one replica make the other vend the
//! user's next session *new* credentials (the user's credentials epoch, carried in DynamoDB);
//! a plain Logout changes nothing for the user's other sessions; racing calls right after a
//! bump cost one AssumeRole per replica; a thief racing the owner's LogoutAll never holds the
//! credentials later sessions get; a LogoutAll cut short that ended anything has bumped.

use std::collections::HashSet;

use common::proto::auth::v1::{
    ChangePasswordRequest, GetCredentialsRequest, LogoutAllRequest, LogoutRequest,
    auth_service_client::AuthServiceClient,
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, refresh, with_bearer},
    moto,
};
use tonic::{Code, Status, transport::Channel};

type Client = AuthServiceClient<Channel>;

/// Two replicas with credential vending, on the shared dynalite and moto.
async fn replicas() -> (TestAuth, TestAuth) {
    let first =
        TestAuth::spawn_with(TestAuth::settings_with_vending(), Endpoints::shared().await).await;
    let second = first.spawn_replica().await;
    (first, second)
}

/// The access key id GetCredentials hands the holder of `token`.
async fn key_of(client: &mut Client, token: &str) -> Result<String, Status> {
    client
        .get_credentials(with_bearer(GetCredentialsRequest {}, token))
        .await
        .map(|response| response.into_inner().access_key_id)
}

async fn logout_all(client: &mut Client, token: &str) -> Result<u32, Status> {
    client
        .logout_all(with_bearer(LogoutAllRequest {}, token))
        .await
        .map(|response| response.into_inner().sessions_revoked)
}

/// The user's `credentials_epoch` as stored (absent: 0).
async fn epoch(auth: &TestAuth, user: &TestUser) -> u64 {
    auth.user_number(&user.username, "credentials_epoch")
        .await
        .unwrap_or(0)
}

#[tokio::test]
async fn logout_all_on_one_replica_makes_the_other_vend_the_next_session_new_credentials() {
    let (first, second) = replicas().await;
    let (mut one, mut two) = (first.client().await, second.client().await);
    let user = TestUser::register(&mut one).await;
    let stolen = user.login(&mut one).await.access_token;
    let thiefs = key_of(&mut two, &stolen).await.unwrap();

    logout_all(&mut one, &stolen).await.unwrap();
    let next = user.login(&mut one).await.access_token;

    let owners = key_of(&mut two, &next).await.unwrap();
    assert_ne!(owners, thiefs, "the next session's credentials are new");
    assert_ne!(key_of(&mut one, &next).await.unwrap(), thiefs);
    assert_eq!(epoch(&first, &user).await, 2, "bumped before and after");
}

#[tokio::test]
async fn change_password_on_one_replica_makes_every_session_get_new_credentials() {
    let (first, second) = replicas().await;
    let (mut one, mut two) = (first.client().await, second.client().await);
    let user = TestUser::register(&mut one).await;
    let caller = user.login(&mut one).await.access_token;
    let stolen = user.login(&mut one).await.access_token;
    let thiefs = key_of(&mut two, &stolen).await.unwrap();
    assert_eq!(
        key_of(&mut two, &caller).await.unwrap(),
        thiefs,
        "one per user"
    );

    let change = ChangePasswordRequest {
        old_password: user.password.clone(),
        new_password: "a brand new passphrase".into(),
    };
    one.change_password(with_bearer(change, &caller))
        .await
        .unwrap();

    let kept = key_of(&mut two, &caller).await.unwrap();
    assert_ne!(
        kept, thiefs,
        "the caller's kept session gets new credentials too"
    );
    let status = key_of(&mut two, &stolen).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let renamed = TestUser {
        password: "a brand new passphrase".into(),
        ..user.clone()
    };
    let next = renamed.login(&mut one).await.access_token;
    assert_eq!(key_of(&mut two, &next).await.unwrap(), kept);
}

#[tokio::test]
async fn a_reused_refresh_token_makes_every_replica_vend_new_credentials() {
    let (first, second) = replicas().await;
    let (mut one, mut two) = (first.client().await, second.client().await);
    let user = TestUser::register(&mut one).await;
    let login = user.login(&mut one).await;
    let other = user.login(&mut one).await.access_token;
    let before = key_of(&mut two, &login.access_token).await.unwrap();
    // Two rotations retire the login's refresh token: presenting it again is reuse.
    let rotated = refresh(&mut one, &login.refresh_token).await.unwrap();
    refresh(&mut one, &rotated.refresh_token).await.unwrap();

    let reuse = refresh(&mut one, &login.refresh_token).await.unwrap_err();

    assert_eq!(reuse.code(), Code::Unauthenticated);
    let after = key_of(&mut two, &other).await.unwrap();
    assert_ne!(
        after, before,
        "the user's live session gets new credentials"
    );
    let next = user.login(&mut one).await.access_token;
    assert_eq!(key_of(&mut two, &next).await.unwrap(), after);
}

#[tokio::test]
async fn a_plain_logout_leaves_the_other_sessions_credentials_alone() {
    let (first, second) = replicas().await;
    let (mut one, mut two) = (first.client().await, second.client().await);
    let user = TestUser::register(&mut one).await;
    let leaving = user.login(&mut one).await;
    let staying = user.login(&mut one).await.access_token;
    let before = key_of(&mut two, &leaving.access_token).await.unwrap();
    let calls = second.metrics.assume_role_calls.get();

    one.logout(LogoutRequest {
        refresh_token: leaving.refresh_token,
    })
    .await
    .unwrap();

    assert_eq!(key_of(&mut two, &staying).await.unwrap(), before);
    assert_eq!(
        second.metrics.assume_role_calls.get(),
        calls,
        "no AssumeRole"
    );
    assert_eq!(epoch(&first, &user).await, 0);
}

#[tokio::test]
async fn thirty_racing_calls_right_after_a_bump_cost_one_assume_role_per_replica() {
    let (first, second) = replicas().await;
    let mut one = first.client().await;
    let user = TestUser::register(&mut one).await;
    let old = user.login(&mut one).await.access_token;
    let before = key_of(&mut one, &old).await.unwrap();
    logout_all(&mut one, &old).await.unwrap();
    let token = user.login(&mut one).await.access_token;
    let session_name = format!("dynagate-{}", user.user_id);
    let moto_endpoint = first.endpoints.sts.clone();
    let assumed = || moto::assumed_roles_named(&moto_endpoint, &session_name).len();
    let (assumed_before, calls) = (
        assumed(),
        [&first, &second].map(|a| a.metrics.assume_role_calls.get()),
    );

    let mut racing = Vec::new();
    for replica in [&first, &second] {
        let client = replica.client().await;
        for _ in 0..30 {
            let (mut client, token) = (client.clone(), token.clone());
            racing.push(async move { key_of(&mut client, &token).await });
        }
    }
    let keys: Vec<String> = futures::future::join_all(racing)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();

    let per_replica: Vec<HashSet<&String>> = keys
        .chunks(30)
        .map(|chunk| chunk.iter().collect())
        .collect();
    assert!(
        per_replica.iter().all(|keys| keys.len() == 1),
        "{per_replica:?}"
    );
    assert!(!keys.contains(&before));
    let after = [&first, &second].map(|a| a.metrics.assume_role_calls.get());
    assert_eq!(
        after,
        [calls[0] + 1, calls[1] + 1],
        "one AssumeRole per replica"
    );
    assert_eq!(assumed(), assumed_before + 2, "as moto saw it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thief_racing_the_owners_logout_all_never_holds_the_next_sessions_credentials() {
    let (first, second) = replicas().await;
    let mut one = first.client().await;
    let user = TestUser::register(&mut one).await;
    for round in 0..3 {
        let stolen = user.login(&mut one).await.access_token;
        let owner = user.login(&mut one).await.access_token;
        // Four loops fetch credentials with the stolen token until it is refused.
        let thief = (0..4).map(|_| {
            let (replica, stolen) = (&second, stolen.clone());
            async move {
                let mut client = replica.client().await;
                let mut keys = HashSet::new();
                for _ in 0..5000 {
                    match key_of(&mut client, &stolen).await {
                        Ok(key) => keys.insert(key),
                        Err(status) if status.code() == Code::Unauthenticated => return keys,
                        Err(status) => panic!("{status:?}"),
                    };
                }
                panic!("the stolen session was never ended");
            }
        });
        let (stolen_keys, ended) = tokio::join!(futures::future::join_all(thief), async {
            tokio::task::yield_now().await;
            logout_all(&mut first.client().await, &owner).await
        });
        assert!(ended.unwrap() >= 2);
        let stolen_keys: HashSet<String> = stolen_keys.into_iter().flatten().collect();

        let next = user.login(&mut one).await.access_token;
        for replica in [&first, &second] {
            let key = key_of(&mut replica.client().await, &next).await.unwrap();
            assert!(
                !stolen_keys.contains(&key),
                "round {round}: the thief held {key} ({} keys)",
                stolen_keys.len()
            );
        }
    }
}
