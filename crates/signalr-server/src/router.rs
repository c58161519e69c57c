//! Mounting hubs on axum: the glue between the hub layer and the transports. Besides the
//! routes, this is where a hub's HTTP edge is configured (authentication, CORS) and where
//! it is shut down, since all of that lives in the transport layer, which the hub layer
//! does not reach into.

use std::sync::Arc;

use axum::Router;

use crate::auth::{Authenticator, Identity};
use crate::hub::{Hub, HubBuilder};
use crate::transport::{CorsOptions, endpoint};

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
        endpoint::router(
            path,
            self.app.clone(),
            self.transport_options.clone(),
            self.lifecycle.clone(),
        )
    }

    /// Shut the hub down gracefully, on every path it is mounted at.
    ///
    /// New connections are refused from now on (negotiate answers `503`). Every connection
    /// receives a Close message with the error `Server is shutting down.` and
    /// `allowReconnect: true` (clients with automatic reconnect try again, e.g. against
    /// another node), then its transport is closed. The returned future completes when all
    /// connections are gone, or after [`TransportOptions::shutdown_timeout`] (5 s by
    /// default), when the remaining ones are dropped (outstanding long polls answer `204`).
    ///
    /// Call it before stopping the HTTP server, so long-polling clients can still fetch
    /// their Close message:
    ///
    /// ```no_run
    /// # async fn run(hub: signalr_server::Hub, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    /// let app = axum::Router::new().merge(hub.router("/chat"));
    /// let shutdown = async move {
    ///     let _ = tokio::signal::ctrl_c().await;
    ///     hub.shutdown().await;
    /// };
    /// signalr_server::serve(listener, app, shutdown).await
    /// # }
    /// ```
    ///
    /// [`TransportOptions::shutdown_timeout`]: crate::TransportOptions::shutdown_timeout
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let lifecycle = self.lifecycle.clone();
        let timeout = self.transport_options.shutdown_timeout;
        async move { lifecycle.shutdown(timeout).await }
    }
}

/// The HTTP edge of a hub: authentication and CORS. Shorthands for
/// [`HubBuilder::configure_transports`].
impl<S: Send + Sync + 'static> HubBuilder<S> {
    /// Authenticate every HTTP request of the hub (negotiate and every transport request)
    /// with `authenticator`. A refused request is answered `401`; the identity of the request
    /// that starts a connection is the connection's ([`Context::identity`]), and its
    /// `user_id` the connection's user id unless a
    /// [`user_id_provider`](HubBuilder::user_id_provider) is set.
    ///
    /// [`Context::identity`]: crate::Context::identity
    pub fn authenticator(self, authenticator: impl Authenticator) -> Self {
        let authenticator: Arc<dyn Authenticator> = Arc::new(authenticator);
        self.configure_transports(|t| t.auth.authenticator = Some(authenticator))
    }

    /// Refuse anonymous requests with `401`.
    pub fn require_authentication(self) -> Self {
        self.configure_transports(|t| t.auth.require_authentication = true)
    }

    /// Let only callers for which `check` returns true use the hub (ASP.NET Core's
    /// `[Authorize(...)]` on a hub): anonymous requests get `401`, refused identities `403`.
    ///
    /// ```
    /// use signalr_server::Hub;
    ///
    /// let admin_hub = Hub::builder()
    ///     .authorize(|identity| identity.has_claim("role", "admin"))
    ///     .build();
    /// # let _ = admin_hub;
    /// ```
    pub fn authorize(self, check: impl Fn(&Identity) -> bool + Send + Sync + 'static) -> Self {
        self.configure_transports(|t| t.auth.authorize = Some(Arc::new(check)))
    }

    /// Answer cross-origin requests from browsers (off by default).
    pub fn cors(self, cors: CorsOptions) -> Self {
        self.configure_transports(|t| t.cors = Some(cors))
    }
}
