//! Request validation: every rule is checked, and every violation reported, before anything
//! is sent to DynamoDB. The output is what the store needs, already converted.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    proto::data::v1::{PutItemRequest, QueryItemsRequest, UpdateItemRequest},
    status::Violation,
};

use crate::{
    convert::{self, MAX_KEY_BYTES, MAX_NAME_BYTES, RESERVED_ATTRIBUTES},
    error::DataError,
    page_token::{PageTokens, QueryShape},
    store::{KeyRange, Precondition, Projection},
};

/// Items per page when the request says 0.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items per page.
pub const MAX_LIMIT: u32 = 1000;
/// Most attribute names in `remove` or `attributes_to_get`.
pub const MAX_NAMES: usize = 100;
/// Most attributes one UpdateItem sets. Each costs about 14 bytes of update expression, and
/// DynamoDB refuses expressions over 4 KB (about 250 attributes); emulators that do not refuse
/// them slow down sharply (dynalite spent 18 s on 20,000).
pub const MAX_SET_ATTRIBUTES: usize = 100;

/// A validated PutItem.
#[derive(Debug)]
pub struct Put {
    /// The converted attributes.
    pub attributes: HashMap<String, AttributeValue>,
    /// Its condition.
    pub precondition: Precondition,
}

/// A validated UpdateItem.
#[derive(Debug)]
pub struct Update {
    /// Attributes to set, converted.
    pub set: HashMap<String, AttributeValue>,
    /// Attribute names to remove.
    pub remove: Vec<String>,
}

/// A validated QueryItems.
#[derive(Debug)]
pub struct Query {
    /// The keys selected.
    pub range: KeyRange,
    /// Page size.
    pub limit: i32,
    /// Where the previous page stopped.
    pub after: Option<String>,
    /// Greatest key first.
    pub descending: bool,
    /// A strongly consistent read.
    pub consistent: bool,
}

fn check(violations: Vec<Violation>) -> Result<(), DataError> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(DataError::InvalidArgument(violations))
    }
}

/// Checks an item key.
pub fn key(key: &str) -> Result<(), DataError> {
    convert::validate_key("key", key).map_err(|v| DataError::InvalidArgument(vec![v]))
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
    if let Err(too_many) = convert::check_value_count("attributes", &request.attributes) {
        // Not worth converting (a copy of up to a 4 MB message): the request is refused anyway.
        violations.push(too_many);
        return Err(DataError::InvalidArgument(violations));
    }
    let attributes = match convert::attributes_to_dynamo("attributes", &request.attributes) {
        Ok(attributes) => {
            violations.extend(convert::check_item_size(&request.key, &attributes).err());
            attributes
        }
        Err(found) => {
            violations.extend(found);
            HashMap::new()
        }
    };
    check(violations)?;
    let precondition = match (request.if_absent, request.expected_version) {
        (true, _) => Precondition::IfAbsent,
        (false, Some(version)) => Precondition::Version(version),
        (false, None) => Precondition::None,
    };
    Ok(Put {
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
    let too_large = if request.set.len() > MAX_SET_ATTRIBUTES {
        Err(Violation::new(
            "set",
            format!(
                "at most {MAX_SET_ATTRIBUTES} attributes per update, got {}; use PutItem to \
                 write a whole item",
                request.set.len()
            ),
        ))
    } else {
        convert::check_value_count("set", &request.set)
    };
    if let Err(too_large) = too_large {
        // Not worth converting: the request is refused anyway.
        violations.push(too_large);
        return Err(DataError::InvalidArgument(violations));
    }
    let set = match convert::attributes_to_dynamo("set", &request.set) {
        Ok(set) => {
            violations.extend(convert::check_item_size(&request.key, &set).err());
            set
        }
        Err(found) => {
            violations.extend(found);
            HashMap::new()
        }
    };
    check(violations)?;
    Ok(Update {
        set,
        remove: request.remove.clone(),
    })
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

/// What a page token of this query is bound to.
pub fn shape<'a>(request: &'a QueryItemsRequest, owner: &'a str) -> QueryShape<'a> {
    QueryShape {
        owner,
        prefix: &request.key_prefix,
        start: &request.start_key,
        end: &request.end_key,
        descending: request.descending,
    }
}

/// Checks QueryItems for `owner`, opening its page token.
pub fn query(
    request: &QueryItemsRequest,
    owner: &str,
    pages: &PageTokens,
) -> Result<Query, DataError> {
    let mut violations = Vec::new();
    for (field, value) in [
        ("key_prefix", &request.key_prefix),
        ("start_key", &request.start_key),
        ("end_key", &request.end_key),
    ] {
        if value.len() > MAX_KEY_BYTES {
            violations.push(Violation::new(
                field,
                format!("at most {MAX_KEY_BYTES} bytes"),
            ));
        }
    }
    let ranged = !request.start_key.is_empty() || !request.end_key.is_empty();
    if !request.key_prefix.is_empty() && ranged {
        violations.push(Violation::new(
            "key_prefix",
            "cannot be combined with start_key or end_key; use one or the other",
        ));
    }
    if !request.start_key.is_empty()
        && !request.end_key.is_empty()
        && request.start_key > request.end_key
    {
        violations.push(Violation::new(
            "end_key",
            "must not be smaller than start_key",
        ));
    }
    if request.limit > MAX_LIMIT {
        violations.push(Violation::new(
            "limit",
            format!("must be 1 to {MAX_LIMIT} (0 means {DEFAULT_LIMIT})"),
        ));
    }
    check(violations)?;

    let after = (!request.page_token.is_empty())
        .then(|| pages.open(&shape(request, owner), &request.page_token))
        .transpose()?;
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    let range = if !request.key_prefix.is_empty() {
        KeyRange::Prefix(request.key_prefix.clone())
    } else if ranged {
        KeyRange::Between {
            start: non_empty(&request.start_key),
            end: non_empty(&request.end_key),
        }
    } else {
        KeyRange::All
    };
    let limit = if request.limit == 0 {
        DEFAULT_LIMIT
    } else {
        request.limit
    };
    Ok(Query {
        range,
        // At most MAX_LIMIT, so it fits.
        limit: i32::try_from(limit).unwrap_or(100),
        after,
        descending: request.descending,
        consistent: request.consistent_read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::proto::data::v1::{Value, value::Kind};
    use proptest::{collection, prelude::*};

    fn fields(error: DataError) -> Vec<String> {
        match error {
            DataError::InvalidArgument(violations) => {
                violations.into_iter().map(|v| v.field).collect()
            }
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
            expected_version: None,
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
            let put_request = PutItemRequest { key: key.clone(), attributes: attributes.clone(), if_absent, expected_version };
            client_caused(put(&put_request).map(drop), &["key", "attributes", "if_absent", "expected_version"])?;
            let update_request = UpdateItemRequest { key, set: attributes, remove, expected_version };
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
}
