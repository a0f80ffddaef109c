//! Who is calling: the end user (for throttling and the audit log) and, on bearer calls, the
//! signed-in caller whose session must still be live.

use tonic::Request;

use super::AuthApi;
use crate::{accounts::SignedIn, end_user::ClientInfo, error::AuthError};
use common::tokens::bearer_token;

impl AuthApi {
    /// The end user of a call that costs a password hash, once the limiter lets it through.
    pub(super) fn admit<T>(&self, request: &Request<T>) -> Result<ClientInfo, AuthError> {
        let client = self.client(request);
        self.limiter.check(&client)?;
        Ok(client)
    }

    /// The end user of a call, for the audit log.
    pub(super) fn client<T>(&self, request: &Request<T>) -> ClientInfo {
        ClientInfo::of(request, &self.trusted_proxies)
    }

    /// The caller, from the bearer access token, whose session must still be live: the one
    /// check of every bearer call. Recorded on the request span.
    pub(super) async fn signed_in<T>(&self, request: &Request<T>) -> Result<SignedIn, AuthError> {
        let token = bearer_token(request.metadata())?;
        let caller = self.accounts.signed_in(token).await?;
        record_user(&caller.principal.user_id);
        Ok(caller)
    }

    /// The caller of a bearer call on the user's own account, and its end user (for the
    /// audit log; these calls are not throttled by address).
    pub(super) async fn caller<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(SignedIn, ClientInfo), AuthError> {
        let caller = self.signed_in(request).await?;
        Ok((caller, ClientInfo::of(request, &self.trusted_proxies)))
    }
}

/// Records the caller's user id on the request span.
pub(super) fn record_user(user_id: &str) {
    tracing::Span::current().record("user_id", user_id);
}
