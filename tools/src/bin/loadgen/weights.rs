//! The CPU weight a Kubernetes node gives a pod: the container's CPU request, read from its
//! manifest (`resources.requests.cpu`), turned into cgroup v1 `cpu.shares` and cgroup v2
//! `cpu.weight` with the kubelet's own formulas (millicores × 1024 / 1000, at least 2; then
//! runc's `1 + (shares − 2) × 9999 / 262142`).

use std::path::Path;

use anyhow::{Context, bail};

/// cgroup v1's least and greatest `cpu.shares` (the kubelet clamps to them).
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

/// A container's CPU request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuRequest {
    /// As the manifest spells it (`250m`, `"1"`).
    pub quantity: String,
    /// In millicores.
    pub millis: u64,
}

impl CpuRequest {
    /// cgroup v1 `cpu.shares`, as the kubelet computes it (`MilliCPUToShares`).
    pub fn shares(&self) -> u64 {
        if self.millis == 0 {
            return MIN_SHARES;
        }
        (self.millis * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
    }

    /// cgroup v2 `cpu.weight`, as runc converts the shares.
    pub fn weight(&self) -> u64 {
        1 + (self.shares() - MIN_SHARES) * 9999 / (MAX_SHARES - MIN_SHARES)
    }
}

/// The CPU request of the (first) container in the manifest at `path`.
pub fn cpu_request(path: &Path) -> anyhow::Result<CpuRequest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let quantity = requested_cpu(&text)
        .with_context(|| format!("no resources.requests.cpu in {}", path.display()))?;
    let millis = millicores(&quantity).with_context(|| format!("cpu: {quantity}"))?;
    Ok(CpuRequest { quantity, millis })
}

/// The `cpu:` value inside the first `requests:` block: the block is the lines indented
/// deeper than `requests:` (comments and blank lines skipped).
fn requested_cpu(manifest: &str) -> Option<String> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut lines = manifest.lines();
    let block = lines.by_ref().find(|line| line.trim() == "requests:")?;
    let depth = indent(block);
    for line in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent(line) <= depth {
            return None;
        }
        if let Some(value) = trimmed.strip_prefix("cpu:") {
            let value = value.split(" #").next().unwrap_or_default().trim();
            return Some(value.trim_matches(['"', '\'']).to_owned());
        }
    }
    None
}

/// A Kubernetes CPU quantity in millicores: `250m`, `1`, `0.5`.
fn millicores(quantity: &str) -> anyhow::Result<u64> {
    if let Some(millis) = quantity.strip_suffix('m') {
        return Ok(millis.parse()?);
    }
    let cores: f64 = quantity.parse()?;
    if !(cores.is_finite() && cores >= 0.0) {
        bail!("not a CPU quantity");
    }
    Ok((cores * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(millis: u64) -> CpuRequest {
        CpuRequest {
            quantity: String::new(),
            millis,
        }
    }

    #[test]
    fn requests_convert_as_the_kubelet_and_runc_do() {
        assert_eq!((request(250).shares(), request(250).weight()), (256, 10));
        assert_eq!((request(1000).shares(), request(1000).weight()), (1024, 39));
        assert_eq!((request(0).shares(), request(1).shares()), (2, 2));
        assert_eq!(request(0).weight(), 1);
        assert_eq!(request(1_000_000).weight(), 10_000);
    }

    #[test]
    fn quantities_in_millicores_and_cores() {
        assert_eq!(millicores("250m").unwrap(), 250);
        assert_eq!(millicores("1").unwrap(), 1000);
        assert_eq!(millicores("0.5").unwrap(), 500);
        assert!(millicores("lots").is_err());
    }

    #[test]
    fn the_cpu_of_the_requests_block_not_of_the_limits() {
        let manifest = "\
          resources:
            limits:
              cpu: \"2\"
            requests:
              # a comment
              cpu: \"1\"
              memory: 64Mi
";
        assert_eq!(requested_cpu(manifest).as_deref(), Some("1"));
        let none = "            requests:\n              memory: 1Mi\n            limits:\n              cpu: 2\n";
        assert_eq!(requested_cpu(none), None);
    }

    #[test]
    fn the_repository_manifests_request_cpu() {
        let root = ::tests::emulators::workspace_root();
        let auth = cpu_request(&root.join("deploy/k8s/auth-deployment.yaml")).unwrap();
        let data = cpu_request(&root.join("deploy/k8s/data-deployment.yaml")).unwrap();
        assert!(auth.millis > 0 && data.millis > 0);
    }
}
