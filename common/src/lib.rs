//! Pieces both Dynagate services share: the generated gRPC code, access-token verification,
//! AWS setup, rich error statuses, and the server bootstrap (health, reflection, tracing,
//! graceful shutdown).

pub mod aws;
pub mod cache;
pub mod clock;
pub mod codec;
pub mod deadline;
pub mod dynamo;
pub mod framing;
pub mod metrics;
pub mod proto;
pub mod secrets;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod tokens;
