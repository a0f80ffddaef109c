//! Sizes as DynamoDB counts them, so a write we accept is never refused for its size, and the
//! number of values in an item, which bounds what one request costs DynamoDB.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    proto::data::v1::{Value, value::Kind},
    status::Violation,
};

use super::{ATTRIBUTES_MAP, MAX_ITEM_BYTES};
use crate::number::Decimal;

/// Size allowances for the bookkeeping attributes the store adds to every item: a UUID owner and
/// a timestamp as long as RFC 3339 with nanoseconds and an offset (longer than any numeric form).
const OWNER_ID_BYTES: usize = 36;
const TIMESTAMP_BYTES: usize = 35;
/// The largest version, u64::MAX, has 20 significant digits.
const VERSION_BYTES: usize = 20_usize.div_ceil(2) + 1;

/// The item's size as DynamoDB counts it, including the service's bookkeeping attributes at
/// their largest and the map that holds the client attributes (its name, 3 bytes, and a byte
/// per entry), so a write we accept is never refused by DynamoDB for its size.
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
        + TIMESTAMP_BYTES
        + ATTRIBUTES_MAP.len()
        + 3;
    attributes
        .iter()
        .map(|(name, value)| name.len() + value_size(value) + 1)
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

/// A value's size by DynamoDB's rules. Unknown types count 0; we never write them.
pub(super) fn value_size(value: &AttributeValue) -> usize {
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
pub(super) fn number_size(number: &str) -> usize {
    match Decimal::parse(number) {
        Ok(decimal) => decimal.significant_digits().div_ceil(2) + 1,
        Err(_) => number.len() + 1,
    }
}

/// Most values one written item may hold, counting every attribute, list element, map entry and
/// set member at any depth. DynamoDB has no such limit, but the cost of a request grows with
/// it: one 400 KB PutItem of 190,000 nulls held every other dynalite caller up for 0.6-1.2 s
/// (quiet vs. busy 2-core machine), 20,000 for 0.1-0.3 s; our own conversion is linear in it
/// too.
pub const MAX_ITEM_VALUES: usize = 20_000;

/// How many values a request's `attributes` hold, counted as [`MAX_ITEM_VALUES`] counts them
/// (a set counts itself and each member). Counted on the request, before any conversion, and
/// only until `limit` is passed, so an over-limit request costs no copy and little counting.
pub fn value_count(attributes: &HashMap<String, Value>, limit: usize) -> usize {
    let mut count = attributes.len();
    let mut pending: Vec<&Value> = attributes.values().collect();
    while let Some(value) = pending.pop() {
        if count > limit {
            break;
        }
        count += match &value.kind {
            Some(Kind::ListValue(list)) => list.values.len(),
            Some(Kind::MapValue(map)) => map.fields.len(),
            Some(Kind::StringSet(set)) => set.values.len(),
            Some(Kind::NumberSet(set)) => set.values.len(),
            Some(Kind::BytesSet(set)) => set.values.len(),
            _ => 0,
        };
        // Children are queued only while the count allows, so the queue stays within the limit.
        if count <= limit {
            match &value.kind {
                Some(Kind::ListValue(list)) => pending.extend(&list.values),
                Some(Kind::MapValue(map)) => pending.extend(map.fields.values()),
                _ => {}
            }
        }
    }
    count
}

/// Refuses a write of more than [`MAX_ITEM_VALUES`] values under `field` (`attributes` or
/// `set`), so no single request can keep DynamoDB (or us) busy for long.
pub fn check_value_count(
    field: &str,
    attributes: &HashMap<String, Value>,
) -> Result<(), Violation> {
    if value_count(attributes, MAX_ITEM_VALUES) <= MAX_ITEM_VALUES {
        return Ok(());
    }
    Err(Violation::new(
        field,
        format!(
            "holds more than {MAX_ITEM_VALUES} values (attributes, list elements, map entries \
             and set members, at any depth); split the data over several items"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::primitives::Blob;

    use super::*;

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    fn null() -> Value {
        value(Kind::NullValue(0))
    }

    fn list_of(count: usize) -> HashMap<String, Value> {
        let list = common::proto::data::v1::ListValue {
            values: vec![null(); count],
        };
        HashMap::from([("l".to_owned(), value(Kind::ListValue(list)))])
    }

    #[test]
    fn every_value_at_any_depth_counts_once() {
        use common::proto::data::v1::{ListValue, MapValue, StringSet};
        let inner = MapValue {
            fields: HashMap::from([
                (
                    "l".to_owned(),
                    value(Kind::ListValue(ListValue {
                        values: vec![null(), null()],
                    })),
                ),
                (
                    "s".to_owned(),
                    value(Kind::StringSet(StringSet {
                        values: vec!["a".into(), "b".into(), "c".into()],
                    })),
                ),
            ]),
        };
        let attributes = HashMap::from([
            ("a".to_owned(), null()),
            ("m".to_owned(), value(Kind::MapValue(inner))),
        ]);
        // a; m; l and its 2 elements; s and its 3 members.
        assert_eq!(value_count(&attributes, usize::MAX), 1 + 1 + 3 + 4);
        assert_eq!(check_value_count("attributes", &attributes), Ok(()));
    }

    #[test]
    fn counting_stops_past_the_limit_and_one_over_is_refused() {
        assert_eq!(value_count(&list_of(1_000_000), 10), 1 + 1_000_000);
        let nested = HashMap::from([(
            "l".to_owned(),
            value(Kind::ListValue(common::proto::data::v1::ListValue {
                values: vec![value(Kind::ListValue(Default::default())); 20],
            })),
        )]);
        assert_eq!(
            value_count(&nested, 10),
            21,
            "children past the limit are not queued"
        );
        assert_eq!(
            check_value_count("set", &list_of(MAX_ITEM_VALUES - 1)),
            Ok(())
        );
        let refused = check_value_count("set", &list_of(MAX_ITEM_VALUES));
        assert_eq!(refused.map_err(|v| v.field), Err("set".to_owned()));
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
        // owner 5+36, key 3+0, version 7+11, created_at and updated_at 10+35 each, and the
        // empty attribute map, $attributes 11+3.
        assert_eq!(base, 41 + 3 + 18 + 45 + 45 + 14);
        assert_eq!(item_size("ké", &HashMap::new()), base + 3);
    }

    #[test]
    fn item_size_follows_dynamodbs_rules() {
        let base = item_size("", &HashMap::new());
        // Less the byte each entry of the attribute map costs.
        let size = |pairs| item_size("", &dynamo_item(pairs)) - base - 1;
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
            dynamo_item(vec![("a", AttributeValue::S("x".repeat(bytes - base - 2)))])
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
}
