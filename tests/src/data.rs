//! Helpers for the data-service: a whole stack (auth-service + data-service) in-process,
//! against dynalite for DynamoDB and moto for STS.

pub mod rewriting_proxy;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    clock::{Clock, SystemClock},
    proto::{
        auth::v1::GetCredentialsRequest,
        data::v1::{
            GetItemRequest, Item, PutItemRequest, QueryItemsRequest, Value,
            data_service_client::DataServiceClient, value::Kind,
        },
    },
};
use data_service::{
    config::Settings,
    metrics::Metrics,
    startup::{self, Application},
};
use tonic::{Request, transport::Channel};

use crate::{
    RunningService,
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    sdk_config, test_aws_settings, unique_prefix,
};

/// A data-service running in this process.
pub struct TestData {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its Prometheus metrics are served (`http://{metrics_addr}/metrics`).
    pub metrics_addr: SocketAddr,
    /// Its settings.
    pub settings: Settings,
    /// Its counters.
    pub metrics: Arc<Metrics>,
    service: RunningService,
}

impl TestData {
    /// Test settings for a data-service using `items_table` and the auth-service at `auth`.
    pub fn settings(items_table: &str, auth: SocketAddr) -> Settings {
        let mut settings = Settings::defaults();
        settings.listen_addr = "127.0.0.1:0".parse().expect("valid address");
        settings.metrics_addr = "127.0.0.1:0".parse().expect("valid address");
        settings.auth_url = vec![format!("http://{auth}")];
        // The revocation feed on, as in production (the auth-service's test settings poll
        // every 250 ms and beat every 500 ms).
        settings.revocation_max_staleness = 30;
        settings.items_table = items_table.to_owned();
        settings.dev_ephemeral_page_token_key = true;
        settings.health_probe_secs = 1;
        settings.request_timeout_ms = 3000;
        settings.auth_timeout_ms = 1000;
        settings.aws = test_aws_settings();
        settings
    }

    /// Spawns a data-service with `settings`, its table created on the DynamoDB at `endpoint`,
    /// and waits until it is SERVING (unless `wait` is false).
    pub async fn spawn_with(settings: Settings, dynamodb_endpoint: &str, wait: bool) -> Self {
        Self::spawn_with_clock(settings, dynamodb_endpoint, wait, Arc::new(SystemClock)).await
    }

    /// [`TestData::spawn_with`], its revocations (the feed's freshness, their expiry) reading
    /// `clock`, so a test moves time (a `common::clock::ManualClock`) instead of sleeping.
    pub async fn spawn_with_clock(
        settings: Settings,
        dynamodb_endpoint: &str,
        wait: bool,
        clock: Arc<dyn Clock>,
    ) -> Self {
        common::telemetry::init_for_tests();
        let dynamodb = aws_sdk_dynamodb::Config::from(&sdk_config(dynamodb_endpoint));
        startup::create_tables(&settings, dynamodb.clone())
            .await
            .expect("create items table");
        let app = Application::build_with_clock(&settings, dynamodb, clock)
            .await
            .expect("build data-service");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr().expect("a metrics endpoint");
        let metrics = app.metrics();
        let service = RunningService::spawn("data-service", |stop| app.run_until_stopped(stop));
        if wait {
            let serving = crate::wait_serving(addr, "dynagate.data.v1.DataService").await;
            assert!(serving, "data-service did not report SERVING");
        }
        Self {
            addr,
            metrics_addr,
            settings,
            metrics,
            service,
        }
    }

    /// A channel to the service.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to data-service")
    }

    /// A client on a fresh connection.
    pub async fn client(&self) -> DataServiceClient<Channel> {
        DataServiceClient::new(self.channel().await)
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(mut self) {
        self.service.stop().await;
    }
}

/// Both services wired together on the same tables.
pub struct TestStack {
    /// The auth-service.
    pub auth: TestAuth,
    /// The data-service.
    pub data: TestData,
    /// Where DynamoDB and STS are.
    pub endpoints: Endpoints,
}

impl TestStack {
    /// A stack on the shared dynalite and moto.
    pub async fn spawn() -> Self {
        Self::spawn_on(Endpoints::shared().await).await
    }

    /// A stack on the given emulators.
    pub async fn spawn_on(endpoints: Endpoints) -> Self {
        let dynamodb = endpoints.dynamodb.clone();
        Self::spawn_custom(endpoints, &dynamodb).await
    }

    /// A stack whose data-service reaches DynamoDB at `data_dynamodb` (e.g. through a proxy)
    /// while the auth-service uses `endpoints`.
    pub async fn spawn_custom(endpoints: Endpoints, data_dynamodb: &str) -> Self {
        Self::spawn_tuned(endpoints, data_dynamodb, |_| {}).await
    }

    /// [`TestStack::spawn_custom`] with `tune` applied to the data-service's settings: how a
    /// test that depends on an interval sets it instead of relying on the default.
    pub async fn spawn_tuned(
        endpoints: Endpoints,
        data_dynamodb: &str,
        tune: impl FnOnce(&mut Settings),
    ) -> Self {
        Self::spawn_both_tuned(endpoints, data_dynamodb, |_| {}, tune).await
    }

    /// [`TestStack::spawn_tuned`] with the auth-service's settings tuned as well.
    pub async fn spawn_both_tuned(
        endpoints: Endpoints,
        data_dynamodb: &str,
        tune_auth: impl FnOnce(&mut auth_service::config::Settings),
        tune: impl FnOnce(&mut Settings),
    ) -> Self {
        let items_table = format!("{}-items", unique_prefix());
        let mut auth_settings = TestAuth::settings_for_items(&items_table);
        tune_auth(&mut auth_settings);
        let auth = TestAuth::spawn_with(auth_settings, endpoints.clone()).await;
        let mut settings = TestData::settings(&items_table, auth.addr);
        tune(&mut settings);
        let data = TestData::spawn_with(settings, data_dynamodb, true).await;
        Self {
            auth,
            data,
            endpoints,
        }
    }

    /// DynamoDB with `user`'s own temporary credentials from GetCredentials, on the stack's
    /// DynamoDB: what any user can do to their own partition without the data-service.
    pub async fn direct_access(&self, user: &SignedIn) -> DirectAccess {
        let vended = self
            .auth
            .client()
            .await
            .get_credentials(with_bearer(GetCredentialsRequest {}, &user.token))
            .await
            .expect("GetCredentials")
            .into_inner();
        assert_eq!(vended.partition_key, user.user.user_id);
        assert_eq!(vended.table_name, self.data.settings.items_table);
        let credentials = Credentials::new(
            vended.access_key_id,
            vended.secret_access_key,
            Some(vended.session_token),
            None,
            "vended",
        );
        let config = sdk_config(&self.endpoints.dynamodb)
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build();
        DirectAccess {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            table: vended.table_name,
            owner: vended.partition_key,
        }
    }

    /// A new registered, logged-in user.
    pub async fn user(&self) -> SignedIn {
        let mut auth = self.auth.client().await;
        let user = TestUser::register(&mut auth).await;
        let token = user.login(&mut auth).await.access_token;
        SignedIn {
            user,
            token,
            client: self.data.client().await,
        }
    }
}

/// A user with an access token and a data-service client.
pub struct SignedIn {
    /// The user.
    pub user: TestUser,
    /// A valid access token.
    pub token: String,
    /// A data-service client.
    pub client: DataServiceClient<Channel>,
}

impl SignedIn {
    /// `message` with this user's bearer token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        with_bearer(message, &self.token)
    }

    /// Runs `request` (strongly consistent) and follows `next_page_token` to the end: every
    /// key in order, and how many pages it took.
    pub async fn query_all(&mut self, request: QueryItemsRequest) -> (Vec<String>, usize) {
        let (mut keys, mut pages, mut token) = (Vec::new(), 0, String::new());
        loop {
            let request = self.request(QueryItemsRequest {
                page_token: token,
                consistent_read: true,
                ..request.clone()
            });
            let page = self
                .client
                .query_items(request)
                .await
                .expect("QueryItems")
                .into_inner();
            keys.extend(page.items.into_iter().map(|item| item.key));
            pages += 1;
            if page.next_page_token.is_empty() {
                return (keys, pages);
            }
            token = page.next_page_token;
        }
    }

    /// GetItem of `key`, strongly consistent.
    pub async fn get(&mut self, key: &str) -> Result<Item, tonic::Status> {
        let request = self.request(GetItemRequest {
            key: key.to_owned(),
            consistent_read: true,
            ..Default::default()
        });
        self.client
            .get_item(request)
            .await
            .map(|r| r.into_inner().item.expect("an item"))
    }

    /// Puts `key` with one string attribute `text`, returning the new version.
    pub async fn put_text(&mut self, key: &str, text: &str) -> u64 {
        let request = self.request(PutItemRequest {
            key: key.to_owned(),
            attributes: [("text".to_owned(), string(text))].into(),
            ..Default::default()
        });
        self.client
            .put_item(request)
            .await
            .expect("PutItem")
            .into_inner()
            .item
            .expect("item")
            .version
    }
}

/// A user's own DynamoDB access to the items table, as GetCredentials hands it out.
pub struct DirectAccess {
    /// A client signing with the user's temporary credentials.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The items table.
    pub table: String,
    /// The user's partition key value (their user id).
    pub owner: String,
}

impl DirectAccess {
    /// Writes exactly `attributes` (plus `owner` and `key`) as the item `key`, bypassing every
    /// rule of the data-service: the hostile data it must still read.
    pub async fn put_raw(&self, key: &str, attributes: Vec<(&str, AttributeValue)>) {
        let mut item: HashMap<String, AttributeValue> = attributes
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        item.insert("owner".into(), AttributeValue::S(self.owner.clone()));
        item.insert("key".into(), AttributeValue::S(key.to_owned()));
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(aws_sdk_dynamodb::error::DisplayErrorContext)
            .expect("raw PutItem with the user's credentials");
    }

    /// The item `key` exactly as stored.
    pub async fn get_raw(&self, key: &str) -> Option<HashMap<String, AttributeValue>> {
        self.dynamodb
            .get_item()
            .table_name(&self.table)
            .key("owner", AttributeValue::S(self.owner.clone()))
            .key("key", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_sdk_dynamodb::error::DisplayErrorContext)
            .expect("raw GetItem with the user's credentials")
            .item
    }
}

/// A string value.
pub fn string(text: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(text.to_owned())),
    }
}
