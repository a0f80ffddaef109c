//! Reloads the signing keys without a restart: on SIGHUP, and whenever the keys file's content
//! changes (checked every interval), so rotation is: add a key, reload (it is published at
//! once and signs from its activation), wait until then plus one access-token lifetime, remove
//! the old key, reload. A file that does not parse leaves the running keys in place and is
//! reported (logged, and counted as `refused`), never half-applied.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{metrics::LabeledCounter, server::BackgroundTask};
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};

use crate::{keys::KeyRing, tokens::TokenIssuer};

/// Watches `path` and installs its keys into `tokens` when SIGHUP arrives or the file's
/// content differs from what was last loaded (an unchanged file is not reloaded); counts each
/// reload in `reloads` by outcome: `applied` (the file's keys were installed) or `refused`
/// (it did not parse).
pub fn spawn(
    path: PathBuf,
    tokens: TokenIssuer,
    interval: Duration,
    reloads: LabeledCounter,
) -> anyhow::Result<BackgroundTask> {
    let mut hangups = signal(SignalKind::hangup())?;
    let mut loaded = fingerprint(&path);
    let handle = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                _ = hangups.recv() => true,
                _ = ticker.tick() => false,
            };
            let now = fingerprint(&path);
            if asked || now != loaded {
                // Remembered even when the file is invalid: one error per bad edit, not one
                // per interval until it is fixed.
                loaded = now;
                let outcome = if reload(&path, &tokens, asked) {
                    "applied"
                } else {
                    "refused"
                };
                reloads.increment(outcome);
            }
        }
    });
    Ok(BackgroundTask::from(handle))
}

/// Hash of the file's bytes (`None` while it cannot be read).
fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(bytes).into())
}

/// Installs the keys of `path`: false (and logged) if the file does not parse.
fn reload(path: &Path, tokens: &TokenIssuer, asked: bool) -> bool {
    let ring = match KeyRing::load(path) {
        Ok(ring) => ring,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "signing keys not reloaded: keeping the current keys"
            );
            return false;
        }
    };
    let before = tokens.ring();
    let old = before.kids();
    let removed: Vec<&str> = old
        .iter()
        .filter(|kid| !ring.kids().contains(kid))
        .copied()
        .collect();
    tokens.replace_ring(ring);
    let installed = tokens.ring();
    // Each added key with the time it may start signing (published at once).
    let added: Vec<String> = installed
        .keys()
        .iter()
        .filter(|key| !old.contains(&key.kid.as_str()))
        .map(|key| match key.activates_at() {
            Some(at) => format!("{} signs from {at}", key.kid),
            None => key.kid.clone(),
        })
        .collect();
    tracing::info!(
        signal = asked,
        active = %tokens.signer(&installed).kid,
        ?added,
        ?removed,
        "signing keys reloaded"
    );
    true
}
