//! Exports on the service's Tokio runtime. The SDK's batch processor runs on a thread of its
//! own and drives each export with a plain executor (`futures::executor::block_on`), where
//! nothing of Tokio's (timers, a connection being opened) may be created; the OTLP exporter's
//! tonic client needs them (opentelemetry-rust#2673 and others report the panic:
//! "there is no reactor running"). Here each export is spawned onto the runtime the pipeline
//! was built on, and the processor's thread only waits for it.

use std::{sync::Arc, time::Duration};

use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use tokio::runtime::Handle;

/// `E`, its exports run on `runtime`.
#[derive(Debug)]
pub struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: Handle,
}

impl<E> OnRuntime<E> {
    /// `inner`, exporting on the current Tokio runtime; `None` outside one.
    pub fn current(inner: E) -> Option<Self> {
        let runtime = Handle::try_current().ok()?;
        Some(Self {
            inner: Arc::new(inner),
            runtime,
        })
    }
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = Arc::clone(&self.inner);
        let export = self.runtime.spawn(async move { inner.export(batch).await });
        match export.await {
            Ok(result) => result,
            // The runtime is shutting down: the batch is lost.
            Err(error) => Err(OTelSdkError::InternalFailure(format!(
                "export task: {error}"
            ))),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called while the provider is built, before any export shares `inner`.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}
