//! Authentication of every DataService call: [`AuthInterceptor`] verifies the bearer token
//! and puts the [`Principal`] (and the token, for GetCredentials) into the request
//! extensions; handlers take the caller from there and nowhere else.
//!
//! A tonic interceptor is synchronous, so the one step that may need the network — fetching
//! keys when a token names a kid we have not seen yet (a key rotation) — runs just before it,
//! in [`KeyRefreshService`].

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use common::tokens::{self, Principal, TokenError, TokenVerifier};
use futures::future::{BoxFuture, Either};
use secrecy::SecretString;
use tonic::{Request, Status, server::NamedService, service::Interceptor};
use tower::Service;

use crate::{
    credentials::BearerToken, error::DataError, keys::KeyStore, metrics::Metrics,
    revocations::Revocations,
};

/// Verifies access tokens (cached until expiry), refuses those of ended sessions, and attaches
/// the caller to the request.
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    verifier: TokenVerifier,
    keys: KeyStore,
    revocations: Revocations,
    metrics: std::sync::Arc<Metrics>,
}

impl AuthInterceptor {
    /// An interceptor accepting tokens of `verifier`'s issuer and audience, signed by `keys`,
    /// of sessions not in `revocations`.
    pub fn new(
        verifier: TokenVerifier,
        keys: KeyStore,
        revocations: Revocations,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            verifier,
            keys,
            revocations,
            metrics,
        }
    }

    /// The caller of a request's token, if it verifies, the revocation feed is current and
    /// its session has not ended. After the cached verification this costs one lookup in the
    /// in-memory revoked set; nothing leaves the process.
    pub fn admit(&self, token: &str) -> Result<Principal, DataError> {
        let principal = self.authenticate(token)?;
        if let Err(refusal) = self.revocations.admit(&principal) {
            let reason = match refusal {
                DataError::RevocationsStale => "stale",
                _ => "revoked",
            };
            self.metrics.token_refusals.increment(reason);
            return Err(refusal);
        }
        Ok(principal)
    }

    /// The principal of a token: from the cache of verdicts, or by a full check whose
    /// verdict is remembered (a refusal only briefly).
    pub fn authenticate(&self, token: &str) -> Result<Principal, TokenError> {
        let verdicts = self.keys.tokens();
        if let Some(principal) = verdicts.verified(token) {
            self.metrics.token_cache_hits.increment();
            return Ok(principal);
        }
        if verdicts.is_refused(token) {
            return Err(TokenError::Rejected);
        }
        let keys = self.keys.current();
        let verdict = self.verifier.verify(&keys.keys, token);
        let outcome = match &verdict {
            Ok(_) => "valid",
            Err(TokenError::Rejected | TokenError::Missing) => "rejected",
            Err(TokenError::Malformed) => "malformed",
            Err(TokenError::UnknownKey { .. }) => "unknown_key",
            Err(TokenError::TooLong) => "too_long",
        };
        self.metrics.token_verifications.increment(outcome);
        match verdict {
            Ok(principal) => {
                let token = verdicts.remember(token, principal.clone(), keys.generation);
                self.revocations.track(&principal, token);
                Ok(principal)
            }
            Err(TokenError::Rejected) => {
                verdicts.remember_refusal(token);
                Err(TokenError::Rejected)
            }
            Err(TokenError::TooLong) => {
                // Genuinely signed, yet longer-lived than --max-token-lifetime-secs allows: a
                // leaked signing key, or an auth-service whose lifetime was raised alone.
                tracing::warn!("a validly signed token lives longer than the maximum lifetime");
                verdicts.remember_refusal(token);
                Err(TokenError::TooLong)
            }
            Err(other) => Err(other),
        }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = tokens::bearer_token(request.metadata()).map_err(DataError::from)?;
        let principal = self.admit(token)?;
        tracing::Span::current().record("user_id", principal.user_id.as_str());
        let token = BearerToken(SecretString::from(token));
        request.extensions_mut().insert(token);
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// Wraps the DataService so that a token naming an unknown kid first triggers a
/// (rate-limited) key refresh; known kids and cached tokens pass straight through.
#[derive(Clone, Debug)]
pub struct KeyRefreshService<S> {
    inner: S,
    keys: KeyStore,
}

impl<S> KeyRefreshService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, keys: KeyStore) -> Self {
        Self { inner, keys }
    }

    /// The kid of the request's token when it is one we do not know, so a refresh may help.
    fn unknown_kid<B>(&self, request: &http::Request<B>) -> Option<String> {
        let value = request.headers().get("authorization")?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || self.keys.tokens().is_verified(token) {
            return None;
        }
        let (_, kid) = tokens::parse_untrusted(token).ok()?;
        (!self.keys.knows(&kid)).then_some(kid)
    }
}

impl<S, B> Service<http::Request<B>> for KeyRefreshService<S>
where
    S: Service<http::Request<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<S::Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(kid) = self.unknown_kid(&request) else {
            return Either::Left(self.inner.call(request));
        };
        // The readied service goes with the request; a fresh clone stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let keys = self.keys.clone();
        Either::Right(Box::pin(async move {
            keys.refresh_for_unknown(&kid).await;
            inner.call(request).await
        }))
    }
}

impl<S: NamedService> NamedService for KeyRefreshService<S> {
    const NAME: &'static str = S::NAME;
}
