//! The auth-service's errors and the one place they become gRPC statuses.

use std::time::Duration;

use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use common::{
    aws::{self, AwsFailure, Modeled},
    status::{self, Violation},
    tokens::TokenError,
};
use tonic::{Code, Status};

/// ErrorInfo domain of the auth-service's reasons.
pub const AUTH_ERROR_DOMAIN: &str = "dynagate.auth";
/// ErrorInfo reason of a login that needs a second factor.
pub const MFA_REQUIRED: &str = "MFA_REQUIRED";

/// Everything that can go wrong in an auth-service call.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request breaks a rule (username charset, password length, …).
    #[error("invalid request: {0:?}")]
    InvalidArgument(Vec<Violation>),
    /// Registration with a username that is already taken.
    #[error("username already taken")]
    UsernameTaken,
    /// Unknown user or wrong password: deliberately indistinguishable.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Unknown, expired, revoked or reused refresh token.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A recovery token that is not the user's outstanding one (unknown user, wrong, used,
    /// replaced or expired): deliberately indistinguishable.
    #[error("invalid recovery token")]
    InvalidRecoveryToken,
    /// Missing or unacceptable bearer access token.
    #[error("invalid access token: {0}")]
    InvalidAccessToken(#[from] TokenError),
    /// A valid access token whose session was revoked or has expired.
    #[error("the access token's session has ended")]
    SessionEnded,
    /// RevokeSession of a session the caller does not have (unknown, or another user's).
    #[error("session not found")]
    SessionNotFound,
    /// An admin call naming a user that does not exist (or is already erased).
    #[error("user not found")]
    UserNotFound,
    /// GetCredentials on a server without a role and table configured.
    #[error("credential vending is not configured")]
    CredentialsDisabled,
    /// Too many password checks queued: shed load instead of queueing without bound.
    #[error("password hashing queue full")]
    Overloaded,
    /// Too many failed logins for this username: refused, unchecked, for `retry_after`.
    #[error("login attempts locked for {retry_after:?}")]
    Locked {
        /// How long until the lock ends.
        retry_after: Duration,
    },
    /// The end user's address used up its login/registration budget for now.
    #[error("rate limited for {retry_after:?}")]
    RateLimited {
        /// When the address may try again.
        retry_after: Duration,
    },
    /// A right password, but the account needs a second factor the request did not carry.
    #[error("second factor required")]
    MfaRequired,
    /// A wrong or already used TOTP or recovery code outside login (e.g. DisableTotp).
    #[error("invalid code")]
    InvalidCode,
    /// A TOTP call on a server without a TOTP key configured.
    #[error("TOTP is not configured")]
    TotpDisabled,
    /// The request does not fit the account's current state (e.g. enrolling TOTP twice).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A dependency is unreachable, timing out or throttling us; the call may be retried.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    /// A bug or misconfiguration; its cause is logged, never returned.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AuthError {
    /// Maps an AWS SDK error that no caller handled specifically: transient failures become
    /// UNAVAILABLE, everything else is internal.
    pub fn aws<E>(context: &str, error: SdkError<E, HttpResponse>) -> Self
    where
        E: Modeled + std::error::Error + Send + Sync + 'static,
    {
        let description = format!("{context}: {}", aws::describe(&error));
        match aws::classify(&error) {
            AwsFailure::Unavailable | AwsFailure::Throttled => Self::Unavailable(description),
            // Every request we send is built by us from validated input, and the tables hold
            // only what we wrote: anything else is a bug or a misconfiguration.
            AwsFailure::ConditionFailed
            | AwsFailure::InvalidRequest
            | AwsFailure::AccessDenied
            | AwsFailure::CredentialsExpired
            | AwsFailure::UnreadableAnswer
            | AwsFailure::Unsupported
            | AwsFailure::Other => Self::Internal(anyhow::anyhow!(description)),
        }
    }
}

/// A detached flow (`common::detached`) that panicked or was stopped by a shutdown: a bug or
/// the process going away, never the client's doing.
impl From<tokio::task::JoinError> for AuthError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::Internal(anyhow::Error::new(error).context("detached flow"))
    }
}

/// Maps the result of a conditional write: success is `true`, a failed condition `false`, and
/// any other failure an error.
pub fn conditional<T, E>(
    context: &str,
    result: Result<T, SdkError<E, HttpResponse>>,
) -> Result<bool, AuthError>
where
    E: Modeled + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(error) if aws::condition_failed(&error) => Ok(false),
        Err(error) => Err(AuthError::aws(context, error)),
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidArgument(violations) => {
                // Only the field names: a description of a password rule it broke is
                // already something about the password.
                let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                tracing::info!(?fields, "invalid argument");
                status::invalid_argument(&violations)
            }
            AuthError::UsernameTaken => {
                tracing::info!("username already taken");
                Status::already_exists("username already taken")
            }
            AuthError::InvalidCredentials => {
                tracing::info!("login failed");
                Status::unauthenticated("invalid username or password")
            }
            AuthError::InvalidRefreshToken => {
                tracing::info!("refresh token refused");
                Status::unauthenticated("invalid refresh token")
            }
            AuthError::InvalidRecoveryToken => {
                tracing::info!("recovery token refused");
                Status::unauthenticated("invalid or expired recovery token")
            }
            AuthError::InvalidAccessToken(reason) => {
                tracing::info!(%reason, "access token refused");
                status::unauthenticated()
            }
            AuthError::SessionEnded => {
                tracing::info!("access token of an ended session refused");
                status::unauthenticated()
            }
            AuthError::SessionNotFound => {
                tracing::info!("session not found");
                Status::not_found("session not found")
            }
            AuthError::UserNotFound => {
                tracing::info!("admin call for an unknown user");
                Status::not_found("no such user")
            }
            AuthError::CredentialsDisabled => {
                tracing::info!("GetCredentials called but vending is not configured");
                Status::unimplemented("credential vending is not configured on this server")
            }
            AuthError::Overloaded => {
                tracing::warn!("password hashing queue full: shedding load");
                status::retry_after(
                    Code::ResourceExhausted,
                    "too many concurrent logins",
                    status::RETRY_DELAY,
                )
            }
            AuthError::Locked { retry_after } => {
                tracing::info!(?retry_after, "login refused: username locked");
                status::retry_after(
                    Code::ResourceExhausted,
                    "too many failed attempts; try again later",
                    retry_after,
                )
            }
            AuthError::RateLimited { retry_after } => {
                tracing::info!(?retry_after, "rate limited");
                status::retry_after(
                    Code::ResourceExhausted,
                    "too many requests from this address; try again later",
                    retry_after,
                )
            }
            AuthError::MfaRequired => {
                tracing::info!("second factor required");
                status::error_info(
                    Code::Unauthenticated,
                    "a second factor is required: send totp_code or recovery_code",
                    MFA_REQUIRED,
                    AUTH_ERROR_DOMAIN,
                )
            }
            AuthError::InvalidCode => {
                tracing::info!("second factor refused");
                Status::unauthenticated("invalid TOTP or recovery code")
            }
            AuthError::TotpDisabled => {
                tracing::info!("TOTP call but no TOTP key is configured");
                Status::unimplemented("TOTP is not configured on this server")
            }
            AuthError::FailedPrecondition(reason) => {
                tracing::info!(%reason, "failed precondition");
                Status::failed_precondition(reason)
            }
            AuthError::Unavailable(cause) => {
                tracing::warn!(%cause, "dependency unavailable");
                status::unavailable()
            }
            AuthError::Internal(cause) => {
                tracing::error!(cause = format!("{cause:#}"), "internal error");
                status::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn every_error_becomes_the_status_clients_expect() {
        let cases = [
            (
                AuthError::InvalidArgument(vec![Violation::new("username", "short")]),
                Code::InvalidArgument,
            ),
            (AuthError::UsernameTaken, Code::AlreadyExists),
            (AuthError::InvalidCredentials, Code::Unauthenticated),
            (AuthError::InvalidRefreshToken, Code::Unauthenticated),
            (AuthError::InvalidRecoveryToken, Code::Unauthenticated),
            (
                AuthError::InvalidAccessToken(TokenError::Missing),
                Code::Unauthenticated,
            ),
            (AuthError::SessionEnded, Code::Unauthenticated),
            (AuthError::SessionNotFound, Code::NotFound),
            (AuthError::UserNotFound, Code::NotFound),
            (AuthError::CredentialsDisabled, Code::Unimplemented),
            (AuthError::Overloaded, Code::ResourceExhausted),
            (
                AuthError::Locked {
                    retry_after: Duration::from_secs(4),
                },
                Code::ResourceExhausted,
            ),
            (
                AuthError::RateLimited {
                    retry_after: Duration::from_secs(1),
                },
                Code::ResourceExhausted,
            ),
            (AuthError::MfaRequired, Code::Unauthenticated),
            (AuthError::InvalidCode, Code::Unauthenticated),
            (AuthError::TotpDisabled, Code::Unimplemented),
            (
                AuthError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (AuthError::Unavailable("x".into()), Code::Unavailable),
            (
                AuthError::Internal(anyhow::anyhow!("secret cause")),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let name = format!("{error:?}");
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{name}");
            assert!(
                !status.message().contains("secret cause"),
                "internal causes stay inside"
            );
        }
    }

    #[test]
    fn shed_and_unavailable_calls_say_when_to_retry() {
        for error in [AuthError::Overloaded, AuthError::Unavailable("x".into())] {
            let status = Status::from(error);
            assert!(
                status.get_error_details().retry_info().is_some(),
                "{status:?}"
            );
        }
    }
}
