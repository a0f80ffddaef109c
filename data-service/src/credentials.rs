//! Per-user DynamoDB clients built from the temporary credentials the auth-service vends for
//! the caller (asked for with the caller's own token). Cached per user until a margin before
//! the credentials expire, loaded once for any number of concurrent requests, and all built
//! on one HTTP client, so every user shares one connection pool.
//!
//! A load belongs to no single caller: it runs on its own task under the service's own
//! auth timeout, so one caller's short deadline cannot fail the others waiting for it, and a
//! waiter whose token is fine is not failed by another waiter's ended session. A load runs
//! in the trace of the request that started it (instrumented with its span): its GetCredentials
//! call and log lines carry that request's trace id, also when other requests share it.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use aws_credential_types::Credentials;
use common::{
    cache::{Expiring, LoadAborted, LoadingCache},
    clock::Clock,
    proto::auth::v1::{
        GetCredentialsRequest, GetCredentialsResponse, auth_service_client::AuthServiceClient,
    },
    tokens::{Principal, TokenError},
};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Code, Status};
use tracing::Instrument;

use crate::{auth_channel::AuthChannel, error::DataError, metrics::Metrics, store::UserDb};

/// The caller's bearer token, which the interceptor keeps in the request so that credentials
/// can be asked for on the caller's behalf.
#[derive(Clone, Debug)]
pub struct BearerToken(pub SecretString);

/// DynamoDB clients acting as one user.
#[derive(Debug)]
pub struct UserClient {
    /// The clients, signing with the user's temporary credentials.
    pub dynamodb: UserDb,
    expires_at: SystemTime,
}

impl Expiring for UserClient {
    fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

/// Why credentials could not be loaded; cloneable, because one failed load answers every
/// request that waited for it.
#[derive(Clone, Debug, thiserror::Error)]
enum LoadError {
    #[error("auth-service unavailable: {0}")]
    Unavailable(String),
    /// The auth-service refused the token of this session (ended, or not ours).
    #[error("auth-service refused the token of session {session_id}")]
    Unauthenticated { session_id: String },
    #[error("{0}")]
    Internal(String),
}

impl From<LoadAborted> for LoadError {
    fn from(aborted: LoadAborted) -> Self {
        LoadError::Unavailable(aborted.to_string())
    }
}

impl From<LoadError> for DataError {
    fn from(error: LoadError) -> Self {
        match error {
            LoadError::Unavailable(cause) => DataError::Unavailable(cause),
            LoadError::Unauthenticated { .. } => DataError::Unauthenticated(TokenError::Rejected),
            LoadError::Internal(cause) => DataError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

/// Settings of [`UserClients`].
#[derive(Clone, Debug)]
pub struct UserClientsConfig {
    /// The items table this service uses; vended credentials must be for it.
    pub items_table: String,
    /// Users cached at most.
    pub capacity: u64,
    /// Credentials are dropped this long before they expire.
    pub refresh_margin: Duration,
    /// Longest a GetCredentials call may take.
    pub auth_timeout: Duration,
}

/// The per-user client cache.
#[derive(Clone)]
pub struct UserClients {
    auth: AuthServiceClient<AuthChannel>,
    base: aws_sdk_dynamodb::Config,
    config: Arc<UserClientsConfig>,
    cache: LoadingCache<String, Arc<UserClient>, LoadError>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for UserClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserClients")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl UserClients {
    /// Clients derived from `base` (endpoint, region, timeouts, HTTP client), with
    /// credentials from `auth`; whether cached credentials are still usable reads `clock`.
    pub fn new(
        auth: AuthServiceClient<AuthChannel>,
        base: aws_sdk_dynamodb::Config,
        config: UserClientsConfig,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cache = LoadingCache::with_clock(config.capacity, config.refresh_margin, clock);
        Self {
            auth,
            base,
            config: Arc::new(config),
            cache,
            metrics,
        }
    }

    /// Users whose client is cached (approximate, as moka counts).
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The caller's client, loading credentials with the caller's token when needed. Waiting
    /// is bounded by the caller's own deadline (the handler's); the load by the auth timeout.
    pub async fn client_for(
        &self,
        principal: &Principal,
        token: &BearerToken,
    ) -> Result<Arc<UserClient>, DataError> {
        let user = &principal.user_id;
        if let Some(client) = self.cache.get(user).await {
            self.metrics.credential_hits.increment();
            return Ok(client);
        }
        let shared = self
            .cache
            .get_or_load(user, self.loader(principal, token))
            .await;
        let result = match shared {
            // The load we joined used another session's token, and that session has ended;
            // ours may be live, so ask with our own token rather than share its failure.
            Err(LoadError::Unauthenticated { session_id })
                if session_id != principal.session_id =>
            {
                self.cache
                    .load_now(user, self.loader(principal, token))
                    .await
            }
            other => other,
        };
        Ok(result?)
    }

    /// Forgets a user's client, e.g. after DynamoDB called its credentials expired.
    pub async fn forget(&self, user_id: &str) {
        self.cache.invalidate(&user_id.to_owned()).await;
    }

    /// Drops the client of a user a revocation named (or whose last session known here ended):
    /// what the revocation feed's clean-up calls, counted so it can be observed. A load running
    /// for the user is disowned too, so the next call fetches the credentials the auth-service
    /// vends from now on.
    pub async fn release(&self, user_id: &str) {
        self.forget(user_id).await;
        self.metrics.clients_released.increment();
    }

    fn loader(
        &self,
        principal: &Principal,
        token: &BearerToken,
    ) -> impl Future<Output = Result<Arc<UserClient>, LoadError>> + Send + 'static {
        let (this, principal, token) = (self.clone(), principal.clone(), token.clone());
        // In the request's span wherever the load runs, so in its trace.
        async move { this.load(&principal, &token).await }.in_current_span()
    }

    async fn load(
        &self,
        principal: &Principal,
        token: &BearerToken,
    ) -> Result<Arc<UserClient>, LoadError> {
        self.metrics.credential_loads.increment();
        let refused = || LoadError::Unauthenticated {
            session_id: principal.session_id.clone(),
        };
        let span = common::trace::client_span("dynagate.auth.v1.AuthService/GetCredentials");
        let request = self.request(token, &span).ok_or_else(refused)?;
        let vended = self
            .auth
            .clone()
            .get_credentials(request)
            .instrument(span)
            .await
            .map_err(|status| load_error(&status, refused))?
            .into_inner();
        self.client_from(principal, vended)
    }

    /// A GetCredentials request bearing the caller's token, in the trace of `span` (the
    /// call's client span); `None` for a token no header can carry.
    fn request(
        &self,
        token: &BearerToken,
        span: &tracing::Span,
    ) -> Option<tonic::Request<GetCredentialsRequest>> {
        let mut request = tonic::Request::new(GetCredentialsRequest {});
        request.set_timeout(self.config.auth_timeout);
        common::trace::inject(span, &mut request);
        let bearer = format!("Bearer {}", token.0.expose_secret()).parse().ok()?;
        request.metadata_mut().insert("authorization", bearer);
        Some(request)
    }

    /// A client signing with the vended credentials, which must be for the caller's partition
    /// of our table.
    fn client_from(
        &self,
        principal: &Principal,
        vended: GetCredentialsResponse,
    ) -> Result<Arc<UserClient>, LoadError> {
        if vended.partition_key != principal.user_id || vended.table_name != self.config.items_table
        {
            return Err(LoadError::Internal(format!(
                "auth-service vended credentials for partition {:?} of table {:?}, wanted {:?} of {:?}",
                vended.partition_key, vended.table_name, principal.user_id, self.config.items_table
            )));
        }
        let expires_at = vended
            .expiration
            .and_then(|t| SystemTime::try_from(t).ok())
            .ok_or_else(|| {
                LoadError::Internal("GetCredentials without a valid expiration".into())
            })?;
        let credentials = Credentials::new(
            vended.access_key_id,
            vended.secret_access_key,
            Some(vended.session_token),
            Some(expires_at),
            "dynagate-auth-service",
        );
        let config = self
            .base
            .to_builder()
            .credentials_provider(credentials)
            .build();
        Ok(Arc::new(UserClient {
            dynamodb: UserDb::new(aws_sdk_dynamodb::Client::from_conf(config)),
            expires_at,
        }))
    }
}

/// What a failed GetCredentials call means for the load: `refused` for a token the
/// auth-service did not accept, unavailable for what a retry may cure, internal otherwise.
fn load_error(status: &Status, refused: impl FnOnce() -> LoadError) -> LoadError {
    match status.code() {
        Code::Unauthenticated => refused(),
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Unknown => LoadError::Unavailable(format!(
            "GetCredentials: {} {}",
            status.code(),
            status.message()
        )),
        code => LoadError::Internal(format!("GetCredentials: {code} {}", status.message())),
    }
}
