//! The auth-service when DynamoDB's answers go missing: a write that landed but whose
//! response was lost, so the SDK sends it again.

use aws_sdk_dynamodb::types::AttributeValue;
use tests::{
    auth::{Endpoints, TestAuth, TestUser},
    emulators::{Emulator, dead_addr},
    proxy::RecordingProxy,
};

#[tokio::test]
async fn a_register_retried_after_its_put_landed_creates_the_account_once_and_succeeds() {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    let settings = TestAuth::settings();
    let users_table = settings.users_table.clone();
    let endpoints = Endpoints {
        dynamodb: proxy.endpoint(),
        sts: format!("http://{}", dead_addr()),
    };
    let auth = TestAuth::spawn_with(settings, endpoints).await;
    let mut client = auth.client().await;

    proxy.drop_next_response("PutItem", &users_table);
    let user = TestUser::register(&mut client).await;

    let puts = proxy
        .requests()
        .iter()
        .filter(|r| r.operation() == "PutItem" && r.table() == Some(users_table.as_str()))
        .count();
    assert_eq!(proxy.faults_fired(), 1, "the first put's answer was lost");
    assert_eq!(puts, 2, "and the SDK sent it again");
    user.login(&mut client).await;
    let items = auth
        .dynamodb
        .scan()
        .table_name(&users_table)
        .consistent_read(true)
        .send()
        .await
        .expect("scan the users table")
        .items
        .unwrap_or_default();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["user_id"], AttributeValue::S(user.user_id));
}
