//! Every DynamoDB operation the auth-service sends, counted by operation: an SDK interceptor on
//! the service's one DynamoDB client, so no call site can be missed. The load report divides it
//! by the Logins and Refreshes of a run; tests assert a flow's exact number of calls.

use aws_sdk_dynamodb::{
    Client,
    config::{
        ConfigBag, Intercept, RuntimeComponents,
        interceptors::BeforeSerializationInterceptorContextRef,
    },
};
use aws_smithy_runtime_api::{box_error::BoxError, client::orchestrator::Metadata};
use common::metrics::LabeledCounter;

/// The operations counted by name, the label values of `dynagate_dynamodb_calls_total`; any
/// other operation counts as `other`, so the series are fixed whatever the SDK sends.
pub const DYNAMODB_OPERATIONS: &[&str] = &[
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactWriteItems",
    "DescribeTable",
    "CreateTable",
    "UpdateTimeToLive",
    "other",
];

/// `client` with every operation it sends counted in `calls` (by [`DYNAMODB_OPERATIONS`]).
/// Counted once per operation before it is sent, whatever its outcome; the SDK's own retries
/// of one operation are not counted again.
pub fn counted(client: &Client, calls: &LabeledCounter) -> Client {
    let config = client
        .config()
        .to_builder()
        .interceptor(CallCounter(calls.clone()))
        .build();
    Client::from_conf(config)
}

#[derive(Debug)]
struct CallCounter(LabeledCounter);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "DynagateCallCounter"
    }

    /// Runs once per operation, once its configuration (which names it) is loaded; a client's
    /// interceptors run `read_before_execution` before that.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg.load::<Metadata>().map(Metadata::name);
        let operation = DYNAMODB_OPERATIONS
            .iter()
            .copied()
            .find(|operation| Some(*operation) == name)
            .unwrap_or("other");
        self.0.increment(operation);
        Ok(())
    }
}
