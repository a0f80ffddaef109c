//! The auth-service as a real process of its own, so a test can kill it with SIGKILL and start
//! it again on the same port, the way a crash and a supervisor restart look to its clients.
//! The test process holds that port ([`HeldPort`]) from start to drop: while the child is
//! dead, connections are refused and nobody else can take the port.
//!
//! `cargo test` builds no other package's binaries, so the process is this very test binary
//! run again with `--ignored --exact <entry test>`: that test calls [`serve_if_child`], which
//! parses the auth-service's own `Cli` from the environment (every flag's `env =` fallback,
//! and the standard AWS variables) and serves like `auth-service serve` does. The child exits
//! when its stdin (a pipe from the test process) closes, so no run leaves one behind.

use std::{
    io::Read,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use auth_service::{
    config::{Cli, Settings},
    startup::{self, Application, AwsClients},
};
use rustix::process::{Pid, Signal, kill_process};
use secrecy::ExposeSecret;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{auth::Endpoints, dynamodb_client, ports::HeldPort, sts_client};

/// Set (to `1`) in the child's environment: serve instead of returning.
const CHILD_VARIABLE: &str = "DYNAGATE_TEST_AUTH_PROCESS";
/// Longest the process may take to serve (a loaded machine, a test binary to load).
const START_LIMIT: Duration = Duration::from_secs(30);

/// True in a child process [`AuthProcess`] started: where an entry test may arm test-only
/// failpoints before it serves.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_VARIABLE).is_some()
}

/// Serves the auth-service configured by the environment when this process is the child
/// [`AuthProcess`] started, never returning; returns at once otherwise. Call it from an
/// `#[ignore]`d multi-threaded test named as [`AuthProcess::start`] is told.
pub async fn serve_if_child() {
    if std::env::var_os(CHILD_VARIABLE).is_none() {
        return;
    }
    std::thread::spawn(|| {
        // EOF (or an error) means the test process is gone.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    common::telemetry::init_for_tests();
    // As the binary parses them (`common::cli`: every boolean spelling).
    let settings = common::cli::try_parse_from::<Cli, _, _>(["auth-service"])
        .expect("settings from the environment")
        .settings;
    let sdk = common::aws::load_sdk_config(&settings.aws).await;
    let app = Application::build(&settings, AwsClients::from_sdk_config(&sdk))
        .await
        .expect("build auth-service");
    app.run_until_stopped(std::future::pending())
        .await
        .expect("auth-service runs");
    std::process::exit(0);
}

/// An auth-service child process on a loopback port held for it.
pub struct AuthProcess {
    /// Where it listens (kept across restarts).
    pub addr: SocketAddr,
    /// Holds `addr` while the child is dead (and while it lives, with it).
    _port: HeldPort,
    /// Its settings (tables, keys, issuer and audience).
    pub settings: Settings,
    entry_test: &'static str,
    environment: Vec<(&'static str, String)>,
    child: Option<Child>,
}

impl AuthProcess {
    /// Creates `settings`' tables on `endpoints.dynamodb`, then starts the process (this test
    /// binary's test `entry_test`, which calls [`serve_if_child`]) on a port held for it and
    /// waits until it is SERVING.
    pub async fn start(
        mut settings: Settings,
        endpoints: &Endpoints,
        entry_test: &'static str,
    ) -> Self {
        let aws = AwsClients {
            dynamodb: dynamodb_client(&endpoints.dynamodb),
            sts: sts_client(&endpoints.sts),
        };
        startup::create_tables(&settings, &aws)
            .await
            .expect("create tables");
        let port = HeldPort::new();
        settings.listen_addr = port.addr();
        let environment = environment(&settings, endpoints);
        let mut process = Self {
            addr: settings.listen_addr,
            _port: port,
            settings,
            entry_test,
            environment,
            child: None,
        };
        process.launch().await;
        process
    }

    /// Kills it with SIGKILL (no graceful shutdown, connections reset) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends it SIGHUP (it reloads its keys file); only this process gets the signal.
    pub fn hang_up(&self) {
        let child = self.child.as_ref().expect("the auth-service is running");
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(Pid::from_raw)
            .expect("a process id");
        kill_process(pid, Signal::HUP).expect("SIGHUP to the auth-service process");
    }

    /// Starts it again on the same port with the same settings and waits until SERVING.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    async fn launch(&mut self) {
        assert!(self.child.is_none(), "the auth-service is already running");
        let mut command = Command::new(std::env::current_exe().expect("this test binary"));
        command
            .args(["--ignored", "--exact", self.entry_test, "--nocapture"])
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env(CHILD_VARIABLE, "1")
            .envs(self.environment.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped());
        if std::env::var_os("TEST_LOG").is_none() {
            command.stdout(Stdio::null());
        }
        self.child = Some(command.spawn().expect("start the auth-service process"));
        // tokio binds with SO_REUSEADDR, as the held port needs.
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            let status = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            assert!(
                status.is_none(),
                "the auth-service process exited: {status:?}"
            );
            let serving = crate::wait_status(
                self.addr,
                "dynagate.auth.v1.AuthService",
                ServingStatus::Serving,
                Duration::from_secs(1),
            )
            .await;
            if serving {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the auth-service process did not serve on {} within {START_LIMIT:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for AuthProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child's environment: `settings` through the auth-service's documented variables,
/// and the AWS SDK's standard ones for `endpoints`.
fn environment(settings: &Settings, endpoints: &Endpoints) -> Vec<(&'static str, String)> {
    let mut environment = vec![
        ("AWS_ENDPOINT_URL_DYNAMODB", endpoints.dynamodb.clone()),
        ("AWS_ENDPOINT_URL_STS", endpoints.sts.clone()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", crate::TEST_ACCESS_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        (
            "DYNAGATE_AUTH_LISTEN_ADDR",
            settings.listen_addr.to_string(),
        ),
        ("DYNAGATE_AUTH_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("DYNAGATE_USERS_TABLE", settings.users_table.clone()),
        ("DYNAGATE_SESSIONS_TABLE", settings.sessions_table.clone()),
        (
            "DYNAGATE_ATTEMPTS_TABLE",
            settings.lockout.attempts_table.clone(),
        ),
        (
            "DYNAGATE_REVOCATIONS_TABLE",
            settings.revocations.table.clone(),
        ),
        (
            "DYNAGATE_REVOCATION_POLL_MS",
            settings.revocations.poll_ms.to_string(),
        ),
        (
            "DYNAGATE_REVOCATION_HEARTBEAT_MS",
            settings.revocations.heartbeat_ms.to_string(),
        ),
        (
            "DYNAGATE_ARGON2_MEMORY_KIB",
            settings.argon2_memory_kib.to_string(),
        ),
        (
            "DYNAGATE_ARGON2_ITERATIONS",
            settings.argon2_iterations.to_string(),
        ),
        (
            "DYNAGATE_HEALTH_PROBE_SECS",
            settings.health_probe_secs.to_string(),
        ),
        (
            "DYNAGATE_THROTTLE_PER_SECOND",
            settings.throttle.throttle_per_second.to_string(),
        ),
        (
            "DYNAGATE_AWS_CONNECT_TIMEOUT_MS",
            settings.aws.aws_connect_timeout_ms.to_string(),
        ),
        (
            "DYNAGATE_AWS_ATTEMPT_TIMEOUT_MS",
            settings.aws.aws_attempt_timeout_ms.to_string(),
        ),
        (
            "DYNAGATE_AWS_OPERATION_TIMEOUT_MS",
            settings.aws.aws_operation_timeout_ms.to_string(),
        ),
        (
            "DYNAGATE_AWS_MAX_ATTEMPTS",
            settings.aws.aws_max_attempts.to_string(),
        ),
    ];
    environment.extend(signing_keys(settings));
    if let (Some(role), Some(table)) = (&settings.credentials_role_arn, &settings.items_table_arn) {
        environment.push(("DYNAGATE_CREDENTIALS_ROLE_ARN", role.clone()));
        environment.push(("DYNAGATE_ITEMS_TABLE_ARN", table.clone()));
    }
    environment
}

/// The signing keys of `settings`: its keys file (with its reload interval and activation
/// delay), or else its keys themselves.
fn signing_keys(settings: &Settings) -> Vec<(&'static str, String)> {
    match (&settings.signing_keys_file, &settings.signing_keys) {
        (Some(path), _) => vec![
            ("DYNAGATE_SIGNING_KEYS_FILE", path.display().to_string()),
            (
                "DYNAGATE_SIGNING_KEYS_RELOAD_SECS",
                settings.signing_keys_reload_secs.to_string(),
            ),
            (
                "DYNAGATE_SIGNING_KEY_ACTIVATION_SECS",
                settings.signing_key_activation_secs.to_string(),
            ),
        ],
        (None, Some(keys)) => vec![("DYNAGATE_SIGNING_KEYS", keys.expose_secret().to_owned())],
        (None, None) => panic!("test settings carry a signing key or a keys file"),
    }
}
