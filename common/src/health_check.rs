//! The `health-check` subcommand both binaries offer: one `grpc.health.v1.Health/Check` call
//! to the server's own listen address, so a container's HEALTHCHECK needs no grpcurl or
//! grpc_health_probe in the image.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use crate::tls::{ServerTlsSettings, health_check_endpoint};
use anyhow::{Context, bail};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long the whole check may take: well inside a HEALTHCHECK `--timeout` of 3 s.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Succeeds only if the server listening on `listen_addr` reports the whole server (`""`)
/// SERVING within `timeout`. A wildcard listen address (`0.0.0.0`, `[::]`) is checked on
/// loopback, as a container's health check runs beside the server. With TLS on (`tls`, the
/// server's own settings) the check speaks TLS and accepts only the server's own certificate
/// (see [`crate::tls`]).
pub async fn check(
    listen_addr: SocketAddr,
    tls: &ServerTlsSettings,
    timeout: Duration,
) -> anyhow::Result<()> {
    let addr = loopback_if_unspecified(listen_addr);
    let endpoint = health_check_endpoint(addr, tls)?;
    let status = tokio::time::timeout(timeout, ask(addr, endpoint))
        .await
        .with_context(|| format!("no health answer from {addr} within {timeout:?}"))??;
    if status != ServingStatus::Serving {
        bail!("{addr} reports {}", status.as_str_name());
    }
    println!("{addr}: SERVING");
    Ok(())
}

async fn ask(addr: SocketAddr, endpoint: Endpoint) -> anyhow::Result<ServingStatus> {
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .with_context(|| format!("Health/Check on {addr}"))?;
    Ok(response.into_inner().status())
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tonic::transport::{Server, server::TcpIncoming};

    use super::*;

    /// A bare server with only the health service, reporting `status` for `""`.
    async fn health_server(status: tonic_health::ServingStatus) -> SocketAddr {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", status).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _keep = reporter;
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
        });
        addr
    }

    #[tokio::test]
    async fn a_serving_server_passes_the_check() {
        let addr = health_server(tonic_health::ServingStatus::Serving).await;
        check(addr, &ServerTlsSettings::default(), HEALTH_CHECK_TIMEOUT)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_wildcard_listen_address_is_checked_on_loopback() {
        let addr = health_server(tonic_health::ServingStatus::Serving).await;
        let wildcard = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
        check(
            wildcard,
            &ServerTlsSettings::default(),
            HEALTH_CHECK_TIMEOUT,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_not_serving_server_fails_the_check_naming_its_status() {
        let addr = health_server(tonic_health::ServingStatus::NotServing).await;
        let error = check(addr, &ServerTlsSettings::default(), HEALTH_CHECK_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), format!("{addr} reports NOT_SERVING"));
    }

    #[tokio::test]
    async fn nothing_listening_fails_the_check() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = check(addr, &ServerTlsSettings::default(), HEALTH_CHECK_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            format!("{error:#}").contains(&format!("connecting to {addr}")),
            "{error:#}"
        );
    }
}
