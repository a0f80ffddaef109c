//! What a write does after DynamoDB refused its condition: read what is stored (the version and
//! creation time only) and judge whether the client's condition failed, the item cannot be
//! versioned, or only the layout (or a concurrent writer) was in the way.

use super::{ItemStore, UserDb, decode::Stamp, expiry, key_of};
use crate::{convert::EXPIRES_AT, error::DataError};

impl ItemStore {
    /// The error for a failed condition, judged by what is stored now: NOT_FOUND when the item
    /// is gone or expired, MALFORMED_ITEM for a version the write cannot work with (`bumps`: the write
    /// would increment it), else the version the client did not expect.
    pub(super) async fn conflict(
        &self,
        db: &UserDb,
        owner: &str,
        key: &str,
        bumps: bool,
    ) -> DataError {
        match self.stamp(db, owner, key).await {
            Ok(Some(stamp)) if stamp.expired(expiry::now_seconds()) => DataError::NotFound,
            Ok(None) => DataError::NotFound,
            Ok(Some(stamp)) => refusal(&stamp, bumps),
            Err(error) => error,
        }
    }

    /// The item's version, creation time and expiry only (a strongly consistent read
    /// projecting them and the key, which every item has, so an item without any still reads
    /// as present), for writes that must know them without reading and converting the item.
    pub(super) async fn stamp(
        &self,
        db: &UserDb,
        owner: &str,
        key: &str,
    ) -> Result<Option<Stamp>, DataError> {
        let output = self
            .metrics
            .dynamodb_calls
            .send(
                "GetItem",
                db.reads()
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(key_of(owner, key)))
                    .consistent_read(true)
                    .projection_expression("#k, #v, #c, #e")
                    .expression_attribute_names("#k", "key")
                    .expression_attribute_names("#v", "version")
                    .expression_attribute_names("#c", "created_at")
                    .expression_attribute_names("#e", EXPIRES_AT)
                    .send(),
            )
            .await
            .map_err(|e| DataError::aws("GetItem", e))?;
        Ok(output.item.as_ref().map(Stamp::of))
    }
}

/// Checks `expected_version` against what was found (absent items are at version 0): `Ok` when
/// a write replacing `found` at its successor version may go ahead.
pub fn expect_version(found: Option<&Stamp>, expected: u64) -> Result<(), DataError> {
    match found {
        None if expected == 0 => Ok(()),
        None => Err(DataError::VersionMismatch { current: 0 }),
        Some(stamp) => match stamp.version() {
            Some(current) if current == expected && stamp.next_version().is_some() => Ok(()),
            _ => Err(refusal(stamp, true)),
        },
    }
}

/// Checks that an unconditional update may bump what is stored, as its condition judges it: a
/// missing version starts at 1, a number from 1 to u64::MAX - 1 grows, anything else is
/// MALFORMED_ITEM.
pub fn growable(stamp: &Stamp) -> Result<(), DataError> {
    if stamp.bumpable() {
        Ok(())
    } else {
        Err(DataError::MalformedItem)
    }
}

/// Why a conditional write cannot go ahead on the item `stamp` describes: a version the
/// service could not have written (or, for a write that bumps it, one that cannot grow) is
/// MALFORMED_ITEM, any other is the version the client did not expect.
pub fn refusal(stamp: &Stamp, bumps: bool) -> DataError {
    let current = stamp.version();
    match current {
        Some(u64::MAX) if bumps => DataError::MalformedItem,
        Some(current) => DataError::VersionMismatch { current },
        None => DataError::MalformedItem,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::AttributeValue;

    use super::*;

    fn stamp(version: Option<AttributeValue>) -> Stamp {
        let mut raw = HashMap::new();
        if let Some(version) = version {
            raw.insert("version".to_owned(), version);
        }
        Stamp::of(&raw)
    }

    fn n(number: &str) -> Option<AttributeValue> {
        Some(AttributeValue::N(number.to_owned()))
    }

    #[test]
    fn expected_versions_are_judged_like_dynamodb_conditions() {
        assert!(expect_version(None, 0).is_ok());
        assert!(matches!(
            expect_version(None, 3),
            Err(DataError::VersionMismatch { current: 0 })
        ));
        assert!(expect_version(Some(&stamp(n("3"))), 3).is_ok());
        assert!(matches!(
            expect_version(Some(&stamp(n("4"))), 3),
            Err(DataError::VersionMismatch { current: 4 })
        ));
        let largest = stamp(n("18446744073709551615"));
        assert!(matches!(
            expect_version(Some(&largest), u64::MAX),
            Err(DataError::MalformedItem)
        ));
        assert!(matches!(
            expect_version(Some(&stamp(n("1.5"))), 1),
            Err(DataError::MalformedItem)
        ));
    }

    #[test]
    fn only_missing_or_growable_versions_can_be_bumped_unconditionally() {
        assert!(growable(&stamp(None)).is_ok());
        assert!(growable(&stamp(n("7"))).is_ok());
        assert!(growable(&stamp(n("1.5"))).is_ok(), "a number in range");
        assert!(growable(&stamp(n("18446744073709551614"))).is_ok());
        for malformed in [
            n("0"),
            n("-1"),
            n("18446744073709551615"),
            Some(AttributeValue::S("1".into())),
        ] {
            assert!(matches!(
                growable(&stamp(malformed)),
                Err(DataError::MalformedItem)
            ));
        }
    }
}
