//! The layer that refuses calls without a client certificate when the server requires one,
//! leaving the health service open so the container's `health-check` still works.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// The path prefix of the health service, open to clients without a certificate.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

/// Refuses every call that came without a verified client certificate, except health checks,
/// when required (the auth-service's `--tls-client-ca`); otherwise passes everything.
#[derive(Clone, Copy, Debug)]
pub struct ClientCertLayer {
    required: bool,
}

impl ClientCertLayer {
    /// Refuses calls without a client certificate when `required`.
    pub(super) fn new(required: bool) -> Self {
        Self { required }
    }
}

impl<S> Layer<S> for ClientCertLayer {
    type Service = ClientCert<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientCert {
            inner,
            required: self.required,
        }
    }
}

/// The service [`ClientCertLayer`] builds.
#[derive(Clone, Debug)]
pub struct ClientCert<S> {
    inner: S,
    required: bool,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for ClientCert<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, BoxFuture<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let refused = self.required
            && !request.uri().path().starts_with(HEALTH_PATH)
            && request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs)
                .is_none_or(|certs| certs.is_empty());
        if refused {
            let response =
                tonic::Status::unauthenticated("this server requires a client certificate (mTLS)")
                    .into_http();
            futures::future::Either::Right(Box::pin(async move { Ok(response) }))
        } else {
            futures::future::Either::Left(self.inner.call(request))
        }
    }
}
