//! Revocation propagation, measured by `revbench` (two auth and two data replicas in its own
//! process): run as a child and its propagation rows quoted, or, without the binary, the
//! command that measures it.

use std::path::Path;

use anyhow::{Context, ensure};

use crate::report::{Row, row};

/// How long revbench runs.
pub struct Sizes {
    /// Sessions ended per layout.
    pub revocations: usize,
    /// Data-path rounds, calls per round, revocations held.
    pub rounds: usize,
    /// Calls per round.
    pub calls: usize,
    /// Revocations held by the feed-on replica.
    pub preload: usize,
}

/// The propagation row.
pub async fn propagation(revbench: &Path, sizes: &Sizes) -> anyhow::Result<Row> {
    let command = "cargo build --release -p tests --bin revbench && target/release/revbench";
    if !revbench.is_file() {
        return Ok(row(
            "revocation propagation p99 (not run here)",
            "—",
            format!("`{command}`"),
            "—",
            "≤ 2 s",
        ));
    }
    let out = std::env::temp_dir().join(format!("loadgen-revbench-{}.md", uuid::Uuid::new_v4()));
    let status = tokio::process::Command::new(revbench)
        .args(["--revocations", &sizes.revocations.to_string()])
        .args(["--rounds", &sizes.rounds.to_string()])
        .args(["--calls", &sizes.calls.to_string()])
        .args(["--preload", &sizes.preload.to_string()])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("running revbench")?;
    ensure!(status.success(), "revbench failed: {status}");
    let table = std::fs::read_to_string(&out).context("revbench's table")?;
    let _ = std::fs::remove_file(&out);
    let value = |prefix: &str| {
        table
            .lines()
            .find(|line| line.starts_with(&format!("| {prefix}")))
            .and_then(|line| line.trim_end_matches(" |").rsplit(" | ").next())
            .unwrap_or("missing")
            .to_owned()
    };
    Ok(row(
        format!(
            "revocation propagation, Logout to refusal (revbench: 2 auth + 2 data replicas in \
             one process, {} sessions per layout)",
            sizes.revocations
        ),
        "—",
        format!(
            "every auth replica watched: {}; revoked on an unwatched one (DynamoDB + 1 s poll): \
             {}; GetItem p50 feed on vs off: {}",
            value("propagation, each data replica watching both"),
            value("… revoked on the other one"),
            value("**feed on vs off**")
        ),
        "—",
        "p99 ≤ 2 s",
    ))
}
