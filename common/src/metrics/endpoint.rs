//! The HTTP endpoint that serves the registry as Prometheus text: `GET /metrics` on its own
//! listener, nothing else.

use std::{convert::Infallible, sync::Arc};

use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinSet};

use super::encode;

/// The content type of [`encode`]'s text.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` from `registry` on `listener` (HTTP/1.1) until the task is aborted;
/// open scrapes end with it.
pub async fn serve_metrics(listener: TcpListener, registry: Arc<Registry>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics listener cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let registry = Arc::clone(&registry);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%error, "metrics connection ended");
            }
        });
    }
}

fn respond<B>(request: &http::Request<B>, registry: &Registry) -> http::Response<String> {
    let reply = |status: http::StatusCode, content_type: &str, body: String| {
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are at /metrics\n".to_owned(),
        );
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return reply(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".to_owned(),
        );
    }
    match encode(registry) {
        Ok(text) => reply(http::StatusCode::OK, CONTENT_TYPE, text),
        Err(error) => {
            tracing::error!(%error, "cannot encode the metrics");
            reply(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "cannot encode the metrics\n".to_owned(),
            )
        }
    }
}
