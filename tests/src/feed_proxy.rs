//! An HTTP/2 proxy in front of an auth-service that passes every gRPC call through, except
//! that it can take the revocation feed away: while blocked, it cuts the connections it holds
//! and answers WatchRevocations with UNIMPLEMENTED (what an auth-service without the feed
//! says); unblocked, it passes the feed again. How tests make a data-service's feed stale
//! and bring it back without stopping the auth-service.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};

type Body = BoxBody<Bytes, hyper::Error>;

/// The proxy; stops when dropped.
pub struct FeedProxy {
    addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

impl FeedProxy {
    /// A proxy to the gRPC server at `upstream`, passing everything.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let blocked = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let task = tokio::spawn({
            let (blocked, connections) = (Arc::clone(&blocked), Arc::clone(&connections));
            async move {
                while let Ok((downstream, _)) = listener.accept().await {
                    let blocked = Arc::clone(&blocked);
                    let connection = tokio::spawn(async move {
                        let _ = relay(downstream, upstream, blocked).await;
                    });
                    connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(connection.abort_handle());
                }
            }
        });
        Self {
            addr,
            blocked,
            connections,
            task,
        }
    }

    /// The URL to give a data-service as `--auth-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection (open feeds with them) and refuses the feed until unblocked.
    pub fn block_feed(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for connection in self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            connection.abort();
        }
    }

    /// Passes the feed again.
    pub fn unblock_feed(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for FeedProxy {
    fn drop(&mut self) {
        self.block_feed();
        self.task.abort();
    }
}

/// Serves one downstream connection over one upstream connection.
async fn relay(
    downstream: TcpStream,
    upstream: SocketAddr,
    blocked: Arc<AtomicBool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let upstream = TcpStream::connect(upstream).await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(upstream)).await?;
    tokio::spawn(connection);
    let service = service_fn(move |request: Request<Incoming>| {
        let mut sender = sender.clone();
        let blocked = blocked.load(Ordering::SeqCst);
        async move {
            if blocked && request.uri().path().ends_with("/WatchRevocations") {
                return Ok::<_, hyper::Error>(unimplemented());
            }
            let response = sender.send_request(request).await?;
            Ok(response.map(BodyExt::boxed))
        }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(downstream), service)
        .await?;
    Ok(())
}

/// A trailers-only gRPC UNIMPLEMENTED.
fn unimplemented() -> Response<Body> {
    let empty = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "12")
        .header("grpc-message", "no revocation feed here")
        .body(empty)
        .expect("a valid response")
}
