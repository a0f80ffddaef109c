//! The data-service through its gRPC API: both services in-process, dynalite for DynamoDB,
//! moto for STS.

use std::collections::HashMap;

use common::proto::data::v1::{
    BytesSet, DeleteItemRequest, GetItemRequest, ListValue, MapValue, NumberSet, PutItemRequest,
    QueryItemsRequest, StringSet, UpdateItemRequest, Value, value::Kind,
};
use data_service::store::PUT_ATTEMPTS;
use tests::data::{SignedIn, TestStack, string};
use tonic::Code;
use tonic_types::StatusExt;

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

fn number(n: &str) -> Value {
    value(Kind::NumberValue(n.to_owned()))
}

fn current_version(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo details");
    assert_eq!(info.reason, "VERSION_MISMATCH");
    info.metadata["current_version"].clone()
}

#[tokio::test]
async fn the_whole_story_put_get_update_query_delete() {
    let stack = TestStack::spawn().await;
    let mut alice = stack.user().await;

    let put = alice
        .client
        .put_item(alice.request(PutItemRequest {
            key: "notes/1".into(),
            attributes: HashMap::from([
                ("title".into(), string("first")),
                ("stars".into(), number("3")),
            ]),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(put.version, 1);
    assert_eq!(put.created_at, put.updated_at);

    let got = alice.get("notes/1").await.unwrap();
    assert_eq!(got.attributes, put.attributes);
    assert_eq!(got.version, 1);

    let updated = alice
        .client
        .update_item(alice.request(UpdateItemRequest {
            key: "notes/1".into(),
            set: HashMap::from([("title".into(), string("second"))]),
            remove: vec!["stars".into()],
            expected_version: Some(1),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(
        updated.attributes,
        HashMap::from([("title".into(), string("second"))])
    );
    assert_eq!(updated.created_at, put.created_at);

    let stale = alice
        .client
        .update_item(alice.request(UpdateItemRequest {
            key: "notes/1".into(),
            set: HashMap::from([("title".into(), string("lost update"))]),
            remove: vec![],
            expected_version: Some(1),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert_eq!(current_version(&stale), "2");

    for i in 2..=7 {
        alice.put_text(&format!("notes/{i}"), "more").await;
    }
    alice.put_text("other/1", "not a note").await;
    let ascending = QueryItemsRequest {
        key_prefix: "notes/".into(),
        limit: 2,
        ..Default::default()
    };
    let (keys, pages) = alice.query_all(ascending.clone()).await;
    let expected: Vec<String> = (1..=7).map(|i| format!("notes/{i}")).collect();
    assert_eq!(keys, expected);
    assert!(pages >= 4, "7 items 2 at a time: {pages} pages");
    let (keys, _) = alice
        .query_all(QueryItemsRequest {
            descending: true,
            ..ascending
        })
        .await;
    assert_eq!(keys, expected.iter().rev().cloned().collect::<Vec<_>>());
    let ranged = QueryItemsRequest {
        start_key: "notes/3".into(),
        end_key: "notes/5".into(),
        ..Default::default()
    };
    assert_eq!(
        alice.query_all(ranged).await.0,
        ["notes/3", "notes/4", "notes/5"]
    );

    let deleted = alice
        .client
        .delete_item(alice.request(DeleteItemRequest {
            key: "notes/1".into(),
            expected_version: Some(2),
        }))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(deleted.attributes, updated.attributes);
    let gone = alice.get("notes/1").await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn every_value_kind_round_trips() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let mut nested = HashMap::from([("inner".to_owned(), number("-12.5"))]);
    nested.insert("empty string".into(), string(""));
    let attributes = HashMap::from([
        ("s".to_owned(), string("héllo ✓")),
        ("n".to_owned(), number("1234567890.0987654321")),
        ("b".to_owned(), value(Kind::BytesValue(vec![0, 1, 2, 255]))),
        ("t".to_owned(), value(Kind::BoolValue(true))),
        ("f".to_owned(), value(Kind::BoolValue(false))),
        ("null".to_owned(), value(Kind::NullValue(0))),
        (
            "l".to_owned(),
            value(Kind::ListValue(ListValue {
                values: vec![
                    string("a"),
                    number("1"),
                    value(Kind::ListValue(ListValue::default())),
                ],
            })),
        ),
        (
            "m".to_owned(),
            value(Kind::MapValue(MapValue { fields: nested })),
        ),
        (
            "ss".to_owned(),
            value(Kind::StringSet(StringSet {
                values: vec!["x".into(), "y".into()],
            })),
        ),
        (
            "ns".to_owned(),
            value(Kind::NumberSet(NumberSet {
                values: vec!["1".into(), "2.5".into()],
            })),
        ),
        (
            "bs".to_owned(),
            value(Kind::BytesSet(BytesSet {
                values: vec![vec![1], vec![2, 3]],
            })),
        ),
    ]);

    user.client
        .put_item(user.request(PutItemRequest {
            key: "all".into(),
            attributes: attributes.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let mut got = user.get("all").await.unwrap().attributes;

    // Sets have no order in DynamoDB: compare them as sets.
    for name in ["ss", "ns"] {
        let sort = |v: &mut Value| match &mut v.kind {
            Some(Kind::StringSet(s)) => s.values.sort(),
            Some(Kind::NumberSet(s)) => s.values.sort(),
            _ => {}
        };
        sort(got.get_mut(name).unwrap());
    }
    if let Some(Kind::BytesSet(s)) = &mut got.get_mut("bs").unwrap().kind {
        s.values.sort();
    }
    assert_eq!(got, attributes);
}

#[tokio::test]
async fn attributes_to_get_limits_what_is_returned() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    user.client
        .put_item(user.request(PutItemRequest {
            key: "k".into(),
            attributes: HashMap::from([("a".into(), string("1")), ("b".into(), string("2"))]),
            ..Default::default()
        }))
        .await
        .unwrap();

    let item = user
        .client
        .get_item(user.request(GetItemRequest {
            key: "k".into(),
            consistent_read: true,
            attributes_to_get: vec!["a".into(), "version".into()],
        }))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();

    assert_eq!(item.attributes, HashMap::from([("a".into(), string("1"))]));
    assert_eq!((item.key.as_str(), item.version), ("k", 1));
}

#[tokio::test]
async fn attributes_to_get_naming_only_reserved_attributes_returns_no_client_attributes() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    user.put_text("k", "not asked for").await;

    for names in [
        vec!["version"],
        vec!["key", "owner", "version", "created_at", "updated_at"],
    ] {
        let item = user
            .client
            .get_item(user.request(GetItemRequest {
                key: "k".into(),
                consistent_read: true,
                attributes_to_get: names.iter().map(|n| (*n).to_owned()).collect(),
            }))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();

        assert_eq!(
            item.attributes,
            HashMap::new(),
            "{names:?} is never widened"
        );
        assert_eq!((item.key.as_str(), item.version), ("k", 1), "{names:?}");
        assert!(item.created_at.is_some() && item.updated_at.is_some());
    }
}

#[tokio::test]
async fn thirty_identical_requests_at_once_behave_like_thirty_in_a_row() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let creates = (0..30).map(|_| {
        let mut client = user.client.clone();
        let request = user.request(PutItemRequest {
            key: "same".into(),
            attributes: HashMap::from([("text".into(), string("first"))]),
            if_absent: true,
            ..Default::default()
        });
        async move { client.put_item(request).await }
    });
    let creates = futures::future::join_all(creates).await;
    one_winner("if_absent", &creates, "1");

    let updates = (0..30).map(|i| {
        let mut client = user.client.clone();
        let request = user.request(UpdateItemRequest {
            key: "same".into(),
            set: HashMap::from([("text".into(), number(&i.to_string()))]),
            ..Default::default()
        });
        async move { client.update_item(request).await }
    });
    let updates = futures::future::join_all(updates).await;
    let mut versions: Vec<u64> = updates
        .iter()
        .map(|r| r.as_ref().expect("every update applies").get_ref())
        .map(|r| r.item.as_ref().unwrap().version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=31).collect::<Vec<_>>(), "one version each");
    assert_eq!(user.get("same").await.unwrap().version, 31);

    let deletes = (0..30).map(|_| {
        let mut client = user.client.clone();
        let request = user.request(DeleteItemRequest {
            key: "same".into(),
            expected_version: None,
        });
        async move { client.delete_item(request).await }
    });
    let deletes = futures::future::join_all(deletes).await;
    let (winners, losers) = outcomes(&deletes);
    assert_eq!(winners, 1, "{losers:?}");
    assert!(losers.iter().all(|&c| c == Code::NotFound), "{losers:?}");
}

#[tokio::test]
async fn if_absent_creates_once_and_reports_the_version_it_found() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let create = |user: &SignedIn| {
        user.request(PutItemRequest {
            key: "once".into(),
            if_absent: true,
            ..Default::default()
        })
    };

    let first = user.client.put_item(create(&user)).await;
    let second = user.client.put_item(create(&user)).await.unwrap_err();

    assert_eq!(first.unwrap().into_inner().item.unwrap().version, 1);
    assert_eq!(second.code(), Code::FailedPrecondition);
    assert_eq!(current_version(&second), "1");
    let missing = user
        .client
        .delete_item(user.request(DeleteItemRequest {
            key: "never".into(),
            expected_version: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let absent_version = user
        .client
        .put_item(user.request(PutItemRequest {
            key: "never".into(),
            expected_version: Some(4),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(current_version(&absent_version), "0");
}

#[tokio::test]
async fn unconditional_puts_replace_the_item_and_bump_the_version() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    assert_eq!(user.put_text("k", "one").await, 1);
    assert_eq!(user.put_text("k", "two").await, 2);
    let item = user.get("k").await.unwrap();
    assert_eq!(
        item.attributes,
        HashMap::from([("text".into(), string("two"))])
    );
    let seconds = |t: &Option<prost_types::Timestamp>| {
        let t = t.as_ref().unwrap();
        (t.seconds, t.nanos)
    };
    assert!(seconds(&item.created_at) <= seconds(&item.updated_at));
}

#[tokio::test]
async fn concurrent_writers_with_one_expected_version_have_exactly_one_winner() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    user.put_text("contended", "v1").await;

    let writers = (0..8).map(|i| {
        let mut client = user.client.clone();
        let request = user.request(PutItemRequest {
            key: "contended".into(),
            attributes: HashMap::from([("writer".into(), number(&i.to_string()))]),
            expected_version: Some(1),
            ..Default::default()
        });
        async move { client.put_item(request).await }
    });
    let results = futures::future::join_all(writers).await;
    let updaters = (0..8).map(|i| {
        let mut client = user.client.clone();
        let request = user.request(UpdateItemRequest {
            key: "contended".into(),
            set: HashMap::from([("updater".into(), number(&i.to_string()))]),
            remove: vec![],
            expected_version: Some(2),
            ..Default::default()
        });
        async move { client.update_item(request).await }
    });
    let updates = futures::future::join_all(updaters).await;

    one_winner("put", &results, "2");
    one_winner("update", &updates, "3");
    assert_eq!(user.get("contended").await.unwrap().version, 3);
}

/// Exactly one call succeeded (none at all fails too), and every other one was refused with
/// the version the winner wrote.
fn one_winner<T>(what: &str, results: &[Result<T, tonic::Status>], winner: &str) {
    let (winners, losers) = outcomes(results);
    assert_eq!(winners, 1, "{what}: losers {losers:?}");
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{what}: {status:?}"
        );
        assert_eq!(current_version(status), winner, "{what}");
    }
}

/// How many calls succeeded, and the codes of those that failed.
fn outcomes<T>(results: &[Result<T, tonic::Status>]) -> (usize, Vec<Code>) {
    let losers = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|s| s.code())
        .collect();
    (results.iter().filter(|r| r.is_ok()).count(), losers)
}

#[tokio::test]
async fn unconditional_concurrent_puts_all_land_one_after_another() {
    const WRITERS: usize = 6;
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;

    let writers = (0..WRITERS).map(|i| {
        let mut client = user.client.clone();
        let request = user.request(PutItemRequest {
            key: "busy".into(),
            attributes: HashMap::from([("writer".into(), number(&i.to_string()))]),
            ..Default::default()
        });
        async move { client.put_item(request).await }
    });
    let results = futures::future::join_all(writers).await;

    let mut versions: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.get_ref().item.as_ref().unwrap().version)
        .collect();
    versions.sort_unstable();
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
    }
    // A put loses an attempt only to another writer's win, and each writer wins once: one
    // that gives up after PUT_ATTEMPTS losses saw that many others land. So all of them, or
    // at least PUT_ATTEMPTS, land; if every writer failed this fails.
    assert!(!versions.is_empty(), "every writer failed: {results:?}");
    assert!(
        versions.len() >= WRITERS.min(PUT_ATTEMPTS),
        "only {} of {WRITERS} landed: {results:?}",
        versions.len()
    );
    assert_eq!(
        versions,
        (1..=versions.len() as u64).collect::<Vec<_>>(),
        "no version is skipped or repeated"
    );
    let stored = user.get("busy").await.unwrap().version;
    assert_eq!(
        stored,
        versions.len() as u64,
        "the last writer's version is stored"
    );
}
