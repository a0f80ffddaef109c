//! Per-user DynamoDB clients built from the temporary credentials the auth-service vends for
//! the caller (asked for with the caller's own token). Cached per user until a margin before
//! the credentials expire, loaded once for any number of concurrent requests, and all built
//! on one HTTP client, so every user shares one connection pool.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use aws_credential_types::Credentials;
use common::{
    proto::auth::v1::{GetCredentialsRequest, auth_service_client::AuthServiceClient},
    tokens::{Principal, TokenError},
};
use moka::{Expiry, future::Cache};
use secrecy::ExposeSecret;
use tonic::{Code, transport::Channel};

use crate::{error::DataError, interceptor::BearerToken, metrics::Metrics};

/// A DynamoDB client acting as one user.
#[derive(Debug)]
pub struct UserClient {
    /// The client, signing with the user's temporary credentials.
    pub dynamodb: aws_sdk_dynamodb::Client,
    expires_at: SystemTime,
}

/// Why credentials could not be loaded; cloneable, because one failed load answers every
/// request that waited for it.
#[derive(Clone, Debug, thiserror::Error)]
enum LoadError {
    #[error("auth-service unavailable: {0}")]
    Unavailable(String),
    #[error("auth-service refused the caller's token")]
    Unauthenticated,
    #[error("{0}")]
    Internal(String),
}

impl From<LoadError> for DataError {
    fn from(error: LoadError) -> Self {
        match error {
            LoadError::Unavailable(cause) => DataError::Unavailable(cause),
            LoadError::Unauthenticated => DataError::Unauthenticated(TokenError::Rejected),
            LoadError::Internal(cause) => DataError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

/// Drops a client `margin` before its credentials expire.
struct UntilMargin(Duration);

impl Expiry<String, Arc<UserClient>> for UntilMargin {
    fn expire_after_create(
        &self,
        _user: &String,
        client: &Arc<UserClient>,
        _now: Instant,
    ) -> Option<Duration> {
        let left = client
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Some(left.saturating_sub(self.0))
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
    auth: AuthServiceClient<Channel>,
    base: aws_sdk_dynamodb::Config,
    config: UserClientsConfig,
    cache: Cache<String, Arc<UserClient>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for UserClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserClients")
            .field("config", &self.config)
            .field("cached_users", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl UserClients {
    /// Clients derived from `base` (endpoint, region, timeouts, HTTP client), with
    /// credentials from `auth`.
    pub fn new(
        auth: AuthServiceClient<Channel>,
        base: aws_sdk_dynamodb::Config,
        config: UserClientsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.capacity)
            .expire_after(UntilMargin(config.refresh_margin))
            .build();
        Self {
            auth,
            base,
            config,
            cache,
            metrics,
        }
    }

    /// The caller's client, loading credentials with the caller's token when needed.
    pub async fn client_for(
        &self,
        principal: &Principal,
        token: &BearerToken,
        budget: Duration,
    ) -> Result<Arc<UserClient>, DataError> {
        self.cache
            .try_get_with_by_ref(&principal.user_id, self.load(principal, token, budget))
            .await
            .map_err(|error| DataError::from(LoadError::clone(&error)))
    }

    /// Forgets a user's client, e.g. after DynamoDB called its credentials expired.
    pub async fn forget(&self, user_id: &str) {
        self.cache.invalidate(user_id).await;
    }

    async fn load(
        &self,
        principal: &Principal,
        token: &BearerToken,
        budget: Duration,
    ) -> Result<Arc<UserClient>, LoadError> {
        self.metrics.credential_loads.increment();
        let mut request = tonic::Request::new(GetCredentialsRequest {});
        request.set_timeout(self.config.auth_timeout.min(budget));
        let bearer = format!("Bearer {}", token.0.expose_secret())
            .parse()
            .map_err(|_| LoadError::Unauthenticated)?;
        request.metadata_mut().insert("authorization", bearer);
        let vended = self
            .auth
            .clone()
            .get_credentials(request)
            .await
            .map_err(|status| match status.code() {
                Code::Unauthenticated => LoadError::Unauthenticated,
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
            })?
            .into_inner();
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
            dynamodb: aws_sdk_dynamodb::Client::from_conf(config),
            expires_at,
        }))
    }
}
