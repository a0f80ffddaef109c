//! The core of `common/examples/put_get.rs`: register (if asked), log in, put an item and get
//! it back. A library function so the tests run exactly what the example runs.

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};
use tonic::{Status, transport::Channel};
use tower::ServiceBuilder;

use super::Session;
use crate::proto::{
    auth::v1::{RegisterRequest, auth_service_client::AuthServiceClient},
    data::v1::{
        GetItemRequest, Item, PutItemRequest, Value, data_service_client::DataServiceClient,
        value::Kind,
    },
};

/// What [`put_get`] does.
#[derive(Debug)]
pub struct PutGet {
    /// The user to log in as.
    pub username: String,
    /// Their password.
    pub password: SecretString,
    /// Register the user first.
    pub register: bool,
    /// The item's key.
    pub key: String,
    /// The item's `text` attribute.
    pub text: String,
}

/// Logs in on `auth`, puts `{text: ...}` under the key on `data` and returns the item as read
/// back.
pub async fn put_get(auth: Channel, data: Channel, run: &PutGet) -> Result<Item, Status> {
    if run.register {
        AuthServiceClient::new(auth.clone())
            .register(RegisterRequest {
                username: run.username.clone(),
                password: run.password.expose_secret().to_owned(),
            })
            .await?;
    }
    let session = Session::login(auth, &run.username, &run.password).await?;
    let mut client =
        DataServiceClient::new(ServiceBuilder::new().layer(session.layer()).service(data));

    let text = Value {
        kind: Some(Kind::StringValue(run.text.clone())),
    };
    client
        .put_item(PutItemRequest {
            key: run.key.clone(),
            attributes: HashMap::from([("text".to_owned(), text)]),
            ..Default::default()
        })
        .await?;
    let got = client
        .get_item(GetItemRequest {
            key: run.key.clone(),
            consistent_read: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    got.item
        .ok_or_else(|| Status::internal("GetItem returned no item"))
}
