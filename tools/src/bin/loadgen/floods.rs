//! The two loads: a login flood (concurrent loops of real logins) and a cancellation flood
//! (logins whose deadline passes before their hash could run), with a sampler counting the
//! hashing threads that are running.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::proto::auth::v1::{LoginRequest, auth_service_client::AuthServiceClient};
use tests::auth::{TestUser, hopeless_login};
use tokio::task::JoinSet;
use tonic::{Code, Status, transport::Channel};

use tools::cpu::stat_fields;

/// How the calls of a flood ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcomes {
    /// Succeeded.
    pub ok: u64,
    /// RESOURCE_EXHAUSTED from the service: its hashing queue was full.
    pub refused: u64,
    /// Ended by their deadline (DEADLINE_EXCEEDED or CANCELLED).
    pub timed_out: u64,
    /// Failed at the HTTP/2 level: a transport error, or the GOAWAY hyper sends when a
    /// connection resets too many streams (tonic reports ENHANCE_YOUR_CALM as
    /// RESOURCE_EXHAUSTED too, hence the message check).
    pub connection: u64,
    /// UNAUTHENTICATED (the cancellation flood's wrong passwords) and anything else.
    pub other: u64,
}

impl Outcomes {
    fn count<T>(&mut self, result: Result<T, Status>) {
        let Err(status) = result else {
            self.ok += 1;
            return;
        };
        match status.code() {
            Code::ResourceExhausted if status.message() == "too many concurrent logins" => {
                self.refused += 1;
            }
            Code::DeadlineExceeded | Code::Cancelled => self.timed_out += 1,
            Code::ResourceExhausted | Code::Unavailable | Code::Unknown => self.connection += 1,
            _ => self.other += 1,
        }
    }

    fn add(&mut self, other: Self) {
        self.ok += other.ok;
        self.refused += other.refused;
        self.timed_out += other.timed_out;
        self.connection += other.connection;
        self.other += other.other;
    }

    /// Every call made.
    pub fn total(&self) -> u64 {
        self.ok + self.refused + self.timed_out + self.connection + self.other
    }
}

/// One loop per user, each logging in again and again until `duration` has passed.
pub async fn login_flood(channel: &Channel, users: &[TestUser], duration: Duration) -> Outcomes {
    let until = Instant::now() + duration;
    let mut loops = JoinSet::new();
    for user in users {
        let mut client = AuthServiceClient::new(channel.clone());
        let user = user.clone();
        loops.spawn(async move {
            let mut outcomes = Outcomes::default();
            while Instant::now() < until {
                let request = LoginRequest {
                    username: user.username.clone(),
                    password: user.password.clone(),
                    ..Default::default()
                };
                let result = client.login(request).await;
                outcomes.count(result);
            }
            outcomes
        });
    }
    join(loops).await
}

/// `tasks` loops of logins with a `deadline` far shorter than a hash, alternating a real
/// user (wrong password) and a malformed name (no table lookup, straight to argon2).
pub async fn cancellation_flood(
    channel: &Channel,
    user: &TestUser,
    tasks: usize,
    deadline: Duration,
    duration: Duration,
) -> Outcomes {
    let until = Instant::now() + duration;
    let mut loops = JoinSet::new();
    for _ in 0..tasks {
        let mut client = AuthServiceClient::new(channel.clone());
        let username = user.username.clone();
        loops.spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut round = 0_u64;
            while Instant::now() < until {
                round += 1;
                let result = client
                    .login(hopeless_login(&username, round, deadline))
                    .await;
                outcomes.count(result);
            }
            outcomes
        });
    }
    join(loops).await
}

async fn join(mut loops: JoinSet<Outcomes>) -> Outcomes {
    let mut total = Outcomes::default();
    while let Some(outcomes) = loops.join_next().await {
        total.add(outcomes.unwrap_or_default());
    }
    total
}

/// Counts, about every millisecond, the hashing threads in state R (running or runnable).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u64)>,
}

impl Sampler {
    /// Starts sampling the given `/proc/PID/task/TID/stat` files.
    pub fn start(threads: Vec<PathBuf>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let (mut most, mut samples) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let running = threads
                        .iter()
                        .filter(|stat| {
                            stat_fields(&stat.to_string_lossy())
                                .is_ok_and(|fields| fields[0] == "R")
                        })
                        .count() as u64;
                    most = most.max(running);
                    samples += 1;
                    thread::sleep(Duration::from_millis(1));
                }
                (most, samples)
            }
        });
        Self { stop, thread }
    }

    /// Stops and returns the most threads seen running at once, and the number of samples.
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
