//! One WatchRevocations stream: the replay, then new revocations and heartbeats, until the
//! client goes away (dropping the stream frees its subscription at once), falls behind, or
//! the server shuts down.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use common::{
    proto::{
        auth::v1::{Revocation as RevocationMessage, WatchRevocationsResponse},
        timestamp,
    },
    status::{self, Violation},
};
use futures::{StreamExt, stream::BoxStream};
use time::OffsetDateTime;
use tokio::{
    sync::{broadcast, watch},
    time::{Instant, Interval, MissedTickBehavior},
};
use tonic::{Code, Status};

use super::{Hub, Revocation, Timing, hub::Subscription};
use crate::error::AuthError;

/// Revocations per message, replayed or new: about 70 bytes each, so a message stays far
/// below gRPC's 4 MiB default limit.
pub const CHUNK: usize = 1000;
/// How long a watch opened before the replica's first load waits for it.
const LOAD_WAIT: Duration = Duration::from_secs(5);
/// The retry delay suggested when a stream cannot start or has to end.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// A stream of WatchRevocations messages.
pub type WatchStream = BoxStream<'static, Result<WatchRevocationsResponse, Status>>;

/// `since` in Unix milliseconds; INVALID_ARGUMENT for a timestamp no date can hold.
pub fn since_millis(since: Option<prost_types::Timestamp>) -> Result<Option<i64>, AuthError> {
    let Some(since) = since else {
        return Ok(None);
    };
    let nanos = i128::from(since.seconds) * 1_000_000_000 + i128::from(since.nanos);
    let at = (0..1_000_000_000)
        .contains(&since.nanos)
        .then(|| OffsetDateTime::from_unix_timestamp_nanos(nanos).ok())
        .flatten()
        .ok_or_else(|| {
            AuthError::InvalidArgument(vec![Violation::new("since", "must be a valid timestamp")])
        })?;
    Ok(Some(common::clock::unix_millis(at)))
}

/// Opens a stream replaying `hub`'s revocations from `timing.lookback` before `since_ms`
/// (all of them without it), then following it. Waits for the replica's first load, or
/// answers UNAVAILABLE if it takes too long.
pub async fn open(
    hub: Arc<Hub>,
    timing: Timing,
    since_ms: Option<i64>,
) -> Result<WatchStream, Status> {
    if tokio::time::timeout(LOAD_WAIT, hub.wait_loaded())
        .await
        .is_err()
    {
        tracing::info!("watch refused: revocations not loaded yet");
        return Err(status::retry_after(
            Code::Unavailable,
            "revocations are still loading; retry",
            RETRY_DELAY,
        ));
    }
    let lookback = i64::try_from(timing.lookback.as_millis()).unwrap_or(i64::MAX);
    let Subscription { replay, updates } =
        hub.subscribe(since_ms.map(|since| since.saturating_sub(lookback)));
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + timing.heartbeat, timing.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Watch {
        pending: replay_messages(replay),
        ending: None,
        closed: hub.closed(),
        updates,
        heartbeat,
        hub,
        done: false,
    };
    Ok(futures::stream::unfold(state, Watch::next).boxed())
}

/// The replay in messages of [`CHUNK`], the last one marked complete (an empty replay is one
/// empty message so marked).
fn replay_messages(replay: Vec<Revocation>) -> VecDeque<WatchRevocationsResponse> {
    let mut messages: VecDeque<_> = replay.chunks(CHUNK).map(message).collect();
    if messages.is_empty() {
        messages.push_back(WatchRevocationsResponse::default());
    }
    if let Some(last) = messages.back_mut() {
        last.replay_complete = true;
    }
    messages
}

fn message(revocations: &[Revocation]) -> WatchRevocationsResponse {
    WatchRevocationsResponse {
        revocations: revocations.iter().map(to_proto).collect(),
        replay_complete: false,
    }
}

fn to_proto(revocation: &Revocation) -> RevocationMessage {
    let at = |t: Option<OffsetDateTime>| t.map(timestamp);
    RevocationMessage {
        session_id: revocation.session_id.clone(),
        user_id: revocation.user_id.clone().unwrap_or_default(),
        revoked_at: at(common::clock::from_unix_millis(revocation.revoked_at_ms)),
        not_after: at(OffsetDateTime::from_unix_timestamp(revocation.not_after).ok()),
    }
}

struct Watch {
    hub: Arc<Hub>,
    /// Replay messages not sent yet.
    pending: VecDeque<WatchRevocationsResponse>,
    /// The status that ends the stream once what is pending went out.
    ending: Option<Status>,
    updates: broadcast::Receiver<Revocation>,
    heartbeat: Interval,
    closed: watch::Receiver<bool>,
    /// An error went out: the stream ends.
    done: bool,
}

type Step = Option<(Result<WatchRevocationsResponse, Status>, Watch)>;

impl Watch {
    async fn next(mut self) -> Step {
        if self.done {
            return None;
        }
        if let Some(message) = self.pending.pop_front() {
            return Some((Ok(message), self));
        }
        if let Some(status) = self.ending.take() {
            return Some((Err(status), self.finished()));
        }
        loop {
            let event = tokio::select! {
                biased;
                _ = self.closed.wait_for(|closed| *closed) => Event::Closed,
                received = self.updates.recv() => Event::Update(received),
                _ = self.heartbeat.tick() => Event::Heartbeat,
            };
            match event {
                Event::Closed => {
                    let status = ending("the server is shutting down");
                    return Some((Err(status), self.finished()));
                }
                Event::Update(Ok(first)) => {
                    let batch = self.batch(first);
                    self.heartbeat.reset();
                    return Some((Ok(message(&batch)), self));
                }
                Event::Update(Err(error)) => {
                    let status = lost(error);
                    return Some((Err(status), self.finished()));
                }
                Event::Heartbeat if self.hub.is_current() => {
                    return Some((Ok(WatchRevocationsResponse::default()), self));
                }
                // The replica's view is stale: stay silent so the watcher can tell.
                Event::Heartbeat => {}
            }
        }
    }

    /// `first` and whatever else is already waiting, up to a chunk. A lag found here ends the
    /// stream after this message.
    fn batch(&mut self, first: Revocation) -> Vec<Revocation> {
        let mut batch = vec![first];
        while batch.len() < CHUNK {
            match self.updates.try_recv() {
                Ok(revocation) => batch.push(revocation),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    self.ending = Some(fell_behind(missed));
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// The state after an error: its next poll ends the stream.
    fn finished(mut self) -> Self {
        self.done = true;
        self
    }
}

/// What woke a stream up.
enum Event {
    Closed,
    Update(Result<Revocation, broadcast::error::RecvError>),
    Heartbeat,
}

fn lost(error: broadcast::error::RecvError) -> Status {
    match error {
        broadcast::error::RecvError::Lagged(missed) => fell_behind(missed),
        broadcast::error::RecvError::Closed => ending("the revocation feed stopped"),
    }
}

fn fell_behind(missed: u64) -> Status {
    tracing::info!(
        missed,
        "watcher fell behind the revocation feed: stream ended"
    );
    status::retry_after(
        Code::Unavailable,
        "fell behind the revocation feed; resume with `since`",
        RETRY_DELAY,
    )
}

fn ending(why: &str) -> Status {
    status::retry_after(
        Code::Unavailable,
        format!("{why}; resume with `since`"),
        RETRY_DELAY,
    )
}
