//! Both services' Prometheus endpoints after a real flow (register, login, put, get, a GetItem
//! of a missing key): the numbers moved as they should, they are the very counters the
//! services keep in process, and the output is well-formed Prometheus text.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    clock::ManualClock,
    proto::{auth::v1::LogoutRequest, data::v1::DeleteItemRequest},
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, try_login},
    data::TestStack,
    process::http_get,
    raw::{call_raw, framed, made_up_path},
};
use time::OffsetDateTime;
use tonic::Code;

const AUTH: &str = "dynagate.auth.v1.AuthService";
const DATA: &str = "dynagate.data.v1.DataService";

/// Scrapes `addr` and parses the text: every sample by its series (`name{labels}`), after
/// checking every line is a comment the format knows or a sample of a family with a `# TYPE`.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        text.lines().last(),
        Some("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    let mut families = Vec::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match words.next() {
                Some("TYPE") => {
                    let name = words.next().expect("a family name");
                    let kind = words.next().expect("a type");
                    assert!(
                        ["counter", "gauge", "histogram", "info", "unknown"].contains(&kind),
                        "{line}"
                    );
                    families.push(name.to_owned());
                }
                Some("HELP" | "UNIT") => {}
                Some("EOF") => {}
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "labels: {line}"
            );
        }
        assert!(
            families
                .iter()
                .any(|family| name.starts_with(family.as_str())),
            "a sample after its # TYPE: {line}"
        );
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "one sample per series: {line}"
        );
    }
    samples
}

fn requests(service: &str, method: &str, code: &str) -> String {
    format!(
        "dynagate_grpc_requests_total{{service=\"{service}\",method=\"{method}\",code=\"{code}\"}}"
    )
}

fn latency_count(service: &str, method: &str) -> String {
    format!(
        "dynagate_grpc_request_duration_seconds_count{{service=\"{service}\",method=\"{method}\"}}"
    )
}

fn dynamodb(operation: &str, outcome: &str) -> String {
    format!("dynagate_dynamodb_calls_total{{operation=\"{operation}\",outcome=\"{outcome}\"}}")
}

fn dynamodb_latency_count(operation: &str) -> String {
    format!("dynagate_dynamodb_call_duration_seconds_count{{operation=\"{operation}\"}}")
}

fn labeled(name: &str, label: &str, value: &str) -> String {
    format!("dynagate_{name}_total{{{label}=\"{value}\"}}")
}

fn assume_role(outcome: &str) -> String {
    labeled("sts_assume_role_calls", "outcome", outcome)
}

fn token_verifications(outcome: &str) -> String {
    labeled("token_verifications", "outcome", outcome)
}

fn token_refusals(reason: &str) -> String {
    labeled("token_refusals", "reason", reason)
}

fn credential_cache(result: &str) -> String {
    labeled("credential_cache", "result", result)
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

#[tokio::test]
async fn both_endpoints_count_a_real_flow() {
    let stack = TestStack::spawn().await;
    let mut auth_client = stack.auth.client().await;
    let registered = TestUser::register(&mut auth_client).await;
    let login = registered.login(&mut auth_client).await;
    let mut user = tests::data::SignedIn {
        user: registered,
        token: login.access_token.clone(),
        client: stack.data.client().await,
    };
    user.put_text("greeting", "hello").await;
    user.get("greeting").await.expect("GetItem");
    let missing = user.get("never-written").await.expect_err("a missing key");
    assert_eq!(missing.code(), Code::NotFound);

    let auth = scrape(stack.auth.metrics_addr).await;
    assert_eq!(value(&auth, &requests(AUTH, "Register", "OK")), 1.0);
    assert_eq!(value(&auth, &requests(AUTH, "Login", "OK")), 1.0);
    assert_eq!(value(&auth, &requests(AUTH, "GetCredentials", "OK")), 1.0);
    assert_eq!(value(&auth, &latency_count(AUTH, "Login")), 1.0);
    assert_eq!(value(&auth, &assume_role("ok")), 1.0);
    assert_eq!(value(&auth, &assume_role("error")), 0.0);
    assert_eq!(stack.auth.metrics.assume_role_calls.get(), 1);
    assert_eq!(value(&auth, "dynagate_password_hashes_total"), 1.0);
    assert_eq!(value(&auth, "dynagate_password_verifications_total"), 1.0);
    assert_eq!(value(&auth, "dynagate_password_jobs_rejected_total"), 0.0);
    assert_eq!(value(&auth, "dynagate_password_jobs_queued"), 0.0);
    assert!(value(&auth, "dynagate_password_jobs_running_peak") >= 1.0);
    // One source of truth: what the endpoint says is what the service counts in process.
    let metrics = &stack.auth.metrics;
    assert_eq!(
        value(&auth, "dynagate_password_verifications_total"),
        metrics.password_verifications.get() as f64
    );
    // Every DynamoDB operation the auth-service sent, by operation: Register's conditional
    // write of the user, Login's read of it. The revocation feed keeps polling meanwhile, so
    // the in-process count read after the scrape is at least what it said.
    assert!(value(&auth, &labeled("dynamodb_calls", "operation", "PutItem")) >= 1.0);
    assert!(value(&auth, &labeled("dynamodb_calls", "operation", "GetItem")) >= 1.0);
    let auth_calls: f64 = auth
        .iter()
        .filter(|(series, _)| series.starts_with("dynagate_dynamodb_calls_total{"))
        .map(|(_, value)| value)
        .sum();
    assert!(metrics.dynamodb_calls.get() as f64 >= auth_calls && auth_calls >= 2.0);

    let data = scrape(stack.data.metrics_addr).await;
    assert_eq!(value(&data, &requests(DATA, "PutItem", "OK")), 1.0);
    assert_eq!(value(&data, &requests(DATA, "GetItem", "OK")), 1.0);
    assert_eq!(value(&data, &requests(DATA, "GetItem", "NOT_FOUND")), 1.0);
    assert_eq!(value(&data, &latency_count(DATA, "GetItem")), 2.0);
    assert_eq!(value(&data, &token_verifications("valid")), 1.0);
    assert_eq!(value(&data, &token_verifications("rejected")), 0.0);
    // The put loaded the user's credentials; the two gets found them cached.
    assert_eq!(value(&data, &credential_cache("miss")), 1.0);
    assert_eq!(value(&data, &credential_cache("hit")), 2.0);
    assert_eq!(stack.data.metrics.credential_loads.get(), 1);
    // A put is one UpdateItem; both gets ran (a missing item is a successful GetItem).
    assert_eq!(value(&data, &dynamodb("UpdateItem", "ok")), 1.0);
    assert_eq!(value(&data, &dynamodb("GetItem", "ok")), 2.0);
    // One source of truth: the in-process total sums the exported family.
    let dynamodb_calls: f64 = data
        .iter()
        .filter(|(series, _)| series.starts_with("dynagate_dynamodb_calls_total{"))
        .map(|(_, value)| value)
        .sum();
    assert!(dynamodb_calls >= 3.0, "put, get, get: {dynamodb_calls}");
    assert_eq!(
        dynamodb_calls,
        stack.data.metrics.dynamodb_calls.get() as f64
    );
    assert_eq!(
        value(&data, &dynamodb_latency_count("GetItem")),
        value(&data, &dynamodb("GetItem", "ok"))
    );
    // One signature check, then the cache: the other two calls with the same token hit it.
    assert_eq!(value(&data, "dynagate_token_cache_hits_total"), 2.0);
    assert_eq!(value(&data, "dynagate_revocations_applied_total"), 0.0);
    // The test waited for SERVING with the standard health service: counted like any call.
    assert!(value(&data, &requests("grpc.health.v1.Health", "Check", "OK")) >= 1.0);

    // A delete at a version the item is not at: DynamoDB refuses its condition.
    let request = user.request(DeleteItemRequest {
        key: "greeting".to_owned(),
        expected_version: Some(5),
    });
    let refused = user
        .client
        .delete_item(request)
        .await
        .expect_err("a stale version");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let data = scrape(stack.data.metrics_addr).await;
    assert_eq!(
        value(&data, &dynamodb("DeleteItem", "condition_failed")),
        1.0
    );
    assert_eq!(value(&data, &dynamodb_latency_count("DeleteItem")), 1.0);
    assert_eq!(value(&data, &credential_cache("hit")), 3.0);

    // A logout reaches the data-service over the revocation feed (polled every 250 ms).
    auth_client
        .logout(LogoutRequest {
            refresh_token: login.refresh_token,
        })
        .await
        .expect("Logout");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let data = scrape(stack.data.metrics_addr).await;
        if value(&data, "dynagate_revocations_applied_total") >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revocation was never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let auth = scrape(stack.auth.metrics_addr).await;
    assert_eq!(value(&auth, &requests(AUTH, "Logout", "OK")), 1.0);
    // The ended session's token still verifies (from the cache) but is refused as revoked.
    let revoked = user.get("greeting").await.expect_err("a revoked session");
    assert_eq!(revoked.code(), Code::Unauthenticated);
    let data = scrape(stack.data.metrics_addr).await;
    assert_eq!(value(&data, &token_refusals("revoked")), 1.0);
    assert_eq!(value(&data, &token_refusals("stale")), 0.0);
}

#[tokio::test]
async fn lockouts_and_throttled_calls_are_counted() {
    let mut settings = TestAuth::settings();
    settings.lockout.threshold = 1;
    // Three calls from this address, never refilled: the clock stands still.
    settings.throttle.throttle_per_second = 1;
    settings.throttle.throttle_burst = 3;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let endpoints = Endpoints::dynalite_only().await;
    let auth = TestAuth::spawn_with_clock(settings, endpoints, clock).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let wrong = try_login(&mut client, &user.username, "not-the-password").await;
    assert_eq!(wrong.unwrap_err().code(), Code::Unauthenticated);
    let locked = try_login(&mut client, &user.username, &user.password).await;
    assert_eq!(locked.unwrap_err().code(), Code::ResourceExhausted);
    let throttled = try_login(&mut client, &user.username, &user.password).await;
    assert_eq!(throttled.unwrap_err().code(), Code::ResourceExhausted);

    let samples = scrape(auth.metrics_addr).await;
    assert_eq!(
        value(&samples, &requests(AUTH, "Login", "UNAUTHENTICATED")),
        1.0
    );
    assert_eq!(
        value(&samples, &requests(AUTH, "Login", "RESOURCE_EXHAUSTED")),
        2.0
    );
    assert_eq!(value(&samples, "dynagate_lockouts_total"), 1.0);
    assert_eq!(value(&samples, "dynagate_lockout_refusals_total"), 1.0);
    assert_eq!(value(&samples, "dynagate_rate_limited_total"), 1.0);
    // The throttled and the locked call cost no argon2 work.
    assert_eq!(
        value(&samples, "dynagate_password_verifications_total"),
        1.0
    );
}

#[tokio::test]
async fn only_get_metrics_is_served() {
    let stack = TestStack::spawn().await;
    let (status, _) = http_get(stack.data.metrics_addr, "/").await;
    assert_eq!(status, 404);
    let (status, _) = http_get(stack.auth.metrics_addr, "/metrics/x").await;
    assert_eq!(status, 404);
}

/// Sends `count` calls to made-up paths on `channel` (32 at a time): every one must be
/// answered UNIMPLEMENTED.
async fn call_made_up_paths(channel: &tonic::transport::Channel, count: usize, seed: u64) {
    use futures::StreamExt;
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let paths: Vec<String> = (0..count).map(|_| made_up_path(&mut rng)).collect();
    let statuses: Vec<(String, tonic::Status)> = futures::stream::iter(paths)
        .map(|path| async move {
            let status = call_raw(channel, &path, None, framed(b"")).await;
            (path, status)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (path, status) in statuses {
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
    }
}

/// The `dynagate_grpc_*` series of a scrape.
fn grpc_series(samples: &HashMap<String, f64>) -> std::collections::BTreeSet<String> {
    let grpc = samples
        .keys()
        .filter(|series| series.starts_with("dynagate_grpc_"));
    grpc.cloned().collect()
}

const UNKNOWN_CALLS: &str =
    "dynagate_grpc_requests_total{service=\"unknown\",method=\"unknown\",code=\"UNIMPLEMENTED\"}";

#[tokio::test]
async fn ten_thousand_made_up_paths_add_no_series_on_either_service() {
    // An auth-service of its own: in a stack, the data-service's calls to it could add the
    // series of real methods meanwhile.
    let auth = TestAuth::spawn().await;
    let stack = TestStack::spawn().await;
    let services = [
        ("auth", auth.channel().await, auth.metrics_addr),
        ("data", stack.data.channel().await, stack.data.metrics_addr),
    ];
    for (seed, (name, channel, metrics_addr)) in (17..).zip(services) {
        let (_, page_before) = http_get(metrics_addr, "/metrics").await;
        let before = scrape(metrics_addr).await;
        assert_eq!(
            value(&before, UNKNOWN_CALLS),
            0.0,
            "exported from the start"
        );

        call_made_up_paths(&channel, 10_000, seed).await;

        let (_, page_after) = http_get(metrics_addr, "/metrics").await;
        let after = scrape(metrics_addr).await;
        let growth = page_after.len().saturating_sub(page_before.len());
        eprintln!(
            "{name}: /metrics {} → {} bytes after 10,000 made-up paths",
            page_before.len(),
            page_after.len()
        );
        assert!(growth < 1024, "{name}: /metrics grew by {growth} bytes");
        assert_eq!(
            grpc_series(&before),
            grpc_series(&after),
            "{name}: no new series"
        );
        assert_eq!(
            value(&after, UNKNOWN_CALLS),
            10_000.0,
            "{name}: all counted"
        );
        let unknown_latency =
            "dynagate_grpc_request_duration_seconds_count{service=\"unknown\",method=\"unknown\"}";
        assert_eq!(value(&after, unknown_latency), 10_000.0, "{name}");
    }
}
