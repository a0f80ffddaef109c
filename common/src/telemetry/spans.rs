//! What becomes of spans: with an OTLP endpoint, a batch exporter sends them over gRPC (on our
//! own tonic channel) to a collector; without one they only give requests their trace ids, and
//! no exporter thread, queue or connection exists.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider},
};
use tonic::transport::Endpoint;

use super::{
    on_runtime::OnRuntime,
    queue::{Bounded, Dequeuing, Queue},
    sampler::Sampler,
};
use crate::tls::ClientTls;

/// The most one export (a batch of spans) may take, the standard OTLP default; a collector
/// that does not answer holds one batch this long, while new spans wait in the bounded queue.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection to the collector may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest shutdown waits for the last spans to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The default of `--otlp-queue-spans`: the batch processor's standard queue size.
pub const DEFAULT_QUEUE_SPANS: u64 = 2048;

/// Where spans go: the OTLP collector and what may wait for it.
#[derive(Clone, Debug, clap::Args)]
pub struct TracingSettings {
    /// OTLP/gRPC endpoint spans are exported to (an OpenTelemetry Collector, or Jaeger's
    /// OTLP port), e.g. `http://127.0.0.1:4317`. When unset, the standard
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is used; with none
    /// of them, nothing is exported (trace ids still mark the logs and `x-trace-id`).
    /// `OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_RESOURCE_ATTRIBUTES` and
    /// `OTEL_BSP_SCHEDULE_DELAY` apply as the OpenTelemetry specification says.
    #[arg(long, env = "DYNAGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// PEM CA certificate(s) to trust for an https:// --otlp-endpoint, and only those; an
    /// https:// endpoint needs it (no system roots are built in: for a public intake, give the
    /// system's bundle, e.g. /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, env = "DYNAGATE_OTLP_CA")]
    pub otlp_ca: Option<PathBuf>,

    /// Spans that may wait for the collector; past that, new spans are dropped and counted
    /// (`dynagate_trace_spans_dropped_total{reason="queue_full"}`), so a slow or dead collector
    /// costs at most this many spans of memory (plus one batch being sent) and never delays a
    /// call.
    #[arg(long, env = "DYNAGATE_OTLP_QUEUE_SPANS", default_value_t = DEFAULT_QUEUE_SPANS,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub otlp_queue_spans: u64,
}

impl Default for TracingSettings {
    /// Nothing exported; the flags' defaults.
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_ca: None,
            otlp_queue_spans: DEFAULT_QUEUE_SPANS,
        }
    }
}

impl TracingSettings {
    /// The endpoint spans are exported to, if any: the flag (or `DYNAGATE_OTLP_ENDPOINT`), else
    /// the standard variables. An empty value counts as unset.
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint_with(|variable| std::env::var(variable).ok())
    }

    /// [`TracingSettings::endpoint`], reading the standard variables with `env`.
    fn endpoint_with(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        let standard = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .filter_map(env);
        self.otlp_endpoint
            .clone()
            .into_iter()
            .chain(standard)
            .map(|endpoint| endpoint.trim().to_owned())
            .find(|endpoint| !endpoint.is_empty())
    }

    /// The channel to the collector at `endpoint`, TLS when it is https:// (with --otlp-ca).
    /// Connects lazily, so a collector that is down does not stop startup.
    fn channel(&self, endpoint: &str) -> anyhow::Result<tonic::transport::Channel> {
        let parsed = Endpoint::from_shared(endpoint.to_owned())
            .with_context(|| format!("--otlp-endpoint {endpoint:?}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT);
        let tls = ClientTls::load(self.otlp_ca.as_deref(), None, None, ["--otlp-ca", "", ""])?;
        let parsed = tls
            .apply(parsed)
            .with_context(|| format!("--otlp-endpoint {endpoint:?}"))?;
        Ok(parsed.connect_lazy())
    }
}

/// The span pipeline of one process: the tracer every span of ours is built with, and whether
/// its spans leave the process.
#[derive(Clone, Debug)]
pub struct Spans {
    provider: SdkTracerProvider,
    exported_to: Option<String>,
}

impl Spans {
    /// Spans that give trace ids and go nowhere: no exporter, thread or queue.
    pub fn local(service: &'static str) -> Self {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::from_env())
            .with_resource(resource(service))
            .build();
        Self {
            provider,
            exported_to: None,
        }
    }

    /// The pipeline `settings` ask for: exported over OTLP/gRPC when an endpoint is set, else
    /// [`Spans::local`]. Needs a Tokio runtime (the channel's connection runs on it).
    pub fn new(service: &'static str, settings: &TracingSettings) -> anyhow::Result<Self> {
        let Some(endpoint) = settings.endpoint() else {
            return Ok(Self::local(service));
        };
        let bound = usize::try_from(settings.otlp_queue_spans).unwrap_or(usize::MAX);
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_channel(settings.channel(&endpoint)?)
            .build()
            .context("the OTLP span exporter")?;
        let exporter = OnRuntime::current(exporter).context("exporting spans needs a runtime")?;
        let queue = Queue::new(bound);
        // The environment may set the delay between exports; never the queue's size, which is
        // ours so that the queue counts what it drops.
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(bound)
            .build();
        let batch = BatchSpanProcessor::new(Dequeuing::new(exporter, queue.clone()), config);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded::new(batch, queue))
            .with_sampler(Sampler::from_env())
            .with_resource(resource(service))
            .build();
        Ok(Self {
            provider,
            exported_to: Some(endpoint),
        })
    }

    /// Where spans are exported to, if anywhere.
    pub fn exported_to(&self) -> Option<&str> {
        self.exported_to.as_deref()
    }

    /// The tracer the OpenTelemetry layer builds spans with.
    pub(super) fn tracer(&self) -> SdkTracer {
        self.provider.tracer("dynagate")
    }

    /// Exports what is still queued (waiting at most [`SHUTDOWN_TIMEOUT`]) and stops the
    /// exporter; spans started later go nowhere. Blocks: call it off the async threads.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        self.provider
            .shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            .map_err(|error| anyhow::anyhow!("exporting the last spans: {error}"))
    }
}

/// What the exported spans say about their process: `service.name`, `service.version`, and
/// whatever `OTEL_RESOURCE_ATTRIBUTES` adds (e.g. `deployment.environment`).
fn resource(service: &'static str) -> Resource {
    Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn endpoint(flag: Option<&str>, env: &[(&str, &str)]) -> Option<String> {
        let env: HashMap<_, _> = env.iter().copied().collect();
        let settings = TracingSettings {
            otlp_endpoint: flag.map(str::to_owned),
            ..TracingSettings::default()
        };
        settings.endpoint_with(|variable| env.get(variable).map(|value| (*value).to_owned()))
    }

    #[test]
    fn the_flag_comes_first_then_the_traces_variable_then_the_general_one() {
        let traces = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317");
        let general = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4317");
        let flag = Some("http://flag:4317");
        assert_eq!(endpoint(flag, &[traces, general]).as_deref(), flag);
        assert_eq!(
            endpoint(None, &[traces, general]).as_deref(),
            Some("http://traces:4317")
        );
        assert_eq!(
            endpoint(None, &[general]).as_deref(),
            Some("http://general:4317")
        );
    }

    #[test]
    fn nothing_set_or_only_blanks_is_no_endpoint_and_no_exporter() {
        assert_eq!(endpoint(None, &[]), None);
        let blank = [("OTEL_EXPORTER_OTLP_ENDPOINT", " ")];
        assert_eq!(endpoint(Some(""), &blank), None);
    }

    #[tokio::test]
    async fn an_https_endpoint_without_a_ca_is_refused_at_startup() {
        let settings = TracingSettings {
            otlp_endpoint: Some("https://collector:4317".into()),
            ..TracingSettings::default()
        };
        let error = Spans::new("test", &settings).expect_err("no CA to trust");
        assert!(format!("{error:#}").contains("no CA"), "{error:#}");
    }
}
