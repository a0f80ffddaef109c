//! Straight-to-DynamoDB helpers for tests that need many rows fast or need to count what a
//! service left behind, with the harness's own (unscoped) client.

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, PutRequest, Select, WriteRequest},
};

/// Writes `count` items `{owner, key: "<prefix>NNNNN", body: 100 × "x"}` with BatchWriteItem,
/// 25 at a time. Panics if DynamoDB leaves any unprocessed (the emulators never do).
pub async fn put_items(dynamodb: &Client, table: &str, owner: &str, prefix: &str, count: usize) {
    let requests: Vec<WriteRequest> = (0..count)
        .map(|n| {
            let put = PutRequest::builder()
                .item("owner", AttributeValue::S(owner.to_owned()))
                .item("key", AttributeValue::S(format!("{prefix}{n:05}")))
                .item("body", AttributeValue::S("x".repeat(100)))
                .build()
                .expect("a put");
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for chunk in requests.chunks(25) {
        let output = dynamodb
            .batch_write_item()
            .request_items(table, chunk.to_vec())
            .send()
            .await
            .expect("BatchWriteItem");
        assert!(output.unprocessed_items.unwrap_or_default().is_empty());
    }
}

/// Rows of `table` whose partition key `key` is `value` (strongly consistent, every page).
pub async fn count_rows(dynamodb: &Client, table: &str, key: &str, value: &str) -> usize {
    let mut pages = dynamodb
        .query()
        .table_name(table)
        .key_condition_expression("#k = :v")
        .expression_attribute_names("#k", key)
        .expression_attribute_values(":v", AttributeValue::S(value.to_owned()))
        .consistent_read(true)
        .select(Select::Count)
        .into_paginator()
        .send();
    let mut rows = 0;
    while let Some(page) = pages.next().await {
        let count = page.expect("count rows").count;
        rows += usize::try_from(count).expect("a count");
    }
    rows
}
