//! PutItem and UpdateItem: keys, attributes (converted, sized and counted), names and
//! conditions.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    proto::data::v1::{ListValue, PutItemRequest, UpdateItemRequest, Value, value::Kind},
    status::Violation,
};

use super::{check, expiry, names};
use crate::{
    convert,
    error::DataError,
    store::{Precondition, Put, Update},
};
use common::clock::now_millis;

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
    let expires_at = expiry(request.expires_at.as_ref(), now_millis(), &mut violations);
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
        expires_at,
    })
}

/// The update fields that name attributes, in the order conflicts are reported.
const UPDATE_FIELDS: &str = "set, remove, add, append and delete_from_sets";

fn sorted(mut names: Vec<&String>) -> Vec<&String> {
    names.sort_unstable();
    names
}

/// Names that appear in more than one of the update's fields, reported where they appear again.
fn conflicts(request: &UpdateItemRequest) -> Vec<Violation> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    let mut violations = Vec::new();
    let keyed: [(&str, Vec<&String>); 4] = [
        ("set", sorted(request.set.keys().collect())),
        ("add", sorted(request.add.keys().collect())),
        ("append", sorted(request.append.keys().collect())),
        (
            "delete_from_sets",
            sorted(request.delete_from_sets.keys().collect()),
        ),
    ];
    let paths = keyed
        .iter()
        .flat_map(|(field, names)| {
            names
                .iter()
                .map(move |name| (*field, name.as_str(), format!("{field}[{name:?}]")))
        })
        .chain(
            request
                .remove
                .iter()
                .enumerate()
                .map(|(i, name)| ("remove", name.as_str(), format!("remove[{i}]"))),
        );
    for (field, name, path) in paths {
        match seen.get(name) {
            Some(first) if *first != field => violations.push(Violation::new(
                path,
                format!(
                    "{name:?} is also in {first}; an attribute may appear in only one of \
                     {UPDATE_FIELDS}"
                ),
            )),
            Some(_) => {}
            None => {
                seen.insert(name, field);
            }
        }
    }
    violations
}

/// Values of `field` that are not of the kinds its operation takes.
fn kinds(field: &str, values: &HashMap<String, Value>, sets_only: bool) -> Vec<Violation> {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_unstable();
    names
        .into_iter()
        .filter(|name| {
            !matches!(
                (&values[*name].kind, sets_only),
                (
                    Some(Kind::StringSet(_) | Kind::NumberSet(_) | Kind::BytesSet(_)),
                    _
                ) | (Some(Kind::NumberValue(_)), false)
            )
        })
        .map(|name| {
            let takes = if sets_only {
                "a string_set, number_set or bytes_set"
            } else {
                "a number_value or a string_set, number_set or bytes_set"
            };
            Violation::new(format!("{field}[{name:?}]"), format!("must be {takes}"))
        })
        .collect()
}

/// The lists of `append` as values.
fn lists(append: &HashMap<String, ListValue>) -> HashMap<String, Value> {
    append
        .iter()
        .map(|(name, list)| {
            let value = Value {
                kind: Some(Kind::ListValue(list.clone())),
            };
            (name.clone(), value)
        })
        .collect()
}

/// Attributes an update writes a value to.
fn changes(request: &UpdateItemRequest) -> usize {
    request.set.len() + request.add.len() + request.append.len() + request.delete_from_sets.len()
}

/// Every rule of an UpdateItem but the conversions.
fn update_violations(request: &UpdateItemRequest) -> Vec<Violation> {
    let mut violations = Vec::new();
    violations.extend(convert::validate_key("key", &request.key).err());
    let changes = changes(request);
    if changes == 0 && request.remove.is_empty() && request.expires_at.is_none() {
        violations.push(Violation::new(
            "set",
            format!("name at least one attribute in {UPDATE_FIELDS}, or set expires_at"),
        ));
    }
    if changes > MAX_SET_ATTRIBUTES {
        violations.push(Violation::new(
            "set",
            format!(
                "at most {MAX_SET_ATTRIBUTES} attributes per update in set, add, append and \
                 delete_from_sets together, got {changes}; use PutItem to write a whole item"
            ),
        ));
    }
    violations.extend(names("remove", &request.remove, false));
    violations.extend(conflicts(request));
    violations.extend(kinds("add", &request.add, false));
    violations.extend(kinds("delete_from_sets", &request.delete_from_sets, true));
    violations
}

/// Checks UpdateItem.
pub fn update(request: &UpdateItemRequest) -> Result<Update, DataError> {
    let mut violations = update_violations(request);
    let expires_at = expiry(request.expires_at.as_ref(), now_millis(), &mut violations);
    if changes(request) > MAX_SET_ATTRIBUTES {
        // Not worth converting: the request is refused anyway.
        return Err(DataError::InvalidArgument(violations));
    }
    let key = &request.key;
    let appended = lists(&request.append);
    let (Some(set), Some(add), Some(append), Some(delete_from_sets)) = (
        converted("set", key, &request.set, &mut violations),
        converted("add", key, &request.add, &mut violations),
        converted("append", key, &appended, &mut violations),
        converted(
            "delete_from_sets",
            key,
            &request.delete_from_sets,
            &mut violations,
        ),
    ) else {
        return Err(DataError::InvalidArgument(violations));
    };
    check(violations)?;
    Ok(Update {
        key: key.clone(),
        set,
        remove: request.remove.clone(),
        add,
        append,
        delete_from_sets,
        expected: request.expected_version,
        expires_at,
    })
}
