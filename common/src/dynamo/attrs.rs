//! The attribute values of DynamoDB items: built from the few shapes the services store
//! (strings, numbers, byte strings) and read back as untrusted, since anything may have been
//! written into a table.

use std::{collections::HashMap, fmt, str::FromStr};

use aws_sdk_dynamodb::{primitives::Blob, types::AttributeValue};

/// An item as the SDK hands it over.
pub type Item = HashMap<String, AttributeValue>;

/// A string attribute.
pub fn string(value: impl ToString) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

/// A number attribute: DynamoDB carries numbers as decimal text.
pub fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A binary attribute.
pub fn blob(bytes: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(bytes))
}

/// An attribute that is present but not of the type asked for, or a number out of the range
/// of the type asked for. Each table says which item and attribute in its own error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed attribute")
    }
}

impl std::error::Error for Malformed {}

/// The number `name` of `item` as a `T`; `None` when the item has no such attribute.
pub fn get_number<T: FromStr>(item: &Item, name: &str) -> Result<Option<T>, Malformed> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(text)) => text.parse().map(Some).map_err(|_| Malformed),
        Some(_) => Err(Malformed),
    }
}

/// The string `name` of `item`; `None` when the item has no such attribute.
pub fn get_string<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, Malformed> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(text)) => Ok(Some(text)),
        Some(_) => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(value: AttributeValue) -> Item {
        HashMap::from([("a".to_owned(), value)])
    }

    #[test]
    fn values_are_built_in_the_shape_dynamodb_carries() {
        assert_eq!(string(7), AttributeValue::S("7".to_owned()));
        assert_eq!(number(-7_i64), AttributeValue::N("-7".to_owned()));
        assert_eq!(blob(&[1, 2]), AttributeValue::B(Blob::new(vec![1, 2])));
    }

    #[test]
    fn numbers_read_back_absent_well_formed_or_malformed() {
        assert_eq!(get_number::<i64>(&Item::new(), "a"), Ok(None));
        assert_eq!(get_number::<i64>(&item(number(42)), "a"), Ok(Some(42)));
        assert_eq!(get_number::<u32>(&item(number(-1)), "a"), Err(Malformed));
        assert_eq!(get_number::<i64>(&item(number("1e3")), "a"), Err(Malformed));
        assert_eq!(get_number::<i64>(&item(string(42)), "a"), Err(Malformed));
    }

    #[test]
    fn strings_read_back_absent_well_formed_or_malformed() {
        assert_eq!(get_string(&Item::new(), "a"), Ok(None));
        assert_eq!(get_string(&item(string("x")), "a"), Ok(Some("x")));
        assert_eq!(get_string(&item(number(1)), "a"), Err(Malformed));
    }
}
