//! Refresh as one conditional write: an honest rotation is exactly one DynamoDB call and reads
//! nothing first; a refused one decides from the item the refusal returned (DynamoDB does, and
//! moto here) or from one read (dynalite, which does not return it); tokens and rotations of
//! earlier releases keep working across the upgrade.
//!
//! Calls are counted by the auth-service's `dynagate_dynamodb_calls_total{operation}`
//! (`TestAuth::dynamodb_calls`); only the item operations, since background tasks send Query
//! and DescribeTable meanwhile.

use std::collections::HashMap;

use auth_service::refresh_token::{RefreshToken, RotationNonce};
use aws_sdk_dynamodb::types::AttributeValue;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::ExposeSecret;
use tests::{
    auth::{Endpoints, TestAuth, TestUser, refresh},
    emulators::{Emulator, dead_addr},
};
use tonic::Code;

/// The item operations: Query and DescribeTable are left out, since the revocation feed and
/// the health probe send them meanwhile.
const ITEM_OPERATIONS: [&str; 6] = [
    "GetItem",
    "UpdateItem",
    "PutItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

/// The item operations `auth` sent since `before`: (GetItem, UpdateItem, every other).
fn since(auth: &TestAuth, before: &HashMap<&'static str, u64>) -> (u64, u64, u64) {
    let sent = auth.dynamodb_calls_since(before, &ITEM_OPERATIONS);
    let of = |operation| sent.get(operation).copied().unwrap_or(0);
    let (get, update) = (of("GetItem"), of("UpdateItem"));
    (get, update, sent.values().sum::<u64>() - get - update)
}

/// An auth-service whose DynamoDB is moto: it returns the item with a failed condition.
async fn on_moto(grace_secs: u64) -> TestAuth {
    let mut settings = TestAuth::settings();
    settings.refresh_retry_grace_secs = grace_secs;
    let endpoints = Endpoints {
        dynamodb: Emulator::shared_moto().await.endpoint(),
        sts: format!("http://{}", dead_addr()),
    };
    TestAuth::spawn_with(settings, endpoints).await
}

async fn on_dynalite(grace_secs: u64) -> TestAuth {
    let mut settings = TestAuth::settings();
    settings.refresh_retry_grace_secs = grace_secs;
    TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await
}

#[tokio::test]
async fn an_honest_rotation_is_one_update_item_and_nothing_else() {
    for auth in [on_dynalite(10).await, on_moto(10).await] {
        let mut client = auth.client().await;
        let user = TestUser::register(&mut client).await;
        let mut token = user.login(&mut client).await.refresh_token;
        for _ in 0..5 {
            let before = auth.dynamodb_calls();
            token = refresh(&mut client, &token)
                .await
                .expect("Refresh")
                .refresh_token;
            assert_eq!(since(&auth, &before), (0, 1, 0), "one UpdateItem, no read");
        }
    }
}

#[tokio::test]
async fn a_retry_is_decided_by_the_refusal_where_the_backend_returns_the_item() {
    for (auth, reads) in [(on_moto(60).await, 0), (on_dynalite(60).await, 1)] {
        let mut client = auth.client().await;
        let user = TestUser::register(&mut client).await;
        let first = user.login(&mut client).await.refresh_token;
        let next = refresh(&mut client, &first).await.expect("Refresh");

        let before = auth.dynamodb_calls();
        let again = refresh(&mut client, &first).await.expect("a retry");
        assert_eq!(
            again.refresh_token, next.refresh_token,
            "the same successor"
        );
        assert_eq!(
            since(&auth, &before),
            (reads, 1, 0),
            "the refused write, and a read only where the refusal carried no item"
        );
    }
}

#[tokio::test]
async fn reuse_is_proven_by_the_refusal_and_ends_the_session() {
    let auth = on_moto(0).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let first = user.login(&mut client).await.refresh_token;
    let second = refresh(&mut client, &first).await.expect("Refresh");
    let third = refresh(&mut client, &second.refresh_token)
        .await
        .expect("Refresh");

    let before = auth.dynamodb_calls();
    let reused = refresh(&mut client, &first).await.expect_err("reuse");
    assert_eq!(reused.code(), Code::Unauthenticated);
    assert_eq!(since(&auth, &before).0, 0, "decided without a read");
    let ended = refresh(&mut client, &third.refresh_token)
        .await
        .expect_err("the session ended");
    assert_eq!(ended.code(), Code::Unauthenticated);
}

/// `dgr1_` + ids + `secret`: a token as any release encodes it.
fn encode(user_id: &str, session_id: &str, secret: &[u8; 32]) -> String {
    let mut raw = Vec::new();
    raw.extend_from_slice(uuid::Uuid::parse_str(user_id).unwrap().as_bytes());
    raw.extend_from_slice(uuid::Uuid::parse_str(session_id).unwrap().as_bytes());
    raw.extend_from_slice(secret);
    format!("dgr1_{}", URL_SAFE_NO_PAD.encode(raw))
}

/// SHA-256 of a secret, as the sessions table stores it.
fn hash_of(secret: &[u8; 32]) -> [u8; 32] {
    let nil = uuid::Uuid::nil().to_string();
    RefreshToken::decode(&encode(&nil, &nil, secret))
        .expect("one of ours")
        .secret_hash()
}

fn blob(bytes: &[u8]) -> AttributeValue {
    AttributeValue::B(bytes.to_vec().into())
}

fn number(n: i64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// A session as an earlier release left it after `generation` rotations: the current secret
/// fully random (no generation in it), older hashes in the list `retired`.
struct EarlierSession {
    user_id: String,
    session_id: String,
    secret: [u8; 32],
    retired_secret: [u8; 32],
}

impl EarlierSession {
    async fn write(
        auth: &TestAuth,
        user_id: &str,
        generation: i64,
        previous: Option<[u8; 32]>,
    ) -> Self {
        let session = Self {
            user_id: user_id.to_owned(),
            session_id: uuid::Uuid::new_v4().to_string(),
            secret: rand::random(),
            retired_secret: rand::random(),
        };
        let now = time::OffsetDateTime::now_utc();
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let expires = now.unix_timestamp() + 3600;
        let mut item = HashMap::from([
            (
                "user_id".to_owned(),
                AttributeValue::S(session.user_id.clone()),
            ),
            (
                "session_id".to_owned(),
                AttributeValue::S(session.session_id.clone()),
            ),
            (
                "username".to_owned(),
                AttributeValue::S("earlier".to_owned()),
            ),
            ("token_hash".to_owned(), blob(&hash_of(&session.secret))),
            (
                "retired".to_owned(),
                AttributeValue::L(vec![blob(&hash_of(&session.retired_secret))]),
            ),
            ("nonce".to_owned(), blob(&[7; 32])),
            ("generation".to_owned(), number(generation)),
            ("created_at".to_owned(), number(now_ms - 60_000)),
            ("rotated_at".to_owned(), number(now_ms)),
            ("expires_at".to_owned(), number(expires)),
            ("ttl".to_owned(), number(expires + 86_400)),
        ]);
        if let Some(previous) = previous {
            item.insert("previous_hash".to_owned(), blob(&hash_of(&previous)));
        }
        auth.dynamodb
            .put_item()
            .table_name(&auth.settings.sessions_table)
            .set_item(Some(item))
            .send()
            .await
            .expect("PutItem of an earlier release's session");
        session
    }

    fn token(&self) -> String {
        encode(&self.user_id, &self.session_id, &self.secret)
    }
}

#[tokio::test]
async fn a_token_of_an_earlier_release_rotates_once_in_two_writes_then_in_one() {
    for auth in [on_dynalite(10).await, on_moto(10).await] {
        let mut client = auth.client().await;
        let user = TestUser::register(&mut client).await;
        let user_id = user_id_of(&auth, &user.login(&mut client).await.access_token).await;
        let earlier = EarlierSession::write(&auth, &user_id, 41, None).await;

        let before = auth.dynamodb_calls();
        let next = refresh(&mut client, &earlier.token())
            .await
            .expect("an earlier release's token refreshes");
        let (reads, writes, others) = since(&auth, &before);
        assert_eq!(
            (writes, others),
            (2, 0),
            "refused for its generation, then rotated"
        );
        assert!(reads <= 1, "a read only where the refusal carried no item");
        let rotated = RefreshToken::decode(&next.refresh_token).expect("one of ours");
        assert_eq!(rotated.generation(), 42);

        let before = auth.dynamodb_calls();
        let after = refresh(&mut client, &next.refresh_token)
            .await
            .expect("Refresh");
        assert_eq!(since(&auth, &before), (0, 1, 0), "from now on, one write");

        // The earlier release's retired hash is still known: reuse ends the session.
        let retired = encode(
            &earlier.user_id,
            &earlier.session_id,
            &earlier.retired_secret,
        );
        let reused = refresh(&mut client, &retired).await.expect_err("reuse");
        assert_eq!(reused.code(), Code::Unauthenticated);
        let ended = refresh(&mut client, &after.refresh_token)
            .await
            .expect_err("ended");
        assert_eq!(ended.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn a_rotation_an_earlier_release_wrote_is_retried_within_the_grace() {
    let auth = on_dynalite(60).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let user_id = user_id_of(&auth, &user.login(&mut client).await.access_token).await;
    // The earlier release rotated `previous` at generation 3 to HMAC(previous, nonce ‖ 3).
    let previous: [u8; 32] = rand::random();
    let mut earlier = EarlierSession::write(&auth, &user_id, 3, Some(previous)).await;
    let old = RefreshToken::decode(&encode(&earlier.user_id, &earlier.session_id, &previous))
        .expect("one of ours");
    let successor = old
        .earlier_successor(&RotationNonce::from_slice(&[7; 32]).unwrap(), 3)
        .unwrap();
    earlier.secret = secret_of(&successor);
    auth.dynamodb
        .update_item()
        .table_name(&auth.settings.sessions_table)
        .key("user_id", AttributeValue::S(earlier.user_id.clone()))
        .key("session_id", AttributeValue::S(earlier.session_id.clone()))
        .update_expression("SET token_hash = :h")
        .expression_attribute_values(":h", blob(&successor.secret_hash()))
        .send()
        .await
        .expect("UpdateItem");

    let retried = refresh(
        &mut client,
        &encode(&earlier.user_id, &earlier.session_id, &previous),
    )
    .await
    .expect("the previous token within the grace");
    assert_eq!(
        retried.refresh_token,
        earlier.token(),
        "the successor that release made"
    );
    refresh(&mut client, &retried.refresh_token)
        .await
        .expect("and it rotates on");
}

/// The user an access token names.
async fn user_id_of(auth: &TestAuth, access_token: &str) -> String {
    let keys = auth.published_keys().await;
    auth.verifier().verify(&keys, access_token).unwrap().user_id
}

/// The secret of a token, from its encoding.
fn secret_of(token: &RefreshToken) -> [u8; 32] {
    let text = token.encode();
    let raw = URL_SAFE_NO_PAD
        .decode(&text.expose_secret()["dgr1_".len()..])
        .unwrap();
    raw[32..].try_into().unwrap()
}
