//! Every call of the load, run with its deadline and recorded by phase, operation and
//! outcome; calls that hang or end with a code the rules do not allow are violations.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::{Code, Response, Status};
use tonic_types::StatusExt;

use super::{DEADLINE, HANG};

/// Outcomes by phase, operation and outcome: how many, and the longest call.
pub type Outcomes = BTreeMap<(&'static str, &'static str, String), (u64, Duration)>;

/// Longer than this past its tick, the stall watch's plain OS thread saw the whole process
/// (or machine) frozen: not something a service can cause or answer within a deadline.
const STALL: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(50);

/// What the load saw, by phase, operation and outcome, and every broken rule.
#[derive(Default)]
pub struct Record {
    /// The phase calls are counted under.
    pub phase: &'static str,
    /// Every call's outcome.
    pub outcomes: Outcomes,
    /// Broken rules.
    pub violations: Vec<String>,
    /// Calls that ended CANCELLED or DEADLINE_EXCEEDED (or hung): a violation unless the
    /// process was frozen meanwhile. With when they ran.
    pub(super) late: Vec<(Instant, Instant, String)>,
    /// When the stall watch saw the process frozen.
    pub(super) stalls: Vec<(Instant, Instant)>,
}

impl Record {
    /// The late calls during which the process was not frozen become violations; returns
    /// how many were excused.
    pub fn judge_late_calls(&mut self) -> usize {
        let late = std::mem::take(&mut self.late);
        let stalls = &self.stalls;
        let (excused, violations): (Vec<_>, Vec<_>) = late
            .into_iter()
            .partition(|(from, to, _)| stalls.iter().any(|(start, end)| start < to && end > from));
        self.violations
            .extend(violations.into_iter().map(|(_, _, text)| text));
        excused.len()
    }
}

/// Shared by every task of the load.
#[derive(Clone)]
pub struct Recorder(pub Arc<Mutex<Record>>);

impl Recorder {
    /// Notes a broken rule.
    pub fn violation(&self, text: String) {
        self.0.lock().expect("record").violations.push(text);
    }

    /// Watches, on a plain OS thread, for moments the whole process is frozen (a loaded CI
    /// machine), until `stop`.
    pub fn watch_stalls(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let recorder = self.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let before = Instant::now();
                std::thread::sleep(TICK);
                let after = Instant::now();
                if after - before > TICK + STALL {
                    let mut record = recorder.0.lock().expect("record");
                    record.stalls.push((before, after));
                }
            }
        })
    }

    /// Runs one call with the deadline and records its outcome. A call that outlives its
    /// deadline, or ends with a code other than OK, UNAVAILABLE or one of `allowed`, breaks
    /// the rules.
    pub async fn call<T>(
        &self,
        op: &'static str,
        allowed: &[Code],
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = match tokio::time::timeout(DEADLINE + HANG, call).await {
            Ok(result) => result.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("no answer: hung")),
        };
        let elapsed = started.elapsed();
        let mut record = self.0.lock().expect("record");
        let phase = record.phase;
        let outcome = match &result {
            Ok(_) => "OK".to_owned(),
            Err(status) if status.code() == Code::Unavailable => {
                if status.get_error_details().retry_info().is_some() {
                    "Unavailable".to_owned()
                } else {
                    "Unavailable".to_owned() + " (no RetryInfo)"
                }
            }
            Err(status) => format!("{:?}", status.code()),
        };
        if let Err(status) = &result {
            let answered = status.code() == Code::Unavailable && outcome == "Unavailable";
            let reset = matches!(
                (status.code(), status.message()),
                (Code::Unknown, "transport error") | (Code::Cancelled, "operation was canceled")
            ) || (status.code() == Code::Unknown
                && status.message().starts_with("h2 protocol error"));
            let client_made = cut_off(phase, op) && (status.code() == Code::Unavailable || reset);
            let text = format!(
                "{phase}: {op} ended {:?} after {elapsed:?}: {}",
                status.code(),
                status.message()
            );
            let fine = answered || client_made || allowed.contains(&status.code());
            if fine {
                // Nothing to judge.
            } else if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) {
                record.late.push((started, Instant::now(), text));
            } else {
                record.violations.push(text);
            }
        }
        // A call past its deadline ends CANCELLED or DEADLINE_EXCEEDED on the client's side,
        // which the codes above refuse: no timing is asserted here.
        let (count, longest) = record.outcomes.entry((phase, op, outcome)).or_default();
        *count += 1;
        *longest = (*longest).max(elapsed);
        result
    }

    /// How many calls of `op` ended with an outcome starting with `outcome` in `phase`.
    pub fn count(&self, phase: &str, op: &str, outcome: &str) -> u64 {
        let record = self.0.lock().expect("record");
        record
            .outcomes
            .iter()
            .filter(|((p, o, out), _)| *p == phase && *o == op && out.starts_with(outcome))
            .map(|(_, (count, _))| count)
            .sum()
    }
}

/// True for a call the client itself may fail (UNAVAILABLE without RetryInfo, UNKNOWN
/// "transport error" for a call in flight when the connection was reset — or "h2 protocol
/// error: error reading a body from connection" when the reset came while its answer was
/// being read — or CANCELLED
/// "operation was canceled" for one queued on that connection): one to the
/// auth-service while its process is dead or restarting. Every other failure must be the
/// services' own UNAVAILABLE, with RetryInfo.
fn cut_off(phase: &str, op: &str) -> bool {
    let auth_call = matches!(
        op,
        "Register" | "Login" | "Refresh" | "GetCredentials" | "GetCredentials (newcomer)"
    );
    auth_call && matches!(phase, "auth down" | "auth back")
}
