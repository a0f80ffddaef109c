//! Faults under load: while users write, read, refresh and fetch credentials through both
//! services, dynalite, moto and the auth-service are each killed with SIGKILL and restarted,
//! one at a time. Every call must end within its deadline with OK or UNAVAILABLE, health must
//! follow the dependency that died and come back by itself, and no acknowledged write may be
//! lost or applied twice.
//!
//! The writes are checkable because each user owns its keys and every write names a nonce:
//! a write that got OK must come back at exactly the next version with its nonce; a write
//! whose outcome is unknown (UNAVAILABLE, or a FAILED_PRECONDITION after an SDK retry) may or
//! may not have landed, once, at the next version, so the writer reads the key before its next
//! write and accepts only those two states. The auth-service runs as a process of its own
//! (this test binary run again, see `tests::auth_process`); dynalite keeps its data on disk.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::proto::{
    auth::v1::{
        GetCredentialsRequest, LoginRequest, LoginResponse, RefreshRequest, RegisterRequest,
        auth_service_client::AuthServiceClient,
    },
    data::v1::{
        GetItemRequest, Item, PutItemRequest, QueryItemsRequest, UpdateItemRequest,
        data_service_client::DataServiceClient, value::Kind as ValueKind,
    },
};
use tests::{
    auth::{Endpoints, TestAuth, with_bearer},
    auth_process::{AuthProcess, serve_if_child},
    data::{TestData, TestStack, string},
    emulators::{Emulator, Kind},
    proxy::RecordingProxy,
    unique_prefix,
};
use tokio::task::JoinHandle;
use tonic::{Code, Request, Response, Status, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

/// Every call's deadline, sent as `grpc-timeout`.
const DEADLINE: Duration = Duration::from_secs(2);
/// Past the deadline by this much, a call counts as hung (and is abandoned).
const HANG: Duration = Duration::from_millis(500);
/// Users with their own keys, each with a writer, a reader and a refresher.
const USERS: usize = 3;
/// Keys per user.
const KEYS: usize = 3;
/// How long health may take to follow a dependency, and the load to show a fault or progress.
const SETTLE: Duration = Duration::from_secs(15);
const AUTH: &str = "dynagate.auth.v1.AuthService";
const DATA: &str = "dynagate.data.v1.DataService";
/// The test whose process is the auth-service (see `tests::auth_process`).
const AUTH_ENTRY: &str = "auth_service_process";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the auth-service process of the fault test, which starts it itself"]
async fn auth_service_process() {
    serve_if_child().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_dynalite_moto_and_the_auth_service_under_load_loses_no_acknowledged_write() {
    let mut dynalite = Emulator::start(Kind::Dynalite, true).await;
    let mut moto = Emulator::start(Kind::Moto, false).await;
    let endpoints = Endpoints {
        dynamodb: dynalite.endpoint(),
        sts: moto.endpoint(),
    };
    let items_table = format!("{}-items", unique_prefix());
    let settings = TestAuth::settings_for_items(&items_table);
    let mut auth = AuthProcess::start(settings, &endpoints, AUTH_ENTRY).await;
    let data_settings = TestData::settings(&items_table, auth.addr);
    let data = TestData::spawn_with(data_settings, &endpoints.dynamodb, true).await;
    let health = |addr, service, status| async move {
        tests::wait_status(addr, service, status, SETTLE).await
    };

    let load = Load::start(auth.addr, data.addr).await;
    load.progress("PutItem", SETTLE).await;

    // DynamoDB dies: both services depend on it.
    load.phase("dynalite down");
    dynalite.stop().await;
    assert!(health(data.addr, DATA, ServingStatus::NotServing).await);
    assert!(health(auth.addr, AUTH, ServingStatus::NotServing).await);
    for op in ["PutItem", "UpdateItem", "GetItem", "Refresh"] {
        assert!(
            load.saw(op, "Unavailable", SETTLE).await,
            "{op} during the outage"
        );
    }
    load.phase("dynalite back");
    dynalite.restart().await;
    assert!(health(auth.addr, AUTH, ServingStatus::Serving).await);
    assert!(health(data.addr, DATA, ServingStatus::Serving).await);
    for op in ["PutItem", "UpdateItem", "Refresh", "GetCredentials"] {
        load.progress(op, SETTLE).await;
    }

    // STS dies: credentials already vended keep serving; new users wait.
    load.phase("moto down");
    moto.stop().await;
    assert!(
        load.saw("GetCredentials (newcomer)", "Unavailable", SETTLE)
            .await
    );
    assert!(load.saw("PutItem (newcomer)", "Unavailable", SETTLE).await);
    load.phase("moto back");
    moto.restart().await;
    load.progress("GetCredentials (newcomer)", SETTLE).await;
    load.progress("PutItem (newcomer)", SETTLE).await;

    // The auth-service dies: the data-service depends on it; cached users keep writing.
    load.phase("auth down");
    auth.kill();
    assert!(health(data.addr, DATA, ServingStatus::NotServing).await);
    assert!(load.saw("Refresh", "Unavailable", SETTLE).await);
    load.progress("PutItem", SETTLE).await;
    load.phase("auth back");
    auth.restart().await;
    assert!(health(data.addr, DATA, ServingStatus::Serving).await);
    for op in ["Refresh", "GetCredentials", "PutItem (newcomer)"] {
        load.progress(op, SETTLE).await;
    }

    let report = load.stop().await;
    let owners = report.owners.clone();
    let mut verifier = data.client().await;
    let mut violations = report.violations.clone();
    let (mut acked, mut landed, mut unknown) = (0, 0, 0);
    for owner in &owners {
        let count = owner.keys.lock().expect("ledger").len();
        for index in 0..count {
            let key = owner.keys.lock().expect("ledger")[index].key.clone();
            let found = read_back(&mut verifier, &owner.token, &key).await;
            let mut keys = owner.keys.lock().expect("ledger");
            let state = &mut keys[index];
            if let Err(violation) = state.observe(found) {
                violations.push(format!("{}: {violation}", owner.label));
            }
            acked += state.acked;
            landed += state.landed;
            unknown += state.ambiguous.len();
        }
    }
    eprintln!("{}", report.table());
    eprintln!(
        "writes: {acked} acknowledged, {landed} unacknowledged that landed (once), {unknown} \
         unacknowledged that did not land"
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        acked >= 50,
        "only {acked} acknowledged writes: the load did not run"
    );
}

/// The item `key` as stored now (strongly consistent), retrying until the data-service
/// answers.
async fn read_back(
    client: &mut DataServiceClient<Channel>,
    token: &str,
    key: &str,
) -> Option<(u64, Option<String>)> {
    for _ in 0..50 {
        let mut request = with_bearer(
            GetItemRequest {
                key: key.to_owned(),
                consistent_read: true,
                ..Default::default()
            },
            token,
        );
        request.set_timeout(DEADLINE);
        match client.get_item(request).await {
            Ok(response) => return response.into_inner().item.as_ref().map(stamp),
            Err(status) if status.code() == Code::NotFound => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("the data-service never answered a read of {key}");
}

/// An item's version and nonce.
fn stamp(item: &Item) -> (u64, Option<String>) {
    let nonce = item
        .attributes
        .get("nonce")
        .and_then(|value| match &value.kind {
            Some(ValueKind::StringValue(nonce)) => Some(nonce.clone()),
            _ => None,
        });
    (item.version, nonce)
}

/// What one writer knows about one of its keys.
#[derive(Debug)]
struct KeyState {
    key: String,
    /// The version and nonce of the last write known to have landed.
    confirmed: u64,
    nonce: Option<String>,
    /// Writes whose outcome is unknown: the version they would have, their nonce, and the
    /// code they got.
    ambiguous: Vec<(u64, String, Code)>,
    /// The key must be read before the next write.
    resync: bool,
    /// Writes that got OK, and unacknowledged ones later found stored.
    acked: u64,
    landed: u64,
}

impl KeyState {
    fn new(key: String) -> Self {
        Self {
            key,
            confirmed: 0,
            nonce: None,
            ambiguous: Vec::new(),
            resync: false,
            acked: 0,
            landed: 0,
        }
    }

    /// Checks what is stored against what the writer knows: the last confirmed write, or one
    /// of the unknown ones exactly once on top of it. Anything else lost an acknowledged write
    /// or applied one twice.
    fn observe(&mut self, found: Option<(u64, Option<String>)>) -> Result<(), String> {
        let (version, nonce) = found.unwrap_or((0, None));
        if version == self.confirmed && nonce == self.nonce {
            return Ok(());
        }
        let landed = self
            .ambiguous
            .iter()
            .position(|(at, sent, _)| *at == version && nonce.as_ref() == Some(sent));
        match landed {
            Some(_) if version == self.confirmed + 1 => {
                self.confirmed = version;
                self.nonce = nonce;
                self.landed += 1;
                self.ambiguous.clear();
                Ok(())
            }
            _ => Err(format!(
                "key {} stores version {version} nonce {nonce:?}; last acknowledged {} {:?}, \
                 unknown outcomes {:?}",
                self.key, self.confirmed, self.nonce, self.ambiguous
            )),
        }
    }

    /// Takes in the answer to a write sent with `nonce` after version `self.confirmed`.
    fn written(&mut self, nonce: String, result: &Result<Item, Status>) -> Result<(), String> {
        match result {
            Ok(item) => {
                let (version, stored) = stamp(item);
                let next = self.confirmed + 1;
                if version != next || stored.as_ref() != Some(&nonce) {
                    return Err(format!(
                        "key {}: write {nonce} acknowledged at version {version} ({stored:?}), \
                         expected {next}",
                        self.key
                    ));
                }
                self.confirmed = next;
                self.nonce = Some(nonce);
                self.ambiguous.clear();
                self.acked += 1;
            }
            Err(status) => {
                self.ambiguous
                    .push((self.confirmed + 1, nonce, status.code()));
                self.resync = true;
            }
        }
        Ok(())
    }
}

/// A user's keys as its writer knows them, with the token to read them back.
#[derive(Clone)]
struct Owner {
    label: String,
    token: String,
    keys: Arc<Mutex<Vec<KeyState>>>,
}

/// What the load saw, by phase, operation and outcome, and every broken rule.
#[derive(Default)]
struct Record {
    phase: &'static str,
    outcomes: BTreeMap<(&'static str, &'static str, String), (u64, Duration)>,
    violations: Vec<String>,
}

#[derive(Clone)]
struct Recorder(Arc<Mutex<Record>>);

impl Recorder {
    fn violation(&self, text: String) {
        self.0.lock().expect("record").violations.push(text);
    }

    /// Runs one call with the deadline and records its outcome. A call that outlives its
    /// deadline, or ends with a code other than OK, UNAVAILABLE or one of `allowed`, breaks
    /// the rules.
    async fn call<T>(
        &self,
        op: &'static str,
        allowed: &[Code],
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = match tokio::time::timeout(DEADLINE + HANG, call).await {
            Ok(result) => result.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("no answer: hung")),
        };
        let elapsed = started.elapsed();
        let mut record = self.0.lock().expect("record");
        let phase = record.phase;
        let outcome = match &result {
            Ok(_) => "OK".to_owned(),
            Err(status) if status.code() == Code::Unavailable => {
                if status.get_error_details().retry_info().is_some() {
                    "Unavailable".to_owned()
                } else {
                    "Unavailable".to_owned() + " (no RetryInfo)"
                }
            }
            Err(status) => format!("{:?}", status.code()),
        };
        if let Err(status) = &result {
            let answered = status.code() == Code::Unavailable && outcome == "Unavailable";
            let reset = status.code() == Code::Unknown && status.message() == "transport error";
            let client_made = cut_off(phase, op) && (status.code() == Code::Unavailable || reset);
            if !(answered || client_made || allowed.contains(&status.code())) {
                record.violations.push(format!(
                    "{phase}: {op} ended {:?} after {elapsed:?}: {}",
                    status.code(),
                    status.message()
                ));
            }
        }
        // A call past its deadline ends CANCELLED or DEADLINE_EXCEEDED on the client's side,
        // which the codes above refuse: no timing is asserted here.
        let (count, longest) = record.outcomes.entry((phase, op, outcome)).or_default();
        *count += 1;
        *longest = (*longest).max(elapsed);
        result
    }

    fn count(&self, phase: &str, op: &str, outcome: &str) -> u64 {
        let record = self.0.lock().expect("record");
        record
            .outcomes
            .iter()
            .filter(|((p, o, out), _)| *p == phase && *o == op && out.starts_with(outcome))
            .map(|(_, (count, _))| count)
            .sum()
    }
}

/// True for a call the client itself may fail (UNAVAILABLE without RetryInfo, or UNKNOWN
/// "transport error" for a call in flight when the connection was reset): one to the
/// auth-service while its process is dead or restarting. Every other failure must be the
/// services' own UNAVAILABLE, with RetryInfo.
fn cut_off(phase: &str, op: &str) -> bool {
    let auth_call = matches!(
        op,
        "Register" | "Login" | "Refresh" | "GetCredentials" | "GetCredentials (newcomer)"
    );
    auth_call && matches!(phase, "auth down" | "auth back")
}

/// A request with the deadline and `token`.
fn request<T>(message: T, token: &str) -> Request<T> {
    let mut request = with_bearer(message, token);
    request.set_timeout(DEADLINE);
    request
}

/// A request with the deadline and no token.
fn anonymous<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

/// The running load: its tasks, what they record, and every key they own.
struct Load {
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    owners: Arc<Mutex<Vec<Owner>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the load left behind.
struct Report {
    outcomes: BTreeMap<(&'static str, &'static str, String), (u64, Duration)>,
    violations: Vec<String>,
    owners: Vec<Owner>,
}

impl Report {
    fn table(&self) -> String {
        let mut table =
            "| phase | call | outcome | count | longest |\n|---|---|---|---|---|\n".to_owned();
        for ((phase, op, outcome), (count, longest)) in &self.outcomes {
            let millis = longest.as_millis();
            table.push_str(&format!(
                "| {phase} | {op} | {outcome} | {count} | {millis} ms |\n"
            ));
        }
        table
    }
}

impl Load {
    /// Registers the users and starts their tasks, plus one task signing up newcomers.
    async fn start(auth: std::net::SocketAddr, data: std::net::SocketAddr) -> Self {
        let recorder = Recorder(Arc::new(Mutex::new(Record {
            phase: "warm-up",
            ..Default::default()
        })));
        let stop = Arc::new(AtomicBool::new(false));
        let owners = Arc::new(Mutex::new(Vec::new()));
        let auth_channel = channel(auth);
        let data_channel = channel(data);
        let mut tasks = Vec::new();
        for user in 0..USERS {
            let mut auth_client = AuthServiceClient::new(auth_channel.clone());
            let login = sign_up(&recorder, &mut auth_client, &format!("user{user}"))
                .await
                .expect("sign up before the faults");
            let owner = Owner {
                label: format!("user {user}"),
                token: login.access_token.clone(),
                keys: Arc::new(Mutex::new(
                    (0..KEYS).map(|k| KeyState::new(format!("k{k}"))).collect(),
                )),
            };
            owners.lock().expect("owners").push(owner.clone());
            let context = Context {
                recorder: recorder.clone(),
                stop: Arc::clone(&stop),
                data: DataServiceClient::new(data_channel.clone()),
                auth: auth_client,
            };
            tasks.push(tokio::spawn(write_loop(context.clone(), owner.clone())));
            tasks.push(tokio::spawn(read_loop(context.clone(), owner)));
            tasks.push(tokio::spawn(refresh_loop(context, login.refresh_token)));
        }
        let context = Context {
            recorder: recorder.clone(),
            stop: Arc::clone(&stop),
            data: DataServiceClient::new(data_channel),
            auth: AuthServiceClient::new(auth_channel),
        };
        tasks.push(tokio::spawn(newcomer_loop(context, Arc::clone(&owners))));
        Self {
            recorder,
            stop,
            owners,
            tasks,
        }
    }

    /// Starts a new phase of the run (outcomes are counted per phase).
    fn phase(&self, phase: &'static str) {
        self.recorder.0.lock().expect("record").phase = phase;
    }

    fn current(&self) -> &'static str {
        self.recorder.0.lock().expect("record").phase
    }

    /// True once `op` ended with `outcome` in this phase (false after `limit`).
    async fn saw(&self, op: &str, outcome: &str, limit: Duration) -> bool {
        let phase = self.current();
        tests::eventually(limit, || async move {
            self.recorder.count(phase, op, outcome) > 0
        })
        .await
    }

    /// Waits until `op` succeeds in this phase; fails the test if it does not within `limit`.
    async fn progress(&self, op: &str, limit: Duration) {
        let phase = self.current();
        assert!(
            self.saw(op, "OK", limit).await,
            "{phase}: no {op} succeeded within {limit:?}"
        );
    }

    async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a load task panicked");
        }
        let record = std::mem::take(&mut *self.recorder.0.lock().expect("record"));
        let owners = self.owners.lock().expect("owners").clone();
        Report {
            outcomes: record.outcomes,
            violations: record.violations,
            owners,
        }
    }
}

fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(DEADLINE)
        .connect_lazy()
}

/// What every load task holds.
#[derive(Clone)]
struct Context {
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    data: DataServiceClient<Channel>,
    auth: AuthServiceClient<Channel>,
}

impl Context {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    /// A short pause between calls (longer after a failure), so a dead dependency is not
    /// hammered in a tight loop.
    async fn pause<T>(&self, result: &Result<T, Status>) {
        let millis = if result.is_ok() { 5 } else { 50 };
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
}

/// Registers and logs in a new user named after `label`.
async fn sign_up(
    recorder: &Recorder,
    auth: &mut AuthServiceClient<Channel>,
    label: &str,
) -> Result<LoginResponse, Status> {
    let username = format!(
        "{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    let register = RegisterRequest {
        username: username.clone(),
        password: password.clone(),
    };
    recorder
        .call("Register", &[], auth.register(anonymous(register)))
        .await?;
    let login = LoginRequest {
        username,
        password,
        ..Default::default()
    };
    recorder
        .call("Login", &[], auth.login(anonymous(login)))
        .await
}

/// Writes the owner's keys in turn with versioned puts and updates (and, when nothing is
/// unknown, unconditional puts), reading a key back after any failed write.
async fn write_loop(mut context: Context, owner: Owner) {
    let mut sequence = 0_u64;
    while context.running() {
        sequence += 1;
        let index = sequence as usize % KEYS;
        let (key, resync, confirmed, settled) = {
            let keys = owner.keys.lock().expect("ledger");
            let state = &keys[index];
            let settled = state.ambiguous.is_empty();
            (state.key.clone(), state.resync, state.confirmed, settled)
        };
        if resync {
            let read = context
                .recorder
                .call(
                    "GetItem",
                    &[Code::NotFound],
                    context.data.get_item(request(
                        GetItemRequest {
                            key: key.clone(),
                            consistent_read: true,
                            ..Default::default()
                        },
                        &owner.token,
                    )),
                )
                .await;
            let found = match &read {
                Ok(response) => Some(response.item.as_ref().map(stamp)),
                Err(status) if status.code() == Code::NotFound => Some(None),
                Err(_) => None,
            };
            if let Some(found) = found {
                let mut keys = owner.keys.lock().expect("ledger");
                match keys[index].observe(found) {
                    Ok(()) => keys[index].resync = false,
                    Err(violation) => context
                        .recorder
                        .violation(format!("{}: {violation}", owner.label)),
                }
            }
            context.pause(&read).await;
            continue;
        }
        let nonce = format!("{}-{sequence}", owner.label);
        let attributes = [("nonce".to_owned(), string(&nonce))].into();
        let refused = [Code::FailedPrecondition];
        let result = match sequence % 3 {
            1 if confirmed > 0 => {
                let update = UpdateItemRequest {
                    key: key.clone(),
                    set: attributes,
                    expected_version: Some(confirmed),
                    ..Default::default()
                };
                context
                    .recorder
                    .call(
                        "UpdateItem",
                        &refused,
                        context.data.update_item(request(update, &owner.token)),
                    )
                    .await
                    .map(|r| r.item.unwrap_or_default())
            }
            choice => {
                let blind = choice == 2 && settled;
                let put = PutItemRequest {
                    key: key.clone(),
                    attributes,
                    expected_version: (!blind).then_some(confirmed),
                    ..Default::default()
                };
                context
                    .recorder
                    .call(
                        "PutItem",
                        &refused,
                        context.data.put_item(request(put, &owner.token)),
                    )
                    .await
                    .map(|r| r.item.unwrap_or_default())
            }
        };
        let written = owner.keys.lock().expect("ledger")[index].written(nonce, &result);
        if let Err(violation) = written {
            context
                .recorder
                .violation(format!("{}: {violation}", owner.label));
        }
        context.pause(&result).await;
    }
}

/// Reads the owner's keys (GetItem and QueryItems, strongly consistent): never older than
/// the last write acknowledged before the read began.
async fn read_loop(mut context: Context, owner: Owner) {
    let mut round = 0_usize;
    while context.running() {
        round += 1;
        let floors: Vec<(String, u64)> = owner
            .keys
            .lock()
            .expect("ledger")
            .iter()
            .map(|state| (state.key.clone(), state.confirmed))
            .collect();
        let found: Result<Vec<(String, u64)>, Status> = if round.is_multiple_of(2) {
            let (key, _) = &floors[round / 2 % KEYS];
            let get = GetItemRequest {
                key: key.clone(),
                consistent_read: true,
                ..Default::default()
            };
            match context
                .recorder
                .call(
                    "GetItem",
                    &[Code::NotFound],
                    context.data.get_item(request(get, &owner.token)),
                )
                .await
            {
                Ok(response) => Ok(response
                    .item
                    .map(|item| vec![(item.key, item.version)])
                    .unwrap_or_default()),
                Err(status) if status.code() == Code::NotFound => Ok(vec![(key.clone(), 0)]),
                Err(status) => Err(status),
            }
        } else {
            let query = QueryItemsRequest {
                key_prefix: "k".into(),
                consistent_read: true,
                ..Default::default()
            };
            context
                .recorder
                .call(
                    "QueryItems",
                    &[],
                    context.data.query_items(request(query, &owner.token)),
                )
                .await
                .map(|page| {
                    let listed: Vec<(String, u64)> = page
                        .items
                        .into_iter()
                        .map(|item| (item.key, item.version))
                        .collect();
                    floors
                        .iter()
                        .map(|(key, _)| {
                            let version = listed.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
                            (key.clone(), version.unwrap_or(0))
                        })
                        .collect()
                })
        };
        if let Ok(found) = &found {
            for (key, version) in found {
                let floor = floors.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v);
                if *version < floor {
                    context.recorder.violation(format!(
                        "{}: read {key} at version {version} after version {floor} was acknowledged",
                        owner.label
                    ));
                }
            }
        }
        context.pause(&found).await;
    }
}

/// Rotates one session's refresh token and fetches credentials with each new access token.
async fn refresh_loop(mut context: Context, mut refresh_token: String) {
    while context.running() {
        let refreshed = context
            .recorder
            .call(
                "Refresh",
                &[],
                context.auth.refresh(anonymous(RefreshRequest {
                    refresh_token: refresh_token.clone(),
                })),
            )
            .await;
        if let Ok(refreshed) = &refreshed {
            refresh_token = refreshed.refresh_token.clone();
            let credentials = context
                .recorder
                .call(
                    "GetCredentials",
                    &[],
                    context.auth.get_credentials(request(
                        GetCredentialsRequest {},
                        &refreshed.access_token,
                    )),
                )
                .await;
            context.pause(&credentials).await;
        }
        context.pause(&refreshed).await;
    }
}

/// Signs up new users, whose first write and first credentials need STS: each writes one
/// key once (kept in the ledger) and then asks for its credentials.
async fn newcomer_loop(mut context: Context, owners: Arc<Mutex<Vec<Owner>>>) {
    let mut count = 0;
    while context.running() {
        count += 1;
        let label = format!("newcomer{count}");
        let signed_up = sign_up(&context.recorder, &mut context.auth, &label).await;
        let Ok(login) = signed_up else {
            context.pause(&signed_up).await;
            continue;
        };
        let owner = Owner {
            label,
            token: login.access_token.clone(),
            keys: Arc::new(Mutex::new(vec![KeyState::new("k0".to_owned())])),
        };
        owners.lock().expect("owners").push(owner.clone());
        let nonce = format!("{}-1", owner.label);
        let put = PutItemRequest {
            key: "k0".into(),
            attributes: [("nonce".to_owned(), string(&nonce))].into(),
            if_absent: true,
            ..Default::default()
        };
        let result = context
            .recorder
            .call(
                "PutItem (newcomer)",
                &[],
                context.data.put_item(request(put, &owner.token)),
            )
            .await
            .map(|r| r.item.unwrap_or_default());
        let written = owner.keys.lock().expect("ledger")[0].written(nonce, &result);
        if let Err(violation) = written {
            context
                .recorder
                .violation(format!("{}: {violation}", owner.label));
        }
        let credentials = context
            .recorder
            .call(
                "GetCredentials (newcomer)",
                &[],
                context
                    .auth
                    .get_credentials(request(GetCredentialsRequest {}, &owner.token)),
            )
            .await;
        context.pause(&credentials).await;
    }
}

/// The SDK retries a request whose answer was lost, though it may have landed: a write sent
/// twice must neither apply twice nor be refused because of itself.
#[tokio::test]
async fn a_write_whose_answer_was_lost_is_applied_once_or_reported_unavailable() {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    let stack = TestStack::spawn_custom(Endpoints::shared().await, &proxy.endpoint()).await;
    let table = stack.data.settings.items_table.clone();
    let mut user = stack.user().await;
    assert_eq!(user.put_text("k", "first").await, 1);

    proxy.drop_next_response("PutItem", &table);
    let put = PutItemRequest {
        key: "k".into(),
        attributes: [("text".to_owned(), string("second"))].into(),
        ..Default::default()
    };
    let blind = user.client.put_item(user.request(put)).await;
    let stored = user.get("k").await.expect("GetItem");
    assert_eq!(proxy.faults_fired(), 1);
    assert_eq!(
        stored.version, 2,
        "an unconditional put applied twice: {blind:?}"
    );
    assert_lost_write_reported(blind.map(|r| r.into_inner().item.unwrap_or_default()), 2);

    proxy.drop_next_response("UpdateItem", &table);
    let update = UpdateItemRequest {
        key: "k".into(),
        set: [("text".to_owned(), string("third"))].into(),
        expected_version: Some(2),
        ..Default::default()
    };
    let versioned = user.client.update_item(user.request(update)).await;
    assert_eq!(proxy.faults_fired(), 2);
    assert_eq!(user.get("k").await.expect("GetItem").version, 3);
    assert_lost_write_reported(
        versioned.map(|r| r.into_inner().item.unwrap_or_default()),
        3,
    );
}

/// A write that landed once but whose answer was lost: OK at `version`, or UNAVAILABLE (it
/// may have landed), never a refusal because of itself.
fn assert_lost_write_reported(result: Result<Item, Status>, version: u64) {
    match result {
        Ok(item) => assert_eq!(item.version, version),
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
    }
}
