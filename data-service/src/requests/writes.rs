//! PutItem and UpdateItem: keys, attributes (converted, sized and counted), names and
//! conditions.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    proto::data::v1::{PutItemRequest, UpdateItemRequest, Value},
    status::Violation,
};

use super::{check, names};
use crate::{
    convert,
    error::DataError,
    store::{Precondition, Put, Update},
};

/// Most attributes one UpdateItem sets. Each costs about 14 bytes of update expression, and
/// DynamoDB refuses expressions over 4 KB (about 250 attributes); emulators that do not refuse
/// them slow down sharply (dynalite spent 18 s on 20,000).
pub const MAX_SET_ATTRIBUTES: usize = 100;

/// Converts the attributes under `field` of the item `key`, adding every problem (their size
/// included) to `violations`. `None` when the request must be refused without converting (too
/// many values: not worth copying up to a 4 MB message).
fn converted(
    field: &str,
    key: &str,
    attributes: &HashMap<String, Value>,
    violations: &mut Vec<Violation>,
) -> Option<HashMap<String, AttributeValue>> {
    if let Err(too_many) = convert::check_value_count(field, attributes) {
        violations.push(too_many);
        return None;
    }
    match convert::attributes_to_dynamo(field, attributes) {
        Ok(converted) => {
            violations.extend(convert::check_item_size(key, &converted).err());
            Some(converted)
        }
        Err(found) => {
            violations.extend(found);
            Some(HashMap::new())
        }
    }
}

/// Checks PutItem.
pub fn put(request: &PutItemRequest) -> Result<Put, DataError> {
    let mut violations = Vec::new();
    violations.extend(convert::validate_key("key", &request.key).err());
    if request.if_absent && request.expected_version.is_some() {
        violations.push(Violation::new(
            "expected_version",
            "cannot be combined with if_absent; an absent item has no version",
        ));
    }
    let Some(attributes) = converted(
        "attributes",
        &request.key,
        &request.attributes,
        &mut violations,
    ) else {
        return Err(DataError::InvalidArgument(violations));
    };
    check(violations)?;
    let precondition = match (request.if_absent, request.expected_version) {
        (true, _) => Precondition::IfAbsent,
        (false, Some(version)) => Precondition::Version(version),
        (false, None) => Precondition::None,
    };
    Ok(Put {
        key: request.key.clone(),
        attributes,
        precondition,
    })
}

/// Checks UpdateItem.
pub fn update(request: &UpdateItemRequest) -> Result<Update, DataError> {
    let mut violations = Vec::new();
    violations.extend(convert::validate_key("key", &request.key).err());
    if request.set.is_empty() && request.remove.is_empty() {
        violations.push(Violation::new(
            "set",
            "set or remove at least one attribute",
        ));
    }
    violations.extend(names("remove", &request.remove, false));
    for (i, name) in request.remove.iter().enumerate() {
        if request.set.contains_key(name) {
            violations.push(Violation::new(
                format!("remove[{i}]"),
                format!("{name:?} is also in set; an attribute cannot be both set and removed"),
            ));
        }
    }
    if request.set.len() > MAX_SET_ATTRIBUTES {
        violations.push(Violation::new(
            "set",
            format!(
                "at most {MAX_SET_ATTRIBUTES} attributes per update, got {}; use PutItem to \
                 write a whole item",
                request.set.len()
            ),
        ));
        return Err(DataError::InvalidArgument(violations));
    }
    let Some(set) = converted("set", &request.key, &request.set, &mut violations) else {
        return Err(DataError::InvalidArgument(violations));
    };
    check(violations)?;
    Ok(Update {
        key: request.key.clone(),
        set,
        remove: request.remove.clone(),
        expected: request.expected_version,
    })
}
