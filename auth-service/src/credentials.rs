//! Temporary AWS credentials per user: STS AssumeRole with a session policy that confines
//! them to the user's own partition, cached until a margin before expiry, with concurrent
//! misses for one user collapsed into a single STS call. The cache is keyed by the user and a
//! [`Generation`] — the user's credentials epoch (`users/epoch.rs`) — so after LogoutAll,
//! ChangePassword or a reused refresh token every replica vends the user new credentials.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use aws_sdk_sts::types::Tag;
use common::{
    aws::{self, AwsFailure},
    cache::{Expiring, LoadAborted, LoadingCache},
    clock::Clock,
};
use secrecy::SecretString;
use time::OffsetDateTime;
use tracing::Instrument;

use crate::{
    error::AuthError,
    metrics::Metrics,
    policy::{StsUserId, TableArn, role_session_name, session_policy},
};

/// Which of a user's credentials a caller may be handed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Generation {
    /// The user's credentials epoch: bumped after a compromise, so credentials vended before
    /// it are never handed out again, by any replica.
    Epoch(u64),
    /// A session started before usernames were recorded cannot find its user's epoch: it is
    /// vended credentials of its own (by session id), shared with no other session.
    Session(String),
}

/// The cache key: whose credentials, of which generation.
type VendKey = (StsUserId, Generation);

/// Temporary credentials for one user.
#[derive(Debug)]
pub struct TemporaryCredentials {
    /// `ASIA…` key id.
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: SecretString,
    /// The session token.
    pub session_token: SecretString,
    /// When STS says they stop working.
    pub expiration: OffsetDateTime,
}

impl Expiring for TemporaryCredentials {
    fn expires_at(&self) -> SystemTime {
        self.expiration.into()
    }
}

/// Where and how credentials are vended: validated once at startup.
#[derive(Clone, Debug)]
pub struct VendingConfig {
    /// The role assumed for every user.
    pub role_arn: String,
    /// The items table the session policy allows.
    pub table: TableArn,
    /// Requested lifetime of each credential.
    pub duration: Duration,
    /// Credentials are not handed out when they have less than this left.
    pub refresh_margin: Duration,
    /// Users whose credentials are cached at most.
    pub cache_capacity: u64,
}

/// Why STS did not give us credentials; cloneable, because one failed STS call answers every
/// request that was waiting for it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum VendError {
    /// STS unreachable, timing out or throttling: the client should retry.
    #[error("STS unavailable: {0}")]
    Unavailable(String),
    /// STS refused (access denied, bad role, …): our misconfiguration.
    #[error("STS refused AssumeRole: {0}")]
    Refused(String),
}

impl From<LoadAborted> for VendError {
    fn from(aborted: LoadAborted) -> Self {
        VendError::Unavailable(aborted.to_string())
    }
}

impl From<VendError> for AuthError {
    fn from(error: VendError) -> Self {
        match error {
            VendError::Unavailable(cause) => AuthError::Unavailable(cause),
            VendError::Refused(cause) => AuthError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

/// Vends and caches temporary credentials.
#[derive(Clone)]
pub struct CredentialVendor {
    sts: aws_sdk_sts::Client,
    config: Arc<VendingConfig>,
    cache: LoadingCache<VendKey, Arc<TemporaryCredentials>, VendError>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CredentialVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialVendor")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CredentialVendor {
    /// A vendor assuming `config.role_arn` through `sts`, judging the margin by `clock`.
    pub fn new(
        sts: aws_sdk_sts::Client,
        config: VendingConfig,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cache = LoadingCache::with_clock(config.cache_capacity, config.refresh_margin, clock);
        Self {
            sts,
            config: Arc::new(config),
            cache,
            metrics,
        }
    }

    /// Users whose credentials are cached (approximate, as moka counts).
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The vending configuration.
    pub fn config(&self) -> &VendingConfig {
        &self.config
    }

    /// Credentials for `user` of `generation`: from the cache while they have more than the
    /// margin left, otherwise from one AssumeRole call shared by every concurrent request for
    /// the same key. The call runs on its own task under the SDK's timeouts, so a caller that
    /// gives up neither cancels it nor starts another; it logs in the trace of the request
    /// that started it. Credentials of an older generation are never looked at again; they
    /// leave the cache at their margin (or to its capacity bound).
    pub async fn credentials_for(
        &self,
        user: &StsUserId,
        generation: Generation,
    ) -> Result<Arc<TemporaryCredentials>, AuthError> {
        let this = self.clone();
        let owned = user.clone();
        // In the request's span wherever the load runs, so in its trace.
        let load = async move { this.assume_role(&owned).await }.in_current_span();
        let key = (user.clone(), generation);
        Ok(self.cache.get_or_load(&key, load).await?)
    }

    /// One AssumeRole call, counted by outcome.
    async fn assume_role(&self, user: &StsUserId) -> Result<Arc<TemporaryCredentials>, VendError> {
        let result = self.call_assume_role(user).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics.assume_role_calls.increment(outcome);
        result
    }

    async fn call_assume_role(
        &self,
        user: &StsUserId,
    ) -> Result<Arc<TemporaryCredentials>, VendError> {
        let tag = Tag::builder()
            .key("user_id")
            .value(user.as_str())
            .build()
            .map_err(|e| VendError::Refused(format!("building the session tag: {e}")))?;
        // Validated at startup to 900..=43200, so it fits an i32.
        let duration = i32::try_from(self.config.duration.as_secs()).unwrap_or(3600);
        let output = self
            .sts
            .assume_role()
            .role_arn(&self.config.role_arn)
            .role_session_name(role_session_name(user))
            .source_identity(user.as_str())
            .tags(tag)
            .duration_seconds(duration)
            .policy(session_policy(&self.config.table, user))
            .send()
            .await
            .map_err(|error| {
                let cause = format!("AssumeRole for {user}: {}", aws::describe(&error));
                match aws::classify(&error) {
                    AwsFailure::Unavailable | AwsFailure::Throttled => {
                        VendError::Unavailable(cause)
                    }
                    AwsFailure::ConditionFailed
                    | AwsFailure::InvalidRequest
                    | AwsFailure::AccessDenied
                    | AwsFailure::CredentialsExpired
                    | AwsFailure::UnreadableAnswer
                    | AwsFailure::Unsupported
                    | AwsFailure::Other => VendError::Refused(cause),
                }
            })?;
        let credentials = output
            .credentials
            .ok_or_else(|| VendError::Refused("AssumeRole returned no credentials".to_owned()))?;
        let expiration = OffsetDateTime::from_unix_timestamp(credentials.expiration.secs())
            .map_err(|e| VendError::Refused(format!("AssumeRole expiration out of range: {e}")))?;
        tracing::info!(user_id = %user, %expiration, "assumed role for user");
        Ok(Arc::new(TemporaryCredentials {
            access_key_id: credentials.access_key_id,
            secret_access_key: SecretString::from(credentials.secret_access_key),
            session_token: SecretString::from(credentials.session_token),
            expiration,
        }))
    }
}
