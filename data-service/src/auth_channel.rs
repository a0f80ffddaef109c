//! The channel to the auth-service replicas named by `--auth-url`: one connection per
//! address, calls spread round-robin over the addresses that are up, and a call whose
//! connection fails (refused, reset, no answer within the auth timeout) is sent again to the
//! next address. An address that failed is skipped until its health check answers SERVING
//! again (checked every `--auth-probe-ms`); while none is up, every one is tried in turn.
//!
//! Resending is safe because only idempotent unary calls travel here (GetCredentials,
//! Health/Check); the revocation feed's streams have channels of their own, and the key
//! refresh asks every address itself ([`AuthChannel::members`]).
//! tonic's `Channel::balance_list` is not used: its endpoints always report ready and fail
//! only when called, so it keeps sending its share of calls to an address that is down
//! (hyperium/tonic#643).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use common::server::BackgroundTask;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use tonic::{
    body::Body,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The auth-service's gRPC service name, whose health the prober asks.
const AUTH_SERVICE: &str = "dynagate.auth.v1.AuthService";

/// Every auth-service address, each with its own lazily connected channel; cheap to clone.
#[derive(Clone)]
pub struct AuthChannel {
    inner: Arc<Pool>,
}

struct Pool {
    members: Vec<Member>,
    /// Where the next call starts its round.
    next: AtomicUsize,
    /// The most one attempt may take before the next address is tried.
    attempt_timeout: Duration,
}

struct Member {
    url: String,
    channel: Channel,
    up: AtomicBool,
}

impl Member {
    /// Records the address's state, logging only changes.
    fn mark(&self, up: bool, cause: &dyn std::fmt::Display) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(auth_url = %self.url, "auth-service address is back in rotation");
            } else {
                tracing::warn!(auth_url = %self.url, %cause, "auth-service address taken out of rotation");
            }
        }
    }
}

impl AuthChannel {
    /// A channel over `endpoints` (URL for logs, configured endpoint), all assumed up until
    /// a call or a probe shows otherwise. `attempt_timeout` bounds each try.
    pub fn new(endpoints: &[(String, Endpoint)], attempt_timeout: Duration) -> Self {
        let members = endpoints
            .iter()
            .map(|(url, endpoint)| Member {
                url: url.clone(),
                channel: endpoint.connect_lazy(),
                up: AtomicBool::new(true),
            })
            .collect();
        Self {
            inner: Arc::new(Pool {
                members,
                next: AtomicUsize::new(0),
                attempt_timeout,
            }),
        }
    }

    /// Every address (its URL) with its own channel, in `--auth-url` order: for calls that
    /// must reach each replica (the signing-key refresh), not just one.
    pub fn members(&self) -> Vec<(String, Channel)> {
        let members = &self.inner.members;
        members
            .iter()
            .map(|m| (m.url.clone(), m.channel.clone()))
            .collect()
    }

    /// Which addresses are in rotation, in `--auth-url` order.
    pub fn up(&self) -> Vec<bool> {
        let members = &self.inner.members;
        members
            .iter()
            .map(|m| m.up.load(Ordering::Relaxed))
            .collect()
    }

    /// Asks every address's health every `interval`: SERVING puts it (back) in rotation,
    /// anything else takes it out.
    pub fn spawn_prober(&self, interval: Duration) -> BackgroundTask {
        let pool = Arc::clone(&self.inner);
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let checks = pool.members.iter().map(|member| async {
                    match check(member.channel.clone(), pool.attempt_timeout).await {
                        Ok(()) => member.mark(true, &"SERVING"),
                        Err(cause) => member.mark(false, &cause),
                    }
                });
                futures::future::join_all(checks).await;
            }
        });
        BackgroundTask::from(handle)
    }

    /// The order of this call's attempts: the addresses in rotation, starting one further
    /// than the last call, then the others as a last resort.
    fn order(&self) -> Vec<usize> {
        let members = &self.inner.members;
        let n = members.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let ring = (0..n).map(|i| (start + i) % n);
        let (up, down): (Vec<usize>, Vec<usize>) =
            ring.partition(|&i| members[i].up.load(Ordering::Relaxed));
        up.into_iter().chain(down).collect()
    }
}

/// One Health/Check of the auth-service on `channel`.
async fn check(channel: Channel, timeout: Duration) -> Result<(), String> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: AUTH_SERVICE.to_owned(),
    });
    request.set_timeout(timeout);
    let answer = tokio::time::timeout(timeout, HealthClient::new(channel).check(request))
        .await
        .map_err(|_| format!("no health answer within {timeout:?}"))?
        .map_err(|status| format!("health: {} {}", status.code(), status.message()))?;
    match answer.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("health: {}", other.as_str_name())),
    }
}

impl Service<http::Request<Body>> for AuthChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each member's channel is buffered and polled for readiness per attempt.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let order = self.order();
        let pool = Arc::clone(&self.inner);
        Box::pin(async move {
            // Unary requests only (see the module docs): the body is one message, kept so
            // that it can be sent again.
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let mut last: Option<BoxError> = None;
            for i in order {
                let member = &pool.members[i];
                let attempt =
                    http::Request::from_parts(parts.clone(), Body::new(Full::new(body.clone())));
                let sent = member.channel.clone().oneshot(attempt);
                match tokio::time::timeout(pool.attempt_timeout, sent).await {
                    Ok(Ok(response)) => {
                        member.mark(true, &"answered");
                        return Ok(response);
                    }
                    Ok(Err(error)) => {
                        member.mark(false, &chain(&error));
                        last = Some(error.into());
                    }
                    Err(_) => {
                        let status = tonic::Status::deadline_exceeded(format!(
                            "no answer from {} within {:?}",
                            member.url, pool.attempt_timeout
                        ));
                        member.mark(false, &status.message());
                        last = Some(status.into());
                    }
                }
            }
            Err(last.unwrap_or_else(|| "no auth-service address configured".into()))
        })
    }
}

/// `error` and its causes, `: `-separated ("transport error: tcp connect error: …").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(n: usize) -> AuthChannel {
        let endpoints: Vec<_> = (0..n)
            .map(|i| {
                let url = format!("http://127.0.0.1:{}", 9 + i);
                (url.clone(), Endpoint::from_shared(url).expect("a URL"))
            })
            .collect();
        AuthChannel::new(&endpoints, Duration::from_secs(1))
    }

    #[tokio::test]
    async fn calls_start_one_address_further_each_time() {
        let auth = channel(3);

        let starts: Vec<usize> = (0..4).map(|_| auth.order()[0]).collect();

        assert_eq!(starts, [0, 1, 2, 0]);
        assert_eq!(auth.order(), [1, 2, 0], "every address, once");
    }

    #[tokio::test]
    async fn an_address_out_of_rotation_is_tried_last() {
        let auth = channel(3);
        auth.inner.members[1].mark(false, &"test");

        assert_eq!(auth.order(), [0, 2, 1]);
        assert_eq!(auth.order(), [2, 0, 1]);
        assert_eq!(auth.up(), [true, false, true]);
    }
}
