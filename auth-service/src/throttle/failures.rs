//! A Refresh or Logout call's token from its address's failures budget: taken before the
//! call does any work, so however many calls of one address run at once, no more than the
//! budget allows reach DynamoDB; given back when the call succeeds (or fails for a reason of
//! ours), so honest calls cost nothing in the end. A call dropped before it ended (its client
//! cancelled it, its deadline passed) keeps its token: its read may well have been made, and
//! cancelling must not be a way around the budget.

use std::{net::IpAddr, sync::Arc};

use super::{
    Limiter,
    buckets::{Buckets, Budget},
};
use crate::error::AuthError;

/// The token a Refresh or Logout call holds while it runs: kept as the charge of a failure
/// unless [`FailureCharge::settle`] finds the call succeeded.
#[must_use = "dropping the charge counts the call as a failure"]
pub struct FailureCharge {
    /// The budget and bucket the token came from; `None` when nothing is throttled.
    held: Option<(Arc<Limiter>, IpAddr)>,
}

impl FailureCharge {
    /// A charge that holds nothing (throttling off, or no address known).
    pub(super) fn none() -> Self {
        Self { held: None }
    }

    /// A token taken from `addr`'s failures bucket in `limiter`.
    pub(super) fn held(limiter: Arc<Limiter>, addr: IpAddr) -> Self {
        Self {
            held: Some((limiter, addr)),
        }
    }

    /// Settles the call by its result: the token is kept when the client's refresh token (or
    /// recovery token) was refused (UNAUTHENTICATED: forged, unknown, reused, expired or
    /// malformed), and given back when the
    /// call succeeded or failed for a reason of ours (a dependency down, a race lost).
    pub fn settle<T>(mut self, result: &Result<T, AuthError>) {
        if matches!(
            result,
            Err(AuthError::InvalidRefreshToken | AuthError::InvalidRecoveryToken)
        ) {
            return;
        }
        if let Some((limiter, addr)) = self.held.take()
            && let Some(interval) = limiter.failure_interval
        {
            Buckets::new(limiter.cache.clone(), Budget::Failures).give_back(addr, interval);
        }
    }
}

impl std::fmt::Debug for FailureCharge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureCharge")
            .field("addr", &self.held.as_ref().map(|(_, addr)| addr))
            .finish()
    }
}
