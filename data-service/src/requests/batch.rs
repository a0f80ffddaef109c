//! BatchGetItems: 1 to 100 valid, distinct keys, and the attributes to return.

use std::collections::HashSet;

use common::{proto::data::v1::BatchGetItemsRequest, status::Violation};

use super::{attributes_to_get, check};
use crate::{
    convert,
    error::DataError,
    store::{MAX_BATCH_GET_KEYS, Projection},
};

/// Checks BatchGetItems: the keys to read, in the request's order, and the projection.
pub fn batch_get(request: &BatchGetItemsRequest) -> Result<Projection, DataError> {
    let count = request.keys.len();
    if count == 0 || count > MAX_BATCH_GET_KEYS {
        return Err(DataError::invalid(
            "keys",
            format!("name 1 to {MAX_BATCH_GET_KEYS} keys, got {count}"),
        ));
    }
    let mut violations = Vec::new();
    let mut seen = HashSet::new();
    for (i, key) in request.keys.iter().enumerate() {
        let path = format!("keys[{i}]");
        if let Err(invalid) = convert::validate_key(&path, key) {
            violations.push(invalid);
        } else if !seen.insert(key) {
            violations.push(Violation::new(path, "is listed twice; name each key once"));
        }
    }
    check(violations)?;
    attributes_to_get(&request.attributes_to_get)
}
