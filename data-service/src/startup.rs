//! Building and running the service: settings and a DynamoDB base configuration in, a bound
//! server out.

mod auth;
mod cache_sizes;
mod page_tokens;
mod parts;
mod probe;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use common::{
    clock::{Clock, SystemClock},
    proto::data::v1::data_service_server::SERVICE_NAME,
    server::{BoundServer, Health},
    tls::ServerTls,
};

use self::{auth::AuthLink, page_tokens::page_tokens, parts::Parts};
use crate::{config::Settings, metrics::Metrics, store::ItemStore};

/// The largest request a valid call can need: a 400 KB item of at most 20,000 values stays
/// well under it with protobuf's few bytes of framing per value.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// A bound, ready-to-run data-service.
pub struct Application {
    server: BoundServer,
    metrics: Arc<Metrics>,
}

impl Application {
    /// Wires everything and binds the listener (port 0 picks a free port). `dynamodb` is the
    /// base configuration (endpoint, region, timeouts, HTTP client) every per-user client
    /// derives from; its own credentials serve only the health probe.
    pub async fn build(
        settings: &Settings,
        dynamodb: aws_sdk_dynamodb::Config,
    ) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, dynamodb, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with the revocations (their expiry, the feed's freshness, the
    /// index of verified tokens) reading `clock`: tests move time instead of sleeping.
    pub async fn build_with_clock(
        settings: &Settings,
        dynamodb: aws_sdk_dynamodb::Config,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        settings.check_auth_transport()?;
        let pages = Arc::new(page_tokens(settings)?);
        let auth = AuthLink::new(settings)?;
        let tls = ServerTls::load(&settings.tls, None)?;
        let parts = Parts::new(settings, &dynamodb, &auth, clock);
        let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
        let routes = parts.routes(settings, pages, health_service)?;
        let tasks = parts.tasks(settings, dynamodb, &auth, &health);
        let addr = settings.listen_addr;
        let server = BoundServer::bind("data-service", addr, routes, health, tasks)
            .await
            .with_context(|| format!("binding {addr}"))?
            .max_request_bytes(MAX_REQUEST_BYTES)
            .limits(settings.limits.clone())
            .tls(tls)
            .metrics(settings.metrics_addr, parts.registry(settings))
            .await
            .with_context(|| format!("binding the metrics endpoint {}", settings.metrics_addr))?;
        Ok(Self {
            server,
            metrics: parts.metrics,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The metrics endpoint's address actually bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    /// The instance's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        Ok(self.server.run_until_stopped(shutdown).await?)
    }
}

/// Creates the items table if missing.
pub async fn create_tables(
    settings: &Settings,
    dynamodb: aws_sdk_dynamodb::Config,
) -> anyhow::Result<()> {
    let client = aws_sdk_dynamodb::Client::from_conf(dynamodb);
    ItemStore::new(settings.items_table.clone(), Arc::default())
        .create_table(&client)
        .await
        .map_err(anyhow::Error::msg)
}
