//! The admin listener in tests: a throw-away PKI made by rcgen (a server CA and certificate,
//! an admin client CA and certificate, and a stranger's CA and client certificate), settings
//! that turn the listener on with it, and clients that present a certificate or none.

use std::{net::SocketAddr, path::PathBuf};

use auth_service::config::Settings;
use common::proto::admin::v1::admin_service_client::AdminServiceClient;
use rcgen::DnType;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::pki::PemDir;

/// The common name of the admin client certificate.
pub const ADMIN_CN: &str = "ops-admin";
/// Its organization: the subject reads `CN=ops-admin, O=Dynagate Ops`.
pub const ADMIN_ORG: &str = "Dynagate Ops";

/// The PKI on disk: `server-ca.pem`, `server.pem`/`.key`, `admin-ca.pem`, `admin.pem`/`.key`,
/// `other-ca.pem`, `other.pem`/`.key`. Removed when dropped.
pub struct AdminPki {
    pem: PemDir,
}

impl AdminPki {
    /// A fresh PKI in a temporary directory.
    pub fn new() -> Self {
        let pem = PemDir::new("admin-pki");
        let server_ca = pem.ca("server-ca", "Dynagate test server CA");
        let server = [(DnType::CommonName, "localhost")];
        pem.leaf(&server_ca, "server", "localhost", &server);
        let admin_ca = pem.ca("admin-ca", "Dynagate test admin CA");
        let admin = [
            (DnType::CommonName, ADMIN_CN),
            (DnType::OrganizationName, ADMIN_ORG),
        ];
        pem.leaf(&admin_ca, "admin", "localhost", &admin);
        let other_ca = pem.ca("other-ca", "Someone else's CA");
        let other = [(DnType::CommonName, ADMIN_CN)];
        pem.leaf(&other_ca, "other", "localhost", &other);
        Self { pem }
    }

    /// The path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.pem.path(name)
    }

    /// `settings` with the admin listener on (port 0), presenting `server.pem` and trusting
    /// `admin-ca.pem` for clients.
    pub fn enable(&self, settings: &mut Settings) {
        let admin = &mut settings.admin;
        admin.admin_listen = Some("127.0.0.1:0".parse().expect("an address"));
        admin.admin_tls_cert = Some(self.path("server.pem"));
        admin.admin_tls_key = Some(self.path("server.key"));
        admin.admin_client_ca = Some(self.path("admin-ca.pem"));
    }

    /// A client of the admin listener at `addr` presenting `client` (`admin`, `other`) or no
    /// certificate; the connection error when the server refuses the handshake.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        client: Option<&str>,
    ) -> Result<AdminServiceClient<Channel>, tonic::transport::Error> {
        let ca = std::fs::read(self.path("server-ca.pem")).expect("read the server CA");
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some(name) = client {
            let cert = std::fs::read(self.path(&format!("{name}.pem"))).expect("client cert");
            let key = std::fs::read(self.path(&format!("{name}.key"))).expect("client key");
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = Channel::from_shared(format!("https://{addr}"))
            .expect("a URI")
            .tls_config(tls)?
            .connect()
            .await?;
        Ok(AdminServiceClient::new(channel))
    }

    /// A client presenting the admin certificate.
    pub async fn admin(&self, addr: SocketAddr) -> AdminServiceClient<Channel> {
        self.connect(addr, Some("admin"))
            .await
            .expect("connect to the admin listener")
    }
}

impl Default for AdminPki {
    fn default() -> Self {
        Self::new()
    }
}
