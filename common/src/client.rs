//! Calling Dynagate from Rust without boilerplate: a [`Session`] that logs in and keeps its
//! tokens fresh, and a tower [`BearerLayer`] that puts `authorization: Bearer <token>` on every
//! call of a tonic client built on it.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use common::{client::Session, proto::data::v1::data_service_client::DataServiceClient};
//! use tonic::transport::Channel;
//!
//! let auth = Channel::from_static("http://127.0.0.1:50051").connect().await?;
//! let session = Session::login(auth, "alice", &"correct horse battery".into()).await?;
//! let channel = Channel::from_static("http://127.0.0.1:50052").connect().await?;
//! let mut data = DataServiceClient::new(tower::ServiceBuilder::new()
//!     .layer(session.layer())
//!     .service(channel));
//! # Ok(()) }
//! ```
//!
//! The access token is refreshed in the background once less than a minute (or a tenth of its
//! lifetime, if shorter) is left, while calls keep using the current one; only a call that
//! finds it expired waits, and one Refresh serves every waiting call.

mod example;
mod layer;
mod session;

pub use example::{PutGet, put_get};
pub use layer::{BearerLayer, BearerService};
pub use session::Session;
