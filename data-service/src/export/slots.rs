//! The bound on running exports: each holds a task and up to two pages of items until its
//! reader finishes or leaves, so a user may run [`super::MAX_EXPORTS_PER_USER`] at once and
//! the process [`super::MAX_EXPORTS`]; beyond either, a new one is RESOURCE_EXHAUSTED. Only
//! authenticated callers get here, so the map of users holds at most `MAX_EXPORTS` entries.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::error::DataError;

#[derive(Debug, Default)]
struct Running {
    total: usize,
    by_user: HashMap<Arc<str>, usize>,
}

/// The running exports, by user. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Slots {
    running: Arc<Mutex<Running>>,
    per_user: usize,
    total: usize,
}

/// One running export's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    slots: Slots,
    user: Arc<str>,
}

impl Slots {
    /// At most `per_user` exports per user and `total` in all.
    pub fn new(per_user: usize, total: usize) -> Self {
        Self {
            running: Arc::default(),
            per_user,
            total,
        }
    }

    /// A place for an export of `user`'s, if both bounds allow it.
    pub fn take(&self, user: &str) -> Result<Slot, DataError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.total >= self.total {
            return Err(DataError::TooManyExports("this server"));
        }
        let user: Arc<str> = Arc::from(user);
        let mine = running.by_user.entry(Arc::clone(&user)).or_default();
        if *mine >= self.per_user {
            return Err(DataError::TooManyExports("this user"));
        }
        *mine += 1;
        running.total += 1;
        Ok(Slot {
            slots: self.clone(),
            user,
        })
    }

    /// Exports running in all, and users running one.
    pub fn running(&self) -> (usize, usize) {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        (running.total, running.by_user.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = (self.slots.running)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        running.total = running.total.saturating_sub(1);
        if let Some(mine) = running.by_user.get_mut(&self.user) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                running.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_runs_at_most_their_share_and_others_still_can() {
        let slots = Slots::new(2, 10);
        let first = slots.take("alice").unwrap();
        let _second = slots.take("alice").unwrap();
        assert!(matches!(
            slots.take("alice"),
            Err(DataError::TooManyExports("this user"))
        ));
        let _bob = slots.take("bob").unwrap();
        drop(first);
        let _again = slots.take("alice").unwrap();
        assert_eq!(slots.running(), (3, 2));
    }

    #[test]
    fn the_process_bound_holds_across_users_and_frees_with_each_end() {
        let slots = Slots::new(2, 3);
        let held: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|user| slots.take(user).unwrap())
            .collect();
        assert!(matches!(
            slots.take("d"),
            Err(DataError::TooManyExports("this server"))
        ));
        drop(held);
        assert_eq!(slots.running(), (0, 0), "nothing left behind");
        assert!(slots.take("d").is_ok());
    }
}
