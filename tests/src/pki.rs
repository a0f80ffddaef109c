//! A throw-away PKI on disk, made by rcgen, for the TLS and mTLS tests: self-signed CAs and the
//! certificates they issue, as PEM files in a temporary directory removed when dropped.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::unique_prefix;

/// A temporary directory of PEM files.
pub struct PemDir {
    dir: PathBuf,
}

impl PemDir {
    /// A fresh, empty directory whose name ends in `label`.
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-{label}", unique_prefix()));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        Self { dir }
    }

    /// The path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A self-signed CA saved as `{name}.pem`.
    pub fn ca(&self, name: &str, common_name: &str) -> Issuer<'static, KeyPair> {
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

    /// A certificate for `dns` and 127.0.0.1 with `subject`, issued by `ca`, saved as
    /// `{name}.pem` and `{name}.key`.
    pub fn leaf(
        &self,
        ca: &Issuer<'static, KeyPair>,
        name: &str,
        dns: &str,
        subject: &[(DnType, &str)],
    ) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(vec![dns.to_owned()]).expect("leaf params");
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

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write a PEM file");
    }
}

impl Drop for PemDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
