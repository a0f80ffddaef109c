//! Authentication of every DataService call: [`AuthInterceptor`] verifies the bearer token
//! and puts the [`Principal`] (and the token, for GetCredentials) into the request
//! extensions; handlers take the caller from there and nowhere else.
//!
//! A tonic interceptor is synchronous, so the one step that may need the network — fetching
//! keys when a token names a kid we have not seen yet (a key rotation) — runs just before it,
//! in [`KeyRefreshService`]. That service looks the token up in the cache of verdicts anyway
//! (a cached token needs no refresh), so it hands a hit on to the interceptor in the request's
//! extensions ([`CachedVerdict`]), and a call costs one cache lookup, not two.

use std::{
    convert::Infallible,
    sync::Arc,
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
    pub fn admit(&self, token: &str) -> Result<Arc<Principal>, DataError> {
        self.admit_verdict(token, None)
    }

    /// [`AuthInterceptor::admit`], with the verdict already found in the cache for this very
    /// token, if any.
    fn admit_verdict(
        &self,
        token: &str,
        cached: Option<Arc<Principal>>,
    ) -> Result<Arc<Principal>, DataError> {
        let principal = match cached {
            Some(principal) => {
                self.metrics.token_cache_hits.increment();
                principal
            }
            None => self.authenticate(token)?,
        };
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
    pub fn authenticate(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
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
                let principal = Arc::new(principal);
                let token = verdicts.remember(token, Arc::clone(&principal), keys.generation);
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
        let cached = request.extensions_mut().remove::<CachedVerdict>();
        let token = tokens::bearer_token(request.metadata()).map_err(DataError::from)?;
        let header = request.metadata().get("authorization");
        let cached =
            cached.and_then(|verdict| verdict.for_header(header.and_then(|h| h.to_str().ok())));
        let principal = self.admit_verdict(token, cached)?;
        tracing::Span::current().record("user_id", principal.user_id.as_str());
        let token = BearerToken(SecretString::from(token));
        request.extensions_mut().insert(token);
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// A token's verdict found in the cache by [`KeyRefreshService`], for the interceptor. Only
/// this module makes one, and a client cannot put anything into a request's extensions.
#[derive(Clone, Debug)]
struct CachedVerdict {
    /// The `authorization` header whose token it was found for (a shared handle, not a copy).
    header: http::HeaderValue,
    principal: Arc<Principal>,
}

impl CachedVerdict {
    /// The principal, if the verdict is for the request's `authorization` header as the
    /// interceptor reads it.
    fn for_header(self, header: Option<&str>) -> Option<Arc<Principal>> {
        let same = header.is_some_and(|header| self.header.as_bytes() == header.as_bytes());
        same.then_some(self.principal)
    }
}

/// What [`KeyRefreshService`] learned of a request's token.
enum Seen {
    /// Verified before: the verdict, for the interceptor.
    Cached(CachedVerdict),
    /// Not verified before, and signed with a key of this kid that we do not know.
    UnknownKid(String),
    /// Anything else: for the interceptor to judge.
    Other,
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

    /// The cached verdict on the request's token, or the kid of its token when it is one we
    /// do not know, so a refresh may help.
    fn inspect<B>(&self, request: &http::Request<B>) -> Seen {
        let Some(header) = request.headers().get("authorization") else {
            return Seen::Other;
        };
        let Some((scheme, token)) = header.to_str().ok().and_then(|v| v.split_once(' ')) else {
            return Seen::Other;
        };
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Seen::Other;
        }
        if let Some(principal) = self.keys.tokens().verified(token) {
            let header = header.clone();
            return Seen::Cached(CachedVerdict { header, principal });
        }
        match tokens::parse_untrusted(token) {
            Ok((_, kid)) if !self.keys.knows(&kid) => Seen::UnknownKid(kid),
            _ => Seen::Other,
        }
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let kid = match self.inspect(&request) {
            Seen::UnknownKid(kid) => kid,
            Seen::Cached(verdict) => {
                request.extensions_mut().insert(verdict);
                return Either::Left(self.inner.call(request));
            }
            Seen::Other => return Either::Left(self.inner.call(request)),
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

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn verdict(header: &'static str) -> CachedVerdict {
        let principal = Principal {
            user_id: "alice".into(),
            session_id: "s1".into(),
            token_id: "t1".into(),
            expires_at: OffsetDateTime::now_utc(),
        };
        CachedVerdict {
            header: http::HeaderValue::from_static(header),
            principal: Arc::new(principal),
        }
    }

    #[test]
    fn a_cached_verdict_only_answers_for_the_header_it_was_found_for() {
        let found = verdict("Bearer v4.public.token").for_header(Some("Bearer v4.public.token"));
        assert_eq!(found.map(|p| p.user_id.clone()), Some("alice".to_owned()));
        let other = verdict("Bearer v4.public.token").for_header(Some("Bearer v4.public.other"));
        assert!(other.is_none());
        assert!(verdict("Bearer v4.public.token").for_header(None).is_none());
    }
}
