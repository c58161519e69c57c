//! Mounting hubs on axum: the glue between the hub layer and the transports.

use axum::Router;

use crate::hub::Hub;
use crate::transport::endpoint;

impl Hub {
    /// The routes of this hub at `path` (for example `/chat`): `POST {path}/negotiate` and
    /// the transport requests on `{path}`. Merge them into your application's router; mount
    /// several hubs at different paths on one server.
    ///
    /// ```
    /// use signalr_server::Hub;
    ///
    /// async fn echo(message: String) -> String {
    ///     message
    /// }
    ///
    /// let chat = Hub::builder().method("Echo", echo).build();
    /// let app: axum::Router = axum::Router::new().merge(chat.router("/chat"));
    /// # let _ = app;
    /// ```
    pub fn router(&self, path: &str) -> Router {
        endpoint::router(path, self.app.clone(), self.transport_options.clone())
    }
}

/// Serve an application with TCP_NODELAY on every accepted socket.
///
/// Hub messages are small and latency-sensitive; with Nagle's algorithm on (axum's default)
/// a small write can wait for the client's delayed ACK, up to 40 ms on Linux. This is
/// `axum::serve` with that fixed, and shuts down gracefully when `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
