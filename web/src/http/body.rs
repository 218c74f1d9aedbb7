//! The response body: empty, one buffer, or a stream pulled only as fast as the client reads.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use crate::http::error::BoxError;
use crate::http::server::InFlight;

type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send + 'static>>;

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Stream(BoxStream),
}

/// A response body.
///
/// A streamed body is polled by hyper only when the connection can take more bytes (HTTP/1.1
/// socket writable, HTTP/2 flow-control window open), so a producer such as a query encoder is
/// held back by a slow client instead of buffering: that is the backpressure.
pub struct Body {
    kind: Kind,
    /// Counts bytes handed to hyper (`bluewave_http_response_body_bytes_total`).
    sent_bytes: Option<Counter>,
    /// Keeps the connection's in-flight count up while the body is being sent, so the idle
    /// timer and graceful shutdown wait for the end of a streamed answer.
    in_flight: Option<InFlight>,
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Self {
        Self::from_kind(Kind::Empty)
    }

    /// A body of one buffer (its length becomes the `Content-Length`).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::from_kind(Kind::Full(Some(bytes.into())))
    }

    /// A body streamed chunk by chunk. An `Err` item aborts the response (the HTTP/1.1
    /// connection is closed, the HTTP/2 stream is reset) because the status was already sent;
    /// the client sees a truncated body, never a success.
    pub fn stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        use futures_util::TryStreamExt as _;
        Self::from_kind(Kind::Stream(Box::pin(stream.map_err(Into::into))))
    }

    fn from_kind(kind: Kind) -> Self {
        Self { kind, sent_bytes: None, in_flight: None }
    }

    pub(crate) fn attach(&mut self, sent_bytes: Counter, mut in_flight: InFlight) {
        if !http_body::Body::is_end_stream(self) {
            in_flight.start_body();
        }
        self.sent_bytes = Some(sent_bytes);
        self.in_flight = Some(in_flight);
    }

    fn sent(&self, bytes: &Bytes) {
        if let Some(counter) = &self.sent_bytes {
            counter.inc_by(bytes.len() as u64);
        }
        if let Some(in_flight) = &self.in_flight {
            in_flight.progress();
        }
    }

    fn finished(&mut self) {
        if let Some(in_flight) = &mut self.in_flight {
            in_flight.finish_body();
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(Ok)),
            Kind::Stream(stream) => stream.as_mut().poll_next(cx),
        };
        match polled {
            Poll::Ready(Some(Ok(bytes))) => {
                this.sent(&bytes);
                // hyper may never poll a body again once it reports its end.
                if http_body::Body::is_end_stream(this) {
                    this.finished();
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(error))) => {
                this.finished();
                tracing::warn!(%error, "streamed response body failed; aborting the response");
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.finished();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}
