//! Random and mutated protobuf messages to every RPC of both services, over the wire: valid
//! requests encoded, then mangled (bit flips, truncation, duplicated and unknown fields, wrong
//! wire types, huge length prefixes, deep nesting, overlong strings, random bytes), sent with
//! a valid token so the handlers behind the interceptor run. No call may answer INTERNAL or
//! UNKNOWN; afterwards both services still serve, and the user's partition holds exactly the
//! items the accepted writes left.
//!
//! Seeded: the seed is printed; `DYNAGATE_FUZZ_SEED=N` replays a run and
//! `DYNAGATE_FUZZ_CASES=N` changes its length (default 2000); `DYNAGATE_FUZZ_VERBOSE=1` prints
//! every call and its status.

use std::{collections::BTreeSet, time::Duration};

use common::proto::{
    auth::v1::{
        ChangePasswordRequest, ConfirmTotpRequest, DisableTotpRequest, EnrollTotpRequest,
        LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest, RevokeSessionRequest,
        WatchRevocationsRequest,
    },
    data::v1::{
        BytesSet, DeleteItemRequest, GetItemRequest, ListValue, MapValue, NumberSet,
        PutItemRequest, QueryItemsRequest, StringSet, UpdateItemRequest, Value, value::Kind,
    },
};
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use tests::{
    auth::{Endpoints, TestAuth, TestUser},
    data::{SignedIn, TestStack},
    mutate::{Mutation, random_bytes},
    raw::{AUTH_RPCS, DATA_RPCS, call_raw_within, deeply_nested, first_message},
};
use tonic::Code;

const DEFAULT_CASES: usize = 2000;

fn from_env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The auth-side user the fuzz calls as: replaced whenever an accepted call may have ended
/// its session or changed its password.
struct AuthUser {
    user: TestUser,
    token: String,
    refresh_token: String,
}

impl AuthUser {
    async fn fresh(stack: &TestStack) -> Self {
        let mut client = stack.auth.client().await;
        let user = TestUser::register(&mut client).await;
        let login = user.login(&mut client).await;
        Self {
            user,
            token: login.access_token,
            refresh_token: login.refresh_token,
        }
    }
}

fn text(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..max);
    (0..len).map(|_| rng.random::<char>()).collect()
}

fn overlong(rng: &mut StdRng) -> String {
    "x".repeat(rng.random_range(1_000..120_000))
}

fn key(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0 => text(rng, 40),
        1 => overlong(rng),
        _ => format!("k{}", rng.random_range(0..12)),
    }
}

fn number(rng: &mut StdRng) -> String {
    let choices = [
        "0",
        "-1",
        "3.25",
        "1e10",
        "-9.99E-130",
        "1e126",
        "1e200",
        "NaN",
        "",
    ];
    match rng.random_range(0..3) {
        0 => choices.choose(rng).copied().unwrap_or("0").to_owned(),
        1 => rng.random::<i64>().to_string(),
        _ => (0..rng.random_range(1..60))
            .map(|_| rng.random_range(b'0'..=b'9') as char)
            .collect(),
    }
}

fn value(rng: &mut StdRng, depth: u32) -> Value {
    let leaf = depth == 0;
    let kind = match rng.random_range(0..if leaf { 8 } else { 10 }) {
        0 => Kind::StringValue(text(rng, 20)),
        1 => Kind::NumberValue(number(rng)),
        2 => Kind::BytesValue(random_bytes(rng, 0, 20)),
        3 => Kind::BoolValue(rng.random()),
        4 => Kind::NullValue(rng.random_range(0..2)),
        5 => Kind::StringSet(StringSet {
            values: (0..rng.random_range(0..4)).map(|_| text(rng, 8)).collect(),
        }),
        6 => Kind::NumberSet(NumberSet {
            values: (0..rng.random_range(0..4)).map(|_| number(rng)).collect(),
        }),
        7 => Kind::BytesSet(BytesSet {
            values: (0..rng.random_range(0..4))
                .map(|_| random_bytes(rng, 0, 6))
                .collect(),
        }),
        8 => Kind::ListValue(ListValue {
            values: (0..rng.random_range(0..4))
                .map(|_| value(rng, depth - 1))
                .collect(),
        }),
        _ => Kind::MapValue(MapValue {
            fields: (0..rng.random_range(0..4))
                .map(|_| (text(rng, 6), value(rng, depth - 1)))
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// A value nested `depth` deep in lists or maps, past DynamoDB's 32 levels or prost's 100.
fn deep(rng: &mut StdRng) -> Value {
    let depth = rng.random_range(20..300);
    if rng.random() {
        return deeply_nested(depth);
    }
    (0..depth).fold(Value { kind: None }, |inner, _| Value {
        kind: Some(Kind::MapValue(MapValue {
            fields: [("m".to_owned(), inner)].into(),
        })),
    })
}

fn attributes(rng: &mut StdRng) -> std::collections::HashMap<String, Value> {
    (0..rng.random_range(0..4))
        .map(|_| {
            let name = match rng.random_range(0..6) {
                0 => text(rng, 10),
                _ => format!("a{}", rng.random_range(0..5)),
            };
            let value = if rng.random_range(0..8) == 0 {
                deep(rng)
            } else {
                value(rng, 3)
            };
            (name, value)
        })
        .collect()
}

fn version(rng: &mut StdRng) -> Option<u64> {
    rng.random_bool(0.3).then(|| rng.random_range(0..4))
}

/// A plausible request for the data-service's `path`, encoded.
fn data_message(path: &str, rng: &mut StdRng) -> Vec<u8> {
    match path.rsplit('/').next().unwrap_or_default() {
        "GetItem" => GetItemRequest {
            key: key(rng),
            consistent_read: rng.random(),
            attributes_to_get: (0..rng.random_range(0..3)).map(|_| text(rng, 6)).collect(),
        }
        .encode_to_vec(),
        "PutItem" => PutItemRequest {
            key: key(rng),
            attributes: attributes(rng),
            if_absent: rng.random_bool(0.2),
            expected_version: version(rng),
            // Past, future and invalid expiries alike.
            expires_at: rng.random_bool(0.3).then(|| prost_types::Timestamp {
                seconds: rng.random_range(-10..4_000_000_000),
                nanos: rng.random_range(-1..=1_000_000_000),
            }),
        }
        .encode_to_vec(),
        "UpdateItem" => UpdateItemRequest {
            key: key(rng),
            set: attributes(rng),
            remove: (0..rng.random_range(0..3))
                .map(|_| format!("a{}", rng.random_range(0..5)))
                .collect(),
            expected_version: version(rng),
            ..Default::default()
        }
        .encode_to_vec(),
        "DeleteItem" => DeleteItemRequest {
            key: key(rng),
            expected_version: version(rng),
        }
        .encode_to_vec(),
        _ => QueryItemsRequest {
            key_prefix: if rng.random() {
                "k".into()
            } else {
                text(rng, 4)
            },
            start_key: if rng.random() {
                String::new()
            } else {
                key(rng)
            },
            end_key: if rng.random() {
                String::new()
            } else {
                key(rng)
            },
            limit: rng.random_range(0..30),
            descending: rng.random(),
            page_token: if rng.random_bool(0.8) {
                String::new()
            } else {
                text(rng, 80)
            },
            consistent_read: rng.random(),
            select_count: rng.random_bool(0.3),
        }
        .encode_to_vec(),
    }
}

fn code(rng: &mut StdRng) -> String {
    format!("{:06}", rng.random_range(0..1_000_000))
}

/// A plausible request for the auth-service's `path` from `user`, encoded.
fn auth_message(path: &str, user: &AuthUser, rng: &mut StdRng) -> Vec<u8> {
    let password = || user.user.password.clone();
    match path.rsplit('/').next().unwrap_or_default() {
        "Register" => RegisterRequest {
            username: format!("fz-{}", rng.random::<u32>()),
            password: format!("pw-{}-{}", rng.random::<u64>(), rng.random::<u64>()),
        }
        .encode_to_vec(),
        "Login" => LoginRequest {
            username: user.user.username.clone(),
            password: password(),
            totp_code: if rng.random_bool(0.2) {
                code(rng)
            } else {
                String::new()
            },
            recovery_code: String::new(),
        }
        .encode_to_vec(),
        "Refresh" => RefreshRequest {
            refresh_token: user.refresh_token.clone(),
        }
        .encode_to_vec(),
        "Logout" => LogoutRequest {
            refresh_token: user.refresh_token.clone(),
        }
        .encode_to_vec(),
        "ChangePassword" => ChangePasswordRequest {
            old_password: password(),
            new_password: if rng.random() {
                overlong(rng)
            } else {
                format!("new-{}-{}", rng.random::<u64>(), rng.random::<u64>())
            },
        }
        .encode_to_vec(),
        "EnrollTotp" => EnrollTotpRequest {
            password: if rng.random_bool(0.8) {
                password()
            } else {
                text(rng, 12)
            },
        }
        .encode_to_vec(),
        "ConfirmTotp" => ConfirmTotpRequest { code: code(rng) }.encode_to_vec(),
        "DisableTotp" => DisableTotpRequest {
            code: code(rng),
            recovery_code: text(rng, 12),
        }
        .encode_to_vec(),
        "RevokeSession" => RevokeSessionRequest {
            session_id: if rng.random() {
                uuid::Uuid::new_v4().to_string()
            } else {
                text(rng, 40)
            },
        }
        .encode_to_vec(),
        "WatchRevocations" => WatchRevocationsRequest {
            since: rng.random_bool(0.7).then(|| prost_types::Timestamp {
                seconds: rng.random_range(-100_000_000_000..100_000_000_000),
                nanos: rng.random_range(-2_000_000_000..2_000_000_000),
            }),
            resume_token: if rng.random_bool(0.5) {
                String::new()
            } else {
                text(rng, 40)
            },
        }
        .encode_to_vec(),
        // LogoutAll, ListSigningKeys, GetCredentials, ListSessions: empty.
        _ => Vec::new(),
    }
}

/// Calls that, accepted, may end the session or change the password of the caller.
fn ends_the_session(path: &str) -> bool {
    [
        "/Refresh",
        "/Logout",
        "/LogoutAll",
        "/ChangePassword",
        "/RevokeSession",
        "/ConfirmTotp",
        "/DisableTotp",
    ]
    .iter()
    .any(|name| path.ends_with(name))
}

/// A copy of `token` with one character changed, for the few calls sent with a bad token.
fn spoiled(token: &str, rng: &mut StdRng) -> String {
    let mut bytes = token.as_bytes().to_vec();
    if let Some(byte) = bytes.get_mut(rng.random_range(0..token.len().max(1))) {
        *byte = if *byte == b'A' { b'B' } else { b'A' };
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One header no honest client sends (1 call in 10): garbage deadlines, encodings, content
/// types, trace contexts, schemes, and huge or non-ASCII values where services read them.
fn hostile_header(rng: &mut StdRng) -> Vec<(&'static str, http::HeaderValue)> {
    if !rng.random_bool(0.1) {
        return Vec::new();
    }
    let names = [
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
        "content-type",
        "traceparent",
        "authorization",
        "user-agent",
        "x-forwarded-for",
    ];
    let name = *names.choose(rng).unwrap_or(&names[0]);
    let candidates: Vec<Vec<u8>> = vec![
        b"99999999H".to_vec(),
        b"-1S".to_vec(),
        b"0n".to_vec(),
        b"gzip".to_vec(),
        b"application/grpc+json".to_vec(),
        b"00-00000000000000000000000000000000-0000000000000000-01".to_vec(),
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz-extra".to_vec(),
        b"Bearer".to_vec(),
        b"bEaReR    ".to_vec(),
        "x".repeat(rng.random_range(1..12_000)).into_bytes(),
        (0..rng.random_range(1..64))
            .map(|_| rng.random_range(0x20_u8..=0xff))
            .filter(|b| *b != 0x7f)
            .collect(),
    ];
    let value = candidates.choose(rng).cloned().unwrap_or_default();
    http::HeaderValue::from_bytes(&value)
        .map(|value| vec![(name, value)])
        .unwrap_or_default()
}

/// Keeps the keys the accepted writes left in the data user's partition.
fn track(expected: &mut BTreeSet<String>, path: &str, body: &[u8]) {
    let Some(message) = first_message(body) else {
        return;
    };
    if path.ends_with("/PutItem") {
        if let Ok(request) = PutItemRequest::decode(message) {
            expected.insert(request.key);
        }
    } else if path.ends_with("/UpdateItem") {
        if let Ok(request) = UpdateItemRequest::decode(message) {
            expected.insert(request.key);
        }
    } else if path.ends_with("/DeleteItem")
        && let Ok(request) = DeleteItemRequest::decode(message)
    {
        expected.remove(&request.key);
    }
}

#[tokio::test]
async fn mutated_messages_never_get_internal_or_unknown() {
    let seed = from_env("DYNAGATE_FUZZ_SEED").unwrap_or_else(rand::random);
    let cases = from_env("DYNAGATE_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    println!("wire fuzz: seed {seed}, {cases} cases (replay with DYNAGATE_FUZZ_SEED={seed})");
    let verbose = from_env("DYNAGATE_FUZZ_VERBOSE").is_some_and(|v| v > 0);
    let mut rng = StdRng::seed_from_u64(seed);
    let endpoints = Endpoints::shared().await;
    let dynamodb = endpoints.dynamodb.clone();
    let stack =
        TestStack::spawn_both_tuned(endpoints, &dynamodb, TestAuth::turn_totp_on, |_| {}).await;
    let mut data_user: SignedIn = stack.user().await;
    let mut auth_user = AuthUser::fresh(&stack).await;
    let auth = stack.auth.channel().await;
    let data = stack.data.channel().await;
    let mut expected = BTreeSet::new();
    let mut failures = Vec::new();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..cases {
        let on_data = rng.random_range(0..(AUTH_RPCS.len() + DATA_RPCS.len())) < DATA_RPCS.len();
        let (channel, path, message, token) = if on_data {
            let path = *DATA_RPCS.choose(&mut rng).unwrap_or(&DATA_RPCS[0]);
            let message = data_message(path, &mut rng);
            (&data, path, message, data_user.token.clone())
        } else {
            let path = *AUTH_RPCS.choose(&mut rng).unwrap_or(&AUTH_RPCS[0]);
            let message = auth_message(path, &auth_user, &mut rng);
            (&auth, path, message, auth_user.token.clone())
        };
        let mutation = Mutation::pick(&mut rng);
        let body = mutation.apply(&message, &mut rng);
        let token = if rng.random_bool(0.05) {
            spoiled(&token, &mut rng)
        } else {
            token
        };
        let headers = hostile_header(&mut rng);
        if verbose {
            let shown: Vec<_> = headers.iter().map(|(n, v)| (n, v.len())).collect();
            println!("{case} sending {path} {mutation:?} headers {shown:?}");
        }
        let open_for = Some(Duration::from_millis(100));
        let status = call_raw_within(
            channel,
            path,
            Some(&token),
            body.clone(),
            &headers,
            open_for,
        )
        .await;
        *codes.entry(format!("{:?}", status.code())).or_default() += 1;
        if verbose {
            println!(
                "{case} {path} {mutation:?} {headers:?}: {:?} {}",
                status.code(),
                status.message()
            );
        }
        if matches!(status.code(), Code::Internal | Code::Unknown) {
            let head: Vec<u8> = body.iter().copied().take(64).collect();
            failures.push(format!(
                "case {case}: {path} {mutation:?} {headers:?} -> {status:?}; body {} bytes, \
                 starts {head:02x?}",
                body.len()
            ));
        }
        if status.code() == Code::Ok {
            if on_data {
                track(&mut expected, path, &body);
            } else if ends_the_session(path) {
                auth_user = AuthUser::fresh(&stack).await;
            }
        }
    }
    println!("wire fuzz: statuses {codes:?}");
    assert!(
        failures.is_empty(),
        "seed {seed}: {} calls got INTERNAL or UNKNOWN:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Both services still serve, an honest client as much as the fuzz's own user.
    assert!(tests::wait_serving(stack.auth.addr, "dynagate.auth.v1.AuthService").await);
    assert!(tests::wait_serving(stack.data.addr, "dynagate.data.v1.DataService").await);
    let mut honest = stack.user().await;
    assert_eq!(honest.put_text("after-the-fuzz", "fine").await, 1);
    // Nothing half-written: the partition holds exactly what the accepted writes left.
    let (keys, _) = data_user.query_all(QueryItemsRequest::default()).await;
    let keys: BTreeSet<String> = keys.into_iter().collect();
    assert_eq!(keys, expected, "seed {seed}: the partition after the fuzz");
}
