//! ExportItems through the gRPC API against dynalite: the whole range in key order (what
//! QueryItems' pages hold), resumed after a key, cut exactly at the prefix, without expired
//! items, with items written directly read as QueryItems reads them; and a 20,000-item export
//! read slowly, then cancelled, seen from a recording proxy: the service reads only a few
//! pages ahead of its reader, and no Query follows the cancel. Also the ends an export can
//! have: the per-user bound, a revoked session, the deadline.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::proto::{
    auth::v1::{LogoutRequest, auth_service_client::AuthServiceClient},
    data::v1::{
        ExportItemsRequest, ExportItemsResponse, Item, QueryItemsRequest,
        data_service_client::DataServiceClient,
    },
};
use data_service::export::{EXPORT_PAGE_ITEMS, MAX_EXPORTS_PER_USER};
use tests::{
    auth::{Endpoints, TestUser, with_bearer},
    data::{SignedIn, TestStack},
    emulators::Emulator,
    proxy::RecordingProxy,
};
use tonic::{Code, Status, Streaming, transport::Channel};
use tonic_types::StatusExt;

/// The client's HTTP/2 windows in the flow-control tests: what may be in flight to it.
const WINDOW: u32 = 65_535;
/// Bytes of the `body` of each seeded item (`tests::tables::put_items`): less than an item
/// takes on the wire, so the bound on items in flight below is generous.
const BODY_BYTES: usize = 100;

fn n(number: impl ToString) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

/// Writes `count` items `{prefix}{i:05}` into `owner`'s partition, straight into DynamoDB
/// with the harness's own credentials (`{owner, key, body}`: the older layout, which the
/// service reads like any other).
async fn seed(stack: &TestStack, owner: &str, prefix: &str, count: usize) {
    let admin = aws_sdk_dynamodb::Client::new(&tests::sdk_config(&stack.endpoints.dynamodb));
    let table = &stack.data.settings.items_table;
    tests::tables::put_items(&admin, table, owner, prefix, count).await;
}

fn export_request(prefix: &str, start: &str) -> ExportItemsRequest {
    ExportItemsRequest {
        key_prefix: prefix.to_owned(),
        start_key: start.to_owned(),
    }
}

async fn start(
    client: &mut DataServiceClient<Channel>,
    token: &str,
    request: ExportItemsRequest,
) -> Result<Streaming<ExportItemsResponse>, Status> {
    let response = client.export_items(with_bearer(request, token)).await?;
    Ok(response.into_inner())
}

/// Reads the rest of an export.
async fn drain(
    stream: &mut Streaming<ExportItemsResponse>,
) -> Result<Vec<Item>, (Vec<Item>, Status)> {
    let mut items = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => items.push(message.item.expect("an item")),
            Ok(None) => return Ok(items),
            Err(status) => return Err((items, status)),
        }
    }
}

async fn export(user: &mut SignedIn, prefix: &str, start_key: &str) -> Result<Vec<Item>, Status> {
    let request = export_request(prefix, start_key);
    let mut stream = start(&mut user.client, &user.token, request).await?;
    drain(&mut stream).await.map_err(|(_, status)| status)
}

fn keys(items: &[Item]) -> Vec<&str> {
    items.iter().map(|item| item.key.as_str()).collect()
}

/// Every item QueryItems returns for `prefix`, following its pages.
async fn query_everything(user: &mut SignedIn, prefix: &str) -> Vec<Item> {
    let (mut items, mut token) = (Vec::new(), String::new());
    loop {
        let request = user.request(QueryItemsRequest {
            key_prefix: prefix.to_owned(),
            limit: 1000,
            page_token: token,
            ..Default::default()
        });
        let page = user.client.query_items(request).await.unwrap().into_inner();
        items.extend(page.items);
        if page.next_page_token.is_empty() {
            return items;
        }
        token = page.next_page_token;
    }
}

/// A client whose HTTP/2 windows hold at most [`WINDOW`] bytes in flight.
async fn narrow_client(stack: &TestStack) -> DataServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", stack.data.addr))
        .unwrap()
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .connect()
        .await
        .unwrap();
    DataServiceClient::new(channel)
}

#[tokio::test]
async fn a_full_export_holds_exactly_what_query_items_pages_hold_and_resumes_after_a_key() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    seed(&stack, &user.user.user_id, "notes/", 450).await;
    seed(&stack, &user.user.user_id, "other/", 30).await;

    let exported = export(&mut user, "notes/", "").await.unwrap();
    let queried = query_everything(&mut user, "notes/").await;
    assert_eq!(
        exported.len(),
        450,
        "pages of {EXPORT_PAGE_ITEMS} and a partial one"
    );
    assert_eq!(exported, queried);

    let resumed = export(&mut user, "notes/", "notes/00199").await.unwrap();
    assert_eq!(
        resumed,
        exported[200..],
        "after the key, never including it"
    );
    let last = export(&mut user, "notes/", "notes/00449").await.unwrap();
    assert!(last.is_empty());
    let everything = export(&mut user, "", "").await.unwrap();
    assert_eq!(everything.len(), 480);
}

#[tokio::test]
async fn an_export_is_cut_exactly_at_its_prefix_and_stays_in_the_callers_partition() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let mut other = stack.user().await;
    let all = [
        "n",
        "notes",
        "notes.",
        "notes/",
        "notes/a",
        "notes/b/c",
        "notes/\u{ffff}",
        "notes0",
        "o",
    ];
    for key in all {
        user.put_text(key, "mine").await;
    }
    other.put_text("notes/theirs", "not yours").await;

    let exported = export(&mut user, "notes/", "").await.unwrap();
    assert_eq!(
        keys(&exported),
        ["notes/", "notes/a", "notes/b/c", "notes/\u{ffff}"]
    );
    let everything = export(&mut user, "", "").await.unwrap();
    assert_eq!(
        keys(&everything),
        all,
        "byte order, the whole partition, no one else's"
    );
    let theirs = export(&mut other, "", "").await.unwrap();
    assert_eq!(keys(&theirs), ["notes/theirs"]);

    let outside = export(&mut user, "notes/", "notes").await.unwrap_err();
    assert_eq!(outside.code(), Code::InvalidArgument, "{outside:?}");
    assert_eq!(tests::violated_fields(&outside), ["start_key"]);
}

#[tokio::test]
async fn expired_items_are_skipped_and_directly_written_ones_read_like_query_items_reads_them() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let direct = stack.direct_access(&user).await;
    user.put_text("x/a", "served").await;
    direct
        .put_raw("x/expired", vec![("version", n(1)), ("expires_at", n(1))])
        .await;
    direct
        .put_raw(
            "x/later",
            vec![("version", n(3)), ("expires_at", n(4_000_000_000_u64))],
        )
        .await;
    let legacy = vec![
        ("version", AttributeValue::S("x".into())),
        ("color", AttributeValue::S("red".into())),
    ];
    direct.put_raw("x/legacy", legacy).await;

    let exported = export(&mut user, "x/", "").await.unwrap();
    assert_eq!(keys(&exported), ["x/a", "x/later", "x/legacy"]);
    assert_eq!(exported, query_everything(&mut user, "x/").await);
    assert_eq!(exported[2].version, 0, "not versioned by the service");
    assert!(exported[2].attributes.contains_key("color"));

    // Nested deeper than DynamoDB allows (dynalite stores it): the page cannot be read.
    let deep = (0..130).fold(AttributeValue::Null(true), |inner, _| {
        AttributeValue::L(vec![inner])
    });
    direct
        .put_raw("y/deep", vec![("version", n(1)), ("x", deep)])
        .await;
    let unreadable = export(&mut user, "y/", "").await.unwrap_err();
    assert_eq!(unreadable.code(), Code::DataLoss, "{unreadable:?}");
    assert!(
        export(&mut user, "y/", "y/deep").await.unwrap().is_empty(),
        "resuming skips it"
    );
}

/// Query requests the proxy saw for `prefix`.
fn queries_of(proxy: &RecordingProxy, prefix: &str) -> usize {
    let requests = proxy.requests();
    let of_prefix =
        |body: &serde_json::Value| body["ExpressionAttributeValues"][":p"]["S"] == prefix;
    requests
        .iter()
        .filter(|r| r.operation() == "Query" && of_prefix(&r.body))
        .count()
}

/// Pages the service may have read when the client has `received` items: those handed to
/// gRPC (what the client read, plus what its window and one encoded chunk of 32 KiB hold), the
/// page being sent and the one in the channel.
fn pages_allowed(received: usize) -> usize {
    let in_flight = (WINDOW as usize + 32 * 1024) / BODY_BYTES + 1;
    (received + in_flight).div_ceil(EXPORT_PAGE_ITEMS as usize) + 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_items_read_slowly_stay_a_few_pages_ahead_and_a_cancel_stops_the_reads() {
    let proxy = RecordingProxy::start(Emulator::shared_dynalite().await.addr()).await;
    let stack = TestStack::spawn_custom(Endpoints::shared().await, &proxy.endpoint()).await;
    let user = stack.user().await;
    seed(&stack, &user.user.user_id, "bulk/", 20_000).await;
    let mut client = narrow_client(&stack).await;
    proxy.clear();
    let mut stream = start(&mut client, &user.token, export_request("bulk/", ""))
        .await
        .unwrap();

    // About 10 items a second for 3 seconds.
    let mut received = Vec::new();
    for _ in 0..30 {
        received.push(stream.message().await.unwrap().unwrap().item.unwrap().key);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow = queries_of(&proxy, "bulk/");
    assert!(
        slow <= pages_allowed(30),
        "{slow} Query pages for 30 items read"
    );
    // Then faster, and cancelled midway.
    for _ in 0..3_000 {
        received.push(stream.message().await.unwrap().unwrap().item.unwrap().key);
    }
    let at_cancel = queries_of(&proxy, "bulk/");
    drop(stream);
    drop(client);
    assert!(
        at_cancel <= pages_allowed(received.len()),
        "{at_cancel} pages for {} items",
        received.len()
    );
    let expected: Vec<String> = (0..received.len())
        .map(|i| format!("bulk/{i:05}"))
        .collect();
    assert_eq!(received, expected, "in key order, none skipped");

    // Settled: both of the user's export places are free again, so the stream was dropped.
    let mut fresh = stack.data.client().await;
    let mut held = Vec::new();
    for _ in 0..100 {
        match start(&mut fresh, &user.token, export_request("none/", "")).await {
            Ok(stream) => held.push(stream),
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
        if held.len() == MAX_EXPORTS_PER_USER {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        held.len(),
        MAX_EXPORTS_PER_USER,
        "the cancelled export's place was freed"
    );
    // Longer than the producer's recheck interval: a live producer would have read again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = queries_of(&proxy, "bulk/");
    eprintln!(
        "Query pages: {slow} after 30 items read slowly, {at_cancel} at the cancel after {} \
         items, {after} once settled",
        received.len()
    );
    assert!(
        after <= at_cancel + 1,
        "{after} Query pages after the cancel, {at_cancel} before it"
    );
    assert!(
        after < 200 / 4,
        "a fraction of the 200 pages was read: {after}"
    );
}

#[tokio::test]
async fn a_user_runs_two_exports_at_once_and_a_third_waits_for_one_to_end() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    seed(&stack, &user.user.user_id, "k/", 3_000).await;
    // Each on a connection of its own with narrow windows: unread, they stay running.
    let mut running = Vec::new();
    for _ in 0..MAX_EXPORTS_PER_USER {
        let mut client = narrow_client(&stack).await;
        let request = export_request("k/", "");
        running.push(start(&mut client, &user.token, request).await.unwrap());
    }
    let mut client = stack.data.client().await;

    let refused = start(&mut client, &user.token, export_request("k/", ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.get_error_details().retry_info().is_some());
    let mut other = stack.user().await;
    assert!(
        export(&mut other, "", "").await.is_ok(),
        "another user is not held up"
    );

    let mut finished = running.pop().unwrap();
    assert_eq!(drain(&mut finished).await.unwrap().len(), 3_000);
    drop(finished);
    let mut again = None;
    for _ in 0..100 {
        match export(&mut user, "k/", "k/02990").await {
            Ok(items) => again = Some(items),
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(again.expect("a place freed").len(), 9);
}

#[tokio::test]
async fn revoking_the_session_ends_its_running_export() {
    let stack = TestStack::spawn().await;
    let mut auth = AuthServiceClient::new(stack.auth.channel().await);
    let user = TestUser::register(&mut auth).await;
    let session = user.login(&mut auth).await;
    let token = session.access_token.clone();
    let mut client = narrow_client(&stack).await;
    seed(&stack, &user.user_id, "r/", 3_000).await;
    let mut stream = start(&mut client, &token, export_request("r/", ""))
        .await
        .unwrap();
    for _ in 0..10 {
        stream.message().await.unwrap().unwrap();
    }

    let logout = LogoutRequest {
        refresh_token: session.refresh_token,
    };
    auth.logout(logout).await.unwrap();
    let mut probe = stack.data.client().await;
    let mut refused = false;
    for _ in 0..200 {
        let get = with_bearer(
            common::proto::data::v1::GetItemRequest {
                key: "r/00000".into(),
                ..Default::default()
            },
            &token,
        );
        if probe
            .get_item(get)
            .await
            .is_err_and(|s| s.code() == Code::Unauthenticated)
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the revocation reached the data-service");

    let (rest, ended) = drain(&mut stream).await.unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(
        10 + rest.len() < 3_000,
        "ended early: {} items after the revocation",
        rest.len()
    );
}

#[tokio::test]
async fn an_export_ends_at_the_calls_deadline() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    seed(&stack, &user.user.user_id, "d/", 3_000).await;
    let mut client = narrow_client(&stack).await;
    let mut request = with_bearer(export_request("d/", ""), &user.token);
    request.set_timeout(Duration::from_millis(800));
    let mut stream = client.export_items(request).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let (rest, ended) = drain(&mut stream).await.unwrap_err();
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    assert_eq!(
        ended.message(),
        "the deadline passed",
        "the service ended it"
    );
    assert!(1 + rest.len() < 3_000, "ended early: {}", rest.len());
}
