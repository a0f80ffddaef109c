//! A signing key rolled across two auth replicas with a data-service watching both, the way
//! an operator does it: append the new key, let it activate, remove the old one. Replica B
//! lags (it reads the keys file only on SIGHUP), and the replicas' activation clock is a
//! `ManualClock` the test moves. Every honest token keeps working everywhere throughout: on
//! the data-service and on both replicas' bearer calls, with no cache wipe on the way; the old
//! key stops verifying once no replica publishes it. And a replica started mid-rollout goes by
//! the key's `not-before` stamp, not by its start.

use std::{path::PathBuf, sync::Arc, time::Duration};

use auth_service::{config::Settings, keys};
use common::{
    clock::{Clock, ManualClock},
    proto::auth::v1::{ListSessionsRequest, ListSigningKeysRequest},
};
use secrecy::{ExposeSecret, SecretString};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, kid_of, with_bearer},
    data::TestData,
    eventually,
    replicas::probe,
    unique_prefix,
};
use tonic::Code;

/// Seconds a reloaded key is held back (on the manual clock).
const ACTIVATION: u64 = 60;

/// A keys file of its own in the temporary directory.
struct KeysFile(PathBuf);

impl KeysFile {
    fn new() -> Self {
        let name = format!("dynagate-rollout-{}", uuid::Uuid::new_v4());
        Self(std::env::temp_dir().join(name))
    }

    /// Writes these lines (keys, maybe stamped), oldest first, replacing the file at once.
    fn write(&self, lines: &[&str]) {
        let staged = self.0.with_extension("new");
        std::fs::write(&staged, lines.join("\n")).expect("write the keys file");
        std::fs::rename(&staged, &self.0).expect("replace the keys file");
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

/// Sends SIGHUP to this process: every auth replica in it re-reads its keys file.
fn hang_up() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// The kids `auth` publishes, and the active one.
async fn published(auth: &TestAuth) -> (Vec<String>, String) {
    let listed = auth
        .client()
        .await
        .list_signing_keys(ListSigningKeysRequest {})
        .await
        .expect("ListSigningKeys")
        .into_inner()
        .keys;
    let active = listed.iter().find(|k| k.active).map(|k| k.kid.clone());
    let kids = listed.into_iter().map(|k| k.kid).collect();
    (kids, active.unwrap_or_default())
}

/// Waits until `auth` publishes exactly `kids` with `active` signing.
async fn until_published(auth: &TestAuth, kids: &[&str], active: &str) {
    let want = (
        kids.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        active.to_owned(),
    );
    let seen = eventually(Duration::from_secs(10), || async {
        published(auth).await == want
    });
    assert!(seen.await, "{} never published {want:?}", auth.addr);
}

/// Two auth replicas on one keys file and one manual clock, a data-service on both.
struct Rollout {
    file: KeysFile,
    clock: Arc<ManualClock>,
    a: TestAuth,
    b: TestAuth,
    data: TestData,
    user: TestUser,
    /// Tokens an honest client holds now: each must work everywhere.
    honest: Vec<String>,
}

impl Rollout {
    async fn start(first_key: &str) -> Self {
        let file = KeysFile::new();
        file.write(&[first_key]);
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let items_table = format!("{}-items", unique_prefix());
        let mut settings = TestAuth::settings_for_items(&items_table);
        settings.signing_keys = None;
        settings.signing_keys_file = Some(file.0.clone());
        settings.signing_keys_reload_secs = 1;
        settings.signing_key_activation_secs = ACTIVATION;
        let endpoints = Endpoints::shared().await;
        let a = spawn(settings.clone(), &endpoints, &clock).await;
        // B notices a changed file only on SIGHUP: the replica that lags.
        settings.signing_keys_reload_secs = 3600;
        let b = spawn(settings, &endpoints, &clock).await;

        let mut data_settings = TestData::settings(&items_table, a.addr);
        data_settings.auth_url = vec![format!("http://{}", a.addr), format!("http://{}", b.addr)];
        data_settings.key_refresh_secs = 1;
        data_settings.key_withdrawal_grace_secs = 3;
        let data = TestData::spawn_with(data_settings, &endpoints.dynamodb, true).await;
        let user = TestUser::register(&mut a.client().await).await;
        Self {
            file,
            clock,
            a,
            b,
            data,
            user,
            honest: Vec::new(),
        }
    }

    /// Logs in on `auth`; the token joins the honest ones. Returns its kid.
    async fn login(&mut self, on_b: bool) -> String {
        let auth = if on_b { &self.b } else { &self.a };
        let token = self.user.login(&mut auth.client().await).await.access_token;
        let kid = kid_of(&token);
        self.honest.push(token);
        kid
    }

    /// Every honest token on the data-service and on both replicas' bearer calls: the calls
    /// that did not get through, by where and what.
    async fn refusals(&self) -> Vec<String> {
        let mut data = self.data.client().await;
        let replicas = [("A", self.a.client().await), ("B", self.b.client().await)];
        let mut refused = Vec::new();
        for (i, token) in self.honest.iter().enumerate() {
            let code = probe(&mut data, token).await;
            if code != Code::NotFound {
                let kid = kid_of(token);
                refused.push(format!("token {i} ({kid}) on the data-service: {code:?}"));
            }
            for (name, auth) in &replicas {
                let request = with_bearer(ListSessionsRequest {}, token);
                if let Err(status) = auth.clone().list_sessions(request).await {
                    refused.push(format!("token {i} on auth {name}: {:?}", status.code()));
                }
            }
        }
        refused
    }

    /// Keeps checking the honest tokens while the data-service refreshes its keys from both
    /// replicas a few times (one refresh asks each replica once).
    async fn hold(&self, what: &str) {
        let until = self.data.metrics.key_refreshes.get() + 2 * 4;
        loop {
            let refused = self.refusals().await;
            assert!(refused.is_empty(), "{what}: {refused:#?}");
            if self.data.metrics.key_refreshes.get() >= until {
                return;
            }
        }
    }

    fn advance_to(&self, at: time::OffsetDateTime) {
        self.clock.set(at);
    }
}

async fn spawn(settings: Settings, endpoints: &Endpoints, clock: &Arc<ManualClock>) -> TestAuth {
    TestAuth::spawn_with_clock(settings, endpoints.clone(), Arc::clone(clock) as _).await
}

#[tokio::test]
async fn a_key_rolled_across_lagging_replicas_never_refuses_an_honest_token() {
    let (old, old_kid) = new_key();
    let (new, new_kid) = new_key();
    let mut r = Rollout::start(&old).await;
    assert_eq!(r.login(false).await, old_kid);
    assert_eq!(r.login(true).await, old_kid);
    r.hold("before the rollout").await;
    let metrics = Arc::clone(&r.data.metrics);
    let valid = || metrics.token_verifications.count("valid");
    let verified_before = valid();

    // Append the new key: A publishes it at once but holds it back; B has not read it.
    let t0 = r.clock.now();
    r.file.write(&[&old, &new]);
    until_published(&r.a, &[&old_kid, &new_kid], &old_kid).await;
    assert_eq!(published(&r.b).await.0, vec![old_kid.clone()], "B lags");
    assert_eq!(r.login(false).await, old_kid, "A holds the new key back");
    r.hold("A publishes the new key, B does not").await;

    // B reads the file 20 s later: it holds the key back until then plus the activation.
    r.advance_to(t0 + Duration::from_secs(20));
    hang_up();
    until_published(&r.b, &[&old_kid, &new_kid], &old_kid).await;
    r.hold("both publish the new key, neither signs with it")
        .await;

    // A's activation: A signs with the new key, B still with the old one.
    r.advance_to(t0 + Duration::from_secs(ACTIVATION));
    assert_eq!(r.login(false).await, new_kid, "A activated");
    assert_eq!(r.login(true).await, old_kid, "B not yet");
    r.hold("A signs with the new key, B with the old").await;

    r.advance_to(t0 + Duration::from_secs(20 + ACTIVATION));
    assert_eq!(r.login(true).await, new_kid, "B activated");
    r.hold("both sign with the new key").await;
    let new_tokens = r.honest.iter().filter(|t| kid_of(t) == new_kid).count();
    assert_eq!(
        valid() - verified_before,
        r.honest.len() as u64 - 2,
        "each token after the first two verified once: no key flapped, no cache was wiped \
         ({new_tokens} of the new key)"
    );

    // One token lifetime later the old key's tokens have expired: the operator removes it.
    // A drops it at once, B only on SIGHUP; the new key's tokens work throughout.
    let old_token = r.honest.remove(0);
    r.honest.retain(|token| kid_of(token) == new_kid);
    r.file.write(&[&new]);
    until_published(&r.a, &[&new_kid], &new_kid).await;
    r.hold("A has dropped the old key, B still publishes it")
        .await;
    let mut data = r.data.client().await;
    assert_eq!(
        probe(&mut data, &old_token).await,
        Code::NotFound,
        "B still lists it"
    );
    hang_up();
    until_published(&r.b, &[&new_kid], &new_kid).await;
    let withdrawn = eventually(Duration::from_secs(20), || {
        let (mut data, token) = (data.clone(), old_token.clone());
        async move { probe(&mut data, &token).await == Code::Unauthenticated }
    });
    assert!(
        withdrawn.await,
        "the data-service withdraws a key no replica publishes"
    );
    let refused = r.refusals().await;
    assert!(refused.is_empty(), "after the rollout: {refused:#?}");
}

#[tokio::test]
async fn a_replica_started_mid_rollout_goes_by_the_keys_stamp() {
    let (old, old_kid) = new_key();
    let r = Rollout::start(&old).await;
    let (new, new_kid) = new_key();
    let not_before = r.clock.now() + Duration::from_secs(ACTIVATION);
    let stamped = keys::stamped_line(&SecretString::from(new), not_before).expect("a stamped line");
    r.file.write(&[&old, stamped.expose_secret()]);
    until_published(&r.a, &[&old_kid, &new_kid], &old_kid).await;

    // A replica starting now reads a file with the new key in it: it publishes the key but
    // signs with the old one until the stamp, as the running replicas do.
    let late = spawn(r.a.settings.clone(), &r.a.endpoints, &r.clock).await;
    until_published(&late, &[&old_kid, &new_kid], &old_kid).await;
    let mut client = late.client().await;
    assert_eq!(
        kid_of(&r.user.login(&mut client).await.access_token),
        old_kid
    );

    r.advance_to(not_before);
    assert_eq!(
        kid_of(&r.user.login(&mut client).await.access_token),
        new_kid
    );
    // A loaded the key through a reload at the same clock time: it activates with the stamp.
    until_published(&r.a, &[&old_kid, &new_kid], &new_kid).await;
}
