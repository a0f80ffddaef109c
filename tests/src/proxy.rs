//! An HTTP/1.1 proxy in front of an emulator that records every AWS request (who signed it,
//! what it asked for) and can break a chosen exchange. Tests use it to see the services' AWS
//! traffic from outside: which credentials sign each call, how many connections a client
//! pool opens, and what a service does when the SDK retries a write that had landed.
//!
//! It can also forward one request at a time ([`RecordingProxy::serialize`]): moto loses
//! updates under concurrent conditional writes (FACTS.md), so a race against moto means
//! something only through a proxy that makes moto see the racers one after another, as
//! DynamoDB's own item-level serialization would. And it can answer the next request of an
//! operation itself ([`RecordingProxy::answer_next`]), for errors an emulator never returns
//! (a TransactionCanceledException with a TransactionConflict reason).

use std::{
    error::Error,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::request::Parts;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

type BoxError = Box<dyn Error + Send + Sync>;

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// `x-amz-target`, e.g. `DynamoDB_20120810.PutItem`.
    pub target: Option<String>,
    /// The access key id of the SigV4 `Credential=` in `authorization`.
    pub access_key_id: Option<String>,
    /// `x-amz-security-token`: present when temporary credentials signed the request.
    pub security_token: Option<String>,
    /// The JSON body (`Null` when it is not JSON).
    pub body: Value,
}

impl Recorded {
    fn of(parts: &Parts, body: &[u8]) -> Self {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let access_key_id = header("authorization").and_then(|authorization| {
            let (_, credential) = authorization.split_once("Credential=")?;
            Some(credential.split('/').next()?.to_owned())
        });
        Self {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            target: header("x-amz-target"),
            access_key_id,
            security_token: header("x-amz-security-token"),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        }
    }

    /// The operation: `PutItem` for target `DynamoDB_20120810.PutItem`.
    pub fn operation(&self) -> &str {
        let target = self.target.as_deref().unwrap_or_default();
        target
            .rsplit_once('.')
            .map_or(target, |(_, operation)| operation)
    }

    /// The body's `TableName`.
    pub fn table(&self) -> Option<&str> {
        self.body["TableName"].as_str()
    }
}

/// A one-shot fault: the next request for `operation` on `table` is forwarded (so it lands)
/// and then the client's connection is dropped before it sees the response.
#[derive(Clone, Debug)]
struct DropResponse {
    operation: String,
    table: String,
}

/// A canned answer for the next request of an operation.
#[derive(Clone, Debug)]
struct Canned {
    operation: String,
    status: u16,
    body: String,
}

#[derive(Debug, Default)]
struct State {
    connections: AtomicUsize,
    recorded: Mutex<Vec<Recorded>>,
    armed: Mutex<Vec<DropResponse>>,
    fired: AtomicUsize,
    serialized: AtomicBool,
    one_at_a_time: tokio::sync::Mutex<()>,
    canned: Mutex<Vec<Canned>>,
}

impl State {
    /// The canned answer armed for `recorded`'s operation, if any (used once).
    fn canned_for(&self, recorded: &Recorded) -> Option<Canned> {
        let mut canned = self.canned.lock().expect("canned lock");
        let index = (canned.iter()).position(|c| c.operation == recorded.operation())?;
        Some(canned.remove(index))
    }
}

impl State {
    /// Records the request; true if it must lose its response.
    fn record(&self, recorded: Recorded) -> bool {
        let mut armed = self.armed.lock().expect("fault lock");
        let matching = armed.iter().position(|fault| {
            fault.operation == recorded.operation()
                && Some(fault.table.as_str()) == recorded.table()
        });
        if let Some(index) = matching {
            armed.remove(index);
        }
        self.recorded.lock().expect("record lock").push(recorded);
        matching.is_some()
    }
}

/// A running proxy; stops when dropped.
pub struct RecordingProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl RecordingProxy {
    /// Forwards every request arriving on a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(|request| forward(request, target, &state));
                    // A dropped response ends the connection with an error: that is the point.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(inbound), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.recorded.lock().expect("record lock").clone()
    }

    /// Forgets the requests recorded so far (e.g. a harness's table creation).
    pub fn clear(&self) {
        self.state.recorded.lock().expect("record lock").clear();
    }

    /// Arms a fault on the next `operation` (e.g. `PutItem`) on `table`: it reaches the
    /// emulator, but the client's connection is dropped instead of answered, so the SDK
    /// retries a request that already took effect.
    pub fn drop_next_response(&self, operation: &str, table: &str) {
        self.state
            .armed
            .lock()
            .expect("fault lock")
            .push(DropResponse {
                operation: operation.to_owned(),
                table: table.to_owned(),
            });
    }

    /// From now on, forwards one request at a time (the next waits for the previous answer).
    pub fn serialize(&self) {
        self.state.serialized.store(true, Ordering::SeqCst);
    }

    /// Answers the next request of `operation` (e.g. `TransactWriteItems`) with `status` and
    /// the JSON `body` (content type `application/x-amz-json-1.0`) without forwarding it.
    pub fn answer_next(&self, operation: &str, status: u16, body: &str) {
        self.state.canned.lock().expect("canned lock").push(Canned {
            operation: operation.to_owned(),
            status,
            body: body.to_owned(),
        });
    }

    /// How many armed faults have fired.
    pub fn faults_fired(&self) -> usize {
        self.state.fired.load(Ordering::SeqCst)
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records `request`, sends it to `target` on a connection of its own (never forwarded
/// twice, whatever the emulator does with idle connections) and returns the answer, or an
/// error, which makes hyper drop the client's connection unanswered.
async fn forward(
    request: Request<Incoming>,
    target: SocketAddr,
    state: &State,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let recorded = Recorded::of(&parts, &body);
    if let Some(canned) = state.canned_for(&recorded) {
        state.record(recorded);
        return Ok(Response::builder()
            .status(canned.status)
            .header("content-type", "application/x-amz-json-1.0")
            .body(Full::new(Bytes::from(canned.body)))?);
    }
    let drop_response = state.record(recorded);
    let _turn = match state.serialized.load(Ordering::SeqCst) {
        true => Some(state.one_at_a_time.lock().await),
        false => None,
    };

    let upstream = TcpStream::connect(target).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    tokio::spawn(connection);
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();

    if drop_response {
        state.fired.fetch_add(1, Ordering::SeqCst);
        return Err("fault injected: response dropped".into());
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}
