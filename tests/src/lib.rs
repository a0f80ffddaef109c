//! Test harness: real services spawned in-process on port 0, real emulators over loopback,
//! real gRPC clients. Set `TEST_LOG=1` to see the services' logs.

pub mod auth;
pub mod data;
pub mod emulators;
pub mod moto;
pub mod proxy;

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use common::aws::AwsSettings;

/// AWS settings for tests: short timeouts so fault tests finish quickly.
pub fn test_aws_settings() -> AwsSettings {
    AwsSettings {
        aws_connect_timeout_ms: 500,
        aws_attempt_timeout_ms: 2000,
        aws_operation_timeout_ms: 4000,
        aws_max_attempts: 2,
    }
}

/// An SDK configuration aimed at one emulator with test credentials. Tests run many
/// emulators in one process, so the endpoint is given here rather than through
/// `AWS_ENDPOINT_URL_*`, which the services themselves read in production.
pub fn sdk_config(endpoint: &str) -> SdkConfig {
    let settings = test_aws_settings();
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "dynagate-tests",
        )))
        .endpoint_url(endpoint)
        .http_client(common::aws::https_client())
        .timeout_config(settings.timeout_config())
        .retry_config(settings.retry_config())
        .build()
}

/// A DynamoDB client for an emulator.
pub fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config(endpoint))
}

/// An STS client for an emulator.
pub fn sts_client(endpoint: &str) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::new(&sdk_config(endpoint))
}

/// A table-name prefix unique to one test, so tests sharing an emulator never meet.
pub fn unique_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Polls `check` until it returns true or `limit` passes; returns the last answer. For
/// eventually-true facts (health after a probe interval), never for timing assertions.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the server at `addr` reports `service` SERVING (false after 10 s).
pub async fn wait_serving(addr: std::net::SocketAddr, service: &str) -> bool {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
    else {
        return false;
    };
    let health = HealthClient::new(channel);
    eventually(Duration::from_secs(10), || {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
        }
    })
    .await
}
