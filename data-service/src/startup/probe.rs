//! The health probe: what must hold for the data-service to report SERVING.

use std::{future::Future, pin::Pin, time::Duration};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{auth_channel::AuthChannel, keys::KeyStore, revocations::Revocations};

/// The health probe: the revocation feed is current, the items table answers, an
/// auth-service is SERVING, and we hold keys.
pub fn probe(
    dynamodb: aws_sdk_dynamodb::Config,
    table: String,
    auth: AuthChannel,
    keys: KeyStore,
    revocations: Revocations,
) -> impl Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + 'static {
    let client = aws_sdk_dynamodb::Client::from_conf(dynamodb);
    let tables = vec![table];
    move || {
        let (client, tables, keys) = (client.clone(), tables.clone(), keys.clone());
        let mut health = HealthClient::new(auth.clone());
        let fresh = revocations.freshness().is_fresh();
        Box::pin(async move {
            if !fresh {
                return Err(
                    "no recent word from the revocation feed of any auth-service".to_owned(),
                );
            }
            common::dynamo::probe_tables(&client, &tables).await?;
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: "dynagate.auth.v1.AuthService".to_owned(),
            });
            request.set_timeout(Duration::from_secs(2));
            let status = health
                .check(request)
                .await
                .map_err(|s| format!("auth-service health: {} {}", s.code(), s.message()))?
                .into_inner()
                .status;
            if status != ServingStatus::Serving as i32 {
                return Err("auth-service is not SERVING".to_owned());
            }
            if keys.current().keys.is_empty() {
                return Err("no signing keys from the auth-service yet".to_owned());
            }
            Ok(())
        })
    }
}
