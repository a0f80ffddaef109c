//! Request validation: every rule is checked, and every violation reported, before anything
//! is sent to DynamoDB. The output is what the store needs, already converted (the store's
//! operation types: this module depends on the store, never the other way).
//!
//! - `writes`: PutItem and UpdateItem;
//! - `query`: QueryItems and its page token;
//! - `batch`: BatchGetItems;
//! - `batch_write`: BatchWriteItems (and the rules it shares with transactions);
//! - `transact`: TransactWriteItems.

mod batch;
mod batch_write;
mod query;
#[cfg(test)]
mod tests;
mod transact;
mod writes;

use std::collections::HashSet;

use common::status::Violation;
use prost_types::Timestamp;

use crate::{
    convert::{self, MAX_NAME_BYTES, RESERVED_ATTRIBUTES},
    error::DataError,
    store::Projection,
};

pub use batch::batch_get;
pub use batch_write::{MAX_WRITE_BYTES, batch_write};
pub use query::{DEFAULT_LIMIT, MAX_LIMIT, query, shape};
pub use transact::{MAX_CLIENT_TOKEN, transact};
pub use writes::{MAX_SET_ATTRIBUTES, put, update};

/// Most attribute names in `remove` or `attributes_to_get`.
pub const MAX_NAMES: usize = 100;

fn check(violations: Vec<Violation>) -> Result<(), DataError> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(DataError::InvalidArgument(violations))
    }
}

/// Checks an `expires_at` against `now_millis`: a valid timestamp in the future. Returns it in
/// whole Unix seconds (what DynamoDB's TTL reads), rounded up so an item never expires before
/// the instant asked for; `None` when unset or invalid (then added to `violations`).
fn expiry(at: Option<&Timestamp>, now_millis: i64, violations: &mut Vec<Violation>) -> Option<i64> {
    expiry_seconds(at?, now_millis)
        .map_err(|violation| violations.push(violation))
        .ok()
}

/// [`expiry`] of a set timestamp.
fn expiry_seconds(at: &Timestamp, now_millis: i64) -> Result<i64, Violation> {
    let Some(instant) = common::timestamp::to_time(at) else {
        return Err(Violation::new(
            "expires_at",
            "is not a valid timestamp (nanos must be 0 to 999,999,999, the date within years \
             -9999 to 9999)",
        ));
    };
    if instant.unix_timestamp_nanos() <= i128::from(now_millis) * 1_000_000 {
        return Err(Violation::new(
            "expires_at",
            "must be in the future; to remove an item now, delete it",
        ));
    }
    // Within the years to_time accepts, so no overflow.
    Ok(at.seconds + i64::from(at.nanos > 0))
}

/// Checks an item key.
pub fn key(key: &str) -> Result<(), DataError> {
    convert::validate_key("key", key).map_err(|v| DataError::InvalidArgument(vec![v]))
}

/// Checks `attributes_to_get` and returns what to read: everything when it is empty, else the
/// client attributes it names. Reserved names are served anyway (they are fields of `Item`), so
/// they leave the projection; naming only them reads no client attribute, never all of them.
pub fn attributes_to_get(requested: &[String]) -> Result<Projection, DataError> {
    check(names("attributes_to_get", requested, true))?;
    if requested.is_empty() {
        return Ok(Projection::All);
    }
    Ok(Projection::Only(
        requested
            .iter()
            .filter(|name| !RESERVED_ATTRIBUTES.contains(&name.as_str()))
            .cloned()
            .collect(),
    ))
}

/// Attribute names in a list: non-empty, short, distinct, and (unless `reserved_ok`) not one
/// of ours.
fn names(field: &str, names: &[String], reserved_ok: bool) -> Vec<Violation> {
    let mut violations = Vec::new();
    if names.len() > MAX_NAMES {
        violations.push(Violation::new(
            field,
            format!("at most {MAX_NAMES} names, got {}", names.len()),
        ));
        return violations;
    }
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        let path = format!("{field}[{i}]");
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            violations.push(Violation::new(
                path,
                format!("must be 1 to {MAX_NAME_BYTES} bytes"),
            ));
        } else if !reserved_ok && RESERVED_ATTRIBUTES.contains(&name.as_str()) {
            violations.push(Violation::new(
                path,
                format!("{name:?} is reserved by the service"),
            ));
        } else if !seen.insert(name) {
            violations.push(Violation::new(path, format!("{name:?} is listed twice")));
        }
    }
    violations
}
