//! DynamoDB calls per RPC: a fixed number of each kind of call through the data-service, one at
//! a time, with the data-service's own `dynagate_dynamodb_calls_total` read before and after
//! each batch. Every write should be one call in every mode, and an export one Query per page
//! (the 20 items exported here are one page).

use std::{collections::HashMap, net::SocketAddr};

use anyhow::{Context, ensure};
use common::proto::data::v1::{
    DeleteItemRequest, ExportItemsRequest, GetItemRequest, PutItemRequest, QueryItemsRequest,
    UpdateItemRequest, data_service_client::DataServiceClient,
};
use tests::{auth::with_bearer, data::string};
use tonic::transport::Channel;

use crate::{
    drive::{GET_KEY, QUERY_LIMIT, QUERY_PREFIX},
    report::{Row, row},
};

/// Calls of each kind.
const CALLS: u64 = 20;

/// The kinds of call counted, in the order of the row.
const KINDS: [&str; 10] = [
    "PutItem (new key)",
    "PutItem (replacing)",
    "PutItem if_absent",
    "PutItem expected_version",
    "UpdateItem",
    "UpdateItem expected_version",
    "DeleteItem",
    "GetItem",
    "QueryItems",
    "ExportItems",
];

/// The data-service's DynamoDB requests so far, all operations and outcomes.
pub async fn dynamodb_calls(metrics: SocketAddr) -> anyhow::Result<f64> {
    let (status, text) = tests::process::http_get(metrics, "/metrics").await;
    ensure!(status == 200, "GET /metrics on {metrics}: {status}");
    Ok(text
        .lines()
        .filter(|line| line.starts_with("dynagate_dynamodb_calls_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

fn put(key: String, if_absent: bool, expected_version: Option<u64>) -> PutItemRequest {
    PutItemRequest {
        key,
        attributes: [("text".to_owned(), string("a small item"))].into(),
        if_absent,
        expected_version,
        expires_at: None,
    }
}

fn update(key: String, expected_version: Option<u64>) -> UpdateItemRequest {
    UpdateItemRequest {
        key,
        set: [("n".to_owned(), string("x"))].into(),
        expected_version,
        ..Default::default()
    }
}

/// Makes call `i` of `kind`; every one must succeed.
async fn call(
    client: &mut DataServiceClient<Channel>,
    token: &str,
    kind: &str,
    i: u64,
) -> Result<(), tonic::Status> {
    let key = |prefix: &str| format!("calls/{prefix}/{i}");
    match kind {
        "PutItem (new key)" => drop(
            client
                .put_item(with_bearer(put(key("a"), false, None), token))
                .await?,
        ),
        // The items of "new key", now version 1 and replaced at version 2.
        "PutItem (replacing)" => drop(
            client
                .put_item(with_bearer(put(key("a"), false, None), token))
                .await?,
        ),
        "PutItem if_absent" => drop(
            client
                .put_item(with_bearer(put(key("b"), true, None), token))
                .await?,
        ),
        "PutItem expected_version" => drop(
            client
                .put_item(with_bearer(put(key("a"), false, Some(2)), token))
                .await?,
        ),
        "UpdateItem" => drop(
            client
                .update_item(with_bearer(update(key("a"), None), token))
                .await?,
        ),
        "UpdateItem expected_version" => drop(
            client
                .update_item(with_bearer(update(key("a"), Some(4)), token))
                .await?,
        ),
        "DeleteItem" => {
            let request = DeleteItemRequest {
                key: key("b"),
                expected_version: Some(1),
            };
            drop(client.delete_item(with_bearer(request, token)).await?)
        }
        "GetItem" => {
            let request = GetItemRequest {
                key: GET_KEY.to_owned(),
                ..Default::default()
            };
            drop(client.get_item(with_bearer(request, token)).await?)
        }
        // The bench user's 20 query items: one page, so one Query.
        "ExportItems" => {
            let request = ExportItemsRequest {
                key_prefix: QUERY_PREFIX.to_owned(),
                start_key: String::new(),
            };
            let mut items = client.export_items(with_bearer(request, token)).await?;
            while items.get_mut().message().await?.is_some() {}
        }
        _ => {
            let request = QueryItemsRequest {
                key_prefix: QUERY_PREFIX.to_owned(),
                limit: QUERY_LIMIT,
                ..Default::default()
            };
            drop(client.query_items(with_bearer(request, token)).await?)
        }
    }
    Ok(())
}

/// The row: DynamoDB calls per RPC of each kind.
pub async fn per_rpc(data: Channel, metrics: SocketAddr, token: &str) -> anyhow::Result<Row> {
    let mut client = DataServiceClient::new(data);
    let mut per_kind = HashMap::new();
    for kind in KINDS {
        let before = dynamodb_calls(metrics).await?;
        for i in 0..CALLS {
            call(&mut client, token, kind, i)
                .await
                .with_context(|| format!("{kind} #{i}"))?;
        }
        let after = dynamodb_calls(metrics).await?;
        per_kind.insert(kind, (after - before) / CALLS as f64);
    }
    let writes_in_one = KINDS
        .iter()
        .all(|kind| (per_kind[kind] - 1.0).abs() < f64::EPSILON);
    ensure!(!per_kind.is_empty(), "no calls counted");
    let measured = KINDS
        .iter()
        .map(|kind| format!("{kind} {:.2}", per_kind[kind]))
        .collect::<Vec<_>>()
        .join("; ");
    Ok(row(
        format!(
            "**DynamoDB calls per RPC** ({CALLS} of each, sequential, from the data-service's \
             dynagate_dynamodb_calls_total)"
        ),
        "before the one-call writes: PutItem 2 (a GetItem of the version, then a conditional \
         PutItem) unconditional or with expected_version, 1 if_absent; the others 1",
        measured,
        if writes_in_one {
            "every RPC 1 call"
        } else {
            "**not all 1**"
        },
        "1 per RPC",
    ))
}
