//! One pass over an account being erased, under the record's lease: every step in order, each
//! safe to run again. A pass ends in one of three ways: the account is gone (done), the record
//! is parked until the temporary credentials have expired, or the lease was lost (another
//! replica has it).

use super::{Erasure, PartitionEraser, Target};
use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    users::{EpochOwner, Lease},
};

/// How a pass ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// The user item is deleted: the username is free.
    Erased,
    /// The record waits until its credentials settle; the lease is held until then.
    Parked,
    /// Another replica holds the lease, or there is no record (any more).
    NotOurs,
}

impl Erasure {
    /// Runs one pass over `target`, counting and logging how it ended.
    pub(super) async fn run(&self, target: &Target) {
        match self.pass(target).await {
            Ok(Ended::Erased) => {
                self.parts().metrics.completed.increment();
                tracing::info!(user_id = %target.user_id, "account erased");
                audit(Event::AccountErased, target);
            }
            Ok(Ended::Parked) => {
                tracing::info!(user_id = %target.user_id, "account erasure parked until its credentials expire");
            }
            Ok(Ended::NotOurs) => {}
            Err(error) => {
                self.parts().metrics.failed.increment();
                tracing::warn!(user_id = %target.user_id, %error, "account erasure pass failed; the next sweep resumes it");
            }
        }
    }

    async fn pass(&self, target: &Target) -> Result<Ended, AuthError> {
        let parts = self.parts();
        if !self.renew(target, 0).await? {
            return Ok(Ended::NotOurs);
        }
        let user = parts.users.find(&target.username).await?;
        let Some(record) = user
            .filter(|user| user.user_id == target.user_id)
            .and_then(|user| user.deletion)
        else {
            return Ok(Ended::NotOurs);
        };
        self.end_sessions(target).await?;
        if !self.erase_items(target).await? {
            return Ok(Ended::NotOurs);
        }
        if self.now_ms() < record.settle_at {
            let parked = Lease {
                until: record.settle_at,
                ..self.lease()
            };
            parts
                .users
                .claim_deletion(&target.username, &target.user_id, parked, 0)
                .await?;
            return Ok(Ended::Parked);
        }
        self.erase_the_rest(target).await
    }

    /// Ends every session of `target` through the final path (announced on the revocation
    /// log first), between two bumps of its credentials epoch; returns how many it ended.
    pub async fn end_sessions(&self, target: &Target) -> Result<usize, AuthError> {
        let families = &self.parts().families;
        let owner = EpochOwner {
            username: Some(&target.username),
            user_id: &target.user_id,
        };
        let ended = families
            .epochs()
            .around(owner, families.end_all(&target.user_id))
            .await?;
        audit(Event::AccountSessionsEnded, target);
        Ok(ended)
    }

    /// Erases the items partition page by page, renewing the lease between pages; false when
    /// the lease was lost.
    async fn erase_items(&self, target: &Target) -> Result<bool, AuthError> {
        let Some(items) = &self.parts().items else {
            return Ok(true);
        };
        let held = self.erase_partition(items, target, true).await?;
        if held {
            audit(Event::AccountItemsErased, target);
        }
        Ok(held)
    }

    /// The final items pass, the sessions rows, the login-attempts row, and the user item.
    async fn erase_the_rest(&self, target: &Target) -> Result<Ended, AuthError> {
        let parts = self.parts();
        if !self.erase_items(target).await?
            || !self.erase_partition(&parts.sessions, target, false).await?
        {
            return Ok(Ended::NotOurs);
        }
        parts.lockout.forget(&target.username).await?;
        if parts.users.erase(&target.username, &target.user_id).await? {
            Ok(Ended::Erased)
        } else {
            Ok(Ended::NotOurs)
        }
    }

    /// Erases `target`'s partition of `eraser`'s table; false when the lease was lost.
    async fn erase_partition(
        &self,
        eraser: &PartitionEraser,
        target: &Target,
        items: bool,
    ) -> Result<bool, AuthError> {
        loop {
            let (erased, more) = eraser.erase_page(&target.user_id).await?;
            let counted = if items { erased } else { 0 };
            self.parts().metrics.items_deleted.add(counted);
            if !self.renew(target, counted).await? {
                return Ok(false);
            }
            if !more {
                return Ok(true);
            }
        }
    }

    /// Takes or renews this replica's lease on `target`'s record, adding `erased` to its
    /// progress; false when another replica holds it or there is no record.
    async fn renew(&self, target: &Target, erased: u64) -> Result<bool, AuthError> {
        self.parts()
            .users
            .claim_deletion(&target.username, &target.user_id, self.lease(), erased)
            .await
    }
}

/// One audit line about an erasure step (no client: the work runs in the background).
fn audit(event: Event, target: &Target) {
    Record::new(event, Outcome::Succeeded, &ClientInfo::default())
        .user(&target.user_id)
        .username(&target.username)
        .log();
}
