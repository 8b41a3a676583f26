//! Counting a request body's bytes into the metrics (`crate::metrics`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};

use crate::metrics::Metrics;

/// A request body that counts the bytes it yields into `Metrics::bytes_in`.
pub(crate) struct CountingBody {
    inner: Body,
    metrics: Arc<Metrics>,
}

impl CountingBody {
    pub(crate) fn new(inner: Body, metrics: Arc<Metrics>) -> Self {
        CountingBody { inner, metrics }
    }
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.metrics.bytes_in(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
