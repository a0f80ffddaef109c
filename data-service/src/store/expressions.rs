//! The DynamoDB expressions of item operations, with their name and value placeholders. Client
//! attribute names only ever travel as `ExpressionAttributeNames` values, never inside an
//! expression, so no name can change an expression's meaning.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{KeyRange, n, s};

/// Names used in every expression (`key` and others are DynamoDB reserved words).
const NAMES: [(&str, &str); 5] = [
    ("#o", "owner"),
    ("#k", "key"),
    ("#v", "version"),
    ("#c", "created_at"),
    ("#u", "updated_at"),
];

/// An expression with the placeholders it uses.
#[derive(Debug, Default)]
pub struct Expression {
    /// The expression text.
    pub text: String,
    /// `#…` placeholders.
    pub names: HashMap<String, String>,
    /// `:…` placeholders.
    pub values: HashMap<String, AttributeValue>,
}

/// The bookkeeping names `wanted` (`#k`, `#v`, …) mapped to their attributes.
fn names(wanted: &[&str]) -> HashMap<String, String> {
    NAMES
        .iter()
        .filter(|(placeholder, _)| wanted.contains(placeholder))
        .map(|(placeholder, name)| ((*placeholder).to_owned(), (*name).to_owned()))
        .collect()
}

/// A GetItem projection of the bookkeeping attributes and `attributes`.
pub fn projection(attributes: &[String]) -> Expression {
    let mut text = "#k, #v, #c, #u".to_owned();
    let mut names = names(&["#k", "#v", "#c", "#u"]);
    for (i, name) in attributes.iter().enumerate() {
        text.push_str(&format!(", #p{i}"));
        names.insert(format!("#p{i}"), name.clone());
    }
    Expression {
        text,
        names,
        values: HashMap::new(),
    }
}

/// The update that sets `set`, removes `remove`, bumps the version and stamps `now`.
pub fn update(set: HashMap<String, AttributeValue>, remove: &[String], now: i128) -> Expression {
    let mut names = names(&["#k", "#v", "#u"]);
    let mut values = HashMap::from([(":one".to_owned(), n(1)), (":now".to_owned(), n(now))]);
    let mut sets = vec!["#v = #v + :one".to_owned(), "#u = :now".to_owned()];
    for (i, (name, value)) in set.into_iter().enumerate() {
        names.insert(format!("#s{i}"), name);
        values.insert(format!(":s{i}"), value);
        sets.push(format!("#s{i} = :s{i}"));
    }
    let mut text = format!("SET {}", sets.join(", "));
    if !remove.is_empty() {
        let removes: Vec<String> = (0..remove.len()).map(|i| format!("#r{i}")).collect();
        names.extend(
            remove
                .iter()
                .enumerate()
                .map(|(i, name)| (format!("#r{i}"), name.clone())),
        );
        text.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    Expression {
        text,
        names,
        values,
    }
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
    }
}
