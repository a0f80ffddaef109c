//! Ending a session is final and never half-done, against dynalite and moto: every call that
//! ends sessions, cut short by its caller's deadline at any point, leaves each session it
//! touched either fully live (never announced) or fully ended — announced on the revocation
//! feed *and* marked in the sessions table, refused by Refresh, by bearer calls, by
//! GetCredentials and by the data-service, and still refused by Refresh once the revocation's
//! `not_after` has passed and the feed has forgotten it.
//!
//! The auth-service reads a `ManualClock` that stands still during the sweep, so no repair
//! can fall due: a session found marked was marked by the call that ended it.
//!
//! And a replica killed between the two writes of an ending (a test-only failpoint holds it
//! there, then SIGKILL): the other replica refuses the session from the revocation log alone
//! and repairs the sessions table.

use std::{collections::HashSet, fmt, sync::Arc, time::Duration};

use auth_service::revocations::{NOT_AFTER_SLACK, repair::repair_delay};
use common::{
    clock::ManualClock,
    proto::auth::v1::{
        ChangePasswordRequest, LogoutAllRequest, LogoutRequest, RefreshRequest,
        RevokeSessionRequest, auth_service_client::AuthServiceClient,
    },
};
use tests::{
    auth::{Endpoints, TestAuth, TestUser, refresh, with_bearer},
    auth_process::{self, AuthProcess},
    data::TestData,
    endings::{
        ClockedStack, Held, announced, assert_unauthenticated, listed, marked, reason,
        refused_by_auth, refused_by_data,
    },
    eventually, unique_prefix,
};
use time::OffsetDateTime;
use tonic::{Request, transport::Channel};

type Client = AuthServiceClient<Channel>;

/// Calls per revoking RPC, with deadlines spread evenly over [`FIRST_DEADLINE_MS`,
/// `LAST_DEADLINE_MS`].
const TRIES: u64 = 20;
const FIRST_DEADLINE_MS: u64 = 1;
const LAST_DEADLINE_MS: u64 = 50;

/// The deadline of try `n` (0-based): 1 ms to 50 ms.
fn deadline(n: u64) -> Duration {
    let span = LAST_DEADLINE_MS - FIRST_DEADLINE_MS;
    Duration::from_millis(FIRST_DEADLINE_MS + n * span / (TRIES - 1))
}

fn timed<T>(message: T, token: Option<&str>, n: u64) -> Request<T> {
    let mut request = match token {
        Some(token) => with_bearer(message, token),
        None => Request::new(message),
    };
    request.set_timeout(deadline(n));
    request
}

/// Every way a call ends sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Logout,
    LogoutAll,
    RevokeSession,
    ReuseOnRefresh,
    ReuseOnLogout,
    ChangePassword,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

const ENDINGS: [Ending; 6] = [
    Ending::Logout,
    Ending::LogoutAll,
    Ending::RevokeSession,
    Ending::ReuseOnRefresh,
    Ending::ReuseOnLogout,
    Ending::ChangePassword,
];

/// One cut-short call: the sessions it may have ended, a session of the same user it leaves
/// alone (if any), and whether the caller saw it fail.
struct Try {
    ending: Ending,
    targets: Vec<Held>,
    witness: Option<Held>,
    failed: bool,
}

/// Logs `user` in `n` times.
async fn sessions(
    stack: &ClockedStack,
    client: &mut Client,
    user: &TestUser,
    n: usize,
) -> Vec<Held> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(Held::from_login(&stack.auth, &user.login(client).await).await);
    }
    held
}

/// A session whose login token is retired (two rotations later): presenting it is reuse.
/// Returns the retired token and the session as its holder now has it.
async fn rotated_twice(
    stack: &ClockedStack,
    client: &mut Client,
    user: &TestUser,
) -> (String, Held) {
    let login = sessions(stack, client, user, 1).await.remove(0);
    let first = refresh(client, &login.refresh_token)
        .await
        .expect("Refresh");
    let second = refresh(client, &first.refresh_token)
        .await
        .expect("Refresh");
    (login.refresh_token.clone(), login.refreshed(&second))
}

/// Try `n` of `ending`, on a fresh user.
async fn try_ending(stack: &ClockedStack, client: &mut Client, ending: Ending, n: u64) -> Try {
    let user = TestUser::register(client).await;
    let (targets, witness, result) = match ending {
        Ending::Logout => {
            let target = sessions(stack, client, &user, 1).await;
            let refresh_token = target[0].refresh_token.clone();
            let result = client
                .logout(timed(LogoutRequest { refresh_token }, None, n))
                .await;
            (target, None, result.map(drop))
        }
        Ending::LogoutAll => {
            let targets = sessions(stack, client, &user, 3).await;
            let request = timed(LogoutAllRequest {}, Some(&targets[0].access_token), n);
            (targets, None, client.logout_all(request).await.map(drop))
        }
        Ending::RevokeSession => {
            let mut held = sessions(stack, client, &user, 2).await;
            let (witness, target) = (held.remove(0), held);
            let request = RevokeSessionRequest {
                session_id: target[0].session_id.clone(),
            };
            let request = timed(request, Some(&witness.access_token), n);
            let result = client.revoke_session(request).await.map(drop);
            (target, Some(witness), result)
        }
        Ending::ReuseOnRefresh => {
            let (retired, target) = rotated_twice(stack, client, &user).await;
            let request = timed(
                RefreshRequest {
                    refresh_token: retired,
                },
                None,
                n,
            );
            (vec![target], None, client.refresh(request).await.map(drop))
        }
        Ending::ReuseOnLogout => {
            let (retired, target) = rotated_twice(stack, client, &user).await;
            let request = timed(
                LogoutRequest {
                    refresh_token: retired,
                },
                None,
                n,
            );
            (vec![target], None, client.logout(request).await.map(drop))
        }
        Ending::ChangePassword => {
            let mut held = sessions(stack, client, &user, 3).await;
            let (witness, targets) = (held.remove(0), held);
            let request = ChangePasswordRequest {
                old_password: user.password.clone(),
                new_password: format!("a new password {}", uuid::Uuid::new_v4()),
            };
            let request = timed(request, Some(&witness.access_token), n);
            let result = client.change_password(request).await.map(drop);
            (targets, Some(witness), result)
        }
    };
    Try {
        ending,
        targets,
        witness,
        failed: result.is_err(),
    }
}

/// Waits until every target is announced exactly when it is marked (the calls' work, which
/// may go on after their callers gave up, has landed), or 10 s pass.
async fn settle(auth: &TestAuth, tries: &[Try]) {
    // Cut-short calls may still be running: give them a moment before judging.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eventually(Duration::from_secs(10), || async {
        let announced = announced(auth).await;
        for held in tries.iter().flat_map(|t| &t.targets) {
            if announced.contains(&held.session_id) != marked(auth, held).await {
                return false;
            }
        }
        true
    })
    .await;
}

/// Per ending: targets announced, of those how many were left half-ended (announced, not
/// marked, and Refresh still succeeds), and calls that failed for their caller yet ended
/// their sessions.
async fn tally(stack: &ClockedStack, client: &mut Client, tries: &[Try]) -> (usize, usize) {
    let announced = announced(&stack.auth).await;
    let (mut half_ended_total, mut completed_after_cut) = (0, 0);
    for ending in ENDINGS {
        let of_ending = tries.iter().filter(|t| t.ending == ending);
        let (mut ended, mut half_ended, mut targets) = (0, 0, 0);
        for t in of_ending {
            let mut any_ended = false;
            for held in &t.targets {
                targets += 1;
                if !announced.contains(&held.session_id) {
                    assert!(
                        !marked(&stack.auth, held).await,
                        "{ending}: marked, never announced"
                    );
                    continue;
                }
                any_ended = true;
                ended += 1;
                if !marked(&stack.auth, held).await {
                    half_ended += 1;
                    let refreshed = refresh(client, &held.refresh_token).await;
                    eprintln!(
                        "{ending}: half-ended {} (Refresh: {:?})",
                        held.session_id,
                        refreshed.map(drop)
                    );
                }
            }
            completed_after_cut += usize::from(t.failed && any_ended);
        }
        eprintln!(
            "{ending}: {targets} sessions targeted, {ended} announced, {half_ended} half-ended"
        );
        half_ended_total += half_ended;
    }
    (half_ended_total, completed_after_cut)
}

#[tokio::test]
async fn revoking_calls_cut_short_by_their_deadline_leave_no_session_half_ended() {
    let stack = ClockedStack::spawn().await;
    let mut client = stack.auth.client().await;
    let mut tries = Vec::new();
    for ending in ENDINGS {
        for n in 0..TRIES {
            tries.push(try_ending(&stack, &mut client, ending, n).await);
        }
    }
    settle(&stack.auth, &tries).await;

    let (half_ended, completed_after_cut) = tally(&stack, &mut client, &tries).await;
    assert_eq!(half_ended, 0, "sessions announced but not marked ended");
    assert!(
        completed_after_cut > 0,
        "arrangement: some deadline cut a call whose sessions then ended"
    );

    let announced = announced(&stack.auth).await;
    let ended: Vec<&Held> = tries
        .iter()
        .flat_map(|t| &t.targets)
        .filter(|held| announced.contains(&held.session_id))
        .collect();
    for held in &ended {
        refused_by_auth(&mut client, held).await;
        refused_by_data(&stack.data, held).await;
    }
    for t in &tries {
        if let Some(witness) = &t.witness {
            let shown: HashSet<String> = listed(&mut client, &witness.access_token)
                .await
                .into_iter()
                .collect();
            for held in t
                .targets
                .iter()
                .filter(|held| announced.contains(&held.session_id))
            {
                assert!(
                    !shown.contains(&held.session_id),
                    "{}: ended session listed",
                    t.ending
                );
            }
        }
    }

    // The feed forgets a revocation at its not_after; the sessions table must not.
    stack.move_past_not_after();
    let forgotten = eventually(Duration::from_secs(10), || async {
        stack.auth.revocations.is_empty()
    })
    .await;
    assert!(forgotten, "the hub prunes past not_after");
    for held in &ended {
        assert_unauthenticated(
            refresh(&mut client, &held.refresh_token).await,
            &format!("Refresh of {} past not_after", held.session_id),
        );
    }
}

/// The test whose process [`a_replica_killed_between_announcing_and_marking_ends_the_session_everywhere`]
/// starts as an auth-service replica: every ending it begins stops after the announcement.
const HANGING_REPLICA: &str = "auth_replica_that_hangs_after_announcing";

#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the auth-service process the crash test starts, then kills"]
async fn auth_replica_that_hangs_after_announcing() {
    if auth_process::is_child() {
        auth_service::failpoints::hang_after_announce();
    }
    auth_process::serve_if_child().await;
}

/// A replica dies (SIGKILL) between writing a revocation and marking the session: the
/// surviving replica refuses the session from the log alone — Refresh, bearer calls,
/// GetCredentials, ListSessions, and the data-service — while the sessions table still calls
/// it live, then repairs the table once the repair delay has passed, so the session stays
/// refused after the feed forgets the revocation.
#[cfg(debug_assertions)]
#[tokio::test]
async fn a_replica_killed_between_announcing_and_marking_ends_the_session_everywhere() {
    let endpoints = Endpoints::shared().await;
    let items_table = format!("{}-items", unique_prefix());
    let settings = TestAuth::settings_for_items(&items_table);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let survivor =
        TestAuth::spawn_with_clock(settings.clone(), endpoints.clone(), clock.clone()).await;
    let mut doomed = AuthProcess::start(settings.clone(), &endpoints, HANGING_REPLICA).await;
    let mut data_settings = TestData::settings(&items_table, survivor.addr);
    data_settings.auth_url = [doomed.addr, survivor.addr]
        .iter()
        .map(|addr| format!("http://{addr}"))
        .collect();
    let data = TestData::spawn_with(data_settings, &endpoints.dynamodb, true).await;
    let mut client = survivor.client().await;
    let user = TestUser::register(&mut client).await;
    let victim = Held::from_login(&survivor, &user.login(&mut client).await).await;
    let bystander = Held::from_login(&survivor, &user.login(&mut client).await).await;

    // The survivor's clock at the present: its poller reads the minutes around it.
    clock.set(OffsetDateTime::now_utc());
    let mut doomed_client = AuthServiceClient::connect(format!("http://{}", doomed.addr))
        .await
        .expect("connect to the doomed replica");
    let mut logout = Request::new(LogoutRequest {
        refresh_token: victim.refresh_token.clone(),
    });
    logout.set_timeout(Duration::from_secs(10));
    let logout = tokio::spawn(async move { doomed_client.logout(logout).await });
    let was_announced = eventually(Duration::from_secs(10), || async {
        announced(&survivor).await.contains(&victim.session_id)
    })
    .await;
    assert!(was_announced, "the doomed replica announced the logout");
    doomed.kill();
    assert!(
        logout.await.expect("the logout task").is_err(),
        "its caller got no answer"
    );
    assert!(
        !marked(&survivor, &victim).await,
        "arrangement: killed between the two writes"
    );

    let learned = eventually(Duration::from_secs(5), || async {
        survivor.revocations.is_revoked(&victim.session_id)
    })
    .await;
    assert!(learned, "the survivor reads the revocation from the table");
    refused_by_auth(&mut client, &victim).await;
    refused_by_data(&data, &victim).await;
    let shown = listed(&mut client, &bystander.access_token).await;
    assert_eq!(
        shown,
        std::slice::from_ref(&bystander.session_id),
        "only the bystander is listed"
    );
    assert!(
        !marked(&survivor, &victim).await,
        "refused by the log alone: no repair is due while the clock stands"
    );

    // The repair falls due one delay after the revocation: moved past it, not waited for.
    let delay = repair_delay(
        Duration::from_millis(settings.revocations.lookback_ms),
        Duration::from_millis(settings.aws.aws_operation_timeout_ms),
        Duration::from_secs(settings.access_token_ttl_secs) + NOT_AFTER_SLACK,
    );
    clock.set(OffsetDateTime::now_utc() + delay + Duration::from_secs(1));
    let repaired = eventually(Duration::from_secs(10), || marked(&survivor, &victim)).await;
    assert!(repaired, "the survivor marks the session ended");
    assert_eq!(reason(&survivor, &victim).await.as_deref(), Some("logout"));
    assert_eq!(survivor.metrics.session_repairs.count("marked"), 1);

    // Past not_after the feed forgets the revocation; the table does not.
    clock.advance(Duration::from_secs(settings.access_token_ttl_secs) + NOT_AFTER_SLACK);
    let forgotten = eventually(Duration::from_secs(10), || async {
        !survivor.revocations.is_revoked(&victim.session_id)
    })
    .await;
    assert!(forgotten, "the hub prunes past not_after");
    assert_unauthenticated(
        refresh(&mut client, &victim.refresh_token).await,
        "Refresh of the repaired session past not_after",
    );
    refresh(&mut client, &bystander.refresh_token)
        .await
        .expect("the bystander's session lives on");
}
