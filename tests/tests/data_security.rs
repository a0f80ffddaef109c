//! The data-service's guards: partition isolation, token checks before any DynamoDB call,
//! and input validation before anything is sent.

use std::collections::HashMap;

use common::proto::data::v1::{
    DeleteItemRequest, GetItemRequest, ListValue, MapValue, NumberSet, PutItemRequest,
    QueryItemsRequest, StringSet, UpdateItemRequest, Value, value::Kind,
};
use data_service::{convert::MAX_ITEM_VALUES, requests::MAX_SET_ATTRIBUTES};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, with_bearer},
    data::{TestStack, string},
};
use tonic::Code;
use tonic_types::StatusExt;

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

#[tokio::test]
async fn another_user_can_never_reach_my_items() {
    let stack = TestStack::spawn().await;
    let mut alice = stack.user().await;
    let mut bob = stack.user().await;
    for key in ["secret", "notes/1", "notes/2", "notes/3"] {
        alice.put_text(key, "alice's").await;
    }
    let alices_page = alice
        .client
        .query_items(alice.request(QueryItemsRequest {
            key_prefix: "notes/".into(),
            limit: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!alices_page.is_empty());

    // Bob reads, overwrites, updates, deletes and lists with Alice's keys: he only ever
    // touches his own partition.
    let read = bob
        .client
        .get_item(bob.request(GetItemRequest {
            key: "secret".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::NotFound);
    let update = bob
        .client
        .update_item(bob.request(UpdateItemRequest {
            key: "notes/1".into(),
            set: HashMap::from([("text".into(), string("bob was here"))]),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(update.code(), Code::NotFound);
    let delete = bob
        .client
        .delete_item(bob.request(DeleteItemRequest {
            key: "notes/2".into(),
            expected_version: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(delete.code(), Code::NotFound);
    assert_eq!(
        bob.put_text("secret", "bob's").await,
        1,
        "a new item in Bob's partition"
    );
    assert_eq!(
        bob.query_all(QueryItemsRequest::default()).await.0,
        ["secret"]
    );
    for stolen in [
        QueryItemsRequest {
            key_prefix: "notes/".into(),
            limit: 1,
            page_token: alices_page.clone(),
            ..Default::default()
        },
        QueryItemsRequest {
            page_token: alices_page.clone(),
            ..Default::default()
        },
    ] {
        let status = bob
            .client
            .query_items(bob.request(stolen))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "Alice's page token is useless to Bob"
        );
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "page_token"
        );
    }

    // Alice's items are exactly as she left them.
    assert_eq!(
        alice.query_all(QueryItemsRequest::default()).await.0,
        ["notes/1", "notes/2", "notes/3", "secret"]
    );
    for key in ["secret", "notes/1", "notes/2"] {
        let item = alice
            .client
            .get_item(alice.request(GetItemRequest {
                key: key.into(),
                consistent_read: true,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .item
            .unwrap();
        assert_eq!(
            (item.version, &item.attributes["text"]),
            (1, &string("alice's")),
            "{key}"
        );
    }
}

#[tokio::test]
async fn a_page_token_only_continues_its_own_query() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    for i in 0..3 {
        user.put_text(&format!("a/{i}"), "x").await;
    }
    let token = user
        .client
        .query_items(user.request(QueryItemsRequest {
            key_prefix: "a/".into(),
            limit: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;

    for other_query in [
        QueryItemsRequest {
            key_prefix: "b/".into(),
            ..Default::default()
        },
        QueryItemsRequest {
            key_prefix: "a/".into(),
            descending: true,
            ..Default::default()
        },
        QueryItemsRequest {
            start_key: "a/".into(),
            ..Default::default()
        },
    ] {
        let status = user
            .client
            .query_items(user.request(QueryItemsRequest {
                page_token: token.clone(),
                ..other_query
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let more_per_page = QueryItemsRequest {
        key_prefix: "a/".into(),
        limit: 10,
        page_token: token,
        ..Default::default()
    };
    let rest = user
        .client
        .query_items(user.request(more_per_page))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.items.len(),
        2,
        "the page size may change between pages"
    );
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_before_any_dynamodb_call() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let other_auth =
        TestAuth::spawn_with(TestAuth::settings(), Endpoints::dynalite_only().await).await;
    let mut other_client = other_auth.client().await;
    let unknown_kid_token = TestUser::register(&mut other_client)
        .await
        .login(&mut other_client)
        .await
        .access_token;
    let claims = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = stack.auth.claims(&user.user.user_id);
        change(&mut claims);
        stack.auth.forge(&claims)
    };
    let mut tampered = user.token.clone().into_bytes();
    let index = tampered.len() / 3;
    tampered[index] = if tampered[index] == b'Q' { b'R' } else { b'Q' };
    let calls_before = stack.data.metrics.dynamodb_calls.get();
    let loads_before = stack.data.metrics.credential_loads.get();

    let cases = [
        ("malformed", "Bearer not-a-token".to_owned()),
        ("wrong scheme", format!("Basic {}", user.token)),
        (
            "expired",
            format!(
                "Bearer {}",
                claims(&|c| c["exp"] = "2022-02-02T00:00:00Z".into())
            ),
        ),
        (
            "wrong audience",
            format!("Bearer {}", claims(&|c| c["aud"] = "billing".into())),
        ),
        (
            "wrong issuer",
            format!("Bearer {}", claims(&|c| c["iss"] = "elsewhere".into())),
        ),
        (
            "not yet valid",
            format!(
                "Bearer {}",
                claims(&|c| c["nbf"] = "2999-01-01T00:00:00Z".into())
            ),
        ),
        ("unknown kid", format!("Bearer {unknown_kid_token}")),
        (
            "tampered",
            format!("Bearer {}", String::from_utf8(tampered).unwrap()),
        ),
    ];
    let missing = user
        .client
        .get_item(GetItemRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    for (case, header) in cases {
        let mut request = tonic::Request::new(PutItemRequest {
            key: "k".into(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let status = user.client.put_item(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}");
        assert_eq!(
            status.message(),
            missing.message(),
            "{case}: one message for all"
        );
    }

    assert_eq!(
        stack.data.metrics.dynamodb_calls.get(),
        calls_before,
        "no DynamoDB call"
    );
    assert_eq!(
        stack.data.metrics.credential_loads.get(),
        loads_before,
        "no credentials asked for"
    );
    user.put_text("k", "the genuine token still works").await;
}

#[tokio::test]
async fn unknown_kids_refresh_the_keys_at_most_once_per_interval() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let before = stack.data.metrics.key_refreshes.get();

    for i in 0..20 {
        let mut claims = stack.auth.claims(&user.user.user_id);
        claims["jti"] = format!("forged-{i}").into();
        let token = stack.auth.forge(&claims);
        let (body, _) = token.rsplit_once('.').unwrap();
        let footer = format!(r#"{{"kid":"k4.pid.{i:0>44}"}}"#);
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let forged = format!("{body}.{}", URL_SAFE_NO_PAD.encode(footer));
        let status = user
            .client
            .clone()
            .get_item(with_bearer(
                GetItemRequest {
                    key: "k".into(),
                    ..Default::default()
                },
                &forged,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }

    let refreshes = stack.data.metrics.key_refreshes.get() - before;
    assert!(
        (1..=2).contains(&refreshes),
        "20 unknown kids caused {refreshes} refreshes"
    );
}

#[tokio::test]
async fn malformed_input_is_refused_before_anything_is_sent() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let deep = (0..40).fold(string("bottom"), |inner, _| {
        value(Kind::ListValue(ListValue {
            values: vec![inner],
        }))
    });
    let cases: Vec<(&str, PutItemRequest, &str)> = vec![
        (
            "empty key",
            PutItemRequest {
                key: String::new(),
                ..Default::default()
            },
            "key",
        ),
        (
            "long key",
            PutItemRequest {
                key: "k".repeat(1025),
                ..Default::default()
            },
            "key",
        ),
        (
            "reserved name",
            put_with("owner", string("me")),
            "attributes[\"owner\"]",
        ),
        (
            "bad number",
            put_with("n", value(Kind::NumberValue("12abc".into()))),
            "attributes[\"n\"].number_value",
        ),
        (
            "duplicate numbers",
            put_with(
                "ns",
                value(Kind::NumberSet(NumberSet {
                    values: vec!["1".into(), "1.0".into()],
                })),
            ),
            "attributes[\"ns\"].number_set[1]",
        ),
        (
            "empty set",
            put_with("ss", value(Kind::StringSet(StringSet::default()))),
            "attributes[\"ss\"].string_set",
        ),
        (
            "no kind",
            put_with("x", Value { kind: None }),
            "attributes[\"x\"]",
        ),
        ("too deep", put_with("deep", deep), "attributes[\"deep\"]"),
        (
            "too large",
            put_with("big", string(&"x".repeat(410_000))),
            "attributes",
        ),
        (
            "empty map key",
            put_with(
                "m",
                value(Kind::MapValue(MapValue {
                    fields: HashMap::from([(String::new(), string("v"))]),
                })),
            ),
            "attributes[\"m\"].map_value[\"\"]",
        ),
    ];
    let calls_before = stack.data.metrics.dynamodb_calls.get();

    for (case, request, field) in cases {
        let status = user
            .client
            .put_item(user.request(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        let fields = tests::violated_fields(&status);
        assert!(
            fields.iter().any(|f| f.starts_with(field)),
            "{case}: {fields:?} should name {field}"
        );
    }
    let bad_query = user
        .client
        .query_items(user.request(QueryItemsRequest {
            limit: 5000,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_query.code(), Code::InvalidArgument);

    assert_eq!(
        stack.data.metrics.dynamodb_calls.get(),
        calls_before,
        "nothing reached DynamoDB"
    );
}

fn put_with(name: &str, value: Value) -> PutItemRequest {
    PutItemRequest {
        key: "k".into(),
        attributes: HashMap::from([(name.to_owned(), value)]),
        ..Default::default()
    }
}

/// A list of `count` nulls.
fn nulls(count: usize) -> Value {
    value(Kind::ListValue(ListValue {
        values: vec![value(Kind::NullValue(0)); count],
    }))
}

#[tokio::test]
async fn every_request_dimension_is_bounded_before_anything_is_sent() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    user.put_text("k", "exists").await;
    let many_sets = |count: usize| UpdateItemRequest {
        key: "k".into(),
        set: (0..count)
            .map(|i| (format!("attribute_{i}"), string("x")))
            .collect(),
        ..Default::default()
    };
    let calls_before = stack.data.metrics.dynamodb_calls.get();

    // 250 attributes overflow DynamoDB's 4 KB update expression; 20,000 kept dynalite busy for
    // 18 s. Both are refused here.
    for count in [MAX_SET_ATTRIBUTES + 1, 250, 20_000] {
        let status = user
            .client
            .update_item(user.request(many_sets(count)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{count}: {status:?}");
        assert_eq!(tests::violated_fields(&status), ["set"], "{count}");
    }
    let too_many_values = user
        .client
        .put_item(user.request(put_with("list", nulls(MAX_ITEM_VALUES + 1))))
        .await
        .unwrap_err();
    assert_eq!(too_many_values.code(), Code::InvalidArgument);
    assert_eq!(tests::violated_fields(&too_many_values), ["attributes"]);
    let update_values = UpdateItemRequest {
        key: "k".into(),
        set: HashMap::from([("list".into(), nulls(MAX_ITEM_VALUES + 1))]),
        ..Default::default()
    };
    let too_many_values = user
        .client
        .update_item(user.request(update_values))
        .await
        .unwrap_err();
    assert_eq!(tests::violated_fields(&too_many_values), ["set"]);

    assert_eq!(
        stack.data.metrics.dynamodb_calls.get(),
        calls_before,
        "nothing reached DynamoDB"
    );
    let at_the_limits = user
        .client
        .update_item(user.request(many_sets(MAX_SET_ATTRIBUTES)))
        .await
        .expect("the limit itself is allowed")
        .into_inner()
        .item
        .unwrap();
    assert_eq!(at_the_limits.attributes.len(), MAX_SET_ATTRIBUTES + 1);
    user.client
        .put_item(user.request(put_with("list", nulls(MAX_ITEM_VALUES - 1))))
        .await
        .expect("an item of MAX_ITEM_VALUES values (the list and its elements) is allowed");
}

#[tokio::test]
async fn a_request_dynamodb_refuses_as_invalid_is_invalid_argument_without_its_message() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    user.put_text("\u{FFFF}", "a key at the top of the BMP")
        .await;

    // In UTF-8 (our order, and DynamoDB's) U+FFFF sorts before U+10000; dynalite compares
    // UTF-16 code units, where it sorts after, and refuses the range.
    let status = user
        .client
        .query_items(user.request(QueryItemsRequest {
            start_key: "\u{FFFF}".into(),
            end_key: "\u{10000}".into(),
            ..Default::default()
        }))
        .await;

    match status {
        Ok(page) => assert_eq!(page.into_inner().items.len(), 1, "a DynamoDB that agrees"),
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(
                !status.message().contains("BETWEEN") && !status.message().contains("bound"),
                "DynamoDB's own message stays in the log: {}",
                status.message()
            );
        }
    }
}

#[tokio::test]
async fn names_that_look_like_expressions_are_only_names() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    let hostile = [
        "#v",
        ":one",
        "#k",
        "a.b",
        "list[0]",
        "SET #v = :one",
        "attribute_not_exists(#k) OR",
        "REMOVE",
        " ",
        "\u{0}",
        "\u{FFFF}",
    ];
    let attributes: HashMap<String, Value> = hostile
        .iter()
        .map(|name| ((*name).to_owned(), string(name)))
        .collect();
    let key = "#k = :o AND \u{0}";
    let put = user
        .client
        .put_item(user.request(PutItemRequest {
            key: key.into(),
            attributes: attributes.clone(),
            ..Default::default()
        }))
        .await
        .expect("hostile names are just names")
        .into_inner()
        .item
        .unwrap();
    assert_eq!((put.key.as_str(), put.version), (key, 1));
    assert_eq!(put.attributes, attributes);

    let updated = user
        .client
        .update_item(user.request(UpdateItemRequest {
            key: key.into(),
            set: HashMap::from([("#v".into(), string("set")), (":now".into(), string("set"))]),
            remove: vec![":one".into(), "#k".into(), "SET #v = :one".into()],
            expected_version: Some(1),
            ..Default::default()
        }))
        .await
        .expect("update with hostile names")
        .into_inner()
        .item
        .unwrap();
    assert_eq!(
        updated.version, 2,
        "the real version moved, not an attribute named #v"
    );
    assert_eq!(updated.attributes["#v"], string("set"));
    assert_eq!(updated.attributes[":now"], string("set"));
    assert!(!updated.attributes.contains_key(":one") && !updated.attributes.contains_key("#k"));
    assert_eq!(updated.attributes.len(), hostile.len() - 3 + 1);

    let projected = user
        .client
        .get_item(user.request(GetItemRequest {
            key: key.into(),
            consistent_read: true,
            attributes_to_get: vec!["a.b".into(), "list[0]".into(), "#v".into()],
        }))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(projected.attributes.len(), 3);
    assert_eq!(projected.version, 2);
}

#[tokio::test]
async fn an_update_that_would_grow_an_item_past_400_kb_is_invalid_argument() {
    let stack = TestStack::spawn().await;
    let mut user = stack.user().await;
    user.client
        .put_item(user.request(put_with("a", string(&"x".repeat(300_000)))))
        .await
        .unwrap();

    let status = user
        .client
        .update_item(user.request(UpdateItemRequest {
            key: "k".into(),
            set: HashMap::from([("b".into(), string(&"y".repeat(200_000)))]),
            ..Default::default()
        }))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}
