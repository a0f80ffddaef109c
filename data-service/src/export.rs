//! ExportItems: every live item of a prefix of the caller's partition, streamed in key order,
//! with flow control and bounded memory whatever the partition's size.
//!
//! A [`producer`] task reads Query pages (at most [`EXPORT_PAGE_ITEMS`] items, and at most
//! 1 MB, DynamoDB's own limit) and hands them to the response [`stream`] through a channel of
//! one page. It issues the next Query only once the channel has room, and hyper polls the
//! stream only when the client's HTTP/2 window has room, so a slow reader makes the server
//! wait. **Memory per export** is at most two pages (the one being sent and the one in the
//! channel, or the one being read: ≤ 2 × 1 MB of items) plus one encoded gRPC chunk; what
//! the client has not read yet beyond that lies in its HTTP/2 window. At most
//! [`MAX_EXPORTS_PER_USER`] exports per user and [`MAX_EXPORTS`] per process run at once
//! ([`slots`]), so the whole is bounded too.
//!
//! An export ends:
//! - when the range is read: the stream ends with OK;
//! - when the client cancels or goes away: the stream is dropped, which aborts the producer
//!   at once, in the middle of a Query if need be, so no further Query is sent;
//! - when the caller's session is revoked (the revocation feed's set, checked before every
//!   Query, at every page handed to gRPC, and every second while the producer waits for a slow
//!   reader) or the feed goes stale: UNAUTHENTICATED, or UNAVAILABLE;
//! - when the access token expires (UNAUTHENTICATED) or the call's `grpc-timeout` passes
//!   (DEADLINE_EXCEEDED): a long export resumes with a fresh token. Without a `grpc-timeout`
//!   it has no deadline of its own; each Query has `--request-timeout-ms`;
//! - at the first page that fails, as QueryItems would: DynamoDB unavailable, or an item that
//!   cannot be read (DATA_LOSS naming its key; resume with that key as `start_key` to skip it).
//!
//! An error goes out ahead of the items still buffered. Resuming: `start_key` is an exclusive
//! start inside the prefix, the key of the last item received.

mod producer;
mod slots;
mod stream;

use std::time::Duration;

use common::{
    proto::data::v1::{ExportItemsRequest, Item},
    status::Violation,
    tokens::Principal,
};
use time::OffsetDateTime;
use tokio::{sync::mpsc, time::Instant};
use tonic::metadata::MetadataMap;
use tracing::Instrument;

use crate::{
    convert::{self, MAX_KEY_BYTES},
    credentials::{BearerToken, UserClients},
    error::DataError,
    revocations::Revocations,
    store::{ItemStore, StoredItem},
};
use producer::{Ending, Producer};
pub use slots::{Slot, Slots};
pub use stream::ExportStream;

pub use crate::store::EXPORT_PAGE_ITEMS;

/// Exports one user may run at once.
pub const MAX_EXPORTS_PER_USER: usize = 2;

/// Exports one process runs at once: with two pages of at most 1 MB each, ≈ 128 MB at worst.
pub const MAX_EXPORTS: usize = 64;

/// What every export shares. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Exports {
    store: ItemStore,
    clients: UserClients,
    revocations: Revocations,
    slots: Slots,
    page_timeout: Duration,
}

impl Exports {
    /// Exports reading `store` with the clients of `clients`, each page within
    /// `page_timeout`, ended by the revocations in `revocations`.
    pub fn new(
        store: ItemStore,
        clients: UserClients,
        revocations: Revocations,
        page_timeout: Duration,
    ) -> Self {
        Self {
            store,
            clients,
            revocations,
            slots: Slots::new(MAX_EXPORTS_PER_USER, MAX_EXPORTS),
            page_timeout,
        }
    }

    /// Whether `principal`'s session may still read.
    fn admit(&self, principal: &Principal) -> Result<(), DataError> {
        self.revocations.admit(principal)
    }

    /// Validates `request` and starts its export for `principal`, within `deadline` (the
    /// caller's `grpc-timeout`, if any), sending items converted by `convert`.
    pub fn start(
        &self,
        principal: Principal,
        token: BearerToken,
        request: ExportItemsRequest,
        deadline: Option<Duration>,
        convert: fn(StoredItem) -> Item,
    ) -> Result<ExportStream, DataError> {
        let after = validate(&request)?;
        let slot = self.slots.take(&principal.user_id)?;
        let (sender, pages) = mpsc::channel(1);
        let producer = Producer {
            exports: self.clone(),
            until: until(&principal, deadline),
            principal: principal.clone(),
            token,
            prefix: request.key_prefix,
        };
        let task = producer.run(after, sender).in_current_span();
        Ok(ExportStream {
            pages,
            page: Vec::new().into_iter(),
            producer: Some(tokio::spawn(task)),
            outcome: None,
            principal,
            exports: self.clone(),
            convert,
            _slot: slot,
            done: false,
        })
    }
}

/// The caller's `grpc-timeout`, if it sent one: unlike a unary call's budget, an export has no
/// deadline of the service's own.
pub fn deadline(metadata: &MetadataMap) -> Option<Duration> {
    metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(common::deadline::parse_grpc_timeout)
}

/// When the export must stop: the earlier of the deadline and the token's expiry.
fn until(principal: &Principal, deadline: Option<Duration>) -> (Instant, Ending) {
    let now = Instant::now();
    let token_left =
        Duration::try_from(principal.expires_at - OffsetDateTime::now_utc()).unwrap_or_default();
    match deadline {
        Some(deadline) if deadline < token_left => (now + deadline, Ending::Deadline),
        _ => (now + token_left, Ending::TokenExpiry),
    }
}

/// Checks the request; the key to resume after, if any.
fn validate(request: &ExportItemsRequest) -> Result<Option<String>, DataError> {
    let mut violations = Vec::new();
    if request.key_prefix.len() > MAX_KEY_BYTES {
        violations.push(Violation::new(
            "key_prefix",
            format!("at most {MAX_KEY_BYTES} bytes"),
        ));
    }
    let start = &request.start_key;
    if !start.is_empty() {
        if let Err(violation) = convert::validate_key("start_key", start) {
            violations.push(violation);
        } else if !start.starts_with(&request.key_prefix) {
            violations.push(Violation::new(
                "start_key",
                "must start with key_prefix: an export resumes after a key of its own range",
            ));
        }
    }
    if violations.is_empty() {
        Ok((!start.is_empty()).then(|| start.clone()))
    } else {
        Err(DataError::InvalidArgument(violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(request: ExportItemsRequest) -> Vec<String> {
        match validate(&request) {
            Err(DataError::InvalidArgument(violations)) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_resume_key_must_lie_in_the_prefix() {
        let request = |prefix: &str, start: &str| ExportItemsRequest {
            key_prefix: prefix.into(),
            start_key: start.into(),
        };
        assert_eq!(validate(&request("", "")).unwrap(), None);
        assert_eq!(
            validate(&request("notes/", "notes/7")).unwrap().as_deref(),
            Some("notes/7")
        );
        assert_eq!(fields(request("notes/", "photos/1")), ["start_key"]);
        assert_eq!(fields(request("notes/", "notes")), ["start_key"]);
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(fields(request(&long, &long)), ["key_prefix", "start_key"]);
    }
}
