//! The data path against its baselines: GetItem, PutItem (new keys with `if_absent`, and
//! replacing existing items unconditionally) and QueryItems through the data-service and
//! through a direct `aws-sdk-dynamodb` client on the same dynalite, one call at a time (c1) and
//! from 8 tasks (c8), with the data-service's DynamoDB requests per RPC over the same loads;
//! the CPU per call of each process; and the added latency of the data-service against the
//! bare gRPC hop (Health/Check, same tonic client).

use std::time::Duration;

use crate::{
    drive::{Driven, Driver, Op, Target},
    latency::PACE,
    report::{Row, micros, ratio, row, times},
};

/// The concurrent loads' task count.
pub const CONCURRENT: usize = 8;

/// What the later rows (h2load) compare with.
pub struct Baselines {
    /// The direct-SDK client's own CPU per GetItem at c8.
    pub direct_get_cpu: Duration,
}

/// Every data-path row.
pub async fn measure(driver: &Driver) -> anyhow::Result<(Vec<Row>, Baselines)> {
    let mut rows = Vec::new();
    let mut direct_get_cpu = Duration::ZERO;
    let mut sequential_get = None;
    let mut dynalite = Vec::new();
    for op in [Op::Get, Op::Put, Op::Replace, Op::Query] {
        for concurrency in [1, CONCURRENT] {
            let (direct, via) = driver.compare(op, concurrency).await?;
            rows.push(latency_row(op, concurrency, &direct, &via));
            dynalite.push(format!(
                "{} c{concurrency} {} / {}",
                op.name(),
                micros(direct.cpu_per_call("dynalite")),
                micros(via.cpu_per_call("dynalite"))
            ));
            if concurrency == CONCURRENT {
                rows.push(cpu_row(op, &direct, &via));
                if op == Op::Get {
                    direct_get_cpu = direct.cpu_per_call("self");
                }
            } else if op == Op::Get {
                sequential_get = Some((direct, via));
            }
        }
    }
    rows.push(dynalite_row(&dynalite));
    let health =
        |concurrency, pace| driver.drive_rounds(Target::Data, Op::Health, concurrency, pace);
    let hop = health(1, PACE).await?;
    let back_to_back = health(1, Duration::ZERO).await?;
    let hop_concurrent = health(CONCURRENT, Duration::ZERO).await?;
    rows.push(row(
        "Health/Check on the data-service (the bare gRPC hop): c1 one call every 2 ms / c1 \
         back to back / c8",
        "—",
        format!(
            "{}; {}, {:.0}/s; {}, {:.0}/s, data-service CPU {} per call",
            describe(&hop),
            describe(&back_to_back),
            back_to_back.throughput(),
            describe(&hop_concurrent),
            hop_concurrent.throughput(),
            micros(hop_concurrent.cpu_per_call("data"))
        ),
        "—",
        "—",
    ));
    if let Some((direct, via)) = sequential_get {
        let added = via.latencies.p50.saturating_sub(direct.latencies.p50);
        rows.push(row(
            "**added latency p50, sequential GetItem** = (p50 via the data-service − p50 of the \
             direct SDK, both c1) / p50 of Health/Check on the data-service (same tonic client, \
             one call every 2 ms so that each finds the threads asleep, as a GetItem does)",
            format!(
                "bare gRPC hop p50 {} (back to back: {})",
                micros(hop.latencies.p50),
                micros(back_to_back.latencies.p50)
            ),
            format!(
                "{} − {} = {}",
                micros(via.latencies.p50),
                micros(direct.latencies.p50),
                micros(added)
            ),
            format!("**{}**", ratio(added, hop.latencies.p50)),
            "≤ 1.15×",
        ));
    }
    Ok((rows, Baselines { direct_get_cpu }))
}

/// dynalite's CPU per call of every load, `GetItem c1 … / …` each.
fn dynalite_row(loads: &[String]) -> Row {
    row(
        "dynalite's CPU per call (its process's user + system time over each measured window / \
         the load's calls): direct SDK / through the data-service",
        "—",
        loads.join("; "),
        "—",
        "—",
    )
}

fn describe(driven: &Driven) -> String {
    let failed = if driven.latencies.failed > 0 {
        format!(", **{} failed**", driven.latencies.failed)
    } else {
        String::new()
    };
    format!(
        "p50 {}, p99 {}{failed}",
        micros(driven.latencies.p50),
        micros(driven.latencies.p99)
    )
}

fn latency_row(op: Op, concurrency: usize, direct: &Driven, via: &Driven) -> Row {
    row(
        format!(
            "{} c{concurrency}: latency, throughput ({} calls through the data-service)",
            op.name(),
            via.latencies.calls
        ),
        format!(
            "direct SDK: {}, {:.0}/s",
            describe(direct),
            direct.throughput()
        ),
        format!(
            "{}, {:.0}/s{}",
            describe(via),
            via.throughput(),
            via.dynamodb_calls_per_rpc()
                .map_or_else(String::new, |per_rpc| format!(
                    "; **{per_rpc:.2} DynamoDB calls per RPC**"
                ))
        ),
        format!(
            "p50 {}, p99 {}, throughput {}",
            ratio(via.latencies.p50, direct.latencies.p50),
            ratio(via.latencies.p99, direct.latencies.p99),
            times(via.throughput() / direct.throughput().max(1e-9))
        ),
        "—",
    )
}

fn cpu_row(op: Op, direct: &Driven, via: &Driven) -> Row {
    let (baseline, measured) = (direct.cpu_per_call("self"), via.cpu_per_call("data"));
    let (figure, target) = if op == Op::Get {
        (
            format!("**data-service CPU per {} (c{CONCURRENT})**", op.name()),
            "≤ 1.25×",
        )
    } else {
        (
            format!("data-service CPU per {} (c{CONCURRENT})", op.name()),
            "—",
        )
    };
    row(
        figure,
        format!(
            "the direct-SDK client's own CPU per call {}",
            micros(baseline)
        ),
        format!(
            "{} (meanwhile per call: auth-service {}, the tonic client {})",
            micros(measured),
            micros(via.cpu_per_call("auth")),
            micros(via.cpu_per_call("self"))
        ),
        if op == Op::Get {
            format!("**{}**", ratio(measured, baseline))
        } else {
            ratio(measured, baseline)
        },
        target,
    )
}
