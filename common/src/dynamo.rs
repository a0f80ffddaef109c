//! DynamoDB helpers shared by the services: idempotent table creation for local stacks and
//! the table probe behind health checks; item attributes in [`attrs`].

pub mod attrs;

use std::time::Duration;

use aws_sdk_dynamodb::{
    Client,
    operation::create_table::builders::CreateTableFluentBuilder,
    types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TableStatus,
    },
};

/// Creates the table `request` describes unless it exists, then waits until it is ACTIVE.
/// Safe to run any number of times, from any number of processes.
pub async fn ensure_table(
    client: &Client,
    request: CreateTableFluentBuilder,
) -> Result<(), String> {
    let name = request
        .get_table_name()
        .clone()
        .ok_or_else(|| "table name missing".to_owned())?;
    match request.send().await {
        Ok(_) => tracing::info!(table = %name, "table created"),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            tracing::info!(table = %name, "table already exists");
        }
        Err(error) => {
            return Err(format!(
                "create table {name}: {}",
                crate::aws::describe(&error)
            ));
        }
    }
    wait_active(client, &name).await
}

async fn wait_active(client: &Client, name: &str) -> Result<(), String> {
    for _ in 0..120 {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|error| format!("describe table {name}: {}", crate::aws::describe(&error)))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "table {name} did not become ACTIVE within a minute"
    ))
}

/// [`ensure_table`] for the shape of all our tables: on-demand billing, a string partition
/// key and, if given, a string sort key.
pub async fn ensure_string_keyed_table(
    client: &Client,
    table: &str,
    partition_key: &str,
    sort_key: Option<&str>,
) -> Result<(), String> {
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute(partition_key)?)
        .key_schema(key_element(partition_key, KeyType::Hash)?);
    if let Some(sort_key) = sort_key {
        request = request
            .attribute_definitions(string_attribute(sort_key)?)
            .key_schema(key_element(sort_key, KeyType::Range)?);
    }
    ensure_table(client, request).await
}

/// Succeeds when every table answers DescribeTable: the health probe of a service.
pub async fn probe_tables(client: &Client, tables: &[String]) -> Result<(), String> {
    for table in tables {
        client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|error| format!("table {table}: {}", crate::aws::describe(&error)))?;
    }
    Ok(())
}

/// A string (`S`) attribute definition, for key schemas.
pub fn string_attribute(name: &str) -> Result<AttributeDefinition, String> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| e.to_string())
}

/// A key schema element.
pub fn key_element(name: &str, key_type: KeyType) -> Result<KeySchemaElement, String> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(|e| e.to_string())
}
