//! One task per auth-service address holding a `WatchRevocations` stream open: it applies each
//! batch, marks the feed heard once the stream's replay completed (as of the replica's last
//! read of the table, which each message states as `view_age`), and on an error, an end or a
//! silence longer than [`WatcherConfig::idle_timeout`] reconnects with exponential backoff
//! and jitter. It resumes with the `resume_token` of the last message applied: a position in
//! the replica's own log, so no clock decides what is replayed (another replica, or a
//! restarted one, replays everything). `since`, the latest `revoked_at` applied, goes along
//! for auth-services older than resume tokens; duplicates are harmless.

mod feed;
mod release;

use std::{sync::Arc, time::Duration};

use common::{
    proto::auth::v1::{WatchRevocationsRequest, WatchRevocationsResponse},
    server::BackgroundTask,
};
use futures::StreamExt;
use prost_types::Timestamp;
use tonic::{Code, Status};

pub use self::{
    feed::{Batches, Feed},
    release::{Cleanup, Release},
};
use super::Revocations;
use crate::backoff::Backoff;

/// Timing of a watcher.
#[derive(Clone, Copy, Debug)]
pub struct WatcherConfig {
    /// The first reconnect delay; it doubles on every failed attempt.
    pub first_retry: Duration,
    /// The longest reconnect delay.
    pub max_retry: Duration,
    /// A stream silent this long is given up (heartbeats come every ~2 s): the address may
    /// lead to a healthier replica on the next connection.
    pub idle_timeout: Duration,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(6),
        }
    }
}

/// The watcher of one auth-service address.
pub struct Watcher<F> {
    address: String,
    feed: F,
    revocations: Revocations,
    release: Arc<dyn Release>,
    config: WatcherConfig,
    /// The latest `revoked_at` applied from this address (for auth-services without resume
    /// tokens).
    since: Option<Timestamp>,
    /// The `resume_token` of the last message applied from this address.
    resume_token: String,
}

/// How one stream ended.
struct Outcome {
    replayed: bool,
    cause: String,
    unimplemented: bool,
}

impl Outcome {
    /// Ended by the server's (or the connection's) `status`.
    fn failed(replayed: bool, status: &Status) -> Self {
        Self {
            replayed,
            cause: format!("{} {}", status.code(), status.message()),
            unimplemented: status.code() == Code::Unimplemented,
        }
    }

    /// Ended without an error: closed, or silent too long.
    fn quiet(replayed: bool, cause: String) -> Self {
        Self {
            replayed,
            cause,
            unimplemented: false,
        }
    }
}

impl<F: Feed> Watcher<F> {
    /// A watcher of `feed` (at `address`, for logs) filling `revocations`.
    pub fn new(
        address: impl Into<String>,
        feed: F,
        revocations: Revocations,
        release: Arc<dyn Release>,
        config: WatcherConfig,
    ) -> Self {
        Self {
            address: address.into(),
            feed,
            revocations,
            release,
            config,
            since: None,
            resume_token: String::new(),
        }
    }

    /// Runs until the returned task is dropped.
    pub fn spawn(self) -> BackgroundTask {
        tokio::spawn(self.run()).into()
    }

    async fn run(mut self) {
        let mut backoff = Backoff::new(self.config.first_retry, self.config.max_retry);
        let mut failing = false;
        loop {
            let outcome = self.watch_once(&mut failing).await;
            let address = self.address.as_str();
            let cause = outcome.cause.as_str();
            if outcome.replayed {
                backoff.reset();
                tracing::info!(address, cause, "revocation stream ended; reconnecting");
            } else if !failing {
                failing = true;
                if outcome.unimplemented {
                    tracing::error!(
                        address,
                        "this auth-service has no revocation feed (WatchRevocations is \
                         UNIMPLEMENTED): tokens are not trusted until it has one; upgrade it, \
                         or run with --revocation-max-staleness 0"
                    );
                } else {
                    tracing::warn!(
                        address,
                        cause,
                        "revocation feed unreachable; retrying with backoff"
                    );
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Opens one stream and applies it until it fails, ends or falls silent.
    async fn watch_once(&mut self, failing: &mut bool) -> Outcome {
        let request = WatchRevocationsRequest {
            since: self.since,
            resume_token: self.resume_token.clone(),
        };
        match self.feed.watch(request).await {
            Ok(batches) => self.follow(batches, failing).await,
            Err(status) => {
                if status.code() == Code::InvalidArgument && !self.resume_token.is_empty() {
                    // Not a position this auth-service knows: start over with a full replay.
                    self.resume_token.clear();
                    self.since = None;
                }
                Outcome::failed(false, &status)
            }
        }
    }

    /// Applies a stream's messages until it fails, ends or falls silent; the feed counts as
    /// heard from once the stream's replay completed.
    async fn follow(&mut self, mut batches: Batches, failing: &mut bool) -> Outcome {
        let mut replayed = false;
        loop {
            let next = tokio::time::timeout(self.config.idle_timeout, batches.next()).await;
            let batch = match next {
                Err(_) => {
                    let after = self.config.idle_timeout;
                    return Outcome::quiet(replayed, format!("no message for {after:?}"));
                }
                Ok(None) => return Outcome::quiet(replayed, "the server ended the stream".into()),
                Ok(Some(Err(status))) => return Outcome::failed(replayed, &status),
                Ok(Some(Ok(batch))) => batch,
            };
            let completes = batch.replay_complete;
            let view_age = view_age(batch.view_age);
            self.apply(batch).await;
            if completes && !replayed {
                replayed = true;
                *failing = false;
                tracing::info!(address = self.address, "revocation replay complete");
            }
            if replayed {
                self.revocations.freshness().heard(view_age);
            }
        }
    }

    /// Applies one batch's revocations (not its freshness), then takes its resume token.
    async fn apply(&mut self, batch: WatchRevocationsResponse) {
        let WatchRevocationsResponse {
            revocations,
            resume_token,
            ..
        } = batch;
        for revocation in revocations {
            if revocation.session_id.is_empty() {
                tracing::warn!(
                    address = self.address,
                    "a revocation without a session id: ignored"
                );
                continue;
            }
            let not_after = revocation
                .not_after
                .as_ref()
                .and_then(common::timestamp::to_time)
                .unwrap_or_else(|| self.revocations.longest_keep());
            let ended =
                self.revocations
                    .revoke(&revocation.user_id, &revocation.session_id, not_after);
            self.release.release(ended).await;
            if let Some(at) = revocation.revoked_at
                && self.since.is_none_or(|since| later(&at, &since))
            {
                self.since = Some(at);
            }
        }
        if !resume_token.is_empty() {
            self.resume_token = resume_token;
        }
        tracing::debug!(address = self.address, "revocation batch applied");
    }
}

/// How old the sending replica's view of the table is; zero from auth-services that do not
/// say (older than the field), and for a negative one.
fn view_age(age: Option<prost_types::Duration>) -> Duration {
    age.and_then(|age| Duration::try_from(age).ok())
        .unwrap_or_default()
}

fn later(a: &Timestamp, b: &Timestamp) -> bool {
    (a.seconds, a.nanos) > (b.seconds, b.nanos)
}

#[cfg(test)]
mod tests;
