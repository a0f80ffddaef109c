//! One task per auth-service address holding a `WatchRevocations` stream open: it applies each
//! batch, marks the feed heard once the stream's replay completed (as of the replica's last
//! read of the table, which each message states as `view_age`), and on an error, an end or a
//! silence longer than [`WatcherConfig::idle_timeout`] reconnects with exponential backoff
//! and jitter. It resumes with the `resume_token` of the last message applied: a position in
//! the replica's own log, so no clock decides what is replayed (another replica, or a
//! restarted one, replays everything). `since`, the latest `revoked_at` applied, goes along
//! for auth-services older than resume tokens; duplicates are harmless.

use std::{sync::Arc, time::Duration};

use common::{
    proto::auth::v1::{
        WatchRevocationsRequest, WatchRevocationsResponse, auth_service_client::AuthServiceClient,
    },
    server::BackgroundTask,
};
use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use prost_types::Timestamp;
use time::OffsetDateTime;
use tonic::{Code, Status, transport::Channel};

use super::{Ended, MAX_KEEP, Revocations};
use crate::{credentials::UserClients, keys::KeyStore};

/// A stream of revocation batches.
pub type Batches = BoxStream<'static, Result<WatchRevocationsResponse, Status>>;

/// Where revocations come from: an auth-service, or a script in tests.
pub trait Feed: Send + 'static {
    /// Opens a stream resuming where `request` says.
    fn watch(&mut self, request: WatchRevocationsRequest)
    -> BoxFuture<'_, Result<Batches, Status>>;
}

impl Feed for AuthServiceClient<Channel> {
    fn watch(
        &mut self,
        request: WatchRevocationsRequest,
    ) -> BoxFuture<'_, Result<Batches, Status>> {
        Box::pin(async move {
            let response = self.watch_revocations(request).await?;
            Ok(response.into_inner().boxed())
        })
    }
}

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

/// Exponential backoff with jitter: each delay is drawn from the upper half of a window that
/// doubles up to the maximum, so replicas that lost the same auth-service do not reconnect
/// in step.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    window: Duration,
}

impl Backoff {
    /// Starting at `first`, never beyond `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            window: first,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let window = self.window;
        self.window = (window * 2).min(self.max);
        window / 2 + window.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// Starts over after a connection that worked.
    pub fn reset(&mut self) {
        self.window = self.first;
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
        let ended = |replayed, status: &Status| Outcome {
            replayed,
            cause: format!("{} {}", status.code(), status.message()),
            unimplemented: status.code() == Code::Unimplemented,
        };
        let request = WatchRevocationsRequest {
            since: self.since,
            resume_token: self.resume_token.clone(),
        };
        let mut batches = match self.feed.watch(request).await {
            Ok(batches) => batches,
            Err(status) => {
                if status.code() == Code::InvalidArgument && !self.resume_token.is_empty() {
                    // Not a position this auth-service knows: start over with a full replay.
                    self.resume_token.clear();
                    self.since = None;
                }
                return ended(false, &status);
            }
        };
        let mut replayed = false;
        loop {
            let quiet = Outcome {
                replayed,
                cause: String::new(),
                unimplemented: false,
            };
            match tokio::time::timeout(self.config.idle_timeout, batches.next()).await {
                Err(_) => {
                    let after = self.config.idle_timeout;
                    return Outcome {
                        cause: format!("no message for {after:?}"),
                        ..quiet
                    };
                }
                Ok(None) => {
                    return Outcome {
                        cause: "the server ended the stream".into(),
                        ..quiet
                    };
                }
                Ok(Some(Err(status))) => return ended(replayed, &status),
                Ok(Some(Ok(batch))) => {
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
        }
    }

    /// Applies one batch's revocations (not its freshness), then takes its resume token.
    async fn apply(&mut self, batch: WatchRevocationsResponse) {
        let now = OffsetDateTime::now_utc();
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
            // A revocation without a usable `not_after` is kept as long as any token can live.
            let not_after = revocation
                .not_after
                .as_ref()
                .and_then(to_time)
                .unwrap_or(now + MAX_KEEP);
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

fn to_time(at: &Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{Mutex, PoisonError},
    };

    use common::proto::auth::v1::Revocation;

    use super::*;
    use crate::revocations::RevocationsConfig;

    /// What the scripted auth-service answers to one WatchRevocations call.
    enum Reply {
        Refuse(Status),
        /// These messages, then the stream stays open (`false`) or ends (`true`).
        Stream(Vec<Result<WatchRevocationsResponse, Status>>, bool),
    }

    /// A feed answering from a script, then with streams that stay silent; it records every
    /// request.
    #[derive(Clone, Default)]
    struct Script {
        replies: Arc<Mutex<VecDeque<Reply>>>,
        calls: Arc<Mutex<Vec<WatchRevocationsRequest>>>,
    }

    impl Script {
        fn new(replies: impl IntoIterator<Item = Reply>) -> Self {
            Self {
                replies: Arc::new(Mutex::new(replies.into_iter().collect())),
                calls: Arc::default(),
            }
        }

        fn calls(&self) -> Vec<WatchRevocationsRequest> {
            self.calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    impl Feed for Script {
        fn watch(
            &mut self,
            request: WatchRevocationsRequest,
        ) -> BoxFuture<'_, Result<Batches, Status>> {
            self.calls.lock().unwrap().push(request);
            let reply = self.replies.lock().unwrap().pop_front();
            Box::pin(async move {
                match reply {
                    Some(Reply::Refuse(status)) => Err(status),
                    Some(Reply::Stream(messages, true)) => {
                        Ok(futures::stream::iter(messages).boxed())
                    }
                    Some(Reply::Stream(messages, false)) => Ok(futures::stream::iter(messages)
                        .chain(futures::stream::pending())
                        .boxed()),
                    None => Ok(futures::stream::pending().boxed()),
                }
            })
        }
    }

    #[derive(Default)]
    struct Released(Mutex<Vec<Ended>>);

    impl Release for Released {
        fn release(&self, ended: Ended) -> BoxFuture<'_, ()> {
            self.0.lock().unwrap().push(ended);
            Box::pin(async {})
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    fn revoked(session: &str, revoked_at: i64) -> Revocation {
        let not_after = OffsetDateTime::now_utc().unix_timestamp() + 900;
        Revocation {
            session_id: session.into(),
            revoked_at: Some(at(revoked_at)),
            not_after: Some(at(not_after)),
            user_id: String::new(),
        }
    }

    fn batch(
        revocations: Vec<Revocation>,
        replay_complete: bool,
    ) -> Result<WatchRevocationsResponse, Status> {
        Ok(WatchRevocationsResponse {
            revocations,
            replay_complete,
            ..Default::default()
        })
    }

    /// A message with a resume token, from a replica whose view is `view_age` old.
    fn marked(
        revocations: Vec<Revocation>,
        replay_complete: bool,
        token: &str,
        view_age: Duration,
    ) -> Result<WatchRevocationsResponse, Status> {
        Ok(WatchRevocationsResponse {
            revocations,
            replay_complete,
            resume_token: token.into(),
            view_age: Some(view_age.try_into().unwrap()),
        })
    }

    fn watch(script: &Script, idle_timeout: Duration) -> (Revocations, BackgroundTask) {
        let revocations = Revocations::new(
            RevocationsConfig {
                max_staleness: Duration::from_secs(30),
                index_capacity: 100,
            },
            Arc::new(common::clock::SystemClock),
        );
        let config = WatcherConfig {
            first_retry: Duration::from_millis(1),
            max_retry: Duration::from_millis(20),
            idle_timeout,
        };
        let watcher = Watcher::new(
            "scripted",
            script.clone(),
            revocations.clone(),
            Arc::new(Released::default()),
            config,
        );
        (revocations, watcher.spawn())
    }

    async fn eventually(check: impl Fn() -> bool) -> bool {
        for _ in 0..400 {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        check()
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn the_feed_is_fresh_only_once_the_replay_completed() {
        let script = Script::new([Reply::Stream(
            vec![batch(vec![revoked("s1", 10)], false)],
            false,
        )]);
        let (revocations, _task) = watch(&script, LONG);
        assert!(eventually(|| revocations.is_revoked("s1")).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !revocations.freshness().is_fresh(),
            "a replay still running says nothing about what it has not sent yet"
        );

        let script = Script::new([Reply::Stream(
            vec![
                batch(vec![revoked("s1", 10)], false),
                batch(vec![revoked("s2", 11)], true),
            ],
            false,
        )]);
        let (revocations, _task) = watch(&script, LONG);
        assert!(eventually(|| revocations.freshness().is_fresh()).await);
        assert!(revocations.is_revoked("s1") && revocations.is_revoked("s2"));
    }

    #[tokio::test]
    async fn an_auth_service_without_the_feed_never_counts_as_fresh() {
        let refusals = (0..5).map(|_| Reply::Refuse(Status::unimplemented("not built")));
        let script = Script::new(refusals);
        let (revocations, _task) = watch(&script, LONG);
        assert!(eventually(|| script.calls().len() >= 6).await, "retried");
        assert!(!revocations.freshness().is_fresh());
    }

    #[tokio::test]
    async fn a_cut_stream_resumes_after_the_latest_revocation_applied() {
        let script = Script::new([
            Reply::Stream(
                vec![
                    batch(vec![revoked("s1", 30), revoked("s2", 20)], true),
                    Err(Status::unavailable("connection reset")),
                ],
                false,
            ),
            Reply::Refuse(Status::unavailable("connection refused")),
            Reply::Stream(
                vec![batch(vec![], true), batch(vec![revoked("s3", 40)], false)],
                true,
            ),
        ]);
        let (revocations, _task) = watch(&script, LONG);
        assert!(eventually(|| revocations.is_revoked("s3")).await);
        assert!(
            eventually(|| script.calls().len() >= 4).await,
            "reconnects after the end"
        );
        let calls: Vec<_> = script.calls().into_iter().map(|call| call.since).collect();
        assert_eq!(
            calls[0], None,
            "the first stream replays everything still relevant"
        );
        assert_eq!(
            calls[1],
            Some(at(30)),
            "the latest revoked_at, not the last one"
        );
        assert_eq!(calls[2], Some(at(30)));
        assert_eq!(calls[3], Some(at(40)));
        assert!(revocations.freshness().is_fresh());
    }

    #[tokio::test]
    async fn a_stream_resumes_with_the_token_of_the_last_message_applied() {
        let fresh = Duration::from_millis(200);
        let script = Script::new([
            Reply::Stream(
                vec![
                    marked(vec![revoked("s1", 30)], true, "t1", fresh),
                    marked(vec![revoked("s2", 10)], false, "t2", fresh),
                    Err(Status::unavailable("connection reset")),
                ],
                false,
            ),
            Reply::Refuse(Status::unavailable("connection refused")),
            Reply::Stream(vec![marked(vec![], true, "t3", fresh)], true),
        ]);
        let (revocations, _task) = watch(&script, LONG);
        assert!(eventually(|| script.calls().len() >= 4).await);
        let calls = script.calls();
        let tokens: Vec<&str> = calls.iter().map(|c| c.resume_token.as_str()).collect();
        assert_eq!(tokens, ["", "t2", "t2", "t3"]);
        assert_eq!(
            calls[1].since,
            Some(at(30)),
            "for auth-services without tokens"
        );
        assert!(revocations.freshness().is_fresh());
    }

    #[tokio::test]
    async fn a_token_the_auth_service_refuses_is_dropped_for_a_full_replay() {
        let fresh = Duration::ZERO;
        let script = Script::new([
            Reply::Stream(
                vec![marked(vec![revoked("s1", 30)], true, "t1", fresh)],
                true,
            ),
            Reply::Refuse(Status::invalid_argument("not a token of this feed")),
        ]);
        let (_revocations, _task) = watch(&script, LONG);
        assert!(eventually(|| script.calls().len() >= 3).await);
        let calls = script.calls();
        assert_eq!(calls[1].resume_token, "t1");
        assert_eq!(calls[2], WatchRevocationsRequest::default());
    }

    #[tokio::test]
    async fn a_replica_that_cannot_read_the_table_keeps_nobody_fresh_however_often_it_answers() {
        let stale = Duration::from_secs(31);
        let replies = (0..20).map(|n| {
            let token = format!("t{n}");
            Reply::Stream(vec![marked(vec![], true, &token, stale)], true)
        });
        let script = Script::new(replies);
        let (revocations, _task) = watch(&script, LONG);
        assert!(
            eventually(|| script.calls().len() >= 20).await,
            "reconnected"
        );
        assert!(!revocations.freshness().is_fresh());
    }

    #[tokio::test]
    async fn a_silent_stream_is_given_up_and_reopened() {
        let script = Script::new([Reply::Stream(vec![batch(vec![], true)], false)]);
        let (revocations, _task) = watch(&script, Duration::from_millis(30));
        assert!(eventually(|| script.calls().len() >= 3).await);
        assert!(
            revocations.freshness().is_fresh(),
            "heard within the maximum staleness"
        );
    }

    #[tokio::test]
    async fn a_revocation_releases_what_its_session_held() {
        let script = Script::new([Reply::Stream(
            vec![batch(vec![revoked("s1", 1)], true)],
            false,
        )]);
        let revocations = Revocations::new(
            RevocationsConfig {
                max_staleness: Duration::from_secs(30),
                index_capacity: 100,
            },
            Arc::new(common::clock::SystemClock),
        );
        let principal = common::tokens::Principal {
            user_id: "alice".into(),
            session_id: "s1".into(),
            token_id: "t".into(),
            expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
        };
        revocations.track(&principal, Arc::from("token"));
        let released = Arc::new(Released::default());
        let watcher = Watcher::new(
            "scripted",
            script,
            revocations.clone(),
            released.clone(),
            WatcherConfig::default(),
        );
        let _task = watcher.spawn();
        assert!(eventually(|| !released.0.lock().unwrap().is_empty()).await);
        let ended = released.0.lock().unwrap().remove(0);
        assert_eq!(ended.tokens, vec![Arc::<str>::from("token")]);
        assert_eq!(ended.client_of.as_deref(), Some("alice"));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum_and_starts_over() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut backoff = Backoff::new(first, max);
        let mut window = first;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(
                delay >= window / 2 && delay <= window,
                "{delay:?} in {window:?}"
            );
            window = (window * 2).min(max);
        }
        assert_eq!(window, max);
        backoff.reset();
        assert!(backoff.next_delay() <= first);
    }
}
