//! What a watcher does with an ended session besides refusing it: evict its tokens and drop
//! its user's cached DynamoDB client.

use futures::future::BoxFuture;

use crate::{credentials::UserClients, keys::KeyStore, revocations::Ended};

/// What an ended session held besides its revocation: released by the watcher.
pub trait Release: Send + Sync + 'static {
    /// Releases what `ended` names.
    fn release(&self, ended: Ended) -> BoxFuture<'_, ()>;
}

/// Evicts the session's tokens from the token cache and drops the cached DynamoDB client of
/// the user it names ([`Ended::client_of`]).
#[derive(Clone, Debug)]
pub struct Cleanup {
    /// Holds the token cache.
    pub keys: KeyStore,
    /// The per-user clients.
    pub clients: UserClients,
}

impl Release for Cleanup {
    fn release(&self, ended: Ended) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for token in &ended.tokens {
                self.keys.tokens().forget(token);
            }
            if let Some(user) = ended.client_of {
                self.clients.release(&user).await;
            }
        })
    }
}
