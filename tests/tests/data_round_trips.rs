//! DynamoDB calls per RPC, counted by a recording proxy in front of dynalite: every write is
//! one call in every mode (unconditional, `if_absent`, `expected_version`) on an item in the
//! service's layout, with `version` + 1 and `created_at` kept; items of the older layout (client
//! attributes at the top level, written before the attribute map or directly by their owner)
//! stay readable and writable, at the documented cost.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::data::v1::{
    DeleteItemRequest, GetItemRequest, Item, ListValue, PutItemRequest, QueryItemsRequest,
    StringSet, UpdateItemRequest, value::Kind,
};
use tests::{
    auth::Endpoints,
    data::{SignedIn, TestStack, string},
    emulators::Emulator,
    proxy::RecordingProxy,
};
use tonic::Code;

/// The data-service's stack behind a recording proxy, and one user.
async fn recorded() -> (RecordingProxy, TestStack, SignedIn) {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    let stack = TestStack::spawn_custom(Endpoints::shared().await, &proxy.endpoint()).await;
    let user = stack.user().await;
    (proxy, stack, user)
}

/// The item operations sent since the last call (health probes of the table left out).
fn sent(proxy: &RecordingProxy) -> Vec<String> {
    let operations = proxy
        .requests()
        .iter()
        .map(|request| request.operation().to_owned())
        .filter(|operation| operation != "DescribeTable")
        .collect();
    proxy.clear();
    operations
}

fn put(key: &str, attributes: &[(&str, &str)]) -> PutItemRequest {
    PutItemRequest {
        key: key.to_owned(),
        attributes: attributes
            .iter()
            .map(|(name, text)| ((*name).to_owned(), string(text)))
            .collect(),
        ..Default::default()
    }
}

async fn put_item(user: &mut SignedIn, request: PutItemRequest) -> Result<Item, tonic::Status> {
    let request = user.request(request);
    user.client
        .put_item(request)
        .await
        .map(|r| r.into_inner().item.expect("an item"))
}

async fn update_item(
    user: &mut SignedIn,
    request: UpdateItemRequest,
) -> Result<Item, tonic::Status> {
    let request = user.request(request);
    user.client
        .update_item(request)
        .await
        .map(|r| r.into_inner().item.expect("an item"))
}

fn names(item: &Item) -> Vec<&str> {
    let mut names: Vec<&str> = item.attributes.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

#[tokio::test]
async fn every_write_is_one_dynamodb_call_in_every_mode() {
    let (proxy, _stack, mut user) = recorded().await;
    proxy.clear();

    let created = put_item(&mut user, put("k", &[("a", "1"), ("b", "2")]))
        .await
        .unwrap();
    assert_eq!(
        sent(&proxy),
        ["UpdateItem"],
        "an unconditional put of a new item"
    );
    assert_eq!((created.version, names(&created)), (1, vec!["a", "b"]));

    // Time moves on by at least a millisecond, so a kept created_at can be told apart.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let replaced = put_item(&mut user, put("k", &[("c", "3")])).await.unwrap();
    assert_eq!(sent(&proxy), ["UpdateItem"], "an unconditional replacement");
    assert_eq!((replaced.version, names(&replaced)), (2, vec!["c"]));
    assert_eq!(
        replaced.created_at, created.created_at,
        "created_at is kept"
    );
    assert_ne!(replaced.updated_at, created.updated_at);

    let versioned = PutItemRequest {
        expected_version: Some(2),
        ..put("k", &[("d", "4")])
    };
    let versioned = put_item(&mut user, versioned).await.unwrap();
    assert_eq!(sent(&proxy), ["UpdateItem"], "a put at an expected version");
    assert_eq!((versioned.version, names(&versioned)), (3, vec!["d"]));
    assert_eq!(versioned.created_at, created.created_at);

    let absent = PutItemRequest {
        if_absent: true,
        ..put("new", &[("e", "5")])
    };
    assert_eq!(
        put_item(&mut user, absent.clone()).await.unwrap().version,
        1
    );
    assert_eq!(sent(&proxy), ["UpdateItem"], "a put if absent");
    let created_once = PutItemRequest {
        expected_version: Some(0),
        ..put("newer", &[])
    };
    assert_eq!(put_item(&mut user, created_once).await.unwrap().version, 1);
    assert_eq!(sent(&proxy), ["UpdateItem"], "a put at expected version 0");

    let update = UpdateItemRequest {
        key: "k".into(),
        set: HashMap::from([("f".to_owned(), string("6"))]),
        remove: vec!["d".into()],
        expected_version: None,
        ..Default::default()
    };
    let updated = update_item(&mut user, update.clone()).await.unwrap();
    assert_eq!(sent(&proxy), ["UpdateItem"], "an unconditional update");
    assert_eq!((updated.version, names(&updated)), (4, vec!["f"]));
    let versioned_update = UpdateItemRequest {
        expected_version: Some(4),
        ..update
    };
    assert_eq!(
        update_item(&mut user, versioned_update)
            .await
            .unwrap()
            .version,
        5
    );
    assert_eq!(
        sent(&proxy),
        ["UpdateItem"],
        "an update at an expected version"
    );

    let get = user.request(GetItemRequest {
        key: "k".into(),
        ..Default::default()
    });
    user.client.get_item(get).await.unwrap();
    assert_eq!(sent(&proxy), ["GetItem"]);
    let query = user.request(QueryItemsRequest::default());
    user.client.query_items(query).await.unwrap();
    assert_eq!(sent(&proxy), ["Query"]);

    let delete = |key: &str, expected_version| {
        user.request(DeleteItemRequest {
            key: key.to_owned(),
            expected_version,
        })
    };
    let (versioned_delete, plain_delete) = (delete("k", Some(5)), delete("new", None));
    user.client.delete_item(versioned_delete).await.unwrap();
    assert_eq!(
        sent(&proxy),
        ["DeleteItem"],
        "a delete at an expected version"
    );
    user.client.delete_item(plain_delete).await.unwrap();
    assert_eq!(sent(&proxy), ["DeleteItem"], "an unconditional delete");

    // A refused condition costs one read more, to say why.
    let stale = PutItemRequest {
        expected_version: Some(7),
        ..put("newer", &[])
    };
    let refused = put_item(&mut user, stale).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(sent(&proxy), ["UpdateItem", "GetItem"]);
}

fn n(number: &str) -> AttributeValue {
    AttributeValue::N(number.to_owned())
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn map(pairs: &[(&str, AttributeValue)]) -> AttributeValue {
    AttributeValue::M(
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect(),
    )
}

#[tokio::test]
async fn items_of_the_older_layout_stay_readable_and_writable() {
    let (proxy, stack, mut user) = recorded().await;
    let direct = stack.direct_access(&user).await;
    let created_at = "1700000000123";
    let old = |key: &'static str| {
        vec![
            ("version", n("3")),
            ("created_at", n(created_at)),
            ("updated_at", n(created_at)),
            ("color", s(key)),
            ("size", n("2")),
        ]
    };
    direct.put_raw("update-me", old("update-me")).await;
    direct.put_raw("put-me", old("put-me")).await;
    proxy.clear();

    let read = user.get("put-me").await.unwrap();
    assert_eq!((read.version, names(&read)), (3, vec!["color", "size"]));
    let only_color = user.request(GetItemRequest {
        key: "put-me".into(),
        attributes_to_get: vec!["color".into()],
        ..Default::default()
    });
    let projected = user.client.get_item(only_color).await.unwrap().into_inner();
    assert_eq!(names(&projected.item.unwrap()), ["color"]);
    sent(&proxy);

    // An update applies at the top level, where the attributes are: three calls.
    let update = UpdateItemRequest {
        key: "update-me".into(),
        set: HashMap::from([("shade".to_owned(), string("dark"))]),
        remove: vec!["size".into()],
        expected_version: Some(3),
        ..Default::default()
    };
    let updated = update_item(&mut user, update).await.unwrap();
    assert_eq!(sent(&proxy), ["UpdateItem", "GetItem", "UpdateItem"]);
    assert_eq!(
        (updated.version, names(&updated)),
        (4, vec!["color", "shade"])
    );
    let raw = direct.get_raw("update-me").await.unwrap();
    assert!(raw.contains_key("shade") && !raw.contains_key("$attributes"));

    // A put moves the item to the map layout: three calls once, then one.
    let replaced = put_item(&mut user, put("put-me", &[("shape", "round")]))
        .await
        .unwrap();
    assert_eq!(sent(&proxy), ["UpdateItem", "GetItem", "PutItem"]);
    assert_eq!((replaced.version, names(&replaced)), (4, vec!["shape"]));
    assert_eq!(
        replaced.created_at.map(|t| t.seconds),
        Some(1_700_000_000),
        "created_at is kept"
    );
    let raw = direct.get_raw("put-me").await.unwrap();
    assert_eq!(
        raw.get("color"),
        None,
        "no attribute is left at the top level"
    );
    assert_eq!(raw["$attributes"], map(&[("shape", s("round"))]));
    let again = put_item(&mut user, put("put-me", &[("shape", "square")]))
        .await
        .unwrap();
    assert_eq!(sent(&proxy), ["UpdateItem"]);
    assert_eq!(again.version, 5);
}

#[tokio::test]
async fn an_item_with_both_layouts_reads_as_their_union_with_the_map_winning() {
    let (_proxy, stack, mut user) = recorded().await;
    let direct = stack.direct_access(&user).await;
    direct
        .put_raw(
            "both",
            vec![
                ("version", n("1")),
                ("top", s("top only")),
                ("shared", s("top")),
                (
                    "$attributes",
                    map(&[
                        ("inner", s("map only")),
                        ("shared", s("map")),
                        ("version", n("99")),
                    ]),
                ),
            ],
        )
        .await;
    let read = user.get("both").await.unwrap();
    assert_eq!(names(&read), ["inner", "shared", "top"]);
    assert_eq!(read.attributes["shared"], string("map"));
    assert_eq!(
        read.version, 1,
        "a reserved name inside the map is not the version"
    );

    // A put replaces the map; what the owner wrote beside it stays theirs.
    put_item(&mut user, put("both", &[("fresh", "x")]))
        .await
        .unwrap();
    let read = user.get("both").await.unwrap();
    assert_eq!(names(&read), ["fresh", "shared", "top"]);
    assert_eq!(read.version, 2);

    // A map attribute that is not a map is not the layout's: it is ignored and replaced.
    direct
        .put_raw(
            "odd",
            vec![("version", n("1")), ("$attributes", s("x")), ("a", s("1"))],
        )
        .await;
    assert_eq!(names(&user.get("odd").await.unwrap()), ["a"]);
    let update = UpdateItemRequest {
        key: "odd".into(),
        set: HashMap::from([("b".to_owned(), string("2"))]),
        ..Default::default()
    };
    let updated = update_item(&mut user, update).await.unwrap();
    assert_eq!((updated.version, names(&updated)), (2, vec!["a", "b"]));
    let replaced = put_item(&mut user, put("odd", &[("c", "3")]))
        .await
        .unwrap();
    assert_eq!((replaced.version, names(&replaced)), (3, vec!["c"]));
    assert_eq!(names(&user.get("odd").await.unwrap()), ["c"]);
}

#[tokio::test]
async fn the_attribute_map_name_is_reserved() {
    let (_proxy, _stack, mut user) = recorded().await;
    let status = put_item(&mut user, put("k", &[("$attributes", "x")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        tests::violated_fields(&status),
        [r#"attributes["$attributes"]"#]
    );
}

fn number(n: &str) -> common::proto::data::v1::Value {
    common::proto::data::v1::Value {
        kind: Some(Kind::NumberValue(n.to_owned())),
    }
}

fn strings(members: &[&str]) -> common::proto::data::v1::Value {
    common::proto::data::v1::Value {
        kind: Some(Kind::StringSet(StringSet {
            values: members.iter().map(|m| (*m).to_owned()).collect(),
        })),
    }
}

fn list(values: &[&str]) -> ListValue {
    ListValue {
        values: values.iter().map(|v| string(v)).collect(),
    }
}

fn sorted_members(value: &common::proto::data::v1::Value) -> Vec<String> {
    let Some(Kind::StringSet(set)) = &value.kind else {
        panic!("a string set: {value:?}");
    };
    let mut members = set.values.clone();
    members.sort();
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_appends_and_set_deletions_are_one_call_and_atomic() {
    let (proxy, stack, mut user) = recorded().await;
    put_item(&mut user, put("c", &[("text", "a string")]))
        .await
        .unwrap();
    proxy.clear();

    let first = UpdateItemRequest {
        key: "c".into(),
        add: HashMap::from([
            ("count".to_owned(), number("2")),
            ("tags".to_owned(), strings(&["a", "b"])),
        ]),
        append: HashMap::from([("log".to_owned(), list(&["x"]))]),
        ..Default::default()
    };
    let item = update_item(&mut user, first).await.unwrap();
    assert_eq!(sent(&proxy), ["UpdateItem"]);
    assert_eq!(item.version, 2);
    assert_eq!(
        item.attributes["count"],
        number("2"),
        "a missing counter starts at 0"
    );
    assert_eq!(sorted_members(&item.attributes["tags"]), ["a", "b"]);

    let second = UpdateItemRequest {
        key: "c".into(),
        add: HashMap::from([("count".to_owned(), number("-0.5"))]),
        append: HashMap::from([("log".to_owned(), list(&["y"]))]),
        delete_from_sets: HashMap::from([("tags".to_owned(), strings(&["a"]))]),
        expected_version: Some(2),
        ..Default::default()
    };
    let item = update_item(&mut user, second).await.unwrap();
    assert_eq!(sent(&proxy), ["UpdateItem"]);
    assert_eq!(item.attributes["count"], number("1.5"));
    assert_eq!(sorted_members(&item.attributes["tags"]), ["b"]);
    let log = common::proto::data::v1::Value {
        kind: Some(Kind::ListValue(list(&["x", "y"]))),
    };
    assert_eq!(item.attributes["log"], log);

    // Thirty increments at once: every one lands, each at a version of its own.
    let increments = (0..30).map(|_| {
        let mut client = user.client.clone();
        let request = user.request(UpdateItemRequest {
            key: "c".into(),
            add: HashMap::from([("count".to_owned(), number("1"))]),
            ..Default::default()
        });
        tokio::spawn(async move { client.update_item(request).await.map(|r| r.into_inner()) })
    });
    let mut versions = Vec::new();
    for increment in increments.collect::<Vec<_>>() {
        versions.push(increment.await.unwrap().unwrap().item.unwrap().version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (4..34).collect::<Vec<u64>>());
    let read = user.get("c").await.unwrap();
    assert_eq!(
        (read.version, &read.attributes["count"]),
        (33, &number("31.5"))
    );

    // Adding a number to a string is refused by DynamoDB and changes nothing.
    let wrong_type = UpdateItemRequest {
        key: "c".into(),
        add: HashMap::from([("text".to_owned(), number("1"))]),
        ..Default::default()
    };
    let refused = update_item(&mut user, wrong_type).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(user.get("c").await.unwrap().version, 33);

    // On an item of the older layout the same changes apply at the top level.
    let direct = stack.direct_access(&user).await;
    direct
        .put_raw("old", vec![("version", n("1")), ("count", n("10"))])
        .await;
    let old = UpdateItemRequest {
        key: "old".into(),
        add: HashMap::from([("count".to_owned(), number("1"))]),
        ..Default::default()
    };
    let item = update_item(&mut user, old).await.unwrap();
    assert_eq!(
        (item.version, &item.attributes["count"]),
        (2, &number("11"))
    );
    assert_eq!(direct.get_raw("old").await.unwrap()["count"], n("11"));
}
