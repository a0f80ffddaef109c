//! Pieces both Dynagate services share: the generated gRPC code, access-token verification,
//! AWS setup, rich error statuses, the server bootstrap (health, reflection, tracing,
//! W3C trace context, graceful shutdown, TLS, connection and stream bounds), and the
//! `health-check` subcommand.

pub mod aws;
pub mod cache;
pub mod cli;
pub mod client;
pub mod clock;
pub mod codec;
pub mod deadline;
pub mod detached;
pub mod dynamo;
pub mod framing;
pub mod health_check;
pub mod limits;
pub mod methods;
pub mod metrics;
pub mod proto;
pub mod secrets;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod timestamp;
pub mod tls;
pub mod tokens;
pub mod trace;
