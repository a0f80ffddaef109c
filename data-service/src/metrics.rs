//! Counters of the work the data-service does, exported as Prometheus metrics (see
//! [`Metrics::register`]) and read in-process by tests.

use std::{future::Future, sync::OnceLock, time::Instant};

use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use common::{
    aws::{self, AwsFailure, Modeled},
    metrics::{Counter, LabeledCounter, latency_histogram},
};
use prometheus_client::{
    metrics::{counter::Counter as PromCounter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

/// Counters shared by every part of one service instance.
#[derive(Debug)]
pub struct Metrics {
    /// DynamoDB requests sent with user credentials, by operation and outcome, timed.
    pub dynamodb_calls: DynamoDbCalls,
    /// Lookups of a user's client: `hit` served from the cache, `miss` a GetCredentials load
    /// started (callers joining a load already running count as neither).
    pub credential_cache: LabeledCounter,
    /// The `hit` of `credential_cache`, held so that a hit costs no label lookup.
    pub credential_hits: Counter,
    /// GetCredentials calls made to the auth-service: the `miss` of `credential_cache`.
    pub credential_loads: Counter,
    /// Cached user clients dropped because a revocation named the user, or (from a feed that
    /// does not name users) the user's last session known here ended: the feed's clean-up.
    pub clients_released: Counter,
    /// Full token verifications (signature checks) by outcome: `valid`, `rejected`,
    /// `malformed`, `unknown_key`, `too_long` (validly signed, but `exp − iat` past the
    /// maximum lifetime); cache hits do not count.
    pub token_verifications: LabeledCounter,
    /// Verified tokens refused for their session: `revoked`, or `stale` (the revocation feed
    /// is not current, so no session can be vouched for).
    pub token_refusals: LabeledCounter,
    /// ListSigningKeys calls made to the auth-service.
    pub key_refreshes: Counter,
    /// Tokens found already verified in the cache of verdicts (no signature check).
    pub token_cache_hits: Counter,
    /// Session revocations applied from the auth-services' feed.
    pub revocations_applied: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let credential_cache = LabeledCounter::new("result", &["hit", "miss"]);
        Self {
            dynamodb_calls: DynamoDbCalls::default(),
            credential_loads: credential_cache.counter("miss"),
            credential_hits: credential_cache.counter("hit"),
            credential_cache,
            clients_released: Counter::default(),
            token_verifications: LabeledCounter::new(
                "outcome",
                &["valid", "rejected", "malformed", "unknown_key", "too_long"],
            ),
            token_refusals: LabeledCounter::new("reason", &["revoked", "stale"]),
            key_refreshes: Counter::default(),
            token_cache_hits: Counter::default(),
            revocations_applied: Counter::default(),
        }
    }
}

impl Metrics {
    /// Exports every counter into `registry` (names under the `dynagate_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        self.dynamodb_calls.register(registry);
        self.credential_cache.register(
            registry,
            "credential_cache",
            "User client lookups: hit served from the cache, miss a GetCredentials load",
        );
        self.token_verifications.register(
            registry,
            "token_verifications",
            "Full token verifications (signature checks) by outcome; cache hits not counted",
        );
        self.token_refusals.register(
            registry,
            "token_refusals",
            "Verified tokens refused: session revoked, or the revocation feed stale",
        );
        let counters = [
            (
                &self.clients_released,
                "clients_released",
                "Cached user clients dropped because a revocation named the user",
            ),
            (
                &self.key_refreshes,
                "key_refreshes",
                "ListSigningKeys calls to the auth-service",
            ),
            (
                &self.token_cache_hits,
                "token_cache_hits",
                "Tokens found already verified in the cache (no signature check)",
            ),
            (
                &self.revocations_applied,
                "revocations_applied",
                "Session revocations applied from the auth-services' feed",
            ),
        ];
        for (counter, name, help) in counters {
            counter.register(registry, name, help);
        }
    }
}

/// The DynamoDB operations the data-service sends, as labelled.
pub const OPERATIONS: [&str; 7] = [
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "BatchGetItem",
    "TransactWriteItems",
];

/// One label pair, `("operation", "GetItem")`.
type Label = (&'static str, &'static str);

/// DynamoDB requests by operation and outcome (`ok`, or the [`AwsFailure`] label of the
/// error: `condition_failed`, `throttled`, `unavailable`, ...), and their latency by operation.
#[derive(Debug)]
pub struct DynamoDbCalls {
    calls: Family<[Label; 2], PromCounter>,
    latency: Family<[Label; 1], Histogram, fn() -> Histogram>,
    /// Per operation of [`OPERATIONS`], its series of the families above that every successful
    /// call feeds, taken from the families at its first use (so a series appears in the export
    /// exactly when it did before) and held, so that a call looks up no labels.
    held: [Held; OPERATIONS.len()],
}

/// The series one operation's successful calls feed.
#[derive(Debug, Default)]
struct Held {
    latency: OnceLock<Histogram>,
    ok: OnceLock<PromCounter>,
}

impl Default for DynamoDbCalls {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            held: Default::default(),
        }
    }
}

impl DynamoDbCalls {
    /// Sends one request (`call`, the SDK's `send()` future) of `operation`, one of
    /// [`OPERATIONS`], and counts and times its outcome. A request dropped unfinished (its
    /// caller went away) is not counted.
    pub async fn send<T, E: Modeled>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, SdkError<E, HttpResponse>> {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed().as_secs_f64();
        let held = OPERATIONS
            .iter()
            .position(|known| *known == operation)
            .and_then(|index| self.held.get(index));
        let Some(held) = held else {
            // Not one of OPERATIONS (a caller's mistake): counted all the same.
            self.count_by_labels(operation, &result, elapsed);
            return result;
        };
        let latency = (held.latency).get_or_init(|| {
            self.latency
                .get_or_create_owned(&[("operation", operation)])
        });
        latency.observe(elapsed);
        match &result {
            Ok(_) => {
                let ok = (held.ok).get_or_init(|| {
                    (self.calls).get_or_create_owned(&[("operation", operation), ("outcome", "ok")])
                });
                ok.inc();
            }
            Err(error) => {
                let outcome = aws::classify(error).label();
                (self.calls)
                    .get_or_create(&[("operation", operation), ("outcome", outcome)])
                    .inc();
            }
        }
        result
    }

    /// Counts and times one request by looking its labels up.
    fn count_by_labels<T, E: Modeled>(
        &self,
        operation: &'static str,
        result: &Result<T, SdkError<E, HttpResponse>>,
        elapsed: f64,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => aws::classify(error).label(),
        };
        (self.latency)
            .get_or_create(&[("operation", operation)])
            .observe(elapsed);
        (self.calls)
            .get_or_create(&[("operation", operation), ("outcome", outcome)])
            .inc();
    }

    /// The requests of `operation` that ended in `outcome`.
    pub fn count(&self, operation: &'static str, outcome: &'static str) -> u64 {
        self.calls
            .get(&[("operation", operation), ("outcome", outcome)])
            .map_or(0, |counter| counter.get())
    }

    /// Every request sent, whatever its operation and outcome.
    pub fn get(&self) -> u64 {
        let outcomes = || std::iter::once("ok").chain(AwsFailure::ALL.map(AwsFailure::label));
        OPERATIONS
            .into_iter()
            .flat_map(|operation| outcomes().map(|outcome| self.count(operation, outcome)))
            .sum()
    }

    /// Exports `dynagate_dynamodb_calls_total{operation,outcome}` and
    /// `dynagate_dynamodb_call_duration_seconds{operation}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dynamodb_calls",
            "DynamoDB requests sent with user credentials, by operation and outcome",
            self.calls.clone(),
        );
        registry.register_with_unit(
            "dynamodb_call_duration",
            "Time a DynamoDB request took, retries included, by operation",
            Unit::Seconds,
            self.latency.clone(),
        );
    }
}
