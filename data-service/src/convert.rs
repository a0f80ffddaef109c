//! Converts attribute values between the API's `Value` and DynamoDB's `AttributeValue`, checking
//! client input first so every mistake is reported with its field path and DynamoDB never sees a
//! request it would reject.

use std::{
    collections::{HashMap, hash_map::Entry},
    hash::Hash,
};

use crate::number::Decimal;
use aws_sdk_dynamodb::{primitives::Blob, types::AttributeValue};
use common::{
    proto::data::v1::{BytesSet, ListValue, MapValue, NumberSet, StringSet, Value, value::Kind},
    status::Violation,
};

/// Attribute names the service keeps for its own bookkeeping (partition, sort key, version and
/// timestamps); a client attribute of the same name would overwrite them.
pub const RESERVED_ATTRIBUTES: [&str; 5] = ["owner", "key", "version", "created_at", "updated_at"];

/// DynamoDB's nesting limit. A top-level attribute value is level 1 and the elements of a list or
/// map at level `n` are at level `n + 1`; no value may be deeper than level 32, so at most 31
/// lists or maps can nest (real DynamoDB accepts a leaf at level 32 and rejects one at level 33).
pub const MAX_DEPTH: usize = 32;

/// DynamoDB's item size limit, which counts names as well as values.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Our limit on attribute names and map keys, in UTF-8 bytes. DynamoDB allows 64 KB for non-key
/// names; we keep its 255-byte limit for key-like names so names stay short enough to be quoted
/// in error paths and expressions.
pub const MAX_NAME_BYTES: usize = 255;

/// DynamoDB's limit on a sort key value, which is what an item key becomes.
pub const MAX_KEY_BYTES: usize = 1024;

/// At most this many violations are collected (plus one saying how many were left out), so a
/// hostile request cannot make us build a huge error; the same bound the status builder
/// applies to what is sent.
pub const MAX_VIOLATIONS: usize = common::status::MAX_VIOLATIONS;

/// Size allowances for the bookkeeping attributes the store adds to every item: a UUID owner and
/// a timestamp as long as RFC 3339 with nanoseconds and an offset (longer than any numeric form).
const OWNER_ID_BYTES: usize = 36;
const TIMESTAMP_BYTES: usize = 35;
/// The largest version, u64::MAX, has 20 significant digits.
const VERSION_BYTES: usize = 20_usize.div_ceil(2) + 1;

/// A field path built only when a message needs it, so valid input allocates no paths.
type Path<'a> = &'a dyn Fn() -> String;

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
            .and_then(|value| value_to_dynamo(value, &path, 1, &mut report))
        {
            item.insert(name.clone(), value);
        }
    }
    report.finish(field).map(|()| item)
}

/// Converts a stored item back into API attributes, leaving out the reserved names, which the
/// caller reads into the `Item` fields itself. An error means the table holds something this
/// service never writes: an internal error, not the client's.
pub fn attributes_from_dynamo(
    item: &HashMap<String, AttributeValue>,
) -> Result<HashMap<String, Value>, String> {
    item.iter()
        .filter(|(name, _)| !RESERVED_ATTRIBUTES.contains(&name.as_str()))
        .map(|(name, value)| {
            let path = || format!("attribute {}", quote(name));
            Ok((name.clone(), from_dynamo(value, &path)?))
        })
        .collect()
}

/// Converts one stored value; see [`attributes_from_dynamo`].
pub fn value_from_dynamo(value: &AttributeValue) -> Result<Value, String> {
    from_dynamo(value, &|| "value".to_owned())
}

/// Checks an item key: DynamoDB refuses empty sort keys and ones over 1024 bytes.
pub fn validate_key(field: &str, key: &str) -> Result<(), Violation> {
    if key.is_empty() {
        return Err(Violation::new(field, "must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Violation::new(
            field,
            format!(
                "is {} bytes of UTF-8; at most {MAX_KEY_BYTES} are allowed",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// The item's size as DynamoDB counts it, including the service's bookkeeping attributes at
/// their largest, so a write we accept is never refused by DynamoDB for its size.
pub fn item_size(key: &str, attributes: &HashMap<String, AttributeValue>) -> usize {
    let bookkeeping = "owner".len()
        + OWNER_ID_BYTES
        + "key".len()
        + key.len()
        + "version".len()
        + VERSION_BYTES
        + "created_at".len()
        + TIMESTAMP_BYTES
        + "updated_at".len()
        + TIMESTAMP_BYTES;
    attributes
        .iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum::<usize>()
        + bookkeeping
}

/// Refuses an item over DynamoDB's 400 KB limit before it is sent, with a message a client can
/// act on instead of an opaque DynamoDB validation error.
pub fn check_item_size(
    key: &str,
    attributes: &HashMap<String, AttributeValue>,
) -> Result<(), Violation> {
    let size = item_size(key, attributes);
    if size > MAX_ITEM_BYTES {
        return Err(Violation::new(
            "attributes",
            format!(
                "would make the item {size} bytes, over DynamoDB's limit of {MAX_ITEM_BYTES} bytes \
                 (names, values, the key and the service's bookkeeping attributes all count)"
            ),
        ));
    }
    Ok(())
}

/// Collects violations up to [`MAX_VIOLATIONS`], counting the rest.
#[derive(Default)]
struct Report {
    violations: Vec<Violation>,
    omitted: usize,
}

impl Report {
    fn add(&mut self, path: Path, description: impl Into<String>) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation::new(path(), description));
        } else {
            self.omitted += 1;
        }
    }

    fn finish(mut self, field: &str) -> Result<(), Vec<Violation>> {
        if self.violations.is_empty() {
            return Ok(());
        }
        if self.omitted > 0 {
            self.violations.push(Violation::new(
                field,
                format!("has {} more problems not listed here", self.omitted),
            ));
        }
        Err(self.violations)
    }
}

/// A name quoted for a field path. Names over the limit (already reported) are cut short so a
/// huge name cannot blow up every path below it.
fn quote(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return format!("{name:?}");
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", format!("{}…", &name[..end]))
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

/// Converts one value at nesting `depth` (1 for an attribute), reporting problems under `path`.
/// Returns `None` when the value, or anything inside it, is invalid.
fn value_to_dynamo(
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
             (a top-level attribute is level 1)",
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

fn from_dynamo(value: &AttributeValue, path: Path) -> Result<Value, String> {
    let kind = match value {
        AttributeValue::S(s) => Kind::StringValue(s.clone()),
        AttributeValue::N(n) => Kind::NumberValue(n.clone()),
        AttributeValue::B(b) => Kind::BytesValue(b.as_ref().to_vec()),
        AttributeValue::Bool(b) => Kind::BoolValue(*b),
        // DynamoDB only stores NULL true; there is nothing else a null could mean.
        AttributeValue::Null(_) => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        AttributeValue::L(list) => Kind::ListValue(ListValue {
            values: list
                .iter()
                .enumerate()
                .map(|(i, value)| from_dynamo(value, &|| format!("{}[{i}]", path())))
                .collect::<Result<_, _>>()?,
        }),
        AttributeValue::M(map) => Kind::MapValue(MapValue {
            fields: map
                .iter()
                .map(|(name, value)| {
                    let entry = || format!("{}[{}]", path(), quote(name));
                    Ok((name.clone(), from_dynamo(value, &entry)?))
                })
                .collect::<Result<_, String>>()?,
        }),
        AttributeValue::Ss(set) => Kind::StringSet(StringSet {
            values: set.clone(),
        }),
        AttributeValue::Ns(set) => Kind::NumberSet(NumberSet {
            values: set.clone(),
        }),
        AttributeValue::Bs(set) => Kind::BytesSet(BytesSet {
            values: set.iter().map(|b| b.as_ref().to_vec()).collect(),
        }),
        _ => {
            return Err(format!(
                "{}: unsupported DynamoDB attribute type (not S, N, B, BOOL, NULL, L, M, SS, NS \
                 or BS)",
                path()
            ));
        }
    };
    Ok(Value { kind: Some(kind) })
}

/// A value's size by DynamoDB's rules. Unknown types count 0; we never write them.
fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(list) => 3 + list.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(name, v)| name.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

/// One byte per two significant digits plus one; an unparsable number (never written by us)
/// counts its full length, to stay conservative.
fn number_size(number: &str) -> usize {
    match Decimal::parse(number) {
        Ok(decimal) => decimal.significant_digits().div_ceil(2) + 1,
        Err(_) => number.len() + 1,
    }
}

#[cfg(test)]
mod tests {
    use proptest::{collection, prelude::*};

    use super::*;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        }
    }

    fn number(n: &str) -> Value {
        Value {
            kind: Some(Kind::NumberValue(n.to_owned())),
        }
    }

    fn bytes(b: &[u8]) -> Value {
        Value {
            kind: Some(Kind::BytesValue(b.to_vec())),
        }
    }

    fn boolean(b: bool) -> Value {
        Value {
            kind: Some(Kind::BoolValue(b)),
        }
    }

    fn null_of(raw: i32) -> Value {
        Value {
            kind: Some(Kind::NullValue(raw)),
        }
    }

    fn null() -> Value {
        null_of(prost_types::NullValue::NullValue as i32)
    }

    fn list(values: Vec<Value>) -> Value {
        Value {
            kind: Some(Kind::ListValue(ListValue { values })),
        }
    }

    fn map(fields: HashMap<String, Value>) -> Value {
        Value {
            kind: Some(Kind::MapValue(MapValue { fields })),
        }
    }

    fn map_of(fields: &[(&str, Value)]) -> Value {
        map(fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect())
    }

    fn string_set(values: &[&str]) -> Value {
        Value {
            kind: Some(Kind::StringSet(StringSet {
                values: values.iter().map(|s| (*s).to_owned()).collect(),
            })),
        }
    }

    fn number_set(values: &[&str]) -> Value {
        Value {
            kind: Some(Kind::NumberSet(NumberSet {
                values: values.iter().map(|s| (*s).to_owned()).collect(),
            })),
        }
    }

    fn bytes_set(values: &[&[u8]]) -> Value {
        Value {
            kind: Some(Kind::BytesSet(BytesSet {
                values: values.iter().map(|b| b.to_vec()).collect(),
            })),
        }
    }

    fn no_kind() -> Value {
        Value { kind: None }
    }

    fn attributes(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect()
    }

    fn violations(pairs: &[(&str, Value)]) -> Vec<Violation> {
        match attributes_to_dynamo("attributes", &attributes(pairs)) {
            Ok(item) => panic!("expected violations, converted to {item:?}"),
            Err(violations) => violations,
        }
    }

    /// The only violation of one attribute named `x`.
    fn only_violation(value: Value) -> Violation {
        let found = violations(&[("x", value)]);
        assert_eq!(found.len(), 1, "{found:#?}");
        found[0].clone()
    }

    fn accepts(value: Value) {
        let attributes = attributes(&[("x", value)]);
        let item = attributes_to_dynamo("attributes", &attributes)
            .unwrap_or_else(|violations| panic!("rejected: {violations:#?}"));
        assert_eq!(attributes_from_dynamo(&item).as_ref(), Ok(&attributes));
    }

    fn round_trip(attributes: &HashMap<String, Value>) -> HashMap<String, Value> {
        let item = attributes_to_dynamo("attributes", attributes)
            .unwrap_or_else(|violations| panic!("rejected: {violations:#?}"));
        attributes_from_dynamo(&item).unwrap_or_else(|error| panic!("{error}"))
    }

    /// `leaf` inside `levels` lists, so the leaf is at level `levels + 1`.
    fn nested_lists(levels: usize, leaf: Value) -> Value {
        (0..levels).fold(leaf, |inner, _| list(vec![inner]))
    }

    fn nested_maps(levels: usize, leaf: Value) -> Value {
        (0..levels).fold(leaf, |inner, _| map_of(&[("m", inner)]))
    }

    #[test]
    fn every_kind_converts_to_the_matching_dynamodb_type() {
        let item = attributes_to_dynamo(
            "attributes",
            &attributes(&[
                ("s", string("hi")),
                ("n", number("-1.5")),
                ("b", bytes(b"\x00\xff")),
                ("t", boolean(true)),
                ("z", null()),
                ("l", list(vec![string("a"), number("2")])),
                ("m", map_of(&[("k", boolean(false))])),
                ("ss", string_set(&["a", "b"])),
                ("ns", number_set(&["1", "2"])),
                ("bs", bytes_set(&[b"a", b"b"])),
            ]),
        )
        .unwrap_or_else(|violations| panic!("{violations:#?}"));
        let expected = HashMap::from([
            ("s".to_owned(), AttributeValue::S("hi".into())),
            ("n".to_owned(), AttributeValue::N("-1.5".into())),
            (
                "b".to_owned(),
                AttributeValue::B(Blob::new(b"\x00\xff".to_vec())),
            ),
            ("t".to_owned(), AttributeValue::Bool(true)),
            ("z".to_owned(), AttributeValue::Null(true)),
            (
                "l".to_owned(),
                AttributeValue::L(vec![
                    AttributeValue::S("a".into()),
                    AttributeValue::N("2".into()),
                ]),
            ),
            (
                "m".to_owned(),
                AttributeValue::M(HashMap::from([(
                    "k".to_owned(),
                    AttributeValue::Bool(false),
                )])),
            ),
            (
                "ss".to_owned(),
                AttributeValue::Ss(vec!["a".into(), "b".into()]),
            ),
            (
                "ns".to_owned(),
                AttributeValue::Ns(vec!["1".into(), "2".into()]),
            ),
            (
                "bs".to_owned(),
                AttributeValue::Bs(vec![Blob::new(b"a".to_vec()), Blob::new(b"b".to_vec())]),
            ),
        ]);
        assert_eq!(item, expected);
    }

    #[test]
    fn every_kind_round_trips() {
        let original = attributes(&[
            ("s", string("héllo")),
            ("empty_s", string("")),
            ("n", number("12.5e-3")),
            ("b", bytes(&[0, 1, 255])),
            ("empty_b", bytes(b"")),
            ("t", boolean(true)),
            ("f", boolean(false)),
            ("z", null()),
            ("l", list(vec![string("a"), null(), list(vec![])])),
            ("empty_l", list(vec![])),
            ("m", map_of(&[("inner", map_of(&[("n", number("7"))]))])),
            ("empty_m", map_of(&[])),
            ("ss", string_set(&["", "a", "A"])),
            ("ns", number_set(&["1", "-1", "0"])),
            ("bs", bytes_set(&[b"", b"\x00"])),
        ]);
        assert_eq!(round_trip(&original), original);
    }

    #[test]
    fn a_value_without_a_kind_is_rejected() {
        let violation = only_violation(no_kind());
        assert_eq!(violation.field, r#"attributes["x"]"#);
        assert!(violation.description.contains("no kind"), "{violation:?}");
    }

    #[test]
    fn strings_and_bytes_may_be_empty_anywhere() {
        accepts(string(""));
        accepts(bytes(b""));
        accepts(list(vec![string(""), bytes(b"")]));
        accepts(string_set(&[""]));
        accepts(bytes_set(&[b""]));
    }

    #[test]
    fn attribute_names_must_not_be_empty() {
        let found = violations(&[("", string("v"))]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, r#"attributes[""]"#);
        assert!(found[0].description.contains("must not be empty"));
    }

    #[test]
    fn attribute_names_are_limited_to_255_bytes_of_utf8() {
        accepts(string("v")); // sanity: the helper name is fine
        let longest = "a".repeat(MAX_NAME_BYTES);
        assert!(attributes_to_dynamo("attributes", &attributes(&[(&longest, null())])).is_ok());

        let too_long = "a".repeat(MAX_NAME_BYTES + 1);
        let found = violations(&[(&too_long, null())]);
        assert_eq!(found.len(), 1);
        assert!(found[0].description.contains("256 bytes"), "{found:?}");

        // 128 two-byte characters: 128 characters but 256 bytes.
        let wide = "é".repeat(128);
        assert_eq!(violations(&[(&wide, null())]).len(), 1);
    }

    #[test]
    fn reserved_names_are_rejected_but_only_in_their_exact_spelling() {
        for name in RESERVED_ATTRIBUTES {
            let found = violations(&[(name, string("mine"))]);
            assert_eq!(found.len(), 1, "{name}");
            assert_eq!(found[0].field, format!("attributes[{name:?}]"));
            assert!(found[0].description.contains("reserved by the service"));
        }
        accepts(map_of(&[(
            "owner",
            string("nested names are not reserved"),
        )]));
        let item = attributes_to_dynamo("attributes", &attributes(&[("Owner", null())]));
        assert!(item.is_ok(), "names are case-sensitive: {item:?}");
    }

    #[test]
    fn map_keys_follow_the_name_rules_except_reservation() {
        let found = violations(&[("m", map_of(&[("", null())]))]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, r#"attributes["m"].map_value[""]"#);
        assert!(found[0].description.contains("map key must not be empty"));

        let long = "k".repeat(MAX_NAME_BYTES + 1);
        let found = violations(&[("m", map_of(&[(&long, null())]))]);
        assert_eq!(found.len(), 1, "{found:?}");
        accepts(map_of(&[(&"k".repeat(MAX_NAME_BYTES), null())]));
    }

    #[test]
    fn the_request_field_names_the_paths() {
        let found = attributes_to_dynamo("set", &attributes(&[("x", no_kind())]))
            .err()
            .unwrap_or_default();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, r#"set["x"]"#);
    }

    #[test]
    fn names_in_paths_are_escaped_and_huge_ones_cut_short() {
        let found = violations(&[("a\"b", no_kind())]);
        assert_eq!(found[0].field, r#"attributes["a\"b"]"#);

        let huge = "é".repeat(10_000);
        let found = violations(&[(&huge, no_kind())]);
        assert_eq!(found.len(), 2, "name and value: {found:?}");
        for violation in found {
            assert!(
                violation.field.len() < MAX_NAME_BYTES + 30,
                "{}",
                violation.field
            );
            assert!(violation.field.ends_with("…\"]"), "{}", violation.field);
        }
    }

    #[test]
    fn valid_numbers_are_accepted() {
        for n in [
            "0",
            "-0",
            "0.000",
            "000",
            "007",
            "1",
            "-1",
            "1.5",
            "-0.25",
            "1e5",
            "1E5",
            "1e+5",
            "1e-5",
            "1.0e0",
            "9.9999999999999999999999999999999999999E+125",
            "-9.9999999999999999999999999999999999999E+125",
            "1E-130",
            "-1E-130",
            "10E-131",
            "0.1E-129",
            "12345678901234567890123456789012345678",
            // 38 significant digits; trailing zeros are not significant.
            "1234567890123456789012345678901234567800000",
            "0.00000000000000000000000000000012345678901234567890123456789012345678",
            // Leading zeros are not significant either.
            "000000000000000000000000000000000000000000001",
            "0e9999",
            "0.0e-9999",
            "1e000000000000000000000000000000000000125",
        ] {
            accepts(number(n));
        }
    }

    #[test]
    fn malformed_numbers_are_rejected() {
        for n in [
            "",
            "-",
            "+1",
            "NaN",
            "nan",
            "Infinity",
            "-Infinity",
            "inf",
            ".5",
            "5.",
            "-.5",
            "1e",
            "1e+",
            "1e-",
            "e5",
            "1.2.3",
            " 1",
            "1 ",
            "1_000",
            "0x10",
            "1,5",
            "١",
            "1e5.0",
            "--1",
            "1ee5",
        ] {
            let violation = only_violation(number(n));
            assert_eq!(violation.field, r#"attributes["x"].number_value"#, "{n:?}");
            assert!(
                violation.description.contains("must be a decimal number"),
                "{n:?}: {violation:?}"
            );
        }
    }

    #[test]
    fn numbers_outside_dynamodbs_range_are_rejected() {
        for (n, expected) in [
            ("1e126", "too large"),
            ("-1e126", "too large"),
            ("10e125", "too large"),
            ("1e9999", "too large"),
            ("1E-131", "too small"),
            ("0.1E-130", "too small"),
            ("-0.9e-130", "too small"),
            ("1e-9999", "too small"),
            ("1e10000", "exponent beyond"),
            ("0e10000", "exponent beyond"),
            ("0e-10000", "exponent beyond"),
            ("1e99999999999999999999999999999", "exponent beyond"),
        ] {
            let violation = only_violation(number(n));
            assert!(
                violation.description.contains(expected),
                "{n}: {violation:?}"
            );
        }
    }

    #[test]
    fn numbers_with_more_than_38_significant_digits_are_rejected() {
        for n in [
            "123456789012345678901234567890123456789",
            "1.00000000000000000000000000000000000001",
            "99999999999999999999999999999999999999.9",
        ] {
            let violation = only_violation(number(n));
            assert!(
                violation.description.contains("39 significant digits"),
                "{n}: {violation:?}"
            );
        }
    }

    #[test]
    fn numbers_have_one_canonical_form_per_value() {
        let canonical = |n: &str| Decimal::parse(n).map(|d| d.to_string());
        assert_eq!(canonical("1"), Ok("1E0".to_owned()));
        assert_eq!(canonical("1.0"), Ok("1E0".to_owned()));
        assert_eq!(canonical("10E-1"), Ok("1E0".to_owned()));
        assert_eq!(canonical("0.0100"), Ok("1E-2".to_owned()));
        assert_eq!(canonical("-1500"), Ok("-1.5E3".to_owned()));
        assert_eq!(canonical("-0.000"), Ok("0".to_owned()));
        assert_eq!(canonical("0e5"), Ok("0".to_owned()));
        assert_eq!(Decimal::parse("-0"), Decimal::parse("0"));
        assert_ne!(Decimal::parse("1"), Decimal::parse("-1"));
        assert_ne!(Decimal::parse("1"), Decimal::parse("10"));
    }

    #[test]
    fn number_sets_compare_members_as_numbers() {
        let found = violations(&[("ns", number_set(&["1", "1.0", "2", "10E-1"]))]);
        let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                r#"attributes["ns"].number_set[1]"#,
                r#"attributes["ns"].number_set[3]"#
            ]
        );
        assert!(found[0].description.contains("member [0]"), "{found:?}");
        assert!(found[0].description.contains("1E0"), "{found:?}");

        assert_eq!(
            violations(&[("z", number_set(&["0", "-0", "0.000"]))]).len(),
            2
        );
        assert_eq!(violations(&[("h", number_set(&["1e2", "100"]))]).len(), 1);
        accepts(number_set(&["1", "-1", "10", "0.1", "1.01"]));
    }

    #[test]
    fn string_and_bytes_sets_must_have_distinct_members() {
        let violation = only_violation(string_set(&["a", "b", "a"]));
        assert_eq!(violation.field, r#"attributes["x"].string_set[2]"#);
        assert!(violation.description.contains("duplicates member [0]"));

        let violation = only_violation(bytes_set(&[b"\x01", b"\x01"]));
        assert_eq!(violation.field, r#"attributes["x"].bytes_set[1]"#);

        accepts(string_set(&["a", "A", "a "]));
        accepts(bytes_set(&[b"a", b"A"]));
    }

    #[test]
    fn empty_sets_are_rejected() {
        for (value, field) in [
            (string_set(&[]), "string_set"),
            (number_set(&[]), "number_set"),
            (bytes_set(&[]), "bytes_set"),
        ] {
            let violation = only_violation(value);
            assert_eq!(violation.field, format!(r#"attributes["x"].{field}"#));
            assert!(violation.description.contains("at least one member"));
        }
    }

    #[test]
    fn invalid_set_numbers_are_reported_at_their_index_and_nothing_else() {
        let found = violations(&[("ns", number_set(&["x", "NaN"]))]);
        let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                r#"attributes["ns"].number_set[0]"#,
                r#"attributes["ns"].number_set[1]"#
            ]
        );
    }

    #[test]
    fn null_must_be_the_null_value_enum() {
        accepts(null());
        for raw in [1, -1, i32::MAX, i32::MIN] {
            let violation = only_violation(null_of(raw));
            assert_eq!(violation.field, r#"attributes["x"].null_value"#);
            assert!(violation.description.contains(&raw.to_string()));
        }
    }

    #[test]
    fn values_may_nest_down_to_level_32() {
        accepts(nested_lists(MAX_DEPTH - 1, string("leaf at level 32")));
        accepts(nested_maps(MAX_DEPTH - 1, string("leaf at level 32")));
        accepts(nested_lists(MAX_DEPTH - 1, list(vec![])));
        accepts(nested_maps(MAX_DEPTH - 1, map_of(&[])));
    }

    #[test]
    fn values_at_level_33_are_rejected_at_the_containing_list() {
        let violation = only_violation(nested_lists(MAX_DEPTH, string("leaf at level 33")));
        let expected = format!(
            r#"attributes["x"]{}.list_value"#,
            ".list_value[0]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(violation.field, expected);
        assert!(violation.description.contains("level 33"), "{violation:?}");

        let violation = only_violation(nested_maps(MAX_DEPTH, null()));
        let expected = format!(
            r#"attributes["x"]{}.map_value"#,
            r#".map_value["m"]"#.repeat(MAX_DEPTH - 1)
        );
        assert_eq!(violation.field, expected);

        only_violation(nested_lists(MAX_DEPTH, list(vec![])));
        only_violation(nested_lists(100, null()));
    }

    #[test]
    fn mixed_lists_and_maps_count_the_same_levels() {
        let mixed = |levels: usize| {
            (0..levels).fold(null(), |inner, i| {
                if i % 2 == 0 {
                    list(vec![inner])
                } else {
                    map_of(&[("m", inner)])
                }
            })
        };
        accepts(mixed(MAX_DEPTH - 1));
        only_violation(mixed(MAX_DEPTH));
    }

    #[test]
    fn every_violation_is_reported_in_name_order_with_its_path() {
        let found = violations(&[
            ("ok", string("fine")),
            ("version", number("1")),
            (
                "b",
                map_of(&[("c", list(vec![null(), number("x"), no_kind()]))]),
            ),
            ("a", string_set(&["x", "x"])),
            ("d", null_of(3)),
        ]);
        let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                r#"attributes["a"].string_set[1]"#,
                r#"attributes["b"].map_value["c"].list_value[1].number_value"#,
                r#"attributes["b"].map_value["c"].list_value[2]"#,
                r#"attributes["d"].null_value"#,
                r#"attributes["version"]"#,
            ]
        );
    }

    #[test]
    fn violations_are_capped_with_a_count_of_the_rest() {
        let members: Vec<String> = (0..100).map(|i| format!("bad{i}")).collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        let found = violations(&[("ns", number_set(&members))]);
        assert_eq!(found.len(), MAX_VIOLATIONS + 1);
        let last = &found[MAX_VIOLATIONS];
        assert_eq!(last.field, "attributes");
        assert!(last.description.contains("80 more"), "{last:?}");
    }

    #[test]
    fn reserved_names_are_left_out_when_reading_items() {
        let item = HashMap::from([
            ("owner".to_owned(), AttributeValue::S("user".into())),
            ("key".to_owned(), AttributeValue::S("k".into())),
            ("version".to_owned(), AttributeValue::N("3".into())),
            ("created_at".to_owned(), AttributeValue::N("1".into())),
            ("updated_at".to_owned(), AttributeValue::N("2".into())),
            ("color".to_owned(), AttributeValue::S("red".into())),
        ]);
        let attributes = attributes_from_dynamo(&item);
        assert_eq!(
            attributes,
            Ok(HashMap::from([("color".to_owned(), string("red"))]))
        );
    }

    #[test]
    fn a_map_with_an_invalid_key_does_not_convert() {
        let mut report = Report::default();
        let value = map_of(&[("", null())]);
        let converted = value_to_dynamo(&value, &|| "v".to_owned(), 1, &mut report);
        assert_eq!(converted, None);
        assert_eq!(report.violations.len(), 1);
    }

    #[test]
    fn any_stored_null_reads_as_null() {
        assert_eq!(value_from_dynamo(&AttributeValue::Null(false)), Ok(null()));
        assert_eq!(value_from_dynamo(&AttributeValue::Null(true)), Ok(null()));
    }

    fn dynamo_item(pairs: Vec<(&str, AttributeValue)>) -> HashMap<String, AttributeValue> {
        pairs
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }

    #[test]
    fn bookkeeping_is_counted_at_its_largest() {
        let base = item_size("", &HashMap::new());
        // owner 5+36, key 3+0, version 7+11, created_at and updated_at 10+35 each.
        assert_eq!(base, 41 + 3 + 18 + 45 + 45);
        assert_eq!(item_size("ké", &HashMap::new()), base + 3);
    }

    #[test]
    fn item_size_follows_dynamodbs_rules() {
        let base = item_size("", &HashMap::new());
        let size = |pairs| item_size("", &dynamo_item(pairs)) - base;
        assert_eq!(size(vec![("id", AttributeValue::S("abc".into()))]), 2 + 3);
        assert_eq!(size(vec![("é", AttributeValue::S("é".into()))]), 2 + 2);
        assert_eq!(
            size(vec![("b", AttributeValue::B(Blob::new(vec![0; 10])))]),
            1 + 10
        );
        assert_eq!(size(vec![("t", AttributeValue::Bool(true))]), 1 + 1);
        assert_eq!(size(vec![("z", AttributeValue::Null(true))]), 1 + 1);
        assert_eq!(size(vec![("l", AttributeValue::L(vec![]))]), 1 + 3);
        let list = AttributeValue::L(vec![AttributeValue::S("xy".into())]);
        assert_eq!(size(vec![("l", list)]), 1 + 3 + (2 + 1));
        let map = AttributeValue::M(HashMap::from([(
            "ab".to_owned(),
            AttributeValue::Bool(true),
        )]));
        assert_eq!(size(vec![("m", map)]), 1 + 3 + (2 + 1 + 1));
        let strings = AttributeValue::Ss(vec!["a".into(), "bcd".into()]);
        assert_eq!(size(vec![("s", strings)]), 1 + 4);
        let numbers = AttributeValue::Ns(vec!["1".into(), "123".into()]);
        assert_eq!(size(vec![("n", numbers)]), 1 + 2 + 3);
        let blobs = AttributeValue::Bs(vec![Blob::new(vec![1]), Blob::new(vec![1, 2])]);
        assert_eq!(size(vec![("b", blobs)]), 1 + 3);
    }

    #[test]
    fn numbers_cost_a_byte_per_two_significant_digits_plus_one() {
        for (n, expected) in [
            ("0", 1),
            ("-0.000", 1),
            ("1", 2),
            ("12", 2),
            ("123", 3),
            ("-1.50", 2),
            ("1000000", 2),
            ("0.000001", 2),
            ("12345678901234567890123456789012345678", 20),
            ("not a number", 13),
        ] {
            assert_eq!(number_size(n), expected, "{n}");
        }
    }

    #[test]
    fn items_up_to_400_kb_pass_the_size_check() {
        let base = item_size("k", &HashMap::new());
        let filler = |bytes: usize| {
            dynamo_item(vec![("a", AttributeValue::S("x".repeat(bytes - base - 1)))])
        };
        assert_eq!(item_size("k", &filler(MAX_ITEM_BYTES)), MAX_ITEM_BYTES);
        assert_eq!(check_item_size("k", &filler(MAX_ITEM_BYTES)), Ok(()));

        let violation = check_item_size("k", &filler(MAX_ITEM_BYTES + 1)).err();
        let violation = violation.unwrap_or_else(|| panic!("one byte over was accepted"));
        assert_eq!(violation.field, "attributes");
        assert!(
            violation.description.contains("409601 bytes"),
            "{violation:?}"
        );
        assert!(
            violation.description.contains("409600 bytes"),
            "{violation:?}"
        );
    }

    #[test]
    fn keys_are_1_to_1024_bytes_of_utf8() {
        assert_eq!(validate_key("key", "k"), Ok(()));
        assert_eq!(validate_key("key", &"k".repeat(MAX_KEY_BYTES)), Ok(()));
        assert_eq!(validate_key("key", &"é".repeat(MAX_KEY_BYTES / 2)), Ok(()));

        let empty = validate_key("start_key", "").err();
        assert_eq!(empty.map(|v| v.field), Some("start_key".to_owned()));
        let long = validate_key("key", &"k".repeat(MAX_KEY_BYTES + 1)).err();
        assert!(long.is_some_and(|v| v.description.contains("1025 bytes")));
        assert!(validate_key("key", &"é".repeat(MAX_KEY_BYTES / 2 + 1)).is_err());
    }

    /// Attribute names and map keys that follow the rules (never reserved).
    fn valid_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_ é€.-]{1,12}".prop_filter("reserved", |name| {
            !RESERVED_ATTRIBUTES.contains(&name.as_str())
        })
    }

    /// Valid numbers in several spellings, from tiny to huge.
    fn valid_number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (any::<i64>(), 0_usize..25).prop_map(|(n, scale)| with_point(n, scale)),
            (any::<i64>(), -130_i64..=107).prop_map(|(n, e)| format!("{n}e{e}")),
            "-?[0-9]{1,38}",
            Just("9.9999999999999999999999999999999999999E+125".to_owned()),
            Just("-1E-130".to_owned()),
        ]
    }

    /// `n` with a decimal point `scale` digits from the right.
    fn with_point(n: i64, scale: usize) -> String {
        let digits = format!("{:0>width$}", n.unsigned_abs(), width = scale + 1);
        let (integer, fraction) = digits.split_at(digits.len() - scale);
        let sign = if n < 0 { "-" } else { "" };
        if fraction.is_empty() {
            format!("{sign}{integer}")
        } else {
            format!("{sign}{integer}.{fraction}")
        }
    }

    fn valid_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            ".{0,12}".prop_map(|s| string(&s)),
            valid_number().prop_map(|n| number(&n)),
            collection::vec(any::<u8>(), 0..12).prop_map(|b| bytes(&b)),
            any::<bool>().prop_map(boolean),
            Just(null()),
            collection::hash_set(".{0,6}", 1..5).prop_map(|set| Value {
                kind: Some(Kind::StringSet(StringSet {
                    values: set.into_iter().collect(),
                })),
            }),
            // Distinct integers with one shared exponent are distinct numbers.
            (collection::btree_set(any::<i32>(), 1..5), -120_i64..110).prop_map(|(set, e)| {
                Value {
                    kind: Some(Kind::NumberSet(NumberSet {
                        values: set.into_iter().map(|n| format!("{n}e{e}")).collect(),
                    })),
                }
            }),
            collection::hash_set(collection::vec(any::<u8>(), 0..6), 1..5).prop_map(|set| Value {
                kind: Some(Kind::BytesSet(BytesSet {
                    values: set.into_iter().collect(),
                })),
            }),
        ]
    }

    fn valid_value() -> impl Strategy<Value = Value> {
        valid_leaf().prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                collection::vec(inner.clone(), 0..6).prop_map(list),
                collection::hash_map(valid_name(), inner, 0..6).prop_map(map),
            ]
        })
    }

    fn valid_attributes() -> impl Strategy<Value = HashMap<String, Value>> {
        collection::hash_map(valid_name(), valid_value(), 0..8)
    }

    /// Anything a client could send, mostly wrong.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(no_kind()),
            ".{0,8}".prop_map(|s| string(&s)),
            prop_oneof!["[-+0-9.eE]{0,12}", ".{0,6}", valid_number()].prop_map(|n| number(&n)),
            prop_oneof![any::<i32>(), -1_i32..2].prop_map(null_of),
            collection::vec("[ab]?", 0..4).prop_map(|v| Value {
                kind: Some(Kind::StringSet(StringSet { values: v })),
            }),
            collection::vec("[-0-9.eE]{0,4}", 0..4).prop_map(|v| Value {
                kind: Some(Kind::NumberSet(NumberSet { values: v })),
            }),
            collection::vec(collection::vec(0_u8..2, 0..2), 0..4).prop_map(|v| Value {
                kind: Some(Kind::BytesSet(BytesSet { values: v })),
            }),
        ];
        leaf.prop_recursive(8, 128, 5, |inner| {
            prop_oneof![
                collection::vec(inner.clone(), 0..5).prop_map(list),
                collection::hash_map("[a-z]{0,2}", inner, 0..5).prop_map(map),
            ]
        })
    }

    fn any_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{0,3}",
            Just("owner".to_owned()),
            Just("key".to_owned()),
            "x{254,257}",
        ]
    }

    proptest! {
        #[test]
        fn valid_attributes_round_trip_exactly(original in valid_attributes()) {
            prop_assert_eq!(round_trip(&original), original);
        }

        #[test]
        fn conversion_never_panics_and_accepts_only_what_round_trips(
            original in collection::hash_map(any_name(), any_value(), 0..6),
        ) {
            match attributes_to_dynamo("attributes", &original) {
                Ok(item) => prop_assert_eq!(attributes_from_dynamo(&item), Ok(original)),
                Err(violations) => {
                    prop_assert!(!violations.is_empty());
                    prop_assert!(violations.len() <= MAX_VIOLATIONS + 1);
                    for violation in violations {
                        prop_assert!(violation.field.starts_with("attributes"));
                        prop_assert!(!violation.description.is_empty());
                    }
                }
            }
        }

        #[test]
        fn nesting_is_accepted_exactly_down_to_level_32(
            shape in collection::vec(any::<bool>(), 0..40),
        ) {
            let value = shape.iter().fold(null(), |inner, &as_list| {
                if as_list { list(vec![inner]) } else { map_of(&[("m", inner)]) }
            });
            let result = attributes_to_dynamo("attributes", &attributes(&[("x", value)]));
            // The leaf sits at level shape.len() + 1.
            prop_assert_eq!(result.is_ok(), shape.len() < MAX_DEPTH);
        }

        #[test]
        fn numbers_are_equal_exactly_when_their_values_are(
            a in -1000_i64..1000, a_scale in 0_u32..6, b in -1000_i64..1000, b_scale in 0_u32..6,
        ) {
            let left = Decimal::parse(&with_point(a, a_scale as usize));
            let right = Decimal::parse(&with_point(b, b_scale as usize));
            // a / 10^a_scale == b / 10^b_scale, without rounding.
            let equal = i128::from(a) * 10_i128.pow(b_scale) == i128::from(b) * 10_i128.pow(a_scale);
            prop_assert!(left.is_ok() && right.is_ok());
            prop_assert_eq!(left == right, equal);
        }

        #[test]
        fn canonical_numbers_parse_back_to_themselves(n in valid_number()) {
            let decimal = Decimal::parse(&n);
            prop_assert!(decimal.is_ok(), "{} rejected", n);
            let decimal = decimal.unwrap_or_else(|_| unreachable!());
            prop_assert_eq!(Decimal::parse(&decimal.to_string()), Ok(decimal));
        }

        #[test]
        fn adding_an_attribute_adds_its_name_and_value_size(
            original in valid_attributes(),
            name in valid_name(),
            value in valid_value(),
            key in ".{0,20}",
        ) {
            prop_assume!(!original.contains_key(&name));
            let item = attributes_to_dynamo("attributes", &original);
            let extra = attributes_to_dynamo("attributes", &attributes(&[(&name, value)]));
            let (Ok(mut item), Ok(extra)) = (item, extra) else {
                return Err(TestCaseError::fail("valid attributes rejected"));
            };
            let before = item_size(&key, &item);
            prop_assert!(before >= item_size("", &HashMap::new()) + key.len());
            let added: usize = extra.iter().map(|(n, v)| n.len() + value_size(v)).sum();
            item.extend(extra);
            let after = item_size(&key, &item);
            prop_assert!(after > before);
            prop_assert_eq!(after, before + added);
        }
    }
}
