//! AWS SDK setup and error classification shared by both services. Endpoints, region and
//! credentials come from the standard aws-config chain (`AWS_REGION`, `AWS_ENDPOINT_URL_*`,
//! …); only timeouts, retries and the HTTP client are ours.

use std::time::Duration;

use aws_config::{
    BehaviorVersion, SdkConfig, retry::RetryConfig,
    stalled_stream_protection::StalledStreamProtectionConfig, timeout::TimeoutConfig,
};
use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

mod modeled;

pub use modeled::Modeled;

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
/// returned config shares its connection pool. Stalled-stream protection is off: every call we
/// make has a small body read whole within the attempt timeout, which bounds a stalled answer
/// far sooner than the protection's 20 s grace period, and its throughput monitoring cost ≈ 4%
/// of the data-service's CPU per GetItem.
pub async fn load_sdk_config(settings: &AwsSettings) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .timeout_config(settings.timeout_config())
        .retry_config(settings.retry_config())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
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
    /// A conditional write's condition was false: nothing was written.
    ConditionFailed,
    /// The service refused the request itself as invalid (DynamoDB's ValidationException: a
    /// malformed or over-limit request, an operand of the wrong type). Nothing ran.
    InvalidRequest,
    /// Credentials are valid but not allowed to do this.
    AccessDenied,
    /// The temporary credentials used have expired.
    CredentialsExpired,
    /// The request ran, but its successful answer could not be read (emulators store items
    /// nested deeper than the SDK parses).
    UnreadableAnswer,
    /// The backend does not know the operation at all (DynamoDB's UnknownOperationException:
    /// an emulator without it, such as dynalite without TransactWriteItems).
    Unsupported,
    /// Anything else: a bug or a misconfiguration on our side.
    Other,
}

impl AwsFailure {
    /// True for failures a client should simply retry.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::Throttled)
    }

    /// Every failure, in the order of [`AwsFailure::label`]'s values.
    pub const ALL: [Self; 9] = [
        Self::Unavailable,
        Self::Throttled,
        Self::ConditionFailed,
        Self::InvalidRequest,
        Self::AccessDenied,
        Self::CredentialsExpired,
        Self::UnreadableAnswer,
        Self::Unsupported,
        Self::Other,
    ];

    /// The failure as a metric label value (`condition_failed`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Throttled => "throttled",
            Self::ConditionFailed => "condition_failed",
            Self::InvalidRequest => "invalid_request",
            Self::AccessDenied => "access_denied",
            Self::CredentialsExpired => "credentials_expired",
            Self::UnreadableAnswer => "unreadable_answer",
            Self::Unsupported => "unsupported",
            Self::Other => "other",
        }
    }
}

/// Classifies an SDK error: the transport failure, else the operation's modeled variant, else
/// (for errors the models leave unnamed: access denied, expired tokens, validation) the code,
/// using the SDK's own lists of throttling and transient codes first.
pub fn classify<E: Modeled>(error: &SdkError<E, HttpResponse>) -> AwsFailure {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            AwsFailure::Unavailable
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status();
            if status.is_success() {
                return AwsFailure::UnreadableAnswer;
            }
            let unnamed = || match unnamed(service.err().code()) {
                AwsFailure::Other if status.is_server_error() => AwsFailure::Unavailable,
                failure => failure,
            };
            service.err().modeled().unwrap_or_else(unnamed)
        }
        _ => AwsFailure::Other,
    }
}

/// True when a conditional write was refused because its condition was false.
pub fn condition_failed<E: Modeled>(error: &SdkError<E, HttpResponse>) -> bool {
    classify(error) == AwsFailure::ConditionFailed
}

/// Errors no service model names, by code.
fn unnamed(code: Option<&str>) -> AwsFailure {
    let code = code.unwrap_or_default();
    if THROTTLING_ERRORS.contains(&code) {
        return AwsFailure::Throttled;
    }
    if TRANSIENT_ERRORS.contains(&code) {
        return AwsFailure::Unavailable;
    }
    match code {
        "ValidationException" => AwsFailure::InvalidRequest,
        "UnknownOperationException" => AwsFailure::Unsupported,
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignature"
        | "SignatureDoesNotMatch" => AwsFailure::AccessDenied,
        "ExpiredToken" | "ExpiredTokenException" => AwsFailure::CredentialsExpired,
        "InternalFailure" | "ServiceUnavailable" | "ServiceUnavailableException" => {
            AwsFailure::Unavailable
        }
        _ => AwsFailure::Other,
    }
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
    use aws_sdk_dynamodb::operation::{get_item::GetItemError, put_item::PutItemError};
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::{body::SdkBody, error::ErrorMetadata};

    fn answered<E>(status: u16, error: E) -> SdkError<E, HttpResponse> {
        let status = StatusCode::try_from(status).expect("valid status");
        SdkError::service_error(error, HttpResponse::new(status, SdkBody::empty()))
    }

    fn unhandled(code: &str) -> GetItemError {
        GetItemError::generic(ErrorMetadata::builder().code(code).build())
    }

    #[test]
    fn modeled_variants_classify_by_type() {
        let throttled = GetItemError::ProvisionedThroughputExceededException(
            aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                .build(),
        );
        assert_eq!(classify(&answered(400, throttled)), AwsFailure::Throttled);
        let failed = PutItemError::ConditionalCheckFailedException(
            aws_sdk_dynamodb::types::error::ConditionalCheckFailedException::builder().build(),
        );
        assert!(condition_failed(&answered(400, failed)));
    }

    #[test]
    fn unnamed_errors_classify_by_code() {
        let cases = [
            ("ThrottlingException", 400, AwsFailure::Throttled),
            ("ValidationException", 400, AwsFailure::InvalidRequest),
            ("UnknownOperationException", 400, AwsFailure::Unsupported),
            ("AccessDeniedException", 400, AwsFailure::AccessDenied),
            ("ExpiredTokenException", 400, AwsFailure::CredentialsExpired),
            ("SomethingNew", 400, AwsFailure::Other),
            ("SomethingNew", 503, AwsFailure::Unavailable),
        ];
        for (code, status, failure) in cases {
            assert_eq!(
                classify(&answered(status, unhandled(code))),
                failure,
                "{code}"
            );
        }
    }

    #[test]
    fn an_answer_that_succeeded_but_did_not_parse_is_unreadable() {
        let failure = classify(&answered(200, unhandled("")));
        assert_eq!(failure, AwsFailure::UnreadableAnswer);
    }
}
