//! DynamoDB helpers shared by the services: idempotent table creation for local stacks and
//! the table probe behind health checks; item attributes in [`attrs`].

pub mod attrs;

use std::time::Duration;

use aws_sdk_dynamodb::{
    Client,
    error::ProvideErrorMetadata,
    operation::create_table::builders::CreateTableFluentBuilder,
    types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
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

/// Makes `attribute` the TTL attribute of `table` (DynamoDB then deletes items some time after
/// the Unix second it holds). Idempotent. A backend without UpdateTimeToLive (dynalite) is
/// tolerated with a warning: readers must hide expired items anyway, since DynamoDB deletes
/// them late. A table whose TTL is on another attribute is an error (a table has one).
pub async fn enable_ttl(client: &Client, table: &str, attribute: &str) -> Result<(), String> {
    let described = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|error| format!("describe TTL of {table}: {}", crate::aws::describe(&error)))?;
    let current = described.time_to_live_description();
    let status = current.and_then(|d| d.time_to_live_status());
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        let named = current.and_then(|d| d.attribute_name()).unwrap_or_default();
        if named != attribute {
            return Err(format!(
                "table {table} has TTL on {named:?}, not {attribute:?}: disable it first"
            ));
        }
        tracing::info!(table, attribute, "TTL already enabled");
        return Ok(());
    }
    let specification = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attribute)
        .build()
        .map_err(|e| e.to_string())?;
    let result = client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(specification)
        .send()
        .await;
    match result {
        Ok(_) => tracing::info!(table, attribute, "TTL enabled"),
        Err(error) if error.code() == Some("UnknownOperationException") => tracing::warn!(
            table,
            attribute,
            "the DynamoDB backend has no UpdateTimeToLive (dynalite): TTL not enabled; expired \
             items stay stored and the services still hide them"
        ),
        Err(error) => {
            return Err(format!(
                "enable TTL on {table}: {}",
                crate::aws::describe(&error)
            ));
        }
    }
    Ok(())
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
