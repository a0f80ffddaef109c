//! The local stack in release mode, every part a process of its own: dynalite (DynamoDB) and
//! moto (STS) from `.local/bin`, then the auth-service and the data-service binaries on free
//! ports; and the bench user whose item, query items and vended credentials the loads use.

use std::path::Path;

use anyhow::{Context, ensure};
use common::proto::{
    auth::v1::{
        GetCredentialsRequest, GetCredentialsResponse, auth_service_client::AuthServiceClient,
    },
    data::v1::{PutItemRequest, data_service_client::DataServiceClient},
};
use tests::{
    auth::{TestUser, with_bearer},
    data::string,
    emulators::{Emulator, Kind},
};
use tonic::transport::Channel;

use tests::process::{ServiceProcess as Service, auth_tables_env, aws_env, owned_env};

use crate::drive::{DATA_SERVICE, GET_KEY, QUERY_LIMIT, QUERY_PREFIX};

/// The emulators and both services.
pub struct Stack {
    /// DynamoDB.
    pub dynalite: Emulator,
    /// STS.
    pub moto: Emulator,
    /// The auth-service process.
    pub auth: Service,
    /// The data-service process.
    pub data: Service,
    /// The items table.
    pub items_table: String,
}

impl Stack {
    /// Starts everything, the services from `bin_dir` with `workers` hashing threads, with
    /// throttling and the lockout off (every flood comes from one address and repeats
    /// passwords: measure hashing, not the throttle), plus `auth_extra` for the auth-service
    /// (`--auth-env`), and waits until both are SERVING. Each service runs in a session of
    /// its own (`tests::process`), so autogroups weigh them apart as on a real host.
    pub async fn start(
        bin_dir: &Path,
        workers: usize,
        auth_extra: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let dynalite = Emulator::start(Kind::Dynalite, false).await;
        let moto = Emulator::start(Kind::Moto, false).await;
        let prefix = tests::unique_prefix();
        let items_table = format!("{prefix}-items");
        let aws = aws_env(&dynalite.endpoint(), Some(&moto.endpoint()));
        let mut env = aws.clone();
        env.extend(auth_tables_env(&prefix, &items_table));
        env.extend(owned_env(&[
            ("DYNAGATE_HASH_WORKERS", workers.to_string()),
            ("DYNAGATE_THROTTLE_PER_SECOND", "0".to_owned()),
            ("DYNAGATE_LOCKOUT_THRESHOLD", "0".to_owned()),
            // Longer than any run: a token expiring mid-run would fail the loads.
            ("DYNAGATE_ACCESS_TOKEN_TTL_SECS", "7200".to_owned()),
        ]));
        env.extend_from_slice(auth_extra);
        let auth = Service::start_binary(&bin_dir.join("auth-service"), &env)?;
        let serving = tests::wait_serving(auth.addr, "dynagate.auth.v1.AuthService").await;
        ensure!(serving, "the auth-service did not report SERVING");

        let mut data_env = aws;
        data_env.extend(owned_env(&[
            ("DYNAGATE_ITEMS_TABLE", items_table.clone()),
            ("DYNAGATE_AUTH_URL", auth.url()),
            ("DYNAGATE_DEV_EPHEMERAL_PAGE_TOKEN_KEY", "true".to_owned()),
            // The auth-service's 7200 s tokens (above), or every call is refused.
            ("DYNAGATE_MAX_TOKEN_LIFETIME_SECS", "7200".to_owned()),
        ]));
        let data = Service::start_binary(&bin_dir.join("data-service"), &data_env)?;
        let serving = tests::wait_serving(data.addr, DATA_SERVICE).await;
        ensure!(serving, "the data-service did not report SERVING");
        Ok(Self {
            dynalite,
            moto,
            auth,
            data,
            items_table,
        })
    }
}

impl Stack {
    /// Every process of dynalite and of moto: the process groups their watchdog shells lead
    /// (the shell, the emulator, the watcher).
    pub fn emulator_pids(&self) -> Vec<i32> {
        [&self.dynalite, &self.moto]
            .into_iter()
            .filter_map(Emulator::process_group)
            .flat_map(group_members)
            .collect()
    }

    /// dynalite's own process (node, not its watchdog shells), for its CPU time.
    pub fn dynalite_pid(&self) -> anyhow::Result<i32> {
        let group = self
            .dynalite
            .process_group()
            .context("dynalite is not running")?;
        group_members(group)
            .into_iter()
            .find(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
                comm.is_ok_and(|comm| comm.trim_end() != "sh")
            })
            .context("dynalite's process in its watchdog's group")
    }
}

/// The processes of process group `group` (field 5 of `/proc/PID/stat`).
fn group_members(group: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            tools::cpu::stat_fields(&format!("/proc/{pid}/stat"))
                .is_ok_and(|fields| fields.get(2) == Some(&group.to_string()))
        })
        .collect()
}

/// A new connection to `service`.
pub async fn channel(service: &Service) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(service.url())?.connect().await?)
}

/// The user every data-path load acts as.
pub struct BenchUser {
    /// Who.
    pub user: TestUser,
    /// A valid access token.
    pub token: String,
    /// Its temporary credentials from GetCredentials, for the direct-SDK baseline.
    pub vended: GetCredentialsResponse,
}

impl BenchUser {
    /// Registers and logs in a user, writes the item GetItem reads and the items QueryItems
    /// reads, and fetches the user's own credentials.
    pub async fn create(auth: Channel, data: Channel) -> anyhow::Result<Self> {
        let mut auth = AuthServiceClient::new(auth);
        let user = TestUser::register(&mut auth).await;
        let token = user.login(&mut auth).await.access_token;
        let mut data = DataServiceClient::new(data);
        let keys = std::iter::once(GET_KEY.to_owned())
            .chain((0..QUERY_LIMIT * 2).map(|n| format!("{QUERY_PREFIX}{n:03}")));
        for key in keys {
            let request = PutItemRequest {
                key,
                attributes: [("text".to_owned(), string("a small item"))].into(),
                ..Default::default()
            };
            data.put_item(with_bearer(request, &token))
                .await
                .context("PutItem of the bench items")?;
        }
        let vended = auth
            .get_credentials(with_bearer(GetCredentialsRequest {}, &token))
            .await
            .context("GetCredentials")?
            .into_inner();
        Ok(Self {
            user,
            token,
            vended,
        })
    }

    /// What `loadgen drive` needs to act as this user: its token and credentials.
    pub fn driver_env(&self) -> Vec<(String, String)> {
        [
            ("LOADGEN_TOKEN", &self.token),
            ("LOADGEN_AWS_ACCESS_KEY_ID", &self.vended.access_key_id),
            (
                "LOADGEN_AWS_SECRET_ACCESS_KEY",
                &self.vended.secret_access_key,
            ),
            ("LOADGEN_AWS_SESSION_TOKEN", &self.vended.session_token),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.clone()))
        .collect()
    }
}
