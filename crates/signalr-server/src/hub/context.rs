//! Handles on a hub: the caller's [`Context`], [`Groups`], and [`HubContext`] for code
//! outside hub methods.

use std::sync::Arc;

use super::HubCore;
use super::clients::{HubClients, lifetime_error};
use crate::connection::HubConnection;
use crate::error::HubError;

/// The calling connection, as a hub method sees it (ASP.NET Core's `HubCallerContext`).
#[derive(Clone, Debug)]
pub struct Context {
    connection: Arc<HubConnection>,
}

impl Context {
    pub(crate) fn new(connection: Arc<HubConnection>) -> Context {
        Context { connection }
    }

    /// The caller's connection id.
    pub fn connection_id(&self) -> &str {
        self.connection.id()
    }

    /// The caller's user identifier, if any.
    pub fn user_id(&self) -> Option<&str> {
        self.connection.user_id()
    }

    /// The HTTP request that opened the connection (headers, URI with query).
    pub fn request(&self) -> &http::request::Parts {
        self.connection.request()
    }

    /// Who opened the connection, as the hub's authenticator established it (`None`:
    /// anonymous, or the hub does not authenticate).
    pub fn identity(&self) -> Option<&crate::auth::Identity> {
        self.connection.identity().map(|identity| &**identity)
    }

    /// Values kept for the connection's lifetime (`Context.Items`), typed.
    ///
    /// ```
    /// # use signalr_server::Context;
    /// #[derive(Clone)]
    /// struct Nickname(String);
    ///
    /// async fn set_nick(ctx: Context, nick: String) {
    ///     ctx.with_items(|items| items.insert(Nickname(nick)));
    /// }
    /// # let _ = set_nick;
    /// ```
    pub fn with_items<R>(&self, f: impl FnOnce(&mut http::Extensions) -> R) -> R {
        self.connection.with_items(f)
    }

    /// End the caller's connection. The client receives a Close message without
    /// `allowReconnect`.
    pub fn abort(&self) {
        self.connection.abort();
    }

    /// The connection handle itself.
    pub fn connection(&self) -> &Arc<HubConnection> {
        &self.connection
    }
}

/// Group membership of any connection of the hub (on any node).
#[derive(Clone)]
pub struct Groups {
    core: Arc<HubCore>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

impl Groups {
    pub(crate) fn new(core: Arc<HubCore>) -> Groups {
        Groups { core }
    }

    /// Add a connection to a group. Adding twice is harmless. Fails, leaving the membership
    /// as it was, when the connection is already in
    /// [`HubOptions::max_groups_per_connection`](crate::HubOptions::max_groups_per_connection)
    /// groups (checked by the node that holds the connection; across nodes through a
    /// backplane, the caller may not learn of it).
    pub async fn add(&self, connection_id: &str, group: &str) -> Result<(), HubError> {
        match self.core.manager.add_to_group(connection_id, group).await {
            Ok(()) => Ok(()),
            Err(error) => {
                if matches!(error, crate::LifetimeError::LimitExceeded(_)) {
                    self.core.metrics.groups_refused();
                }
                Err(lifetime_error(error))
            }
        }
    }

    /// Remove a connection from a group. Removing a non-member is harmless.
    pub async fn remove(&self, connection_id: &str, group: &str) -> Result<(), HubError> {
        self.core
            .manager
            .remove_from_group(connection_id, group)
            .await
            .map_err(lifetime_error)
    }
}

/// Send to a hub's clients and manage its groups from anywhere: a background task, an HTTP
/// handler, another hub (ASP.NET Core's `IHubContext`).
///
/// ```
/// # async fn example() -> Result<(), signalr_server::HubError> {
/// use signalr_server::Hub;
///
/// let hub = Hub::builder().build();
/// let context = hub.context();
/// tokio::spawn(async move {
///     let _ = context.clients().all().send("tick", (1,)).await;
/// });
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HubContext {
    core: Arc<HubCore>,
}

impl std::fmt::Debug for HubContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubContext").finish_non_exhaustive()
    }
}

impl HubContext {
    pub(crate) fn new(core: Arc<HubCore>) -> HubContext {
        HubContext { core }
    }

    /// The hub's clients.
    pub fn clients(&self) -> HubClients {
        HubClients::new(self.core.clone())
    }

    /// The hub's groups.
    pub fn groups(&self) -> Groups {
        Groups::new(self.core.clone())
    }

    /// The hub's lifetime manager.
    pub fn lifetime_manager(&self) -> &Arc<dyn crate::HubLifetimeManager> {
        &self.core.manager
    }

    /// Waits until everything sent so far is on its way to every node. Sends through a
    /// backplane return once queued, in order, so a loop of sends runs at the backplane's
    /// pace rather than one round trip each; flush when something outside must not see the
    /// effect before the messages (see [`HubLifetimeManager::flush`](crate::HubLifetimeManager::flush)).
    ///
    /// ```
    /// # async fn example() -> Result<(), signalr_server::HubError> {
    /// use signalr_server::Hub;
    ///
    /// let context = Hub::builder().build().context();
    /// for n in 0..100 {
    ///     context.clients().all().send("tick", (n,)).await?;
    /// }
    /// context.flush().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn flush(&self) {
        self.core.manager.flush().await;
    }
}
