//! Helpers for the auth-service: spawn it against an emulator, register users, forge tokens.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use auth_service::{
    config::Settings,
    keys,
    metrics::{DYNAMODB_OPERATIONS, Metrics},
    revocations::Hub,
    startup::{self, Application, AwsClients},
};
use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    clock::{Clock, SystemClock},
    proto::auth::v1::{
        LoginRequest, LoginResponse, RefreshRequest, RefreshResponse, RegisterRequest,
        auth_service_client::AuthServiceClient,
    },
    tokens::{self, TokenVerifier, VerifyingKeys},
};
use pasetors::{
    keys::{Generate, SymmetricKey},
    version4::{PublicToken, V4},
};
use secrecy::SecretString;
use tonic::{Request, Status, transport::Channel};

use crate::{
    RunningService, dynamodb_client,
    emulators::{Emulator, dead_addr},
    ports::HeldPort,
    sts_client, test_aws_settings, unique_prefix,
};

/// Where a test's services find DynamoDB and STS.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// DynamoDB endpoint URL.
    pub dynamodb: String,
    /// STS endpoint URL.
    pub sts: String,
}

impl Endpoints {
    /// The shared dynalite, and an STS address where nothing listens.
    pub async fn dynalite_only() -> Self {
        Self {
            dynamodb: Emulator::shared_dynalite().await.endpoint(),
            sts: format!("http://{}", dead_addr()),
        }
    }

    /// The shared dynalite and the shared moto (STS).
    pub async fn shared() -> Self {
        Self {
            dynamodb: Emulator::shared_dynalite().await.endpoint(),
            sts: Emulator::shared_moto().await.endpoint(),
        }
    }
}

/// A cheap argon2 cost so tests spend their time on behaviour, not hashing.
pub const TEST_ARGON2_MEMORY_KIB: u32 = 256;

/// An auth-service running in this process.
pub struct TestAuth {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its Prometheus metrics are served (`http://{metrics_addr}/metrics`).
    pub metrics_addr: SocketAddr,
    /// Where its admin listener listens, when `--admin-listen` is set (`tests::admin`).
    pub admin_addr: Option<SocketAddr>,
    /// The settings it runs with (its tables, issuer, audience).
    pub settings: Settings,
    /// The signing keys it started with, so tests can forge tokens with chosen claims.
    pub signing_key: SecretString,
    /// A DynamoDB client on the same emulator, to inspect its tables.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The instance's counters.
    pub metrics: Arc<Metrics>,
    /// The instance's revocation hub (its log and open watches).
    pub revocations: Arc<Hub>,
    /// Where it found DynamoDB and STS, for replicas.
    pub endpoints: Endpoints,
    service: RunningService,
    /// Holds `addr` across a [`TestAuth::restart`] (none if it could not be held).
    port: Option<HeldPort>,
}

impl TestAuth {
    /// Test settings: port 0, fresh tables, cheap argon2, a new signing key.
    pub fn settings() -> Settings {
        let prefix = unique_prefix();
        let mut settings = Settings::defaults();
        settings.listen_addr = "127.0.0.1:0".parse().expect("valid address");
        settings.metrics_addr = "127.0.0.1:0".parse().expect("valid address");
        settings.users_table = format!("{prefix}-users");
        settings.sessions_table = format!("{prefix}-sessions");
        settings.lockout.attempts_table = format!("{prefix}-attempts");
        settings.revocations.table = format!("{prefix}-revocations");
        // Quick enough for tests to see another replica's revocations, light on dynalite.
        settings.revocations.poll_ms = 250;
        settings.revocations.heartbeat_ms = 500;
        settings.argon2_memory_kib = TEST_ARGON2_MEMORY_KIB;
        settings.argon2_iterations = 1;
        settings.health_probe_secs = 1;
        settings.signing_keys = Some(keys::generate_paserk().expect("generate a key").0);
        settings.aws = test_aws_settings();
        // Tests of other features log in, and present refused refresh tokens, from one address
        // far faster than any person would; tests/tests/throttle.rs turns both budgets on.
        settings.throttle.throttle_per_second = 0;
        settings.throttle.throttle_failures_per_second = 0;
        settings
    }

    /// Test settings with TOTP on (a fresh key).
    pub fn settings_with_totp() -> Settings {
        let mut settings = Self::settings();
        Self::turn_totp_on(&mut settings);
        settings
    }

    /// Turns TOTP on in `settings` with a fresh key (what `--totp-key-file` gives a service).
    pub fn turn_totp_on(settings: &mut Settings) {
        let key = SymmetricKey::<V4>::generate().expect("a TOTP key");
        settings.mfa.totp_key = Some(SecretString::from(common::tokens::paserk(&key)));
    }

    /// Test settings with credential vending on: a role and an items table in account
    /// 123456789012, one-hour credentials.
    pub fn settings_with_vending() -> Settings {
        let mut settings = Self::settings();
        settings.credentials_role_arn =
            Some("arn:aws:iam::123456789012:role/dynagate-data-access".to_owned());
        settings.items_table_arn = Some(format!(
            "arn:aws:dynamodb:us-east-1:123456789012:table/{}-items",
            unique_prefix()
        ));
        settings
    }

    /// [`TestAuth::settings_with_vending`] for the items table `items_table`, the one a
    /// data-service of the same stack uses.
    pub fn settings_for_items(items_table: &str) -> Settings {
        let mut settings = Self::settings_with_vending();
        settings.items_table_arn = Some(format!(
            "arn:aws:dynamodb:us-east-1:123456789012:table/{items_table}"
        ));
        settings
    }

    /// Spawns the service on the shared dynalite with default test settings (no STS).
    pub async fn spawn() -> Self {
        Self::spawn_with(Self::settings(), Endpoints::dynalite_only().await).await
    }

    /// Spawns the service with `settings`, its tables created on `endpoints.dynamodb`.
    pub async fn spawn_with(settings: Settings, endpoints: Endpoints) -> Self {
        Self::spawn_with_clock(settings, endpoints, Arc::new(SystemClock)).await
    }

    /// [`TestAuth::spawn_with`], its time-dependent rules (lockout, one-time codes) reading
    /// `clock`, so a test moves time (a `common::clock::ManualClock`) instead of sleeping.
    pub async fn spawn_with_clock(
        settings: Settings,
        endpoints: Endpoints,
        clock: Arc<dyn Clock>,
    ) -> Self {
        common::telemetry::init_for_tests();
        let dynamodb = dynamodb_client(&endpoints.dynamodb);
        let endpoints_kept = endpoints.clone();
        let aws = AwsClients {
            dynamodb: dynamodb.clone(),
            sts: sts_client(&endpoints.sts),
        };
        startup::create_tables(&settings, &aws)
            .await
            .expect("create tables");
        // Port 0 becomes a held port (kept in `settings` as given, for replicas and copies).
        let port = hold(settings.listen_addr);
        let mut bound = settings.clone();
        if let Some(port) = &port {
            bound.listen_addr = port.addr();
        }
        let app = Application::build_with_clock(&bound, aws, clock)
            .await
            .expect("build auth-service");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr().expect("a metrics endpoint");
        let admin_addr = app.admin_addr();
        let metrics = app.metrics();
        let revocations = app.revocations();
        let service = RunningService::spawn("auth-service", |stop| app.run_until_stopped(stop));
        let signing_key = match (&settings.signing_keys, &settings.signing_keys_file) {
            (Some(keys), _) => keys.clone(),
            (None, Some(path)) => common::secrets::from_file(path).expect("read the keys file"),
            (None, None) => panic!("test settings carry a key or a keys file"),
        };
        Self {
            addr,
            metrics_addr,
            admin_addr,
            settings,
            signing_key,
            dynamodb,
            metrics,
            revocations,
            endpoints: endpoints_kept,
            service,
            port,
        }
    }

    /// Another replica of this service: same tables and keys, its own port, hub and poller.
    pub async fn spawn_replica(&self) -> Self {
        let mut settings = self.settings.clone();
        settings.listen_addr = "127.0.0.1:0".parse().expect("valid address");
        Self::spawn_with(settings, self.endpoints.clone()).await
    }

    /// A client on a fresh connection.
    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to auth-service")
    }

    /// A channel to the service, for other clients (health, reflection).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to auth-service")
    }

    /// The keys the service publishes, verified kid by kid.
    pub async fn published_keys(&self) -> VerifyingKeys {
        let listed = self
            .client()
            .await
            .list_signing_keys(common::proto::auth::v1::ListSigningKeysRequest {})
            .await
            .expect("ListSigningKeys")
            .into_inner();
        let mut keys = VerifyingKeys::default();
        for key in listed.keys {
            keys.insert_paserk(&key.kid, &key.public_key)
                .expect("published key is valid");
        }
        keys
    }

    /// A verifier with the service's issuer and audience.
    pub fn verifier(&self) -> TokenVerifier {
        let lifetime = std::time::Duration::from_secs(self.settings.access_token_ttl_secs);
        TokenVerifier::new(&self.settings.token_issuer, &self.settings.token_audience)
            .with_max_lifetime(lifetime)
    }

    /// The session of one of the service's access tokens (its `sid` claim).
    pub async fn session_of(&self, access_token: &str) -> String {
        let keys = self.published_keys().await;
        self.verifier()
            .verify(&keys, access_token)
            .expect("a genuine access token")
            .session_id
    }

    /// A session's item as stored (strongly consistent), to check what a call wrote.
    pub async fn session_item(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Option<HashMap<String, AttributeValue>> {
        self.dynamodb
            .get_item()
            .table_name(&self.settings.sessions_table)
            .key("user_id", AttributeValue::S(user_id.to_owned()))
            .key("session_id", AttributeValue::S(session_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem on the sessions table")
            .item
    }

    /// A user's item in the users table as stored (strongly consistent); `None` once erased.
    pub async fn user_item(&self, username: &str) -> Option<HashMap<String, AttributeValue>> {
        self.dynamodb
            .get_item()
            .table_name(&self.settings.users_table)
            .key("username", AttributeValue::S(username.to_lowercase()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem on the users table")
            .item
    }

    /// A number attribute of a user's item (absent attribute: `None`); panics if the user
    /// has no item.
    pub async fn user_number(&self, username: &str, attribute: &str) -> Option<u64> {
        let item = self.user_item(username).await.expect("the user item");
        item.get(attribute)
            .map(|n| n.as_n().expect("a number").parse().expect("a whole number"))
    }

    /// The DynamoDB operations it has sent so far, by operation (its
    /// `dynagate_dynamodb_calls_total`).
    pub fn dynamodb_calls(&self) -> HashMap<&'static str, u64> {
        let counter = &self.metrics.dynamodb_calls;
        DYNAMODB_OPERATIONS
            .iter()
            .map(|operation| (*operation, counter.count(operation)))
            .collect()
    }

    /// The operations sent since `before` (a [`TestAuth::dynamodb_calls`]) among `operations`,
    /// by operation, leaving out those not sent.
    pub fn dynamodb_calls_since(
        &self,
        before: &HashMap<&'static str, u64>,
        operations: &[&str],
    ) -> HashMap<&'static str, u64> {
        self.dynamodb_calls()
            .into_iter()
            .filter(|(operation, _)| operations.contains(operation))
            .map(|(operation, now)| (operation, now - before[operation]))
            .filter(|(_, sent)| *sent > 0)
            .collect()
    }

    /// Whether the username has failed attempts counted in the lockout table.
    pub async fn attempts_counted(&self, username: &str) -> bool {
        let key = auth_service::lockout::key_of(&username.to_lowercase());
        self.dynamodb
            .get_item()
            .table_name(&self.settings.lockout.attempts_table)
            .key("username_hash", AttributeValue::S(key))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem on the attempts table")
            .item
            .is_some()
    }

    /// Signs arbitrary claims with the service's own key and footer: a token that is
    /// cryptographically genuine, so only the claim checks can reject it.
    pub fn forge(&self, claims: &serde_json::Value) -> String {
        let ring = keys::KeyRing::parse(&self.signing_key).expect("key ring");
        let key = ring.signer(time::OffsetDateTime::now_utc());
        PublicToken::sign(
            key.secret(),
            claims.to_string().as_bytes(),
            Some(&key.footer),
            None,
        )
        .expect("sign forged token")
    }

    /// Valid claims for `user_id`, as the service would issue them; tests then break one.
    pub fn claims(&self, user_id: &str) -> serde_json::Value {
        let now = time::OffsetDateTime::now_utc();
        let format = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .expect("format time")
        };
        serde_json::json!({
            "iss": self.settings.token_issuer,
            "aud": self.settings.token_audience,
            "sub": user_id,
            "sid": uuid::Uuid::new_v4().to_string(),
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": format(now),
            "nbf": format(now),
            "exp": format(now + time::Duration::minutes(5)),
        })
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(mut self) {
        self.service.stop().await;
    }

    /// Stops the service and starts it again on the same address with `change` applied to
    /// its settings (e.g. a new key ring), like a rolling restart. The address stays held
    /// meanwhile: refused, and nobody else's.
    pub async fn restart(
        mut self,
        endpoints: Endpoints,
        change: impl FnOnce(&mut Settings),
    ) -> Self {
        let held = self.port.take();
        self.service.stop().await;
        let mut settings = self.settings.clone();
        settings.listen_addr = self.addr;
        change(&mut settings);
        let restarted = Self::spawn_with(settings, endpoints).await;
        drop(held);
        restarted
    }

    /// Stops the service gracefully and returns its port, still held, to serve on again.
    pub async fn stop_holding_port(mut self) -> HeldPort {
        let held = self.port.take().expect("a held port");
        self.service.stop().await;
        held
    }
}

/// `addr` held for the service to bind: a fresh port for port 0, else `addr` itself if it is
/// free or only held (a restart's); `None` leaves the bind (and its error) to the service.
fn hold(addr: SocketAddr) -> Option<HeldPort> {
    if addr.port() == 0 {
        return Some(HeldPort::new());
    }
    HeldPort::at(addr).ok()
}

/// A registered user and its credentials.
#[derive(Clone, Debug)]
pub struct TestUser {
    /// The username as registered.
    pub username: String,
    /// The password.
    pub password: String,
    /// The id Register returned.
    pub user_id: String,
}

impl TestUser {
    /// Registers a new user with a unique name.
    pub async fn register(client: &mut AuthServiceClient<Channel>) -> Self {
        let username = format!("user-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let password = format!("pw-{}", uuid::Uuid::new_v4());
        let user_id = client
            .register(RegisterRequest {
                username: username.clone(),
                password: password.clone(),
            })
            .await
            .expect("Register")
            .into_inner()
            .user_id;
        Self {
            username,
            password,
            user_id,
        }
    }

    /// Logs in and returns the session's tokens.
    pub async fn login(&self, client: &mut AuthServiceClient<Channel>) -> LoginResponse {
        try_login(client, &self.username, &self.password)
            .await
            .expect("Login")
    }
}

/// A Login with a username and password only (no second factor), for tests that expect it
/// to fail as often as to succeed.
pub async fn try_login(
    client: &mut AuthServiceClient<Channel>,
    username: &str,
    password: &str,
) -> Result<LoginResponse, Status> {
    client
        .login(LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A Login that can only fail, for floods: in even rounds a wrong password for `username`, in
/// odd ones a malformed name (no table lookup: straight to argon2), with `deadline`.
pub fn hopeless_login(username: &str, round: u64, deadline: Duration) -> Request<LoginRequest> {
    let username = if round.is_multiple_of(2) {
        username.to_owned()
    } else {
        "not a valid name!".to_owned()
    };
    let mut request = Request::new(LoginRequest {
        username,
        password: "not the password".into(),
        ..Default::default()
    });
    request.set_timeout(deadline);
    request
}

/// Refresh with `token`.
pub async fn refresh(
    client: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<RefreshResponse, Status> {
    client
        .refresh(RefreshRequest {
            refresh_token: token.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A request carrying `authorization: Bearer <token>`.
pub fn with_bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// The kid of a token's footer, without verifying it.
pub fn kid_of(token: &str) -> String {
    tokens::parse_untrusted(token).expect("well-formed token").1
}

/// The service names a `grpcurl … list` printed, after checking that they include the
/// auth-service and health (as served with reflection).
pub fn listed_auth_services(listing: &str) -> Vec<&str> {
    let services: Vec<_> = listing.lines().collect();
    assert!(
        services.contains(&"dynagate.auth.v1.AuthService"),
        "{services:?}"
    );
    assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");
    services
}
