//! A stream paced by its reader. Each message is handed to the transport alone (tonic
//! otherwise gathers ready messages into 32 KiB writes), so a reader that stops reading pins
//! at most the message it was handed; and a watchdog ends a stream whose reader has not taken
//! a message for the send timeout.
//!
//! Ending such a stream cannot wait for the transport: hyper polls a response body only when
//! the peer's flow-control window has room, which a peer that stopped reading never gives. So
//! the watchdog drops the stream's state itself (its slot among the watchers, its subscription,
//! its snapshot) and leaves a husk that answers the ending status when polled: what the
//! connection still holds until the peer reads again or goes away is the husk and one
//! message.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    task::{Context, Poll},
    time::Duration,
};

use common::server::BackgroundTask;
use futures::{Stream, StreamExt, stream::BoxStream};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Status;

/// How often the watchdog looks, as a share of the send timeout: a stream ends between one
/// and one and a quarter timeouts after its reader stopped.
const CHECKS_PER_TIMEOUT: u32 = 4;

/// The messages of a stream, each `Ok` or the `Err` that ends it.
pub type Messages<T> = BoxStream<'static, Result<T, Status>>;

/// `inner`, handed over one message at a time and ended with `ending()`'s status once a
/// message has waited `send_timeout` for its reader.
pub fn paced<T: Send + 'static>(
    inner: Messages<T>,
    send_timeout: Duration,
    ending: fn() -> Status,
) -> Messages<T> {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Some(inner)),
        handed_at: Mutex::new(None),
    });
    let watchdog = tokio::spawn(watch_over(Arc::downgrade(&shared), send_timeout));
    Paced {
        shared,
        ending: Some(ending),
        yield_next: false,
        _watchdog: watchdog.into(),
    }
    .boxed()
}

struct Shared<T> {
    /// The stream; `None` once the watchdog ended it.
    inner: Mutex<Option<Messages<T>>>,
    /// When the message the reader has not taken yet was handed over.
    handed_at: Mutex<Option<Instant>>,
}

impl<T> Shared<T> {
    fn handed_at(&self) -> MutexGuard<'_, Option<Instant>> {
        self.handed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn inner(&self) -> MutexGuard<'_, Option<Messages<T>>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Paced<T> {
    shared: Arc<Shared<T>>,
    /// The status a stream ended by the watchdog answers, once.
    ending: Option<fn() -> Status>,
    /// A message just went out: pause once so the transport writes it alone.
    yield_next: bool,
    _watchdog: BackgroundTask,
}

impl<T> Stream for Paced<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.yield_next {
            this.yield_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Asked for more: the reader took what it was handed.
        *this.shared.handed_at() = None;
        let mut inner = this.shared.inner();
        let Some(stream) = inner.as_mut() else {
            return Poll::Ready(this.ending.take().map(|ending| Err(ending())));
        };
        let polled = stream.poll_next_unpin(cx);
        drop(inner);
        if let Poll::Ready(Some(_)) = polled {
            this.yield_next = true;
            *this.shared.handed_at() = Some(Instant::now());
        }
        polled
    }
}

/// Ends the stream behind `shared` once a message has waited `send_timeout`; returns when
/// the stream is gone.
async fn watch_over<T>(shared: Weak<Shared<T>>, send_timeout: Duration) {
    let mut ticks = tokio::time::interval(send_timeout / CHECKS_PER_TIMEOUT);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let stalled = shared
            .handed_at()
            .is_some_and(|at| at.elapsed() >= send_timeout);
        if stalled {
            tracing::info!(
                timeout_ms = send_timeout.as_millis(),
                "a watcher stopped reading the revocation feed: stream ended"
            );
            // Dropped outside the lock.
            let inner = shared.inner().take();
            drop(inner);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::task::noop_waker_ref;
    use tonic::Code;

    use super::*;

    /// `stream`, setting the flag when dropped.
    fn guarded(stream: Messages<u32>, dropped: Arc<AtomicBool>) -> Messages<u32> {
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = Guard(dropped);
        stream
            .inspect(move |_| {
                let _ = &guard;
            })
            .boxed()
    }

    /// Ones forever; sets the flag when dropped.
    fn ones(dropped: Arc<AtomicBool>) -> Messages<u32> {
        guarded(futures::stream::repeat_with(|| Ok(1)).boxed(), dropped)
    }

    fn ending() -> Status {
        Status::unavailable("stopped reading")
    }

    #[tokio::test]
    async fn each_message_is_followed_by_one_pause() {
        let mut stream = paced(ones(Arc::default()), Duration::from_secs(60), ending);
        let mut cx = Context::from_waker(noop_waker_ref());
        for _ in 0..3 {
            assert!(matches!(
                stream.poll_next_unpin(&mut cx),
                Poll::Ready(Some(Ok(1)))
            ));
            assert!(stream.poll_next_unpin(&mut cx).is_pending());
        }
    }

    #[tokio::test]
    async fn a_reader_that_keeps_taking_is_never_ended() {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut stream = paced(ones(dropped.clone()), Duration::from_secs(5), ending);
        for _ in 0..20 {
            assert!(matches!(stream.next().await, Some(Ok(1))));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_reader_that_stops_taking_loses_the_stream_and_its_state() {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut stream = paced(ones(dropped.clone()), Duration::from_millis(100), ending);
        assert!(matches!(stream.next().await, Some(Ok(1))));
        for _ in 0..200 {
            if dropped.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(dropped.load(Ordering::SeqCst), "state freed without a poll");
        let ended = stream.next().await.unwrap().unwrap_err();
        assert_eq!(ended.code(), Code::Unavailable);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_waiting_for_news_is_not_a_stalled_reader() {
        let dropped = Arc::new(AtomicBool::new(false));
        let quiet = futures::stream::iter([Ok(1)]).chain(futures::stream::pending());
        let mut stream = paced(
            guarded(quiet.boxed(), dropped.clone()),
            Duration::from_millis(50),
            ending,
        );
        assert!(matches!(stream.next().await, Some(Ok(1))));
        let waiting = tokio::time::timeout(Duration::from_millis(400), stream.next()).await;
        assert!(waiting.is_err(), "nothing to send");
        assert!(
            !dropped.load(Ordering::SeqCst),
            "it took everything it was handed"
        );
    }
}
