//! Idle client connections are closed: each holds a connection slot, two file descriptors and
//! buffers. HTTP/1.1 waits for its next request under hyper's header timer (`header_timeout`);
//! HTTP/2 has no such timer, so a connection with no request in flight for `idle_timeout` is
//! told GOAWAY here.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::tls::upstream::{BoxError, ProxyBody};

/// Requests in flight on one connection, and when the last one ended.
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` when the connection last became idle.
    idle_since: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        })
    }

    /// A request has arrived; it is in flight until the token (carried by its response body)
    /// is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had nothing in flight for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(timeout).await;
                continue;
            }
            let since = self.epoch + Duration::from_millis(self.idle_since.load(Ordering::Acquire));
            let idle = since.elapsed();
            if idle >= timeout && self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep(timeout.saturating_sub(idle)).await;
        }
    }
}

/// One request in flight.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since
            .store(a.epoch.elapsed().as_millis() as u64, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request being handled, in flight from now until its response body has been sent.
///
/// The handler's future is boxed and freed as soon as the response head is ready: hyper keeps
/// its slot for the service future allocated for the whole connection, so an unboxed handler
/// (kilobytes of state) would be held by every open stream.
pub fn handling<F>(activity: &Arc<Activity>, handler: F) -> Handling
where
    F: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    Handling {
        handler: Box::pin(handler),
        token: Some(activity.begin()),
    }
}

type Handler = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

pub struct Handling {
    handler: Handler,
    token: Option<InFlight>,
}

impl Future for Handling {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = ready!(self.handler.as_mut().poll(cx))?;
        Poll::Ready(Ok(match self.token.take() {
            Some(token) => track(resp, token),
            None => resp,
        }))
    }
}

/// Keep the request in flight until its response body has been sent (or dropped).
fn track(resp: Response<ProxyBody>, token: InFlight) -> Response<ProxyBody> {
    resp.map(|inner| {
        Tracked {
            inner,
            _token: token,
        }
        .boxed()
    })
}

struct Tracked {
    inner: ProxyBody,
    _token: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
