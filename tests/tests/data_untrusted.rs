//! Stored items are untrusted input: a user holding GetCredentials credentials can write any
//! item into their own partition without the data-service. These tests write such items with
//! the user's own temporary credentials, then drive every RPC over them: reads are served with
//! the documented defaults (version 0, timestamps unset), conditional writes are
//! FAILED_PRECONDITION / MALFORMED_ITEM, unconditional writes repair or remove the item, and
//! nothing is ever INTERNAL.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::data::v1::{
    DeleteItemRequest, Item, PutItemRequest, QueryItemsRequest, UpdateItemRequest,
};
use tests::{
    auth::Endpoints,
    data::{DirectAccess, SignedIn, TestStack, rewriting_proxy::RewritingProxy, string},
};
use tonic::Code;
use tonic_types::StatusExt;

fn n(number: &str) -> AttributeValue {
    AttributeValue::N(number.to_owned())
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

/// Versions the service never writes, by key: each is served as version 0.
fn malformed_versions() -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![
        ("missing", None),
        ("string", Some(s("7"))),
        ("negative", Some(n("-3"))),
        ("zero", Some(n("0"))),
        ("fractional", Some(n("1.5"))),
        ("exponent", Some(n("1e100"))),
        ("beyond-u64", Some(n("18446744073709551616"))),
        (
            "38-digits",
            Some(n("99999999999999999999999999999999999999")),
        ),
        ("bool", Some(AttributeValue::Bool(true))),
        ("null", Some(AttributeValue::Null(true))),
        ("list", Some(AttributeValue::L(vec![n("1")]))),
        (
            "map",
            Some(AttributeValue::M(HashMap::from([("v".into(), n("1"))]))),
        ),
        ("number-set", Some(AttributeValue::Ns(vec!["1".into()]))),
    ]
}

/// Timestamps that are not a millisecond count the service could have written; each is
/// served unset.
fn malformed_times() -> Vec<AttributeValue> {
    vec![
        n("99999999999999999999"),
        n("99999999999999999999999999999999999999"),
        n("-99999999999999999999999999999999999999"),
        n("1e100"),
        n("1.5"),
        n("253402300800000"), // 10000-01-01, past what a protobuf Timestamp holds
        n("-62135596801000"), // just before 0001-01-01
        s("yesterday"),
        AttributeValue::Bool(false),
    ]
}

/// Writes one item per malformed version, each with a client attribute `color`.
async fn write_malformed_versions(direct: &DirectAccess) {
    for (key, version) in malformed_versions() {
        let mut attributes = vec![("color", s(key))];
        if let Some(version) = version {
            attributes.push(("version", version));
        }
        direct.put_raw(key, attributes).await;
    }
}

async fn put(user: &mut SignedIn, request: PutItemRequest) -> Result<Item, tonic::Status> {
    let request = user.request(request);
    user.client
        .put_item(request)
        .await
        .map(|r| r.into_inner().item.expect("item"))
}

fn text_put(key: &str, text: &str) -> PutItemRequest {
    PutItemRequest {
        key: key.to_owned(),
        attributes: HashMap::from([("text".to_owned(), string(text))]),
        ..Default::default()
    }
}

fn assert_malformed_item(status: &tonic::Status, case: &str) {
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{case}: {status:?}"
    );
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("{case}: no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, "MALFORMED_ITEM", "{case}");
    assert!(
        status.message().contains("PutItem") && status.message().contains("delete"),
        "{case}: the message says how to fix it: {}",
        status.message()
    );
}

#[tokio::test]
async fn reads_serve_malformed_versions_as_zero_with_their_attributes() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    write_malformed_versions(&direct).await;
    direct
        .put_raw("largest", vec![("version", n("18446744073709551615"))])
        .await;

    for (key, _) in malformed_versions() {
        let item = user
            .get(key)
            .await
            .unwrap_or_else(|status| panic!("{key}: {status:?}"));
        assert_eq!(item.version, 0, "{key}");
        assert_eq!(item.attributes["color"], string(key), "{key}");
        assert_eq!((item.created_at, item.updated_at), (None, None), "{key}");
    }
    assert_eq!(user.get("largest").await.unwrap().version, u64::MAX);

    let page = user
        .client
        .query_items(user.request(QueryItemsRequest {
            consistent_read: true,
            ..Default::default()
        }))
        .await
        .expect("a page of malformed items is served")
        .into_inner();
    assert_eq!(page.items.len(), malformed_versions().len() + 1);
    for item in page.items.iter().filter(|item| item.key != "largest") {
        assert_eq!(item.version, 0, "{}", item.key);
    }
}

#[tokio::test]
async fn reads_leave_malformed_timestamps_unset_and_keep_valid_ones() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    let times = malformed_times();
    for (i, time) in times.iter().enumerate() {
        let attributes = vec![
            ("version", n("3")),
            ("created_at", time.clone()),
            ("updated_at", n("1700000000123")),
        ];
        direct.put_raw(&format!("created-{i}"), attributes).await;
        let attributes = vec![
            ("version", n("3")),
            ("created_at", n("1700000000123")),
            ("updated_at", time.clone()),
        ];
        direct.put_raw(&format!("updated-{i}"), attributes).await;
    }

    let valid = prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 123_000_000,
    };
    for (i, time) in times.iter().enumerate() {
        let case = format!("{time:?}");
        let created = user
            .get(&format!("created-{i}"))
            .await
            .unwrap_or_else(|status| panic!("{case}: {status:?}"));
        assert_eq!(created.version, 3, "{case}");
        assert_eq!(created.created_at, None, "{case}");
        assert_eq!(created.updated_at.as_ref(), Some(&valid), "{case}");
        let updated = user.get(&format!("updated-{i}")).await.unwrap();
        assert_eq!(updated.created_at.as_ref(), Some(&valid), "{case}");
        assert_eq!(updated.updated_at, None, "{case}");
    }
    let (keys, _) = user.query_all(QueryItemsRequest::default()).await;
    assert_eq!(keys.len(), 2 * times.len());
}

#[tokio::test]
async fn conditional_writes_against_a_malformed_item_are_malformed_item() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    write_malformed_versions(&direct).await;

    for (key, _) in malformed_versions() {
        let if_absent = put(
            &mut user,
            PutItemRequest {
                if_absent: true,
                ..text_put(key, "new")
            },
        )
        .await
        .unwrap_err();
        assert_malformed_item(&if_absent, &format!("{key}: if_absent"));
        for expected in [0, 1] {
            let versioned = put(
                &mut user,
                PutItemRequest {
                    expected_version: Some(expected),
                    ..text_put(key, "new")
                },
            )
            .await
            .unwrap_err();
            assert_malformed_item(&versioned, &format!("{key}: put at {expected}"));
            let update = user
                .client
                .update_item(user.request(UpdateItemRequest {
                    key: key.to_owned(),
                    set: HashMap::from([("text".into(), string("new"))]),
                    remove: vec![],
                    expected_version: Some(expected),
                    ..Default::default()
                }))
                .await
                .unwrap_err();
            assert_malformed_item(&update, &format!("{key}: update at {expected}"));
            let delete = user
                .client
                .delete_item(user.request(DeleteItemRequest {
                    key: key.to_owned(),
                    expected_version: Some(expected),
                }))
                .await
                .unwrap_err();
            assert_malformed_item(&delete, &format!("{key}: delete at {expected}"));
        }
        let unchanged = direct.get_raw(key).await.expect("still there");
        assert_eq!(unchanged["color"], s(key), "{key}: nothing was written");
        assert!(
            !unchanged.contains_key("text"),
            "{key}: nothing was written"
        );
    }
}

#[tokio::test]
async fn an_unconditional_put_replaces_a_malformed_item_at_version_one() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    write_malformed_versions(&direct).await;
    direct
        .put_raw(
            "valid",
            vec![("version", n("4")), ("created_at", n("1700000000000"))],
        )
        .await;
    direct
        .put_raw("largest", vec![("version", n("18446744073709551615"))])
        .await;

    for (key, _) in malformed_versions() {
        let item = put(&mut user, text_put(key, "fixed"))
            .await
            .unwrap_or_else(|status| panic!("{key}: {status:?}"));
        assert_eq!(item.version, 1, "{key}");
        assert!(item.created_at.is_some() && item.updated_at.is_some());
        let stored = user.get(key).await.unwrap();
        assert_eq!(stored.version, 1, "{key}");
        assert_eq!(
            stored.attributes,
            HashMap::from([("text".to_owned(), string("fixed"))]),
            "{key}: replaced, not merged"
        );
        assert_eq!(
            put(&mut user, text_put(key, "again"))
                .await
                .unwrap()
                .version,
            2
        );
    }
    let valid = put(&mut user, text_put("valid", "next")).await.unwrap();
    assert_eq!(valid.version, 5);
    assert_eq!(
        valid.created_at.map(|t| t.seconds),
        Some(1_700_000_000),
        "a valid creation time is kept"
    );
    let largest = put(&mut user, text_put("largest", "wrapped"))
        .await
        .unwrap();
    assert_eq!(largest.version, 1, "a version that cannot grow starts over");
}

#[tokio::test]
async fn thirty_concurrent_fixers_of_a_malformed_item_never_share_a_version() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    for (key, version) in [("string", s("x")), ("number", n("-1"))] {
        direct.put_raw(key, vec![("version", version)]).await;

        let fixers = (0..30).map(|i| {
            let mut client = user.client.clone();
            let request = user.request(text_put(key, &format!("fixer {i}")));
            async move { client.put_item(request).await }
        });
        let results = futures::future::join_all(fixers).await;

        let mut versions: Vec<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.get_ref().item.as_ref().unwrap().version)
            .collect();
        versions.sort_unstable();
        assert!(!versions.is_empty(), "{key}: nobody won: {results:?}");
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "{key}: each fixer that landed got its own version, starting at 1"
        );
        for result in &results {
            if let Err(status) = result {
                assert_eq!(status.code(), Code::Aborted, "{key}: {status:?}");
            }
        }
        let stored = direct.get_raw(key).await.unwrap();
        assert_eq!(stored["version"], n(&versions.len().to_string()), "{key}");
    }
}

#[tokio::test]
async fn an_unconditional_delete_removes_a_malformed_item_and_returns_it_with_defaults() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    write_malformed_versions(&direct).await;

    for (key, _) in malformed_versions() {
        let deleted = user
            .client
            .delete_item(user.request(DeleteItemRequest {
                key: key.to_owned(),
                expected_version: None,
            }))
            .await
            .unwrap_or_else(|status| panic!("{key}: {status:?}"))
            .into_inner()
            .item
            .unwrap();
        assert_eq!(deleted.version, 0, "{key}");
        assert_eq!(deleted.attributes["color"], string(key), "{key}");
        assert_eq!(direct.get_raw(key).await, None, "{key}");
    }
}

#[tokio::test]
async fn an_unconditional_update_starts_a_missing_version_and_refuses_a_malformed_one() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    write_malformed_versions(&direct).await;
    let update = |key: &str| UpdateItemRequest {
        key: key.to_owned(),
        set: HashMap::from([("text".into(), string("updated"))]),
        remove: vec![],
        expected_version: None,
        ..Default::default()
    };

    let started = user
        .client
        .update_item(user.request(update("missing")))
        .await
        .expect("an item without a version can be updated")
        .into_inner()
        .item
        .unwrap();
    assert_eq!(started.version, 1);
    assert_eq!(started.attributes["text"], string("updated"));
    assert_eq!(user.get("missing").await.unwrap().version, 1);

    // A fractional version in range cannot be told from an integer by a DynamoDB condition:
    // it is incremented like any number and still served as version 0.
    let fractional = user
        .client
        .update_item(user.request(update("fractional")))
        .await
        .expect("a fractional version is only a number")
        .into_inner()
        .item
        .unwrap();
    assert_eq!(fractional.version, 0);
    assert_eq!(
        direct.get_raw("fractional").await.unwrap()["version"],
        n("2.5")
    );

    for (key, _) in malformed_versions()
        .into_iter()
        .filter(|(key, _)| !["missing", "fractional"].contains(key))
    {
        let status = user
            .client
            .update_item(user.request(update(key)))
            .await
            .unwrap_err();
        assert_malformed_item(&status, key);
        assert!(!direct.get_raw(key).await.unwrap().contains_key("text"));
    }
    direct
        .put_raw("largest", vec![("version", n("18446744073709551615"))])
        .await;
    let status = user
        .client
        .update_item(user.request(update("largest")))
        .await
        .unwrap_err();
    assert_malformed_item(&status, "a version that cannot grow");
}

#[tokio::test]
async fn an_attribute_of_a_type_the_api_cannot_carry_is_data_loss_naming_the_item() {
    // No emulator stores a type the SDK does not know, so a proxy renames the type of the
    // attribute `odd_type` in DynamoDB's answers to the data-service.
    let endpoints = Endpoints::shared().await;
    let dynalite = endpoints
        .dynamodb
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy =
        RewritingProxy::start(dynalite, br#""odd_type":{"BOOL""#, br#""odd_type":{"BOOX""#).await;
    let stack = TestStack::spawn_custom(endpoints, &proxy.endpoint()).await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    let odd = vec![
        ("version", n("1")),
        ("odd_type", AttributeValue::Bool(true)),
    ];
    direct.put_raw("odd", odd).await;
    user.put_text("fine", "readable").await;

    let read = user.get("odd").await.unwrap_err();
    let page = user
        .client
        .query_items(user.request(QueryItemsRequest::default()))
        .await
        .unwrap_err();
    let updated = user
        .client
        .update_item(user.request(UpdateItemRequest {
            key: "odd".into(),
            set: HashMap::from([("text".into(), string("x"))]),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    let deleted = user
        .client
        .delete_item(user.request(DeleteItemRequest {
            key: "odd".into(),
            expected_version: None,
        }))
        .await
        .unwrap_err();

    for (case, status) in [
        ("get", &read),
        ("query", &page),
        ("update", &updated),
        ("delete", &deleted),
    ] {
        assert_eq!(status.code(), Code::DataLoss, "{case}: {status:?}");
        assert!(
            status.message().contains("\"odd\"") && status.message().contains("odd_type"),
            "{case}: names the item and the attribute: {}",
            status.message()
        );
    }
    assert!(
        updated.message().starts_with("the item was updated"),
        "{}",
        updated.message()
    );
    assert!(
        deleted.message().starts_with("the item was deleted"),
        "{}",
        deleted.message()
    );
    assert_eq!(direct.get_raw("odd").await, None, "the delete went through");
    assert_eq!(user.get("fine").await.unwrap().version, 1);
    let (keys, _) = user.query_all(QueryItemsRequest::default()).await;
    assert_eq!(keys, ["fine"], "with the item gone, queries work again");
}

#[tokio::test]
async fn an_item_nested_deeper_than_the_sdk_reads_is_data_loss_and_can_be_replaced() {
    // Real DynamoDB refuses nesting past 32 levels; dynalite stores it, and the SDK cannot
    // parse an answer holding 130 levels.
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    let deep = (0..130).fold(AttributeValue::Null(true), |inner, _| {
        AttributeValue::L(vec![inner])
    });
    direct
        .put_raw("deep", vec![("version", n("2")), ("x", deep)])
        .await;

    let read = user.get("deep").await.unwrap_err();
    let page = user
        .client
        .query_items(user.request(QueryItemsRequest::default()))
        .await
        .unwrap_err();
    for (case, status) in [("get", read), ("query", page)] {
        assert_eq!(status.code(), Code::DataLoss, "{case}: {status:?}");
        assert!(
            !status.message().contains("JSON"),
            "{case}: {}",
            status.message()
        );
    }

    let replaced = put(&mut user, text_put("deep", "flat")).await.unwrap();
    assert_eq!(replaced.version, 3, "the write reads only the version");
    assert_eq!(
        user.get("deep").await.unwrap().attributes["text"],
        string("flat")
    );
}
