//! The login side's probes and its cancellation flood: the paced ListSigningKeys and GetItem
//! probes the login flood (`login_flood`) runs beside it, and a cancellation flood (how many
//! argon2 jobs ever run at once).

use std::{path::PathBuf, time::Duration};

use common::proto::{
    auth::v1::{ListSigningKeysRequest, auth_service_client::AuthServiceClient},
    data::v1::{GetItemRequest, data_service_client::DataServiceClient},
};
use tests::auth::{TestUser, with_bearer};
use tonic::transport::Channel;

use crate::{
    drive::GET_KEY,
    floods::{self, Outcomes, Sampler},
    latency::{self, Latencies},
    report::{Row, note, row},
};

/// The two paced probes, each on its own connection: ListSigningKeys (auth-service) and
/// GetItem (data-service).
#[derive(Clone)]
pub struct Probes {
    /// A connection to the auth-service.
    pub auth: Channel,
    /// A connection to the data-service.
    pub data: Channel,
    /// The bench user's access token.
    pub token: String,
}

impl Probes {
    /// Both probes at once for `duration`.
    pub async fn run(&self, duration: Duration) -> (Latencies, Latencies) {
        let auth = AuthServiceClient::new(self.auth.clone());
        let data = DataServiceClient::new(self.data.clone());
        let token = self.token.clone();
        tokio::join!(
            latency::probe(duration, || {
                let mut auth = auth.clone();
                async move {
                    auth.list_signing_keys(ListSigningKeysRequest {})
                        .await
                        .is_ok()
                }
            }),
            latency::probe(duration, || {
                let (mut data, token) = (data.clone(), token.clone());
                async move {
                    let request = GetItemRequest {
                        key: GET_KEY.to_owned(),
                        ..Default::default()
                    };
                    data.get_item(with_bearer(request, &token)).await.is_ok()
                }
            })
        )
    }
}

/// The cancellation flood's rows: how many hashing threads ever ran at once.
pub async fn cancellation_flood(
    channel: &Channel,
    user: &TestUser,
    threads: &[PathBuf],
    (tasks, deadline, duration): (usize, Duration, Duration),
) -> Vec<Row> {
    let sampler = Sampler::start(threads.to_vec());
    let outcomes: Outcomes =
        floods::cancellation_flood(channel, user, tasks, deadline, duration).await;
    let (most_running, samples) = sampler.finish();
    vec![
        note(
            format!(
                "cancellation flood: {tasks} tasks × {} s, {} ms deadlines",
                duration.as_secs(),
                deadline.as_millis()
            ),
            format!(
                "{} calls: {} timed out, {} refused (queue full), {} connection-level \
                 (GOAWAY, transport), {} answered",
                outcomes.total(),
                outcomes.timed_out,
                outcomes.refused,
                outcomes.connection,
                outcomes.ok + outcomes.other
            ),
        ),
        row(
            "**argon2 jobs running at most** (hash-worker threads in state R)",
            format!("{} workers", threads.len()),
            format!("**{most_running}** ({samples} samples, ~1 ms apart)"),
            "—",
            "≤ workers",
        ),
    ]
}
