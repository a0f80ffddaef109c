//! Helpers for the tests of how sessions end (`tests/tests/session_endings.rs`): a stack whose
//! auth-service reads a `ManualClock`, what the tables say about a session (announced in the
//! revocations table, marked in the sessions table), and the checks that a session is refused
//! everywhere: Refresh, a bearer call, GetCredentials and the data-service.

use std::{collections::HashSet, sync::Arc, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    clock::ManualClock,
    proto::{
        auth::v1::{
            GetCredentialsRequest, ListSessionsRequest, LoginResponse, RefreshResponse,
            auth_service_client::AuthServiceClient,
        },
        data::v1::GetItemRequest,
    },
};
use time::OffsetDateTime;
use tonic::{Code, Status, transport::Channel};

use crate::{
    auth::{Endpoints, TestAuth, refresh, with_bearer},
    data::TestData,
    unique_prefix,
};

/// How long a data-service may take to refuse the token of a session ended on the replica it
/// listens to (at once in practice; this is the bound of `tests/tests/revocation.rs`).
pub const PROPAGATION: Duration = Duration::from_secs(2);

/// One session as a client holds it: its ids and its latest tokens.
#[derive(Clone, Debug)]
pub struct Held {
    /// The user.
    pub user_id: String,
    /// The session (`sid`).
    pub session_id: String,
    /// Its latest refresh token.
    pub refresh_token: String,
    /// Its latest access token.
    pub access_token: String,
}

impl Held {
    /// The session a Login started.
    pub async fn from_login(auth: &TestAuth, login: &LoginResponse) -> Self {
        Self {
            user_id: login.user_id.clone(),
            session_id: auth.session_of(&login.access_token).await,
            refresh_token: login.refresh_token.clone(),
            access_token: login.access_token.clone(),
        }
    }

    /// The same session after a Refresh answered `refreshed`.
    pub fn refreshed(&self, refreshed: &RefreshResponse) -> Self {
        Self {
            refresh_token: refreshed.refresh_token.clone(),
            access_token: refreshed.access_token.clone(),
            ..self.clone()
        }
    }
}

/// An auth-service reading a `ManualClock` (GetCredentials on, against moto) and a
/// data-service listening to it, on the shared emulators.
pub struct ClockedStack {
    /// The auth-service.
    pub auth: TestAuth,
    /// The data-service.
    pub data: TestData,
    /// The auth-service's clock.
    pub clock: Arc<ManualClock>,
}

impl ClockedStack {
    /// Spawns both, the clock standing at the present.
    pub async fn spawn() -> Self {
        let endpoints = Endpoints::shared().await;
        let items_table = format!("{}-items", unique_prefix());
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let auth = TestAuth::spawn_with_clock(
            TestAuth::settings_for_items(&items_table),
            endpoints.clone(),
            clock.clone(),
        )
        .await;
        let data = TestData::spawn_with(
            TestData::settings(&items_table, auth.addr),
            &endpoints.dynamodb,
            true,
        )
        .await;
        Self { auth, data, clock }
    }

    /// Moves the auth-service's clock past the `not_after` of every revocation made so far
    /// (the access-token lifetime plus the slack, and a little more).
    pub fn move_past_not_after(&self) {
        let lifetime = Duration::from_secs(self.auth.settings.access_token_ttl_secs);
        self.clock.advance(
            lifetime + auth_service::revocations::NOT_AFTER_SLACK + Duration::from_secs(5),
        );
    }
}

/// The session ids in `auth`'s revocations table (a strongly consistent scan): every session
/// whose ending was announced, by any replica.
pub async fn announced(auth: &TestAuth) -> HashSet<String> {
    let mut pages = auth
        .dynamodb
        .scan()
        .table_name(&auth.settings.revocations.table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send();
    let mut found = HashSet::new();
    while let Some(item) = pages.next().await {
        let item = item.expect("Scan of the revocations table");
        if let Some(AttributeValue::S(session_id)) = item.get("session_id") {
            found.insert(session_id.clone());
        }
    }
    found
}

/// True if the session's item is marked ended (`revoked_at`) in the sessions table.
pub async fn marked(auth: &TestAuth, held: &Held) -> bool {
    auth.session_item(&held.user_id, &held.session_id)
        .await
        .is_some_and(|item| item.contains_key("revoked_at"))
}

/// The `revoked_reason` the sessions table records for the session, if any.
pub async fn reason(auth: &TestAuth, held: &Held) -> Option<String> {
    auth.session_item(&held.user_id, &held.session_id)
        .await
        .and_then(|item| item.get("revoked_reason").cloned())
        .and_then(|reason| reason.as_s().ok().cloned())
}

/// Asserts `result` is UNAUTHENTICATED, naming `what` otherwise.
pub fn assert_unauthenticated<T: std::fmt::Debug>(result: Result<T, Status>, what: &str) {
    match result {
        Err(status) if status.code() == Code::Unauthenticated => {}
        other => panic!("{what}: expected UNAUTHENTICATED, got {other:?}"),
    }
}

/// Asserts the auth-service at `client` refuses `held` for Refresh, ListSessions and
/// GetCredentials.
pub async fn refused_by_auth(client: &mut AuthServiceClient<Channel>, held: &Held) {
    let sid = &held.session_id;
    assert_unauthenticated(
        refresh(client, &held.refresh_token).await,
        &format!("Refresh of ended session {sid}"),
    );
    assert_unauthenticated(
        client
            .list_sessions(with_bearer(ListSessionsRequest {}, &held.access_token))
            .await,
        &format!("ListSessions as ended session {sid}"),
    );
    assert_unauthenticated(
        client
            .get_credentials(with_bearer(GetCredentialsRequest {}, &held.access_token))
            .await,
        &format!("GetCredentials as ended session {sid}"),
    );
}

/// Asserts `data` refuses the access token of `held` (UNAUTHENTICATED) within
/// [`PROPAGATION`], polling every 50 ms: whether it happens by then, not how fast.
pub async fn refused_by_data(data: &TestData, held: &Held) {
    let deadline = tokio::time::Instant::now() + PROPAGATION;
    let mut client = data.client().await;
    loop {
        let request = with_bearer(
            GetItemRequest {
                key: "never-written".into(),
                ..Default::default()
            },
            &held.access_token,
        );
        let answer = client.get_item(request).await;
        if matches!(&answer, Err(status) if status.code() == Code::Unauthenticated) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the data-service still answers {answer:?} for ended session {} after {PROPAGATION:?}",
            held.session_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ids of the sessions ListSessions shows to the holder of `access_token`.
pub async fn listed(client: &mut AuthServiceClient<Channel>, access_token: &str) -> Vec<String> {
    client
        .list_sessions(with_bearer(ListSessionsRequest {}, access_token))
        .await
        .expect("ListSessions as a live session")
        .into_inner()
        .sessions
        .into_iter()
        .map(|session| session.session_id)
        .collect()
}
