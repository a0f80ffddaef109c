//! The two ways the login flood runs beside the data path. As is: each service in a session of
//! its own, so the kernel's autogroups weigh the auth-service, the data-service and loadgen's
//! session (with dynalite and moto, its children) alike. Weighted: each service in a CPU
//! cgroup with the weight of its Kubernetes manifest's CPU request
//! (`deploy/k8s/*-deployment.yaml`, read now), dynalite and moto (standing for AWS) in one at
//! the default weight. loadgen stays where it runs: in the root cgroup its session's
//! autogroup is already one default-weight entity beside the groups, and it moves nothing of
//! the measuring side between the two runs.

use tests::emulators::workspace_root;

use crate::{
    cgroups::{Groups, Hierarchy, Placement},
    login_flood::FloodRun,
    report::{Row, row, times},
    stack::Stack,
    weights::{self, CpuRequest},
};

/// The weighted configuration in force, and how to describe it.
pub struct Weighted {
    /// The groups (removed when dropped).
    pub groups: Groups,
    /// What went where, for the table.
    pub description: String,
}

/// Puts each process of `stack` in its group: the auth-service and the data-service at their
/// manifests' CPU requests, the emulators at the default weight.
pub fn weigh(stack: &Stack) -> anyhow::Result<Weighted> {
    let manifests = workspace_root().join("deploy/k8s");
    let auth = weights::cpu_request(&manifests.join("auth-deployment.yaml"))?;
    let data = weights::cpu_request(&manifests.join("data-deployment.yaml"))?;
    let hierarchy = Hierarchy::detect()?;
    let value = |request: &CpuRequest| {
        if hierarchy.knob() == "cpu.weight" {
            request.weight()
        } else {
            request.shares()
        }
    };
    let placements = [
        Placement {
            name: "auth",
            value: value(&auth),
            pids: vec![stack.auth.pid()],
        },
        Placement {
            name: "data",
            value: value(&data),
            pids: vec![stack.data.pid()],
        },
        Placement {
            name: "aws",
            value: hierarchy.default_value(),
            pids: stack.emulator_pids(),
        },
    ];
    let groups = Groups::create(&hierarchy, &placements)?;
    let description = format!(
        "weighted: {knob} auth-service {} (its manifest requests cpu {}), data-service {} ({}), \
         dynalite + moto {} (the default), in {}: {}; loadgen where it runs (its session's \
         autogroup, a default-weight entity)",
        value(&auth),
        auth.quantity,
        value(&data),
        data.quantity,
        hierarchy.default_value(),
        hierarchy.parent().display(),
        groups.describe(),
        knob = hierarchy.knob(),
    );
    Ok(Weighted {
        groups,
        description,
    })
}

/// The weighted flood against the flood as is: login rate and GetItem p99 both ways.
pub fn comparison_row(as_is: &FloodRun, weighted: &FloodRun) -> Row {
    let share = weighted.per_second / as_is.per_second.max(1e-9);
    row(
        "**weighted login rate** (logins/s with the CPU weights / as is), and GetItem p99 \
         during the flood / quiet both ways",
        format!(
            "as is: {:.0} logins/s, GetItem p99 {}",
            as_is.per_second,
            times(as_is.get_p99_ratio())
        ),
        format!(
            "weighted: {:.0} logins/s, GetItem p99 **{}**",
            weighted.per_second,
            times(weighted.get_p99_ratio())
        ),
        format!("**{}** of the login rate", times(share)),
        "≥ 0.80× at weighted p99 ≤ 2×",
    )
}
