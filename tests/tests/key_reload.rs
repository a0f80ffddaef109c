//! Key rotation without a restart: the auth-service re-reads its keys file when it changes and
//! on SIGHUP, publishes and signs with the new ring, stops accepting removed keys, and keeps its
//! keys when the file turns out to be broken. Each step waits for an event (the published ring,
//! the reload counter), never for a time; the signal goes to an auth-service process of its
//! own, never to the test process (whose in-process services would all take it).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use auth_service::{config::Settings, keys};
use common::proto::auth::v1::{
    ListSessionsRequest, ListSigningKeysRequest, auth_service_client::AuthServiceClient,
};
use secrecy::ExposeSecret;
use tests::{
    auth::{Endpoints, TestAuth, TestUser, kid_of, with_bearer},
    auth_process::{AuthProcess, serve_if_child},
    eventually,
};
use tonic::{Code, transport::Channel};

/// The bound on waiting for an event (a loaded machine is slow, never this slow).
const PATIENCE: Duration = Duration::from_secs(30);
/// The test whose process is the auth-service of the SIGHUP test (see `tests::auth_process`).
const AUTH_ENTRY: &str = "auth_service_process";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the auth-service process of the SIGHUP test, which starts it itself"]
async fn auth_service_process() {
    serve_if_child().await;
}

/// A keys file of its own in the temporary directory.
struct KeysFile(PathBuf);

impl KeysFile {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("dynagate-keys-{}", uuid::Uuid::new_v4()));
        Self(path)
    }

    /// Writes these keys (PASERK lines), oldest first.
    fn write(&self, keys: &[&str]) {
        std::fs::write(&self.0, keys.join("\n")).expect("write the keys file");
    }
}

impl Drop for KeysFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn new_key() -> (String, String) {
    let (key, kid) = keys::generate_paserk().expect("generate a key");
    (key.expose_secret().to_owned(), kid)
}

fn settings_with_file(file: &KeysFile, reload_secs: u64) -> Settings {
    let mut settings = TestAuth::settings();
    settings.signing_keys = None;
    settings.signing_keys_file = Some(file.0.clone());
    settings.signing_keys_reload_secs = reload_secs;
    // Reload mechanics only: an added key signs at once (tests/tests/key_rollout.rs holds
    // keys back).
    settings.signing_key_activation_secs = 0;
    settings
}

async fn client(addr: SocketAddr) -> AuthServiceClient<Channel> {
    AuthServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the auth-service")
}

/// The published kids, oldest first, and the active one.
async fn published(addr: SocketAddr) -> (Vec<String>, String) {
    let keys = client(addr)
        .await
        .list_signing_keys(ListSigningKeysRequest {})
        .await
        .expect("ListSigningKeys")
        .into_inner()
        .keys;
    let active = keys.iter().find(|k| k.active).map(|k| k.kid.clone());
    (
        keys.into_iter().map(|k| k.kid).collect(),
        active.unwrap_or_default(),
    )
}

/// True once `addr` publishes `ring` (kids oldest first, and the active one).
async fn publishes(addr: SocketAddr, ring: &(Vec<String>, String)) -> bool {
    eventually(PATIENCE, || async { published(addr).await == *ring }).await
}

/// The code of a bearer call that changes nothing (ListSessions) made with `token`.
async fn bearer_code(auth: &TestAuth, token: &str) -> Code {
    let request = with_bearer(ListSessionsRequest {}, token);
    match auth.client().await.list_sessions(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn added_and_removed_keys_take_effect_without_a_restart() {
    let file = KeysFile::new();
    let (old_key, old_kid) = new_key();
    file.write(&[&old_key]);
    let settings = settings_with_file(&file, 1);
    let auth = TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await;
    let reloads = &auth.metrics.signing_key_reloads;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let old_token = user.login(&mut client).await.access_token;
    assert_eq!(kid_of(&old_token), old_kid);

    // Add a key: it is published and signs; tokens of the old key still verify.
    let (new_key, new_kid) = new_key();
    file.write(&[&old_key, &new_key]);
    let both = (vec![old_kid.clone(), new_kid.clone()], new_kid.clone());
    assert!(
        publishes(auth.addr, &both).await,
        "the added key is published and active"
    );
    let new_token = user.login(&mut client).await.access_token;
    assert_eq!(kid_of(&new_token), new_kid);
    assert_eq!(bearer_code(&auth, &old_token).await, Code::Ok);

    // Remove the old key: its tokens stop verifying, the new key's keep working.
    file.write(&[&new_key]);
    let only_new = (vec![new_kid.clone()], new_kid.clone());
    assert!(
        publishes(auth.addr, &only_new).await,
        "the removed key is no longer published"
    );
    assert_eq!(bearer_code(&auth, &old_token).await, Code::Unauthenticated);
    assert_eq!(bearer_code(&auth, &new_token).await, Code::Ok);
    assert_eq!(
        (reloads.count("applied"), reloads.count("refused")),
        (2, 0),
        "one reload per change"
    );

    // A broken file is read, refused, and changes nothing.
    file.write(&["k4.secret.not-a-key"]);
    let refused = eventually(PATIENCE, || async { reloads.count("refused") == 1 });
    assert!(refused.await, "the broken file was read and refused");
    assert_eq!(published(auth.addr).await, only_new);
    let after = user.login(&mut client).await.access_token;
    assert_eq!(kid_of(&after), new_kid);
    assert_eq!(reloads.count("applied"), 2, "nothing applied since");
}

#[tokio::test]
async fn sighup_reloads_the_keys_at_once() {
    let file = KeysFile::new();
    let (old_key, old_kid) = new_key();
    file.write(&[&old_key]);
    // An interval far longer than the test: only the signal can explain a reload.
    let settings = settings_with_file(&file, 3600);
    let endpoints = Endpoints::dynalite_only().await;
    let auth = AuthProcess::start(settings, &endpoints, AUTH_ENTRY).await;
    let (new_key, new_kid) = new_key();
    file.write(&[&old_key, &new_key]);

    auth.hang_up();

    let both = (vec![old_kid, new_kid.clone()], new_kid);
    assert!(
        publishes(auth.addr, &both).await,
        "SIGHUP made the service read the file"
    );
}
