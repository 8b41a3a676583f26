//! Request bodies held to a minimum rate (`Bounded`): upload bodies (`oci::uploads`, with the
//! length a chunk's `Content-Range` announces) and every other body (`observe`), so that no
//! request is kept in flight for free by a body sent a byte at a time.

use std::future::Future as _;

use axum::body::Body;

/// The slowest a request body may arrive, averaged over each `RATE_WINDOW` (16 KiB/s): a body
/// kept alive a byte at a time cannot hold its memory and its request for long.
const MIN_RATE: u64 = 16 * 1024;
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);
/// The first window is short whatever the length announced: a body must begin within it.
const FIRST_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// A request body held to what its request announced (`Content-Length`, or a chunked body's
/// `Content-Range`) and to `MIN_RATE`: the first byte past the announced length, or a window
/// slower than the rate, ends it with an error at once, before more is held. The first window,
/// from when the body is first read, is `FIRST_WINDOW` and must bring its rate's worth (or the
/// whole of a shorter body). Only time spent waiting for the client counts: while the server is
/// busy with what it was handed (a slow disk or bucket, room in upload memory), the window is
/// held open.
pub(crate) struct Bounded {
    inner: axum::body::BodyDataStream,
    left: Option<u64>,
    /// Started at the first read.
    window: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    in_window: u64,
    /// What the current window must bring.
    need: u64,
    /// When the last bytes were handed on (the server's time since then does not count).
    handed_at: Option<tokio::time::Instant>,
}

impl Bounded {
    pub(crate) fn new(body: Body, len: Option<u64>) -> Bounded {
        let first = MIN_RATE * FIRST_WINDOW.as_secs();
        Bounded {
            inner: body.into_data_stream(),
            left: len,
            window: None,
            in_window: 0,
            need: len.map_or(first, |l| l.min(first)),
            handed_at: None,
        }
    }
}

impl futures_util::Stream for Bounded {
    type Item = Result<bytes::Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        let window = this
            .window
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(FIRST_WINDOW)));
        if let Some(at) = this.handed_at.take() {
            let deadline = window.deadline() + at.elapsed();
            window.as_mut().reset(deadline);
        }
        if window.as_mut().poll(cx).is_ready() {
            if this.in_window < this.need {
                return Poll::Ready(Some(Err(std::io::Error::other(format!(
                    "the body arrived slower than {} KiB/s",
                    MIN_RATE / 1024
                )))));
            }
            this.in_window = 0;
            this.need = MIN_RATE * RATE_WINDOW.as_secs();
            window
                .as_mut()
                .reset(tokio::time::Instant::now() + RATE_WINDOW);
            let _ = window.as_mut().poll(cx);
        }
        match std::pin::Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                let n = b.len() as u64;
                if let Some(left) = &mut this.left {
                    if n > *left {
                        return Poll::Ready(Some(Err(std::io::Error::other(
                            "the body is longer than announced",
                        ))));
                    }
                    *left -= n;
                }
                this.in_window += n;
                this.handed_at = Some(tokio::time::Instant::now());
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
