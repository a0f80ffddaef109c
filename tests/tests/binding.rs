//! The credential binding, seen from outside: every DynamoDB request the data-service sends
//! for a user is signed with the temporary credentials STS issued to that user's session, and
//! names only that user's partition. dynalite accepts any signature and moto enforces no
//! policy, so a recording proxy in front of dynalite is where this can be shown locally.

use std::collections::{BTreeSet, HashMap};

use common::proto::data::v1::{
    BatchGetItemsRequest, DeleteItemRequest, ExportItemsRequest, GetItemRequest, QueryItemsRequest,
    UpdateItemRequest,
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

/// Every partition key value a DynamoDB request names: its `Key`, `Item`, `ExclusiveStartKey`
/// `owner` (an export resuming after `start_key` sends one), a Query's `:o`, and the `owner` of every key of a BatchGetItem.
fn partitions(request: &Recorded) -> Vec<String> {
    let body = &request.body;
    let batched = (body["RequestItems"].as_object().into_iter())
        .flat_map(|tables| tables.values())
        .flat_map(|table| table["Keys"].as_array().into_iter().flatten())
        .map(|key| &key["owner"]);
    [
        &body["Key"]["owner"],
        &body["Item"]["owner"],
        &body["ExclusiveStartKey"]["owner"],
        &body["ExpressionAttributeValues"][":o"],
    ]
    .into_iter()
    .chain(batched)
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
    let endpoints = Endpoints::shared().await;
    let moto_endpoint = endpoints.sts.clone();
    let stack = TestStack::spawn_custom(endpoints, &proxy.endpoint()).await;
    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(stack.user().await);
    }
    proxy.clear(); // the harness created the items table through the proxy

    let workers: Vec<_> = users
        .into_iter()
        .map(|u| tokio::spawn(work_as(u)))
        .collect();
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

    let every_operation: BTreeSet<String> = ITEM_OPERATIONS.map(str::to_owned).into();
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
