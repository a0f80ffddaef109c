//! HTTP/2 streams opened by hand with the `h2` crate: calls whose request body starts and never
//! ends (no `grpc-timeout`, no end of stream), to see what a server does with them. Each stream
//! keeps its sending half open until the server answers it or resets it.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use tokio::{net::TcpStream, task::JoinSet, time::Instant};
use tonic::Code;

/// How a never-ending call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The server answered with this gRPC status (HTTP status, code, message).
    Answered(u16, Code, String),
    /// The server reset the stream with this HTTP/2 error code.
    Reset(h2::Reason),
    /// The connection failed (its text).
    Lost(String),
}

/// One call's ending and how long after its first bytes it came.
#[derive(Clone, Debug)]
pub struct Ended {
    /// What the server did.
    pub ending: Ending,
    /// From the request's headers to the ending.
    pub after: Duration,
}

/// The never-ending calls of one run: `connections` HTTP/2 connections to `addr`, `per_connection`
/// streams on each to `path`, each sending its headers (`authorization: Bearer token` when
/// given) and the first 7 bytes of a 100-byte message, then nothing.
pub struct NeverEnding {
    calls: JoinSet<Ended>,
    drivers: JoinSet<()>,
}

impl NeverEnding {
    /// Opens every stream (waiting, like any client, while a connection is at the server's
    /// stream limit) and returns once all have sent their first bytes.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
        connections: usize,
        per_connection: usize,
    ) -> anyhow::Result<Self> {
        let mut calls = JoinSet::new();
        let mut drivers = JoinSet::new();
        let (sent, mut all_sent) = tokio::sync::mpsc::channel::<()>(connections * per_connection);
        for _ in 0..connections {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let (client, connection) = h2::client::handshake(tcp).await?;
            drivers.spawn(async move {
                let _ = connection.await;
            });
            for _ in 0..per_connection {
                let request = request(addr, path, token)?;
                let (client, sent) = (client.clone(), sent.clone());
                calls.spawn(async move { call(client, request, sent).await });
            }
        }
        drop(sent);
        // Every call reports once its bytes are out (or once it failed before).
        for _ in 0..connections * per_connection {
            if all_sent.recv().await.is_none() {
                break;
            }
        }
        Ok(Self { calls, drivers })
    }

    /// Waits for every call to end, at most `limit` in all: the endings, and how many calls
    /// were still open at the limit.
    pub async fn endings(mut self, limit: Duration) -> (Vec<Ended>, usize) {
        let deadline = Instant::now() + limit;
        let mut ended = Vec::new();
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, self.calls.join_next()).await
        {
            if let Ok(call) = joined {
                ended.push(call);
            }
        }
        let open = self.calls.len();
        self.calls.abort_all();
        self.drivers.abort_all();
        (ended, open)
    }
}

fn request(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<http::Request<()>> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    Ok(request.body(())?)
}

async fn call(
    mut client: h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    sent: tokio::sync::mpsc::Sender<()>,
) -> Ended {
    let started = Instant::now();
    let ended = |ending| Ended {
        ending,
        after: started.elapsed(),
    };
    let opened = async {
        client = client.ready().await?;
        let (response, mut body) = client.send_request(request, false)?;
        // A 100-byte message announced, 2 of its bytes sent.
        body.send_data(Bytes::from_static(b"\x00\x00\x00\x00\x64\x0a\x00"), false)?;
        Ok::<_, h2::Error>((response, body))
    };
    let opened = opened.await;
    let _ = sent.send(()).await;
    let (response, _body) = match opened {
        Ok(opened) => opened,
        Err(error) => return ended(h2_ending(&error)),
    };
    // `_body` stays alive: dropping it would cancel the stream from this side.
    let response = match response.await {
        Ok(response) => response,
        Err(error) => return ended(h2_ending(&error)),
    };
    let http_status = response.status().as_u16();
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return ended(Ending::Answered(
            http_status,
            status.code(),
            status.message().to_owned(),
        ));
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        if let Err(error) = data {
            return ended(h2_ending(&error));
        }
    }
    match body.trailers().await {
        Ok(Some(trailers)) => match tonic::Status::from_header_map(&trailers) {
            Some(status) => ended(Ending::Answered(
                http_status,
                status.code(),
                status.message().to_owned(),
            )),
            None => ended(Ending::Lost("trailers without grpc-status".to_owned())),
        },
        Ok(None) => ended(Ending::Lost("no trailers".to_owned())),
        Err(error) => ended(h2_ending(&error)),
    }
}

fn h2_ending(error: &h2::Error) -> Ending {
    match error.reason() {
        Some(reason) if error.is_reset() => Ending::Reset(reason),
        _ => Ending::Lost(error.to_string()),
    }
}
