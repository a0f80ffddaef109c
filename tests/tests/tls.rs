//! TLS on both gRPC servers and on the data-service's channel to the auth-service, with a
//! throw-away CA made by rcgen: a client trusting the CA gets through; plaintext, a client
//! trusting another CA, and (with `--tls-client-ca`) a client without a certificate from the
//! CA are refused; the `health-check` subcommand speaks TLS to its own server; grpcurl with
//! `-cacert` lists the services through reflection; and a TLS data-service reaches two mTLS
//! auth-service replicas end to end.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use common::{
    health_check::{self, HEALTH_CHECK_TIMEOUT},
    proto::auth::v1::{
        ListSigningKeysRequest, RegisterRequest, WatchRevocationsRequest,
        auth_service_client::AuthServiceClient,
    },
    tls::ServerTlsSettings,
};
use rcgen::DnType;
use tests::{
    auth::{Endpoints, TestAuth, TestUser},
    data::{SignedIn, TestData},
    eventually,
    pki::PemDir,
    unique_prefix,
};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

/// How long any single connection attempt in these tests may take: a hang is a failure.
const BOUND: Duration = Duration::from_secs(5);

/// A throw-away CA on disk, the certificates it issued, and one from an unrelated CA.
struct Pki {
    pem: PemDir,
}

impl Pki {
    fn new() -> Self {
        let pem = PemDir::new("tls");
        let leaf = |ca, name, dns| pem.leaf(ca, name, dns, &[(DnType::CommonName, dns)]);
        let ca = pem.ca("ca", "Dynagate test CA");
        leaf(&ca, "server", "localhost");
        leaf(&ca, "client", "data-service");
        let other = pem.ca("other-ca", "Someone else's CA");
        leaf(&other, "other-client", "data-service");
        leaf(&other, "other-server", "localhost");
        Self { pem }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.pem.path(name)
    }

    /// Server settings presenting `server.pem`.
    fn server(&self) -> ServerTlsSettings {
        ServerTlsSettings {
            tls_cert: Some(self.path("server.pem")),
            tls_key: Some(self.path("server.key")),
        }
    }
}

/// A TLS channel to `addr` trusting `ca`, presenting `client` (`{name}.pem`/`.key`) if given.
async fn tls_channel(
    pki: &Pki,
    addr: SocketAddr,
    ca: &str,
    client: Option<&str>,
) -> Result<Channel, String> {
    let read = |path: PathBuf| std::fs::read(path).expect("read a PEM file");
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(pki.path(ca))));
    if let Some(name) = client {
        tls = tls.identity(Identity::from_pem(
            read(pki.path(&format!("{name}.pem"))),
            read(pki.path(&format!("{name}.key"))),
        ));
    }
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .expect("valid uri")
        .tls_config(tls)
        .expect("TLS config")
        .connect_timeout(BOUND);
    bounded(async { endpoint.connect().await.map_err(|e| format!("{e:?}")) }).await
}

/// `future`, failing the test if it does not finish within [`BOUND`].
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .expect("finished within the bound, no hang")
}

/// One cheap call (ListSigningKeys) on `channel`.
async fn list_keys(channel: Channel) -> Result<(), tonic::Status> {
    bounded(AuthServiceClient::new(channel).list_signing_keys(ListSigningKeysRequest {}))
        .await
        .map(drop)
}

/// Connects with `ca`/`client` and makes one call; the error text if either fails.
async fn try_call(
    pki: &Pki,
    addr: SocketAddr,
    ca: &str,
    client: Option<&str>,
) -> Result<(), String> {
    let channel = tls_channel(pki, addr, ca, client).await?;
    list_keys(channel)
        .await
        .map_err(|status| format!("{status:?}"))
}

/// Registers and logs in a new user over TLS (presenting `client` if given): the user and
/// its access token.
async fn sign_up_over_tls(pki: &Pki, addr: SocketAddr, client: Option<&str>) -> (TestUser, String) {
    let channel = tls_channel(pki, addr, "ca.pem", client)
        .await
        .expect("TLS connect");
    let mut client = AuthServiceClient::new(channel);
    let user = TestUser::register(&mut client).await;
    let token = user.login(&mut client).await.access_token;
    assert!(!token.is_empty());
    (user, token)
}

/// An auth-service with TLS from `pki`, requiring client certificates from its CA if `mtls`.
async fn tls_auth(pki: &Pki, mtls: bool) -> TestAuth {
    let mut settings = TestAuth::settings_for_items(&format!("{}-items", unique_prefix()));
    settings.tls = pki.server();
    settings.tls_client_ca = mtls.then(|| pki.path("ca.pem"));
    TestAuth::spawn_with(settings, Endpoints::shared().await).await
}

#[tokio::test]
async fn a_client_trusting_the_ca_registers_and_logs_in_over_tls() {
    let pki = Pki::new();
    let auth = tls_auth(&pki, false).await;
    sign_up_over_tls(&pki, auth.addr, None).await;
}

#[tokio::test]
async fn plaintext_to_a_tls_port_fails_cleanly() {
    let pki = Pki::new();
    let auth = tls_auth(&pki, false).await;
    // Connecting may succeed (TCP is up); the first call must then fail, promptly.
    let outcome = bounded(async {
        let channel = Channel::from_shared(format!("http://{}", auth.addr))
            .expect("valid uri")
            .connect_timeout(BOUND)
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        list_keys(channel).await.map_err(|s| format!("{s:?}"))
    })
    .await;
    assert!(outcome.is_err(), "plaintext got an answer from a TLS port");
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let pki = Pki::new();
    let auth = tls_auth(&pki, false).await;
    let error = try_call(&pki, auth.addr, "other-ca.pem", None)
        .await
        .expect_err("a server certificate from an untrusted CA was accepted");
    assert!(
        error.contains("UnknownIssuer") || error.contains("certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn the_health_check_speaks_tls_to_its_own_server_and_nothing_else() {
    let pki = Pki::new();
    let auth = tls_auth(&pki, true).await;
    // SERVING comes after the first dependency probe.
    let serving = eventually(Duration::from_secs(10), || async {
        health_check::check(auth.addr, &pki.server(), HEALTH_CHECK_TIMEOUT)
            .await
            .is_ok()
    })
    .await;
    assert!(serving, "the TLS health check never passed");
    // Pinned to --tls-cert: a server with another certificate does not pass.
    let pinned_elsewhere = ServerTlsSettings {
        tls_cert: Some(pki.path("other-server.pem")),
        tls_key: Some(pki.path("other-server.key")),
    };
    let error = health_check::check(auth.addr, &pinned_elsewhere, HEALTH_CHECK_TIMEOUT)
        .await
        .expect_err("the health check accepted a certificate other than its own");
    assert!(format!("{error:#}").contains("connecting to"), "{error:#}");
    // Plaintext settings against the TLS port fail too.
    let plain = ServerTlsSettings::default();
    assert!(
        health_check::check(auth.addr, &plain, HEALTH_CHECK_TIMEOUT)
            .await
            .is_err()
    );
}

/// grpcurl (from `.local/bin`) against `addr` over TLS trusting `ca`: its exit status and
/// output (stdout, then stderr).
async fn grpcurl_over_tls(pki: &Pki, addr: SocketAddr, ca: &str) -> (bool, String) {
    let ca = pki.path(ca).display().to_string();
    tests::process::grpcurl(&["-cacert", &ca, &addr.to_string(), "list"]).await
}

#[tokio::test]
async fn grpcurl_with_the_ca_lists_the_services_of_a_tls_port_through_reflection() {
    let pki = Pki::new();
    let auth = tls_auth(&pki, false).await;

    let (listed, services) = grpcurl_over_tls(&pki, auth.addr, "ca.pem").await;
    let (refused, error) = grpcurl_over_tls(&pki, auth.addr, "other-ca.pem").await;

    assert!(listed, "grpcurl -cacert ca.pem failed: {services}");
    tests::auth::listed_auth_services(&services);
    assert!(
        !refused,
        "grpcurl trusted a server its CA did not sign: {error}"
    );
    assert!(error.contains("certificate"), "{error}");
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let pki = Pki::new();
    let auth = tls_auth(&pki, true).await;

    let without = tls_channel(&pki, auth.addr, "ca.pem", None)
        .await
        .expect("the handshake itself allows no certificate (for health checks)");
    let refused = bounded(AuthServiceClient::new(without).register(RegisterRequest {
        username: format!("user-{}", unique_prefix()),
        password: "a long enough password 123".to_owned(),
    }))
    .await
    .expect_err("Register without a client certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("client certificate"),
        "{refused:?}"
    );

    let error = try_call(&pki, auth.addr, "ca.pem", Some("other-client"))
        .await
        .expect_err("a client certificate from another CA was accepted");
    assert!(!error.is_empty());

    sign_up_over_tls(&pki, auth.addr, Some("client")).await;
}

#[tokio::test]
async fn mtls_guards_the_revocation_feed_like_every_other_rpc() {
    let pki = Pki::new();
    let auth = tls_auth(&pki, true).await;
    let watch = |channel| async move {
        let mut stream = bounded(
            AuthServiceClient::new(channel).watch_revocations(WatchRevocationsRequest::default()),
        )
        .await?
        .into_inner();
        bounded(stream.message()).await.map(|first| first.is_some())
    };

    let without = tls_channel(&pki, auth.addr, "ca.pem", None)
        .await
        .expect("the handshake allows no certificate");
    let refused = watch(without)
        .await
        .expect_err("a watch without a client certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let with = tls_channel(&pki, auth.addr, "ca.pem", Some("client"))
        .await
        .expect("TLS connect");
    assert!(
        watch(with)
            .await
            .expect("a watch with a client certificate")
    );
}

#[tokio::test]
async fn a_tls_data_service_works_end_to_end_with_two_mtls_auth_replicas() {
    let pki = Pki::new();
    let items_table = format!("{}-items", unique_prefix());
    let mut auth_settings = TestAuth::settings_for_items(&items_table);
    auth_settings.tls = pki.server();
    auth_settings.tls_client_ca = Some(pki.path("ca.pem"));
    let auth = TestAuth::spawn_with(auth_settings, Endpoints::shared().await).await;
    let replica = auth.spawn_replica().await;

    // Every channel to the auth-service (the balanced one and one revocation watcher per URL)
    // must carry TLS and the client certificate: SERVING needs the feed and the keys.
    let mut settings = TestData::settings(&items_table, auth.addr);
    settings.auth_url = vec![
        format!("https://{}", auth.addr),
        format!("https://{}", replica.addr),
    ];
    settings.auth_ca = Some(pki.path("ca.pem"));
    settings.auth_client_cert = Some(pki.path("client.pem"));
    settings.auth_client_key = Some(pki.path("client.key"));
    settings.tls = pki.server();
    let dynamodb = auth.endpoints.dynamodb.clone();
    let data = TestData::spawn_with(settings, &dynamodb, false).await;
    let serving = eventually(Duration::from_secs(15), || async {
        health_check::check(data.addr, &pki.server(), HEALTH_CHECK_TIMEOUT)
            .await
            .is_ok()
    })
    .await;
    assert!(serving, "the TLS data-service never reported SERVING");

    let (user, token) = sign_up_over_tls(&pki, replica.addr, Some("client")).await;
    let data_channel = tls_channel(&pki, data.addr, "ca.pem", None)
        .await
        .expect("TLS connect to the data-service");
    let mut signed_in = SignedIn {
        user,
        token,
        client: common::proto::data::v1::data_service_client::DataServiceClient::new(data_channel),
    };
    let version = signed_in.put_text("greeting", "hello over TLS").await;
    assert_eq!(version, 1);
    let item = signed_in.get("greeting").await.expect("GetItem");
    assert_eq!(item.version, 1);
    assert_eq!(
        item.attributes["text"],
        tests::data::string("hello over TLS")
    );
}

#[tokio::test]
async fn half_configured_tls_stops_startup() {
    let pki = Pki::new();
    let mut settings = TestAuth::settings();
    settings.tls.tls_cert = Some(pki.path("server.pem"));
    let error = common::tls::ServerTls::load(&settings.tls, None).expect_err("cert alone");
    assert_eq!(error.to_string(), "--tls-cert and --tls-key go together");

    let error =
        common::tls::ServerTls::load(&ServerTlsSettings::default(), Some(&pki.path("ca.pem")))
            .expect_err("client CA without TLS");
    assert!(
        error.to_string().contains("--tls-client-ca needs"),
        "{error}"
    );

    let swapped = ServerTlsSettings {
        tls_cert: Some(pki.path("server.pem")),
        tls_key: Some(pki.path("client.key")),
    };
    assert!(
        common::tls::ServerTls::load(&swapped, None).is_err(),
        "a key that does not match the certificate"
    );

    let flags = ["--auth-ca", "--auth-client-cert", "--auth-client-key"];
    let cert = pki.path("client.pem");
    let error =
        common::tls::ClientTls::load(None, Some(&cert), Some(&pki.path("client.key")), flags)
            .expect_err("client certificate without a CA");
    assert_eq!(error.to_string(), "--auth-client-cert needs --auth-ca");
    let error = common::tls::ClientTls::load(Some(&pki.path("ca.pem")), Some(&cert), None, flags)
        .expect_err("certificate without key");
    assert_eq!(
        error.to_string(),
        "--auth-client-cert and --auth-client-key go together"
    );
    let tls = common::tls::ClientTls::load(Some(&pki.path("ca.pem")), None, None, flags)
        .expect("a CA alone");
    let plain = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051");
    assert!(tls.apply(plain).is_err(), "http:// with a CA configured");
    let secure = tonic::transport::Endpoint::from_static("https://127.0.0.1:50051");
    let error = common::tls::ClientTls::default()
        .apply(secure)
        .expect_err("https:// without a CA");
    assert!(error.to_string().contains("no CA to trust"), "{error}");
}
