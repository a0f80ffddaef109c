//! BatchWriteItems: 1 to 25 puts and deletes on distinct keys, each put checked like a PutItem
//! (its violations named `puts[i].…`), within [`MAX_WRITE_BYTES`] in all.

use std::collections::HashMap;

use common::{
    proto::data::v1::{BatchWriteItemsRequest, PutItemRequest},
    status::Violation,
};

use super::{check, put};
use crate::{
    convert,
    error::DataError,
    store::{BatchEntry, MAX_BATCH_WRITES},
};

/// Most bytes of items one batch or transaction writes, as DynamoDB counts them (names, values
/// and the bookkeeping attributes at their largest): the data-service's 1 MiB request limit
/// (`startup`), which a larger request meets first (RESOURCE_EXHAUSTED). A request that
/// arrives whole can still count more (each item adds up to ~170 bytes of bookkeeping); it is
/// refused here, naming the field, rather than by DynamoDB (4 MB per transaction).
pub const MAX_WRITE_BYTES: usize = 1024 * 1024;

/// The violations of `result` (a request part's own check) under `prefix`.
pub(super) fn prefixed<T>(
    prefix: &str,
    result: Result<T, DataError>,
    violations: &mut Vec<Violation>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(DataError::InvalidArgument(found)) => {
            violations.extend(found.into_iter().map(|violation| {
                Violation::new(
                    format!("{prefix}.{}", violation.field),
                    violation.description,
                )
            }));
            None
        }
        Err(other) => {
            violations.push(Violation::new(prefix, other.to_string()));
            None
        }
    }
}

/// Records `key` under `path`, or a violation if an earlier entry (`seen`) named it.
pub(super) fn distinct<'a>(
    seen: &mut HashMap<&'a str, String>,
    key: &'a str,
    path: String,
    violations: &mut Vec<Violation>,
) {
    if let Some(first) = seen.get(key) {
        violations.push(Violation::new(
            path,
            format!("names the same key as {first}; name each key once"),
        ));
    } else {
        seen.insert(key, path);
    }
}

/// Checks BatchWriteItems: its entries in request order (puts, then deletes), each with the
/// name the request gives it.
pub fn batch_write(
    request: &BatchWriteItemsRequest,
) -> Result<Vec<(String, BatchEntry)>, DataError> {
    let count = request.puts.len() + request.deletes.len();
    if count == 0 || count > MAX_BATCH_WRITES {
        return Err(DataError::invalid(
            "puts",
            format!("name 1 to {MAX_BATCH_WRITES} puts and deletes in all, got {count}"),
        ));
    }
    let (mut violations, mut seen, mut entries, mut bytes) =
        (Vec::new(), HashMap::new(), Vec::new(), 0);
    for (i, batch_put) in request.puts.iter().enumerate() {
        let path = format!("puts[{i}]");
        distinct(
            &mut seen,
            &batch_put.key,
            format!("{path}.key"),
            &mut violations,
        );
        let checked = put(&PutItemRequest {
            key: batch_put.key.clone(),
            attributes: batch_put.attributes.clone(),
            expires_at: batch_put.expires_at,
            ..Default::default()
        });
        if let Some(checked) = prefixed(&path, checked, &mut violations) {
            bytes += convert::item_size(&checked.key, &checked.attributes);
            entries.push((path, BatchEntry::Put(checked)));
        }
    }
    for (i, key) in request.deletes.iter().enumerate() {
        let path = format!("deletes[{i}]");
        violations.extend(convert::validate_key(&path, key).err());
        distinct(&mut seen, key, path.clone(), &mut violations);
        entries.push((path, BatchEntry::Delete(key.clone())));
    }
    total_bytes("puts", bytes, &mut violations);
    check(violations)?;
    Ok(entries)
}

/// A violation of `field` when the items of a call add up to more than [`MAX_WRITE_BYTES`].
pub(super) fn total_bytes(field: &str, bytes: usize, violations: &mut Vec<Violation>) {
    if bytes > MAX_WRITE_BYTES {
        violations.push(Violation::new(
            field,
            format!(
                "the items add up to {bytes} bytes; one call writes at most {MAX_WRITE_BYTES}: \
                 split it"
            ),
        ));
    }
}
