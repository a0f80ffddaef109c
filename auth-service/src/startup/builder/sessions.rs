//! The sessions part of the instance: the family policy from the settings, with the
//! revocation feed's poller and the repairer running.

use std::{sync::Arc, time::Duration};

use super::Builder;
use crate::{
    family::{Families, SessionPolicy},
    sessions::SessionStore,
    users::{CredentialsEpochs, UserStore},
};

impl Builder<'_> {
    /// Sessions under the family policy, with the revocation feed's poller and the repairer
    /// running.
    pub(super) fn families(&mut self, users: &UserStore) -> anyhow::Result<Families> {
        let sessions = SessionStore::new(
            self.aws.dynamodb.clone(),
            self.settings.sessions_table.clone(),
        );
        let revocations = self.revocations()?;
        self.tasks.push(revocations.spawn_poller());
        let repair_tick = revocations.timing().poll;
        let families = Families::new(
            sessions,
            self.session_policy()?,
            revocations,
            CredentialsEpochs::new(users.clone()),
            Arc::clone(&self.clock),
        );
        self.tasks.push(families.spawn_repairer(repair_tick));
        Ok(families)
    }

    /// How sessions behave, from the settings.
    fn session_policy(&self) -> anyhow::Result<SessionPolicy> {
        let settings = self.settings;
        Ok(SessionPolicy {
            refresh_lifetime: Duration::from_secs(settings.refresh_token_ttl_secs),
            retry_grace: Duration::from_secs(settings.refresh_retry_grace_secs),
            max_per_user: usize::try_from(settings.max_sessions_per_user)?,
            access_lifetime: Duration::from_secs(settings.access_token_ttl_secs),
        })
    }
}
