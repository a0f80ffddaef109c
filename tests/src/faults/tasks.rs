//! The load's tasks: per user a writer, a reader and a refresher, and one task signing up
//! newcomers.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::proto::{
    auth::v1::{
        GetCredentialsRequest, LoginRequest, LoginResponse, RefreshRequest, RegisterRequest,
        auth_service_client::AuthServiceClient,
    },
    data::v1::{
        GetItemRequest, PutItemRequest, QueryItemsRequest, UpdateItemRequest,
        data_service_client::DataServiceClient,
    },
};
use tonic::{Code, Request, Status, transport::Channel};

use super::{
    DEADLINE, KEYS,
    ledger::{KeyState, Owner, stamp},
    recorder::Recorder,
};
use crate::{auth::with_bearer, data::string};

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

pub fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(DEADLINE)
        .connect_lazy()
}

/// What every load task holds.
#[derive(Clone)]
pub struct Context {
    pub recorder: Recorder,
    pub stop: Arc<AtomicBool>,
    pub data: DataServiceClient<Channel>,
    pub auth: AuthServiceClient<Channel>,
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
pub async fn sign_up(
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
pub async fn write_loop(mut context: Context, owner: Owner) {
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
pub async fn read_loop(mut context: Context, owner: Owner) {
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
pub async fn refresh_loop(mut context: Context, mut refresh_token: String) {
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
pub async fn newcomer_loop(mut context: Context, owners: Arc<Mutex<Vec<Owner>>>) {
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
