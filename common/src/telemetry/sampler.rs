//! Which traces are recorded: the standard choice (`OTEL_TRACES_SAMPLER`, by default
//! `parentbased_always_on`: every trace a caller did not ask to leave out), except the health
//! checks that start a trace of their own. Load balancers, Kubernetes probes and the
//! data-service's own dependency probe call `grpc.health.v1.Health/Check` every few seconds;
//! exported, they would bury the traces that matter. They still get a trace id (logs and
//! `x-trace-id`), only no exported span. A health check inside a caller's sampled trace is
//! recorded as the caller asked.

use opentelemetry::{
    Context, KeyValue,
    trace::{Link, SpanKind, TraceContextExt, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{Config, SamplingDecision, SamplingResult, ShouldSample};

/// The names of the health service's spans start so.
const HEALTH: &str = "grpc.health.v1.Health/";

/// The configured sampler, but for health checks that start a trace.
#[derive(Clone, Debug)]
pub struct Sampler {
    configured: Box<dyn ShouldSample>,
}

impl Sampler {
    /// The sampler the standard environment variables choose (`OTEL_TRACES_SAMPLER`,
    /// `OTEL_TRACES_SAMPLER_ARG`), health checks aside.
    pub fn from_env() -> Self {
        Self {
            configured: Config::default().sampler,
        }
    }
}

impl ShouldSample for Sampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let has_parent =
            parent_context.is_some_and(|context| context.span().span_context().is_valid());
        if !has_parent && name.starts_with(HEALTH) {
            return SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            };
        }
        self.configured
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags};

    use super::*;

    fn decision(sampler: &Sampler, parent: Option<&Context>, name: &str) -> SamplingDecision {
        let trace_id = TraceId::from(7_u128);
        sampler
            .should_sample(parent, trace_id, name, &SpanKind::Server, &[], &[])
            .decision
    }

    #[test]
    fn a_health_check_that_starts_a_trace_is_not_recorded() {
        let sampler = Sampler::from_env();
        let check = "grpc.health.v1.Health/Check";
        assert_eq!(decision(&sampler, None, check), SamplingDecision::Drop);
        let empty = Context::new();
        assert_eq!(
            decision(&sampler, Some(&empty), check),
            SamplingDecision::Drop
        );
        let call = "dynagate.data.v1.DataService/GetItem";
        assert_eq!(
            decision(&sampler, None, call),
            SamplingDecision::RecordAndSample
        );
    }

    #[test]
    fn a_health_check_in_a_sampled_trace_is_recorded() {
        let sampler = Sampler::from_env();
        let parent = SpanContext::new(
            TraceId::from(7_u128),
            SpanId::from(9_u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let parent = Context::new().with_remote_span_context(parent);
        assert_eq!(
            decision(&sampler, Some(&parent), "grpc.health.v1.Health/Check"),
            SamplingDecision::RecordAndSample
        );
    }
}
