//! Test-only failpoints: points where a test makes the service stop as if its process had
//! died there. Compiled only with the `failpoints` feature (which only the tests crate turns
//! on) in builds with debug assertions, so no release build contains them; and inert until a
//! test arms one.

use std::sync::atomic::{AtomicBool, Ordering};

static HANG_AFTER_ANNOUNCE: AtomicBool = AtomicBool::new(false);

/// From now on, in this process, every ending of a session stops for good right after its
/// revocation is announced, before its session is marked: the state a replica killed between
/// the two writes leaves behind (the test then kills the process).
pub fn hang_after_announce() {
    HANG_AFTER_ANNOUNCE.store(true, Ordering::SeqCst);
}

/// Between announcing an ending and marking the session.
pub(crate) async fn after_announce() {
    if HANG_AFTER_ANNOUNCE.load(Ordering::SeqCst) {
        tracing::warn!("failpoint: hanging after announcing a revocation");
        std::future::pending::<()>().await;
    }
}
