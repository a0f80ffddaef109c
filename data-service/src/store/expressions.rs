//! The DynamoDB expressions of item operations, with their name and value placeholders. Client
//! attribute names only ever travel as `ExpressionAttributeNames` values, never inside an
//! expression, so no name can change an expression's meaning.
//!
//! DynamoDB's limits (Constraints, "Expression parameters"): an expression string is at most
//! 4 KB; an UpdateExpression holds at most 300 operators or functions; all names and values of
//! one request together are at most 2 MB. Requests bound what feeds the expressions (at most
//! 100 attributes set, 100 removed, 100 projected; values within the 400 KB item limit), which
//! keeps every expression far below these; [`Expression::within_limit`] checks the length again
//! before anything is sent.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{KeyRange, decode::Stamp, expiry, n, s};
use crate::{
    convert::{ATTRIBUTES_MAP, EXPIRES_AT},
    error::DataError,
};

/// DynamoDB's limit on the length of one expression string.
pub const MAX_EXPRESSION_BYTES: usize = 4 * 1024;

/// Names used in every expression (`key` and others are DynamoDB reserved words).
const NAMES: [(&str, &str); 7] = [
    ("#o", "owner"),
    ("#k", "key"),
    ("#v", "version"),
    ("#c", "created_at"),
    ("#u", "updated_at"),
    ("#e", EXPIRES_AT),
    ("#m", ATTRIBUTES_MAP),
];

/// An expression (and the condition of a write) with the placeholders they use.
#[derive(Debug, Default)]
pub struct Expression {
    /// The expression text (empty for a write that has only a condition).
    pub text: String,
    /// The condition of a write.
    pub condition: Option<String>,
    /// `#…` placeholders.
    pub names: HashMap<String, String>,
    /// `:…` placeholders.
    pub values: HashMap<String, AttributeValue>,
}

/// The bookkeeping names `wanted` (`#k`, `#v`, …) mapped to their attributes.
pub(super) fn names(wanted: &[&str]) -> HashMap<String, String> {
    NAMES
        .iter()
        .filter(|(placeholder, _)| wanted.contains(placeholder))
        .map(|(placeholder, name)| ((*placeholder).to_owned(), (*name).to_owned()))
        .collect()
}

/// A GetItem projection of the bookkeeping attributes (the expiry too: an expired item is
/// absent) and `attributes`, each from the attribute map and from the top level (the older
/// layout).
pub fn projection(attributes: &[String]) -> Expression {
    let mut text = "#k, #v, #c, #u, #e".to_owned();
    let wanted: &[&str] = if attributes.is_empty() {
        &["#k", "#v", "#c", "#u", "#e"]
    } else {
        &["#k", "#v", "#c", "#u", "#e", "#m"]
    };
    let mut names = names(wanted);
    for (i, name) in attributes.iter().enumerate() {
        text.push_str(&format!(", #m.#p{i}, #p{i}"));
        names.insert(format!("#p{i}"), name.clone());
    }
    Expression {
        text,
        names,
        ..Default::default()
    }
}

/// The condition of a put replacing what it `found`: the item is still absent, or still holds
/// the very version read (a stored number compared as such; anything else, including no
/// version, by being still not a number) and the very expiry read (when a number), so two
/// concurrent writers never both succeed, not even over an expired item at version 1.
pub fn replace_condition(found: Option<&Stamp>) -> Expression {
    let mut replace = version_condition(found);
    if let Some(expires_at) = found.and_then(Stamp::raw_expires_at) {
        replace.condition =
            (replace.condition).map(|condition| format!("{condition} AND #e = :found_e"));
        replace.names.extend(names(&["#e"]));
        replace.values.insert(
            ":found_e".to_owned(),
            AttributeValue::N(expires_at.to_owned()),
        );
    }
    replace
}

/// [`replace_condition`] on the version alone.
fn version_condition(found: Option<&Stamp>) -> Expression {
    let (condition, names, values) = match found.map(|stamp| stamp.raw_number()) {
        None => ("attribute_not_exists(#k)", names(&["#k"]), HashMap::new()),
        Some(Some(raw)) => (
            "#v = :found",
            names(&["#v"]),
            HashMap::from([(":found".to_owned(), AttributeValue::N(raw.to_owned()))]),
        ),
        Some(None) => (
            "attribute_exists(#k) AND (attribute_not_exists(#v) OR NOT attribute_type(#v, :number))",
            names(&["#k", "#v"]),
            HashMap::from([(":number".to_owned(), s("N"))]),
        ),
    };
    Expression {
        condition: Some(condition.to_owned()),
        names,
        values,
        ..Default::default()
    }
}

/// The condition of a delete: the item exists, has not expired at `now_s` (and is at
/// `expected`).
pub fn delete_condition(expected: Option<u64>, now_s: i64) -> Expression {
    let mut values = expiry::live_values(now_s);
    let Some(expected) = expected else {
        return Expression {
            condition: Some(format!("attribute_exists(#k) AND {}", expiry::LIVE)),
            names: names(&["#k", "#e"]),
            values,
            ..Default::default()
        };
    };
    values.insert(":expected".to_owned(), n(expected));
    Expression {
        condition: Some(format!(
            "attribute_exists(#k) AND #v = :expected AND {}",
            expiry::LIVE
        )),
        names: names(&["#k", "#v", "#e"]),
        values,
        ..Default::default()
    }
}

/// The filter of a query: only items that have not expired at `now_s`, added to the
/// placeholders of its key condition.
pub fn live_filter(condition: &mut Expression, now_s: i64) -> String {
    condition.names.extend(names(&["#e"]));
    condition.values.extend(expiry::live_values(now_s));
    expiry::LIVE.to_owned()
}

/// The key condition of a query of `owner`'s items in `range`.
pub fn key_condition(owner: &str, range: &KeyRange) -> Expression {
    let mut names = names(&["#o"]);
    let mut values = HashMap::from([(":o".to_owned(), s(owner))]);
    let mut text = "#o = :o".to_owned();
    let mut bound = |clause: &str, entries: &[(&str, &str)]| {
        names.insert("#k".to_owned(), "key".to_owned());
        text.push_str(" AND ");
        text.push_str(clause);
        for (name, value) in entries {
            values.insert((*name).to_owned(), s(value));
        }
    };
    match range {
        KeyRange::All => {}
        KeyRange::Prefix(prefix) => bound("begins_with(#k, :p)", &[(":p", prefix)]),
        KeyRange::Between {
            start: Some(start),
            end: Some(end),
        } => bound("#k BETWEEN :s AND :e", &[(":s", start), (":e", end)]),
        KeyRange::Between {
            start: Some(start),
            end: None,
        } => bound("#k >= :s", &[(":s", start)]),
        KeyRange::Between {
            start: None,
            end: Some(end),
        } => bound("#k <= :e", &[(":e", end)]),
        KeyRange::Between {
            start: None,
            end: None,
        } => {}
    }
    Expression {
        text,
        names,
        values,
        ..Default::default()
    }
}

impl Expression {
    /// The expression, or INVALID_ARGUMENT naming `field` (the request field that made it
    /// long) when DynamoDB would refuse its length.
    pub fn within_limit(self, field: &str) -> Result<Self, DataError> {
        let longest = self
            .text
            .len()
            .max(self.condition.as_ref().map_or(0, String::len));
        if longest > MAX_EXPRESSION_BYTES {
            return Err(DataError::invalid(
                field,
                format!(
                    "makes a {longest}-byte expression; DynamoDB allows {MAX_EXPRESSION_BYTES} \
                     bytes: send fewer attributes per request"
                ),
            ));
        }
        Ok(self)
    }
}

/// Every placeholder an expression uses is defined, and every one defined is used
/// (DynamoDB refuses both unknown and unused placeholders).
#[cfg(test)]
pub(super) fn placeholders_match(expression: &Expression) {
    let text = format!(
        "{} {}",
        expression.text,
        expression.condition.as_deref().unwrap_or_default()
    );
    let used: std::collections::HashSet<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '#' || c == ':' || c == '_'))
        .filter(|token| token.starts_with('#') || token.starts_with(':'))
        .collect();
    let defined: std::collections::HashSet<&str> = expression
        .names
        .keys()
        .chain(expression.values.keys())
        .map(String::as_str)
        .collect();
    assert_eq!(used, defined, "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize, prefix: &str) -> Vec<String> {
        (0..count).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn every_expression_defines_exactly_the_placeholders_it_uses() {
        for expected in [None, Some(4)] {
            placeholders_match(&delete_condition(expected, 1));
        }
        placeholders_match(&projection(&names(3, "p")));
        placeholders_match(&projection(&[]));
        let stored =
            |version: AttributeValue| Stamp::of(&HashMap::from([("version".to_owned(), version)]));
        placeholders_match(&replace_condition(None));
        placeholders_match(&replace_condition(Some(&stored(n("-1")))));
        placeholders_match(&replace_condition(Some(&stored(s("1")))));
        placeholders_match(&replace_condition(Some(&Stamp::of(&HashMap::new()))));
        let expired = Stamp::of(&HashMap::from([
            ("version".to_owned(), n(3)),
            (EXPIRES_AT.to_owned(), n(5)),
        ]));
        let replace = replace_condition(Some(&expired));
        placeholders_match(&replace);
        assert_eq!(
            replace.condition.as_deref(),
            Some("#v = :found AND #e = :found_e")
        );
        for range in [
            KeyRange::All,
            KeyRange::Prefix("p".into()),
            KeyRange::Between {
                start: Some("a".into()),
                end: None,
            },
            KeyRange::Between {
                start: Some("a".into()),
                end: Some("b".into()),
            },
        ] {
            placeholders_match(&key_condition("owner", &range));
            let mut filtered = key_condition("owner", &range);
            let filter = live_filter(&mut filtered, 1);
            filtered.text = format!("{} {filter}", filtered.text);
            placeholders_match(&filtered);
        }
    }

    #[test]
    fn the_largest_projection_is_within_dynamodbs_limit() {
        assert!(
            projection(&names(100, "p"))
                .within_limit("attributes_to_get")
                .is_ok()
        );
    }

    #[test]
    fn key_conditions_are_a_few_placeholders_whatever_the_keys() {
        let long = "k".repeat(1024);
        let range = KeyRange::Between {
            start: Some(long.clone()),
            end: Some(long),
        };
        assert!(key_condition("owner", &range).text.len() < 64);
    }
}
