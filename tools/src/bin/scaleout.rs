//! The scale-out story against running processes: two auth-service and two data-service
//! replicas started by `scripts/replicas`, which also runs this and acts on the replicas when
//! a step asks (`scripts/replicas kill|start|hup`). Prints each sentence it proved; exits
//! non-zero at the first step that did not hold. The steps are in `tests::replicas`.

use std::{net::SocketAddr, path::PathBuf, process::Command};

use anyhow::{Context, ensure};
use clap::Parser;
use tests::replicas::{self, Control, Fleet};

/// Runs the scale-out story (start it with `scripts/replicas`).
#[derive(Parser, Debug)]
struct Args {
    /// The two auth-service replicas (A,B).
    #[arg(long, value_delimiter = ',', required = true)]
    auth: Vec<SocketAddr>,
    /// Their metrics endpoints (A,B).
    #[arg(long, value_delimiter = ',', required = true)]
    auth_metrics: Vec<SocketAddr>,
    /// The two data-service replicas, each given both auth replicas as --auth-url.
    #[arg(long, value_delimiter = ',', required = true)]
    data: Vec<SocketAddr>,
    /// The signing-keys file both auth replicas read.
    #[arg(long)]
    keys_file: PathBuf,
    /// The auth replicas' --lockout-threshold.
    #[arg(long, default_value_t = 5)]
    lockout_threshold: u32,
    /// The script that kills, starts and reloads replicas (`scripts/replicas`).
    #[arg(long)]
    control: PathBuf,
    /// New users signed in on B while A is dead.
    #[arg(long, default_value_t = 4)]
    users: usize,
}

/// Acts on the processes through `scripts/replicas`.
struct Script(PathBuf);

impl Script {
    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = Command::new(&self.0)
            .args(args)
            .status()
            .with_context(|| format!("running {}", self.0.display()))?;
        ensure!(status.success(), "{} {args:?}: {status}", self.0.display());
        Ok(())
    }
}

const NAMES: [&str; 2] = ["auth-a", "auth-b"];

impl Control for Script {
    async fn reload_keys(&self) -> anyhow::Result<()> {
        self.run(&["hup"])
    }

    async fn kill_auth(&self, i: usize) -> anyhow::Result<()> {
        self.run(&["kill", NAMES[i]])
    }

    async fn revive_auth(&self, i: usize) -> anyhow::Result<()> {
        self.run(&["start", NAMES[i]])
    }
}

/// The two addresses of `flag`.
fn pair(flag: &str, values: &[SocketAddr]) -> anyhow::Result<[SocketAddr; 2]> {
    match values {
        [a, b] => Ok([*a, *b]),
        _ => anyhow::bail!("--{flag} takes two addresses, A,B"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fleet = Fleet {
        auth: pair("auth", &args.auth)?,
        auth_metrics: pair("auth-metrics", &args.auth_metrics)?,
        data: pair("data", &args.data)?,
        keys_file: args.keys_file,
        lockout_threshold: args.lockout_threshold,
    };
    let control = Script(args.control);
    println!("Scale-out story: 2 auth-service + 2 data-service processes, one dynalite");
    let proved = replicas::reuse_on_the_other_replica_ends_the_session(&fleet).await?;
    println!("  1. {proved}");
    let proved = replicas::lockout_counts_across_replicas(&fleet).await?;
    println!("  2. {proved}");
    let proved = replicas::added_key_is_honoured_by_both_data_replicas(&fleet, &control).await?;
    println!("  3. {proved}");
    let proved = replicas::auth_replica_death_is_survived(&fleet, &control, args.users).await?;
    println!("  4. {proved}");
    Ok(())
}
