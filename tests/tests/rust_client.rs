//! The Rust client in `common::client` against a real stack: the bearer layer, refreshes before
//! expiry (one per session however many calls are in flight), a revoked session, and the
//! `put_get` example's core.

use std::{collections::HashMap, sync::Arc, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    client::{BearerService, PutGet, Session, put_get},
    clock::ManualClock,
    proto::{
        auth::v1::{LogoutAllRequest, auth_service_client::AuthServiceClient},
        data::v1::{
            GetItemRequest, PutItemRequest, Value, data_service_client::DataServiceClient,
            value::Kind,
        },
    },
};
use futures::future::join_all;
use secrecy::{ExposeSecret, SecretString};
use tests::{auth::TestUser, data::TestStack};
use time::OffsetDateTime;
use tonic::{Code, Status, transport::Channel};
use tower::ServiceBuilder;

/// A logged-in session whose refresh decisions read a manual clock, and a data client on it.
struct Client {
    session: Session,
    clock: Arc<ManualClock>,
    data: DataServiceClient<BearerService<Channel>>,
    user: TestUser,
}

impl Client {
    async fn new(stack: &TestStack) -> Self {
        let user = TestUser::register(&mut stack.auth.client().await).await;
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let password = SecretString::from(user.password.clone());
        let session = Session::login_with_clock(
            stack.auth.channel().await,
            &user.username,
            &password,
            clock.clone(),
        )
        .await
        .expect("Login");
        let data = DataServiceClient::new(
            ServiceBuilder::new()
                .layer(session.layer())
                .service(stack.data.channel().await),
        );
        Self {
            session,
            clock,
            data,
            user,
        }
    }

    async fn put(&self, key: &str) -> Result<u64, Status> {
        let text = Value {
            kind: Some(Kind::StringValue(key.to_owned())),
        };
        let response = self
            .data
            .clone()
            .put_item(PutItemRequest {
                key: key.to_owned(),
                attributes: HashMap::from([("text".to_owned(), text)]),
                ..Default::default()
            })
            .await?;
        Ok(response.into_inner().item.map_or(0, |item| item.version))
    }

    /// 20 puts at once, all of which must succeed.
    async fn burst(&self, round: &str) {
        let calls = (0..20).map(|i| self.put_owned(format!("{round}/{i}")));
        for result in join_all(calls).await {
            result.expect("every call of the burst succeeds");
        }
    }

    async fn put_owned(&self, key: String) -> Result<u64, Status> {
        self.put(&key).await
    }

    /// The session's rotation count in the sessions table: one per Refresh that succeeded.
    async fn generation(&self, stack: &TestStack) -> u64 {
        let token = self.session.access_token().await.expect("a token");
        let session_id = stack.auth.session_of(token.expose_secret()).await;
        let item = stack
            .auth
            .session_item(&self.user.user_id, &session_id)
            .await
            .expect("the session item");
        match item.get("generation") {
            Some(AttributeValue::N(n)) => n.parse().expect("a number"),
            other => panic!("generation is {other:?}"),
        }
    }
}

async fn current(session: &Session) -> String {
    let token = session.access_token().await.expect("a token");
    token.expose_secret().to_owned()
}

#[tokio::test]
async fn calls_through_the_layer_carry_the_token_and_debug_redacts_it() {
    let stack = TestStack::spawn().await;
    let client = Client::new(&stack).await;

    assert_eq!(client.put("notes/1").await.expect("PutItem"), 1);
    let item = client
        .data
        .clone()
        .get_item(GetItemRequest {
            key: "notes/1".into(),
            consistent_read: true,
            ..Default::default()
        })
        .await
        .expect("GetItem")
        .into_inner()
        .item
        .expect("an item");
    assert_eq!(item.version, 1);
    assert_eq!(client.session.refreshes(), 0);

    let token = client.session.access_token().await.expect("a token");
    let printed = format!("{:?} {:?}", client.session, client.data);
    assert!(printed.contains("[REDACTED]"), "{printed}");
    assert!(!printed.contains(token.expose_secret()), "{printed}");
}

#[tokio::test]
async fn a_due_token_is_refreshed_once_in_the_background_while_calls_go_on() {
    let stack = TestStack::spawn().await;
    let client = Client::new(&stack).await;
    let first = client.session.access_token().await.expect("a token");

    // 15-minute tokens are refreshed in their last minute: 50 s left.
    client.clock.advance(Duration::from_secs(850));
    client.burst("due").await;
    let mut waited = 0;
    while current(&client.session).await == first.expose_secret() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }

    assert_ne!(current(&client.session).await, first.expose_secret());
    assert_eq!(client.session.refreshes(), 1);
    assert_eq!(client.generation(&stack).await, 1);
    client.put("after").await.expect("the new token works");
}

#[tokio::test]
async fn calls_finding_the_token_expired_share_one_refresh() {
    let stack = TestStack::spawn().await;
    let client = Client::new(&stack).await;

    client.clock.advance(Duration::from_secs(900));
    client.burst("expired").await;

    assert_eq!(client.session.refreshes(), 1);
    assert_eq!(client.generation(&stack).await, 1);
    // The clock stands where the new token has a quarter of an hour left: no more refreshes.
    client.burst("later").await;
    assert_eq!(client.session.refreshes(), 1);
}

#[tokio::test]
async fn a_revoked_session_fails_unauthenticated_without_refreshing_again() {
    let stack = TestStack::spawn().await;
    let client = Client::new(&stack).await;
    client.put("before").await.expect("PutItem");

    // LogoutAll is a bearer call on the auth-service, through the same layer.
    AuthServiceClient::new(
        ServiceBuilder::new()
            .layer(client.session.layer())
            .service(stack.auth.channel().await),
    )
    .logout_all(LogoutAllRequest {})
    .await
    .expect("LogoutAll");
    // The data-service learns of it through the revocation feed, within moments.
    let mut rejected = None;
    for _ in 0..100 {
        match client.put("during").await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(status) => {
                rejected = Some(status.code());
                break;
            }
        }
    }
    assert_eq!(rejected, Some(Code::Unauthenticated));

    // Once the token expires, the one Refresh fails and the session is over for good.
    client.clock.advance(Duration::from_secs(900));
    for round in 0..5 {
        let status = client.put("after").await.expect_err("the session ended");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "round {round}: {status:?}"
        );
    }
    assert_eq!(client.session.refreshes(), 1);
    let status = client.session.access_token().await.expect_err("ended");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn the_put_get_example_runs_against_the_stack() {
    let stack = TestStack::spawn().await;
    let run = PutGet {
        username: format!(
            "example-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        password: SecretString::from(format!("pw-{}", uuid::Uuid::new_v4())),
        register: true,
        key: "examples/hello".into(),
        text: "hello from Rust".into(),
    };

    let item = put_get(stack.auth.channel().await, stack.data.channel().await, &run)
        .await
        .expect("the example's flow");

    assert_eq!(item.key, "examples/hello");
    assert_eq!(item.version, 1);
    let text = item
        .attributes
        .get("text")
        .and_then(|value| value.kind.clone());
    assert_eq!(text, Some(Kind::StringValue("hello from Rust".into())));
}

#[tokio::test]
async fn an_unavailable_auth_service_leaves_the_valid_token_in_use() {
    let stack = TestStack::spawn().await;
    let client = Client::new(&stack).await;
    client.put("before").await.expect("PutItem");
    let TestStack { auth, data, .. } = stack;
    auth.stop().await;

    // Due for refresh, 50 s left: the background Refresh fails, the calls go on.
    client.clock.advance(Duration::from_secs(850));
    for round in 0..5 {
        client
            .put(&format!("due/{round}"))
            .await
            .expect("the current token still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One attempt, then a pause before the next (2 s on the session's clock).
    assert_eq!(client.session.refreshes(), 1);

    // Expired: the call waits for a Refresh, which fails UNAVAILABLE, not UNAUTHENTICATED.
    client.clock.advance(Duration::from_secs(50));
    let status = client.put("expired").await.expect_err("no token to send");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(client.session.refreshes(), 2);
    data.stop().await;
}
