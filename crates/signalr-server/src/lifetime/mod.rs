//! The scale-out plug point: [`HubLifetimeManager`].
//!
//! A lifetime manager knows which connections exist, which groups they are in and which user
//! they belong to, and delivers serialized messages to an [`Audience`]. The in-memory
//! [`MemoryLifetimeManager`] is the default (one node); a backplane such as Redis implements the
//! same trait to reach connections on other nodes. Hubs only ever hold an
//! `Arc<dyn HubLifetimeManager>`, so the choice never shows up in a type.
//!
//! Messages cross this boundary already serialized ([`SerializedMessage`]): encoded once per
//! hub protocol by the sender, then shared by every connection it reaches, locally or on
//! another node.

mod frame;
mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use signalr_protocol::{
    Arguments, Completion, EncodeError, HubMessage, Invocation, Protocol, RawValue,
};

use crate::connection::HubConnection;
pub(crate) use memory::flush_staged;
pub use memory::{GroupChange, MemoryLifetimeManager, SendBatch, batch_sends, group_limit_error};

/// Who a message is for. One variant per ASP.NET Core `Send*Async` method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every connection.
    All,
    /// Every connection but these.
    AllExcept(Vec<String>),
    /// One connection.
    Connection(String),
    /// Several connections.
    Connections(Vec<String>),
    /// Every member of a group.
    Group(String),
    /// Every member of a group but these connections.
    GroupExcept(String, Vec<String>),
    /// Every member of any of these groups (a connection in several gets one copy per group,
    /// as in ASP.NET Core).
    Groups(Vec<String>),
    /// Every connection of a user.
    User(String),
    /// Every connection of any of these users.
    Users(Vec<String>),
}

/// Why a lifetime manager could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum LifetimeError {
    /// The manager does not implement this operation.
    #[error("{0} is not supported by this lifetime manager")]
    Unsupported(&'static str),
    /// No connection with that id exists (on any node the manager can reach).
    #[error("Connection '{0}' does not exist.")]
    ConnectionNotFound(String),
    /// The connection ended before answering.
    #[error("Connection '{0}' disconnected.")]
    ConnectionClosed(String),
    /// The connection could not be sent to (slow consumer, encoding).
    #[error(transparent)]
    Send(#[from] crate::connection::SendError),
    /// No answer in time (e.g. a group command to another node).
    #[error("timed out: {0}")]
    Timeout(String),
    /// A limit refused the operation (e.g. a connection already in the most groups
    /// allowed); nothing changed.
    #[error("{0}")]
    LimitExceeded(String),
    /// The backplane failed.
    #[error("backplane error: {0}")]
    Backplane(Box<dyn std::error::Error + Send + Sync>),
}

/// The scale-out plug point: tracks connections, groups and users and delivers messages.
///
/// Implementations must be cheap to share (`Arc<dyn HubLifetimeManager>`) and must never
/// block: delivering to a local connection only queues bytes (see
/// [`HubConnection::send`]).
///
/// Every implementation must pass the specification suite in
/// `signalr_server::testing::spec` (feature `test-util`).
#[async_trait]
pub trait HubLifetimeManager: Send + Sync + 'static {
    /// A connection finished its handshake on this node.
    async fn on_connected(&self, connection: &Arc<HubConnection>) -> Result<(), LifetimeError>;

    /// Which of the hub's `offered` protocols a message sent now must be encoded in. A
    /// connection whose protocol is left out still gets the message, transcoded for it alone
    /// ([`HubConnection::send`]), so this may narrow the list only to protocols that are
    /// rarely or never needed. Default: all of them (a backplane carries every protocol to
    /// the other nodes).
    fn protocols_in_use<'p>(&self, offered: &'p [Protocol]) -> &'p [Protocol] {
        offered
    }

    /// A connection on this node ended: forget it, its groups and its user membership.
    async fn on_disconnected(&self, connection: &Arc<HubConnection>);

    /// Deliver a message to an audience.
    async fn send(
        &self,
        audience: &Audience,
        message: &SerializedMessage,
    ) -> Result<(), LifetimeError>;

    /// Wait until every message this node sent before the call is on its way to every
    /// node. A backplane's `send` may return once the message is queued (so a loop of sends
    /// is not held to one round trip each); after `flush`, a message sent from any node is
    /// delivered after those. The hub flushes before it answers an invocation, so a client
    /// holding its result knows what the method sent is out. Failures are not reported here
    /// (the backplane counts and logs them). Default: nothing to wait for.
    async fn flush(&self) {}

    /// Add a connection (on any node) to a group.
    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<(), LifetimeError>;

    /// Remove a connection (on any node) from a group.
    async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError>;

    /// Send an invocation that expects a result to one connection (on any node) and wait for
    /// its Completion. `message` carries `invocation_id`. The caller applies any timeout;
    /// dropping the future abandons the call.
    async fn invoke_connection(
        &self,
        connection_id: &str,
        invocation_id: &str,
        message: &SerializedMessage,
    ) -> Result<Completion, LifetimeError> {
        let _ = (connection_id, invocation_id, message);
        Err(LifetimeError::Unsupported("client results"))
    }

    /// Stop background work (backplane connections). Called once when the server shuts down.
    async fn close(&self) {}

    /// How the manager is doing, for health reports (`GET /healthz` of
    /// [`observability`](crate::observability)). A backplane reports whether it is
    /// connected and since when; the default says "in-memory, ok", which is right for
    /// managers that depend on nothing outside the process.
    fn health(&self) -> LifetimeHealth {
        LifetimeHealth::in_memory()
    }
}

/// How a lifetime manager is doing: what [`HubLifetimeManager::health`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LifetimeHealth {
    /// What kind of manager it is, e.g. `"in-memory"` or `"redis"`.
    pub kind: String,
    /// Whether it relies on a backplane outside this process (other nodes are reached
    /// through it).
    pub backplane: bool,
    /// Whether the backplane is connected; always true without one.
    pub connected: bool,
    /// Since when `connected` has had its current value, if the manager knows.
    pub since: Option<std::time::SystemTime>,
    /// A short word for operators: the endpoint, the last error.
    pub detail: Option<String>,
}

impl LifetimeHealth {
    /// A manager that keeps everything in this process: always fine.
    pub fn in_memory() -> LifetimeHealth {
        LifetimeHealth {
            kind: "in-memory".to_owned(),
            backplane: false,
            connected: true,
            since: None,
            detail: None,
        }
    }

    /// A backplane of `kind`, connected or not since `since`.
    pub fn backplane(
        kind: impl Into<String>,
        connected: bool,
        since: Option<std::time::SystemTime>,
    ) -> LifetimeHealth {
        LifetimeHealth {
            kind: kind.into(),
            backplane: true,
            connected,
            since,
            detail: None,
        }
    }

    /// Add a detail for operators.
    pub fn with_detail(mut self, detail: impl Into<String>) -> LifetimeHealth {
        self.detail = Some(detail.into());
        self
    }
}

/// A hub message encoded once per hub protocol, ready to be queued for any connection.
///
/// Cloning is cheap (reference-counted bytes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SerializedMessage {
    json: Option<Bytes>,
    messagepack: Option<Bytes>,
}

impl SerializedMessage {
    /// Encode `message` in each of `protocols`.
    pub fn new(message: &HubMessage, protocols: &[Protocol]) -> Result<Self, EncodeError> {
        let mut serialized = SerializedMessage::default();
        for &protocol in protocols {
            serialized.set(protocol, protocol.encode_message(message)?);
        }
        Ok(serialized)
    }

    /// An invocation of `target` on the client with `arguments` (a tuple, array or vector:
    /// see [`HubArguments`]), without an invocation id: the client sends no reply.
    pub fn invocation<A: HubArguments + ?Sized>(
        target: &str,
        arguments: &A,
        protocols: &[Protocol],
    ) -> Result<Self, EncodeError> {
        Self::invocation_with_id(None, target, arguments, protocols)
    }

    /// An invocation with an optional invocation id (a client-result request when set).
    pub fn invocation_with_id<A: HubArguments + ?Sized>(
        invocation_id: Option<&str>,
        target: &str,
        arguments: &A,
        protocols: &[Protocol],
    ) -> Result<Self, EncodeError> {
        let mut serialized = SerializedMessage::default();
        for &protocol in protocols {
            let frame = frame::encode(|out| {
                arguments.write_invocation(protocol, invocation_id, target, out)
            })?;
            serialized.set(protocol, frame);
        }
        Ok(serialized)
    }

    /// Wrap frames that are already encoded (e.g. received from a backplane).
    pub fn from_frames(frames: impl IntoIterator<Item = (Protocol, Bytes)>) -> Self {
        let mut serialized = SerializedMessage::default();
        for (protocol, frame) in frames {
            serialized.set(protocol, frame);
        }
        serialized
    }

    /// Set the frame for one protocol.
    pub fn set(&mut self, protocol: Protocol, frame: Bytes) {
        match protocol {
            Protocol::Json => self.json = Some(frame),
            Protocol::MessagePack => self.messagepack = Some(frame),
        }
    }

    /// The frame for one protocol, if it was encoded.
    pub fn frame(&self, protocol: Protocol) -> Option<&Bytes> {
        match protocol {
            Protocol::Json => self.json.as_ref(),
            Protocol::MessagePack => self.messagepack.as_ref(),
        }
    }

    /// Length of the longest encoded frame.
    pub(crate) fn largest_frame(&self) -> usize {
        self.frames()
            .map(|(_, frame)| frame.len())
            .max()
            .unwrap_or(0)
    }

    /// Every encoded frame, JSON first.
    pub fn frames(&self) -> impl Iterator<Item = (Protocol, &Bytes)> {
        Protocol::ALL
            .into_iter()
            .filter_map(|protocol| self.frame(protocol).map(|frame| (protocol, frame)))
    }

    /// The frame for `protocol`, re-encoding another protocol's frame when this one is
    /// missing (a message from a node that did not serialize for every protocol).
    pub fn transcode(&self, protocol: Protocol) -> Result<Bytes, EncodeError> {
        if let Some(frame) = self.frame(protocol) {
            return Ok(frame.clone());
        }
        let (source, frame) = self
            .frames()
            .next()
            .ok_or_else(|| EncodeError::new("the message has no encoded form"))?;
        let mut buf = BytesMut::from(&frame[..]);
        let message = source
            .parse_message(&mut buf, usize::MAX)
            .map_err(|e| EncodeError::new(e.to_string()))?
            .ok_or_else(|| EncodeError::new("the message frame is incomplete"))?;
        protocol.encode_message(&message)
    }
}

/// Values that serialize as a list of invocation arguments: tuples (`(a, b)`, `(a,)`, `()`),
/// slices and vectors.
///
/// ```
/// use signalr_server::SerializedMessage;
/// use signalr_server::protocol::Protocol;
///
/// let message = SerializedMessage::invocation(
///     "broadcastMessage",
///     &("alice", "hello"),
///     &[Protocol::Json],
/// )
/// .unwrap();
/// assert_eq!(
///     &message.frame(Protocol::Json).unwrap()[..],
///     b"{\"type\":1,\"target\":\"broadcastMessage\",\"arguments\":[\"alice\",\"hello\"]}\x1e"
/// );
/// ```
pub trait HubArguments {
    /// Encode the arguments as one array in `protocol`'s encoding.
    fn encode_arguments(&self, protocol: Protocol) -> Result<RawValue, EncodeError>;

    /// Append a framed Invocation carrying these arguments to `out`. The provided
    /// implementation goes through [`encode_arguments`](Self::encode_arguments); the
    /// implementations here serialize the arguments straight into the frame.
    fn write_invocation(
        &self,
        protocol: Protocol,
        invocation_id: Option<&str>,
        target: &str,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let message = HubMessage::Invocation(Invocation {
            invocation_id: invocation_id.map(str::to_owned),
            target: target.to_owned(),
            arguments: Arguments::Encoded(self.encode_arguments(protocol)?),
            ..Invocation::default()
        });
        protocol.write_message(&message, out)
    }
}

/// `HubArguments` of a value that serializes as a sequence: encoded as it is, and written
/// straight into the frame.
macro_rules! sequence_arguments {
    () => {
        fn encode_arguments(&self, protocol: Protocol) -> Result<RawValue, EncodeError> {
            protocol.encode_value(self)
        }

        fn write_invocation(
            &self,
            protocol: Protocol,
            invocation_id: Option<&str>,
            target: &str,
            out: &mut BytesMut,
        ) -> Result<(), EncodeError> {
            protocol.write_invocation(invocation_id, target, self, out)
        }
    };
}

impl<T: serde::Serialize> HubArguments for [T] {
    sequence_arguments!();
}

impl<T: serde::Serialize> HubArguments for Vec<T> {
    sequence_arguments!();
}

impl<T: HubArguments + ?Sized> HubArguments for &T {
    fn encode_arguments(&self, protocol: Protocol) -> Result<RawValue, EncodeError> {
        (**self).encode_arguments(protocol)
    }

    fn write_invocation(
        &self,
        protocol: Protocol,
        invocation_id: Option<&str>,
        target: &str,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        (**self).write_invocation(protocol, invocation_id, target, out)
    }
}

impl HubArguments for () {
    fn encode_arguments(&self, protocol: Protocol) -> Result<RawValue, EncodeError> {
        // `()` serializes as null; no arguments is an empty array.
        protocol.encode_value(&[(); 0])
    }

    fn write_invocation(
        &self,
        protocol: Protocol,
        invocation_id: Option<&str>,
        target: &str,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        protocol.write_invocation(invocation_id, target, &[(); 0], out)
    }
}

macro_rules! tuple_arguments {
    ($($name:ident),+) => {
        impl<$($name: serde::Serialize),+> HubArguments for ($($name,)+) {
            sequence_arguments!();
        }
    };
}
tuple_arguments!(A);
tuple_arguments!(A, B);
tuple_arguments!(A, B, C);
tuple_arguments!(A, B, C, D);
tuple_arguments!(A, B, C, D, E);
tuple_arguments!(A, B, C, D, E, F);
tuple_arguments!(A, B, C, D, E, F, G);
tuple_arguments!(A, B, C, D, E, F, G, H);
tuple_arguments!(A, B, C, D, E, F, G, H, I);
tuple_arguments!(A, B, C, D, E, F, G, H, I, J);
tuple_arguments!(A, B, C, D, E, F, G, H, I, J, K);
tuple_arguments!(A, B, C, D, E, F, G, H, I, J, K, L);
