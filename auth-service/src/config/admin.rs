//! The admin listener's flags: off unless `--admin-listen` is set, and then mTLS only, so all
//! three TLS files are required with it (and none is accepted without it).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::bail;
use clap::Args;
use common::tls::ServerTls;

/// Where the admin listener listens and the TLS files it needs.
#[derive(Args, Clone, Debug, Default)]
pub struct AdminSettings {
    /// Address of the admin listener, which serves only dynagate.admin.v1.AdminService (and
    /// health and reflection) over mutual TLS, e.g. 0.0.0.0:50061. Off when unset. When set,
    /// --admin-tls-cert, --admin-tls-key and --admin-client-ca are all required: every client
    /// must present a certificate the admin client CA signed.
    #[arg(long, env = "DYNAGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// PEM certificate chain (the server's first) the admin listener presents.
    #[arg(long, env = "DYNAGATE_ADMIN_TLS_CERT")]
    pub admin_tls_cert: Option<PathBuf>,

    /// PEM private key of --admin-tls-cert.
    #[arg(long, env = "DYNAGATE_ADMIN_TLS_KEY")]
    pub admin_tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) that sign admin clients' certificates. Anyone holding such a
    /// certificate may disable, log out, unlock and delete any account: use a CA of its own,
    /// not the one of --tls-client-ca.
    #[arg(long, env = "DYNAGATE_ADMIN_CLIENT_CA")]
    pub admin_client_ca: Option<PathBuf>,
}

/// The admin listener's address and TLS, read and checked.
#[derive(Debug)]
pub struct AdminListener {
    /// Where to listen.
    pub addr: SocketAddr,
    /// TLS requiring a client certificate from the admin client CA.
    pub tls: ServerTls,
}

const FLAGS: [&str; 3] = ["--admin-tls-cert", "--admin-tls-key", "--admin-client-ca"];

impl AdminSettings {
    /// The listener the settings ask for: `None` when off; an error (stopping startup) when
    /// the flags are incomplete or a file is unusable.
    pub fn listener(&self) -> anyhow::Result<Option<AdminListener>> {
        let files = [
            self.admin_tls_cert.as_deref(),
            self.admin_tls_key.as_deref(),
            self.admin_client_ca.as_deref(),
        ];
        let Some(addr) = self.admin_listen else {
            if files.iter().any(Option::is_some) {
                bail!("{} need --admin-listen", FLAGS.join(", "));
            }
            return Ok(None);
        };
        let [Some(cert), Some(key), Some(ca)] = files else {
            bail!(
                "--admin-listen needs {}: the admin listener is mTLS only (missing {})",
                FLAGS.join(", "),
                missing(files).join(", ")
            );
        };
        let tls = ServerTls::require_client_certs(cert, key, ca, FLAGS)?;
        Ok(Some(AdminListener { addr, tls }))
    }
}

fn missing(files: [Option<&Path>; 3]) -> Vec<&'static str> {
    let given = files.map(|file| file.is_some());
    FLAGS
        .iter()
        .zip(given)
        .filter(|(_, given)| !given)
        .map(|(flag, _)| *flag)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_any_flag() {
        assert!(AdminSettings::default().listener().unwrap().is_none());
    }

    #[test]
    fn a_listen_address_alone_names_every_missing_flag() {
        let settings = AdminSettings {
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            admin_tls_key: Some("key.pem".into()),
            ..AdminSettings::default()
        };
        let error = settings.listener().unwrap_err().to_string();
        assert!(
            error.contains("missing --admin-tls-cert, --admin-client-ca"),
            "{error}"
        );
    }

    #[test]
    fn tls_files_without_a_listen_address_are_refused() {
        let settings = AdminSettings {
            admin_client_ca: Some("ca.pem".into()),
            ..AdminSettings::default()
        };
        let error = settings.listener().unwrap_err().to_string();
        assert!(error.contains("need --admin-listen"), "{error}");
    }
}
