//! Work that must finish once a call has asked for it, whatever its caller does.
//!
//! tonic drops a handler's future when the caller's deadline passes, when it cancels, or when
//! its connection goes: every `.await` in a handler is a point where the work can stop for
//! good. A flow that writes twice (announce an ending, then mark it) must not stop between
//! the writes, so it runs as a task of its own and the handler only waits for it: dropping
//! the handler drops the wait, never the work. The caller is answered only once the work is
//! done, so a success it sees is a success that happened.

use std::future::Future;

use tokio::task::JoinError;
use tracing::Instrument;

/// Runs `work` to completion on the runtime, inside the current tracing span, and returns its
/// result once it is done. If the caller's future is dropped meanwhile, `work` carries on.
///
/// The error conversion covers what can only be a bug or a shutdown: the task panicked, or
/// the runtime was shut down under it (`E: From<JoinError>`, usually an internal error).
pub async fn run<T, E, F>(work: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<JoinError> + Send + 'static,
{
    tokio::spawn(work.instrument(tracing::Span::current()))
        .await
        .unwrap_or_else(|error| Err(E::from(error)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug)]
    struct Failed(String);

    impl From<JoinError> for Failed {
        fn from(error: JoinError) -> Self {
            Self(error.to_string())
        }
    }

    #[tokio::test]
    async fn the_work_finishes_after_its_caller_gave_up() {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let work = async move {
            let _ = released.await;
            let _ = finish.send(());
            Ok::<_, Failed>(())
        };
        let caller = tokio::time::timeout(Duration::from_millis(10), run(work)).await;
        assert!(caller.is_err(), "the caller gave up first");

        release.send(()).unwrap();
        finished.await.expect("the work ran on without its caller");
    }

    #[tokio::test]
    async fn results_and_panics_come_back_to_the_caller() {
        let answer = run(async { Ok::<_, Failed>(42) }).await;
        assert_eq!(answer.unwrap(), 42);
        let refused = run(async { Err::<(), _>(Failed("no".into())) }).await;
        assert_eq!(refused.unwrap_err().0, "no");
        let panicked = run(async {
            if true {
                panic!("a bug");
            }
            Ok::<(), Failed>(())
        })
        .await;
        assert!(panicked.unwrap_err().0.contains("panicked"));
    }
}
