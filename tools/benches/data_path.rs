//! GetItem latency through the data-service against a direct AWS SDK GetItem on the same
//! dynalite, measured in the same run, interleaved, one request at a time.
//!
//! Run: `cargo bench -p tools --bench data_path` (needs `scripts/install-tools`).
//! Prints p50/p90/p99 of both paths and what the data-service adds, plus a health Check on
//! the same server as the cost of the gRPC hop alone.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::data::v1::GetItemRequest;
use tests::{data::TestStack, dynamodb_client};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const ROUNDS: usize = 20;
const PER_ROUND: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    user.put_text("bench", "a small item").await;
    let direct = dynamodb_client(&stack.endpoints.dynamodb);
    let table = stack.data.settings.items_table.clone();
    let owner = user.user.user_id.clone();

    let direct_get = || {
        direct
            .get_item()
            .table_name(&table)
            .key("owner", AttributeValue::S(owner.clone()))
            .key("key", AttributeValue::S("bench".into()))
            .send()
    };
    // Warm up both paths: connections, caches, credentials.
    for _ in 0..200 {
        direct_get().await.unwrap();
        let request = user.request(GetItemRequest {
            key: "bench".into(),
            ..Default::default()
        });
        user.client.get_item(request).await.unwrap();
    }

    let mut health = HealthClient::new(stack.data.channel().await);
    let health_check = HealthCheckRequest {
        service: "dynagate.data.v1.DataService".into(),
    };
    let (mut via_sdk, mut via_service, mut grpc_hop) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            let start = Instant::now();
            health.check(health_check.clone()).await.unwrap();
            grpc_hop.push(start.elapsed());
        }
        for _ in 0..PER_ROUND {
            let start = Instant::now();
            direct_get().await.unwrap();
            via_sdk.push(start.elapsed());
        }
        for _ in 0..PER_ROUND {
            let request = user.request(GetItemRequest {
                key: "bench".into(),
                ..Default::default()
            });
            let start = Instant::now();
            user.client.get_item(request).await.unwrap();
            via_service.push(start.elapsed());
        }
    }
    via_sdk.sort();
    via_service.sort();
    grpc_hop.sort();

    println!(
        "GetItem latency, {} requests each, sequential, same dynalite",
        via_sdk.len()
    );
    println!(
        "{:>22} {:>10} {:>10} {:>10}",
        "", "p50 µs", "p90 µs", "p99 µs"
    );
    for (name, samples) in [
        ("gRPC hop (health)", &grpc_hop),
        ("direct SDK", &via_sdk),
        ("through data-service", &via_service),
    ] {
        println!(
            "{name:>22} {:>10.0} {:>10.0} {:>10.0}",
            micros(percentile(samples, 0.5)),
            micros(percentile(samples, 0.9)),
            micros(percentile(samples, 0.99))
        );
    }
    let (sdk50, svc50) = (percentile(&via_sdk, 0.5), percentile(&via_service, 0.5));
    println!(
        "data-service adds {:.0} µs at p50 ({:.2}x the direct call)",
        micros(svc50) - micros(sdk50),
        svc50.as_secs_f64() / sdk50.as_secs_f64()
    );
    println!(
        "of which the gRPC hop itself (health Check on the same server): {:.0} µs at p50",
        micros(percentile(&grpc_hop, 0.5))
    );
    println!(
        "calls: {} DynamoDB, {} credential loads, {} full token verifications",
        stack.data.metrics.dynamodb_calls.get(),
        stack.data.metrics.credential_loads.get(),
        stack.data.metrics.token_verifications.get()
    );
}
