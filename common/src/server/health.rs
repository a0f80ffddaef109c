//! Dependency-driven health: the `grpc.health.v1` statuses of a server, moved by a probe of
//! its dependencies and held NOT_SERVING once shutdown starts, and the background tasks (such
//! as that probe) a server owns.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, Notify},
    task::JoinHandle,
};
use tonic_health::{ServingStatus, server::HealthReporter};

/// The `grpc.health.v1` statuses of one server: the overall status (`""`) and one per
/// service, always moved together. Once shutdown starts they stay NOT_SERVING, so a late
/// dependency probe cannot flip a draining server back to SERVING.
#[derive(Clone, Debug)]
pub struct Health {
    reporter: HealthReporter,
    services: Arc<[String]>,
    shutting_down: Arc<Mutex<bool>>,
}

impl Health {
    /// Health for the named services (fully qualified, e.g. `dynagate.auth.v1.AuthService`),
    /// starting NOT_SERVING until a probe succeeds. Add the returned service to the server.
    pub async fn new(
        services: &[&str],
    ) -> (
        Self,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let health = Self {
            reporter,
            services: std::iter::once("")
                .chain(services.iter().copied())
                .map(str::to_owned)
                .collect(),
            shutting_down: Arc::default(),
        };
        health.set(ServingStatus::NotServing).await;
        (health, service)
    }

    /// Sets every status, unless shutdown has begun.
    pub async fn set(&self, status: ServingStatus) {
        let shutting_down = self.shutting_down.lock().await;
        if !*shutting_down {
            self.set_all(status).await;
        }
    }

    /// Marks the server NOT_SERVING for good, so load balancers stop sending new calls.
    pub async fn begin_shutdown(&self) {
        let mut shutting_down = self.shutting_down.lock().await;
        *shutting_down = true;
        self.set_all(ServingStatus::NotServing).await;
    }

    /// The services it reports on (not the overall `""`): the ones the server implements.
    pub fn services(&self) -> Vec<&str> {
        let services = self.services.iter().map(String::as_str);
        services.filter(|service| !service.is_empty()).collect()
    }

    async fn set_all(&self, status: ServingStatus) {
        for service in self.services.iter() {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Probes the server's dependencies every `interval` and reports SERVING only while the
    /// probe succeeds. Status changes are logged once, not every interval.
    pub fn spawn_probe<F, Fut>(&self, interval: Duration, probe: F) -> BackgroundTask
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        self.spawn_probe_nudged(interval, Arc::default(), probe)
    }

    /// [`Health::spawn_probe`] that also probes at once whenever `nudge` is notified, so a
    /// dependency that comes back is reported without waiting for the next interval.
    pub fn spawn_probe_nudged<F, Fut>(
        &self,
        interval: Duration,
        nudge: Arc<Notify>,
        probe: F,
    ) -> BackgroundTask
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let health = self.clone();
        let handle = tokio::spawn(async move {
            let mut last_ok = None;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = nudge.notified() => ticker.reset(),
                }
                let result = probe().await;
                let ok = result.is_ok();
                match (&result, last_ok) {
                    (Ok(()), Some(false) | None) => {
                        tracing::info!("dependencies reachable: SERVING")
                    }
                    (Err(cause), Some(true) | None) => {
                        tracing::warn!(%cause, "dependency unreachable: NOT_SERVING");
                    }
                    _ => {}
                }
                last_ok = Some(ok);
                let status = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                health.set(status).await;
            }
        });
        BackgroundTask(handle)
    }
}

/// A background task (health probe, key refresher) that stops when its owner drops it.
#[derive(Debug)]
pub struct BackgroundTask(JoinHandle<()>);

impl From<JoinHandle<()>> for BackgroundTask {
    fn from(handle: JoinHandle<()>) -> Self {
        Self(handle)
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_nudge_probes_at_once_instead_of_waiting_for_the_interval() {
        let (health, _service) = Health::new(&["test.v1.Service"]).await;
        let probes = Arc::new(AtomicUsize::new(0));
        let nudge = Arc::new(Notify::new());
        let _task = health.spawn_probe_nudged(Duration::from_secs(3600), Arc::clone(&nudge), {
            let probes = Arc::clone(&probes);
            move || {
                probes.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }
        });
        let counted = |n| {
            let probes = Arc::clone(&probes);
            async move {
                for _ in 0..200 {
                    if probes.load(Ordering::SeqCst) >= n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                false
            }
        };
        assert!(counted(1).await, "the first probe runs at once");
        nudge.notify_one();
        assert!(counted(2).await, "a nudge probes again within the hour");
    }
}
