//! TransactWriteItems through the gRPC API. dynalite has no TransactWriteItems, so the
//! data-service's DynamoDB here is moto 5.2.5, behind a recording proxy that forwards one
//! request at a time: moto loses updates under concurrent conditional writes, and DynamoDB
//! serializes the writes of one item anyway, so only a serialized moto makes a race mean
//! something. moto ignores ClientRequestToken (it never reads it): what the token does on
//! DynamoDB cannot be shown here; that it is sent, and that a retried call is never applied
//! twice, can.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::data::v1::{
    ConditionCheck, DeleteItemRequest, PutItemRequest, TransactOp, TransactWriteItemsRequest,
    UpdateItemRequest, transact_op::Op,
};
use tests::{
    auth::Endpoints,
    data::{DirectAccess, SignedIn, TestStack, string},
    emulators::Emulator,
    proxy::RecordingProxy,
    violated_fields,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn n(number: impl ToString) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

/// A stack whose data-service writes to moto through a serializing recording proxy. Calls get
/// 20 s rather than 3: one moto, one request at a time, shared by every test of this file,
/// is slow on a loaded machine, and a racer cut off by its deadline proves nothing.
async fn on_moto() -> (TestStack, RecordingProxy) {
    let proxy = RecordingProxy::start(Emulator::shared_moto().await.addr()).await;
    proxy.serialize();
    let endpoints = Endpoints::shared().await;
    let stack = TestStack::spawn_tuned(endpoints, &proxy.endpoint(), |settings| {
        settings.request_timeout_ms = 20_000;
    })
    .await;
    (stack, proxy)
}

/// The user's own credentials, straight to moto (where the service keeps the items).
async fn direct(stack: &TestStack, user: &SignedIn) -> DirectAccess {
    let access = stack.direct_access(user).await;
    let moto = Emulator::shared_moto().await.endpoint();
    let config = access
        .dynamodb
        .config()
        .to_builder()
        .endpoint_url(moto)
        .build();
    DirectAccess {
        dynamodb: aws_sdk_dynamodb::Client::from_conf(config),
        ..access
    }
}

fn put(key: &str, text: &str) -> PutItemRequest {
    PutItemRequest {
        key: key.to_owned(),
        attributes: [("text".to_owned(), string(text))].into(),
        ..Default::default()
    }
}

fn update(key: &str, text: &str, expected: Option<u64>) -> UpdateItemRequest {
    UpdateItemRequest {
        key: key.to_owned(),
        set: [("text".to_owned(), string(text))].into(),
        expected_version: expected,
        ..Default::default()
    }
}

fn delete(key: &str, expected: Option<u64>) -> DeleteItemRequest {
    DeleteItemRequest {
        key: key.to_owned(),
        expected_version: expected,
    }
}

fn check(key: &str, if_absent: bool, expected: Option<u64>) -> ConditionCheck {
    ConditionCheck {
        key: key.to_owned(),
        if_absent,
        expected_version: expected,
    }
}

fn ops(ops: Vec<Op>) -> TransactWriteItemsRequest {
    TransactWriteItemsRequest {
        ops: ops
            .into_iter()
            .map(|op| TransactOp { op: Some(op) })
            .collect(),
        client_token: String::new(),
    }
}

async fn transact(
    user: &mut SignedIn,
    request: TransactWriteItemsRequest,
) -> Result<Vec<u64>, Status> {
    let request = user.request(request);
    let answer = user.client.transact_write_items(request).await;
    answer.map(|answer| answer.into_inner().versions)
}

/// The ErrorInfo metadata of a transaction whose conditions failed.
fn failures(status: &Status) -> HashMap<String, String> {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "TRANSACTION_CONDITION_FAILED", "{status:?}");
    info.metadata.clone()
}

async fn absent(user: &mut SignedIn, key: &str) {
    assert_eq!(
        user.get(key).await.unwrap_err().code(),
        Code::NotFound,
        "{key}"
    );
}

#[tokio::test]
async fn every_op_is_applied_and_each_version_reported() {
    let (stack, proxy) = on_moto().await;
    let mut user = stack.user().await;
    for key in ["a", "b", "c"] {
        user.put_text(key, "v1").await;
    }
    let created = user.get("a").await.unwrap().created_at;
    let mut request = ops(vec![
        Op::Put(PutItemRequest {
            if_absent: true,
            ..put("new", "x")
        }),
        Op::Update(update("a", "v2", Some(1))),
        Op::Delete(delete("b", Some(1))),
        Op::ConditionCheck(check("c", false, Some(1))),
        Op::Put(put("c2", "unconditional")),
    ]);
    request.client_token = "6f1c2a7e-9b1d-4c3e-8f00-0123456789ab".into();
    proxy.clear();
    let versions = transact(&mut user, request).await.unwrap();

    assert_eq!(versions, [1, 2, 0, 1, 1]);
    let a = user.get("a").await.unwrap();
    assert_eq!((a.version, a.created_at), (2, created));
    assert_eq!(a.attributes["text"], string("v2"));
    assert_eq!(user.get("new").await.unwrap().version, 1);
    absent(&mut user, "b").await;
    assert_eq!(
        user.get("c").await.unwrap().version,
        1,
        "checked, not written"
    );
    let sent: Vec<_> = (proxy.requests().into_iter())
        .filter(|request| request.operation() == "TransactWriteItems")
        .collect();
    assert_eq!(sent.len(), 1, "one TransactWriteItems call");
    assert_eq!(
        sent[0].body["ClientRequestToken"],
        "6f1c2a7e-9b1d-4c3e-8f00-0123456789ab"
    );
}

#[tokio::test]
async fn failed_conditions_name_every_failed_op_and_write_nothing() {
    let (stack, _proxy) = on_moto().await;
    let mut user = stack.user().await;
    user.put_text("a", "v1").await;
    user.put_text("c", "v1").await;
    let request = ops(vec![
        Op::Put(put("fresh", "x")),
        Op::Update(update("a", "stale", Some(7))),
        Op::ConditionCheck(check("c", true, None)),
        Op::Delete(delete("missing", None)),
        Op::Update(update("a2", "x", None)),
    ]);
    let status = transact(&mut user, request).await.unwrap_err();

    let failed = failures(&status);
    assert_eq!(failed["failed_ops"], "1,2,3,4");
    assert_eq!(failed["op_1"], "VERSION_MISMATCH current_version=1");
    assert_eq!(failed["op_2"], "VERSION_MISMATCH current_version=1");
    assert_eq!(failed["op_3"], "NOT_FOUND");
    assert_eq!(failed["op_4"], "NOT_FOUND");
    absent(&mut user, "fresh").await;
    assert_eq!(
        user.get("a").await.unwrap().attributes["text"],
        string("v1")
    );
}

#[tokio::test]
async fn expired_items_are_absent_to_every_condition() {
    let (stack, _proxy) = on_moto().await;
    let mut user = stack.user().await;
    let direct = direct(&stack, &user).await;
    for key in ["gone", "gone-too", "gone-three", "gone-four"] {
        direct
            .put_raw(key, vec![("version", n(4)), ("expires_at", n(1))])
            .await;
    }
    let request = ops(vec![
        Op::Put(PutItemRequest {
            if_absent: true,
            ..put("gone", "reborn")
        }),
        Op::ConditionCheck(check("gone-too", false, Some(0))),
        Op::Put(PutItemRequest {
            expected_version: Some(0),
            ..put("gone-three", "reborn")
        }),
    ]);
    let versions = transact(&mut user, request).await.unwrap();
    assert_eq!(versions, [1, 0, 1]);
    let reborn = user.get("gone").await.unwrap();
    assert_eq!((reborn.version, reborn.expires_at), (1, None));

    let request = ops(vec![
        Op::Update(update("gone-four", "x", None)),
        Op::Delete(delete("gone-too", Some(4))),
    ]);
    let failed = failures(&transact(&mut user, request).await.unwrap_err());
    assert_eq!(failed["op_0"], "NOT_FOUND");
    assert_eq!(failed["op_1"], "NOT_FOUND");
}

#[tokio::test]
async fn items_written_directly_are_handled_like_single_writes() {
    let (stack, _proxy) = on_moto().await;
    let mut user = stack.user().await;
    let direct = direct(&stack, &user).await;
    let top = AttributeValue::S("top".into());
    direct
        .put_raw("legacy", vec![("version", n(3)), ("color", top.clone())])
        .await;
    direct.put_raw("unversioned", vec![("color", top)]).await;
    direct
        .put_raw(
            "malformed",
            vec![("version", AttributeValue::S("x".into()))],
        )
        .await;
    let request = ops(vec![
        Op::Put(put("legacy", "replaced")),
        Op::Update(update("unversioned", "set", None)),
        Op::Put(put("malformed", "replaced")),
    ]);
    let versions = transact(&mut user, request).await.unwrap();
    assert_eq!(versions, [4, 1, 1]);
    let legacy = user.get("legacy").await.unwrap();
    assert_eq!(legacy.attributes.keys().collect::<Vec<_>>(), ["text"]);
    let updated = user.get("unversioned").await.unwrap();
    assert_eq!(updated.attributes["text"], string("set"));
    assert_eq!(
        updated.attributes["color"],
        string("top"),
        "kept at the top level"
    );
    let raw = direct.get_raw("unversioned").await.unwrap();
    assert!(raw.contains_key("text") && !raw.contains_key("$attributes"));

    direct
        .put_raw("malformed", vec![("version", AttributeValue::Bool(true))])
        .await;
    let request = ops(vec![Op::Update(update("malformed", "x", Some(1)))]);
    let failed = failures(&transact(&mut user, request).await.unwrap_err());
    assert_eq!(failed["op_0"], "MALFORMED_ITEM");
}

#[tokio::test]
async fn a_transaction_raced_30_times_on_one_item_has_one_winner_per_version() {
    let (stack, _proxy) = on_moto().await;
    let mut user = stack.user().await;
    user.put_text("race", "start").await;
    for version in 1..=2u64 {
        let racers: Vec<_> = (0..30)
            .map(|i| {
                let mut client = user.client.clone();
                let request = user.request(ops(vec![
                    Op::Update(update("race", &format!("{version}-{i}"), Some(version))),
                    Op::Put(put(&format!("side-{version}-{i}"), "x")),
                ]));
                tokio::spawn(async move { client.transact_write_items(request).await })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, racer) in racers.into_iter().enumerate() {
            match racer.await.unwrap() {
                Ok(_) => winners.push(i),
                Err(status) => assert!(
                    matches!(status.code(), Code::FailedPrecondition | Code::Aborted),
                    "{status:?}"
                ),
            }
        }
        assert_eq!(winners.len(), 1, "version {version}: {winners:?}");
        let item = user.get("race").await.unwrap();
        assert_eq!(item.version, version + 1);
        let winner = format!("{version}-{}", winners[0]);
        assert_eq!(item.attributes["text"], string(&winner));
        for i in 0..30 {
            let side = user.get(&format!("side-{version}-{i}")).await;
            assert_eq!(
                side.is_ok(),
                i == winners[0],
                "side item {i}: all or nothing"
            );
        }
    }
}

const CONFLICT: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]","CancellationReasons":[{"Code":"None"},{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]}"#;

#[tokio::test]
async fn a_conflicting_transaction_is_aborted_with_retry_info() {
    let (stack, proxy) = on_moto().await;
    let mut user = stack.user().await;
    proxy.answer_next("TransactWriteItems", 400, CONFLICT);
    let request = ops(vec![Op::Put(put("p", "x")), Op::Put(put("q", "x"))]);
    let status = transact(&mut user, request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.get_error_details().retry_info().is_some());
    absent(&mut user, "p").await;
    assert_eq!(transact(&mut user, request).await.unwrap(), [1, 1]);
}

#[tokio::test]
async fn a_retry_with_the_same_client_token_is_never_applied_twice() {
    let (stack, _proxy) = on_moto().await;
    let mut user = stack.user().await;
    let mut request = ops(vec![Op::Put(PutItemRequest {
        if_absent: true,
        ..put("once", "x")
    })]);
    request.client_token = "retry-1".into();
    assert_eq!(transact(&mut user, request.clone()).await.unwrap(), [1]);
    // moto ignores the token; the versions read decide, and the retry is refused.
    let status = transact(&mut user, request).await.unwrap_err();
    assert_eq!(
        failures(&status)["op_0"],
        "VERSION_MISMATCH current_version=1"
    );
    assert_eq!(user.get("once").await.unwrap().version, 1);
}

#[tokio::test]
async fn bad_transactions_are_refused_naming_each_op() {
    let (stack, _proxy) = on_moto().await;
    let mut user = stack.user().await;
    let none = transact(&mut user, ops(vec![])).await.unwrap_err();
    assert_eq!(violated_fields(&none), ["ops"]);
    let many = (0..101).map(|i| Op::Delete(delete(&format!("k{i}"), None)));
    let status = transact(&mut user, ops(many.collect())).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["ops"]);

    let mut reserved = update("r", "x", None);
    reserved.remove = vec!["version".into()];
    reserved.set.insert("$attributes".into(), string("x"));
    let mut reserved_put = put("s", "x");
    reserved_put
        .attributes
        .insert("expires_at".into(), string("x"));
    let mut request = ops(vec![
        Op::Put(put("a", "x")),
        Op::Delete(delete("a", None)),
        Op::Update(reserved),
        Op::Put(reserved_put),
        Op::Put(put("huge", &"x".repeat(401 * 1024))),
        Op::ConditionCheck(check("", false, None)),
    ]);
    request.ops.push(TransactOp { op: None });
    request.client_token = "spaces are not allowed".into();
    let status = transact(&mut user, request).await.unwrap_err();
    let fields = violated_fields(&status);
    let expected = [
        "ops[1].delete.key",
        "ops[2].update.remove[0]",
        "ops[2].update.set",
        "ops[3].put.attributes",
        "ops[4].put.attributes",
        "ops[5].condition_check.key",
        "ops[5].condition_check.if_absent",
        "ops[6]",
        "client_token",
    ];
    for (field, prefix) in fields.iter().zip(expected) {
        assert!(
            field.starts_with(prefix),
            "{field} for {prefix}: {fields:?}"
        );
    }
    assert_eq!(fields.len(), expected.len(), "{fields:?}");
    absent(&mut user, "a").await;
}

#[tokio::test]
async fn a_cancelled_transaction_is_all_or_nothing() {
    let (stack, _proxy) = on_moto().await;
    let mut user = stack.user().await;
    for round in 0..8u64 {
        let puts = (0..10).map(|i| Op::Put(put(&format!("t{round}-{i}"), "x")));
        let request = user.request(ops(puts.collect()));
        let cut = std::time::Duration::from_millis(5 + round * 10);
        let _ = tokio::time::timeout(cut, user.client.transact_write_items(request)).await;
    }
    for round in 0..8u64 {
        let mut present = Vec::new();
        for i in 0..10 {
            present.push(user.get(&format!("t{round}-{i}")).await.is_ok());
        }
        let all = present.iter().all(|found| *found);
        let none = present.iter().all(|found| !found);
        assert!(all || none, "round {round}: {present:?}");
    }
}

#[tokio::test]
async fn transactions_too_large_as_dynamodb_counts_them_are_refused() {
    let (stack, _proxy) = on_moto().await;
    let mut user = stack.user().await;
    // 100 puts that fit the 1 MiB request limit on the wire but count over 1 MiB as DynamoDB
    // counts items, bookkeeping included.
    let text = "x".repeat(10_400);
    let puts = (0..100).map(|i| Op::Put(put(&format!("k{i:03}"), &text)));
    let status = transact(&mut user, ops(puts.collect())).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["ops"]);
    absent(&mut user, "k000").await;
}

#[tokio::test]
async fn raw_bytes_that_are_not_the_message_write_nothing() {
    use prost::Message;
    use tests::raw::{call_raw, framed};
    let (stack, _proxy) = on_moto().await;
    let mut user = stack.user().await;
    let channel = stack.data.channel().await;
    let path = "/dynagate.data.v1.DataService/TransactWriteItems";
    let valid = ops(vec![Op::Put(put("raw", "x"))]).encode_to_vec();
    let truncated = valid[..valid.len() - 3].to_vec();
    for body in [truncated, vec![0xff; 64], vec![0x0a, 0x02, 0x12, 0x7f]] {
        let status = call_raw(&channel, path, Some(&user.token), framed(&body)).await;
        assert_ne!(status.code(), Code::Ok, "{status:?}");
    }
    absent(&mut user, "raw").await;
    let ok = call_raw(&channel, path, Some(&user.token), framed(&valid)).await;
    assert_eq!(ok.code(), Code::Ok, "{ok:?}");
    assert_eq!(user.get("raw").await.unwrap().version, 1);
}

/// On a DynamoDB without TransactWriteItems (dynalite, the local stack's) a transaction that
/// would be sent is UNIMPLEMENTED, not an internal error, and writes nothing.
#[tokio::test]
async fn a_backend_without_transactions_answers_unimplemented() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let request = ops(vec![Op::Put(put("t1", "one")), Op::Put(put("t2", "two"))]);
    let status = transact(&mut user, request).await.expect_err("dynalite");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(!status.message().contains("UnknownOperation"), "{status:?}");
    absent(&mut user, "t1").await;
    absent(&mut user, "t2").await;
}
