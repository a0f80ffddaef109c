//! What every WatchRevocations stream reads: an immutable view of the hub's log, in the order
//! this replica learned of each revocation, shared by all streams. Appending copies one small
//! block (and, every [`BLOCK`] appends, the list of block pointers), never the log; so a new
//! watcher takes the current view with one `Arc` clone, and a stream costs a cursor into it
//! however long the log is.

use std::{iter, sync::Arc};

use super::Revocation;

/// Entries per block: small, so an append copies little.
pub const BLOCK: usize = 64;

/// A revocation and its place in this replica's log.
#[derive(Debug)]
pub struct Entry {
    /// Position in the log, from 1: later entries were learned of later. A session whose
    /// `not_after` grows is appended again, so the latest entry of a session is the one that
    /// counts.
    pub seq: u64,
    /// The revocation.
    pub revocation: Revocation,
}

#[derive(Debug, Default)]
struct Block {
    entries: Vec<Arc<Entry>>,
    /// The latest `not_after` of its entries: once it has passed, the block goes.
    not_after: i64,
}

impl Block {
    fn of(entries: Vec<Arc<Entry>>) -> Self {
        let not_after = entries
            .iter()
            .map(|entry| entry.revocation.not_after)
            .max()
            .unwrap_or(i64::MIN);
        Self { entries, not_after }
    }

    fn last_seq(&self) -> u64 {
        self.entries.last().map_or(0, |entry| entry.seq)
    }
}

/// One view of the log; cheap to clone, never changed.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Full blocks, oldest first.
    sealed: Arc<[Arc<Block>]>,
    /// The newest entries, fewer than [`BLOCK`].
    tail: Arc<Block>,
}

impl Snapshot {
    /// A view of `entries`, given in log order.
    pub fn of(entries: impl IntoIterator<Item = Arc<Entry>>) -> Self {
        entries
            .into_iter()
            .fold(Self::default(), |snapshot, entry| snapshot.with(entry))
    }

    /// This view plus `entry`, whose `seq` is above every other.
    pub fn with(&self, entry: Arc<Entry>) -> Self {
        let mut tail = Vec::with_capacity(self.tail.entries.len() + 1);
        tail.extend(self.tail.entries.iter().cloned());
        tail.push(entry);
        if tail.len() < BLOCK {
            return Self {
                sealed: Arc::clone(&self.sealed),
                tail: Arc::new(Block::of(tail)),
            };
        }
        let sealed = self
            .sealed
            .iter()
            .cloned()
            .chain(iter::once(Arc::new(Block::of(tail))));
        Self {
            sealed: sealed.collect(),
            tail: Arc::default(),
        }
    }

    /// This view without the full blocks whose every entry expired at `now` (Unix seconds),
    /// or `None` when there are none.
    pub fn without_expired(&self, now: i64) -> Option<Self> {
        let live = |block: &&Arc<Block>| block.not_after > now;
        if self.sealed.iter().all(|block| live(&block)) {
            return None;
        }
        Some(Self {
            sealed: self.sealed.iter().filter(live).cloned().collect(),
            tail: Arc::clone(&self.tail),
        })
    }

    /// The `seq` of the newest entry; 0 when empty.
    pub fn last_seq(&self) -> u64 {
        match self.tail.last_seq() {
            0 => self.sealed.last().map_or(0, |block| block.last_seq()),
            seq => seq,
        }
    }

    /// Entries held, current or not (expired ones leave with their block).
    pub fn held(&self) -> usize {
        self.blocks().map(|block| block.entries.len()).sum()
    }

    /// The entries after `seq`, in log order.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &Arc<Entry>> {
        self.blocks()
            .skip_while(move |block| block.last_seq() <= seq)
            .flat_map(|block| block.entries.iter())
            .skip_while(move |entry| entry.seq <= seq)
    }

    fn blocks(&self) -> impl Iterator<Item = &Arc<Block>> {
        self.sealed.iter().chain(iter::once(&self.tail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, not_after: i64) -> Arc<Entry> {
        Arc::new(Entry {
            seq,
            revocation: Revocation {
                session_id: format!("session-{seq}"),
                user_id: None,
                revoked_at_ms: 0,
                not_after,
            },
        })
    }

    fn seqs<'a>(entries: impl Iterator<Item = &'a Arc<Entry>>) -> Vec<u64> {
        entries.map(|entry| entry.seq).collect()
    }

    #[test]
    fn an_append_leaves_older_views_as_they_were() {
        let empty = Snapshot::default();
        let mut views = vec![empty.clone()];
        for seq in 1..=200 {
            let next = views.last().unwrap().with(entry(seq, 100));
            views.push(next);
        }
        assert_eq!(empty.last_seq(), 0);
        assert_eq!(empty.after(0).count(), 0);
        for (n, view) in views.iter().enumerate() {
            let n = u64::try_from(n).unwrap();
            assert_eq!(view.last_seq(), n);
            assert_eq!(seqs(view.after(0)), (1..=n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn after_starts_past_the_given_position_in_any_block() {
        let view = Snapshot::of((1..=150).map(|seq| entry(seq, 100)));
        for from in [0, 1, 63, 64, 65, 128, 149, 150, 999] {
            let expected: Vec<u64> = (from + 1..=150).collect();
            assert_eq!(seqs(view.after(from)), expected, "after {from}");
        }
    }

    #[test]
    fn blocks_leave_once_all_their_entries_expired() {
        // Two full blocks: the first expires at 10, the second holds one entry until 20.
        let entries = (1..=128).map(|seq| entry(seq, if seq == 100 { 20 } else { 10 }));
        let view = Snapshot::of(entries).with(entry(129, 10));
        assert!(view.without_expired(9).is_none());
        let pruned = view.without_expired(10).unwrap();
        assert_eq!(pruned.held(), 65, "the live block and the tail stay");
        assert_eq!(pruned.after(0).next().unwrap().seq, 65);
        assert_eq!(pruned.last_seq(), 129);
        assert!(pruned.without_expired(10).is_none());
        assert_eq!(pruned.without_expired(20).unwrap().held(), 1);
    }
}
