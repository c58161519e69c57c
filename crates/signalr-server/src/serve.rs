//! Serving an application on a TCP listener: what every accepted socket gets (TCP_NODELAY, a
//! write deadline, a deadline for each request's header) and the graceful shutdown.
//!
//! The write deadline is here, on the socket, because no layer above it can see a stalled
//! write: hyper polls a Server-Sent Events or long-polling response body only when it has
//! written what came before, so a client that stops reading leaves the response's task
//! parked in a write that never completes, and its connection open for as long as the
//! client's kernel keeps acknowledging zero-window probes: indefinitely. (WebSockets have
//! their own socket task, which ends a connection whose last messages the client does not
//! take within [`TransportOptions::close_timeout`](crate::TransportOptions::close_timeout);
//! the deadline covers them too.)
//!
//! The header deadline is hyper's, which needs a timer that `axum::serve` does not give it;
//! hence the accept loop here. Without it a socket that never sends a request, or a
//! keep-alive connection that sends no further one, holds its descriptor and task for good.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How [`serve_with`] treats accepted sockets.
///
/// ```
/// use std::time::Duration;
/// use signalr_server::ServeOptions;
///
/// let mut options = ServeOptions::default();
/// options.write_timeout = Some(Duration::from_secs(10));
/// options.request_header_timeout = Some(Duration::from_secs(10));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// How long a write may wait without the client taking a single byte before the
    /// connection is dropped (30 s by default, ASP.NET Core SignalR's client timeout; `None`:
    /// writes wait as long as the client keeps the connection open). A client on a slow link
    /// takes some bytes within it and keeps its connection (its hub connection is still
    /// closed once its queue is full); one that stopped reading takes none.
    pub write_timeout: Option<Duration>,
    /// How long a connection may wait for a whole request header, from when it starts waiting
    /// for one: on a new connection, and on a keep-alive connection once its last response
    /// is written. A connection that has not sent one by then is closed (30 s by default,
    /// Kestrel's request-header timeout; `None`: idle connections stay open). A WebSocket,
    /// an event stream or a long poll in progress is not waiting for a header.
    pub request_header_timeout: Option<Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            write_timeout: Some(Duration::from_secs(30)),
            request_header_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Serve an application over HTTP/1.1 with TCP_NODELAY, a write deadline and a request
/// header deadline on every accepted socket ([`ServeOptions::default`]); shuts down
/// gracefully when `shutdown` completes.
///
/// Hub messages are small and latency-sensitive; with Nagle's algorithm on (axum's default)
/// a small write can wait for the client's delayed ACK, up to 40 ms on Linux. A client that
/// stops reading loses its connection once a write to it has waited
/// [`ServeOptions::write_timeout`] (30 s) without progress, and one that sends no request
/// within [`ServeOptions::request_header_timeout`] (30 s) loses its idle connection.
///
/// On `shutdown` it stops accepting, lets each connection finish the request it is serving
/// (closing it after the response), and returns once they have. Upgraded WebSockets are the
/// hub's (`Hub::shutdown`), not waited for here.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let hub = signalr_server::Hub::builder().build();
/// let app = axum::Router::new().merge(hub.router("/hub"));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// // Shuts down at once here; a server waits for a signal (`tokio::signal::ctrl_c()`).
/// signalr_server::serve(listener, app, async {}).await
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, app, shutdown, ServeOptions::default()).await
}

/// [`serve`] with other [`ServeOptions`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use signalr_server::ServeOptions;
///
/// let hub = signalr_server::Hub::builder().build();
/// let app = axum::Router::new().merge(hub.router("/hub"));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let mut options = ServeOptions::default();
/// options.write_timeout = Some(Duration::from_secs(10));
/// signalr_server::serve_with(listener, app, async {}, options).await
/// # }
/// ```
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.request_header_timeout);
    let mut listener = Accepted {
        listener,
        write_timeout: options.write_timeout,
    };
    let connections = TaskTracker::new();
    let stopping = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let mut connection = pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // A client that went away or timed out: nothing for the application to act on.
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The accepting side of [`serve_with`]: each accepted socket with TCP_NODELAY, behind its
/// write deadline.
struct Accepted {
    listener: TcpListener,
    write_timeout: Option<Duration>,
}

impl Accepted {
    /// The next connection. Accept errors (out of descriptors, a connection reset before it
    /// was taken) are axum's to handle: it logs them and retries, after a pause where waiting
    /// helps.
    async fn accept(&mut self) -> (WriteDeadline<TcpStream>, std::net::SocketAddr) {
        let (tcp, addr) = Listener::accept(&mut self.listener).await;
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        (WriteDeadline::new(tcp, self.write_timeout), addr)
    }
}

/// A socket whose writes fail with [`io::ErrorKind::TimedOut`] once they have waited
/// `timeout` without any progress. Reads pass through untouched.
#[derive(Debug)]
pub(crate) struct WriteDeadline<T> {
    io: T,
    timeout: Option<Duration>,
    /// When the current wait began: set by a write that waits, cleared by one that goes
    /// through (no clock read, no timer touched: a busy connection's writes wait and go
    /// through many times a second).
    since: Option<Instant>,
    /// Wakes the task by the deadline of a wait. Made at a connection's first wait and kept:
    /// once a wait ends it is left to fire, and moved on only when it fires during a later
    /// wait, so a connection has one timer and re-arms it at most once per `timeout`. An
    /// idle connection never made one.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub(crate) fn new(io: T, timeout: Option<Duration>) -> Self {
        WriteDeadline {
            io,
            timeout,
            since: None,
            timer: None,
        }
    }

    /// After the socket answered a write: the wait is over on an answer; while it waits,
    /// whether the deadline has passed.
    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let Poll::Pending = polled else {
            self.since = None;
            return polled;
        };
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        let deadline = *self.since.get_or_insert_with(Instant::now) + timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // A timer that fires first was set for an earlier wait: move it to this one's deadline.
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took nothing written to it for {timeout:?}"),
                )));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    // Flushing and shutting down a TCP socket do not wait for the peer: only writes do.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Takes `room` bytes, then nothing until given more.
    struct Stuck {
        room: usize,
    }

    impl AsyncWrite for Stuck {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.room == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write(io: &mut WriteDeadline<Stuck>) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(io).poll_write(&mut cx, b"hello")
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_past_the_timeout_fails_and_progress_restarts_the_clock() {
        let timeout = Duration::from_secs(30);
        let mut io = WriteDeadline::new(Stuck { room: 5 }, Some(timeout));
        assert!(matches!(write(&mut io), Poll::Ready(Ok(5))));
        assert!(io.timer.is_none(), "no timer until a write waits");

        assert!(write(&mut io).is_pending());
        tokio::time::advance(timeout - Duration::from_secs(1)).await;
        assert!(write(&mut io).is_pending(), "still inside the deadline");

        // Progress ends the wait: the next one gets a whole timeout again (the timer, set
        // for the first wait, fires during it and is moved on).
        io.io.room = 2;
        assert!(matches!(write(&mut io), Poll::Ready(Ok(2))));
        assert!(io.since.is_none());
        assert!(write(&mut io).is_pending());
        tokio::time::advance(timeout - Duration::from_secs(1)).await;
        assert!(write(&mut io).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        match write(&mut io) {
            Poll::Ready(Err(error)) => assert_eq!(error.kind(), io::ErrorKind::TimedOut),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_timeout_a_write_waits_for_good() {
        let mut io = WriteDeadline::new(Stuck { room: 0 }, None);
        assert!(write(&mut io).is_pending());
        tokio::time::advance(Duration::from_secs(24 * 3600)).await;
        assert!(write(&mut io).is_pending());
        assert!(io.timer.is_none());
    }
}
