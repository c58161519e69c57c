//! Addressing clients: `Clients.All`, `Clients.Group("x")`, `Clients.Caller`, ...
//!
//! A proxy names an [`Audience`]; `send` serializes the invocation once per enabled hub
//! protocol and hands it to the lifetime manager, which queues the shared bytes for every
//! connection it reaches (on this node or, through a backplane, on others).

use std::ops::Deref;
use std::sync::Arc;

use base64::Engine;
use rand::RngCore;
use serde::de::DeserializeOwned;
use signalr_protocol::{CompletionResult, RawValue};

use super::HubCore;
use crate::connection::{HubConnection, SendError};
use crate::error::HubError;
use crate::lifetime::{Audience, HubArguments, LifetimeError, SerializedMessage};

/// Every way to address clients of a hub. Available everywhere (hub methods, [`HubContext`]).
///
/// [`HubContext`]: crate::HubContext
#[derive(Clone)]
pub struct HubClients {
    core: Arc<HubCore>,
}

impl std::fmt::Debug for HubClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClients").finish_non_exhaustive()
    }
}

impl HubClients {
    pub(crate) fn new(core: Arc<HubCore>) -> HubClients {
        HubClients { core }
    }

    fn proxy(&self, audience: Audience) -> ClientProxy {
        ClientProxy {
            core: self.core.clone(),
            audience,
        }
    }

    /// Every connection of the hub.
    pub fn all(&self) -> ClientProxy {
        self.proxy(Audience::All)
    }

    /// Every connection but the listed ones.
    pub fn all_except<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        excluded: I,
    ) -> ClientProxy {
        self.proxy(Audience::AllExcept(
            excluded.into_iter().map(Into::into).collect(),
        ))
    }

    /// One connection, by connection id.
    pub fn client(&self, connection_id: impl Into<String>) -> SingleClientProxy {
        SingleClientProxy {
            core: self.core.clone(),
            target: Target::Id(connection_id.into()),
        }
    }

    /// Several connections, by connection id.
    pub fn clients<I: IntoIterator<Item = S>, S: Into<String>>(&self, ids: I) -> ClientProxy {
        self.proxy(Audience::Connections(
            ids.into_iter().map(Into::into).collect(),
        ))
    }

    /// The members of a group.
    pub fn group(&self, group: impl Into<String>) -> ClientProxy {
        self.proxy(Audience::Group(group.into()))
    }

    /// The members of a group but the listed connections.
    pub fn group_except<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        group: impl Into<String>,
        excluded: I,
    ) -> ClientProxy {
        self.proxy(Audience::GroupExcept(
            group.into(),
            excluded.into_iter().map(Into::into).collect(),
        ))
    }

    /// The members of several groups.
    pub fn groups<I: IntoIterator<Item = S>, S: Into<String>>(&self, groups: I) -> ClientProxy {
        self.proxy(Audience::Groups(
            groups.into_iter().map(Into::into).collect(),
        ))
    }

    /// Every connection of a user.
    pub fn user(&self, user_id: impl Into<String>) -> ClientProxy {
        self.proxy(Audience::User(user_id.into()))
    }

    /// Every connection of several users.
    pub fn users<I: IntoIterator<Item = S>, S: Into<String>>(&self, users: I) -> ClientProxy {
        self.proxy(Audience::Users(users.into_iter().map(Into::into).collect()))
    }
}

/// The clients as a hub method sees them: [`HubClients`] plus the caller.
#[derive(Clone)]
pub struct Clients {
    hub: HubClients,
    caller: Arc<HubConnection>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("caller", &self.caller.id())
            .finish_non_exhaustive()
    }
}

impl Clients {
    pub(crate) fn new(core: Arc<HubCore>, caller: Arc<HubConnection>) -> Clients {
        Clients {
            hub: HubClients::new(core),
            caller,
        }
    }

    /// The connection that invoked the method.
    pub fn caller(&self) -> SingleClientProxy {
        SingleClientProxy {
            core: self.hub.core.clone(),
            target: Target::Local(self.caller.clone()),
        }
    }

    /// Every connection but the caller.
    pub fn others(&self) -> ClientProxy {
        self.hub.all_except([self.caller.id()])
    }

    /// The members of a group but the caller.
    pub fn others_in_group(&self, group: impl Into<String>) -> ClientProxy {
        self.hub.group_except(group, [self.caller.id()])
    }
}

impl Deref for Clients {
    type Target = HubClients;

    fn deref(&self) -> &HubClients {
        &self.hub
    }
}

/// Sends to an audience.
#[derive(Clone)]
pub struct ClientProxy {
    core: Arc<HubCore>,
    audience: Audience,
}

impl std::fmt::Debug for ClientProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientProxy")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl ClientProxy {
    /// Invoke `method` on every client of the audience with `arguments` (a tuple such as
    /// `(name, message)`, or `(value,)` for one argument). The clients send no reply.
    ///
    /// Returns once the message is queued for local connections and handed to the backplane
    /// (if any); it fails only when the backplane fails or the arguments cannot be serialized.
    pub async fn send<A: HubArguments>(&self, method: &str, arguments: A) -> Result<(), HubError> {
        let protocols = self
            .core
            .manager
            .protocols_in_use(&self.core.options.protocols);
        let message =
            SerializedMessage::invocation(method, &arguments, protocols).map_err(|e| {
                HubError::internal(format!("the arguments could not be serialized: {e}"))
            })?;
        self.send_serialized(&message).await
    }

    /// Send a message serialized in advance (e.g. the same message to several audiences).
    pub async fn send_serialized(&self, message: &SerializedMessage) -> Result<(), HubError> {
        self.core
            .manager
            .send(&self.audience, message)
            .await
            .map_err(lifetime_error)
    }

    /// The audience this proxy addresses.
    pub fn audience(&self) -> &Audience {
        &self.audience
    }
}

#[derive(Clone)]
enum Target {
    /// The caller: always on this node, written to directly.
    Local(Arc<HubConnection>),
    /// Any connection, found through the lifetime manager.
    Id(String),
}

/// Sends to one connection, and can ask it for a result.
#[derive(Clone)]
pub struct SingleClientProxy {
    core: Arc<HubCore>,
    target: Target,
}

impl std::fmt::Debug for SingleClientProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleClientProxy")
            .field("connection_id", &self.connection_id())
            .finish_non_exhaustive()
    }
}

impl SingleClientProxy {
    /// The addressed connection's id.
    pub fn connection_id(&self) -> &str {
        match &self.target {
            Target::Local(connection) => connection.id(),
            Target::Id(id) => id,
        }
    }

    /// Invoke `method` on the client without waiting for a result.
    pub async fn send<A: HubArguments>(&self, method: &str, arguments: A) -> Result<(), HubError> {
        match &self.target {
            Target::Local(connection) => {
                let message =
                    SerializedMessage::invocation(method, &arguments, &[connection.protocol()])
                        .map_err(|e| {
                            HubError::internal(format!(
                                "the arguments could not be serialized: {e}"
                            ))
                        })?;
                // A closed caller is not an error of the method: the message is dropped, as
                // for any other connection that went away.
                let _ = connection.send(&message);
                Ok(())
            }
            Target::Id(id) => {
                ClientProxy {
                    core: self.core.clone(),
                    audience: Audience::Connection(id.clone()),
                }
                .send(method, arguments)
                .await
            }
        }
    }

    /// Invoke `method` on the client and wait for the value its handler returns (a *client
    /// result*). Fails when the client has no handler, its handler fails, it disconnects, or
    /// it does not answer within the hub's `client_result_timeout`.
    ///
    /// Called from a hub method of the same connection, this works even with the default of
    /// one invocation at a time: the connection keeps reading while its method waits.
    pub async fn invoke<T: DeserializeOwned, A: HubArguments>(
        &self,
        method: &str,
        arguments: A,
    ) -> Result<T, HubError> {
        let invocation_id = new_invocation_id();
        let connection_id = self.connection_id().to_owned();
        let message = SerializedMessage::invocation_with_id(
            Some(&invocation_id),
            method,
            &arguments,
            &self.core.options.protocols,
        )
        .map_err(|e| HubError::internal(format!("the arguments could not be serialized: {e}")))?;
        let timeout = self.core.options.client_result_timeout;
        let call = self
            .core
            .manager
            .invoke_connection(&connection_id, &invocation_id, &message);
        let completion = match tokio::time::timeout(timeout, call).await {
            Ok(Err(error @ LifetimeError::Send(SendError::TooManyPendingResults { .. }))) => {
                self.core.metrics.client_result_refused();
                return Err(lifetime_error(error));
            }
            Ok(result) => result.map_err(lifetime_error)?,
            Err(_) => {
                return Err(HubError::new(format!(
                    "Client '{connection_id}' did not answer '{method}' within {timeout:?}."
                )));
            }
        };
        let value = match completion.result {
            CompletionResult::Error(error) => return Err(HubError::new(error)),
            CompletionResult::Value(value) => value,
            // Some clients answer a void Completion; treat it as null rather than failing.
            CompletionResult::Void => RawValue::null(signalr_protocol::Protocol::Json),
        };
        value.decode::<T>().map_err(|e| {
            HubError::new(format!(
                "The result of '{method}' from client '{connection_id}' could not be read: {e}"
            ))
        })
    }
}

/// Client-result invocation ids: random, so they are unique across nodes and never collide
/// with the ids clients choose for their own upload streams ("0", "1", ...).
fn new_invocation_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

pub(crate) fn lifetime_error(error: LifetimeError) -> HubError {
    match error {
        LifetimeError::ConnectionNotFound(_)
        | LifetimeError::ConnectionClosed(_)
        | LifetimeError::Timeout(_)
        | LifetimeError::LimitExceeded(_)
        | LifetimeError::Send(SendError::TooManyPendingResults { .. }) => {
            HubError::new(error.to_string())
        }
        other => HubError::internal(other.to_string()),
    }
}
