//! The UpdateItem expressions of the one-call writes: a PutItem setting the attribute map as a
//! whole, and an UpdateItem changing some attributes in the map or, for items of the older
//! layout, at the top level. Both bump `version`, keep `created_at` and stamp `updated_at` in
//! the same call, under the write's condition.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    Precondition, Put, Update, expiry,
    expressions::{Expression, names},
    n, s,
};

/// Where an item keeps its client attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// In the attribute map (what the service writes).
    Map,
    /// At the top level (items written before the map, or directly by their owner).
    TopLevel,
}

impl Layout {
    /// The path of the attribute whose name placeholder is `placeholder`.
    fn path(self, placeholder: &str) -> String {
        match self {
            Self::Map => format!("#m.{placeholder}"),
            Self::TopLevel => placeholder.to_owned(),
        }
    }

    /// The condition that the stored item has this layout.
    fn condition(self) -> &'static str {
        match self {
            Self::Map => "attribute_type(#m, :map)",
            Self::TopLevel => "NOT attribute_type(#m, :map)",
        }
    }

    /// The other layout.
    pub fn other(self) -> Self {
        match self {
            Self::Map => Self::TopLevel,
            Self::TopLevel => Self::Map,
        }
    }
}

/// The bookkeeping every write does: bump the version (a missing one starts at 1), keep the
/// creation time, stamp the update time.
const BOOKKEEPING: &str = "#v = if_not_exists(#v, :zero) + :one, #u = :now";

fn bookkeeping_values(now: i64) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (":zero".to_owned(), n(0)),
        (":one".to_owned(), n(1)),
        (":now".to_owned(), n(now)),
    ])
}

/// The PutItem of `put` as one UpdateItem: the map replaced as a whole and the expiry set (or
/// removed), under the put's precondition. An unconditional put requires an absent item or a
/// live one in the map layout whose version can grow (1 to u64::MAX - 1); a versioned one
/// requires a live item in the map layout too. Whatever else is stored (an expired item
/// included) fails the condition and is judged by the caller. `Version(0)` is `IfAbsent`;
/// `Version(u64::MAX)` must not come here (its successor does not exist).
pub fn put(put: &Put, now: i64) -> Expression {
    let mut values = bookkeeping_values(now);
    values.insert(
        ":attrs".to_owned(),
        AttributeValue::M(put.attributes.clone()),
    );
    let mut text = format!("SET #m = :attrs, #c = if_not_exists(#c, :now), {BOOKKEEPING}");
    match expiry_assignment(put.expires_at, &mut values) {
        Some(assignment) => text.push_str(&format!(", {assignment}")),
        None => text.push_str(" REMOVE #e"),
    }
    let condition = match put.precondition {
        Precondition::IfAbsent | Precondition::Version(0) => "attribute_not_exists(#k)".to_owned(),
        Precondition::Version(expected) => {
            values.insert(":expected".to_owned(), n(expected));
            values.insert(":map".to_owned(), s("M"));
            values.extend(expiry::live_values(now.div_euclid(1000)));
            format!(
                "attribute_exists(#k) AND #v = :expected AND attribute_type(#m, :map) AND {}",
                expiry::LIVE
            )
        }
        Precondition::None => {
            values.insert(":map".to_owned(), s("M"));
            values.insert(":largest".to_owned(), n(u64::MAX - 1));
            values.extend(expiry::live_values(now.div_euclid(1000)));
            format!(
                "attribute_not_exists(#k) OR (attribute_type(#m, :map) AND #v BETWEEN :one AND \
                 :largest AND {})",
                expiry::LIVE
            )
        }
    };
    Expression {
        text,
        condition: Some(condition),
        names: names(&["#k", "#v", "#c", "#u", "#e", "#m"]),
        values,
    }
}

/// The SET action of a new expiry, its value added to `values`.
fn expiry_assignment(
    expires_at: Option<i64>,
    values: &mut HashMap<String, AttributeValue>,
) -> Option<String> {
    values.insert(":expires".to_owned(), n(expires_at?));
    Some("#e = :expires".to_owned())
}

/// The update expression's text for `update`'s changes on `layout`, its placeholders added
/// to `names` and `values` (the bookkeeping ones are there already).
fn changes(
    update: &Update,
    layout: Layout,
    names: &mut HashMap<String, String>,
    values: &mut HashMap<String, AttributeValue>,
) -> String {
    let mut name = |placeholder: String, attribute: &String| {
        let path = layout.path(&placeholder);
        names.insert(placeholder, attribute.clone());
        path
    };
    let mut sets = vec![BOOKKEEPING.to_owned()];
    sets.extend(expiry_assignment(update.expires_at, values));
    for (i, (attribute, value)) in update.set.iter().enumerate() {
        sets.push(format!("{} = :s{i}", name(format!("#s{i}"), attribute)));
        values.insert(format!(":s{i}"), value.clone());
    }
    for (i, (attribute, value)) in update.append.iter().enumerate() {
        let path = name(format!("#p{i}"), attribute);
        sets.push(format!(
            "{path} = list_append(if_not_exists({path}, :empty), :p{i})"
        ));
        values.insert(format!(":p{i}"), value.clone());
        values.insert(":empty".to_owned(), AttributeValue::L(Vec::new()));
    }
    let mut text = format!("SET {}", sets.join(", "));
    for (clause, prefix, entries) in [
        ("ADD", "a", &update.add),
        ("DELETE", "d", &update.delete_from_sets),
    ] {
        let actions: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(i, (attribute, value))| {
                values.insert(format!(":{prefix}{i}"), value.clone());
                format!("{} :{prefix}{i}", name(format!("#{prefix}{i}"), attribute))
            })
            .collect();
        if !actions.is_empty() {
            text.push_str(&format!(" {clause} {}", actions.join(", ")));
        }
    }
    let removes: Vec<String> = (update.remove.iter().enumerate())
        .map(|(i, attribute)| name(format!("#r{i}"), attribute))
        .collect();
    if !removes.is_empty() {
        text.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    text
}

/// The UpdateItem of `update` on an existing, live item of `layout`: SET, ADD, DELETE and
/// REMOVE in one expression. Without `expected`, a missing version starts at 1 and a stored one
/// must be a number that can grow (1 to u64::MAX - 1; a fraction in that range cannot be told
/// apart by a condition).
pub fn update(update: &Update, now: i64, layout: Layout) -> Expression {
    let mut names = names(&["#k", "#v", "#u", "#e", "#m"]);
    let mut values = bookkeeping_values(now);
    values.insert(":map".to_owned(), s("M"));
    values.extend(expiry::live_values(now.div_euclid(1000)));
    let text = changes(update, layout, &mut names, &mut values);
    let version = match update.expected {
        Some(expected) => {
            values.insert(":expected".to_owned(), n(expected));
            "#v = :expected"
        }
        None => {
            values.insert(":largest".to_owned(), n(u64::MAX - 1));
            "(attribute_not_exists(#v) OR #v BETWEEN :one AND :largest)"
        }
    };
    Expression {
        text,
        condition: Some(format!(
            "attribute_exists(#k) AND {} AND {version} AND {}",
            layout.condition(),
            expiry::LIVE
        )),
        names,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::expressions::{MAX_EXPRESSION_BYTES, placeholders_match};

    fn names(count: usize, prefix: &str) -> Vec<String> {
        (0..count).map(|i| format!("{prefix}{i}")).collect()
    }

    fn update_of(set: usize, remove: usize, expected: Option<u64>) -> Update {
        Update {
            key: "k".into(),
            set: names(set, "a")
                .into_iter()
                .map(|name| (name, s("x")))
                .collect(),
            remove: names(remove, "r"),
            add: HashMap::new(),
            append: HashMap::new(),
            delete_from_sets: HashMap::new(),
            expected,
            expires_at: None,
        }
    }

    fn counters_and_lists(update: Update) -> Update {
        let entries = |prefix: &str, value: AttributeValue| {
            names(2, prefix)
                .into_iter()
                .map(|name| (name, value.clone()))
                .collect()
        };
        Update {
            expires_at: Some(5),
            add: entries("n", n(1)),
            append: entries("l", AttributeValue::L(vec![s("x")])),
            delete_from_sets: entries("t", AttributeValue::Ss(vec!["x".into()])),
            ..update
        }
    }

    #[test]
    fn every_write_expression_defines_exactly_the_placeholders_it_uses() {
        for precondition in [
            Precondition::None,
            Precondition::IfAbsent,
            Precondition::Version(0),
            Precondition::Version(3),
        ] {
            for expires_at in [None, Some(5)] {
                let written = Put {
                    key: "k".into(),
                    attributes: HashMap::new(),
                    precondition,
                    expires_at,
                };
                placeholders_match(&put(&written, 1));
            }
        }
        for layout in [Layout::Map, Layout::TopLevel] {
            for expected in [None, Some(4)] {
                placeholders_match(&update(&update_of(3, 2, expected), 1, layout));
                placeholders_match(&update(&update_of(3, 0, expected), 1, layout));
                placeholders_match(&update(&update_of(0, 2, expected), 1, layout));
                let every = counters_and_lists(update_of(1, 1, expected));
                placeholders_match(&update(&every, 1, layout));
                placeholders_match(&update(
                    &counters_and_lists(update_of(0, 0, expected)),
                    1,
                    layout,
                ));
            }
        }
        let every = update(&counters_and_lists(update_of(0, 0, None)), 1, Layout::Map);
        assert!(every.text.contains(" ADD #m.#a"), "{}", every.text);
        assert!(every.text.contains(" DELETE #m.#d"), "{}", every.text);
        assert!(
            every
                .text
                .contains("#m.#p0 = list_append(if_not_exists(#m.#p0, :empty), :p0)"),
            "{}",
            every.text
        );
    }

    #[test]
    fn updates_write_into_the_map_or_at_the_top_level() {
        let change = update_of(1, 1, None);
        let map = update(&change, 1, Layout::Map);
        assert!(map.text.contains("#m.#s0 = :s0"), "{}", map.text);
        assert!(map.text.contains("REMOVE #m.#r0"), "{}", map.text);
        assert!(
            map.condition
                .unwrap()
                .contains("AND attribute_type(#m, :map)")
        );
        let top = update(&change, 1, Layout::TopLevel);
        assert!(top.text.contains(", #s0 = :s0"), "{}", top.text);
        assert!(top.text.contains("REMOVE #r0"), "{}", top.text);
        assert!(
            top.condition
                .unwrap()
                .contains("NOT attribute_type(#m, :map)")
        );
    }

    #[test]
    fn the_largest_update_is_within_dynamodbs_limit() {
        let largest = update(&update_of(100, 100, Some(u64::MAX)), i64::MAX, Layout::Map);
        assert!(
            largest.text.len() < MAX_EXPRESSION_BYTES * 3 / 4,
            "{}",
            largest.text.len()
        );
        assert!(largest.within_limit("set").is_ok());
    }

    #[test]
    fn an_expression_over_4_kb_is_refused_naming_the_field() {
        match update(&update_of(400, 0, None), 1, Layout::Map).within_limit("set") {
            Err(crate::error::DataError::InvalidArgument(violations)) => {
                assert_eq!(violations[0].field, "set");
            }
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }
}
