//! BatchGetItems through the gRPC API: found items in the order asked, missing and expired keys
//! reported missing, items written directly read like GetItem reads them, and every bad
//! request refused before DynamoDB sees it.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::data::v1::{BatchGetItemsRequest, BatchGetItemsResponse};
use tests::{
    auth::Endpoints,
    data::{SignedIn, TestStack},
    delay::DelayProxy,
    emulators::Emulator,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn n(number: impl ToString) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

async fn batch(
    user: &mut SignedIn,
    request: BatchGetItemsRequest,
) -> Result<BatchGetItemsResponse, Status> {
    let request = user.request(request);
    (user.client.batch_get_items(request).await).map(tonic::Response::into_inner)
}

fn fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    tests::violated_fields(status)
}

#[tokio::test]
async fn found_items_come_in_request_order_and_the_rest_are_missing() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    for key in ["a", "b", "c"] {
        user.put_text(key, key).await;
    }
    direct
        .put_raw("expired", vec![("version", n(1)), ("expires_at", n(1))])
        .await;
    let legacy = AttributeValue::S("top level".into());
    direct
        .put_raw(
            "legacy",
            vec![
                ("version", AttributeValue::S("x".into())),
                ("color", legacy),
            ],
        )
        .await;
    let mut other = stack.user().await;
    other.put_text("theirs", "not yours").await;

    let wanted = keys(&["c", "nope", "a", "expired", "legacy", "theirs", "b"]);
    let read = batch(
        &mut user,
        BatchGetItemsRequest {
            keys: wanted,
            consistent_read: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let found: Vec<&str> = read.items.iter().map(|item| item.key.as_str()).collect();
    assert_eq!(found, ["c", "a", "legacy", "b"]);
    assert_eq!(read.missing_keys, keys(&["nope", "expired", "theirs"]));
    assert_eq!(read.items[0].version, 1);
    assert_eq!(read.items[2].version, 0, "not versioned by the service");
    assert!(read.items[2].attributes.contains_key("color"));
}

#[tokio::test]
async fn attributes_to_get_limits_what_each_item_returns() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    user.put_text("a", "hello").await;
    let request = BatchGetItemsRequest {
        keys: keys(&["a"]),
        consistent_read: true,
        attributes_to_get: keys(&["other", "version"]),
    };
    let read = batch(&mut user, request).await.unwrap();
    assert_eq!(read.items.len(), 1);
    assert_eq!(read.items[0].attributes, HashMap::new());
    assert_eq!(read.items[0].version, 1);
}

#[tokio::test]
async fn bad_batches_are_refused_naming_each_entry() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let none = (batch(&mut user, BatchGetItemsRequest::default()).await).unwrap_err();
    assert_eq!(fields(&none), ["keys"]);

    let many = (0..101).map(|i| format!("k{i}")).collect();
    let too_many = BatchGetItemsRequest {
        keys: many,
        ..Default::default()
    };
    let status = batch(&mut user, too_many).await.unwrap_err();
    assert_eq!(fields(&status), ["keys"]);

    let long = "k".repeat(1025);
    let bad = BatchGetItemsRequest {
        keys: vec![
            "a".into(),
            String::new(),
            "a".into(),
            long,
            "b".into(),
            "b".into(),
        ],
        ..Default::default()
    };
    let status = batch(&mut user, bad).await.unwrap_err();
    assert_eq!(
        fields(&status),
        ["keys[1]", "keys[2]", "keys[3]", "keys[5]"]
    );

    let named_twice = BatchGetItemsRequest {
        keys: keys(&["a"]),
        attributes_to_get: keys(&["x", "x"]),
        ..Default::default()
    };
    let status = batch(&mut user, named_twice).await.unwrap_err();
    assert_eq!(fields(&status), ["attributes_to_get[1]"]);
}

#[tokio::test]
async fn a_full_batch_of_100_keys_is_one_call() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    for i in (0..100).step_by(10) {
        user.put_text(&format!("k{i:03}"), "x").await;
    }
    let all = (0..100).map(|i| format!("k{i:03}")).collect();
    let before = stack
        .data
        .metrics
        .dynamodb_calls
        .count("BatchGetItem", "ok");
    let read = batch(
        &mut user,
        BatchGetItemsRequest {
            keys: all,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let after = stack
        .data
        .metrics
        .dynamodb_calls
        .count("BatchGetItem", "ok");
    assert_eq!((read.items.len(), read.missing_keys.len()), (10, 90));
    assert_eq!(after - before, 1);
}

#[tokio::test]
async fn keys_dynamodb_leaves_unprocessed_are_asked_again_never_reported_missing() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let big = "x".repeat(350 * 1024);
    let names: Vec<String> = (0..6).map(|i| format!("big{i}")).collect();
    for key in &names {
        user.put_text(key, &big).await;
    }

    let calls = || {
        stack
            .data
            .metrics
            .dynamodb_calls
            .count("BatchGetItem", "ok")
    };
    let before = calls();
    let request = BatchGetItemsRequest {
        keys: names.clone(),
        ..Default::default()
    };
    let read = batch(&mut user, request).await.unwrap();
    let sent = calls() - before;

    let found: Vec<String> = read.items.iter().map(|item| item.key.clone()).collect();
    assert_eq!(found, names);
    assert!(read.missing_keys.is_empty(), "{:?}", read.missing_keys);
    // dynalite, like DynamoDB past 16 MB, answers about 1.4 MB at once and leaves the rest
    // unprocessed: 2.1 MB of items take more than one call.
    assert!(sent >= 2, "{sent} BatchGetItem calls");
}

/// Keys DynamoDB still leaves unprocessed when the caller's budget runs out end the call
/// UNAVAILABLE with RetryInfo; none of them is reported missing. Every answer from DynamoDB
/// takes a second (a delaying proxy) and the budget is 1.5 s, while 2.1 MB of items take at
/// least two answers: whatever the machine's speed, the budget ends the call first.
#[tokio::test]
async fn keys_still_unprocessed_when_the_budget_ends_are_unavailable_never_missing() {
    const DELAY: Duration = Duration::from_secs(1);
    let endpoints = Endpoints::shared().await;
    let dynalite = Emulator::shared_dynalite().await;
    let proxy = DelayProxy::start(dynalite.addr(), DELAY).await;
    let slow_dynamodb = format!("http://{}", proxy.addr());
    let stack = TestStack::spawn_tuned(endpoints, &slow_dynamodb, |settings| {
        settings.request_timeout_ms = 1500;
    })
    .await;
    let user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    let big = AttributeValue::S("x".repeat(350 * 1024));
    let names: Vec<String> = (0..6).map(|i| format!("big{i}")).collect();
    for key in &names {
        direct.put_raw(key, vec![("body", big.clone())]).await;
    }

    let mut user = user;
    let request = BatchGetItemsRequest {
        keys: names.clone(),
        ..Default::default()
    };
    let status = batch(&mut user, request).await.expect_err("out of time");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let details = status.get_error_details();
    assert!(details.retry_info().is_some(), "RetryInfo in {status:?}");
}
