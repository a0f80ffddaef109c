//! Property tests: valid input round-trips exactly, any input converts or is refused without a
//! panic, and sizes add up as DynamoDB counts them.

use proptest::{collection, prelude::*};

use super::*;
use crate::{
    convert::size::{item_size, value_size},
    number::Decimal,
};

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
        // The leaf sits at level shape.len() + ATTRIBUTE_LEVEL (inside the attribute map).
        prop_assert_eq!(result.is_ok(), shape.len() + ATTRIBUTE_LEVEL <= MAX_DEPTH);
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
        // Its name, its value and its entry in the attribute map.
        let added: usize = extra.iter().map(|(n, v)| n.len() + value_size(v) + 1).sum();
        item.extend(extra);
        let after = item_size(&key, &item);
        prop_assert!(after > before);
        prop_assert_eq!(after, before + added);
    }

    #[test]
    fn number_parsing_never_panics_and_explains_every_refusal(
        text in prop_oneof![any::<String>(), "[-+0-9.eE]{0,60}", "-?[0-9]{0,45}(\\.[0-9]{0,45})?([eE][-+]?[0-9]{0,8})?"],
    ) {
        match Decimal::parse(&text) {
            // Whatever is accepted has a canonical spelling that parses back to it.
            Ok(decimal) => prop_assert_eq!(Decimal::parse(&decimal.to_string()), Ok(decimal)),
            Err(error) => prop_assert!(!error.describe().is_empty()),
        }
    }
}
