//! Test harness: real services spawned in-process on port 0, real emulators over loopback,
//! real gRPC clients. Set `TEST_LOG=1` to see the services' logs.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod auth_process;
pub mod data;
pub mod delay;
pub mod emulators;
pub mod endings;
pub mod faults;
pub mod feed_proxy;
pub mod gate;
pub mod moto;
pub mod mutate;
pub mod otlp;
pub mod pki;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod recovery;
pub mod replicas;
pub mod streams;
pub mod tables;
pub mod totp;

use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use common::aws::AwsSettings;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The fields named by a status's BadRequest details, in order; panics if it has none.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .unwrap_or_else(|| panic!("a BadRequest in {status:?}"))
        .field_violations
        .iter()
        .map(|violation| violation.field.clone())
        .collect()
}

/// The access key id of the credentials the harness and the services themselves use; the
/// ones STS vends to users differ.
pub const TEST_ACCESS_KEY_ID: &str = "testing";

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
            TEST_ACCESS_KEY_ID,
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
pub async fn wait_serving(addr: SocketAddr, service: &str) -> bool {
    wait_status(
        addr,
        service,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await
}

/// Waits until the server at `addr` reports `status` for `service` (`""` is the whole
/// server); false if it does not within `limit`.
pub async fn wait_status(
    addr: SocketAddr,
    service: &str,
    status: ServingStatus,
    limit: Duration,
) -> bool {
    let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
    else {
        return false;
    };
    let health = HealthClient::new(channel);
    eventually(limit, || {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .is_ok_and(|r| r.into_inner().status == status as i32)
        }
    })
    .await
}

/// A service's `run_until_stopped` running on its own task: stopped gracefully by
/// [`RunningService::stop`], or signalled to stop when dropped.
pub struct RunningService {
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningService {
    /// Spawns `run`, handing it the future that resolves when the service must stop.
    pub fn spawn<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async {
            let _ = stopped.await;
        })));
        Self {
            name,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the service and waits until it has drained, failing the test if it failed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let name = self.name;
            task.await
                .unwrap_or_else(|e| panic!("{name} task: {e}"))
                .unwrap_or_else(|e| panic!("{name} failed: {e:#}"));
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
