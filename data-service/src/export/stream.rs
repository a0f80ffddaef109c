//! The gRPC side of one export: the response stream tonic sends from. hyper polls it only when
//! the HTTP/2 stream has send window, so a slow reader leaves it unpolled and the producer
//! waits on its full channel. An error of the producer (a revoked session, an expired token,
//! the deadline, a failed read) ends the stream at its next poll, ahead of the items still
//! buffered; dropping the stream (the client reset it or went away) aborts the producer, even
//! in the middle of a Query.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use common::{
    proto::data::v1::{ExportItemsResponse, Item},
    tokens::Principal,
};
use futures::{FutureExt, Stream};
use tokio::{sync::mpsc::Receiver, task::JoinHandle};
use tonic::Status;

use super::{Exports, slots::Slot};
use crate::{error::DataError, store::StoredItem};

/// The stream of one export's items.
pub struct ExportStream {
    /// Pages from the producer.
    pub(super) pages: Receiver<Vec<StoredItem>>,
    /// What is left of the page being sent.
    pub(super) page: std::vec::IntoIter<StoredItem>,
    /// The producer, until its outcome is known.
    pub(super) producer: Option<JoinHandle<Result<(), DataError>>>,
    /// Its outcome once known: `Ok` lets the buffered items go out first.
    pub(super) outcome: Option<Result<(), DataError>>,
    /// Whose export it is, to check their session at each page.
    pub(super) principal: Principal,
    /// The shared parts.
    pub(super) exports: Exports,
    /// How an item goes out.
    pub(super) convert: fn(StoredItem) -> Item,
    /// Its place among the running exports, freed with the stream.
    pub(super) _slot: Slot,
    /// Nothing more to send.
    pub(super) done: bool,
}

impl std::fmt::Debug for ExportStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportStream")
            .field("user", &self.principal.user_id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ExportStream {
    /// Learns the producer's outcome if it has ended.
    fn poll_producer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(producer) = &mut self.producer else {
            return Poll::Ready(());
        };
        let ended = ready!(producer.poll_unpin(cx));
        self.producer = None;
        self.outcome = Some(ended.unwrap_or_else(|join| {
            Err(DataError::Internal(anyhow::anyhow!(
                "the export's producer failed: {join}"
            )))
        }));
        Poll::Ready(())
    }

    /// Ends the stream with `error`.
    fn fail(&mut self, error: DataError) -> Poll<Option<Result<ExportItemsResponse, Status>>> {
        self.done = true;
        self.page = Vec::new().into_iter();
        self.pages.close();
        Poll::Ready(Some(Err(error.into())))
    }

    /// The next item, or the end: buffered items while the producer runs or has succeeded.
    fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<ExportItemsResponse, Status>>> {
        loop {
            if let Some(item) = self.page.next() {
                let item = Some((self.convert)(item));
                return Poll::Ready(Some(Ok(ExportItemsResponse { item })));
            }
            match ready!(self.pages.poll_recv(cx)) {
                Some(page) => {
                    if let Err(refused) = self.exports.admit(&self.principal) {
                        return self.fail(refused);
                    }
                    self.page = page.into_iter();
                }
                None => {
                    // The producer dropped its end: it has ended, or is about to.
                    ready!(self.poll_producer(cx));
                    return match self.outcome.take() {
                        Some(Err(error)) => self.fail(error),
                        _ => {
                            self.done = true;
                            Poll::Ready(None)
                        }
                    };
                }
            }
        }
    }
}

impl Stream for ExportStream {
    type Item = Result<ExportItemsResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // A failure is sent at once, ahead of the items still buffered.
        if this.poll_producer(cx).is_ready()
            && matches!(this.outcome, Some(Err(_)))
            && let Some(Err(error)) = this.outcome.take()
        {
            return this.fail(error);
        }
        this.poll_item(cx)
    }
}

impl Drop for ExportStream {
    fn drop(&mut self) {
        if let Some(producer) = &self.producer {
            producer.abort();
        }
    }
}
