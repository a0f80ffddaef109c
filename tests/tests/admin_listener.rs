//! The admin listener, against dynalite, with a throw-away PKI made by rcgen: mTLS only (a
//! client without a certificate, or with one from another CA, never gets a call through), no
//! admin RPC on the public listener, startup refused with partial admin TLS flags, every
//! admin action audited with the client certificate's subject, and grpcurl reaching the
//! service with the test CA.

use std::{net::SocketAddr, time::Duration};

use auth_service::startup::{Application, AwsClients};
use common::proto::admin::v1::{
    GetUserRequest, ListUsersRequest, admin_service_client::AdminServiceClient, get_user_request,
};
use tests::{
    admin::{ADMIN_CN, ADMIN_ORG, AdminPki},
    audit::AuditLog,
    auth::{Endpoints, TestAuth, TestUser},
    dynamodb_client, sts_client,
};
use tonic::Code;

/// How long one connection attempt may take: a hang is a failure.
const BOUND: Duration = Duration::from_secs(5);

async fn admin_auth(pki: &AdminPki) -> TestAuth {
    let mut settings = TestAuth::settings();
    pki.enable(&mut settings);
    TestAuth::spawn_with(settings, Endpoints::dynalite_only().await).await
}

fn get_by_name(username: &str) -> GetUserRequest {
    GetUserRequest {
        user: Some(get_user_request::User::Username(username.to_owned())),
    }
}

/// A GetUser over a client presenting `client`'s certificate (or none): the call's error, or
/// the connection's.
async fn try_call(pki: &AdminPki, addr: SocketAddr, client: Option<&str>) -> String {
    let attempt = async {
        match pki.connect(addr, client).await {
            Err(error) => format!("connect: {error:?}"),
            Ok(mut admin) => match admin.get_user(get_by_name("nobody")).await {
                Ok(answer) => panic!("{client:?} got an answer: {answer:?}"),
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            },
        }
    };
    tokio::time::timeout(BOUND, attempt).await.expect("no hang")
}

#[tokio::test]
async fn clients_without_a_certificate_or_from_another_ca_are_refused_at_the_handshake() {
    let _log = AuditLog::capture();
    let pki = AdminPki::new();
    let auth = admin_auth(&pki).await;
    let addr = auth.admin_addr.expect("the admin listener is on");

    for client in [None, Some("other")] {
        let refused = try_call(&pki, addr, client).await;
        // Refused by the TLS layer, not answered by a handler: never NOT_FOUND. With TLS 1.3
        // the client finishes its side of the handshake before the server checks its
        // certificate, so the refusal (an alert, then the close) may reach the first call.
        assert!(
            !refused.contains("NotFound") && !refused.contains("Unauthenticated"),
            "{client:?}: {refused}"
        );
        let transport = ["connect", "transport error", "Unavailable"];
        assert!(
            transport.iter().any(|sign| refused.contains(sign)),
            "{client:?}: {refused}"
        );
    }
    let mut admin = pki.admin(addr).await;
    let unknown = admin.get_user(get_by_name("nobody")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test]
async fn the_public_listener_answers_unimplemented_for_the_admin_service() {
    let _log = AuditLog::capture();
    let pki = AdminPki::new();
    let auth = admin_auth(&pki).await;

    let mut public = AdminServiceClient::new(auth.channel().await);
    let refused = public
        .list_users(ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    let listing = tests::process::grpcurl(&["-plaintext", &auth.addr.to_string(), "list"])
        .await
        .1;
    assert!(!listing.contains("dynagate.admin"), "{listing}");
}

#[tokio::test]
async fn startup_refuses_partial_admin_tls_flags() {
    let _log = AuditLog::capture();
    let pki = AdminPki::new();
    let endpoints = Endpoints::dynalite_only().await;
    let aws = AwsClients {
        dynamodb: dynamodb_client(&endpoints.dynamodb),
        sts: sts_client(&endpoints.sts),
    };
    let mut settings = TestAuth::settings();
    pki.enable(&mut settings);
    settings.admin.admin_client_ca = None;
    let error = Application::build(&settings, aws.clone()).await.err();
    let error = format!("{:#}", error.expect("no client CA: no start"));
    assert!(error.contains("missing --admin-client-ca"), "{error}");

    let mut settings = TestAuth::settings();
    pki.enable(&mut settings);
    settings.admin.admin_listen = None;
    let error = Application::build(&settings, aws.clone()).await.err();
    let error = format!(
        "{:#}",
        error.expect("TLS files without a listener: no start")
    );
    assert!(error.contains("need --admin-listen"), "{error}");

    let mut settings = TestAuth::settings();
    pki.enable(&mut settings);
    settings.admin.admin_tls_key = Some(pki.path("admin.key"));
    let error = Application::build(&settings, aws).await.err();
    assert!(error.is_some(), "a key that does not match the certificate");
}

#[tokio::test]
async fn every_admin_call_is_audited_with_the_certificate_subject() {
    let log = AuditLog::capture();
    let pki = AdminPki::new();
    let auth = admin_auth(&pki).await;
    let user = TestUser::register(&mut auth.client().await).await;
    let mut admin = pki.admin(auth.admin_addr.expect("on")).await;

    admin
        .get_user(get_by_name(&user.username))
        .await
        .expect("GetUser");
    let _ = admin.get_user(get_by_name("nobody-at-all")).await;

    let subject = format!("CN={ADMIN_CN}, O={ADMIN_ORG}");
    let ours = log.events(|e| {
        e["event"] == "admin_get_user" && e["username"] == user.username.to_lowercase()
    });
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["outcome"], "succeeded");
    assert_eq!(ours[0]["admin_subject"], subject.as_str(), "{ours:?}");
    assert_eq!(ours[0]["user_id"], user.user_id.as_str());
    let failed = log.events(|e| e["event"] == "admin_get_user" && e["outcome"] == "failed");
    assert!(
        failed
            .iter()
            .any(|e| e["admin_subject"] == subject.as_str()),
        "{failed:?}"
    );
}

#[tokio::test]
async fn grpcurl_with_the_test_ca_lists_and_calls_the_admin_service() {
    let _log = AuditLog::capture();
    let pki = AdminPki::new();
    let auth = admin_auth(&pki).await;
    let user = TestUser::register(&mut auth.client().await).await;
    let addr = auth.admin_addr.expect("on").to_string();
    let path = |name: &str| pki.path(name).display().to_string();
    let (ca, cert, key) = (path("server-ca.pem"), path("admin.pem"), path("admin.key"));
    let tls = ["-cacert", &ca, "-cert", &cert, "-key", &key];
    let with_tls = |rest: &[&str]| {
        let mut args = tls.to_vec();
        args.extend_from_slice(rest);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tests::process::grpcurl(&args).await
    };

    let (listed, services) = run(with_tls(&[&addr, "list"])).await;
    assert!(listed, "{services}");
    assert!(
        services.contains("dynagate.admin.v1.AdminService"),
        "{services}"
    );
    assert!(
        !services.contains("dynagate.auth.v1.AuthService"),
        "{services}"
    );

    let body = format!(r#"{{"username":"{}"}}"#, user.username);
    let call = ["-d", &body, &addr, "dynagate.admin.v1.AdminService/GetUser"];
    let (called, answer) = run(with_tls(&call)).await;
    assert!(called, "{answer}");
    assert!(answer.contains(&user.user_id), "{answer}");

    let (refused, error) = tests::process::grpcurl(&["-cacert", &ca, &addr, "list"]).await;
    assert!(
        !refused,
        "grpcurl without a client certificate got through: {error}"
    );
}
