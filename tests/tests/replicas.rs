//! Two replicas of each service on one dynalite (and moto for STS): the scale-out story of
//! tests/src/replicas.rs run on in-process services. Each auth replica sits behind a
//! [`Gate`], so killing one closes its listener and every connection to it, as `kill -9`
//! does; `scripts/replicas` runs the same steps on processes.

use std::path::PathBuf;

use auth_service::keys;
use secrecy::ExposeSecret;
use tests::{
    auth::{Endpoints, TestAuth},
    data::TestData,
    gate::Gate,
    replicas::{self, Control, Fleet},
    unique_prefix,
};

/// In-process replicas, each auth replica behind a gate.
struct InProcess {
    gates: [Gate; 2],
    keys_file: PathBuf,
    // Kept running for the test's length.
    _auth: [TestAuth; 2],
    _data: [TestData; 2],
}

impl Control for InProcess {
    async fn reload_keys(&self) -> anyhow::Result<()> {
        // The replicas check the file every second (`signing_keys_reload_secs = 1`) and
        // reload it when it changed; a SIGHUP would reach every test in this process.
        Ok(())
    }

    async fn kill_auth(&self, i: usize) -> anyhow::Result<()> {
        self.gates[i].cut();
        Ok(())
    }

    async fn revive_auth(&self, i: usize) -> anyhow::Result<()> {
        self.gates[i].restore().await;
        Ok(())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.keys_file);
    }
}

/// Two auth replicas reading one keys file, each behind a gate, and two data replicas given
/// both gates as `--auth-url`.
async fn spawn() -> (Fleet, InProcess) {
    let endpoints = Endpoints::shared().await;
    let items_table = format!("{}-items", unique_prefix());
    let keys_file = std::env::temp_dir().join(format!("dynagate-keys-{}", unique_prefix()));
    let (key, _) = keys::generate_paserk().expect("generate a key");
    std::fs::write(&keys_file, format!("{}\n", key.expose_secret())).expect("write the keys");
    let mut settings = TestAuth::settings_for_items(&items_table);
    settings.signing_keys = None;
    settings.signing_keys_file = Some(keys_file.clone());
    settings.signing_keys_reload_secs = 1;
    // An added key is published for 2 s before it signs (the story waits up to 10 s for it
    // to sign): the rollout rule at a test's pace.
    settings.signing_key_activation_secs = 2;
    let first = TestAuth::spawn_with(settings, endpoints.clone()).await;
    let second = first.spawn_replica().await;
    let gates = [Gate::open(first.addr).await, Gate::open(second.addr).await];

    let mut template = TestData::settings(&items_table, gates[0].addr());
    template.auth_url = gates
        .iter()
        .map(|g| format!("http://{}", g.addr()))
        .collect();
    // The story adds two keys within a second; the default (1 s) would refuse the second
    // key's first token on a replica that fetched the first one just before.
    template.unknown_kid_refresh_ms = 100;
    template.auth_probe_ms = 200;
    let data = [
        TestData::spawn_with(template.clone(), &endpoints.dynamodb, true).await,
        TestData::spawn_with(template, &endpoints.dynamodb, true).await,
    ];
    let fleet = Fleet {
        auth: [gates[0].addr(), gates[1].addr()],
        auth_metrics: [first.metrics_addr, second.metrics_addr],
        data: [data[0].addr, data[1].addr],
        keys_file: keys_file.clone(),
        lockout_threshold: first.settings.lockout.threshold,
    };
    let control = InProcess {
        gates,
        keys_file,
        _auth: [first, second],
        _data: data,
    };
    (fleet, control)
}

#[tokio::test]
async fn a_refresh_token_reused_on_the_other_auth_replica_ends_the_session_everywhere() {
    let (fleet, _control) = spawn().await;

    let proved = replicas::reuse_on_the_other_replica_ends_the_session(&fleet).await;

    proved.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn failed_logins_spread_over_both_auth_replicas_lock_the_name() {
    let (fleet, _control) = spawn().await;

    let proved = replicas::lockout_counts_across_replicas(&fleet).await;

    proved.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn a_key_added_and_reloaded_is_honoured_by_both_data_replicas() {
    let (fleet, control) = spawn().await;

    let proved = replicas::added_key_is_honoured_by_both_data_replicas(&fleet, &control).await;

    proved.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn data_replicas_survive_an_auth_replica_dying_and_use_it_again_when_it_returns() {
    let (fleet, control) = spawn().await;

    let proved = replicas::auth_replica_death_is_survived(&fleet, &control, 4).await;

    proved.unwrap_or_else(|e| panic!("{e:#}"));
}
