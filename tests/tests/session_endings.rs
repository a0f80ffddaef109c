//! Ending a session is final and never half-done, against dynalite and moto: every call that
//! ends sessions, cut short by its caller's deadline at any point, leaves each session it
//! touched either fully live (never announced) or fully ended — announced on the revocation
//! feed *and* marked in the sessions table, refused by Refresh, by bearer calls, by
//! GetCredentials and by the data-service, and still refused by Refresh once the revocation's
//! `not_after` has passed and the feed has forgotten it.
//!
//! The auth-service reads a `ManualClock` that stands still during the sweep, so no repair
//! can fall due: a session found marked was marked by the call that ended it.

use std::{collections::HashSet, fmt, time::Duration};

use common::proto::auth::v1::{
    ChangePasswordRequest, LogoutAllRequest, LogoutRequest, RefreshRequest, RevokeSessionRequest,
    auth_service_client::AuthServiceClient,
};
use tests::{
    auth::{TestAuth, TestUser, refresh, with_bearer},
    endings::{
        ClockedStack, Held, announced, assert_unauthenticated, listed, marked, refused_by_auth,
        refused_by_data,
    },
    eventually,
};
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
