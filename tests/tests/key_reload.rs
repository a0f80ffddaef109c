//! Key rotation without a restart: the auth-service re-reads its keys file when it changes and
//! on SIGHUP, publishes and signs with the new ring, stops accepting removed keys, and keeps its
//! keys when the file turns out to be broken.

use std::{path::PathBuf, time::Duration};

use auth_service::keys;
use common::proto::auth::v1::{ListSessionsRequest, ListSigningKeysRequest};
use secrecy::ExposeSecret;
use tests::{
    auth::{Endpoints, TestAuth, TestUser, kid_of, with_bearer},
    eventually,
};
use tonic::Code;

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

async fn spawn_with_file(file: &KeysFile, reload_secs: u64) -> TestAuth {
    let mut settings = TestAuth::settings();
    settings.signing_keys = None;
    settings.signing_keys_file = Some(file.0.clone());
    settings.signing_keys_reload_secs = reload_secs;
    // Reload mechanics only: an added key signs at once (tests/tests/key_rollout.rs holds
    // keys back).
    settings.signing_key_activation_secs = 0;
    TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await
}

/// The published kids, oldest first, and the active one.
async fn published(auth: &TestAuth) -> (Vec<String>, String) {
    let keys = auth
        .client()
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
    let auth = spawn_with_file(&file, 1).await;
    let mut client = auth.client().await;
    let user = TestUser::register(&mut client).await;
    let old_token = user.login(&mut client).await.access_token;
    assert_eq!(kid_of(&old_token), old_kid);

    // Add a key: it is published and signs; tokens of the old key still verify.
    let (new_key, new_kid) = new_key();
    file.write(&[&old_key, &new_key]);
    let both = (vec![old_kid.clone(), new_kid.clone()], new_kid.clone());
    let rotated = eventually(Duration::from_secs(10), || async {
        published(&auth).await == both
    });
    assert!(rotated.await, "the added key is published and active");
    let new_token = user.login(&mut client).await.access_token;
    assert_eq!(kid_of(&new_token), new_kid);
    assert_eq!(bearer_code(&auth, &old_token).await, Code::Ok);

    // Remove the old key: its tokens stop verifying, the new key's keep working.
    file.write(&[&new_key]);
    let only_new = (vec![new_kid.clone()], new_kid.clone());
    let withdrawn = eventually(Duration::from_secs(10), || async {
        published(&auth).await == only_new
    });
    assert!(withdrawn.await, "the removed key is no longer published");
    assert_eq!(bearer_code(&auth, &old_token).await, Code::Unauthenticated);
    assert_eq!(bearer_code(&auth, &new_token).await, Code::Ok);

    // A broken file changes nothing (the test's interval is 1 s: wait out two checks).
    file.write(&["k4.secret.not-a-key"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(published(&auth).await, only_new);
    let after = user.login(&mut client).await.access_token;
    assert_eq!(kid_of(&after), new_kid);
}

#[tokio::test]
async fn sighup_reloads_the_keys_at_once() {
    let file = KeysFile::new();
    let (old_key, old_kid) = new_key();
    file.write(&[&old_key]);
    // An interval far longer than the test: only the signal can explain a reload.
    let auth = spawn_with_file(&file, 3600).await;
    let (new_key, new_kid) = new_key();
    file.write(&[&old_key, &new_key]);

    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());

    let both = (vec![old_kid, new_kid.clone()], new_kid);
    let reloaded = eventually(Duration::from_secs(10), || async {
        published(&auth).await == both
    });
    assert!(reloaded.await, "SIGHUP made the service read the file");
}
