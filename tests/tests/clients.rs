//! Real clients other than our own: grpcurl through server reflection, and Python and
//! TypeScript clients that load the protos themselves (grpcio-tools stubs generated at test
//! time; @grpc/proto-loader at run time, with types from proto-loader-gen-types checked by tsc)
//! and run the whole story on both services under test.

use std::process::Command;

use serde_json::{Value, json};
use tests::{
    auth::{TestAuth, TestUser, listed_auth_services},
    emulators::{tool, workspace_root},
};

/// Runs grpcurl against `addr` and returns its stdout, failing the test on a non-zero exit.
fn grpcurl(addr: &str, args: &[&str]) -> String {
    let output = Command::new(tool("grpcurl"))
        .arg("-plaintext")
        .args(args)
        .output()
        .expect("run grpcurl");
    assert!(
        output.status.success(),
        "grpcurl {args:?} against {addr} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

#[tokio::test]
async fn grpcurl_lists_and_describes_the_services_through_reflection() {
    let auth = TestAuth::spawn().await;
    let addr = auth.addr.to_string();

    let services = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&addr, &[&addr, "list"])
    })
    .await
    .unwrap();
    let described = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            grpcurl(
                &addr,
                &[&addr, "describe", "dynagate.auth.v1.AuthService.Login"],
            )
        }
    })
    .await
    .unwrap();

    let services = listed_auth_services(&services);
    assert!(
        !services.contains(&"dynagate.data.v1.DataService"),
        "only served services are listed: {services:?}"
    );

    assert!(described.contains("rpc Login"), "{described}");
    assert!(
        described.contains("Unknown users and wrong"),
        "proto comments travel through reflection: {described}"
    );
}

#[tokio::test]
async fn grpcurl_registers_logs_in_and_uses_the_bearer_token() {
    let auth = TestAuth::spawn().await;
    let addr = auth.addr.to_string();
    let username = format!("curl-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let credentials =
        serde_json::json!({"username": username, "password": "grpcurl password"}).to_string();

    let (registered, login, logout_all) = tokio::task::spawn_blocking(move || {
        let registered = grpcurl(
            &addr,
            &[
                "-d",
                &credentials,
                &addr,
                "dynagate.auth.v1.AuthService/Register",
            ],
        );
        let login = grpcurl(
            &addr,
            &[
                "-d",
                &credentials,
                &addr,
                "dynagate.auth.v1.AuthService/Login",
            ],
        );
        let token = serde_json::from_str::<Value>(&login).unwrap()["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let logout_all = grpcurl(
            &addr,
            &[
                "-H",
                &format!("authorization: Bearer {token}"),
                "-d",
                "{}",
                &addr,
                "dynagate.auth.v1.AuthService/LogoutAll",
            ],
        );
        (registered, login, logout_all)
    })
    .await
    .unwrap();

    let registered: Value = serde_json::from_str(&registered).unwrap();
    let login: Value = serde_json::from_str(&login).unwrap();
    let logout_all: Value = serde_json::from_str(&logout_all).unwrap();
    assert_eq!(login["userId"], registered["userId"]);
    assert!(
        login["accessToken"]
            .as_str()
            .unwrap()
            .starts_with("v4.public.")
    );
    assert!(login["refreshToken"].as_str().unwrap().starts_with("dgr1_"));
    assert_eq!(logout_all["sessionsRevoked"], 1);
}

#[tokio::test]
async fn grpcurl_sees_rich_errors_for_bad_registrations() {
    let auth = TestAuth::spawn().await;
    let addr = auth.addr.to_string();

    let output = tokio::task::spawn_blocking(move || {
        Command::new(tool("grpcurl"))
            .args([
                "-plaintext",
                "-format-error",
                "-d",
                r#"{"username":"x","password":"short"}"#,
                &addr,
                "dynagate.auth.v1.AuthService/Register",
            ])
            .output()
            .expect("run grpcurl")
    })
    .await
    .unwrap();

    assert!(!output.status.success());
    let error: Value =
        serde_json::from_slice(&output.stderr).expect("grpcurl prints the status as JSON");
    assert_eq!(error["code"], 3, "INVALID_ARGUMENT: {error}");
    let violations = &error["details"][0]["fieldViolations"];
    assert_eq!(violations[0]["field"], "username", "{error}");
    assert_eq!(violations[1]["field"], "password", "{error}");
}

#[tokio::test]
async fn reflection_v1_lists_the_services_too() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let auth = TestAuth::spawn().await;
    let mut reflection = ServerReflectionClient::new(auth.channel().await);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();

    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"dynagate.auth.v1.AuthService"), "{names:?}");
}

#[tokio::test]
async fn a_python_client_generated_from_the_protos_works() {
    let auth = TestAuth::spawn().await;
    let mut client = auth.client().await;
    TestUser::register(&mut client).await;
    let addr = auth.addr.to_string();
    let python = tool("../venv/bin/python");

    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(workspace_root().join("tests/python/auth_client.py"))
            .arg(&addr)
            .output()
            .expect("run the Python client")
    })
    .await
    .unwrap();

    assert!(
        output.status.success(),
        "Python client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(seen["duplicate"], "ALREADY_EXISTS");
    assert_eq!(seen["health"], "SERVING");
    let services = seen["reflection_v1alpha_services"].as_array().unwrap();
    assert!(
        services.iter().any(|s| s == "grpc.health.v1.Health"),
        "{services:?}"
    );
}

#[tokio::test]
async fn grpcurl_drives_the_data_flow_shown_in_the_readme() {
    let stack = tests::data::TestStack::spawn().await;
    let (auth, data) = (stack.auth.addr.to_string(), stack.data.addr.to_string());
    let credentials = serde_json::json!({"username": format!("readme-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]), "password": "correct horse battery"}).to_string();

    let (put, got, listed, exported, updated, stale) = tokio::task::spawn_blocking(move || {
        grpcurl(&auth, &["-d", &credentials, &auth, "dynagate.auth.v1.AuthService/Register"]);
        let login = grpcurl(&auth, &["-d", &credentials, &auth, "dynagate.auth.v1.AuthService/Login"]);
        let token = serde_json::from_str::<Value>(&login).unwrap()["accessToken"].as_str().unwrap().to_owned();
        let bearer = format!("authorization: Bearer {token}");
        let call = |body: &str, method: &str| {
            grpcurl(&data, &["-H", &bearer, "-d", body, &data, &format!("dynagate.data.v1.DataService/{method}")])
        };
        let put = call(
            r#"{"key":"notes/1","attributes":{"title":{"stringValue":"hello"},"stars":{"numberValue":"5"}}}"#,
            "PutItem",
        );
        let got = call(r#"{"key":"notes/1"}"#, "GetItem");
        let listed = call(r#"{"keyPrefix":"notes/","limit":10}"#, "QueryItems");
        let exported = call(r#"{"keyPrefix":"notes/"}"#, "ExportItems");
        // The Clients section's grpcurl example: an update at version 1, then a stale one.
        let updated = call(
            r#"{"key":"notes/1","set":{"title":{"stringValue":"hello again"}},"expectedVersion":"1"}"#,
            "UpdateItem",
        );
        let stale = Command::new(tool("grpcurl"))
            .args(["-plaintext", "-format-error", "-H", &bearer, "-d"])
            .arg(r#"{"key":"notes/1","set":{"title":{"stringValue":"lost"}},"expectedVersion":"1"}"#)
            .args([&data, "dynagate.data.v1.DataService/UpdateItem"])
            .output()
            .expect("run grpcurl");
        assert!(!stale.status.success(), "a stale update succeeded");
        (put, got, listed, exported, updated, stale.stderr)
    })
    .await
    .unwrap();

    let put: Value = serde_json::from_str(&put).unwrap();
    let got: Value = serde_json::from_str(&got).unwrap();
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(put["item"]["version"], "1", "uint64 is a JSON string");
    assert_eq!(got["item"]["attributes"]["title"]["stringValue"], "hello");
    assert_eq!(got["item"]["attributes"]["stars"]["numberValue"], "5");
    assert_eq!(listed["items"][0]["key"], "notes/1");
    assert!(listed.get("nextPageToken").is_none(), "one page: {listed}");
    // A stream: one JSON object per message.
    let exported: Vec<Value> = serde_json::Deserializer::from_str(&exported)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0]["item"]["key"], "notes/1");
    assert_eq!(
        exported[0]["item"]["attributes"]["stars"]["numberValue"],
        "5"
    );
    let updated: Value = serde_json::from_str(&updated).unwrap();
    assert_eq!(updated["item"]["version"], "2");
    assert_eq!(
        updated["item"]["attributes"]["title"]["stringValue"],
        "hello again"
    );
    let stale: Value = serde_json::from_slice(&stale).expect("grpcurl prints the status as JSON");
    assert_eq!(
        stale,
        json!({
            "code": 9,
            "message": "version mismatch: the item is at version 2",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "domain": "dynagate.dev",
                "metadata": {"current_version": "2"},
                "reason": "VERSION_MISMATCH",
            }],
        })
    );
}

#[tokio::test]
async fn grpcurl_reaches_the_many_item_writes_through_reflection() {
    let stack = tests::data::TestStack::spawn().await;
    let mut user = stack.user().await;
    user.put_text("notes/1", "hello").await;
    let (data, bearer) = (
        stack.data.addr.to_string(),
        format!("authorization: Bearer {}", user.token),
    );
    let (described, written, refused) = tokio::task::spawn_blocking(move || {
        let service = "dynagate.data.v1.DataService";
        let described = grpcurl(&data, &[&data, "describe", service]);
        let batch = r#"{"puts":[{"key":"notes/2","attributes":{"title":{"stringValue":"two"}}}],"deletes":["notes/1"]}"#;
        let method = format!("{service}/BatchWriteItems");
        let written = grpcurl(&data, &["-H", &bearer, "-d", batch, &data, &method]);
        // Conditions are judged before DynamoDB's TransactWriteItems (which dynalite lacks).
        let transaction = r#"{"ops":[{"put":{"key":"notes/3"}},{"conditionCheck":{"key":"notes/2","expectedVersion":"7"}}]}"#;
        let refused = Command::new(tool("grpcurl"))
            .args(["-plaintext", "-format-error", "-H", &bearer, "-d", transaction])
            .args([&data, &format!("{service}/TransactWriteItems")])
            .output()
            .expect("run grpcurl");
        (described, written, refused.stderr)
    })
    .await
    .unwrap();

    assert!(described.contains("rpc BatchWriteItems"), "{described}");
    assert!(described.contains("rpc TransactWriteItems"), "{described}");
    let written: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(written, json!({}));
    assert_eq!(user.get("notes/2").await.unwrap().version, 1);
    let refused: Value = serde_json::from_slice(&refused).expect("the status as JSON");
    assert_eq!(refused["code"], 9, "{refused}");
    assert_eq!(
        refused["details"][0]["reason"], "TRANSACTION_CONDITION_FAILED",
        "{refused}"
    );
    assert_eq!(refused["details"][0]["metadata"]["failed_ops"], "1");
}

#[tokio::test]
async fn a_python_client_runs_the_whole_story_on_both_services() {
    let stack = tests::data::TestStack::spawn().await;
    let python = tool("../venv/bin/python");
    let script = workspace_root().join("tests/python/story_client.py");
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg(stack.auth.addr.to_string())
        .arg(stack.data.addr.to_string());

    let output = run(command).await;

    let seen: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(
        seen["violations"],
        json!(["username", "password"]),
        "{seen}"
    );
    assert_eq!(seen["put_version"], 1);
    assert_eq!(
        seen["pages"],
        json!([["notes/1", "notes/2"], ["notes/3", "notes/4"], ["notes/5"]]),
        "five items, two a page, in key order"
    );
    assert_eq!(seen["updated_version"], 2);
    assert_eq!(
        seen["stale"],
        json!({
            "code": "FAILED_PRECONDITION",
            "reason": "VERSION_MISMATCH",
            "domain": "dynagate.dev",
            "metadata": {"current_version": "2"},
        })
    );
    assert_eq!(seen["deleted"], json!({"key": "notes/1", "version": 2}));
    assert_eq!(seen["after_delete"], "NOT_FOUND");
    assert_eq!(seen["after_logout"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_typescript_client_type_checks_against_the_protos_and_runs_the_whole_story() {
    // Types first, without services: a story that no longer matches the contract fails here.
    let build = compile_the_typescript_client().await;
    let stack = tests::data::TestStack::spawn().await;
    // grpc-js and proto-loader live in .local/npm (scripts/install-tools), not beside the test.
    let node_modules = tool("../npm/node_modules/@grpc/grpc-js")
        .join("../..")
        .canonicalize()
        .expect("node_modules");
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-reporter=tap"])
        .arg(build.join("tests/node/story.test.js"))
        .env("NODE_PATH", node_modules)
        .env("DYNAGATE_AUTH_ADDR", stack.auth.addr.to_string())
        .env("DYNAGATE_DATA_ADDR", stack.data.addr.to_string());

    let output = run(command).await;

    // A passing run could also be one that found no tests: check that every step ran.
    let tap = String::from_utf8_lossy(&output.stdout);
    for step in [
        "a bad registration names every broken field in a BadRequest",
        "register and log in",
        "put and get",
        "query a page at a time",
        "a stale version fails with the current one in an ErrorInfo",
        "delete at the version we know",
        "refresh, then log out, which ends the session",
        "the whole story on both services",
    ] {
        let passed = tap
            .lines()
            .map(str::trim_start)
            .any(|line| line.starts_with("ok ") && line.ends_with(&format!(" - {step}")));
        assert!(passed, "step {step:?} did not pass:\n{tap}");
    }
    assert!(tap.contains("# fail 0"), "{tap}");
}

/// Generates the message and service types from the protos with proto-loader-gen-types into
/// `target/node/types` and compiles `tests/node` with tsc (strict) into `target/node/build`,
/// the commands docs/clients.md gives; returns the build directory. Any type error fails the test.
async fn compile_the_typescript_client() -> std::path::PathBuf {
    let root = workspace_root();
    let out = root.join("target/node");
    match std::fs::remove_dir_all(&out) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => panic!("cannot clear {}: {error}", out.display()),
    }
    let mut generate = Command::new(tool("../npm/node_modules/.bin/proto-loader-gen-types"));
    generate.current_dir(&root).args([
        "dynagate/auth/v1/auth.proto",
        "dynagate/data/v1/data.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
        "--grpcLib=@grpc/grpc-js",
        "--outDir=target/node/types",
        "--keepCase",
        "--longs=String",
        "--enums=String",
        "--defaults",
        "--oneofs",
        "--includeComments",
        "-I",
        "proto",
        "tests/node/proto",
    ]);
    run(generate).await;
    let mut compile = Command::new(tool("../npm/node_modules/.bin/tsc"));
    compile.current_dir(&root).args(["-p", "tests/node"]);
    run(compile).await;
    out.join("build")
}

/// Runs `command` off the async runtime and returns its output, failing the test (with both
/// output streams) on a non-zero exit.
async fn run(mut command: Command) -> std::process::Output {
    let shown = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .unwrap_or_else(|error| panic!("cannot run {shown}: {error}"));
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
