//! The credential binding, seen from outside: every DynamoDB request the data-service sends
//! for a user is signed with the temporary credentials STS issued to that user's session, and
//! names only that user's partition. dynalite accepts any signature and moto enforces no
//! policy, so a recording proxy in front of dynalite is where this can be shown locally (and in
//! front of moto for transactions, which dynalite lacks).

use std::collections::{BTreeSet, HashMap};

use common::proto::data::v1::{
    BatchGetItemsRequest, BatchPut, BatchWriteItemsRequest, ConditionCheck, DeleteItemRequest,
    ExportItemsRequest, GetItemRequest, PutItemRequest, QueryItemsRequest, TransactOp,
    TransactWriteItemsRequest, UpdateItemRequest, transact_op::Op,
};
use serde_json::Value;
use tests::{
    TEST_ACCESS_KEY_ID,
    auth::Endpoints,
    data::{SignedIn, TestStack, string},
    emulators::Emulator,
    moto,
    proxy::{Recorded, RecordingProxy},
};

const USERS: usize = 5;
const ROUNDS: usize = 3;
/// Every call the RPCs below make (a PutItem is one UpdateItem, an export Query pages).
const ITEM_OPERATIONS: [&str; 5] = [
    "BatchGetItem",
    "DeleteItem",
    "GetItem",
    "Query",
    "UpdateItem",
];

/// One user's share of the load: every kind of item call, a few times over.
async fn work_as(mut user: SignedIn) -> SignedIn {
    for round in 0..ROUNDS {
        let key = format!("k{round}");
        user.put_text(&key, "v").await;
        let get = user.request(GetItemRequest {
            key: key.clone(),
            consistent_read: true,
            ..Default::default()
        });
        user.client.get_item(get).await.expect("GetItem");
        let batch = user.request(BatchGetItemsRequest {
            keys: vec![key.clone(), "absent".to_owned()],
            ..Default::default()
        });
        (user.client.batch_get_items(batch).await).expect("BatchGetItems");
        let update = user.request(UpdateItemRequest {
            key: key.clone(),
            set: [("n".to_owned(), string("x"))].into(),
            ..Default::default()
        });
        user.client.update_item(update).await.expect("UpdateItem");
        user.query_all(QueryItemsRequest::default()).await;
        let export = user.request(ExportItemsRequest {
            start_key: "a".to_owned(),
            ..Default::default()
        });
        let mut exported = (user.client.export_items(export).await)
            .expect("ExportItems")
            .into_inner();
        while exported
            .message()
            .await
            .expect("an exported item")
            .is_some()
        {}
        let delete = user.request(DeleteItemRequest {
            key,
            ..Default::default()
        });
        user.client.delete_item(delete).await.expect("DeleteItem");
    }
    user
}

/// The calls of the many-item writes (BatchWriteItems: an UpdateItem per put, a DeleteItem
/// per delete; TransactWriteItems: a BatchGetItem, then a TransactWriteItems).
const WRITE_OPERATIONS: [&str; 4] = [
    "BatchGetItem",
    "DeleteItem",
    "TransactWriteItems",
    "UpdateItem",
];

/// One user's share of the many-item writes.
async fn write_many_as(mut user: SignedIn) -> SignedIn {
    for round in 0..ROUNDS {
        let key = format!("k{round}");
        user.put_text(&key, "v").await;
        let batch = user.request(BatchWriteItemsRequest {
            puts: vec![BatchPut {
                key: format!("b{round}"),
                ..Default::default()
            }],
            deletes: vec![key],
        });
        (user.client.batch_write_items(batch).await).expect("BatchWriteItems");
        let ops = [
            Op::Put(PutItemRequest {
                key: format!("t{round}"),
                if_absent: true,
                ..Default::default()
            }),
            Op::Update(UpdateItemRequest {
                key: format!("b{round}"),
                set: [("n".to_owned(), string("x"))].into(),
                ..Default::default()
            }),
            Op::ConditionCheck(ConditionCheck {
                key: "absent".to_owned(),
                if_absent: true,
                expected_version: None,
            }),
        ];
        let transaction = user.request(TransactWriteItemsRequest {
            ops: ops.map(|op| TransactOp { op: Some(op) }).into(),
            client_token: String::new(),
        });
        (user.client.transact_write_items(transaction).await).expect("TransactWriteItems");
    }
    user
}

/// Every partition key value a DynamoDB request names: its `Key`, `Item`, `ExclusiveStartKey`
/// `owner` (an export resuming after `start_key` sends one), a Query's `:o`, the `owner` of
/// every key of a BatchGetItem, and of every op of a TransactWriteItems.
fn partitions(request: &Recorded) -> Vec<String> {
    let body = &request.body;
    let batched = (body["RequestItems"].as_object().into_iter())
        .flat_map(|tables| tables.values())
        .flat_map(|table| table["Keys"].as_array().into_iter().flatten())
        .map(|key| &key["owner"]);
    let transacted = (body["TransactItems"].as_array().into_iter().flatten())
        .filter_map(|item| item.as_object()?.values().next())
        .map(|op| match &op["Item"] {
            Value::Null => &op["Key"]["owner"],
            item => &item["owner"],
        });
    [
        &body["Key"]["owner"],
        &body["Item"]["owner"],
        &body["ExclusiveStartKey"]["owner"],
        &body["ExpressionAttributeValues"][":o"],
    ]
    .into_iter()
    .chain(batched)
    .chain(transacted)
    .filter(|value| !value.is_null())
    .map(|value| match &value["S"] {
        Value::String(owner) => owner.clone(),
        other => panic!("a partition key that is not a string ({other}): {request:?}"),
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_request_is_signed_with_the_callers_own_credentials_for_their_own_partition() {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    check_binding(proxy, work_as, &ITEM_OPERATIONS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_item_writes_are_signed_with_the_callers_own_credentials_for_their_own_partition() {
    let proxy = RecordingProxy::start(Emulator::shared_moto().await.addr()).await;
    // moto restores whole tables when a transaction fails: one request at a time.
    proxy.serialize();
    check_binding(proxy, write_many_as, &WRITE_OPERATIONS).await;
}

/// Runs `work` for [`USERS`] users at once through `proxy`, then checks every request it saw:
/// signed with the credentials STS issued to the user, naming only their partition, and each
/// user's requests are exactly `expected` operations.
async fn check_binding<F: Future<Output = SignedIn> + Send + 'static>(
    proxy: RecordingProxy,
    work: fn(SignedIn) -> F,
    expected: &[&str],
) {
    let endpoints = Endpoints::shared().await;
    let moto_endpoint = endpoints.sts.clone();
    let stack = TestStack::spawn_custom(endpoints, &proxy.endpoint()).await;
    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(stack.user().await);
    }
    proxy.clear(); // the harness created the items table through the proxy

    let workers: Vec<_> = users.into_iter().map(|u| tokio::spawn(work(u))).collect();
    let mut users = Vec::new();
    for worker in workers {
        users.push(worker.await.expect("a user's work"));
    }

    let issued = tokio::task::spawn_blocking(move || moto::issued_credentials(&moto_endpoint))
        .await
        .expect("read moto's records");
    let issued: HashMap<_, _> = issued
        .iter()
        .map(|i| (i.access_key_id.as_str(), i))
        .collect();
    let mut operations: HashMap<String, BTreeSet<String>> = HashMap::new();
    for request in proxy.requests() {
        let key_id = request
            .access_key_id
            .as_deref()
            .expect("every request is signed");
        if key_id == TEST_ACCESS_KEY_ID {
            assert_eq!(
                (request.operation(), request.table()),
                (
                    "DescribeTable",
                    Some(stack.data.settings.items_table.as_str())
                ),
                "the service's own credentials only probe the table: {request:?}"
            );
            continue;
        }
        let credentials = issued
            .get(key_id)
            .unwrap_or_else(|| panic!("signed with credentials STS never issued: {request:?}"));
        let owner = credentials
            .session_name
            .strip_prefix("dynagate-")
            .expect("our session name");
        assert_eq!(
            request.security_token.as_deref(),
            Some(credentials.session_token.as_str()),
            "the session token issued with {key_id}: {request:?}"
        );
        let named = partitions(&request);
        assert!(
            !named.is_empty() && named.iter().all(|partition| partition == owner),
            "a request signed for {owner} names partitions {named:?}: {request:?}"
        );
        operations
            .entry(owner.to_owned())
            .or_default()
            .insert(request.operation().to_owned());
    }

    let every_operation: BTreeSet<String> = expected.iter().map(|op| (*op).to_owned()).collect();
    for user in &users {
        assert_eq!(
            operations.get(&user.user.user_id),
            Some(&every_operation),
            "{}'s calls reached DynamoDB under their own credentials",
            user.user.user_id
        );
    }
    assert_eq!(operations.len(), USERS, "no other signer: {operations:?}");
}
