//! CPU cgroups for the weighted login flood: each service in a group of its own with the weight
//! its Kubernetes manifest requests, the emulators (standing for AWS) in one at the default
//! weight, as a node would run them. cgroup v1's `cpu` controller (`cpu.shares`) or cgroup v2
//! (`cpu.weight`), whichever is mounted and writable; the groups are children of the cgroup
//! loadgen itself runs in, which stays put. [`Groups`] removes them when dropped, on failure
//! too, after moving their processes back; groups a killed run left behind are removed by the
//! next.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

/// Prefix of every group's directory: `dynagate-loadgen-<pid>-<name>`.
const PREFIX: &str = "dynagate-loadgen-";

/// Which cgroup hierarchy weighs CPU.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    /// The cgroup loadgen runs in (the parent of the groups made here).
    parent: PathBuf,
    /// cgroup v2 (`cpu.weight`) rather than v1 (`cpu.shares`).
    v2: bool,
}

impl Hierarchy {
    /// The writable CPU hierarchy, or why there is none: cgroup v2 when
    /// `/sys/fs/cgroup/cgroup.controllers` lists `cpu`, else cgroup v1's `/sys/fs/cgroup/cpu`.
    pub fn detect() -> anyhow::Result<Self> {
        let unified = Path::new("/sys/fs/cgroup");
        let controllers =
            fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
        let hierarchy = if controllers.split_whitespace().any(|name| name == "cpu") {
            let own = own_cgroup(|controllers| controllers.is_empty())?;
            Self {
                parent: unified.join(own.trim_start_matches('/')),
                v2: true,
            }
        } else if Path::new("/sys/fs/cgroup/cpu/cpu.shares").exists() {
            let own = own_cgroup(|controllers| controllers.split(',').any(|c| c == "cpu"))?;
            Self {
                parent: Path::new("/sys/fs/cgroup/cpu").join(own.trim_start_matches('/')),
                v2: false,
            }
        } else {
            bail!("no cgroup v2 with the cpu controller, no cgroup v1 cpu hierarchy");
        };
        if hierarchy.v2 {
            let control = hierarchy.parent.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|name| name == "cpu") {
                fs::write(&control, "+cpu")
                    .with_context(|| format!("enabling cpu in {}", control.display()))?;
            }
        }
        hierarchy.remove_stale();
        Ok(hierarchy)
    }

    /// `cpu.shares` or `cpu.weight`.
    pub fn knob(&self) -> &'static str {
        if self.v2 { "cpu.weight" } else { "cpu.shares" }
    }

    /// The knob's default (a group at the weight of a nice-0 task or autogroup).
    pub fn default_value(&self) -> u64 {
        if self.v2 { 100 } else { 1024 }
    }

    /// Where the groups go.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// Removes the groups of loadgen runs that no longer exist (killed before their `Drop`).
    /// A group still holding a process is left alone (rmdir refuses it).
    fn remove_stale(&self) {
        let Ok(entries) = fs::read_dir(&self.parent) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir(entry.path());
            }
        }
    }
}

/// This process's cgroup path in the hierarchy whose `/proc/self/cgroup` line's controller
/// list satisfies `matches` (v2: the `0::` line, with an empty list).
fn own_cgroup(matches: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let lines = fs::read_to_string("/proc/self/cgroup")?;
    lines
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            matches(controllers).then(|| path.to_owned())
        })
        .next()
        .context("this process's cgroup in /proc/self/cgroup")
}

/// One group to make: its name, its knob's value and the processes to move into it.
pub struct Placement {
    /// `auth`, `data`, `aws`.
    pub name: &'static str,
    /// `cpu.shares` or `cpu.weight` (see [`Hierarchy::knob`]).
    pub value: u64,
    /// Every process (all its threads move with it).
    pub pids: Vec<i32>,
}

/// The groups made, removed when dropped.
pub struct Groups {
    hierarchy: Hierarchy,
    made: Vec<PathBuf>,
}

impl Groups {
    /// Makes one group per placement, sets its weight and moves its processes into it.
    pub fn create(hierarchy: &Hierarchy, placements: &[Placement]) -> anyhow::Result<Self> {
        let mut groups = Self {
            hierarchy: hierarchy.clone(),
            made: Vec::new(),
        };
        for placement in placements {
            let name = format!("{PREFIX}{}-{}", std::process::id(), placement.name);
            let path = hierarchy.parent.join(name);
            fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
            groups.made.push(path.clone());
            let knob = path.join(hierarchy.knob());
            fs::write(&knob, placement.value.to_string())
                .with_context(|| format!("writing {}", knob.display()))?;
            for pid in &placement.pids {
                move_process(&path, *pid)?;
            }
        }
        Ok(groups)
    }

    /// What each group holds, for the table: `dynagate-loadgen-7-auth 1 process, …`.
    pub fn describe(&self) -> String {
        let count = |path: &PathBuf| {
            let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            format!("{} {}", name.unwrap_or_default(), procs.lines().count())
        };
        let groups: Vec<String> = self.made.iter().map(count).collect();
        format!("{} (processes)", groups.join(", "))
    }
}

/// Moves process `pid` (every thread of it) into the group at `path`.
fn move_process(path: &Path, pid: i32) -> anyhow::Result<()> {
    let procs = path.join("cgroup.procs");
    match fs::write(&procs, pid.to_string()) {
        Ok(()) => Ok(()),
        // Ended meanwhile (a watchdog's short-lived child): nothing to weigh.
        Err(_) if !Path::new("/proc").join(pid.to_string()).exists() => Ok(()),
        Err(error) => Err(error).with_context(|| format!("moving {pid} into {}", procs.display())),
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        let home = self.hierarchy.parent.clone();
        for path in self.made.drain(..).rev() {
            let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .lines()
                .filter_map(|pid| pid.trim().parse::<i32>().ok())
            {
                let _ = move_process(&home, pid);
            }
            if let Err(error) = fs::remove_dir(&path) {
                eprintln!("loadgen: could not remove {}: {error}", path.display());
            }
        }
    }
}
