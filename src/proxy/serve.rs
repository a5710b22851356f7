//! Serving one client connection until it ends, the gateway drains, or it has been idle too
//! long. In the last two cases the connection is shut down gracefully: HTTP/2 gets GOAWAY,
//! HTTP/1.1 closes after the request in flight, and streams already answering finish.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http_body::Body;
use hyper::body::Incoming;
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use tokio::sync::watch;

use super::idle::Activity;
use crate::tls::upstream::BoxError;

/// A hyper connection that can be asked to finish gracefully: hyper has no common trait for
/// its HTTP/1.1 (with upgrades) and HTTP/2 connections.
pub trait Graceful: Future {
    fn shut_down(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: Http2ServerConnExec<S::Future, B>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drive `conn` to its end; shut it down gracefully when the gateway drains or when it has had
/// nothing in flight for `idle_timeout`. The connection is pinned by the caller: taken by
/// value, it would be stored twice in this future (as the argument and as the pinned local),
/// kilobytes per open connection.
pub async fn until_done<C: Graceful>(
    mut conn: Pin<&mut C>,
    mut draining: watch::Receiver<bool>,
    activity: &Activity,
    idle_timeout: Duration,
) -> C::Output {
    tokio::select! {
        r = conn.as_mut() => r,
        _ = super::until_draining(&mut draining) => {
            conn.as_mut().shut_down();
            conn.await
        }
        _ = activity.idle_for(idle_timeout) => {
            conn.as_mut().shut_down();
            conn.await
        }
    }
}

/// Whether a connection ended because hyper refused a request before any service saw it
/// (framing it cannot trust: two `Content-Length`s, a `Transfer-Encoding` that is not chunked,
/// obs-fold, a head over the limit, an HTTP/2 preface on an HTTP/1.1 port). hyper answers those
/// itself (400, 431, or a close) and aigate never gets a request to record, so the connection's
/// owner records the refusal from this error.
pub fn refused_by_hyper(e: &hyper::Error) -> bool {
    e.is_parse() || e.is_parse_too_large() || e.is_parse_status()
}
