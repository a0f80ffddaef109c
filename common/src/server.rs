//! The gRPC server bootstrap both services share: standard health and reflection services,
//! a tracing span per request in its W3C trace (see [`crate::trace`]), dependency-driven
//! health, and graceful shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tokio::{
    net::TcpListener,
    sync::{Mutex, Notify},
    task::JoinHandle,
};
use tonic::{
    service::{Routes, RoutesBuilder},
    transport::Server,
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::trace::{DefaultOnEos, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::{
    framing::{FramingLayer, MAX_REQUEST_MESSAGE_BYTES},
    limits::{ConnectionLimits, limited_incoming},
    methods::ServedMethods,
    metrics::{MethodNames, RequestMetrics, RequestMetricsLayer},
    proto::FILE_DESCRIPTOR_SET,
    tls::ServerTls,
    trace::{RecordFailure, TraceContextLayer},
};

/// The `grpc.health.v1` statuses of one server: the overall status (`""`) and one per
/// service, always moved together. Once shutdown starts they stay NOT_SERVING, so a late
/// dependency probe cannot flip a draining server back to SERVING.
#[derive(Clone, Debug)]
pub struct Health {
    reporter: HealthReporter,
    services: Arc<[String]>,
    shutting_down: Arc<Mutex<bool>>,
}

impl Health {
    /// Health for the named services (fully qualified, e.g. `dynagate.auth.v1.AuthService`),
    /// starting NOT_SERVING until a probe succeeds. Add the returned service to the server.
    pub async fn new(
        services: &[&str],
    ) -> (
        Self,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let health = Self {
            reporter,
            services: std::iter::once("")
                .chain(services.iter().copied())
                .map(str::to_owned)
                .collect(),
            shutting_down: Arc::default(),
        };
        health.set(ServingStatus::NotServing).await;
        (health, service)
    }

    /// Sets every status, unless shutdown has begun.
    pub async fn set(&self, status: ServingStatus) {
        let shutting_down = self.shutting_down.lock().await;
        if !*shutting_down {
            self.set_all(status).await;
        }
    }

    /// Marks the server NOT_SERVING for good, so load balancers stop sending new calls.
    pub async fn begin_shutdown(&self) {
        let mut shutting_down = self.shutting_down.lock().await;
        *shutting_down = true;
        self.set_all(ServingStatus::NotServing).await;
    }

    /// The services it reports on (not the overall `""`): the ones the server implements.
    pub fn services(&self) -> Vec<&str> {
        let services = self.services.iter().map(String::as_str);
        services.filter(|service| !service.is_empty()).collect()
    }

    async fn set_all(&self, status: ServingStatus) {
        for service in self.services.iter() {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Probes the server's dependencies every `interval` and reports SERVING only while the
    /// probe succeeds. Status changes are logged once, not every interval.
    pub fn spawn_probe<F, Fut>(&self, interval: Duration, probe: F) -> BackgroundTask
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        self.spawn_probe_nudged(interval, Arc::default(), probe)
    }

    /// [`Health::spawn_probe`] that also probes at once whenever `nudge` is notified, so a
    /// dependency that comes back is reported without waiting for the next interval.
    pub fn spawn_probe_nudged<F, Fut>(
        &self,
        interval: Duration,
        nudge: Arc<Notify>,
        probe: F,
    ) -> BackgroundTask
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let health = self.clone();
        let handle = tokio::spawn(async move {
            let mut last_ok = None;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = nudge.notified() => ticker.reset(),
                }
                let result = probe().await;
                let ok = result.is_ok();
                match (&result, last_ok) {
                    (Ok(()), Some(false) | None) => {
                        tracing::info!("dependencies reachable: SERVING")
                    }
                    (Err(cause), Some(true) | None) => {
                        tracing::warn!(%cause, "dependency unreachable: NOT_SERVING");
                    }
                    _ => {}
                }
                last_ok = Some(ok);
                let status = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                health.set(status).await;
            }
        });
        BackgroundTask(handle)
    }
}

/// A background task (health probe, key refresher) that stops when its owner drops it.
#[derive(Debug)]
pub struct BackgroundTask(JoinHandle<()>);

impl From<JoinHandle<()>> for BackgroundTask {
    fn from(handle: JoinHandle<()>) -> Self {
        Self(handle)
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Adds server reflection, v1 and v1alpha (grpcurl and older tools still ask for v1alpha),
/// serving every Dynagate proto with its comments, the health service, and the `google.rpc`
/// error details so tools can decode BadRequest, RetryInfo and ErrorInfo. Only `services`
/// (the ones this server implements), health and reflection are listed, although every
/// Dynagate proto is described.
pub fn add_reflection(
    routes: &mut RoutesBuilder,
    services: &[&str],
) -> Result<(), tonic_reflection::server::Error> {
    let builder = |reflection: &str| {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name(reflection);
        for service in services {
            builder = builder.with_service_name(*service);
        }
        builder
    };
    let v1 = builder("grpc.reflection.v1.ServerReflection").build_v1()?;
    let v1alpha = builder("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?;

    routes.add_service(v1).add_service(v1alpha);
    Ok(())
}

/// What a server bounds on every connection and call.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// The largest request message accepted.
    pub max_request_bytes: usize,
    /// Connections, streams, request-body time, keepalive.
    pub limits: ConnectionLimits,
}

/// Serves `routes` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// reports NOT_SERVING, stops accepting connections and lets in-flight calls finish. Every call
/// is counted and timed in `metrics`, under its method's name if it is one of the services
/// `health` reports on (or health or reflection), else as unknown.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    health: Health,
    bounds: Bounds,
    tls: Option<ServerTls>,
    metrics: RequestMetrics,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // TraceContextLayer (outside it) has made and entered the call's span.
    let trace = TraceLayer::new_for_grpc()
        .make_span_with(|_: &http::Request<_>| tracing::Span::current())
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
        .on_eos(DefaultOnEos::new().level(Level::DEBUG))
        // Failures are logged where they happen, at the level they deserve (see status.rs);
        // here the code only goes on the span.
        .on_failure(RecordFailure::default());

    let methods = ServedMethods::new(&health.services());
    let names = method_names(&methods);
    let limits = &bounds.limits;
    let incoming = limited_incoming(listener, limits.max_connections);
    let mut builder = http2_server(limits);
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.config())?;
    }
    builder
        .layer(TraceContextLayer)
        .layer(trace)
        .layer(RequestMetricsLayer::new(metrics, names))
        .layer(FramingLayer::new(
            bounds.max_request_bytes,
            limits.request_body_timeout(),
            methods,
        ))
        .layer(ServerTls::client_cert_layer(tls.as_ref()))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight calls");
            health.begin_shutdown().await;
        })
        .await
}

/// The metric labels of `methods`.
fn method_names(methods: &ServedMethods) -> MethodNames {
    let names = methods.iter().map(|method| {
        let path = method.path.as_str();
        (path, method.service.as_str(), method.name.as_str())
    });
    names.collect()
}

/// A server builder with the HTTP/2 bounds of `limits` (the others are layers and the
/// accept loop).
fn http2_server(limits: &ConnectionLimits) -> Server {
    Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(limits.http2_keepalive_interval())
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout()))
}

/// Resolves on SIGINT or SIGTERM: what container runtimes send before killing a process.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

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

/// The process exit for a service's `main`: failures are logged (with their cause chain)
/// before exiting non-zero.
pub fn exit_code(service: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{service} failed");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_nudge_probes_at_once_instead_of_waiting_for_the_interval() {
        let (health, _service) = Health::new(&["test.v1.Service"]).await;
        let probes = Arc::new(AtomicUsize::new(0));
        let nudge = Arc::new(Notify::new());
        let _task = health.spawn_probe_nudged(Duration::from_secs(3600), Arc::clone(&nudge), {
            let probes = Arc::clone(&probes);
            move || {
                probes.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }
        });
        let counted = |n| {
            let probes = Arc::clone(&probes);
            async move {
                for _ in 0..200 {
                    if probes.load(Ordering::SeqCst) >= n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                false
            }
        };
        assert!(counted(1).await, "the first probe runs at once");
        nudge.notify_one();
        assert!(counted(2).await, "a nudge probes again within the hour");
    }
}
