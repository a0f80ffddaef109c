//! The data-service's connection to the auth-service carries users' access tokens (on
//! GetCredentials) and their temporary AWS credentials back: it does not start with a plaintext
//! `--auth-url` to a host that is not loopback unless told the network is safe.

use data_service::startup::Application;
use tests::{data::TestData, emulators::dead_addr, sdk_config};

#[tokio::test]
async fn a_data_service_refuses_to_start_with_plaintext_to_a_remote_auth_service() {
    let dynamodb = aws_sdk_dynamodb::Config::from(&sdk_config(&format!("http://{}", dead_addr())));
    let mut settings = TestData::settings("items", dead_addr());
    settings.auth_url = vec![
        "http://127.0.0.1:50051".into(),
        "http://auth.internal:50051".into(),
    ];

    let refused = Application::build(&settings, dynamodb.clone()).await;

    let error = format!(
        "{:#}",
        refused.err().expect("a plaintext remote --auth-url")
    );
    assert!(error.contains("http://auth.internal:50051"), "{error}");
    assert!(error.contains("--allow-plaintext-auth"), "{error}");
    assert!(error.contains("--auth-ca"), "{error}");

    settings.allow_plaintext_auth = true;
    let allowed = Application::build(&settings, dynamodb.clone()).await;
    assert!(allowed.is_ok(), "allowed: {:?}", allowed.err());

    settings.allow_plaintext_auth = false;
    settings.auth_url = vec!["http://localhost:50051".into(), "http://[::1]:50051".into()];
    let loopback = Application::build(&settings, dynamodb).await;
    assert!(loopback.is_ok(), "loopback: {:?}", loopback.err());
}
