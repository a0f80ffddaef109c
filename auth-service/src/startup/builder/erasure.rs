//! The erasure part of the instance: the deletion records' worker, its sweeper running and its
//! metrics registered.

use std::{sync::Arc, time::Duration};

use super::Builder;
use crate::{
    credentials::VendingConfig,
    erasure::{Erasure, ErasureMetrics, ErasureParts, PartitionEraser, SETTLE_MARGIN},
    family::Families,
    lockout::Lockout,
    users::UserStore,
};

impl Builder<'_> {
    /// Account erasure over these parts and, with credential vending, the items table; its
    /// sweeper runs every --erasure-sweep-secs.
    pub(super) fn erasure(
        &mut self,
        users: &UserStore,
        families: &Families,
        lockout: &Lockout,
        vending: Option<&VendingConfig>,
    ) -> Erasure {
        let dynamodb = &self.aws.dynamodb;
        let sessions = PartitionEraser::new(
            dynamodb.clone(),
            self.settings.sessions_table.clone(),
            "user_id",
            "session_id",
        );
        let items = vending.map(|config| {
            let table = config.table.table_name().to_owned();
            PartitionEraser::new(dynamodb.clone(), table, "owner", "key")
        });
        // Credentials vended before a deletion may write items until they expire.
        let settle = vending.map_or(Duration::ZERO, |config| config.duration + SETTLE_MARGIN);
        let metrics = Arc::new(ErasureMetrics::default());
        metrics.register(&mut self.registry);
        let erasure = Erasure::new(ErasureParts {
            users: users.clone(),
            families: families.clone(),
            lockout: lockout.clone(),
            sessions,
            items,
            settle,
            clock: Arc::clone(&self.clock),
            metrics,
        });
        let interval = self.settings.erasure.sweep_interval();
        self.tasks.push(erasure.spawn_sweeper(interval));
        erasure
    }
}
