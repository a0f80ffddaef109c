//! Unit and property tests of request validation.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use common::proto::data::v1::{
    PutItemRequest, QueryItemsRequest, UpdateItemRequest, Value, value::Kind,
};
use proptest::{collection, prelude::*};

use super::*;
use crate::{
    page_token::PageTokens,
    store::{KeyRange, Precondition},
};

fn fields(error: DataError) -> Vec<String> {
    match error {
        DataError::InvalidArgument(violations) => violations.into_iter().map(|v| v.field).collect(),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

#[test]
fn put_reports_every_problem_at_once() {
    let request = PutItemRequest {
        key: String::new(),
        attributes: HashMap::from([
            ("version".into(), string("x")),
            ("ok".into(), Value { kind: None }),
        ]),
        if_absent: true,
        expected_version: Some(3),
        expires_at: None,
    };
    let fields = fields(put(&request).unwrap_err());
    assert!(fields.contains(&"key".to_owned()), "{fields:?}");
    assert!(
        fields.contains(&"expected_version".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"attributes[\"version\"]".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"attributes[\"ok\"]".to_owned()),
        "{fields:?}"
    );
}

#[test]
fn put_turns_flags_into_preconditions() {
    let base = PutItemRequest {
        key: "k".into(),
        ..Default::default()
    };
    assert_eq!(put(&base).unwrap().precondition, Precondition::None);
    let absent = PutItemRequest {
        if_absent: true,
        ..base.clone()
    };
    assert_eq!(put(&absent).unwrap().precondition, Precondition::IfAbsent);
    let versioned = PutItemRequest {
        expected_version: Some(7),
        ..base
    };
    assert_eq!(
        put(&versioned).unwrap().precondition,
        Precondition::Version(7)
    );
}

#[test]
fn update_needs_something_to_do_and_no_contradictions() {
    let empty = UpdateItemRequest {
        key: "k".into(),
        ..Default::default()
    };
    assert_eq!(fields(update(&empty).unwrap_err()), ["set"]);
    let both = UpdateItemRequest {
        key: "k".into(),
        set: HashMap::from([("a".into(), string("x"))]),
        remove: vec!["a".into(), "created_at".into(), "b".into(), "b".into()],
        ..Default::default()
    };
    let fields = fields(update(&both).unwrap_err());
    assert_eq!(fields, ["remove[1]", "remove[3]", "remove[0]"]);
}

#[test]
fn reserved_names_are_dropped_from_projections_but_allowed() {
    let names = attributes_to_get(&["color".into(), "version".into()]).unwrap();
    assert_eq!(names, Projection::Only(vec!["color".into()]));
    assert!(attributes_to_get(&[String::new()]).is_err());
}

#[test]
fn a_projection_of_reserved_names_only_is_never_widened_to_all() {
    assert_eq!(attributes_to_get(&[]).unwrap(), Projection::All);
    let reserved = attributes_to_get(&["version".into(), "key".into()]).unwrap();
    assert_eq!(reserved, Projection::Only(vec![]));
}

#[test]
fn updates_set_at_most_max_set_attributes() {
    let update_of = |count: usize| UpdateItemRequest {
        key: "k".into(),
        set: (0..count).map(|i| (format!("a{i}"), string("x"))).collect(),
        ..Default::default()
    };
    assert!(update(&update_of(MAX_SET_ATTRIBUTES)).is_ok());
    assert_eq!(
        fields(update(&update_of(MAX_SET_ATTRIBUTES + 1)).unwrap_err()),
        ["set"]
    );
}

#[test]
fn query_rules() {
    let pages = PageTokens::generate().unwrap();
    let query_of = |request: QueryItemsRequest| query(&request, "alice", &pages);
    let all = query_of(QueryItemsRequest::default()).unwrap();
    assert_eq!(
        (all.range, all.limit, all.after),
        (KeyRange::All, 100, None)
    );

    let mixed = QueryItemsRequest {
        key_prefix: "a".into(),
        start_key: "b".into(),
        ..Default::default()
    };
    assert_eq!(fields(query_of(mixed).unwrap_err()), ["key_prefix"]);
    let backwards = QueryItemsRequest {
        start_key: "b".into(),
        end_key: "a".into(),
        ..Default::default()
    };
    assert_eq!(fields(query_of(backwards).unwrap_err()), ["end_key"]);
    let huge = QueryItemsRequest {
        limit: 1001,
        ..Default::default()
    };
    assert_eq!(fields(query_of(huge).unwrap_err()), ["limit"]);
    let forged = QueryItemsRequest {
        page_token: "v4.local.bogus".into(),
        ..Default::default()
    };
    assert_eq!(fields(query_of(forged).unwrap_err()), ["page_token"]);

    let from = QueryItemsRequest {
        start_key: "m".into(),
        limit: 1000,
        ..Default::default()
    };
    let from = query_of(from).unwrap();
    assert_eq!(
        from.range,
        KeyRange::Between {
            start: Some("m".into()),
            end: None
        }
    );
    assert_eq!(from.limit, 1000);
    assert!(!from.count_only);
    let counted = QueryItemsRequest {
        key_prefix: "n/".into(),
        select_count: true,
        ..Default::default()
    };
    let counted = query_of(counted).unwrap();
    assert!(counted.count_only);
    assert_eq!(counted.limit, 100, "counting pages like listing");
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value { kind: None }),
        ".{0,8}".prop_map(|s| string(&s)),
        ".{0,12}".prop_map(|n| Value {
            kind: Some(Kind::NumberValue(n)),
        }),
        any::<bool>().prop_map(|b| Value {
            kind: Some(Kind::BoolValue(b)),
        }),
    ]
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![".{0,4}", Just("version".to_owned()), "k{1024,1026}"]
}

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![".{0,8}", "k{1020,1030}"]
}

/// Every violation names a field of the request and says what is wrong.
fn client_caused(result: Result<(), DataError>, fields: &[&str]) -> Result<(), TestCaseError> {
    match result {
        Ok(()) => Ok(()),
        Err(DataError::InvalidArgument(violations)) => {
            prop_assert!(!violations.is_empty());
            for violation in violations {
                let named = fields.iter().any(|f| violation.field.starts_with(f));
                prop_assert!(named, "{} is not a field", violation.field);
                prop_assert!(!violation.description.is_empty());
            }
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a client error: {other:?}"
        ))),
    }
}

proptest! {
    #[test]
    fn any_put_or_update_is_converted_or_refused_field_by_field(
        key in any_key(),
        attributes in collection::hash_map(any_name(), any_value(), 0..4),
        remove in collection::vec(any_name(), 0..4),
        if_absent in any::<bool>(),
        expected_version in proptest::option::of(0_u64..3),
    ) {
        let put_request = PutItemRequest { key: key.clone(), attributes: attributes.clone(), if_absent, expected_version, expires_at: None };
        client_caused(put(&put_request).map(drop), &["key", "attributes", "if_absent", "expected_version"])?;
        let update_request = UpdateItemRequest { key, set: attributes, remove, expected_version, ..Default::default() };
        client_caused(update(&update_request).map(drop), &["key", "set", "remove", "expected_version"])?;
    }

    #[test]
    fn any_query_is_planned_or_refused_field_by_field(
        key_prefix in any_key(),
        start_key in any_key(),
        end_key in any_key(),
        limit in prop_oneof![0_u32..5, 995_u32..1005, Just(u32::MAX)],
        page_token in prop_oneof![Just(String::new()), ".{0,40}"],
        names in collection::vec(any_name(), 0..4),
    ) {
        let pages = PageTokens::generate().unwrap();
        let request = QueryItemsRequest { key_prefix, start_key, end_key, limit, page_token, ..Default::default() };
        let fields = ["key_prefix", "start_key", "end_key", "limit", "page_token"];
        match query(&request, "alice", &pages) {
            Ok(planned) => prop_assert!((1..=MAX_LIMIT as i32).contains(&planned.limit)),
            Err(error) => client_caused(Err(error), &fields)?,
        }
        client_caused(attributes_to_get(&names).map(drop), &["attributes_to_get"])?;
    }
}

fn number(n: &str) -> Value {
    Value {
        kind: Some(Kind::NumberValue(n.into())),
    }
}

fn strings(members: &[&str]) -> Value {
    Value {
        kind: Some(Kind::StringSet(common::proto::data::v1::StringSet {
            values: members.iter().map(|m| (*m).to_owned()).collect(),
        })),
    }
}

#[test]
fn counters_lists_and_set_deletions_are_checked_with_set_and_remove() {
    let list = common::proto::data::v1::ListValue {
        values: vec![string("x")],
    };
    let valid = UpdateItemRequest {
        key: "k".into(),
        add: HashMap::from([
            ("n".into(), number("-2.5")),
            ("tags".into(), strings(&["a"])),
        ]),
        append: HashMap::from([("log".into(), list.clone())]),
        delete_from_sets: HashMap::from([("old".into(), strings(&["b"]))]),
        ..Default::default()
    };
    let update = update(&valid).unwrap();
    assert_eq!(
        (
            update.add.len(),
            update.append.len(),
            update.delete_from_sets.len()
        ),
        (2, 1, 1)
    );
    assert!(matches!(update.append["log"], AttributeValue::L(_)));

    let hostile = UpdateItemRequest {
        key: "k".into(),
        set: HashMap::from([("n".into(), string("x"))]),
        add: HashMap::from([
            ("n".into(), number("1")),
            ("text".into(), string("not a number")),
            ("version".into(), number("1")),
        ]),
        append: HashMap::from([("log".into(), list)]),
        delete_from_sets: HashMap::from([
            ("log".into(), strings(&["a"])),
            ("c".into(), number("1")),
        ]),
        remove: vec!["c".into()],
        ..Default::default()
    };
    let mut found = fields(super::update(&hostile).unwrap_err());
    found.sort();
    assert_eq!(
        found,
        [
            r#"add["n"]"#,
            r#"add["text"]"#,
            r#"add["version"]"#,
            r#"delete_from_sets["c"]"#,
            r#"delete_from_sets["log"]"#,
            "remove[0]",
        ]
    );
}

#[test]
fn every_kind_of_change_counts_towards_the_update_limit() {
    let half = MAX_SET_ATTRIBUTES / 2;
    let request = UpdateItemRequest {
        key: "k".into(),
        set: (0..half).map(|i| (format!("s{i}"), string("x"))).collect(),
        add: (0..=half).map(|i| (format!("a{i}"), number("1"))).collect(),
        ..Default::default()
    };
    assert_eq!(fields(update(&request).unwrap_err()), ["set"]);
}

#[test]
fn expiries_are_future_whole_seconds_rounded_up() {
    let now = 1_700_000_000_000;
    let at = |seconds, nanos| Timestamp { seconds, nanos };
    assert_eq!(
        expiry_seconds(&at(1_700_000_001, 0), now).unwrap(),
        1_700_000_001
    );
    assert_eq!(
        expiry_seconds(&at(1_700_000_000, 1), now).unwrap(),
        1_700_000_001
    );
    for refused in [
        at(1_700_000_000, 0),
        at(1_699_999_999, 999_999_999),
        at(0, 0),
        at(-1, 0),
        at(1_700_000_001, -1),
        at(1_700_000_001, 1_000_000_000),
        at(i64::MAX, 0),
        at(i64::MIN, 0),
    ] {
        let violation = expiry_seconds(&refused, now).unwrap_err();
        assert_eq!(violation.field, "expires_at", "{refused:?}");
    }
}

#[test]
fn a_past_expiry_is_refused_in_puts_and_updates_and_an_update_may_change_only_the_expiry() {
    let past = Some(Timestamp {
        seconds: 1,
        nanos: 0,
    });
    let put_request = PutItemRequest {
        key: "k".into(),
        expires_at: past,
        ..Default::default()
    };
    assert_eq!(fields(put(&put_request).unwrap_err()), ["expires_at"]);
    let update_request = UpdateItemRequest {
        key: "k".into(),
        expires_at: past,
        ..Default::default()
    };
    assert_eq!(fields(update(&update_request).unwrap_err()), ["expires_at"]);
    let year_3000 = 32_503_680_000;
    let only_expiry = UpdateItemRequest {
        key: "k".into(),
        expires_at: Some(Timestamp {
            seconds: year_3000,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert_eq!(update(&only_expiry).unwrap().expires_at, Some(year_3000));
    let unset = PutItemRequest {
        key: "k".into(),
        ..Default::default()
    };
    assert_eq!(put(&unset).unwrap().expires_at, None);
}
