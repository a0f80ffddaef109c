//! Unit tests of the conversions; the property tests are in `properties`.

mod numbers_and_sets;
mod properties;

use std::collections::HashMap;

use aws_sdk_dynamodb::{primitives::Blob, types::AttributeValue};
use common::{
    proto::data::v1::{BytesSet, ListValue, MapValue, NumberSet, StringSet, Value, value::Kind},
    status::Violation,
};

use super::{report::Report, to_dynamo::value_to_dynamo, *};
use crate::number::Decimal;

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
    // An attribute is level 2 (inside the item's attribute map): 30 lists or maps, then a leaf.
    let levels = MAX_DEPTH - ATTRIBUTE_LEVEL;
    accepts(nested_lists(levels, string("leaf at level 32")));
    accepts(nested_maps(levels, string("leaf at level 32")));
    accepts(nested_lists(levels, list(vec![])));
    accepts(nested_maps(levels, map_of(&[])));
}

#[test]
fn values_at_level_33_are_rejected_at_the_containing_list() {
    let levels = MAX_DEPTH - ATTRIBUTE_LEVEL + 1;
    let violation = only_violation(nested_lists(levels, string("leaf at level 33")));
    let expected = format!(
        r#"attributes["x"]{}.list_value"#,
        ".list_value[0]".repeat(levels - 1)
    );
    assert_eq!(violation.field, expected);
    assert!(violation.description.contains("level 33"), "{violation:?}");

    let violation = only_violation(nested_maps(levels, null()));
    let expected = format!(
        r#"attributes["x"]{}.map_value"#,
        r#".map_value["m"]"#.repeat(levels - 1)
    );
    assert_eq!(violation.field, expected);

    only_violation(nested_lists(levels, list(vec![])));
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
    accepts(mixed(MAX_DEPTH - ATTRIBUTE_LEVEL));
    only_violation(mixed(MAX_DEPTH - ATTRIBUTE_LEVEL + 1));
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
