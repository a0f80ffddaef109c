//! Bounds on what clients' connections can hold on a gRPC server, whoever they are (these act
//! before any authentication): connections at once, streams per connection, the time a request
//! body may take to arrive, and HTTP/2 keepalive that drops peers which stopped answering.
//! Together they bound the memory held by unfinished calls: at most
//! `max_connections × max_concurrent_streams` streams, none waiting for its body longer than
//! the body timeout.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use clap::Args;
use futures::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// The connection and stream bounds of a gRPC server (both services take the same flags).
#[derive(Args, Clone, Debug)]
pub struct ConnectionLimits {
    /// Client connections served at once. Past it the server stops accepting until one
    /// closes (new connections wait in the listen backlog), so calls on open connections go
    /// on. Keep it below the process's file-descriptor limit (`ulimit -n`).
    #[arg(long, env = "DYNAGATE_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Calls (HTTP/2 streams) one connection may have open at once, advertised as
    /// SETTINGS_MAX_CONCURRENT_STREAMS: a client's further calls wait until one ends.
    #[arg(long, env = "DYNAGATE_MAX_CONCURRENT_STREAMS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_streams: u32,

    /// Milliseconds a call's request body may take to arrive completely, counted from its
    /// headers, whatever `grpc-timeout` the client set: a body still incomplete then is
    /// answered DEADLINE_EXCEEDED. Streams whose request is one message (every Dynagate RPC,
    /// WatchRevocations and Health/Watch included) are not limited once it has arrived; a
    /// server-reflection stream (grpcurl's) is ended after this long.
    #[arg(long, env = "DYNAGATE_REQUEST_BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub request_body_timeout_ms: u64,

    /// Seconds between the HTTP/2 pings the server sends on every connection; a peer that
    /// does not answer one within --http2-keepalive-timeout-secs is disconnected. 0 sends
    /// none (dead peers then hold their connection until TCP notices).
    #[arg(long, env = "DYNAGATE_HTTP2_KEEPALIVE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub http2_keepalive_secs: u64,

    /// Seconds a peer has to answer a keepalive ping before its connection is closed.
    #[arg(long, env = "DYNAGATE_HTTP2_KEEPALIVE_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub http2_keepalive_timeout_secs: u64,
}

impl Default for ConnectionLimits {
    /// The flags' defaults.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_concurrent_streams: 100,
            request_body_timeout_ms: 10_000,
            http2_keepalive_secs: 30,
            http2_keepalive_timeout_secs: 10,
        }
    }
}

impl ConnectionLimits {
    /// The longest a request body may take to arrive.
    pub fn request_body_timeout(&self) -> Duration {
        Duration::from_millis(self.request_body_timeout_ms)
    }

    /// The keepalive ping interval, `None` when pings are off.
    pub fn http2_keepalive_interval(&self) -> Option<Duration> {
        (self.http2_keepalive_secs > 0).then(|| Duration::from_secs(self.http2_keepalive_secs))
    }

    /// How long a ping may go unanswered.
    pub fn http2_keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.http2_keepalive_timeout_secs)
    }
}

/// The connections `listener` accepts (with TCP_NODELAY), at most `max` open at once: the next
/// accept waits for a free slot, and a connection frees its slot when it is dropped.
pub fn limited_incoming(
    listener: TcpListener,
    max: u32,
) -> impl Stream<Item = io::Result<LimitedConnection>> + Send {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let slots = Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX)));
    futures::stream::unfold((incoming, slots), |(mut incoming, slots)| async move {
        // The semaphore is never closed, so this always yields a permit.
        let slot = Arc::clone(&slots).acquire_owned().await.ok()?;
        let accepted = incoming.next().await?;
        let connection = accepted.map(|stream| LimitedConnection {
            stream,
            _slot: slot,
        });
        Some((connection, (incoming, slots)))
    })
}

/// An accepted TCP connection holding one of the server's connection slots.
#[derive(Debug)]
pub struct LimitedConnection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for LimitedConnection {
    // The same as a bare TcpStream's, so handlers (and TLS) see the peer as before.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: ConnectionLimits,
    }

    #[test]
    fn the_defaults_are_the_flags_defaults() {
        let parsed = Flags::parse_from(["test"]).limits;
        let default = ConnectionLimits::default();
        assert_eq!(
            (
                parsed.max_connections,
                parsed.max_concurrent_streams,
                parsed.request_body_timeout_ms,
                parsed.http2_keepalive_secs,
                parsed.http2_keepalive_timeout_secs,
            ),
            (
                default.max_connections,
                default.max_concurrent_streams,
                default.request_body_timeout_ms,
                default.http2_keepalive_secs,
                default.http2_keepalive_timeout_secs,
            )
        );
        assert_eq!(
            parsed.http2_keepalive_interval(),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn keepalive_zero_turns_pings_off_and_zero_bounds_are_refused() {
        let off = Flags::parse_from(["test", "--http2-keepalive-secs", "0"]).limits;
        assert_eq!(off.http2_keepalive_interval(), None);
        for flag in ["--max-connections", "--max-concurrent-streams"] {
            assert!(
                Flags::try_parse_from(["test", flag, "0"]).is_err(),
                "{flag} 0"
            );
        }
        let short = Flags::try_parse_from(["test", "--request-body-timeout-ms", "99"]);
        assert!(short.is_err());
    }

    #[tokio::test]
    async fn past_the_limit_a_connection_waits_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(limited_incoming(listener, 1));
        let _first_client = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        assert!(first.connect_info().remote_addr().is_some());

        // The kernel completes the handshake; the server does not take it while full.
        let _second_client = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(200), incoming.next()).await;
        assert!(
            waiting.is_err(),
            "a second connection while the first is open"
        );

        drop(first);
        let second = incoming.next().await.unwrap();
        assert!(second.is_ok());
    }
}
