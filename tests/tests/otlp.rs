//! Spans exported over OTLP/gRPC to a real receiver (`tests::otlp`, the collector's
//! TraceService from the `opentelemetry-proto` package): one GetItem that loads credentials
//! is one trace with spans from both services, linked parent to child across the hop; a
//! service without an endpoint exports nothing and runs no exporter, yet still passes the
//! trace on; a collector that never answers holds at most the queue's bound of spans and
//! delays no call nor the shutdown. The services run as processes (each its own `service.name`, its own exporter,
//! flushed when it stops): build them first (`cargo build --workspace --bins`).

use std::collections::HashMap;

use common::{
    proto::{
        auth::v1::{ListSigningKeysRequest, auth_service_client::AuthServiceClient},
        data::v1::{GetItemRequest, data_service_client::DataServiceClient},
    },
    trace::TRACE_ID_HEADER,
};
use tests::{
    auth::{TestUser, with_bearer},
    emulators::Emulator,
    otlp::{OtlpReceiver, ReceivedSpan},
    process::{ServiceProcess, auth_tables_env, aws_env, http_get, owned_env},
    unique_prefix,
};
use tonic::Code;

const GET_ITEM: &str = "dynagate.data.v1.DataService/GetItem";
const GET_CREDENTIALS: &str = "dynagate.auth.v1.AuthService/GetCredentials";
/// The batch processor's thread, as `/proc/PID/task/*/comm` shows it (cut to 15 bytes).
const EXPORTER_THREAD: &str = "OpenTelemetry";

/// Both services, on fresh tables, with `auth_env` and `data_env` added to their settings.
struct Pair {
    auth: ServiceProcess,
    data: ServiceProcess,
}

impl Pair {
    async fn start(auth_env: &[(&str, String)], data_env: &[(&str, String)]) -> Self {
        let dynalite = Emulator::shared_dynalite().await.endpoint();
        let prefix = unique_prefix();
        let auth = start_auth(&prefix, auth_env).await;
        let data: HashMap<_, _> = aws_env(&dynalite, None)
            .into_iter()
            .chain(owned_env(&[
                ("DYNAGATE_AUTH_URL", auth.url()),
                ("DYNAGATE_ITEMS_TABLE", format!("{prefix}-items")),
                ("DYNAGATE_DEV_EPHEMERAL_PAGE_TOKEN_KEY", "true".into()),
            ]))
            .chain(owned_env(data_env))
            .collect();
        let data = ServiceProcess::start("data-service", &data).expect("start data-service");
        assert!(tests::wait_serving(data.addr, "dynagate.data.v1.DataService").await);
        Self { auth, data }
    }

    /// A new user's first GetItem (so the data-service loads the user's credentials from the
    /// auth-service), with no `traceparent`: the trace id the data-service answers with.
    async fn first_get_item(&self) -> String {
        let mut auth = AuthServiceClient::connect(self.auth.url())
            .await
            .expect("connect");
        let user = TestUser::register(&mut auth).await;
        let token = user.login(&mut auth).await.access_token;
        let mut data = DataServiceClient::connect(self.data.url())
            .await
            .expect("connect");
        let request = GetItemRequest {
            key: "nothing-here".into(),
            ..Default::default()
        };
        let missing = data
            .get_item(with_bearer(request, &token))
            .await
            .expect_err("no such item");
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
        let trace_id = missing.metadata().get(TRACE_ID_HEADER).expect("x-trace-id");
        trace_id.to_str().expect("ascii").to_owned()
    }

    /// Stops both (SIGTERM, as an orchestrator would): each exports its last spans first.
    fn stop(self) {
        self.data.stop().expect("data-service stops cleanly");
        self.auth.stop().expect("auth-service stops cleanly");
    }
}

/// An auth-service on tables named after `prefix`, with `env` added to its settings.
async fn start_auth(prefix: &str, env: &[(&str, String)]) -> ServiceProcess {
    let dynalite = Emulator::shared_dynalite().await.endpoint();
    let moto = Emulator::shared_moto().await.endpoint();
    let auth: HashMap<_, _> = aws_env(&dynalite, Some(&moto))
        .into_iter()
        .chain(auth_tables_env(prefix, &format!("{prefix}-items")))
        .chain(owned_env(&[
            ("DYNAGATE_ARGON2_MEMORY_KIB", "256".into()),
            ("DYNAGATE_ARGON2_ITERATIONS", "1".into()),
        ]))
        .chain(owned_env(env))
        .collect();
    ServiceProcess::start("auth-service", &auth).expect("start auth-service")
}

/// The value of `series` on `process`'s metrics page.
async fn metric(process: &ServiceProcess, series: &str) -> f64 {
    let (status, text) = http_get(process.metrics_addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '));
    let value = value.unwrap_or_else(|| panic!("{series} in {text}"));
    value.parse().expect("a number")
}

/// Whether `process` runs the batch exporter's thread.
fn runs_an_exporter(process: &ServiceProcess) -> bool {
    let names = process.thread_names().expect("thread names");
    names.iter().any(|name| name.starts_with(EXPORTER_THREAD))
}

/// The one span of `spans` with `name`, `kind` and `service`.
fn the_span<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    kind: &str,
    name: &str,
) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|span| span.service == service && span.kind == kind && span.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} span {name} of {service} in {spans:#?}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_get_item_that_loads_credentials_is_one_trace_across_both_services() {
    let receiver = OtlpReceiver::start().expect("the OTLP receiver");
    // One service told by our flag's variable, the other by the standard one.
    let pair = Pair::start(
        &[("DYNAGATE_OTLP_ENDPOINT", receiver.endpoint())],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())],
    )
    .await;
    assert!(runs_an_exporter(&pair.auth) && runs_an_exporter(&pair.data));

    let trace_id = pair.first_get_item().await;
    pair.stop();

    let trace = receiver.trace(&trace_id).expect("the received spans");
    let services: std::collections::BTreeSet<_> =
        trace.iter().map(|span| span.service.as_str()).collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["auth-service", "data-service"],
        "{trace:#?}"
    );
    let get_item = the_span(&trace, "data-service", "SERVER", GET_ITEM);
    let call = the_span(&trace, "data-service", "CLIENT", GET_CREDENTIALS);
    let served = the_span(&trace, "auth-service", "SERVER", GET_CREDENTIALS);
    assert_eq!(
        get_item.parent_span_id, "",
        "the caller sent no traceparent: a root"
    );
    assert_eq!(call.parent_span_id, get_item.span_id);
    assert_eq!(served.parent_span_id, call.span_id, "linked across the hop");
    assert_eq!(get_item.attributes["rpc.system"], "grpc");
    assert_eq!(get_item.attributes["rpc.grpc.status_code"], 5, "NOT_FOUND");
    // Every span of the trace hangs off the root: none is orphaned by a lost parent.
    let ids: Vec<_> = trace.iter().map(|span| span.span_id.as_str()).collect();
    for span in &trace {
        let linked = span.parent_span_id.is_empty() || ids.contains(&span.parent_span_id.as_str());
        assert!(linked, "{span:#?} has no parent in the trace");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_the_trace_still_crosses() {
    let receiver = OtlpReceiver::start().expect("the OTLP receiver");
    // The data-service gets other standard variables, but no endpoint.
    let pair = Pair::start(
        &[("DYNAGATE_OTLP_ENDPOINT", receiver.endpoint())],
        &[("OTEL_TRACES_SAMPLER", "always_on".into())],
    )
    .await;
    assert!(runs_an_exporter(&pair.auth));
    assert!(
        !runs_an_exporter(&pair.data),
        "no exporter thread, queue or connection"
    );

    let trace_id = pair.first_get_item().await;
    pair.stop();

    let received = receiver.spans().expect("the received spans");
    let senders: Vec<_> = received.iter().map(|span| span.service.as_str()).collect();
    assert!(
        !senders.is_empty() && senders.iter().all(|service| *service == "auth-service"),
        "{senders:?}"
    );
    // The data-service made its spans (trace id, traceparent) without exporting them.
    let trace = receiver.trace(&trace_id).expect("the received spans");
    let served = the_span(&trace, "auth-service", "SERVER", GET_CREDENTIALS);
    assert_eq!(served.parent_span_id.len(), 16, "{served:#?}");
    let received_ids: Vec<_> = received.iter().map(|span| span.span_id.as_str()).collect();
    assert!(!received_ids.contains(&served.parent_span_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_holds_at_most_the_queue_and_delays_nothing() {
    const QUEUE: f64 = 4.0;
    const MAX_CALLS: usize = 2000;
    // Accepts connections and never says a word: every export waits for its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let auth = start_auth(
        &unique_prefix(),
        &[
            ("DYNAGATE_OTLP_ENDPOINT", endpoint),
            ("DYNAGATE_OTLP_QUEUE_SPANS", QUEUE.to_string()),
        ],
    )
    .await;
    let mut client = AuthServiceClient::connect(auth.url())
        .await
        .expect("connect");
    let full = r#"dynagate_trace_spans_dropped_total{reason="queue_full"}"#;

    // Anonymous calls, each a span, until spans are turned away at the bound.
    let mut calls = 0;
    while metric(&auth, full).await == 0.0 {
        assert!(calls < MAX_CALLS, "no span turned away after {calls} calls");
        for _ in 0..10 {
            let listed = client.list_signing_keys(ListSigningKeysRequest {}).await;
            listed.expect("answered whatever the collector does");
            calls += 1;
        }
        assert!(metric(&auth, "dynagate_trace_spans_queued").await <= QUEUE);
    }

    // The shutdown gives up on the collector after its timeout and exits cleanly.
    auth.stop().expect("auth-service stops cleanly");
}
