//! Capturing the services' logs in a test binary: the JSON lines `common::telemetry` writes in
//! production, kept in memory, so a test can find its audit lines and search every line for
//! secrets. A test binary is one process with one global subscriber: call
//! [`AuditLog::capture`] first thing in every test of the binary (before a service starts),
//! and tell tests apart by their own usernames, user ids or forwarded addresses.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use serde_json::Value;
use tracing_subscriber::{fmt::MakeWriter, util::SubscriberInitExt};

/// Everything logged in this process since the capture began.
#[derive(Clone, Debug)]
pub struct AuditLog {
    buffer: Arc<Mutex<Vec<u8>>>,
}

static CAPTURE: OnceLock<AuditLog> = OnceLock::new();

impl AuditLog {
    /// Installs the capturing subscriber for this process (once; later calls share it): the
    /// subscriber `common::telemetry::init` installs (JSON lines, trace ids from local spans,
    /// nothing exported), at debug level for our own crates so the secret search sees more
    /// than production would log.
    pub fn capture() -> Self {
        CAPTURE
            .get_or_init(|| {
                let log = Self {
                    buffer: Arc::default(),
                };
                let directives = "debug,h2=info,hyper=info,hyper_util=info,tower=info,\
                                  aws_smithy_runtime=info,aws_smithy_runtime_api=info,\
                                  aws_config=info";
                let spans = common::telemetry::Spans::local("tests");
                common::telemetry::subscriber(directives, log.clone(), &spans)
                    .try_init()
                    .expect(
                        "AuditLog::capture must run before anything else installs a subscriber",
                    );
                log
            })
            .clone()
    }

    /// All captured text.
    pub fn text(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buffer).into_owned()
    }

    /// Every captured JSON line, parsed.
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .collect()
    }

    /// The lines logged inside a request of trace `trace_id` (its `grpc` span), in order.
    pub fn of_trace(&self, trace_id: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|line| request_span(line).is_some_and(|span| span["trace_id"] == trace_id))
            .collect()
    }

    /// The fields of every audit line (target `audit`) for which `wanted` holds, in order.
    pub fn events(&self, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|line| line["target"] == auth_service::audit::TARGET)
            .map(|line| line["fields"].clone())
            .filter(|fields| wanted(fields))
            .collect()
    }

    /// The audit lines naming `username` (folded).
    pub fn of_username(&self, username: &str) -> Vec<Value> {
        let folded = username.to_lowercase();
        self.events(|fields| fields["username"] == folded.as_str())
    }

    /// The audit lines naming `user_id`.
    pub fn of_user(&self, user_id: &str) -> Vec<Value> {
        self.events(|fields| fields["user_id"] == user_id)
    }

    /// Panics if any captured line contains one of `secrets`, naming the line.
    pub fn assert_free_of<S: AsRef<str>>(&self, secrets: &[S]) {
        let text = self.text();
        for secret in secrets {
            let secret = secret.as_ref();
            assert!(!secret.is_empty(), "an empty secret matches everything");
            if let Some(line) = text.lines().find(|line| line.contains(secret)) {
                panic!("a secret was logged: {line}");
            }
        }
    }
}

/// The `grpc` request span a line was logged in, however deeply nested.
pub fn request_span(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == "grpc")
}

impl Write for AuditLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for AuditLog {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}
