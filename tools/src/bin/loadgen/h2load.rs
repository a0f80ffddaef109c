//! The data-service under `h2load` (Debian `nghttp2-client`): a prepared gRPC frame sent as
//! every request's body. h2load sees only HTTP statuses (a gRPC error is HTTP 200 with a
//! `grpc-status` trailer) and 1.52 prints no percentiles, so the response bytes are checked
//! against n × the size of a correct answer, and the percentiles come from `--log-file`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ::tests::auth::with_bearer;
use anyhow::{Context, ensure};
use common::proto::data::v1::{GetItemRequest, data_service_client::DataServiceClient};
use prost::Message;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
};

use ::tests::process::ServiceProcess as Service;
use tools::cpu::CpuUse;

use crate::{
    drive::{DATA_SERVICE, GET_KEY},
    latency::Latencies,
    report::{Row, micros, ratio, row},
};

/// `loadgen frame`: write a gRPC request frame for h2load's `--data`.
#[derive(clap::Args, Debug)]
pub struct FrameArgs {
    /// Where to write it.
    #[arg(long)]
    out: PathBuf,
    /// The key of the GetItem request.
    #[arg(long, default_value = GET_KEY)]
    key: String,
    /// A Health/Check request (service `dynagate.data.v1.DataService`) instead of GetItem.
    #[arg(long)]
    health: bool,
}

/// `loadgen frame`.
pub fn write_frame(args: &FrameArgs) -> anyhow::Result<()> {
    let body = if args.health {
        frame(&health_request())
    } else {
        frame(&GetItemRequest {
            key: args.key.clone(),
            ..Default::default()
        })
    };
    std::fs::write(&args.out, body).with_context(|| format!("writing {}", args.out.display()))
}

fn health_request() -> HealthCheckRequest {
    HealthCheckRequest {
        service: DATA_SERVICE.to_owned(),
    }
}

/// A message as one uncompressed gRPC frame: flag 0, big-endian length, the message.
pub fn frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = Vec::with_capacity(body.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// h2load from PATH, if installed.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("h2load"))
        .find(|candidate| candidate.is_file())
}

/// What one h2load run measured.
struct Run {
    latencies: Latencies,
    per_second: f64,
    /// Calls whose response body was not a correct answer (n − data bytes / answer size).
    wrong: u64,
    cpu_per_call: Duration,
}

/// The h2load rows: GetItem and Health/Check at -c8 -m8, the data-service's CPU per call.
pub async fn measure(
    h2load: &Path,
    data: &Service,
    channel: Channel,
    token: &str,
    requests: u64,
    direct_get_cpu: Duration,
) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("loadgen-h2load-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let request = GetItemRequest {
        key: GET_KEY.to_owned(),
        ..Default::default()
    };
    let answer = DataServiceClient::new(channel)
        .get_item(with_bearer(request.clone(), token))
        .await
        .context("GetItem before h2load")?
        .into_inner();
    let get_answer = answer.encoded_len() + 5;
    let health_answer = HealthCheckResponse {
        status: ServingStatus::Serving.into(),
    }
    .encoded_len()
        + 5;
    let url = |method: &str| format!("{}/{method}", data.url());
    let get = run(
        h2load,
        data,
        &dir,
        (
            &url("dynagate.data.v1.DataService/GetItem"),
            &frame(&request),
        ),
        token,
        requests,
        get_answer,
    )?;
    let health = run(
        h2load,
        data,
        &dir,
        (
            &url("grpc.health.v1.Health/Check"),
            &frame(&health_request()),
        ),
        token,
        requests,
        health_answer,
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    let describe = |run: &Run| {
        let wrong = if run.wrong == 0 {
            "every body a correct answer".to_owned()
        } else {
            format!("**{} bodies missing or wrong**", run.wrong)
        };
        format!(
            "{:.0}/s, {} ({wrong})",
            run.per_second,
            run.latencies.describe()
        )
    };
    Ok(vec![
        row(
            format!("h2load -c8 -m8 -n {requests}: GetItem vs Health/Check on the data-service"),
            format!("Health/Check: {}", describe(&health)),
            format!("GetItem: {}", describe(&get)),
            format!(
                "p50 {}",
                ratio(
                    get.latencies.percentile(0.5),
                    health.latencies.percentile(0.5)
                )
            ),
            "—",
        ),
        row(
            "**data-service CPU per GetItem (h2load -c8 -m8)**",
            format!(
                "the direct-SDK client's own CPU per GetItem (c8 above) {}",
                micros(direct_get_cpu)
            ),
            format!(
                "{} (Health/Check: {})",
                micros(get.cpu_per_call),
                micros(health.cpu_per_call)
            ),
            format!("**{}**", ratio(get.cpu_per_call, direct_get_cpu)),
            "≤ 1.25×",
        ),
    ])
}

/// One h2load run of `requests` POSTs of `body` to `url`.
fn run(
    h2load: &Path,
    data: &Service,
    dir: &Path,
    (url, body): (&str, &[u8]),
    token: &str,
    requests: u64,
    answer_bytes: usize,
) -> anyhow::Result<Run> {
    let frame_file = dir.join("frame.bin");
    let log_file = dir.join("requests.log");
    std::fs::write(&frame_file, body)?;
    // h2load appends to its log file.
    let _ = std::fs::remove_file(&log_file);
    let before = data.cpu_time()?;
    let output = Command::new(h2load)
        .args(["-c8", "-m8", "-n", &requests.to_string()])
        .arg(format!("--data={}", frame_file.display()))
        .arg(format!("--log-file={}", log_file.display()))
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .arg(url)
        .output()
        .context("running h2load")?;
    let cpu = data.cpu_time()? - before;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "h2load failed: {text}");
    let (per_second, data_bytes) = parse_output(&text)?;
    let expected = answer_bytes as u64;
    let wrong = requests.saturating_sub(data_bytes / expected.max(1))
        + u64::from(data_bytes % expected.max(1) != 0);
    let log = std::fs::read_to_string(&log_file).context("h2load's log file")?;
    let latencies = parse_log(&log);
    let calls = u32::try_from(latencies.count().max(1)).unwrap_or(u32::MAX);
    Ok(Run {
        latencies,
        per_second,
        wrong,
        cpu_per_call: cpu / calls,
    })
}

/// Requests per second and response body bytes from h2load's summary.
fn parse_output(text: &str) -> anyhow::Result<(f64, u64)> {
    let per_second = text
        .lines()
        .find_map(|line| line.strip_prefix("finished in "))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|rate| rate.trim_end_matches(" req/s").parse::<f64>().ok())
        .context("h2load's req/s")?;
    // `traffic: … total, … headers (…), 332.03KB (340000) data`: the exact count in brackets.
    let data_bytes = text
        .lines()
        .find(|line| line.starts_with("traffic:"))
        .and_then(|line| line.rsplit('(').next())
        .and_then(|last| last.split(')').next())
        .and_then(|bytes| bytes.parse::<u64>().ok())
        .context("h2load's data bytes")?;
    Ok((per_second, data_bytes))
}

/// The latencies of `--log-file` (start time, HTTP status, microseconds to the end of the
/// response); anything but a 200 counts as failed.
fn parse_log(log: &str) -> Latencies {
    let mut samples = Vec::new();
    let mut failed = 0;
    for line in log.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match (
            fields.get(1),
            fields.get(2).and_then(|us| us.parse::<u64>().ok()),
        ) {
            (Some(&"200"), Some(us)) => samples.push(Duration::from_micros(us)),
            _ => failed += 1,
        }
    }
    Latencies::new(samples, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_a_zero_flag_a_big_endian_length_and_the_message() {
        let request = GetItemRequest {
            key: "bench".to_owned(),
            ..Default::default()
        };
        let framed = frame(&request);
        assert_eq!(framed[0], 0);
        let length = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, framed.len() - 5);
        assert_eq!(GetItemRequest::decode(&framed[5..]).unwrap(), request);
    }

    #[test]
    fn the_summary_gives_the_rate_and_the_exact_body_bytes() {
        let text = "finished in 2.50s, 8000.00 req/s, 1.08MB/s\n\
                    requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed\n\
                    traffic: 2.70MB (2832415) total, 1.20MB (1262415) headers (space savings \
                    90.00%), 1.50MB (1570000) data\n";
        let (per_second, data_bytes) = parse_output(text).unwrap();
        assert!((per_second - 8000.0).abs() < 1e-9);
        assert_eq!(data_bytes, 1_570_000);
    }

    #[test]
    fn the_log_gives_latencies_and_counts_other_statuses_as_failed() {
        let log = "1700000000000000\t200\t300\n1700000000000100\t200\t100\n\
                   1700000000000200\t503\t50\n1700000000000300\t200\t200\n";
        let latencies = parse_log(log);
        assert_eq!((latencies.count(), latencies.failed), (3, 1));
        assert_eq!(latencies.percentile(0.5), Duration::from_micros(200));
        assert_eq!(latencies.percentile(1.0), Duration::from_micros(300));
    }
}
