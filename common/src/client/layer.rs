//! A tower layer that sends a [`Session`]'s bearer token with every gRPC call.

use std::{
    error::Error,
    fmt,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{HeaderValue, header::AUTHORIZATION};
use secrecy::ExposeSecret;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use super::Session;

type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Wraps a channel so every call carries `authorization: Bearer <access token>` of a session:
/// `DataServiceClient::new(ServiceBuilder::new().layer(session.layer()).service(channel))`.
#[derive(Clone, Debug)]
pub struct BearerLayer {
    session: Session,
}

impl BearerLayer {
    /// A layer for `session`'s token.
    pub fn new(session: Session) -> Self {
        Self { session }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = BearerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerService {
            inner,
            session: self.session.clone(),
        }
    }
}

/// The service [`BearerLayer`] makes. A call whose token cannot be had (the session ended, or
/// the token expired and Refresh failed) fails with that status without being sent.
#[derive(Clone)]
pub struct BearerService<S> {
    inner: S,
    session: Session,
}

impl<S: fmt::Debug> fmt::Debug for BearerService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerService")
            .field("inner", &self.inner)
            .field("session", &self.session)
            .finish()
    }
}

impl<S, B> Service<http::Request<Body>> for BearerService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone is not ready; the instance that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let session = self.session.clone();
        Box::pin(async move {
            let token = session.access_token().await?;
            let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
                .map_err(|_| Status::internal("the access token is not a valid header value"))?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
            inner.call(request).await.map_err(Into::into)
        })
    }
}
