//! The maximum token lifetime, on both verifiers: a token signed with the real key but living
//! longer (`exp − iat`) than the configured access-token lifetime plus the 60 s slack is
//! UNAUTHENTICATED on the data-service and on the auth-service's bearer calls, one at exactly
//! the limit passes, and a token without a readable `iat` is refused.

use common::{
    proto::auth::v1::{GetCredentialsRequest, ListSessionsRequest},
    tokens::LIFETIME_SLACK,
};
use serde_json::Value;
use tests::{auth::with_bearer, data::TestStack, replicas::probe};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};
use tonic::Code;

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).expect("format a time")
}

/// Claims of a genuine session of `user` (its real `sid`, so the auth-service's session check
/// passes), issued a second ago, expiring `lifetime` after that.
async fn claims_living(stack: &TestStack, user_id: &str, token: &str, lifetime: Duration) -> Value {
    let mut claims = stack.auth.claims(user_id);
    claims["sid"] = stack.auth.session_of(token).await.into();
    let iat = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole seconds")
        - Duration::SECOND;
    claims["iat"] = rfc3339(iat).into();
    claims["nbf"] = rfc3339(iat).into();
    claims["exp"] = rfc3339(iat + lifetime).into();
    claims
}

/// The code each verifier gives `token`: the data-service (GetItem of a key nobody wrote:
/// NOT_FOUND once past authentication) and two auth-service bearer calls.
async fn verdicts(stack: &TestStack, token: &str) -> [Code; 3] {
    let mut data = stack.data.client().await;
    let mut auth = stack.auth.client().await;
    let sessions = auth
        .list_sessions(with_bearer(ListSessionsRequest {}, token))
        .await;
    let credentials = auth
        .get_credentials(with_bearer(GetCredentialsRequest {}, token))
        .await;
    let code = |result: Result<_, tonic::Status>| result.map_or_else(|s| s.code(), |_| Code::Ok);
    [
        probe(&mut data, token).await,
        code(sessions.map(drop)),
        code(credentials.map(drop)),
    ]
}

const ACCEPTED: [Code; 3] = [Code::NotFound, Code::Ok, Code::Ok];
const REFUSED: [Code; 3] = [Code::Unauthenticated; 3];

#[tokio::test]
async fn a_genuine_token_living_ten_years_is_refused_by_both_services() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let (user_id, token) = (&user.user.user_id, &user.token);
    assert_eq!(verdicts(&stack, token).await, ACCEPTED, "the issued token");

    let decade = claims_living(&stack, user_id, token, Duration::days(3652)).await;
    let forged = stack.auth.forge(&decade);
    assert_eq!(
        verdicts(&stack, &forged).await,
        REFUSED,
        "exp ten years out"
    );
    let mut year_2999 = decade.clone();
    year_2999["exp"] = "2999-01-01T00:00:00Z".into();
    let forged = stack.auth.forge(&year_2999);
    assert_eq!(verdicts(&stack, &forged).await, REFUSED, "exp in 2999");
}

#[tokio::test]
async fn a_token_at_exactly_the_lifetime_plus_slack_passes_and_one_second_more_does_not() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let (user_id, token) = (&user.user.user_id, &user.token);
    let ttl = stack.auth.settings.access_token_ttl_secs;
    assert_eq!(
        ttl, stack.data.settings.max_token_lifetime_secs,
        "arrangement"
    );
    let limit = Duration::seconds(ttl as i64) + Duration::try_from(LIFETIME_SLACK).unwrap();

    let at_limit = claims_living(&stack, user_id, token, limit).await;
    let forged = stack.auth.forge(&at_limit);
    assert_eq!(
        verdicts(&stack, &forged).await,
        ACCEPTED,
        "exactly the limit"
    );
    let over = claims_living(&stack, user_id, token, limit + Duration::SECOND).await;
    let forged = stack.auth.forge(&over);
    assert_eq!(verdicts(&stack, &forged).await, REFUSED, "one second over");
}

#[tokio::test]
async fn a_token_without_a_readable_iat_is_refused_by_both_services() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let (user_id, token) = (&user.user.user_id, &user.token);
    let claims = claims_living(&stack, user_id, token, Duration::minutes(5)).await;

    let broken: [(&str, Option<Value>); 5] = [
        ("missing", None),
        ("not a time", Some("yesterday".into())),
        ("a number", Some(1_700_000_000.into())),
        ("empty", Some("".into())),
        (
            "in the future",
            Some(rfc3339(OffsetDateTime::now_utc() + Duration::hours(1)).into()),
        ),
    ];
    for (what, iat) in broken {
        let mut claims = claims.clone();
        match iat {
            Some(iat) => claims["iat"] = iat,
            None => drop(claims.as_object_mut().expect("an object").remove("iat")),
        }
        let forged = stack.auth.forge(&claims);
        assert_eq!(verdicts(&stack, &forged).await, REFUSED, "iat {what}");
    }
}
