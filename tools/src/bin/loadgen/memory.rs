//! The auth-service's memory in terms of what holds it: idle; zxcvbn's word lists, which the
//! first password check builds (a Register refused as too weak: the check runs, no hash does);
//! one argon2 block per hashing worker, each allocated by the worker's first hash; and the
//! rest (connection buffers, what the allocator keeps). `/proc/PID/smaps` says where each
//! reading's resident memory lies, and `/proc/net/tcp` how many connections are open.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use anyhow::{Context, ensure};
use common::proto::auth::v1::{
    ListSigningKeysRequest, RegisterRequest, auth_service_client::AuthServiceClient,
};
use tests::process::ServiceProcess as Service;
use tonic::{Code, transport::Channel};

/// Resident memory by kind of mapping, in KiB.
#[derive(Clone, Debug, Default)]
pub struct Breakdown {
    kinds: BTreeMap<&'static str, u64>,
}

impl Breakdown {
    /// Reads `/proc/PID/smaps`.
    pub fn read(pid: i32) -> anyhow::Result<Self> {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
        let mut kinds = BTreeMap::new();
        let mut kind = "other";
        for line in smaps.lines() {
            let mut fields = line.split_whitespace();
            let first = fields.next().unwrap_or_default();
            if let Some(rss) = line.strip_prefix("Rss:") {
                let kib: u64 = rss.trim().trim_end_matches("kB").trim().parse()?;
                *kinds.entry(kind).or_default() += kib;
            } else if first.contains('-') && !first.ends_with(':') {
                kind = mapping_kind(fields.nth(4));
            }
        }
        Ok(Self { kinds })
    }

    /// `heap +1.2, anon +3.4 MiB …`: what grew (or shrank) since `before`.
    pub fn growth_since(&self, before: &Self) -> String {
        let mut text = String::new();
        for (kind, kib) in &self.kinds {
            let was = before.kinds.get(kind).copied().unwrap_or_default();
            let change = (*kib as f64 - was as f64) / 1024.0;
            if change.abs() >= 0.05 {
                let sep = if text.is_empty() { "" } else { ", " };
                let _ = write!(text, "{sep}{kind} {change:+.1}");
            }
        }
        if text.is_empty() {
            "nothing".into()
        } else {
            format!("{text} MiB")
        }
    }
}

/// What a mapping holds, by its path: the main arena, files (the binary's code and read-only
/// data, the libraries), or anonymous memory (thread arenas and large allocations such as the
/// argon2 blocks, thread stacks: adjacent ones merge, so sizes do not tell them apart).
fn mapping_kind(path: Option<&str>) -> &'static str {
    match path {
        Some("[heap]") => "heap",
        Some(path) if path.starts_with('/') => "files",
        Some(_) => "other",
        None => "anonymous",
    }
}

/// Established TCP connections to `port` on loopback (`/proc/net/tcp`, IPv4).
pub fn connections_to(port: u16) -> anyhow::Result<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let local = format!(":{port:04X}");
    Ok(table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "01"
        })
        .count())
}

/// A Register the strength check refuses (16 × `a`: long enough, not on the common list, and
/// zxcvbn's lowest score): zxcvbn builds its lists, no hash runs.
pub async fn weak_register(channel: &Channel) -> anyhow::Result<()> {
    let mut client = AuthServiceClient::new(channel.clone());
    let request = RegisterRequest {
        username: format!("weak{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        password: "a".repeat(16),
    };
    let answer = client.register(request).await;
    let code = answer.as_ref().err().map(tonic::Status::code);
    ensure!(
        code == Some(Code::InvalidArgument),
        "a too-weak Register answered {answer:?}"
    );
    Ok(())
}

/// RSS growth per connection: `count` new connections, one ListSigningKeys on each, open at
/// once; the growth over their number, in KiB. They are closed before it returns.
pub async fn per_connection_kib(service: &Service, count: usize) -> anyhow::Result<f64> {
    let before = service.rss_kib()?;
    let mut open = Vec::new();
    for _ in 0..count {
        let channel = crate::stack::channel(service).await?;
        let mut client = AuthServiceClient::new(channel);
        client
            .list_signing_keys(ListSigningKeysRequest {})
            .await
            .context("ListSigningKeys on a new connection")?;
        open.push(client);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = service.rss_kib()?;
    drop(open);
    Ok(after.saturating_sub(before) as f64 / count.max(1) as f64)
}

/// One reading of the auth-service's memory.
pub struct Reading {
    /// VmRSS, MiB.
    pub mib: f64,
    /// VmHWM, MiB.
    pub peak: f64,
    /// Where it lies.
    pub breakdown: Breakdown,
}

impl Reading {
    /// Reads `service`'s memory now.
    pub fn take(service: &Service) -> anyhow::Result<Self> {
        let (mib, peak) = service.memory_mib()?;
        Ok(Self {
            mib,
            peak,
            breakdown: Breakdown::read(service.pid())?,
        })
    }
}

/// The auth-service idle, and after its first password check.
pub struct Baseline {
    /// 2 s after SERVING, before any call.
    pub idle: Reading,
    /// After a first Register refused as too weak ([`weak_register`]).
    pub checked: Reading,
}

impl Baseline {
    /// Reads the idle service, makes its first password check, reads it again.
    pub async fn take(service: &Service, channel: &Channel) -> anyhow::Result<Self> {
        let idle = Reading::take(service)?;
        weak_register(channel).await?;
        Ok(Self {
            idle,
            checked: Reading::take(service)?,
        })
    }

    /// zxcvbn's share: the RSS growth of the first password check, MiB.
    pub fn zxcvbn(&self) -> f64 {
        self.checked.mib - self.idle.mib
    }
}
