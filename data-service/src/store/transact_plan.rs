//! TransactWriteItems' plan: the caller's conditions judged against what the transaction read,
//! and the one TransactWriteItems request that applies every op on the condition that each item
//! is still exactly as read (its version and expiry, see `expressions::replace_condition`).
//! Judging here rather than in DynamoDB's conditions lets every rule of the single-item writes
//! hold inside a transaction: an expired item is absent (a put creates it anew at version 1),
//! an item of the older layout or with a malformed version is handled as PutItem and
//! UpdateItem handle it, and every op's resulting version is known.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put as PutOp, TransactWriteItem, Update as UpdateOp,
};

use super::{
    Precondition, Put, Update,
    conflict::{expect_version, growable, refusal},
    decode::Stamp,
    expressions::{Expression, replace_condition},
    key_of,
    put::whole_item,
    updates::{self, Layout},
};
use crate::{convert::ATTRIBUTES_MAP, error::DataError};

/// Most ops of one transaction, as DynamoDB's TransactWriteItems.
pub const MAX_TRANSACT_OPS: usize = 100;

/// One validated op of a transaction.
#[derive(Clone, Debug)]
pub enum TransactOp {
    /// A put, with its precondition.
    Put(Put),
    /// An update of an existing item.
    Update(Update),
    /// A delete of an existing item (at version `expected`).
    Delete {
        /// The item's key.
        key: String,
        /// Only at this version.
        expected: Option<u64>,
    },
    /// A condition on an item the transaction does not write: `IfAbsent` or `Version`.
    Check {
        /// The item's key.
        key: String,
        /// What must hold.
        precondition: Precondition,
    },
}

impl TransactOp {
    /// The key the op is on.
    pub fn key(&self) -> &str {
        match self {
            Self::Put(put) => &put.key,
            Self::Update(update) => &update.key,
            Self::Delete { key, .. } | Self::Check { key, .. } => key,
        }
    }
}

/// What one key held when the transaction read it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    stamp: Stamp,
    layout: Layout,
}

impl Snapshot {
    /// The snapshot of a stored item (or its projection to the bookkeeping and the map).
    pub fn of(raw: &HashMap<String, AttributeValue>) -> Self {
        let layout = match raw.get(ATTRIBUTES_MAP) {
            Some(AttributeValue::M(_)) => Layout::Map,
            _ => Layout::TopLevel,
        };
        Self {
            stamp: Stamp::of(raw),
            layout,
        }
    }
}

/// The request to send and each op's version after it.
#[derive(Debug)]
pub struct Plan {
    /// The TransactWriteItems entries, one per op, in order.
    pub items: Vec<TransactWriteItem>,
    /// One per op: see `TransactWriteItemsResponse.versions`.
    pub versions: Vec<u64>,
}

/// Judges every op against what was `found` (by key) at `now` (Unix ms) and builds the request.
/// Every op whose condition fails is reported, by index.
pub fn plan(
    table: &str,
    owner: &str,
    ops: &[TransactOp],
    found: &HashMap<String, Snapshot>,
    now: i64,
) -> Result<Plan, DataError> {
    let now_s = now.div_euclid(1000);
    let mut failed = Vec::new();
    let mut versions = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let stored = found.get(op.key()).map(|snapshot| &snapshot.stamp);
        match judge(op, stored.filter(|stamp| !stamp.expired(now_s))) {
            Ok(version) => versions.push(version),
            Err(error) => failed.push((i, error)),
        }
    }
    if !failed.is_empty() {
        return Err(DataError::TransactionFailed(failed));
    }
    let items = (ops.iter().enumerate())
        .map(|(i, op)| {
            let snapshot = found.get(op.key());
            let live = snapshot.filter(|found| !found.stamp.expired(now_s));
            write_item(table, owner, (i, op), snapshot, live, now)
        })
        .collect::<Result<_, _>>()?;
    Ok(Plan { items, versions })
}

/// Whether `op` may go ahead on what is `live` (None: absent or expired), and the version the
/// item is at after it (0: absent).
fn judge(op: &TransactOp, live: Option<&Stamp>) -> Result<u64, DataError> {
    match op {
        TransactOp::Put(put) => match put.precondition {
            Precondition::IfAbsent | Precondition::Version(0) => absent(live).map(|()| 1),
            Precondition::Version(expected) => {
                expect_version(live, expected).map(|()| expected + 1)
            }
            Precondition::None => Ok(live.and_then(Stamp::next_version).unwrap_or(1)),
        },
        TransactOp::Update(update) => {
            let stamp = live.ok_or(DataError::NotFound)?;
            match update.expected {
                Some(expected) => expect_version(Some(stamp), expected)?,
                None => growable(stamp)?,
            }
            Ok(match stamp.version() {
                Some(version) => version + 1,
                // A missing version starts at 1; a fraction grows and still reads as 0.
                None if stamp.raw_version().is_none() => 1,
                None => 0,
            })
        }
        TransactOp::Delete { expected, .. } => {
            let stamp = live.ok_or(DataError::NotFound)?;
            match expected {
                Some(expected) if stamp.version() != Some(*expected) => Err(refusal(stamp, false)),
                _ => Ok(0),
            }
        }
        TransactOp::Check { precondition, .. } => match (precondition, live) {
            (Precondition::IfAbsent | Precondition::Version(0), live) => absent(live).map(|()| 0),
            (Precondition::Version(_), None) => Err(DataError::VersionMismatch { current: 0 }),
            (Precondition::Version(expected), Some(stamp))
                if stamp.version() == Some(*expected) =>
            {
                Ok(*expected)
            }
            (_, Some(stamp)) => Err(refusal(stamp, false)),
            (Precondition::None, None) => Ok(0),
        },
    }
}

/// `Ok` when nothing live is stored.
fn absent(live: Option<&Stamp>) -> Result<(), DataError> {
    live.map_or(Ok(()), |stamp| Err(refusal(stamp, false)))
}

/// The TransactWriteItems entry of op `i`, conditional on the item being still as found
/// (`snapshot`: stored, expired or not; `live`: the same unless expired).
fn write_item(
    table: &str,
    owner: &str,
    (i, op): (usize, &TransactOp),
    snapshot: Option<&Snapshot>,
    live: Option<&Snapshot>,
    now: i64,
) -> Result<TransactWriteItem, DataError> {
    let unchanged = replace_condition(snapshot.map(|found| &found.stamp));
    let built = match op {
        TransactOp::Put(put) => {
            let item = whole_item(owner, put, live.map(|found| &found.stamp), now);
            let (condition, names, values) = parts(unchanged);
            let put = PutOp::builder().table_name(table).set_item(Some(item));
            (put.set_condition_expression(condition))
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build()
                .map(|put| TransactWriteItem::builder().put(put).build())
        }
        TransactOp::Update(update) => {
            let layout = live.map_or(Layout::Map, |found| found.layout);
            let field = format!("ops[{i}].update.{}", update.largest_field());
            let expression = both(updates::update(update, now, layout), unchanged);
            return update_item(table, owner, update, expression.within_limit(&field)?, i);
        }
        TransactOp::Delete { key, .. } => {
            let (condition, names, values) = parts(unchanged);
            (Delete::builder().table_name(table))
                .set_key(Some(key_of(owner, key)))
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build()
                .map(|delete| TransactWriteItem::builder().delete(delete).build())
        }
        TransactOp::Check { key, .. } => {
            let (condition, names, values) = parts(unchanged);
            (ConditionCheck::builder().table_name(table))
                .set_key(Some(key_of(owner, key)))
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build()
                .map(|check| TransactWriteItem::builder().condition_check(check).build())
        }
    };
    built.map_err(|error| unbuilt(i, &error))
}

/// The Update entry of op `i` with its merged `expression`.
fn update_item(
    table: &str,
    owner: &str,
    update: &Update,
    expression: Expression,
    i: usize,
) -> Result<TransactWriteItem, DataError> {
    let text = expression.text.clone();
    let (condition, names, values) = parts(expression);
    (UpdateOp::builder().table_name(table))
        .set_key(Some(key_of(owner, &update.key)))
        .update_expression(text)
        .set_condition_expression(condition)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .build()
        .map(|update| TransactWriteItem::builder().update(update).build())
        .map_err(|error| unbuilt(i, &error))
}

/// A builder's refusal: a required field left unset, a bug.
fn unbuilt(i: usize, error: &impl std::fmt::Display) -> DataError {
    DataError::Internal(anyhow::anyhow!("transaction op {i}: {error}"))
}

/// `first` with `second`'s condition added to its own (their placeholders agree: both come
/// from `expressions::names` and the same value names mean the same values).
fn both(first: Expression, second: Expression) -> Expression {
    let condition = match (first.condition, second.condition) {
        (Some(a), Some(b)) => Some(format!("({a}) AND ({b})")),
        (a, b) => a.or(b),
    };
    let (mut names, mut values) = (first.names, first.values);
    names.extend(second.names);
    values.extend(second.values);
    Expression {
        text: first.text,
        condition,
        names,
        values,
    }
}

/// A condition's parts as the builders take them (no empty maps: DynamoDB refuses those).
#[allow(clippy::type_complexity)]
fn parts(
    expression: Expression,
) -> (
    Option<String>,
    Option<HashMap<String, String>>,
    Option<HashMap<String, AttributeValue>>,
) {
    (
        expression.condition,
        (!expression.names.is_empty()).then_some(expression.names),
        (!expression.values.is_empty()).then_some(expression.values),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{expressions::placeholders_match, n, s};

    fn stamp(pairs: &[(&str, AttributeValue)]) -> Stamp {
        let raw: HashMap<String, AttributeValue> = (pairs.iter())
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        Stamp::of(&raw)
    }

    fn put(precondition: Precondition) -> TransactOp {
        TransactOp::Put(Put {
            key: "k".into(),
            attributes: HashMap::new(),
            precondition,
            expires_at: None,
        })
    }

    fn update(expected: Option<u64>) -> TransactOp {
        TransactOp::Update(Update {
            key: "k".into(),
            set: HashMap::from([("a".to_owned(), s("x"))]),
            remove: vec!["r".into()],
            add: HashMap::new(),
            append: HashMap::new(),
            delete_from_sets: HashMap::new(),
            expected,
            expires_at: Some(9),
        })
    }

    fn check(precondition: Precondition) -> TransactOp {
        TransactOp::Check {
            key: "k".into(),
            precondition,
        }
    }

    #[test]
    fn conditions_are_judged_like_the_single_item_writes() {
        let v3 = stamp(&[("version", n(3))]);
        let malformed = stamp(&[("version", s("x"))]);
        let unversioned = stamp(&[]);
        assert_eq!(judge(&put(Precondition::IfAbsent), None).unwrap(), 1);
        assert!(matches!(
            judge(&put(Precondition::IfAbsent), Some(&v3)),
            Err(DataError::VersionMismatch { current: 3 })
        ));
        assert_eq!(judge(&put(Precondition::Version(3)), Some(&v3)).unwrap(), 4);
        assert_eq!(
            judge(&put(Precondition::None), Some(&malformed)).unwrap(),
            1
        );
        assert_eq!(judge(&update(None), Some(&unversioned)).unwrap(), 1);
        assert!(matches!(
            judge(&update(Some(1)), Some(&malformed)),
            Err(DataError::MalformedItem)
        ));
        assert!(matches!(
            judge(&update(None), None),
            Err(DataError::NotFound)
        ));
        let delete = TransactOp::Delete {
            key: "k".into(),
            expected: Some(2),
        };
        assert!(matches!(
            judge(&delete, Some(&v3)),
            Err(DataError::VersionMismatch { current: 3 })
        ));
        assert_eq!(
            judge(&check(Precondition::Version(3)), Some(&v3)).unwrap(),
            3
        );
        assert_eq!(judge(&check(Precondition::Version(0)), None).unwrap(), 0);
        assert!(matches!(
            judge(&check(Precondition::Version(3)), None),
            Err(DataError::VersionMismatch { current: 0 })
        ));
    }

    #[test]
    fn expired_items_are_absent_and_every_failed_op_is_named() {
        let expired = Snapshot::of(&HashMap::from([
            ("version".to_owned(), n(7)),
            ("expires_at".to_owned(), n(1)),
        ]));
        let found = HashMap::from([("k".to_owned(), expired)]);
        let planned = plan("t", "o", &[put(Precondition::IfAbsent)], &found, 5_000).unwrap();
        assert_eq!(planned.versions, [1]);
        match plan("t", "o", &[update(None)], &found, 5_000) {
            Err(DataError::TransactionFailed(failed)) => {
                assert!(matches!(failed[..], [(0, DataError::NotFound)]));
            }
            other => panic!("expected the op to fail, got {other:?}"),
        }
    }

    #[test]
    fn every_entry_defines_exactly_the_placeholders_it_uses() {
        let stored = [
            None,
            Some(stamp(&[("version", n(3))])),
            Some(stamp(&[("version", s("x")), ("expires_at", n(99))])),
            Some(stamp(&[])),
        ];
        for found in &stored {
            placeholders_match(&replace_condition(found.as_ref()));
            for layout in [Layout::Map, Layout::TopLevel] {
                for expected in [None, Some(3)] {
                    let TransactOp::Update(change) = update(expected) else {
                        unreachable!()
                    };
                    let merged = both(
                        updates::update(&change, 1, layout),
                        replace_condition(found.as_ref()),
                    );
                    placeholders_match(&merged);
                }
            }
        }
    }
}
