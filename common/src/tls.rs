//! Optional TLS (rustls with ring) on both gRPC servers, on the data-service's channel to the
//! auth-service, and in the `health-check` subcommand.
//!
//! - A server with `--tls-cert` and `--tls-key` speaks only TLS (1.2 or 1.3) on its one port.
//! - With a client CA (the auth-service's `--tls-client-ca`) every call needs a client
//!   certificate that CA signed. A certificate from anyone else fails the handshake; a client
//!   with none is answered UNAUTHENTICATED on every RPC except `grpc.health.v1.Health`, so the
//!   container's `health-check` (which has no client certificate) still works.
//! - The `health-check` subcommand pins the server's own certificate: it accepts exactly the
//!   first certificate of `--tls-cert` (and checks the handshake signature with it), so it
//!   needs no CA and no host name and trusts nothing else.

mod client;
mod client_cert;
mod pinned;
mod server;

use std::{fs, path::Path, time::Duration};

use anyhow::{Context as _, bail};
use rustls::pki_types::{CertificateDer, pem::PemObject};

pub use client::ClientTls;
pub use client_cert::{ClientCert, ClientCertLayer};
pub use pinned::health_check_endpoint;
pub use server::{ServerTls, ServerTlsSettings};

/// How long a client may take to finish the TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a file named by `flag`, naming both in the error.
fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("{flag} {}", path.display()))
}

/// Reads a PEM file, refusing one without a PEM block (a DER file given by mistake).
fn read_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    let pem = read(path, flag)?;
    if CertificateDer::pem_slice_iter(&pem).next().is_none() {
        bail!("{flag} {}: no PEM certificate in it", path.display());
    }
    Ok(pem)
}
