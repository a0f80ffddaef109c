//! A server bound to its port before it runs, with what it serves and its metrics endpoint:
//! what each service's `Application` wraps, so tests can read the port before running it.

use std::{future::Future, net::SocketAddr, sync::Arc};

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::service::Routes;

use super::{BackgroundTask, Bounds, Health, serve};
use crate::{
    framing::MAX_REQUEST_MESSAGE_BYTES, limits::ConnectionLimits, metrics::RequestMetrics,
    tls::ServerTls,
};

/// A server bound to its port with everything it serves: what each service's `Application`
/// wraps, so tests can read the port before running it.
pub struct BoundServer {
    name: &'static str,
    bounds: Bounds,
    listener: TcpListener,
    local_addr: SocketAddr,
    routes: Routes,
    health: Health,
    tasks: Vec<BackgroundTask>,
    tls: Option<ServerTls>,
    request_metrics: RequestMetrics,
    metrics: Option<MetricsEndpoint>,
}

/// The bound metrics listener and what it serves.
struct MetricsEndpoint {
    listener: TcpListener,
    local_addr: SocketAddr,
    registry: Arc<Registry>,
}

impl BoundServer {
    /// Binds `addr` (port 0 picks a free port) for `routes`; `tasks` run until the server stops.
    pub async fn bind(
        name: &'static str,
        addr: SocketAddr,
        routes: Routes,
        health: Health,
        tasks: Vec<BackgroundTask>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            name,
            bounds: Bounds {
                max_request_bytes: MAX_REQUEST_MESSAGE_BYTES,
                limits: ConnectionLimits::default(),
            },
            listener,
            local_addr,
            routes,
            health,
            tasks,
            tls: None,
            request_metrics: RequestMetrics::default(),
            metrics: None,
        })
    }

    /// Serves `registry`, with the per-call gRPC metrics added, as Prometheus text at
    /// `http://<addr>/metrics` (port 0 picks a free port) while the server runs.
    pub async fn metrics(
        mut self,
        addr: SocketAddr,
        mut registry: Registry,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        self.request_metrics.register(&mut registry);
        crate::telemetry::register_metrics(&mut registry);
        self.metrics = Some(MetricsEndpoint {
            listener,
            local_addr,
            registry: Arc::new(registry),
        });
        Ok(self)
    }

    /// The metrics address actually bound, if [`BoundServer::metrics`] was called.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|metrics| metrics.local_addr)
    }

    /// Serves TLS only (see [`crate::tls`]) when `tls` is given; plaintext h2c otherwise.
    pub fn tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Refuses request messages over `bytes` (RESOURCE_EXHAUSTED) before they are decoded:
    /// each service knows how large its largest valid request can be.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.bounds.max_request_bytes = bytes;
        self
    }

    /// Bounds connections, streams, request-body time and keepalive by `limits` (the
    /// defaults of the flags otherwise).
    pub fn limits(mut self, limits: ConnectionLimits) -> Self {
        self.bounds.limits = limits;
        self
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let tls = self.tls.is_some();
        tracing::info!(addr = %self.local_addr, tls, "{} listening", self.name);
        let mut tasks = self.tasks;
        if let Some(metrics) = self.metrics {
            tracing::info!(addr = %metrics.local_addr, "{} metrics at /metrics", self.name);
            tasks.push(BackgroundTask::from(tokio::spawn(
                crate::metrics::serve_metrics(metrics.listener, metrics.registry),
            )));
        }
        let _tasks = tasks;
        serve(
            self.listener,
            self.routes,
            self.health,
            self.bounds,
            self.tls,
            self.request_metrics,
            shutdown,
        )
        .await?;
        tracing::info!("{} stopped", self.name);
        Ok(())
    }
}
