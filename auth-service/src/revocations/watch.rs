//! One WatchRevocations stream: the replay, then new revocations and heartbeats, until the
//! client goes away (dropping the stream frees its subscription at once), stops reading, or
//! the server shuts down.
//!
//! A stream holds a cursor into the hub's shared [`Snapshot`] and encodes at most [`CHUNK`]
//! revocations at a time, when its reader asks for them: its memory does not grow with the
//! log. A replica serves at most `--max-revocation-watchers` streams, and only while its view
//! of the table is current: it cannot replay what it has not read.

use std::{sync::Arc, time::Duration};

use common::{
    proto::{
        auth::v1::{Revocation as RevocationMessage, WatchRevocationsResponse},
        timestamp,
    },
    status,
};
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::{Instant, Interval, MissedTickBehavior},
};
use tonic::{Code, Status};

use super::{
    Hub, Revocation, Timing,
    hub::Subscription,
    pace::{self, Messages},
    resume::{Replay, ResumeToken, Start},
    snapshot::Snapshot,
};

/// Revocations per message, replayed or new: about 100 bytes each, so a message is a few KiB
/// and a reader that stops reading pins little.
pub const CHUNK: usize = 64;
/// How long a watch waits for the replica's first load, or for its view to be current again.
const CURRENT_WAIT: Duration = Duration::from_secs(5);
/// The retry delay suggested when a stream cannot start or has to end.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// The retry delay suggested when every slot is taken.
const FULL_RETRY_DELAY: Duration = Duration::from_secs(5);

/// A stream of WatchRevocations messages.
pub type WatchStream = Messages<WatchRevocationsResponse>;

/// The streams one replica serves: at most so many, each ended when its reader stops.
#[derive(Clone, Debug)]
pub struct Watchers {
    slots: Arc<Semaphore>,
}

impl Watchers {
    /// Room for `max` streams.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    fn take_slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            // Counted by the request metrics; a flood of these must not flood the logs.
            tracing::debug!("watch refused: every revocation watcher slot is taken");
            status::retry_after(
                Code::ResourceExhausted,
                "this replica serves as many revocation watchers as it may; retry later or \
                 elsewhere",
                FULL_RETRY_DELAY,
            )
        })
    }
}

/// Opens a stream from `start`, once the replica's view is current (UNAVAILABLE if it does
/// not become so soon), in one of `watchers`' slots (RESOURCE_EXHAUSTED when none is free).
pub async fn open(
    hub: Arc<Hub>,
    timing: Timing,
    watchers: &Watchers,
    start: Start,
) -> Result<WatchStream, Status> {
    let slot = watchers.take_slot()?;
    if tokio::time::timeout(CURRENT_WAIT, hub.wait_current())
        .await
        .is_err()
    {
        tracing::info!(
            loaded = hub.is_loaded(),
            "watch refused: no current view of the table"
        );
        return Err(status::retry_after(
            Code::Unavailable,
            "this replica has no current view of the revocations; retry elsewhere",
            RETRY_DELAY,
        ));
    }
    let Subscription { snapshot, updates } = hub.subscribe();
    let lookback = common::clock::duration_millis(timing.lookback);
    let replay = start.replay(&hub, &snapshot, lookback);
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + timing.heartbeat, timing.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Watch {
        cursor: replay.after,
        replaying: Some((snapshot.last_seq(), replay)),
        snapshot,
        updates,
        closed: hub.closed(),
        heartbeat,
        hub,
        done: false,
        _slot: slot,
    };
    let messages = futures::stream::unfold(state, Watch::next).boxed();
    Ok(pace::paced(messages, timing.send_timeout, stopped_reading))
}

struct Watch {
    hub: Arc<Hub>,
    /// The log as this stream last looked at it.
    snapshot: Arc<Snapshot>,
    /// The position of the last entry this stream examined.
    cursor: u64,
    /// While replaying: the position that ends the replay, and where it started.
    replaying: Option<(u64, Replay)>,
    updates: watch::Receiver<Arc<Snapshot>>,
    heartbeat: Interval,
    closed: watch::Receiver<bool>,
    /// An error went out: the stream ends.
    done: bool,
    _slot: OwnedSemaphorePermit,
}

type Step = Option<(Result<WatchRevocationsResponse, Status>, Watch)>;

impl Watch {
    async fn next(mut self) -> Step {
        if self.done {
            return None;
        }
        if *self.closed.borrow() {
            return self.end(ending("the server is shutting down"));
        }
        if let Some((until, replay)) = self.replaying {
            let revocations = self.take(until, replay.from_ms);
            let complete = self.cursor >= until;
            if complete {
                self.replaying = None;
                self.heartbeat.reset();
            }
            let message = self.message(revocations, complete);
            return Some((Ok(message), self));
        }
        loop {
            let revocations = self.take(u64::MAX, None);
            if !revocations.is_empty() {
                self.heartbeat.reset();
                let message = self.message(revocations, false);
                return Some((Ok(message), self));
            }
            let event = tokio::select! {
                biased;
                _ = self.closed.wait_for(|closed| *closed) => Event::Closed,
                changed = self.updates.changed() => Event::Changed(changed.is_ok()),
                _ = self.heartbeat.tick() => Event::Heartbeat,
            };
            match event {
                Event::Closed => return self.end(ending("the server is shutting down")),
                Event::Changed(true) => {
                    self.snapshot = Arc::clone(&self.updates.borrow_and_update());
                }
                Event::Changed(false) => return self.end(ending("the revocation feed stopped")),
                Event::Heartbeat if self.hub.is_current() => {
                    let message = self.message(Vec::new(), false);
                    return Some((Ok(message), self));
                }
                // The replica's view is stale: stay silent so the watcher can tell.
                Event::Heartbeat => {}
            }
        }
    }

    /// The next revocations after the cursor, up to position `until`, made at `from_ms` or
    /// later and still relevant, at most a chunk; moves the cursor past what it examined.
    fn take(&mut self, until: u64, from_ms: Option<i64>) -> Vec<RevocationMessage> {
        let now = self.hub.now_secs();
        let mut taken = Vec::new();
        let mut cursor = self.cursor;
        for entry in self.snapshot.after(self.cursor) {
            if entry.seq > until || taken.len() == CHUNK {
                break;
            }
            cursor = entry.seq;
            let revocation = &entry.revocation;
            if revocation.not_after > now
                && from_ms.is_none_or(|from| revocation.revoked_at_ms >= from)
            {
                taken.push(to_proto(revocation));
            }
        }
        self.cursor = cursor;
        taken
    }

    fn message(
        &self,
        revocations: Vec<RevocationMessage>,
        replay_complete: bool,
    ) -> WatchRevocationsResponse {
        let token = ResumeToken {
            incarnation: self.hub.incarnation(),
            seq: self.cursor,
        };
        WatchRevocationsResponse {
            revocations,
            replay_complete,
            resume_token: token.encode(),
            view_age: self.hub.view_age().and_then(|age| age.try_into().ok()),
        }
    }

    /// Sends `status` and ends.
    fn end(mut self, status: Status) -> Step {
        self.done = true;
        Some((Err(status), self))
    }
}

/// What woke a stream up.
enum Event {
    Closed,
    /// A new snapshot (`false`: the hub is gone).
    Changed(bool),
    Heartbeat,
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

fn stopped_reading() -> Status {
    ending("stopped reading the revocation feed")
}

fn ending(why: &str) -> Status {
    status::retry_after(
        Code::Unavailable,
        format!("{why}; resume with `resume_token`"),
        RETRY_DELAY,
    )
}

#[cfg(test)]
mod tests {
    use common::clock::SystemClock;

    use super::*;

    fn timing() -> Timing {
        Timing {
            poll: Duration::from_millis(100),
            heartbeat: Duration::from_secs(60),
            lookback: Duration::from_secs(15),
            send_timeout: Duration::from_secs(60),
        }
    }

    /// A loaded, current hub holding `count` revocations.
    fn hub(count: usize) -> Arc<Hub> {
        let hub = Arc::new(Hub::new(Arc::new(SystemClock), Duration::from_secs(60)));
        for n in 0..count {
            add(&hub, &format!("s{n}"));
        }
        hub.mark_read(Instant::now());
        hub.mark_loaded();
        hub
    }

    fn add(hub: &Hub, session: &str) {
        hub.add(Revocation {
            session_id: session.to_owned(),
            user_id: None,
            revoked_at_ms: hub.now_ms(),
            not_after: hub.now_secs() + 60,
        });
    }

    async fn next(stream: &mut WatchStream) -> WatchRevocationsResponse {
        stream.next().await.expect("open").expect("healthy")
    }

    #[tokio::test]
    async fn the_replay_goes_in_chunks_then_news_follows_it() {
        let hub = hub(150);
        let watchers = Watchers::new(4);
        let mut stream = open(Arc::clone(&hub), timing(), &watchers, Start::default())
            .await
            .unwrap();
        let first = next(&mut stream).await;
        // Added during the replay: after it, never in it.
        add(&hub, "late");
        let (second, third) = (next(&mut stream).await, next(&mut stream).await);
        let sizes = [&first, &second, &third].map(|m| (m.revocations.len(), m.replay_complete));
        assert_eq!(sizes, [(64, false), (64, false), (22, true)]);
        assert_eq!(third.revocations[21].session_id, "s149");
        let news = next(&mut stream).await;
        assert_eq!(news.revocations[0].session_id, "late");
        assert!(news.view_age.is_some());

        // Resuming from the second message's token replays exactly the rest.
        let start = Start {
            token: ResumeToken::parse(&second.resume_token),
            since_ms: None,
        };
        let mut resumed = open(hub, timing(), &watchers, start).await.unwrap();
        let rest = next(&mut resumed).await;
        let sessions: Vec<_> = rest
            .revocations
            .iter()
            .map(|r| r.session_id.as_str())
            .collect();
        assert_eq!(sessions.len(), 23);
        assert_eq!((sessions[0], sessions[22]), ("s128", "late"));
        assert!(rest.replay_complete);
    }

    #[tokio::test]
    async fn a_replica_without_a_current_view_refuses_and_a_full_one_is_exhausted() {
        let stale = Arc::new(Hub::new(Arc::new(SystemClock), Duration::from_millis(1)));
        stale.mark_loaded();
        stale.mark_read(Instant::now() - Duration::from_secs(1));
        let watchers = Watchers::new(1);
        let refused = open(stale, timing(), &watchers, Start::default())
            .await
            .err()
            .unwrap();
        assert_eq!(refused.code(), Code::Unavailable);

        let hub = hub(0);
        let _only = open(Arc::clone(&hub), timing(), &watchers, Start::default())
            .await
            .unwrap();
        let refused = open(hub, timing(), &watchers, Start::default())
            .await
            .err()
            .unwrap();
        assert_eq!(refused.code(), Code::ResourceExhausted);
    }
}
