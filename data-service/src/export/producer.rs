//! The producer of one export: a task that reads Query pages and hands them to the stream
//! through a channel of one page. It asks DynamoDB for the next page only once the channel has
//! room, so it runs at most two pages ahead of what the stream has handed to gRPC, and it
//! stops as soon as the stream is gone (the channel closes, and the stream aborts it).

use std::time::Duration;

use common::tokens::{Principal, TokenError};
use tokio::{
    sync::mpsc::{Permit, Sender},
    time::Instant,
};

use super::Exports;
use crate::{credentials::BearerToken, error::DataError, store::Page, store::StoredItem};

/// How often a producer waiting for its reader checks that the session still holds.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why an export must stop at a given instant.
#[derive(Clone, Copy, Debug)]
pub enum Ending {
    /// The caller's deadline.
    Deadline,
    /// The access token's expiry: a longer export resumes with a fresh token.
    TokenExpiry,
}

/// One export's reading side.
pub struct Producer {
    /// The shared parts.
    pub exports: Exports,
    /// The caller.
    pub principal: Principal,
    /// The caller's token, for their credentials.
    pub token: BearerToken,
    /// The keys exported.
    pub prefix: String,
    /// When it must stop, and why.
    pub until: (Instant, Ending),
}

impl Producer {
    /// Reads every page after `after` into `pages`, until the range ends, the reader leaves,
    /// something fails, or `until` comes.
    pub async fn run(
        self,
        after: Option<String>,
        pages: Sender<Vec<StoredItem>>,
    ) -> Result<(), DataError> {
        let (at, ending) = self.until;
        match tokio::time::timeout_at(at, self.pages(after, &pages)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(match ending {
                Ending::Deadline => DataError::DeadlineExceeded,
                Ending::TokenExpiry => DataError::Unauthenticated(TokenError::Rejected),
            }),
        }
    }

    async fn pages(
        &self,
        mut after: Option<String>,
        pages: &Sender<Vec<StoredItem>>,
    ) -> Result<(), DataError> {
        loop {
            let Some(room) = self.room(pages).await? else {
                return Ok(()); // the reader is gone
            };
            self.exports.admit(&self.principal)?;
            let page = self.page(after.as_deref()).await?;
            if !page.items.is_empty() {
                room.send(page.items);
            }
            after = page.last_key;
            if after.is_none() {
                return Ok(());
            }
        }
    }

    /// Waits until the channel has room for a page (`None`: the reader is gone), checking
    /// meanwhile that the session has not been revoked.
    async fn room<'a>(
        &self,
        pages: &'a Sender<Vec<StoredItem>>,
    ) -> Result<Option<Permit<'a, Vec<StoredItem>>>, DataError> {
        loop {
            match tokio::time::timeout(RECHECK, pages.reserve()).await {
                Ok(room) => return Ok(room.ok()),
                Err(_) => self.exports.admit(&self.principal)?,
            }
        }
    }

    /// One page with the caller's client, within the per-page timeout.
    async fn page(&self, after: Option<&str>) -> Result<Page, DataError> {
        let exports = &self.exports;
        let owner = self.principal.user_id.as_str();
        let work = async {
            let client = (exports.clients)
                .client_for(&self.principal, &self.token)
                .await?;
            (exports.store)
                .export_page(client.dynamodb.reads(), owner, &self.prefix, after)
                .await
        };
        let timeout = exports.page_timeout;
        let result = tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(DataError::Unavailable(format!(
                    "no export page within {timeout:?}"
                )))
            });
        if let Err(DataError::CredentialsExpired(_)) = &result {
            exports.clients.forget(owner).await;
        }
        result
    }
}
