//! The gRPC server bootstrap both services share: standard health and reflection services
//! ([`add_reflection`]), each call in a span of its W3C trace (see [`crate::trace`]),
//! dependency-driven health ([`Health`]), and graceful shutdown. [`BoundServer`] is what each
//! service's `Application` runs.

mod bound;
mod health;
mod reflection;

use std::future::Future;

use tokio::net::TcpListener;
use tonic::{service::Routes, transport::Server};

pub use bound::BoundServer;
pub use health::{BackgroundTask, Health};
pub use reflection::add_reflection;

use crate::{
    framing::FramingLayer,
    limits::{ConnectionLimits, limited_incoming},
    methods::ServedMethods,
    metrics::{MethodNames, RequestMetrics, RequestMetricsLayer},
    tls::ServerTls,
    trace::TraceContextLayer,
};

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
    let methods = ServedMethods::new(&health.services());
    let names = method_names(&methods);
    let limits = &bounds.limits;
    let incoming = limited_incoming(listener, limits.max_connections);
    let mut builder = http2_server(limits);
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.config())?;
    }
    builder
        // The call's span, then tower-http's logging and status recording in it.
        .layer(TraceContextLayer)
        .layer(crate::trace::call_layer())
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
