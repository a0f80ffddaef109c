//! The watcher against a scripted feed: replays, resumes, silences and refusals.

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
};

use common::proto::auth::v1::Revocation;
use futures::future::BoxFuture;
use time::OffsetDateTime;

use super::*;
use crate::revocations::{Ended, RevocationsConfig};

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
                Some(Reply::Stream(messages, true)) => Ok(futures::stream::iter(messages).boxed()),
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
