//! Faults under load: while users write, read, refresh and fetch credentials through both
//! services (`tests::faults`), dynalite, moto and the auth-service are each killed with SIGKILL
//! and restarted, one at a time. Every call must end within its deadline with OK or
//! UNAVAILABLE, health must follow the dependency that died and come back by itself, and no
//! acknowledged write may be lost or applied twice.
//!
//! The writes are checkable because each user owns its keys and every write names a nonce:
//! a write that got OK must come back at exactly the next version with its nonce; a write
//! whose outcome is unknown (UNAVAILABLE) may or may not have landed, once, at the next
//! version, so the writer reads the key before its next write and accepts only those two
//! states. The auth-service runs as a process of its own (this test binary run again, see
//! `tests::auth_process`); dynalite keeps its data on disk.

use std::time::Duration;

use common::proto::data::v1::{
    GetItemRequest, Item, PutItemRequest, UpdateItemRequest, data_service_client::DataServiceClient,
};
use tests::{
    auth::{Endpoints, TestAuth, with_bearer},
    auth_process::{AuthProcess, serve_if_child},
    data::{TestData, TestStack, string},
    emulators::{Emulator, Kind},
    faults::{DEADLINE, Load, stamp},
    proxy::RecordingProxy,
    unique_prefix,
};
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

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
        "calls excused because the whole process was frozen: {}",
        report.excused
    );
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

/// The SDK retries a request whose answer was lost, though it may have landed: a write sent
/// twice must neither apply twice nor be refused because of itself.
#[tokio::test]
async fn a_write_whose_answer_was_lost_is_applied_once_or_reported_unavailable() {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    let stack = TestStack::spawn_custom(Endpoints::shared().await, &proxy.endpoint()).await;
    let table = stack.data.settings.items_table.clone();
    let mut user = stack.user().await;
    assert_eq!(user.put_text("k", "first").await, 1);

    // A put is one UpdateItem.
    proxy.drop_next_response("UpdateItem", &table);
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
