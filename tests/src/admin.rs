//! The admin listener in tests: a throw-away PKI made by rcgen (a server CA and certificate,
//! an admin client CA and certificate, and a stranger's CA and client certificate), settings
//! that turn the listener on with it, and clients that present a certificate or none.

use std::{net::SocketAddr, path::PathBuf};

use auth_service::config::Settings;
use common::proto::admin::v1::admin_service_client::AdminServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::unique_prefix;

/// The common name of the admin client certificate.
pub const ADMIN_CN: &str = "ops-admin";
/// Its organization: the subject reads `CN=ops-admin, O=Dynagate Ops`.
pub const ADMIN_ORG: &str = "Dynagate Ops";

/// The PKI on disk: `server-ca.pem`, `server.pem`/`.key`, `admin-ca.pem`, `admin.pem`/`.key`,
/// `other-ca.pem`, `other.pem`/`.key`. Removed when dropped.
pub struct AdminPki {
    dir: PathBuf,
}

impl AdminPki {
    /// A fresh PKI in a temporary directory.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("{}-admin-pki", unique_prefix()));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let pki = Self { dir };
        let server_ca = pki.ca("server-ca", "Dynagate test server CA");
        pki.leaf(&server_ca, "server", &[(DnType::CommonName, "localhost")]);
        let admin_ca = pki.ca("admin-ca", "Dynagate test admin CA");
        let admin = [
            (DnType::CommonName, ADMIN_CN),
            (DnType::OrganizationName, ADMIN_ORG),
        ];
        pki.leaf(&admin_ca, "admin", &admin);
        let other_ca = pki.ca("other-ca", "Someone else's CA");
        pki.leaf(&other_ca, "other", &[(DnType::CommonName, ADMIN_CN)]);
        pki
    }

    /// The path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
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

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write a PEM file");
    }

    /// A self-signed CA saved as `{name}.pem`.
    fn ca(&self, name: &str, common_name: &str) -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        self.write(&format!("{name}.pem"), &cert.pem());
        Issuer::new(params, key)
    }

    /// A certificate with `subject` for localhost and 127.0.0.1 issued by `ca`, saved as
    /// `{name}.pem` and `{name}.key`.
    fn leaf(&self, ca: &Issuer<'static, KeyPair>, name: &str, subject: &[(DnType, &str)]) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let cert = params.signed_by(&key, ca).expect("issue a certificate");
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }
}

impl Default for AdminPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AdminPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
