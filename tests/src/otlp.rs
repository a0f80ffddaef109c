//! A real OTLP/gRPC trace receiver as a child process: `tests/python/otlp_receiver.py`, the
//! collector's TraceService built from the `opentelemetry-proto` package (installed into
//! `.local/venv` by `scripts/install-tools`). It writes every span it receives as a JSON line;
//! [`OtlpReceiver::spans`] reads them back.
//!
//! Like the service processes, it gets a parent-death signal (SIGKILL), so a test that dies
//! leaves no receiver behind, and it is killed when dropped.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, ensure};
use rustix::process::Signal;
use serde_json::Value;

use crate::emulators::{tool, workspace_root};

/// Longest the receiver may take to listen (Python and grpcio start in about a second).
const START_LIMIT: Duration = Duration::from_secs(30);

/// One span as the receiver got it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` resource attribute of the process that sent it.
    pub service: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// The span's name (a gRPC span's is `package.Service/Method`).
    pub name: String,
    /// `SERVER`, `CLIENT`, `INTERNAL`, …
    pub kind: String,
    /// The span's attributes (strings, numbers, booleans).
    pub attributes: BTreeMap<String, Value>,
}

/// The receiver process.
pub struct OtlpReceiver {
    child: Child,
    port: u16,
    output: PathBuf,
}

impl OtlpReceiver {
    /// Starts the receiver on a free loopback port and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        let python = tool("../venv/bin/python");
        let output =
            std::env::temp_dir().join(format!("dynagate-otlp-{}.jsonl", uuid::Uuid::new_v4()));
        let mut command = Command::new(python);
        command
            .arg(workspace_root().join("tests/python/otlp_receiver.py"))
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches no memory of this process.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                Ok(())
            });
        }
        let mut child = command.spawn().context("starting otlp_receiver.py")?;
        let stdout = child.stdout.take().context("the receiver's stdout")?;
        let (sender, listening) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("otlp receiver listening on ") {
                    let _ = sender.send(port.trim().parse::<u16>());
                }
            }
        });
        let mut receiver = Self {
            child,
            port: 0,
            output,
        };
        let port = listening
            .recv_timeout(START_LIMIT)
            .context("otlp_receiver.py did not listen (is opentelemetry-proto installed?)")?;
        receiver.port = port.context("the receiver's port")?;
        Ok(receiver)
    }

    /// `http://127.0.0.1:<port>`: what `--otlp-endpoint` takes.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far, in the order they arrived.
    pub fn spans(&self) -> anyhow::Result<Vec<ReceivedSpan>> {
        let text = match std::fs::read_to_string(&self.output) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(error.into()),
        };
        text.lines().map(parse).collect()
    }

    /// The spans of trace `trace_id`.
    pub fn trace(&self, trace_id: &str) -> anyhow::Result<Vec<ReceivedSpan>> {
        let spans = self.spans()?.into_iter();
        Ok(spans.filter(|span| span.trace_id == trace_id).collect())
    }
}

fn parse(line: &str) -> anyhow::Result<ReceivedSpan> {
    let value: Value = serde_json::from_str(line).with_context(|| format!("a span: {line}"))?;
    let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
    let attributes = value["attributes"].as_object().cloned().unwrap_or_default();
    let span = ReceivedSpan {
        service: text("service"),
        trace_id: text("trace_id"),
        span_id: text("span_id"),
        parent_span_id: text("parent_span_id"),
        name: text("name"),
        kind: text("kind"),
        attributes: attributes.into_iter().collect(),
    };
    ensure!(
        span.trace_id.len() == 32,
        "a span without a trace id: {line}"
    );
    Ok(span)
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.output);
    }
}
