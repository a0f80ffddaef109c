//! GetCredentials against moto's STS (and dynalite for the auth tables). moto enforces no
//! session policy, so these tests check what STS *received*; the golden policy test in
//! auth-service/src/policy.rs checks what the policy *says*.

use std::{collections::HashSet, sync::Arc, time::Duration};

use aws_credential_types::Credentials;
use aws_sdk_dynamodb::types::{AttributeValue, BillingMode, KeyType};
use common::{
    clock::ManualClock,
    proto::auth::v1::{
        GetCredentialsRequest, GetCredentialsResponse, LogoutRequest,
        auth_service_client::AuthServiceClient,
    },
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    emulators::{Emulator, Kind},
    moto,
};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

async fn get_credentials(
    client: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<GetCredentialsResponse, tonic::Status> {
    client
        .get_credentials(with_bearer(GetCredentialsRequest {}, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn logged_in(client: &mut AuthServiceClient<Channel>) -> (TestUser, String) {
    let user = TestUser::register(client).await;
    let token = user.login(client).await.access_token;
    (user, token)
}

#[tokio::test]
async fn credentials_name_the_callers_partition_and_work_against_dynamodb() {
    let auth =
        TestAuth::spawn_with(TestAuth::settings_with_vending(), Endpoints::shared().await).await;
    let mut client = auth.client().await;
    let (user, token) = logged_in(&mut client).await;

    let vended = get_credentials(&mut client, &token).await.unwrap();

    assert!(
        vended.access_key_id.starts_with("ASIA"),
        "{}",
        vended.access_key_id
    );
    assert_eq!(vended.partition_key, user.user_id);
    assert_eq!(vended.region, "us-east-1");
    let table_arn = auth.settings.items_table_arn.clone().unwrap();
    assert!(table_arn.ends_with(&format!("table/{}", vended.table_name)));
    let lifetime =
        vended.expiration.unwrap().seconds - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (800..=900).contains(&lifetime),
        "an access token's lifetime, got {lifetime} s"
    );

    // The credentials sign real DynamoDB calls (dynalite checks no signatures, so this proves
    // the plumbing, not IAM).
    let config = tests::sdk_config(&Emulator::shared_dynalite().await.endpoint())
        .into_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                vended.access_key_id.clone(),
                vended.secret_access_key.clone(),
                Some(vended.session_token.clone()),
                None,
                "vended",
            )),
        )
        .build();
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let create = dynamodb
        .create_table()
        .table_name(&vended.table_name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(common::dynamo::string_attribute("owner").unwrap())
        .attribute_definitions(common::dynamo::string_attribute("key").unwrap())
        .key_schema(common::dynamo::key_element("owner", KeyType::Hash).unwrap())
        .key_schema(common::dynamo::key_element("key", KeyType::Range).unwrap());
    common::dynamo::ensure_table(&dynamodb, create)
        .await
        .unwrap();
    dynamodb
        .put_item()
        .table_name(&vended.table_name)
        .item("owner", AttributeValue::S(vended.partition_key.clone()))
        .item("key", AttributeValue::S("hello".into()))
        .send()
        .await
        .map_err(aws_sdk_dynamodb::error::DisplayErrorContext)
        .unwrap();
    let item = dynamodb
        .get_item()
        .table_name(&vended.table_name)
        .key("owner", AttributeValue::S(vended.partition_key.clone()))
        .key("key", AttributeValue::S("hello".into()))
        .send()
        .await
        .unwrap()
        .item;
    assert!(item.is_some());
}

#[tokio::test]
async fn sts_receives_each_users_own_policy_tag_and_source_identity() {
    let moto_endpoint = Emulator::shared_moto().await.endpoint();
    moto::start_recording(&moto_endpoint);
    let auth =
        TestAuth::spawn_with(TestAuth::settings_with_vending(), Endpoints::shared().await).await;
    let mut client = auth.client().await;
    let (alice, alice_token) = logged_in(&mut client).await;
    let (bob, bob_token) = logged_in(&mut client).await;

    get_credentials(&mut client, &alice_token).await.unwrap();
    get_credentials(&mut client, &bob_token).await.unwrap();

    let table_arn = auth.settings.items_table_arn.clone().unwrap();
    let role_arn = auth.settings.credentials_role_arn.clone().unwrap();
    for user in [&alice, &bob] {
        let session_name = format!("dynagate-{}", user.user_id);
        let roles = moto::assumed_roles_named(&moto_endpoint, &session_name);
        assert_eq!(roles.len(), 1, "{roles:?}");
        assert_eq!(roles[0]["role_arn"], role_arn);
        let policy: serde_json::Value =
            serde_json::from_str(roles[0]["policy"].as_str().unwrap()).unwrap();
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0]["Effect"], "Allow");
        assert_eq!(statements[0]["Resource"], table_arn);
        assert_eq!(
            statements[0]["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"],
            serde_json::json!([user.user_id]),
            "the policy names this user's partition and no other"
        );
        let actions: HashSet<_> = statements[0]["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let expected: HashSet<_> = auth_service::policy::ITEM_ACTIONS
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(actions, expected);

        let requests: Vec<_> = moto::recorded_assume_roles(&moto_endpoint)
            .into_iter()
            .filter(|r| r.get("RoleSessionName") == Some(&session_name))
            .collect();
        assert_eq!(requests.len(), 1, "{requests:?}");
        let request = &requests[0];
        assert_eq!(request["SourceIdentity"], user.user_id);
        assert_eq!(request["Tags.member.1.Key"], "user_id");
        assert_eq!(request["Tags.member.1.Value"], user.user_id);
        assert!(
            !request.contains_key("Tags.member.2.Key"),
            "exactly one tag"
        );
        assert_eq!(request["DurationSeconds"], "900");
    }
}

#[tokio::test]
async fn concurrent_first_requests_for_one_user_make_exactly_one_assume_role_call() {
    let moto_endpoint = Emulator::shared_moto().await.endpoint();
    let auth =
        TestAuth::spawn_with(TestAuth::settings_with_vending(), Endpoints::shared().await).await;
    let mut client = auth.client().await;
    let (user, token) = logged_in(&mut client).await;
    let calls = || auth.metrics.assume_role_calls.get();

    let requests = (0..100).map(|_| {
        let mut client = client.clone();
        let token = token.clone();
        async move { get_credentials(&mut client, &token).await }
    });
    let answers = futures::future::join_all(requests).await;

    let keys: HashSet<_> = answers
        .iter()
        .map(|a| {
            a.as_ref()
                .expect("every request is served")
                .access_key_id
                .clone()
        })
        .collect();
    assert_eq!(keys.len(), 1, "everyone shares one set of credentials");
    assert_eq!(calls(), 1);
    let session_name = format!("dynagate-{}", user.user_id);
    assert_eq!(
        moto::assumed_roles_named(&moto_endpoint, &session_name).len(),
        1
    );

    let (other, other_token) = logged_in(&mut client).await;
    let others = get_credentials(&mut client, &other_token).await.unwrap();
    assert_eq!(calls(), 2, "a second user gets a call of its own");
    assert!(!keys.contains(&others.access_key_id));
    assert_eq!(others.partition_key, other.user_id);
}

#[tokio::test]
async fn many_users_with_many_concurrent_requests_cost_one_call_per_user() {
    const USERS: usize = 5;
    const REQUESTS_PER_USER: usize = 20;
    let auth =
        TestAuth::spawn_with(TestAuth::settings_with_vending(), Endpoints::shared().await).await;
    let mut client = auth.client().await;
    let mut tokens = Vec::new();
    for _ in 0..USERS {
        tokens.push(logged_in(&mut client).await.1);
    }

    let requests = tokens.iter().flat_map(|token| {
        (0..REQUESTS_PER_USER).map(|_| {
            let mut client = client.clone();
            let token = token.clone();
            async move { get_credentials(&mut client, &token).await }
        })
    });
    let answers = futures::future::join_all(requests).await;

    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let partitions: HashSet<_> = answers
        .iter()
        .map(|a| a.as_ref().unwrap().partition_key.clone())
        .collect();
    assert_eq!(partitions.len(), USERS);
    assert_eq!(auth.metrics.assume_role_calls.get(), USERS as u64);
}

#[tokio::test]
async fn an_sts_outage_is_unavailable_but_cached_credentials_serve_until_their_margin() {
    let mut sts = Emulator::start(Kind::Moto, false).await;
    let mut settings = TestAuth::settings_with_vending();
    // 900 s credentials handed out until 300 s before expiry, by the auth-service's clock.
    settings.credentials_duration_secs = 900;
    settings.credentials_refresh_margin_secs = 300;
    let endpoints = Endpoints {
        dynamodb: Emulator::shared_dynalite().await.endpoint(),
        sts: sts.endpoint(),
    };
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let auth = TestAuth::spawn_with_clock(settings, endpoints, clock.clone()).await;
    let mut client = auth.client().await;
    let (_, cached_token) = logged_in(&mut client).await;
    let (_, new_token) = logged_in(&mut client).await;
    let cached = get_credentials(&mut client, &cached_token).await.unwrap();

    sts.stop().await;
    let still_cached = get_credentials(&mut client, &cached_token).await.unwrap();
    let refused = get_credentials(&mut client, &new_token).await.unwrap_err();

    assert_eq!(still_cached.access_key_id, cached.access_key_id);
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.get_error_details().retry_info().is_some(),
        "RetryInfo tells when to retry"
    );

    let expiration = cached.expiration.expect("an expiration");
    let expires_at = time::OffsetDateTime::from_unix_timestamp(expiration.seconds).unwrap();
    let margin = Duration::from_secs(auth.settings.credentials_refresh_margin_secs);
    clock.set(expires_at - margin + Duration::from_secs(1));
    let past_margin = get_credentials(&mut client, &cached_token)
        .await
        .unwrap_err();
    assert_eq!(
        past_margin.code(),
        Code::Unavailable,
        "no credentials inside the margin"
    );

    sts.restart().await;
    let renewed = get_credentials(&mut client, &cached_token).await.unwrap();
    assert_ne!(renewed.access_key_id, cached.access_key_id);
    assert_eq!(
        auth.metrics.assume_role_calls.get(),
        2 + 2,
        "2 refused, 2 answered"
    );
}

#[tokio::test]
async fn missing_tampered_expired_and_logged_out_tokens_get_no_credentials() {
    let auth =
        TestAuth::spawn_with(TestAuth::settings_with_vending(), Endpoints::shared().await).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let login = user.login(&mut client).await;
    let mut tampered = login.access_token.clone().into_bytes();
    let last = tampered.len() - 70;
    tampered[last] = if tampered[last] == b'x' { b'y' } else { b'x' };
    let mut expired = auth.claims(&user.user_id);
    expired["exp"] = serde_json::json!("2021-06-01T00:00:00Z");

    let missing = client
        .get_credentials(GetCredentialsRequest {})
        .await
        .unwrap_err();
    let tampered = get_credentials(&mut client, &String::from_utf8(tampered).unwrap())
        .await
        .unwrap_err();
    let expired = get_credentials(&mut client, &auth.forge(&expired))
        .await
        .unwrap_err();
    client
        .logout(LogoutRequest {
            refresh_token: login.refresh_token.clone(),
        })
        .await
        .unwrap();
    let logged_out = get_credentials(&mut client, &login.access_token)
        .await
        .unwrap_err();

    for (case, status) in [
        ("missing", missing),
        ("tampered", tampered),
        ("expired", expired),
        ("logged out", logged_out),
    ] {
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    }
    assert_eq!(auth.metrics.assume_role_calls.get(), 0, "STS never asked");
}

#[tokio::test]
async fn get_credentials_is_unimplemented_without_a_role() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    let (_, token) = logged_in(&mut client).await;

    let status = get_credentials(&mut client, &token).await.unwrap_err();

    assert_eq!(status.code(), Code::Unimplemented);
}
