//! Client input to DynamoDB: every value checked against DynamoDB's rules (and ours), every
//! problem reported with the path of the offending field.

use std::{
    collections::{HashMap, hash_map::Entry},
    hash::Hash,
};

use aws_sdk_dynamodb::{primitives::Blob, types::AttributeValue};
use common::{
    proto::data::v1::{BytesSet, ListValue, MapValue, NumberSet, StringSet, Value, value::Kind},
    status::Violation,
};

use super::{
    ATTRIBUTE_LEVEL, MAX_DEPTH, MAX_NAME_BYTES, Path, RESERVED_ATTRIBUTES, quote, report::Report,
};
use crate::number::Decimal;

/// Converts a request's attributes (`field` is the request field, `attributes` or `set`) into a
/// DynamoDB item, or returns every problem found, each with the path of the offending field.
pub fn attributes_to_dynamo(
    field: &str,
    attributes: &HashMap<String, Value>,
) -> Result<HashMap<String, AttributeValue>, Vec<Violation>> {
    let mut report = Report::default();
    let mut item = HashMap::with_capacity(attributes.len());
    // Sorted, so the violations (and the first one, which names the status message) are stable.
    let mut names: Vec<&String> = attributes.keys().collect();
    names.sort_unstable();
    for name in names {
        let path = || format!("{field}[{}]", quote(name));
        check_name(name, true, &path, &mut report);
        if let Some(value) = attributes
            .get(name)
            .and_then(|value| value_to_dynamo(value, &path, ATTRIBUTE_LEVEL, &mut report))
        {
            item.insert(name.clone(), value);
        }
    }
    report.finish(field).map(|()| item)
}

/// Attribute names and map keys: non-empty, at most [`MAX_NAME_BYTES`], and top-level names not
/// reserved. Names are case-sensitive in DynamoDB, so only the exact reserved spellings clash.
fn check_name(name: &str, top_level: bool, path: Path, report: &mut Report) -> bool {
    let what = if top_level {
        "attribute name"
    } else {
        "map key"
    };
    if name.is_empty() {
        report.add(path, format!("{what} must not be empty"));
    } else if name.len() > MAX_NAME_BYTES {
        let length = name.len();
        report.add(
            path,
            format!("{what} is {length} bytes of UTF-8; at most {MAX_NAME_BYTES} are allowed"),
        );
    } else if top_level && RESERVED_ATTRIBUTES.contains(&name) {
        report.add(
            path,
            format!(
                "attribute name {name:?} is reserved by the service for its own bookkeeping \
                 (reserved: {}); choose another name",
                RESERVED_ATTRIBUTES.join(", ")
            ),
        );
    } else {
        return true;
    }
    false
}

/// Converts one value at nesting `depth` ([`ATTRIBUTE_LEVEL`] for an attribute), reporting
/// problems under `path`.
/// Returns `None` when the value, or anything inside it, is invalid.
pub(super) fn value_to_dynamo(
    value: &Value,
    path: Path,
    depth: usize,
    report: &mut Report,
) -> Option<AttributeValue> {
    let Some(kind) = &value.kind else {
        report.add(
            path,
            "has no kind set; set exactly one of string_value, number_value, bytes_value, \
             bool_value, null_value, list_value, map_value, string_set, number_set or bytes_set",
        );
        return None;
    };
    match kind {
        Kind::StringValue(s) => Some(AttributeValue::S(s.clone())),
        Kind::NumberValue(n) => {
            let here = || format!("{}.number_value", path());
            check_number(n, &here, report).map(|_| AttributeValue::N(n.clone()))
        }
        Kind::BytesValue(b) => Some(AttributeValue::B(Blob::new(b.clone()))),
        Kind::BoolValue(b) => Some(AttributeValue::Bool(*b)),
        Kind::NullValue(n) => null_to_dynamo(*n, path, report),
        Kind::ListValue(list) => list_to_dynamo(list, path, depth, report),
        Kind::MapValue(map) => map_to_dynamo(map, path, depth, report),
        Kind::StringSet(set) => string_set_to_dynamo(set, path, report),
        Kind::NumberSet(set) => number_set_to_dynamo(set, path, report),
        Kind::BytesSet(set) => bytes_set_to_dynamo(set, path, report),
    }
}

fn null_to_dynamo(null: i32, path: Path, report: &mut Report) -> Option<AttributeValue> {
    if null == prost_types::NullValue::NullValue as i32 {
        return Some(AttributeValue::Null(true));
    }
    let here = || format!("{}.null_value", path());
    report.add(&here, format!("must be NULL_VALUE (0), got {null}"));
    None
}

/// Reports a non-empty list or map at the deepest level, whose elements would be one too deep.
fn too_deep(here: Path, depth: usize, report: &mut Report) -> bool {
    if depth < MAX_DEPTH {
        return false;
    }
    report.add(
        here,
        format!(
            "nests too deep: its elements would be at level {}, DynamoDB allows {MAX_DEPTH} \
             (an attribute is level {ATTRIBUTE_LEVEL}: the service keeps them in one map)",
            depth + 1
        ),
    );
    true
}

fn list_to_dynamo(
    list: &ListValue,
    path: Path,
    depth: usize,
    report: &mut Report,
) -> Option<AttributeValue> {
    let here = || format!("{}.list_value", path());
    if !list.values.is_empty() && too_deep(&here, depth, report) {
        return None;
    }
    let mut valid = true;
    let mut out = Vec::with_capacity(list.values.len());
    for (i, value) in list.values.iter().enumerate() {
        let element = || format!("{}[{i}]", here());
        match value_to_dynamo(value, &element, depth + 1, report) {
            Some(value) => out.push(value),
            None => valid = false,
        }
    }
    valid.then_some(AttributeValue::L(out))
}

fn map_to_dynamo(
    map: &MapValue,
    path: Path,
    depth: usize,
    report: &mut Report,
) -> Option<AttributeValue> {
    let here = || format!("{}.map_value", path());
    if !map.fields.is_empty() && too_deep(&here, depth, report) {
        return None;
    }
    let mut names: Vec<&String> = map.fields.keys().collect();
    names.sort_unstable();
    let mut valid = true;
    let mut out = HashMap::with_capacity(map.fields.len());
    for name in names {
        let entry = || format!("{}[{}]", here(), quote(name));
        let named = check_name(name, false, &entry, report);
        let converted = map
            .fields
            .get(name)
            .and_then(|value| value_to_dynamo(value, &entry, depth + 1, report));
        match converted {
            Some(value) if named => {
                out.insert(name.clone(), value);
            }
            _ => valid = false,
        }
    }
    valid.then_some(AttributeValue::M(out))
}

fn string_set_to_dynamo(
    set: &StringSet,
    path: Path,
    report: &mut Report,
) -> Option<AttributeValue> {
    let here = || format!("{}.string_set", path());
    let members = set.values.iter().map(|s| Some(s.as_str()));
    check_set(members, &here, report, duplicate).then(|| AttributeValue::Ss(set.values.clone()))
}

fn bytes_set_to_dynamo(set: &BytesSet, path: Path, report: &mut Report) -> Option<AttributeValue> {
    let here = || format!("{}.bytes_set", path());
    let members = set.values.iter().map(|b| Some(b.as_slice()));
    check_set(members, &here, report, duplicate)
        .then(|| AttributeValue::Bs(set.values.iter().map(|b| Blob::new(b.clone())).collect()))
}

/// Number sets compare members as numbers, like DynamoDB: `1`, `1.0` and `10E-1` are duplicates.
fn number_set_to_dynamo(
    set: &NumberSet,
    path: Path,
    report: &mut Report,
) -> Option<AttributeValue> {
    let here = || format!("{}.number_set", path());
    let mut members = Vec::with_capacity(set.values.len());
    for (i, number) in set.values.iter().enumerate() {
        let member = || format!("{}[{i}]", here());
        members.push(check_number(number, &member, report));
    }
    let all_numbers = members.iter().all(Option::is_some);
    let same_number = |number: &Decimal, first: usize| {
        format!(
            "equals member [{first}] as a number (both are {number}); set members must be distinct"
        )
    };
    let distinct = check_set(members, &here, report, same_number);
    (all_numbers && distinct).then(|| AttributeValue::Ns(set.values.clone()))
}

fn duplicate<K>(_: &K, first: usize) -> String {
    format!("duplicates member [{first}]; set members must be distinct")
}

/// Checks that a set is non-empty and its members distinct; `None` members were invalid and
/// already reported. Each duplicate is reported at its own index, naming the first occurrence.
fn check_set<K: Hash + Eq>(
    members: impl IntoIterator<Item = Option<K>>,
    here: Path,
    report: &mut Report,
    describe_duplicate: impl Fn(&K, usize) -> String,
) -> bool {
    let mut seen = HashMap::new();
    let mut count = 0;
    let mut distinct = true;
    for (i, member) in members.into_iter().enumerate() {
        count += 1;
        let Some(member) = member else { continue };
        match seen.entry(member) {
            Entry::Occupied(first) => {
                let at = || format!("{}[{i}]", here());
                report.add(&at, describe_duplicate(first.key(), *first.get()));
                distinct = false;
            }
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }
    if count == 0 {
        report.add(
            here,
            "must have at least one member (DynamoDB has no empty sets)",
        );
        return false;
    }
    distinct
}

/// Parses a number, reporting why DynamoDB would refuse it.
fn check_number(number: &str, here: Path, report: &mut Report) -> Option<Decimal> {
    match Decimal::parse(number) {
        Ok(decimal) => Some(decimal),
        Err(error) => {
            report.add(here, error.describe());
            None
        }
    }
}
