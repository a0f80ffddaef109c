//! Account erasure (DeleteAccount): the deletion record on the user item (`users/deletion.rs`)
//! is the truth, and any replica holding its lease carries the work forward in a fixed order —
//! end every session through the final path, erase the items partition in pages, wait out the
//! temporary credentials vended before, erase the items again, then the sessions rows, the
//! login-attempts row and last the user item, which frees the username. Every step is
//! idempotent, so a pass cut short anywhere (a crash, a lost lease, an error) is simply run
//! again by the next sweep of any replica. docs/security.md ("Leaving") is the reference.

mod metrics;
mod partition;
mod pass;
mod settings;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use common::{
    clock::{Clock, unix_millis},
    server::BackgroundTask,
};
use tracing::Instrument;

pub use metrics::ErasureMetrics;
pub use partition::PartitionEraser;
pub use settings::ErasureSettings;

use crate::{
    error::AuthError,
    family::Families,
    lockout::Lockout,
    users::{Lease, UserStore},
};

/// How long a claim on a record lasts unless renewed (before every page).
const LEASE: Duration = Duration::from_secs(60);
/// Added to the credentials' lifetime before the final items pass: clock skew between us and
/// STS, and a GetCredentials that read the session just before it ended.
pub const SETTLE_MARGIN: Duration = Duration::from_secs(60);

/// The account being erased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its folded username (the users item's key).
    pub username: String,
    /// Its user id (the sessions' and items' partition key).
    pub user_id: String,
}

/// What [`Erasure`] is built from.
#[derive(Debug)]
pub struct ErasureParts {
    /// The users table (deletion records).
    pub users: UserStore,
    /// Sessions, ended through the final path.
    pub families: Families,
    /// The login-attempts rows.
    pub lockout: Lockout,
    /// The sessions table's partitions (`user_id`, `session_id`).
    pub sessions: PartitionEraser,
    /// The items table's partitions (`owner`, `key`); `None` without credential vending.
    pub items: Option<PartitionEraser>,
    /// How long credentials vended before a deletion stay valid, margin included (zero
    /// without vending).
    pub settle: Duration,
    /// Where time is read.
    pub clock: Arc<dyn Clock>,
    /// Counted here.
    pub metrics: Arc<ErasureMetrics>,
}

/// Writes deletion records and carries erasures to their end.
#[derive(Clone, Debug)]
pub struct Erasure {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    parts: ErasureParts,
    /// This process's lease owner name: a new one at every start, so a restarted replica
    /// waits for its predecessor's lease to lapse like any other.
    replica: String,
    /// User ids this replica is working on now, so a sweep does not start a second worker.
    working: Mutex<HashSet<String>>,
}

impl Erasure {
    /// An erasure over `parts`.
    pub fn new(parts: ErasureParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                parts,
                replica: uuid::Uuid::new_v4().to_string(),
                working: Mutex::new(HashSet::new()),
            }),
        }
    }

    fn parts(&self) -> &ErasureParts {
        &self.inner.parts
    }

    fn now_ms(&self) -> i64 {
        unix_millis(self.parts().clock.now())
    }

    /// A lease for this replica from now.
    fn lease(&self) -> Lease<'_> {
        let now = self.now_ms();
        Lease {
            owner: &self.inner.replica,
            now,
            until: now.saturating_add(millis(LEASE)),
        }
    }

    /// Writes `target`'s deletion record, which makes the account unusable, leased to this
    /// replica. True if this call wrote it; false if `target` was already being deleted.
    /// `SessionEnded` when the username is no longer `target`'s.
    pub async fn request(&self, target: &Target) -> Result<bool, AuthError> {
        let lease = self.lease();
        let settle_at = lease.now.saturating_add(millis(self.parts().settle));
        let users = &self.parts().users;
        if users
            .mark_deleting(&target.username, &target.user_id, settle_at, lease)
            .await?
        {
            self.parts().metrics.started.increment();
            return Ok(true);
        }
        match users.find(&target.username).await? {
            Some(user) if user.user_id == target.user_id && user.deletion.is_some() => Ok(false),
            _ => Err(AuthError::SessionEnded),
        }
    }

    /// Runs a pass over `target` in the background (after DeleteAccount, or for a sweep),
    /// unless this replica is working on it already.
    pub fn start(&self, target: Target) {
        let Some(guard) = Working::enter(&self.inner, &target.user_id) else {
            return;
        };
        let erasure = self.clone();
        let span = tracing::info_span!("erasure", user_id = %target.user_id);
        tokio::spawn(
            async move {
                let _guard = guard;
                erasure.run(&target).await;
            }
            .instrument(span),
        );
    }

    /// Finds every deletion record whose lease has lapsed and runs a pass over each, one after
    /// the other (erasures are rare; one at a time bounds what a sweep costs). A record that
    /// cannot be read is counted as failed and skipped: it must not hold up the others.
    pub async fn sweep(&self) -> Result<(), AuthError> {
        let pending = self.parts().users.pending_deletions().await?;
        self.parts()
            .metrics
            .pending
            .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        for username in pending {
            let target = match self.due(username).await {
                Ok(Some(target)) => target,
                Ok(None) => continue,
                Err(error) => {
                    self.parts().metrics.failed.increment();
                    tracing::warn!(%error, "a deletion record could not be read; skipped");
                    continue;
                }
            };
            let Some(_guard) = Working::enter(&self.inner, &target.user_id) else {
                continue;
            };
            self.parts().metrics.resumed.increment();
            self.run(&target).await;
        }
        Ok(())
    }

    /// The account `username` names if its deletion record is there and nobody holds it: not
    /// a live replica, nor a park until the credentials settle.
    async fn due(&self, username: String) -> Result<Option<Target>, AuthError> {
        let Some(user) = self.parts().users.find(&username).await? else {
            return Ok(None);
        };
        let lapsed = user
            .deletion
            .is_some_and(|record| record.lease_until < self.now_ms());
        Ok(lapsed.then_some(Target {
            username,
            user_id: user.user_id,
        }))
    }

    /// Sweeps every `interval` until the task is aborted.
    pub fn spawn_sweeper(&self, interval: Duration) -> BackgroundTask {
        let erasure = self.clone();
        BackgroundTask::from(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = erasure.sweep().await {
                    tracing::warn!(%error, "account erasure sweep failed; retrying at the next");
                }
            }
        }))
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// This replica's claim to be working on a user, released when dropped.
struct Working {
    inner: Arc<Inner>,
    user_id: String,
}

impl Working {
    fn enter(inner: &Arc<Inner>, user_id: &str) -> Option<Self> {
        let mut working = inner.working.lock().unwrap_or_else(PoisonError::into_inner);
        working.insert(user_id.to_owned()).then(|| Self {
            inner: Arc::clone(inner),
            user_id: user_id.to_owned(),
        })
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        let mut working = self
            .inner
            .working
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        working.remove(&self.user_id);
    }
}
