//! What the data-service's token checks cost: a token that failed its check is refused again
//! without another Ed25519 verification, so a flood of one forged token costs one check.

use common::proto::data::v1::GetItemRequest;
use tests::{auth::with_bearer, data::TestStack};
use tonic::Code;

#[tokio::test]
async fn a_flood_of_one_bad_token_costs_one_signature_check() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    // Known kid, broken signature: the expensive kind of bad token.
    let mut tampered = user.token.clone().into_bytes();
    let index = tampered.len() / 3;
    tampered[index] = if tampered[index] == b'Q' { b'R' } else { b'Q' };
    let tampered = String::from_utf8(tampered).unwrap();
    let expired = {
        let mut claims = stack.auth.claims(&user.user.user_id);
        claims["exp"] = "2022-02-02T00:00:00Z".into();
        stack.auth.forge(&claims)
    };
    let before = stack.data.metrics.token_verifications.get();

    for token in [&tampered, &expired] {
        for _ in 0..20 {
            let request = with_bearer(
                GetItemRequest {
                    key: "k".into(),
                    ..Default::default()
                },
                token,
            );
            let status = user.client.clone().get_item(request).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
        }
    }

    assert_eq!(
        stack.data.metrics.token_verifications.get() - before,
        2,
        "one verification per distinct bad token"
    );
}
