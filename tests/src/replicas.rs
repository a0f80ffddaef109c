//! The scale-out story: two auth-service and two data-service replicas on one DynamoDB, and
//! what they must do together, step by step, with calls spread over both replicas of each
//! service. Each step takes the fleet's addresses and, where it acts on a replica (reload its
//! keys, kill it, bring it back), a [`Control`]: tests/tests/replicas.rs runs the steps on
//! in-process services, `scripts/replicas` (through the `scaleout` binary) on processes.
//! Every step returns the sentence it proved, or what went wrong.

use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use auth_service::keys;
use common::proto::{
    auth::v1::{ListSigningKeysRequest, RegisterRequest, auth_service_client::AuthServiceClient},
    data::v1::{GetItemRequest, PutItemRequest, data_service_client::DataServiceClient},
};
use secrecy::ExposeSecret;
use tonic::{Code, transport::Channel};

use crate::{
    auth::{kid_of, refresh, try_login, with_bearer},
    data::string,
    eventually,
};

/// How soon every data replica must refuse the tokens of an ended session: the revocation
/// feed's target (DESIGN.md section 8: p99 within 2 s).
pub const PROPAGATION: Duration = Duration::from_secs(2);

/// How long a replica may take to publish a reloaded key or to come back.
const SETTLE: Duration = Duration::from_secs(10);

/// Where the replicas listen. Index 0 is replica A, 1 is replica B.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The auth-service replicas' gRPC addresses.
    pub auth: [SocketAddr; 2],
    /// Their metrics endpoints.
    pub auth_metrics: [SocketAddr; 2],
    /// The data-service replicas, each given both auth addresses as `--auth-url`.
    pub data: [SocketAddr; 2],
    /// The signing-keys file both auth replicas read.
    pub keys_file: PathBuf,
    /// The auth replicas' `--lockout-threshold`.
    pub lockout_threshold: u32,
}

/// What a step may do to the replicas.
pub trait Control {
    /// Makes the running auth replicas read the keys file (or lets them notice it changed).
    fn reload_keys(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Kills auth replica `i` the hard way: its listener and connections vanish.
    fn kill_auth(&self, i: usize) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Brings auth replica `i` back on its address.
    fn revive_auth(&self, i: usize) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl Fleet {
    async fn auth_client(&self, i: usize) -> anyhow::Result<AuthServiceClient<Channel>> {
        let url = format!("http://{}", self.auth[i]);
        AuthServiceClient::connect(url.clone())
            .await
            .with_context(|| format!("connecting to auth replica {url}"))
    }

    async fn data_clients(&self) -> anyhow::Result<[DataServiceClient<Channel>; 2]> {
        let connect = |addr: SocketAddr| async move {
            DataServiceClient::connect(format!("http://{addr}"))
                .await
                .with_context(|| format!("connecting to data replica {addr}"))
        };
        Ok([connect(self.data[0]).await?, connect(self.data[1]).await?])
    }
}

/// Registers a new user on `auth` and logs in there: (username, password, access token).
async fn new_user(
    auth: &mut AuthServiceClient<Channel>,
) -> anyhow::Result<(String, String, String)> {
    let username = format!("user-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    auth.register(RegisterRequest {
        username: username.clone(),
        password: password.clone(),
    })
    .await
    .context("Register")?;
    let token = try_login(auth, &username, &password)
        .await
        .context("Login")?
        .access_token;
    Ok((username, password, token))
}

/// GetItem of a key nobody wrote: NOT_FOUND for a live token, UNAUTHENTICATED for a dead one.
pub async fn probe(data: &mut DataServiceClient<Channel>, token: &str) -> Code {
    let request = with_bearer(
        GetItemRequest {
            key: "never-written".into(),
            ..Default::default()
        },
        token,
    );
    match data.get_item(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// A PutItem as the holder of `token`: needs the token's key and the user's credentials.
async fn put(data: &mut DataServiceClient<Channel>, token: &str) -> anyhow::Result<()> {
    let request = with_bearer(
        PutItemRequest {
            key: "notes/1".into(),
            attributes: [("text".to_owned(), string("hello"))].into(),
            ..Default::default()
        },
        token,
    );
    data.put_item(request).await.context("PutItem")?;
    Ok(())
}

/// Step 1: a refresh token rotated on A and then presented again on B ends the session: the
/// reused and the current refresh token stop working, and both data replicas refuse every
/// access token of the session within [`PROPAGATION`].
pub async fn reuse_on_the_other_replica_ends_the_session(fleet: &Fleet) -> anyhow::Result<String> {
    let (mut a, mut b) = (fleet.auth_client(0).await?, fleet.auth_client(1).await?);
    let mut data = fleet.data_clients().await?;
    let (username, password, _) = new_user(&mut a).await?;
    let first = try_login(&mut a, &username, &password).await?;
    let second = refresh(&mut a, &first.refresh_token)
        .await
        .context("Refresh on A")?;
    // Rotation itself works across replicas; and now the first token is two rotations old,
    // past any retry grace.
    let third = refresh(&mut b, &second.refresh_token)
        .await
        .context("Refresh on B")?;
    for replica in &mut data {
        ensure!(
            probe(replica, &third.access_token).await == Code::NotFound,
            "a live token refused"
        );
    }

    let reused = refresh(&mut b, &first.refresh_token).await;
    ensure!(
        reused
            .as_ref()
            .is_err_and(|s| s.code() == Code::Unauthenticated),
        "reusing a rotated refresh token on B answered {reused:?}"
    );
    for (name, client) in [("A", &mut a), ("B", &mut b)] {
        let current = refresh(client, &third.refresh_token).await;
        ensure!(
            current
                .as_ref()
                .is_err_and(|s| s.code() == Code::Unauthenticated),
            "the session's current refresh token still works on {name}: {current:?}"
        );
    }
    let tokens = [
        &first.access_token,
        &second.access_token,
        &third.access_token,
    ];
    for (i, replica) in data.iter_mut().enumerate() {
        for token in tokens {
            refused_within(replica, token, PROPAGATION)
                .await
                .with_context(|| format!("data replica {}", fleet.data[i]))?;
        }
    }
    Ok(format!(
        "a refresh token rotated on auth A and reused on auth B ended the session: both refresh \
         tokens refused, its 3 access tokens refused by both data replicas within {PROPAGATION:?}"
    ))
}

/// Asks `data` every 50 ms until it refuses `token` (UNAUTHENTICATED), for at most `limit`.
async fn refused_within(
    data: &mut DataServiceClient<Channel>,
    token: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let code = probe(data, token).await;
        if code == Code::Unauthenticated {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("a token of the ended session still answers {code:?} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Step 2: failed logins alternating between A and B lock the name at the threshold, on both.
pub async fn lockout_counts_across_replicas(fleet: &Fleet) -> anyhow::Result<String> {
    let mut auth = [fleet.auth_client(0).await?, fleet.auth_client(1).await?];
    let (username, password, _) = new_user(&mut auth[0]).await?;
    let threshold = fleet.lockout_threshold;
    ensure!(threshold > 0, "the lockout is off on these replicas");
    for attempt in 0..threshold as usize {
        let failed = try_login(&mut auth[attempt % 2], &username, "not the password").await;
        ensure!(
            failed
                .as_ref()
                .is_err_and(|s| s.code() == Code::Unauthenticated),
            "failure {} answered {failed:?}",
            attempt + 1
        );
    }
    for (name, client) in ["A", "B"].into_iter().zip(&mut auth) {
        let locked = try_login(client, &username, &password).await;
        ensure!(
            locked
                .as_ref()
                .is_err_and(|s| s.code() == Code::ResourceExhausted),
            "after {threshold} failures spread over A and B, the right password on {name} \
             answered {locked:?}"
        );
    }
    Ok(format!(
        "{threshold} failed logins alternating between auth A and B locked the name on both \
         (RESOURCE_EXHAUSTED even for the right password)"
    ))
}

/// Step 3: a key added to the keys file and reloaded signs on every live auth replica, and
/// both data replicas accept its tokens (they fetch it on the unknown kid).
pub async fn added_key_is_honoured_by_both_data_replicas(
    fleet: &Fleet,
    control: &impl Control,
) -> anyhow::Result<String> {
    let kid = add_key(fleet, control, &[0, 1]).await?;
    let mut data = fleet.data_clients().await?;
    for i in 0..2 {
        let (_, _, token) = new_user(&mut fleet.auth_client(i).await?).await?;
        ensure!(
            kid_of(&token) == kid,
            "auth replica {i} signs with another key"
        );
        for replica in &mut data {
            put(replica, &token).await?;
        }
    }
    Ok(format!(
        "a signing key added to the ring and reloaded ({kid}) signed on auth A and B, and both \
         data replicas accepted its tokens"
    ))
}

/// Adds a new key to the fleet's keys file, reloads, and waits until auth replicas `live`
/// publish it as the active key; returns its kid.
async fn add_key(fleet: &Fleet, control: &impl Control, live: &[usize]) -> anyhow::Result<String> {
    let (key, kid) = keys::generate_paserk()?;
    append_line(&fleet.keys_file, key.expose_secret())?;
    control.reload_keys().await?;
    for &i in live {
        let client = fleet.auth_client(i).await?;
        let active = eventually(SETTLE, || {
            let (mut client, kid) = (client.clone(), kid.clone());
            async move {
                client
                    .list_signing_keys(ListSigningKeysRequest {})
                    .await
                    .is_ok_and(|listed| {
                        listed
                            .into_inner()
                            .keys
                            .iter()
                            .any(|k| k.active && k.kid == kid)
                    })
            }
        });
        ensure!(
            active.await,
            "auth replica {i} did not publish the added key within {SETTLE:?}"
        );
    }
    Ok(kid)
}

/// Appends `line` to the file at `path` by writing a whole new file and renaming it over the
/// old one, so a reload never reads half a key.
fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut content =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if !content.is_empty() && !content.ends_with('\n') {
        content.push('\n');
    }
    content.push_str(line);
    content.push('\n');
    let staged = path.with_extension("new");
    let mut file =
        std::fs::File::create(&staged).with_context(|| format!("writing {}", staged.display()))?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&staged, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Step 4: with auth A killed, calls that need the auth-service keep succeeding through B on
/// both data replicas, at the first try: tokens of a key added just before (the data
/// replicas must fetch it) and GetCredentials for new users, signed in just before. Each
/// data replica's first two calls to the auth-service come right after the kill, one of them
/// aimed at A by the rotation. Once A is back, the data replicas send it
/// calls again.
pub async fn auth_replica_death_is_survived(
    fleet: &Fleet,
    control: &impl Control,
    users: usize,
) -> anyhow::Result<String> {
    // Both publish the key; the data replicas learn it only when a token names it.
    let kid = add_key(fleet, control, &[0, 1]).await?;
    let mut b = fleet.auth_client(1).await?;
    let mut tokens = Vec::with_capacity(users);
    for _ in 0..users {
        let (_, _, token) = new_user(&mut b).await?;
        ensure!(kid_of(&token) == kid, "auth B signs with another key");
        tokens.push(token);
    }
    let mut data = fleet.data_clients().await?;
    // The calls follow the kill at once, before any health check can notice it.
    control.kill_auth(0).await?;
    for token in &tokens {
        for (i, replica) in data.iter_mut().enumerate() {
            put(replica, token)
                .await
                .with_context(|| format!("data replica {} with auth A dead", fleet.data[i]))?;
        }
    }

    control.revive_auth(0).await?;
    let before = assume_role_calls(fleet.auth_metrics[0]).await?;
    // A is back in rotation once a data replica's health check of it answers: from then on,
    // new users' GetCredentials land on it too (each first one costs A an AssumeRole).
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (_, _, token) = new_user(&mut b).await?;
        for replica in &mut data {
            put(replica, &token)
                .await
                .context("after auth A came back")?;
        }
        if assume_role_calls(fleet.auth_metrics[0]).await? > before {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "auth A got no GetCredentials within {SETTLE:?} of coming back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(format!(
        "with auth A killed, {users} new users' first PutItem on both data replicas succeeded at \
         the first try through auth B (fetching a key added just before, and GetCredentials); after A came \
         back, the data replicas sent it GetCredentials again"
    ))
}

/// The auth replica's AssumeRole calls so far (its `dynagate_sts_assume_role_calls_total`).
async fn assume_role_calls(metrics: SocketAddr) -> anyhow::Result<f64> {
    let url = format!("http://{metrics}/metrics");
    let text = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .and_then(|mut response| response.body_mut().read_to_string())
            .with_context(|| format!("GET {url}"))
    })
    .await??;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("dynagate_sts_assume_role_calls_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}
