//! What clients' connections can hold on either server, whoever they are: calls whose request
//! body never ends are answered at the body timeout (and the memory they held is reused, so it
//! stays bounded however often it happens), the servers advertise their per-connection stream
//! limit, and a peer that stops answering HTTP/2 pings is disconnected.
//!
//! The memory tests run the service binaries as processes (their own RSS, not this test's):
//! build them first (`cargo build --workspace --bins`).

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use common::{
    limits::ConnectionLimits,
    proto::{
        auth::v1::auth_service_client::AuthServiceClient,
        data::v1::{GetItemRequest, data_service_client::DataServiceClient},
    },
};
use tests::{
    auth::{Endpoints, TestUser, with_bearer},
    data::TestStack,
    emulators::Emulator,
    process::{ServiceProcess, auth_tables_env, aws_env, owned_env},
    streams::{Ended, Ending, NeverEnding},
    unique_prefix,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// The body timeout the services run with here.
const BODY_TIMEOUT_MS: u64 = 1000;
/// 2,000 never-ending calls: 20 connections of 100 streams (the default stream limit).
const CONNECTIONS: usize = 20;
const PER_CONNECTION: usize = 100;
const ROUNDS: usize = 3;

fn rounds() -> usize {
    std::env::var("DYNAGATE_BOUNDS_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(ROUNDS)
}

fn limits_env() -> Vec<(String, String)> {
    owned_env(&[(
        "DYNAGATE_REQUEST_BODY_TIMEOUT_MS",
        BODY_TIMEOUT_MS.to_string(),
    )])
    .collect()
}

/// An auth-service process on fresh tables, vending credentials through `sts` when given.
fn start_auth(dynalite: &str, sts: Option<&str>, prefix: &str) -> ServiceProcess {
    let env: Vec<_> = aws_env(dynalite, sts)
        .into_iter()
        .chain(auth_tables_env(prefix, &format!("{prefix}-items")))
        .chain(owned_env(&[
            ("DYNAGATE_ARGON2_MEMORY_KIB", "256".into()),
            ("DYNAGATE_ARGON2_ITERATIONS", "1".into()),
        ]))
        .chain(limits_env())
        .collect();
    ServiceProcess::start("auth-service", &env.into_iter().collect::<HashMap<_, _>>())
        .expect("start auth-service")
}

/// `ROUNDS` times, 2,000 calls to `path` on `service` whose body never ends: each must be
/// answered DEADLINE_EXCEEDED by the body timeout, and the service's memory must be reused
/// from one round to the next. Prints the figures.
async fn never_ending_rounds(service: &ServiceProcess, path: &str, token: Option<&str>) {
    let calls = CONNECTIONS * PER_CONNECTION;
    let kib = |process: &ServiceProcess| process.rss_kib().expect("RSS");
    let idle = kib(service);
    let mut after_rounds = Vec::new();
    let rounds = rounds();
    for round in 1..=rounds {
        let open = NeverEnding::open(service.addr, path, token, CONNECTIONS, PER_CONNECTION)
            .await
            .expect("open the streams");
        let while_open = kib(service);
        // Generous: only calls the server never ends would reach it.
        let (endings, still_open) = open.endings(Duration::from_secs(120)).await;
        let after = kib(service);
        let slowest = endings.iter().map(|ended| ended.after).max();
        eprintln!(
            "{} {path} round {round}: {calls} never-ending bodies; RSS idle {idle} KiB, with \
             them sent {while_open} KiB (+{} KiB, {:.1} KiB per call), after they ended {after} \
             KiB; {} ended (slowest after {slowest:?}), {still_open} still open",
            service.name,
            while_open.saturating_sub(idle),
            while_open.saturating_sub(idle) as f64 / calls as f64,
            endings.len(),
        );
        assert_eq!(still_open, 0, "calls the server never ended");
        assert_eq!(endings.len(), calls);
        assert_answered_at_the_body_timeout(&endings);
        after_rounds.push(after);
    }
    let (_, peak_mib) = service.memory_mib().expect("memory");
    eprintln!(
        "{}: RSS after each round {after_rounds:?} KiB, peak {peak_mib:.1} MiB",
        service.name
    );
    // The first round grows the pools; later rounds reuse them instead of adding their own.
    let (first, last) = (after_rounds[0], after_rounds[rounds - 1]);
    assert!(
        last <= first + 16 * 1024,
        "memory kept growing: {after_rounds:?} KiB"
    );
    assert!(
        last <= idle + 64 * 1024,
        "{} calls that ended still hold memory: {idle} → {last} KiB",
        calls
    );
}

/// Every call was answered DEADLINE_EXCEEDED by the body timeout (its message names it).
fn assert_answered_at_the_body_timeout(endings: &[Ended]) {
    let expected = format!("not complete within {BODY_TIMEOUT_MS} ms");
    for ended in endings {
        match &ended.ending {
            Ending::Answered(200, Code::DeadlineExceeded, message)
                if message.contains(&expected) => {}
            other => panic!("a never-ending body ended otherwise: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_never_ending_bodies_are_answered_at_the_body_timeout() {
    let dynalite = Emulator::shared_dynalite().await.endpoint();
    let auth = start_auth(&dynalite, None, &unique_prefix());
    assert!(tests::wait_serving(auth.addr, "dynagate.auth.v1.AuthService").await);

    // Login needs no token: anyone can open these.
    never_ending_rounds(&auth, "/dynagate.auth.v1.AuthService/Login", None).await;

    // An honest client is served afterwards.
    let mut client = AuthServiceClient::connect(auth.url())
        .await
        .expect("connect");
    TestUser::register(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ending_bodies_with_a_valid_token_are_answered_at_the_body_timeout() {
    let dynalite = Emulator::shared_dynalite().await.endpoint();
    let moto = Emulator::shared_moto().await.endpoint();
    let prefix = unique_prefix();
    let auth = start_auth(&dynalite, Some(&moto), &prefix);
    let env: Vec<_> = aws_env(&dynalite, None)
        .into_iter()
        .chain(owned_env(&[
            ("DYNAGATE_AUTH_URL", auth.url()),
            ("DYNAGATE_ITEMS_TABLE", format!("{prefix}-items")),
            ("DYNAGATE_DEV_EPHEMERAL_PAGE_TOKEN_KEY", "true".into()),
        ]))
        .chain(limits_env())
        .collect();
    let data = ServiceProcess::start("data-service", &env.into_iter().collect::<HashMap<_, _>>())
        .expect("start data-service");
    assert!(tests::wait_serving(data.addr, "dynagate.data.v1.DataService").await);
    let mut auth_client = AuthServiceClient::connect(auth.url())
        .await
        .expect("connect");
    let user = TestUser::register(&mut auth_client).await;
    let token = user.login(&mut auth_client).await.access_token;

    let path = "/dynagate.data.v1.DataService/GetItem";
    never_ending_rounds(&data, path, Some(&token)).await;

    let mut client = DataServiceClient::connect(data.url())
        .await
        .expect("connect");
    let request = with_bearer(
        GetItemRequest {
            key: "nothing-here".into(),
            ..Default::default()
        },
        &token,
    );
    let missing = client.get_item(request).await.expect_err("no such item");
    assert_eq!(
        missing.code(),
        Code::NotFound,
        "served after the storm: {missing:?}"
    );
}

/// What a raw HTTP/2 client that completes the handshake and then goes silent sees.
#[derive(Debug, Default)]
struct SilentPeer {
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, if it sent one.
    max_concurrent_streams: Option<u32>,
    pings: usize,
    goaway: bool,
    /// Whether the server closed the connection.
    closed: bool,
}

/// Sends the client preface and an empty SETTINGS frame, then reads (never writing again:
/// no SETTINGS ack, no PING ack) until the server closes the connection or `limit` passes.
async fn silent_peer(addr: SocketAddr, limit: Duration) -> SilentPeer {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("the preface");
    let mut seen = SilentPeer::default();
    let read = async {
        loop {
            let mut header = [0u8; 9];
            if tcp.read_exact(&mut header).await.is_err() {
                seen.closed = true;
                return;
            }
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0; len];
            if tcp.read_exact(&mut payload).await.is_err() {
                seen.closed = true;
                return;
            }
            match header[3] {
                // SETTINGS (not an ack): 6-byte entries, id 3 is MAX_CONCURRENT_STREAMS.
                0x4 if header[4] & 0x1 == 0 => {
                    for entry in payload.chunks_exact(6) {
                        if entry[..2] == [0, 3] {
                            let value =
                                u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                            seen.max_concurrent_streams = Some(value);
                        }
                    }
                }
                0x6 if header[4] & 0x1 == 0 => seen.pings += 1,
                0x7 => seen.goaway = true,
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(limit, read).await;
    seen
}

#[tokio::test]
async fn servers_advertise_their_stream_limit_and_drop_peers_that_stop_answering_pings() {
    let limits = ConnectionLimits {
        max_concurrent_streams: 7,
        http2_keepalive_secs: 1,
        http2_keepalive_timeout_secs: 1,
        ..ConnectionLimits::default()
    };
    let (auth_limits, data_limits) = (limits.clone(), limits);
    let dynamodb = Emulator::shared_dynalite().await.endpoint();
    let stack = TestStack::spawn_both_tuned(
        Endpoints::shared().await,
        &dynamodb,
        |auth| auth.limits = auth_limits,
        |data| data.limits = data_limits,
    )
    .await;

    for (name, addr) in [("auth", stack.auth.addr), ("data", stack.data.addr)] {
        // Generous: a server without keepalive would keep the connection past it.
        let seen = silent_peer(addr, Duration::from_secs(60)).await;
        assert_eq!(seen.max_concurrent_streams, Some(7), "{name}: {seen:?}");
        assert!(seen.pings >= 1, "{name} pinged the silent peer: {seen:?}");
        assert!(seen.closed, "{name} dropped the silent peer: {seen:?}");
    }
}
