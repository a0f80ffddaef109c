//! A load for fault tests: users writing versioned items with nonces, reading them back,
//! rotating refresh tokens and fetching credentials, and newcomers signing up, through both
//! services, with every call and every acknowledged write recorded so a test can check what
//! a fault did (see tests/tests/faults_under_load.rs).

mod ledger;
mod recorder;
mod tasks;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    data::v1::data_service_client::DataServiceClient,
};
use tokio::task::JoinHandle;

pub use ledger::{KeyState, Owner, stamp};
pub use recorder::{Outcomes, Record, Recorder};
use tasks::{Context, channel, newcomer_loop, read_loop, refresh_loop, sign_up, write_loop};

/// Every call's deadline, sent as `grpc-timeout`.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Past the deadline by this much, a call counts as hung (and is abandoned).
const HANG: Duration = Duration::from_millis(500);
/// Users with their own keys, each with a writer, a reader and a refresher.
const USERS: usize = 3;
/// Keys per user.
const KEYS: usize = 3;

/// The running load: its tasks, what they record, and every key they own.
pub struct Load {
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    owners: Arc<Mutex<Vec<Owner>>>,
    tasks: Vec<JoinHandle<()>>,
    stalls: std::thread::JoinHandle<()>,
}

/// What the load left behind.
pub struct Report {
    /// Every call's outcome, by phase and operation.
    pub outcomes: Outcomes,
    /// Every broken rule.
    pub violations: Vec<String>,
    /// Calls that ended CANCELLED or DEADLINE_EXCEEDED while the whole process was frozen
    /// (seen by a plain OS thread): the machine's doing, not a service's.
    pub excused: usize,
    /// Every user's keys as acknowledged, to read back.
    pub owners: Vec<Owner>,
}

impl Report {
    /// The outcomes as a markdown table.
    pub fn table(&self) -> String {
        let mut table =
            "| phase | call | outcome | count | longest |\n|---|---|---|---|---|\n".to_owned();
        for ((phase, op, outcome), (count, longest)) in &self.outcomes {
            let millis = longest.as_millis();
            table.push_str(&format!(
                "| {phase} | {op} | {outcome} | {count} | {millis} ms |\n"
            ));
        }
        table
    }
}

impl Load {
    /// Registers the users and starts their tasks, plus one task signing up newcomers.
    pub async fn start(auth: SocketAddr, data: SocketAddr) -> Self {
        let recorder = Recorder(Arc::new(Mutex::new(Record {
            phase: "warm-up",
            ..Default::default()
        })));
        let stop = Arc::new(AtomicBool::new(false));
        let owners = Arc::new(Mutex::new(Vec::new()));
        let auth_channel = channel(auth);
        let data_channel = channel(data);
        let mut tasks = Vec::new();
        for user in 0..USERS {
            let mut auth_client = AuthServiceClient::new(auth_channel.clone());
            let login = sign_up(&recorder, &mut auth_client, &format!("user{user}"))
                .await
                .expect("sign up before the faults");
            let owner = Owner {
                label: format!("user {user}"),
                token: login.access_token.clone(),
                keys: Arc::new(Mutex::new(
                    (0..KEYS).map(|k| KeyState::new(format!("k{k}"))).collect(),
                )),
            };
            owners.lock().expect("owners").push(owner.clone());
            let context = Context {
                recorder: recorder.clone(),
                stop: Arc::clone(&stop),
                data: DataServiceClient::new(data_channel.clone()),
                auth: auth_client,
            };
            tasks.push(tokio::spawn(write_loop(context.clone(), owner.clone())));
            tasks.push(tokio::spawn(read_loop(context.clone(), owner)));
            tasks.push(tokio::spawn(refresh_loop(context, login.refresh_token)));
        }
        let context = Context {
            recorder: recorder.clone(),
            stop: Arc::clone(&stop),
            data: DataServiceClient::new(data_channel),
            auth: AuthServiceClient::new(auth_channel),
        };
        tasks.push(tokio::spawn(newcomer_loop(context, Arc::clone(&owners))));
        let stalls = recorder.watch_stalls(Arc::clone(&stop));
        Self {
            recorder,
            stop,
            owners,
            tasks,
            stalls,
        }
    }

    /// Starts a new phase of the run (outcomes are counted per phase).
    pub fn phase(&self, phase: &'static str) {
        self.recorder.0.lock().expect("record").phase = phase;
    }

    fn current(&self) -> &'static str {
        self.recorder.0.lock().expect("record").phase
    }

    /// True once `op` ended with `outcome` in this phase (false after `limit`).
    pub async fn saw(&self, op: &str, outcome: &str, limit: Duration) -> bool {
        let phase = self.current();
        crate::eventually(limit, || async move {
            self.recorder.count(phase, op, outcome) > 0
        })
        .await
    }

    /// Waits until `op` succeeds in this phase; fails the test if it does not within `limit`.
    pub async fn progress(&self, op: &str, limit: Duration) {
        let phase = self.current();
        assert!(
            self.saw(op, "OK", limit).await,
            "{phase}: no {op} succeeded within {limit:?}"
        );
    }

    /// Stops every task and returns what they saw.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a load task panicked");
        }
        let _ = self.stalls.join();
        let mut record = std::mem::take(&mut *self.recorder.0.lock().expect("record"));
        let excused = record.judge_late_calls();
        let owners = self.owners.lock().expect("owners").clone();
        Report {
            outcomes: record.outcomes,
            violations: record.violations,
            excused,
            owners,
        }
    }
}
