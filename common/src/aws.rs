//! AWS SDK setup and error classification shared by both services. Endpoints, region and
//! credentials come from the standard aws-config chain (`AWS_REGION`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_STS`, …); only timeouts, retries and the HTTP
//! client are ours.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Timeouts and retries for every AWS call, so a slow dependency fails fast and visibly
/// instead of holding a gRPC request until the client gives up.
#[derive(Clone, Debug, clap::Args)]
pub struct AwsSettings {
    /// TCP/TLS connect timeout for AWS endpoints, in milliseconds.
    #[arg(long, env = "DYNAGATE_AWS_CONNECT_TIMEOUT_MS", default_value_t = 1000)]
    pub aws_connect_timeout_ms: u64,
    /// Timeout of one attempt of an AWS call, in milliseconds.
    #[arg(long, env = "DYNAGATE_AWS_ATTEMPT_TIMEOUT_MS", default_value_t = 2000)]
    pub aws_attempt_timeout_ms: u64,
    /// Timeout of a whole AWS call including retries, in milliseconds.
    #[arg(
        long,
        env = "DYNAGATE_AWS_OPERATION_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub aws_operation_timeout_ms: u64,
    /// Attempts per AWS call (1 = no retries), with the SDK's standard jittered backoff.
    #[arg(long, env = "DYNAGATE_AWS_MAX_ATTEMPTS", default_value_t = 3)]
    pub aws_max_attempts: u32,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            aws_connect_timeout_ms: 1000,
            aws_attempt_timeout_ms: 2000,
            aws_operation_timeout_ms: 5000,
            aws_max_attempts: 3,
        }
    }
}

impl AwsSettings {
    /// The SDK timeout configuration these settings describe.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(self.aws_connect_timeout_ms))
            .operation_attempt_timeout(Duration::from_millis(self.aws_attempt_timeout_ms))
            .operation_timeout(Duration::from_millis(self.aws_operation_timeout_ms))
            .build()
    }

    /// The SDK retry configuration these settings describe.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard().with_max_attempts(self.aws_max_attempts.max(1))
    }
}

/// Loads the standard AWS configuration with our HTTP client, timeouts and retries.
///
/// The HTTP client is rustls with ring (no aws-lc-sys C build); every SDK client built from the
/// returned config shares its connection pool.
pub async fn load_sdk_config(settings: &AwsSettings) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .timeout_config(settings.timeout_config())
        .retry_config(settings.retry_config())
        .load()
        .await
}

/// The HTTPS client every AWS SDK client in the process uses.
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// What an AWS failure means for our callers, independent of the service that raised it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsFailure {
    /// Could not reach the service, timed out, or it answered 5xx: retry later.
    Unavailable,
    /// The service is throttling us: retry later, more slowly.
    Throttled,
    /// Credentials are valid but not allowed to do this.
    AccessDenied,
    /// The temporary credentials used have expired.
    CredentialsExpired,
    /// Anything else: a bug or a misconfiguration on our side.
    Other,
}

impl AwsFailure {
    /// True for failures a client should simply retry.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::Throttled)
    }
}

/// Classifies any SDK error by transport failure or error code. Service-specific outcomes such
/// as a failed condition are matched by callers first, with `as_service_error`.
pub fn classify<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> AwsFailure {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => AwsFailure::Unavailable,
        SdkError::ResponseError(_) => AwsFailure::Unavailable,
        SdkError::ServiceError(service) => classify_code(service.err().code()),
        _ => AwsFailure::Other,
    }
}

/// Classifies an AWS error code (the `__type` / `Code` of the error response).
pub fn classify_code(code: Option<&str>) -> AwsFailure {
    match code.unwrap_or_default() {
        "ThrottlingException"
        | "Throttling"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "LimitExceededException" => AwsFailure::Throttled,
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignature"
        | "SignatureDoesNotMatch"
        | "RegionDisabledException" => AwsFailure::AccessDenied,
        "ExpiredToken" | "ExpiredTokenException" => AwsFailure::CredentialsExpired,
        "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "IDPCommunicationError" => AwsFailure::Unavailable,
        _ => AwsFailure::Other,
    }
}

/// True when a DynamoDB write was refused because its condition expression was false.
pub fn is_condition_failed<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error.code() == Some("ConditionalCheckFailedException")
}

/// True when the service refused the request itself as invalid: DynamoDB's
/// ValidationException (a malformed or over-limit request, or an operand of the wrong type).
/// DynamoDB's model has no typed error for it, so this goes by the error code. The request did
/// not run; whether the caller or our own code shaped it wrong is for the caller to judge.
pub fn is_invalid_request<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(error, SdkError::ServiceError(_)) && error.code() == Some("ValidationException")
}

/// The error's code and message for logs (never sent to clients).
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    error: &SdkError<E, R>,
) -> String {
    let mut text = aws_smithy_types::error::display::DisplayErrorContext(error).to_string();
    if let Some(code) = error.code() {
        text = format!("{code}: {text}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_throttled() {
        for code in [
            "ThrottlingException",
            "Throttling",
            "ProvisionedThroughputExceededException",
        ] {
            assert_eq!(classify_code(Some(code)), AwsFailure::Throttled, "{code}");
        }
    }

    #[test]
    fn access_denied_codes_are_access_denied() {
        for code in [
            "AccessDeniedException",
            "AccessDenied",
            "UnrecognizedClientException",
        ] {
            assert_eq!(
                classify_code(Some(code)),
                AwsFailure::AccessDenied,
                "{code}"
            );
        }
    }

    #[test]
    fn only_a_validation_exception_from_the_service_is_an_invalid_request() {
        use aws_sdk_dynamodb::operation::get_item::GetItemError;
        use aws_smithy_types::error::ErrorMetadata;
        let service_error = |code: &str| {
            let error = GetItemError::generic(ErrorMetadata::builder().code(code).build());
            SdkError::<GetItemError, ()>::service_error(error, ())
        };
        assert!(is_invalid_request(&service_error("ValidationException")));
        assert!(!is_invalid_request(&service_error("ThrottlingException")));
        let timeout = SdkError::<GetItemError, ()>::timeout_error("slow");
        assert!(!is_invalid_request(&timeout));
    }

    #[test]
    fn unknown_codes_are_internal() {
        assert_eq!(
            classify_code(Some("ValidationException")),
            AwsFailure::Other
        );
        assert_eq!(classify_code(None), AwsFailure::Other);
    }
}
