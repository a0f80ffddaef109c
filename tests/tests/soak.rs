//! Soak: mixed traffic (register, login, put, get, update, query, refresh, delete, logout, and
//! calls with a spoiled token) against the service binaries as real processes, for a bounded
//! time. Checks: no call answers a status it should not; neither service's resident memory
//! grows by 10% or more after the warm-up; no cache ever holds more than its bound (read from
//! `dynagate_cache_entries` / `dynagate_cache_capacity` on the metrics endpoints, with small
//! bounds so the traffic fills them); and neither service counted an INTERNAL or UNKNOWN.
//!
//! Short by default (CI); `DYNAGATE_SOAK_SECS=300 cargo test -p tests --test soak --
//! --nocapture` for the long form. Needs the binaries: `cargo build --workspace --bins`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::proto::{
    auth::v1::{
        LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest,
        auth_service_client::AuthServiceClient,
    },
    data::v1::{
        DeleteItemRequest, GetItemRequest, PutItemRequest, QueryItemsRequest, UpdateItemRequest,
        data_service_client::DataServiceClient,
    },
};
use tests::{
    auth::with_bearer,
    data::string,
    emulators::Emulator,
    process::{ServiceProcess, auth_tables_env, aws_env, http_get, owned_env},
    unique_prefix,
};
use tonic::{Code, Status, transport::Channel};

const DEFAULT_SECS: u64 = 30;
const WORKERS: usize = 4;
/// Bounds small enough for the traffic to fill them within the warm-up.
const TOKEN_CACHE: u64 = 64;
const DATA_CLIENTS: u64 = 8;
const AUTH_CREDENTIALS: u64 = 16;

/// The statuses seen, by RPC and code, and every one that was not the expected one.
#[derive(Default)]
struct Tally {
    seen: BTreeMap<String, usize>,
    unexpected: Vec<String>,
}

#[derive(Clone)]
struct Recorder(Arc<Mutex<Tally>>);

impl Recorder {
    /// Records `result` of `rpc`, which should have answered `expected`.
    fn check<T>(&self, rpc: &str, result: Result<T, Status>, expected: Code) -> Option<T> {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        let mut tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *tally.seen.entry(format!("{rpc} {code:?}")).or_default() += 1;
        if code != expected {
            let status = result.as_ref().err().map(|s| s.message().to_owned());
            tally.unexpected.push(format!(
                "{rpc}: {code:?} ({status:?}), expected {expected:?}"
            ));
        }
        result.ok()
    }
}

/// One user's round of everything, from registration to logout.
async fn round(
    worker: usize,
    round: usize,
    auth: &mut AuthServiceClient<Channel>,
    data: &mut DataServiceClient<Channel>,
    record: &Recorder,
) {
    let username = format!("soak-{worker}-{round}-{}", &unique_prefix()[1..9]);
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    let register = RegisterRequest {
        username: username.clone(),
        password: password.clone(),
    };
    record.check("Register", auth.register(register).await, Code::Ok);
    let login = LoginRequest {
        username,
        password,
        ..Default::default()
    };
    let Some(login) = record.check("Login", auth.login(login).await, Code::Ok) else {
        return;
    };
    let login = login.into_inner();
    let token = login.access_token;
    let keys: Vec<String> = (0..3).map(|i| format!("item-{i}")).collect();
    for key in &keys {
        let put = PutItemRequest {
            key: key.clone(),
            attributes: [("text".to_owned(), string("soak"))].into(),
            ..Default::default()
        };
        record.check(
            "PutItem",
            data.put_item(with_bearer(put, &token)).await,
            Code::Ok,
        );
        let get = GetItemRequest {
            key: key.clone(),
            ..Default::default()
        };
        record.check(
            "GetItem",
            data.get_item(with_bearer(get, &token)).await,
            Code::Ok,
        );
        let update = UpdateItemRequest {
            key: key.clone(),
            set: [("n".to_owned(), string("2"))].into(),
            ..Default::default()
        };
        let updated = data.update_item(with_bearer(update, &token)).await;
        record.check("UpdateItem", updated, Code::Ok);
    }
    let query = QueryItemsRequest {
        key_prefix: "item-".into(),
        ..Default::default()
    };
    record.check(
        "QueryItems",
        data.query_items(with_bearer(query, &token)).await,
        Code::Ok,
    );
    let refresh = RefreshRequest {
        refresh_token: login.refresh_token,
    };
    let Some(refreshed) = record.check("Refresh", auth.refresh(refresh).await, Code::Ok) else {
        return;
    };
    let refreshed = refreshed.into_inner();
    let token = refreshed.access_token;
    // A spoiled token: one character of the signature changed.
    let mut spoiled = token.clone().into_bytes();
    let at = spoiled.len() / 2;
    spoiled[at] = if spoiled[at] == b'A' { b'B' } else { b'A' };
    let spoiled = String::from_utf8_lossy(&spoiled).into_owned();
    let get = GetItemRequest {
        key: keys[0].clone(),
        ..Default::default()
    };
    let refused = data.get_item(with_bearer(get, &spoiled)).await;
    record.check("GetItem (spoiled token)", refused, Code::Unauthenticated);
    for key in &keys {
        let delete = DeleteItemRequest {
            key: key.clone(),
            ..Default::default()
        };
        let deleted = data.delete_item(with_bearer(delete, &token)).await;
        record.check("DeleteItem", deleted, Code::Ok);
    }
    let get = GetItemRequest {
        key: keys[0].clone(),
        ..Default::default()
    };
    let gone = data.get_item(with_bearer(get, &token)).await;
    record.check("GetItem (deleted)", gone, Code::NotFound);
    // Every other user stays signed in, so the caches of verified tokens and user clients
    // fill up to their bounds (an ended session's entries are dropped early).
    if round.is_multiple_of(2) {
        let logout = LogoutRequest {
            refresh_token: refreshed.refresh_token,
        };
        record.check("Logout", auth.logout(logout).await, Code::Ok);
    }
}

/// The samples of a metrics text, by series (`name{labels}`).
async fn scrape(process: &ServiceProcess) -> HashMap<String, f64> {
    let (status, text) = http_get(process.metrics_addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_owned(), value.parse().ok()?)))
        .collect()
}

/// Each cache's entries beside its bound, failing on any cache over its bound.
async fn caches_within_bounds(process: &ServiceProcess, largest: &mut BTreeMap<String, f64>) {
    let samples = scrape(process).await;
    for (series, entries) in &samples {
        let Some(labels) = series.strip_prefix("dynagate_cache_entries") else {
            continue;
        };
        let name = format!("{} {labels}", process.name);
        let seen = largest.entry(name.clone()).or_default();
        *seen = seen.max(*entries);
        if let Some(capacity) = samples.get(&format!("dynagate_cache_capacity{labels}")) {
            assert!(
                entries <= capacity,
                "{name}: {entries} entries over {capacity}"
            );
        }
    }
}

fn internal_errors(samples: &HashMap<String, f64>) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.starts_with("dynagate_grpc_requests_total"))
        .filter(|(series, _)| {
            series.contains("code=\"INTERNAL\"") || series.contains("code=\"UNKNOWN\"")
        })
        .map(|(_, count)| count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_keeps_memory_and_caches_bounded() {
    let secs = std::env::var("DYNAGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS);
    let dynalite = Emulator::shared_dynalite().await.endpoint();
    let moto = Emulator::shared_moto().await.endpoint();
    let prefix = unique_prefix();
    let items = format!("{prefix}-items");
    let auth = ServiceProcess::start(
        "auth-service",
        &aws_env(&dynalite, Some(&moto))
            .into_iter()
            .chain(auth_tables_env(&prefix, &items))
            .chain(owned_env(&[
                ("DYNAGATE_ARGON2_MEMORY_KIB", "256".into()),
                ("DYNAGATE_ARGON2_ITERATIONS", "1".into()),
                // On, but far above this traffic: every call comes from one address.
                ("DYNAGATE_THROTTLE_PER_SECOND", "10000".into()),
                ("DYNAGATE_THROTTLE_BURST", "10000".into()),
                (
                    "DYNAGATE_CREDENTIALS_CACHE_CAPACITY",
                    AUTH_CREDENTIALS.to_string(),
                ),
            ]))
            .collect(),
    )
    .expect("start the auth-service");
    let data = ServiceProcess::start(
        "data-service",
        &aws_env(&dynalite, None)
            .into_iter()
            .chain(owned_env(&[
                ("DYNAGATE_AUTH_URL", format!("http://{}", auth.addr)),
                ("DYNAGATE_ITEMS_TABLE", items),
                ("DYNAGATE_DEV_EPHEMERAL_PAGE_TOKEN_KEY", "true".into()),
                ("DYNAGATE_TOKEN_CACHE_CAPACITY", TOKEN_CACHE.to_string()),
                (
                    "DYNAGATE_CREDENTIALS_CACHE_CAPACITY",
                    DATA_CLIENTS.to_string(),
                ),
            ]))
            .collect(),
    )
    .expect("start the data-service");
    assert!(tests::wait_serving(auth.addr, "dynagate.auth.v1.AuthService").await);
    assert!(tests::wait_serving(data.addr, "dynagate.data.v1.DataService").await);

    let record = Recorder(Arc::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (auth_addr, data_addr, record) = (auth.addr, data.addr, record.clone());
        workers.push(tokio::spawn(async move {
            let mut auth = AuthServiceClient::connect(format!("http://{auth_addr}"))
                .await
                .expect("connect to the auth-service");
            let mut data = DataServiceClient::connect(format!("http://{data_addr}"))
                .await
                .expect("connect to the data-service");
            let mut rounds = 0;
            while Instant::now() < deadline {
                round(worker, rounds, &mut auth, &mut data, &record).await;
                rounds += 1;
            }
            rounds
        }));
    }

    // Warm-up: the first third; then memory must stay within 10% of where it was.
    let warm_up = started + Duration::from_secs(secs / 3);
    let mut baseline: Option<(u64, u64)> = None;
    let mut peak = (0, 0);
    let mut largest = BTreeMap::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = (
            auth.rss_kib().expect("auth RSS"),
            data.rss_kib().expect("data RSS"),
        );
        if Instant::now() >= warm_up {
            baseline.get_or_insert(rss);
            peak = (peak.0.max(rss.0), peak.1.max(rss.1));
        }
        caches_within_bounds(&auth, &mut largest).await;
        caches_within_bounds(&data, &mut largest).await;
    }
    let mut rounds = 0;
    for worker in workers {
        rounds += worker.await.expect("a worker");
    }
    caches_within_bounds(&auth, &mut largest).await;
    caches_within_bounds(&data, &mut largest).await;
    let end = (
        auth.rss_kib().expect("auth RSS"),
        data.rss_kib().expect("data RSS"),
    );
    let base = baseline.expect("a sample after the warm-up");
    let tally = std::mem::take(&mut *record.0.lock().unwrap_or_else(|e| e.into_inner()));
    let calls: usize = tally.seen.values().sum();
    println!(
        "soak: {secs} s, {rounds} rounds, {calls} calls ({:.0}/s)",
        calls as f64 / secs as f64
    );
    println!("soak: statuses {:#?}", tally.seen);
    println!(
        "soak: RSS KiB after warm-up / peak / end: auth {} / {} / {}, data {} / {} / {}",
        base.0, peak.0, end.0, base.1, peak.1, end.1
    );
    println!("soak: largest cache sizes {largest:#?}");

    assert!(
        tally.unexpected.is_empty(),
        "{} unexpected statuses:\n{}",
        tally.unexpected.len(),
        tally.unexpected.join("\n")
    );
    assert!(rounds >= WORKERS, "traffic ran ({rounds} rounds)");
    let reported: Vec<&str> = largest.keys().map(String::as_str).collect();
    let caches = [
        "auth-service {cache=\"credentials\"}",
        "auth-service {cache=\"revocation_log\"}",
        "auth-service {cache=\"revocation_watchers\"}",
        "auth-service {cache=\"throttled_addresses\"}",
        "data-service {cache=\"refused_tokens\"}",
        "data-service {cache=\"revoked_sessions\"}",
        "data-service {cache=\"tracked_sessions\"}",
        "data-service {cache=\"tracked_users\"}",
        "data-service {cache=\"user_clients\"}",
        "data-service {cache=\"verified_tokens\"}",
    ];
    assert_eq!(reported, caches, "every cache is on the metrics endpoints");
    for (service, base, end) in [("auth", base.0, end.0), ("data", base.1, end.1)] {
        let growth = end as f64 / base as f64 - 1.0;
        assert!(
            growth < 0.10,
            "{service}-service RSS grew {:.1}% after the warm-up ({base} → {end} KiB)",
            growth * 100.0
        );
    }
    for process in [&auth, &data] {
        let samples = scrape(process).await;
        assert_eq!(
            internal_errors(&samples),
            0.0,
            "{} counted INTERNAL/UNKNOWN",
            process.name
        );
    }
    data.stop().expect("the data-service stops cleanly");
    auth.stop().expect("the auth-service stops cleanly");
}
