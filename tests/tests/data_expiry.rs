//! Item expiry (`expires_at`): an expired item is absent to every read and to the conditions
//! of every write, at once. dynalite never deletes expired items (nor does DynamoDB for a
//! while), so the expired items here are written straight into the table with the user's own
//! credentials, with an `expires_at` already past: what the service meets after TTL's delay.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::data::v1::{
    DeleteItemRequest, PutItemRequest, QueryItemsRequest, UpdateItemRequest,
};
use prost_types::Timestamp;
use tests::data::{DirectAccess, SignedIn, TestStack, string};
use tonic::Code;
use tonic_types::StatusExt;

fn n(number: impl ToString) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn now() -> i64 {
    common::clock::now_unix()
}

fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn current_version(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo details");
    info.metadata["current_version"].clone()
}

fn put(key: &str, text: &str, expires_at: Option<Timestamp>) -> PutItemRequest {
    PutItemRequest {
        key: key.to_owned(),
        attributes: HashMap::from([("text".to_owned(), string(text))]),
        expires_at,
        ..Default::default()
    }
}

async fn bad_field(user: &mut SignedIn, request: PutItemRequest) -> Vec<String> {
    let status = user
        .client
        .put_item(user.request(request))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    tests::violated_fields(&status)
}

#[tokio::test]
async fn an_expiry_is_stored_in_seconds_kept_by_updates_and_dropped_by_puts() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    let later = now() + 3600;

    let written = (user
        .client
        .put_item(user.request(put("k", "a", at(later, 1))))
        .await)
        .unwrap()
        .into_inner()
        .item
        .unwrap();

    assert_eq!(written.expires_at, at(later + 1, 0), "rounded up");
    assert_eq!(user.get("k").await.unwrap().expires_at, at(later + 1, 0));
    let raw = direct.get_raw("k").await.unwrap();
    assert_eq!(raw["expires_at"], n(later + 1), "Unix seconds, top level");

    let update = |expires_at| UpdateItemRequest {
        key: "k".into(),
        set: HashMap::from([("more".to_owned(), string("x"))]),
        expires_at,
        ..Default::default()
    };
    let kept = (user.client.update_item(user.request(update(None))).await)
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!((kept.version, kept.expires_at), (2, at(later + 1, 0)));
    let only_expiry = UpdateItemRequest {
        key: "k".into(),
        expires_at: at(later + 60, 0),
        ..Default::default()
    };
    let moved = (user.client.update_item(user.request(only_expiry)).await)
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!((moved.version, moved.expires_at), (3, at(later + 60, 0)));

    let permanent = (user
        .client
        .put_item(user.request(put("k", "b", None)))
        .await)
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!((permanent.version, permanent.expires_at), (4, None));
    assert!(
        !direct
            .get_raw("k")
            .await
            .unwrap()
            .contains_key("expires_at")
    );
}

#[tokio::test]
async fn past_invalid_and_reserved_expiries_are_invalid_argument_and_write_nothing() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;

    for refused in [
        at(now() - 1, 0),
        at(0, 0),
        at(now() + 60, -1),
        at(now() + 60, 1_000_000_000),
        at(i64::MAX, 0),
    ] {
        let fields = bad_field(&mut user, put("k", "a", refused)).await;
        assert_eq!(fields, ["expires_at"], "{refused:?}");
    }
    let mut reserved = put("k", "a", None);
    reserved
        .attributes
        .insert("expires_at".into(), string("soon"));
    let fields = bad_field(&mut user, reserved).await;
    assert_eq!(fields, ["attributes[\"expires_at\"]"]);
    let past_update = UpdateItemRequest {
        key: "k".into(),
        expires_at: at(now() - 10, 0),
        ..Default::default()
    };
    let status = (user.client.update_item(user.request(past_update)).await).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(user.get("k").await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn expired_items_are_absent_to_get_and_query_at_once() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    let expired = [
        ("expired", n(now() - 10)),
        ("expired-now", n(now())),
        ("expired-fraction", n("1.5")),
        ("expired-negative", n(-5)),
    ];
    let live = [
        ("live", n(now() + 3600)),
        ("live-exponent", n("1e100")),
        ("live-string", s("yesterday")),
        ("live-none", AttributeValue::Null(true)),
    ];
    for (key, expires_at) in expired.iter().chain(&live) {
        let map = AttributeValue::M(HashMap::from([("color".to_owned(), s("red"))]));
        let attributes = vec![
            ("version", n(1)),
            ("$attributes", map),
            ("expires_at", expires_at.clone()),
        ];
        direct.put_raw(key, attributes).await;
    }

    for (key, _) in &expired {
        let status = user.get(key).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{key}");
    }
    for (key, _) in &live {
        let item = user.get(key).await.unwrap();
        assert_eq!(item.version, 1, "{key}");
        assert_eq!(item.expires_at.is_some(), *key == "live", "{key}");
    }
    let mut wanted: Vec<String> = live.iter().map(|(key, _)| (*key).to_owned()).collect();
    wanted.sort();
    for limit in [0, 1, 3] {
        let (keys, _) = user
            .query_all(QueryItemsRequest {
                limit,
                ..Default::default()
            })
            .await;
        assert_eq!(keys, wanted, "limit {limit}");
    }
    let (prefixed, _) = user
        .query_all(QueryItemsRequest {
            key_prefix: "expired".into(),
            ..Default::default()
        })
        .await;
    assert!(prefixed.is_empty(), "{prefixed:?}");
}

/// Writes an item at version 7 that expired a minute ago, with a top-level attribute too.
async fn stale(direct: &DirectAccess, key: &str) {
    let map = AttributeValue::M(HashMap::from([("color".to_owned(), s("red"))]));
    let attributes = vec![
        ("version", n(7)),
        ("created_at", n(1_000)),
        ("legacy", s("top level")),
        ("$attributes", map),
        ("expires_at", n(now() - 60)),
    ];
    direct.put_raw(key, attributes).await;
}

#[tokio::test]
async fn writes_treat_an_expired_item_as_absent() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    stale(&direct, "e").await;

    let update = UpdateItemRequest {
        key: "e".into(),
        set: HashMap::from([("x".to_owned(), string("y"))]),
        ..Default::default()
    };
    let status = (user.client.update_item(user.request(update))).await;
    assert_eq!(status.unwrap_err().code(), Code::NotFound);
    let delete = DeleteItemRequest {
        key: "e".into(),
        expected_version: None,
    };
    let status = (user.client.delete_item(user.request(delete))).await;
    assert_eq!(status.unwrap_err().code(), Code::NotFound);
    let versioned = PutItemRequest {
        expected_version: Some(7),
        ..put("e", "v", None)
    };
    let status = (user.client.put_item(user.request(versioned)).await).unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(current_version(&status), "0");

    for (key, precondition) in [("e", "if_absent"), ("u", "none"), ("z", "version 0")] {
        if key != "e" {
            stale(&direct, key).await;
        }
        let request = PutItemRequest {
            if_absent: precondition == "if_absent",
            expected_version: (precondition == "version 0").then_some(0),
            ..put(key, "new", None)
        };
        let created = (user.client.put_item(user.request(request)).await)
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        assert_eq!(created.version, 1, "{precondition}");
        assert_eq!(created.created_at, created.updated_at, "{precondition}");
        assert_eq!(created.expires_at, None);
        let mut names: Vec<&String> = created.attributes.keys().collect();
        names.sort();
        assert_eq!(
            names,
            ["text"],
            "nothing of the expired item: {precondition}"
        );
        let raw = direct.get_raw(key).await.unwrap();
        assert!(!raw.contains_key("legacy") && !raw.contains_key("expires_at"));
        assert_eq!(user.get(key).await.unwrap().version, 1);
    }
}

#[tokio::test]
async fn thirty_if_absent_puts_racing_over_an_expired_item_have_one_winner() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    let map = AttributeValue::M(HashMap::new());
    let attributes = vec![
        ("version", n(1)),
        ("$attributes", map),
        ("expires_at", n(now() - 60)),
    ];
    direct.put_raw("raced", attributes).await;

    let calls = (0..30).map(|i| {
        let mut client = user.client.clone();
        let request = user.request(PutItemRequest {
            if_absent: true,
            ..put("raced", &format!("writer {i}"), None)
        });
        async move { client.put_item(request).await }
    });
    let results = futures::future::join_all(calls).await;

    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0].get_ref().item.clone().unwrap();
    assert_eq!(winner.version, 1);
    for loser in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(loser.code(), Code::FailedPrecondition, "{loser:?}");
        assert_eq!(current_version(loser), "1");
    }
    let mut user = user;
    let stored = user.get("raced").await.unwrap();
    assert_eq!(stored.attributes, winner.attributes);
}

/// Every page of a count query: (count, items returned) per page.
async fn count_pages(user: &mut SignedIn, request: QueryItemsRequest) -> Vec<(u64, usize)> {
    let (mut pages, mut token) = (Vec::new(), String::new());
    loop {
        let request = user.request(QueryItemsRequest {
            page_token: token,
            consistent_read: true,
            select_count: true,
            ..request.clone()
        });
        let page = (user.client.query_items(request).await)
            .expect("QueryItems")
            .into_inner();
        pages.push((page.count, page.items.len()));
        if page.next_page_token.is_empty() {
            return pages;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn select_count_counts_live_items_a_page_at_a_time_and_returns_none() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    for i in 0..25 {
        user.put_text(&format!("c/{i:02}"), "live").await;
    }
    for i in [0, 5, 9, 20, 24] {
        let attributes = vec![("version", n(1)), ("expires_at", n(now() - 1))];
        direct
            .put_raw(&format!("c/{i:02}-expired"), attributes)
            .await;
    }
    user.put_text("d/1", "elsewhere").await;

    let prefix = QueryItemsRequest {
        key_prefix: "c/".into(),
        ..Default::default()
    };
    let whole = count_pages(&mut user, prefix.clone()).await;
    let paged = count_pages(
        &mut user,
        QueryItemsRequest {
            limit: 7,
            ..prefix.clone()
        },
    )
    .await;
    let range = QueryItemsRequest {
        start_key: "c/05".into(),
        end_key: "c/09".into(),
        ..Default::default()
    };
    let ranged = count_pages(&mut user, range).await;
    let descending = QueryItemsRequest {
        descending: true,
        limit: 4,
        ..prefix
    };
    let backwards = count_pages(&mut user, descending).await;

    let total = |pages: &[(u64, usize)]| pages.iter().map(|(count, _)| count).sum::<u64>();
    assert_eq!(total(&whole), 25, "{whole:?}");
    assert_eq!(total(&paged), 25, "{paged:?}");
    assert!(paged.len() >= 5, "30 items read 7 at a time: {paged:?}");
    assert!(paged.iter().all(|&(count, _)| count <= 7), "{paged:?}");
    assert_eq!(
        total(&ranged),
        5,
        "c/05..=c/09 but not the expired c/05-expired: {ranged:?}"
    );
    assert_eq!(total(&backwards), 25, "{backwards:?}");
    let all = [whole, paged, ranged, backwards].concat();
    assert!(all.iter().all(|&(_, items)| items == 0), "{all:?}");
    let listed = (user.client.query_items(user.request(QueryItemsRequest {
        key_prefix: "d/".into(),
        consistent_read: true,
        ..Default::default()
    })))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        (listed.count, listed.items.len()),
        (1, 1),
        "count is set on listings too"
    );
}
