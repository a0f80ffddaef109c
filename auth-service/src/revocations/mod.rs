//! The revocation feed: every ended session is written to the revocations table and
//! announced to verifiers through WatchRevocations, so access tokens of ended sessions are
//! refused within seconds instead of living out their lifetime.
//!
//! DynamoDB is the source of truth; every auth replica polls it. DynamoDB Streams would be
//! the AWS-native feed, but dynalite (our local and test DynamoDB) has no Streams, and a
//! Streams consumer needs shard bookkeeping (or a Lambda) per replica. So revocations go to a
//! time-bucketed table (see [`table`]) that each replica's poller ([`poller`]) queries about
//! once a second: one strongly consistent Query per minute bucket the window spans, usually
//! one, two around a minute boundary — about 1.5 read request units a second per replica, all
//! the same whether anyone logs out or not. The price of polling is that latency: another
//! replica's revocation reaches this replica's watchers within one poll interval plus the
//! Query time; this replica's own revocations reach them at once.
//!
//! Every revocation is written to the table *before* the session item is marked revoked: if
//! the second write fails, the caller sees an error and retries, and the worst case is a
//! revocation announced for a session that lives on until then — never a revoked session
//! nobody hears about. (dynalite has no TransactWriteItems, so the two writes are ordered
//! rather than atomic.)
//!
//! Each replica keeps a [`hub::Hub`]: the revocations still relevant, deduplicated by
//! session, in a log that every WatchRevocations stream ([`watch`]) reads through one shared
//! [`snapshot`], resuming by positions in it ([`resume`]) rather than by anyone's clock.

use std::{sync::Arc, time::Duration};

use common::{clock::Clock, server::BackgroundTask};

use crate::error::AuthError;
use common::proto::auth::v1::WatchRevocationsRequest;
use tonic::Status;
use watch::{WatchStream, Watchers};

pub mod hub;
mod pace;
pub mod poller;
pub mod resume;
mod settings;
pub mod snapshot;
pub mod table;
pub mod watch;

pub use hub::Hub;
pub use settings::{RevocationSettings, Timing};
pub use table::RevocationTable;

/// Added to the access-token lifetime to get a revocation's `not_after`: covers a token
/// signed moments after the revocation by a racing Login or Refresh (its session write
/// committed first), and clock skew between the replica that signed and the verifiers.
pub const NOT_AFTER_SLACK: Duration = Duration::from_secs(60);

/// An ended session, as stored and streamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The session id (`sid` claim).
    pub session_id: String,
    /// The user the session belongs to: where its item lives in the sessions table. `None`
    /// for items written before it was recorded.
    pub user_id: Option<String>,
    /// When it ended, Unix milliseconds.
    pub revoked_at_ms: i64,
    /// Unix seconds after which no access token of the session is valid.
    pub not_after: i64,
}

/// The feed of one replica: the table, the hub and the timing. Clones share the hub.
#[derive(Clone, Debug)]
pub struct Revocations {
    table: RevocationTable,
    hub: Arc<Hub>,
    timing: Timing,
    watchers: Watchers,
    /// How long after its revocation a session may still hold a valid access token.
    relevance: Duration,
}

impl Revocations {
    /// A feed over `table`, for access tokens living `access_lifetime`, serving at most
    /// `max_watchers` streams; time read from `clock`.
    pub fn new(
        table: RevocationTable,
        clock: Arc<dyn Clock>,
        timing: Timing,
        access_lifetime: Duration,
        max_watchers: usize,
    ) -> Self {
        Self {
            table,
            hub: Arc::new(Hub::new(clock, timing.freshness())),
            timing,
            watchers: Watchers::new(max_watchers),
            relevance: access_lifetime + NOT_AFTER_SLACK,
        }
    }

    /// The replica's hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The feed's intervals.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Opens a WatchRevocations stream for `request`.
    pub async fn watch(&self, request: WatchRevocationsRequest) -> Result<WatchStream, Status> {
        let start = resume::Start::from_request(request.since, &request.resume_token)?;
        watch::open(Arc::clone(&self.hub), self.timing, &self.watchers, start).await
    }

    /// The table's name, for the health probe.
    pub fn table_name(&self) -> &str {
        self.table.name()
    }

    /// Announces that `session_id` of `user_id` ends now: written to the table (every replica's poller
    /// finds it), then to this replica's watchers at once. Call it *before* marking the
    /// session revoked; an error means nothing may be assumed announced, so do not end the
    /// session either (the caller retries). Idempotent.
    pub async fn announce(&self, user_id: &str, session_id: &str) -> Result<(), AuthError> {
        let revoked_at_ms = self.hub.now_ms();
        let relevance = i64::try_from(self.relevance.as_secs()).unwrap_or(i64::MAX);
        let revocation = Revocation {
            session_id: session_id.to_owned(),
            user_id: Some(user_id.to_owned()),
            revoked_at_ms,
            // Rounded up: an access token's `exp` is whole seconds.
            not_after: revoked_at_ms.div_euclid(1000).saturating_add(1 + relevance),
        };
        self.table.put(&revocation).await?;
        self.hub.add(revocation);
        Ok(())
    }

    /// Starts the replica's poller; it stops when the returned task is dropped.
    pub fn spawn_poller(&self) -> BackgroundTask {
        poller::spawn(
            self.table.clone(),
            Arc::clone(&self.hub),
            self.timing,
            self.relevance,
        )
    }
}
