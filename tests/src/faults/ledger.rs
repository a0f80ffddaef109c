//! The write ledger: what each writer knows about its keys, and the check that what is
//! stored is its last acknowledged write or at most one write of unknown outcome on top.

use std::sync::{Arc, Mutex};

use common::proto::data::v1::{Item, value::Kind as ValueKind};
use tonic::{Code, Status};

/// An item's version and nonce.
pub fn stamp(item: &Item) -> (u64, Option<String>) {
    let nonce = item
        .attributes
        .get("nonce")
        .and_then(|value| match &value.kind {
            Some(ValueKind::StringValue(nonce)) => Some(nonce.clone()),
            _ => None,
        });
    (item.version, nonce)
}

/// What one writer knows about one of its keys.
#[derive(Debug)]
pub struct KeyState {
    pub key: String,
    /// The version and nonce of the last write known to have landed.
    pub confirmed: u64,
    pub nonce: Option<String>,
    /// Writes whose outcome is unknown: the version they would have, their nonce, and the
    /// code they got.
    pub ambiguous: Vec<(u64, String, Code)>,
    /// The key must be read before the next write.
    pub resync: bool,
    /// Writes that got OK, and unacknowledged ones later found stored.
    pub acked: u64,
    pub landed: u64,
}

impl KeyState {
    pub fn new(key: String) -> Self {
        Self {
            key,
            confirmed: 0,
            nonce: None,
            ambiguous: Vec::new(),
            resync: false,
            acked: 0,
            landed: 0,
        }
    }

    /// Checks what is stored against what the writer knows: the last confirmed write, or one
    /// of the unknown ones exactly once on top of it. Anything else lost an acknowledged write
    /// or applied one twice.
    pub fn observe(&mut self, found: Option<(u64, Option<String>)>) -> Result<(), String> {
        let (version, nonce) = found.unwrap_or((0, None));
        if version == self.confirmed && nonce == self.nonce {
            return Ok(());
        }
        let landed = self
            .ambiguous
            .iter()
            .position(|(at, sent, _)| *at == version && nonce.as_ref() == Some(sent));
        match landed {
            Some(_) if version == self.confirmed + 1 => {
                self.confirmed = version;
                self.nonce = nonce;
                self.landed += 1;
                self.ambiguous.clear();
                Ok(())
            }
            _ => Err(format!(
                "key {} stores version {version} nonce {nonce:?}; last acknowledged {} {:?}, \
                 unknown outcomes {:?}",
                self.key, self.confirmed, self.nonce, self.ambiguous
            )),
        }
    }

    /// Takes in the answer to a write sent with `nonce` after version `self.confirmed`.
    pub fn written(&mut self, nonce: String, result: &Result<Item, Status>) -> Result<(), String> {
        match result {
            Ok(item) => {
                let (version, stored) = stamp(item);
                let next = self.confirmed + 1;
                if version != next || stored.as_ref() != Some(&nonce) {
                    return Err(format!(
                        "key {}: write {nonce} acknowledged at version {version} ({stored:?}), \
                         expected {next}",
                        self.key
                    ));
                }
                self.confirmed = next;
                self.nonce = Some(nonce);
                self.ambiguous.clear();
                self.acked += 1;
            }
            Err(status) => {
                self.ambiguous
                    .push((self.confirmed + 1, nonce, status.code()));
                self.resync = true;
            }
        }
        Ok(())
    }
}

/// A user's keys as its writer knows them, with the token to read them back.
#[derive(Clone)]
pub struct Owner {
    pub label: String,
    pub token: String,
    pub keys: Arc<Mutex<Vec<KeyState>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acknowledged(state: &mut KeyState, nonce: &str) {
        let item = Item {
            key: state.key.clone(),
            version: state.confirmed + 1,
            attributes: [("nonce".to_owned(), crate::data::string(nonce))].into(),
            ..Default::default()
        };
        state.written(nonce.to_owned(), &Ok(item)).unwrap();
    }

    fn unknown(state: &mut KeyState, nonce: &str) {
        let lost = Err(Status::unavailable("lost"));
        state.written(nonce.to_owned(), &lost).unwrap();
    }

    #[test]
    fn the_last_acknowledged_write_or_one_unknown_on_top_passes() {
        let mut state = KeyState::new("k".into());
        acknowledged(&mut state, "a");
        unknown(&mut state, "b");
        assert!(
            state.observe(Some((1, Some("a".into())))).is_ok(),
            "did not land"
        );
        assert!(
            state.observe(Some((2, Some("b".into())))).is_ok(),
            "landed once"
        );
        assert_eq!((state.confirmed, state.landed), (2, 1));
    }

    #[test]
    fn a_lost_or_doubled_write_fails() {
        let mut state = KeyState::new("k".into());
        acknowledged(&mut state, "a");
        acknowledged(&mut state, "b");
        assert!(state.observe(Some((1, Some("a".into())))).is_err(), "lost");
        assert!(state.observe(None).is_err(), "lost with the item");
        unknown(&mut state, "c");
        assert!(state.observe(Some((4, Some("c".into())))).is_err(), "twice");
    }

    #[test]
    fn an_acknowledgement_that_skips_a_version_fails() {
        let mut state = KeyState::new("k".into());
        let skipped = Item {
            version: 2,
            attributes: [("nonce".to_owned(), crate::data::string("a"))].into(),
            ..Default::default()
        };
        assert!(state.written("a".into(), &Ok(skipped)).is_err());
    }
}
