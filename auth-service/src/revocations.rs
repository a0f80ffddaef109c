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
//! Every revocation is written to the table *before* the session item is marked revoked, and
//! the first write is the truth: from then on the session has ended. (dynalite has no
//! TransactWriteItems, so the two writes are ordered rather than atomic.) The flows that end
//! sessions run detached from their callers (`family`), so a caller going away cannot stop
//! one between the writes; what can — a replica killed there, a mark that fails — leaves a
//! session in the log whose item says it lives. Readers therefore check the log as well
//! ([`Revocations::is_revoked`]: the hub, and the repairs still pending), and a repair
//! ([`repair`], run by `family::repair`) marks the item: each replica queues every revocation
//! new to its hub (one it did not make), its own whose mark failed, and sessions readers found
//! unmarked, and marks them once the revocation is older than [`repair::repair_delay`],
//! retrying until it succeeds. A revocation made here is in this replica's hub at once; one
//! made elsewhere, within a poll interval plus a Query.
//!
//! Each replica keeps a [`hub::Hub`]: the revocations still relevant, deduplicated by
//! session, in a log that every WatchRevocations stream ([`watch`]) reads through one shared
//! [`snapshot`], resuming by positions in it ([`resume`]) rather than by anyone's clock.

use std::{sync::Arc, time::Duration};

use common::{clock::Clock, metrics::LabeledCounter, server::BackgroundTask};

use crate::{error::AuthError, sessions::RevokeReason};
use common::proto::auth::v1::WatchRevocationsRequest;
use tonic::Status;
use watch::{WatchStream, Watchers};

pub mod hub;
mod pace;
pub mod poller;
pub mod repair;
pub mod resume;
mod settings;
pub mod snapshot;
pub mod table;
pub mod watch;

pub use hub::Hub;
pub use repair::{Repair, Repairs};
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

/// The feed of one replica: the table, the hub, the repairs and the timing. Clones share the
/// hub and the repairs.
#[derive(Clone, Debug)]
pub struct Revocations {
    table: RevocationTable,
    hub: Arc<Hub>,
    repairs: Arc<Repairs>,
    timing: Timing,
    watchers: Watchers,
    /// How long after its revocation a session may still hold a valid access token.
    relevance: Duration,
}

impl Revocations {
    /// A feed over `table`, for access tokens living `access_lifetime`, serving at most
    /// `max_watchers` streams; time read from `clock`. Repairs fall due
    /// [`repair::repair_delay`] after their revocation (for AWS operations lasting up to
    /// `aws_operation_timeout`) and are counted in `repair_outcomes`.
    pub fn new(
        table: RevocationTable,
        clock: Arc<dyn Clock>,
        timing: Timing,
        access_lifetime: Duration,
        aws_operation_timeout: Duration,
        repair_outcomes: LabeledCounter,
        max_watchers: usize,
    ) -> Self {
        let relevance = access_lifetime + NOT_AFTER_SLACK;
        let delay = repair::repair_delay(timing.lookback, aws_operation_timeout, relevance);
        Self {
            table,
            hub: Arc::new(Hub::new(Arc::clone(&clock), timing.freshness())),
            repairs: Arc::new(Repairs::new(
                repair::REPAIR_QUEUE_CAPACITY,
                delay,
                clock,
                repair_outcomes,
            )),
            timing,
            watchers: Watchers::new(max_watchers),
            relevance,
        }
    }

    /// The replica's hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The replica's repair queue.
    pub fn repairs(&self) -> &Arc<Repairs> {
        &self.repairs
    }

    /// True if `session_id` has ended by the revocation log as this replica knows it: in the
    /// hub (its own revocations at once, other replicas' within a poll interval and a Query),
    /// or waiting for its repair (which outlives the hub's entry). Whatever the sessions
    /// table says: the log is the truth.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.hub.is_revoked(session_id) || self.repairs.is_pending(session_id)
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

    /// Announces that `session_id` of `user_id` ends now, for `reason`: written to the table
    /// (every replica's poller finds it), then to this replica's watchers at once. Call it
    /// *before* marking the session revoked. Once it returns, the session has ended: every
    /// reader refuses it, and the mark is only the table catching up (a repair makes it if
    /// the caller cannot). An error means the write may or may not have landed: do not mark
    /// the session (if it landed, the pollers find it and a repair marks it). Idempotent.
    pub async fn announce(
        &self,
        user_id: &str,
        session_id: &str,
        reason: RevokeReason,
    ) -> Result<Revocation, AuthError> {
        let revoked_at_ms = self.hub.now_ms();
        let relevance = i64::try_from(self.relevance.as_secs()).unwrap_or(i64::MAX);
        let revocation = Revocation {
            session_id: session_id.to_owned(),
            user_id: Some(user_id.to_owned()),
            revoked_at_ms,
            // Rounded up: an access token's `exp` is whole seconds.
            not_after: revoked_at_ms.div_euclid(1000).saturating_add(1 + relevance),
        };
        self.table.put(&revocation, reason).await?;
        self.hub.add(revocation.clone());
        Ok(revocation)
    }

    /// Starts the replica's poller; it stops when the returned task is dropped.
    pub fn spawn_poller(&self) -> BackgroundTask {
        poller::spawn(
            self.table.clone(),
            Arc::clone(&self.hub),
            Arc::clone(&self.repairs),
            self.timing,
            self.relevance,
        )
    }
}
