//! BatchWriteItems through the gRPC API, against dynalite: every entry versioned like PutItem
//! and DeleteItem, items written directly replaced like PutItem replaces them, bad batches
//! refused naming each entry, throttled entries written again, and the fate of every entry
//! named when the batch cannot finish (deadline, lost answer, cancelled call).

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::data::v1::{BatchPut, BatchWriteItemsRequest};
use prost::Message;
use prost_types::Timestamp;
use tests::{
    auth::Endpoints,
    data::{SignedIn, TestStack, string},
    emulators::Emulator,
    proxy::RecordingProxy,
    raw::{call_raw, framed},
    violated_fields,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn n(number: impl ToString) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn put(key: &str, text: &str) -> BatchPut {
    BatchPut {
        key: key.to_owned(),
        attributes: [("text".to_owned(), string(text))].into(),
        expires_at: None,
    }
}

fn batch(puts: Vec<BatchPut>, deletes: &[&str]) -> BatchWriteItemsRequest {
    BatchWriteItemsRequest {
        puts,
        deletes: deletes.iter().map(|key| (*key).to_owned()).collect(),
    }
}

async fn write(user: &mut SignedIn, request: BatchWriteItemsRequest) -> Result<(), Status> {
    let request = user.request(request);
    (user.client.batch_write_items(request).await).map(drop)
}

/// The ErrorInfo metadata of an incomplete batch.
fn fates(status: &Status) -> HashMap<String, String> {
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "BATCH_INCOMPLETE", "{status:?}");
    info.metadata.clone()
}

const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"throttled by the test"}"#;

#[tokio::test]
async fn a_batch_writes_every_put_and_delete_versioned() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    user.put_text("kept", "v1").await;
    user.put_text("gone", "v1").await;
    let created = user.get("kept").await.unwrap().created_at;
    let expires_at = Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    };
    let expiring = BatchPut {
        expires_at: Some(expires_at),
        ..put("expiring", "soon")
    };
    let request = batch(
        vec![put("kept", "v2"), put("new", "v1"), expiring],
        &["gone", "never-existed"],
    );
    write(&mut user, request).await.unwrap();

    let kept = user.get("kept").await.unwrap();
    assert_eq!((kept.version, kept.created_at), (2, created));
    assert_eq!(kept.attributes["text"], string("v2"));
    assert_eq!(user.get("new").await.unwrap().version, 1);
    let expiring = user.get("expiring").await.unwrap();
    assert_eq!(expiring.expires_at, Some(expires_at));
    assert_eq!(user.get("gone").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        user.get("never-existed").await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn bad_batches_are_refused_naming_each_entry() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let none = write(&mut user, batch(vec![], &[])).await.unwrap_err();
    assert_eq!(violated_fields(&none), ["puts"]);
    let puts = (0..20).map(|i| put(&format!("k{i}"), "x")).collect();
    let deletes: Vec<String> = (0..6).map(|i| format!("d{i}")).collect();
    let deletes: Vec<&str> = deletes.iter().map(String::as_str).collect();
    let too_many = write(&mut user, batch(puts, &deletes)).await.unwrap_err();
    assert_eq!(violated_fields(&too_many), ["puts"]);

    let twice = batch(
        vec![put("a", "x"), put("a", "y"), put("b", "x")],
        &["b", ""],
    );
    let status = write(&mut user, twice).await.unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["puts[1].key", "deletes[0]", "deletes[1]"]
    );

    for reserved in [
        "$attributes",
        "version",
        "created_at",
        "updated_at",
        "expires_at",
        "key",
        "owner",
    ] {
        let mut bad = put("r", "x");
        bad.attributes.insert(reserved.to_owned(), string("x"));
        let status = write(&mut user, batch(vec![put("ok", "x"), bad], &[]))
            .await
            .unwrap_err();
        let fields = violated_fields(&status);
        assert_eq!(fields.len(), 1, "{reserved}: {fields:?}");
        assert!(fields[0].starts_with("puts[1].attributes"), "{fields:?}");
    }
    let past = BatchPut {
        expires_at: Some(Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        ..put("p", "x")
    };
    let status = write(&mut user, batch(vec![past], &[])).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["puts[0].expires_at"]);
    for key in ["ok", "r", "a", "b", "p"] {
        assert_eq!(user.get(key).await.unwrap_err().code(), Code::NotFound);
    }
}

#[tokio::test]
async fn oversized_items_and_batches_are_refused() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let huge = put("huge", &"x".repeat(401 * 1024));
    let status = write(&mut user, batch(vec![put("small", "x"), huge], &[]))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["puts[1].attributes"]);

    // Six items just under 400 KB each: 2.3 MB, over the data-service's 1 MiB request limit.
    let big = "x".repeat(390 * 1024);
    let many = (0..6).map(|i| put(&format!("big{i}"), &big)).collect();
    let status = write(&mut user, batch(many, &[])).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // 25 items that fit the request limit on the wire but count over 1 MiB as DynamoDB
    // counts them, bookkeeping included (about 170 bytes each).
    let text = "x".repeat(41_850);
    let many = (0..25).map(|i| put(&format!("k{i:02}"), &text)).collect();
    let status = write(&mut user, batch(many, &[])).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["puts"]);
    assert!(status.message().contains("split"), "{status:?}");
    assert_eq!(user.get("big0").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(user.get("k00").await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn items_written_directly_are_replaced_or_deleted_like_single_writes() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    let top_level = AttributeValue::S("top level".into());
    direct
        .put_raw("legacy", vec![("version", n(3)), ("color", top_level)])
        .await;
    direct
        .put_raw(
            "malformed",
            vec![("version", AttributeValue::S("x".into()))],
        )
        .await;
    direct
        .put_raw("maxed", vec![("version", n(u64::MAX))])
        .await;
    direct
        .put_raw("expired", vec![("version", n(9)), ("expires_at", n(1))])
        .await;
    direct
        .put_raw("doomed", vec![("version", AttributeValue::Bool(true))])
        .await;
    let puts = ["legacy", "malformed", "maxed", "expired"]
        .map(|key| put(key, "replaced"))
        .into();
    write(&mut user, batch(puts, &["doomed"])).await.unwrap();

    let versions = [
        ("legacy", 4),
        ("malformed", 1),
        ("maxed", 1),
        ("expired", 1),
    ];
    for (key, version) in versions {
        let item = user.get(key).await.unwrap();
        assert_eq!(item.version, version, "{key}");
        let attributes: Vec<&String> = item.attributes.keys().collect();
        assert_eq!(attributes, ["text"], "{key}: only the new attributes");
    }
    assert!(direct.get_raw("doomed").await.is_none());
}

/// A stack whose data-service reaches dynalite through a recording proxy.
async fn behind_proxy() -> (TestStack, RecordingProxy) {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    let stack = TestStack::spawn_custom(Endpoints::shared().await, &proxy.endpoint()).await;
    (stack, proxy)
}

#[tokio::test]
async fn throttled_entries_are_written_again_within_the_deadline() {
    let (stack, proxy) = behind_proxy().await;
    let mut user = stack.user().await;
    for _ in 0..3 {
        proxy.answer_next("UpdateItem", 400, THROTTLED);
    }
    let puts = (0..4).map(|i| put(&format!("t{i}"), "x")).collect();
    write(&mut user, batch(puts, &[])).await.unwrap();
    for i in 0..4 {
        assert_eq!(user.get(&format!("t{i}")).await.unwrap().version, 1);
    }
    let throttled = (stack.data.metrics.dynamodb_calls).count("UpdateItem", "throttled");
    assert_eq!(throttled, 3);
}

#[tokio::test]
async fn entries_still_throttled_at_the_deadline_are_unavailable_naming_each() {
    let (stack, proxy) = behind_proxy().await;
    let mut user = stack.user().await;
    user.put_text("d", "x").await;
    for _ in 0..1000 {
        proxy.answer_next("UpdateItem", 400, THROTTLED);
    }
    let mut request = user.request(batch(vec![put("p0", "x"), put("p1", "x")], &["d"]));
    request.set_timeout(Duration::from_millis(1500));
    let status = user.client.batch_write_items(request).await.unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_error_details().retry_info().is_some());
    let fates = fates(&status);
    assert_eq!(fates["written"], "deletes[0]");
    assert_eq!(fates["not_written"], "puts[0],puts[1]");
    assert!(!fates.contains_key("unknown"), "{fates:?}");
    assert_eq!(user.get("d").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(user.get("p0").await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn an_entry_whose_answer_was_lost_is_reported_unknown() {
    let (stack, proxy) = behind_proxy().await;
    let mut user = stack.user().await;
    let table = stack.data.settings.items_table.clone();
    proxy.drop_next_response("UpdateItem", &table);
    let status = write(&mut user, batch(vec![put("only", "x")], &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(fates(&status)["unknown"], "puts[0]");
    // It had landed: reading tells.
    assert_eq!(user.get("only").await.unwrap().version, 1);
}

#[tokio::test]
async fn a_cancelled_batch_leaves_each_entry_whole_or_absent() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let text = "y".repeat(20_000);
    for round in 0..5u64 {
        let puts = (0..25).map(|i| put(&format!("c{i}"), &text)).collect();
        let request = user.request(batch(puts, &[]));
        let cut = Duration::from_millis(2 + round * 3);
        let _ = tokio::time::timeout(cut, user.client.batch_write_items(request)).await;
    }
    for i in 0..25 {
        match user.get(&format!("c{i}")).await {
            Ok(item) => {
                assert!((1..=5).contains(&item.version), "{item:?}");
                assert_eq!(item.attributes["text"], string(&text));
            }
            Err(status) => assert_eq!(status.code(), Code::NotFound),
        }
    }
}

#[tokio::test]
async fn raw_bytes_that_are_not_the_message_write_nothing() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let channel = stack.data.channel().await;
    let path = "/dynagate.data.v1.DataService/BatchWriteItems";
    let valid = batch(vec![put("raw", "x")], &[]).encode_to_vec();
    let mut truncated = valid.clone();
    truncated.truncate(valid.len() - 3);
    let garbage = vec![0xff; 64];
    for body in [truncated, garbage] {
        let status = call_raw(&channel, path, Some(&user.token), framed(&body)).await;
        assert_ne!(status.code(), Code::Ok, "{status:?}");
    }
    assert_eq!(user.get("raw").await.unwrap_err().code(), Code::NotFound);
    let ok = call_raw(&channel, path, Some(&user.token), framed(&valid)).await;
    assert_eq!(ok.code(), Code::Ok, "{ok:?}");
    assert_eq!(user.get("raw").await.unwrap().version, 1);
}
