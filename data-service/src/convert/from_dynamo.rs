//! Stored values back to the API. Stored items are untrusted (a user can write their partition
//! directly), so a value the API cannot carry is an error naming where it sits, never a panic.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::data::v1::{
    BytesSet, ListValue, MapValue, NumberSet, StringSet, Value, value::Kind,
};

use super::{Path, RESERVED_ATTRIBUTES, quote};

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
