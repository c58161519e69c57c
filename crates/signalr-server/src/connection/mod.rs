//! One hub connection: its identity, its outbound queue, and the task that runs it.
//!
//! [`HubConnection`] is the shared handle: lifetime managers keep it in their connection,
//! group and user tables and push serialized messages into it; hub methods see it through
//! their context. The task that owns the connection's lifecycle (handshake, message loop,
//! close) is in `run`.

pub(crate) mod run;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use signalr_protocol::{Completion, Protocol};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::lifetime::SerializedMessage;
use crate::transport::{FrameRun, Outbox, PushError, TransportType};

/// A connected client, as lifetime managers and hub methods see it.
pub struct HubConnection {
    /// Public connection id (what `Clients.client(id)` addresses).
    id: Arc<str>,
    /// User identifier, computed once at the handshake; connections of one user are
    /// addressed together through `Clients.user(id)`.
    user_id: Option<Arc<str>>,
    /// Hub protocol chosen at the handshake; decides which serialized form it is sent.
    protocol: Protocol,
    /// The transport carrying the connection.
    transport: TransportType,
    /// Outbound frames, drained by the transport's writer.
    outbox: Arc<Outbox>,
    /// The request that opened the connection (headers, query), for hub methods that need it.
    request: Arc<http::request::Parts>,
    /// Who opened the connection, as the endpoint's authenticator established it.
    identity: Option<Arc<Identity>>,
    /// Per-connection values the application keeps between invocations (`Context.Items`).
    items: Mutex<http::Extensions>,
    /// Cancelled when the connection should end (server abort) or has ended; hub methods
    /// and streams observe it.
    closed: CancellationToken,
    /// Client-result invocations waiting for the client's Completion, by invocation id.
    pending_results: Mutex<HashMap<String, oneshot::Sender<Completion>>>,
    /// Source of server-side invocation ids ("s1", "s2", ...), a namespace that cannot collide
    /// with the ids clients choose for their upload streams.
    next_invocation_id: AtomicU64,
    /// Limits from the hub's options, kept here because lifetime managers (which know
    /// nothing of hub options) enforce them. 0: no limit.
    limits: Limits,
}

/// Per-connection limits ([`HubOptions`](crate::HubOptions)).
#[derive(Debug, Clone, Copy, Default)]
struct Limits {
    max_groups: usize,
    max_pending_results: usize,
}

impl fmt::Debug for HubConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConnection")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("protocol", &self.protocol)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl HubConnection {
    pub(crate) fn new(
        id: Arc<str>,
        user_id: Option<Arc<str>>,
        protocol: Protocol,
        transport: TransportType,
        outbox: Arc<Outbox>,
        request: Arc<http::request::Parts>,
    ) -> HubConnection {
        HubConnection {
            id,
            user_id,
            protocol,
            transport,
            outbox,
            request,
            identity: None,
            items: Mutex::new(http::Extensions::new()),
            closed: CancellationToken::new(),
            pending_results: Mutex::new(HashMap::new()),
            next_invocation_id: AtomicU64::new(1),
            limits: Limits::default(),
        }
    }

    /// Apply the hub's per-connection limits (0: no limit).
    pub(crate) fn with_limits(
        mut self,
        max_groups: usize,
        max_pending_results: usize,
    ) -> HubConnection {
        self.limits = Limits {
            max_groups,
            max_pending_results,
        };
        self
    }

    /// Most groups this connection may be in (0: no limit). Lifetime managers refuse to
    /// add it to more ([`HubOptions::max_groups_per_connection`]).
    ///
    /// [`HubOptions::max_groups_per_connection`]: crate::HubOptions::max_groups_per_connection
    pub fn max_groups(&self) -> usize {
        self.limits.max_groups
    }

    /// Bytes queued for this connection and not yet written to its transport. Bounded by
    /// [`TransportOptions::max_buffered_bytes`](crate::TransportOptions::max_buffered_bytes)
    /// (a single larger message aside): past it, the connection is closed as a slow
    /// consumer.
    pub fn buffered_bytes(&self) -> usize {
        self.outbox.buffered_bytes()
    }

    /// Attach the identity the transport authenticated.
    pub(crate) fn with_identity(mut self, identity: Option<Arc<Identity>>) -> HubConnection {
        self.identity = identity;
        self
    }

    /// Who opened the connection, if the hub authenticates requests and the caller was not
    /// anonymous.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref()
    }

    /// The connection id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connection id, shared.
    pub fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// The user identifier, if the connection has one.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The user identifier, shared.
    pub fn user_id_arc(&self) -> Option<&Arc<str>> {
        self.user_id.as_ref()
    }

    /// The hub protocol of the connection.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The transport carrying the connection.
    pub fn transport(&self) -> TransportType {
        self.transport
    }

    /// The HTTP request that opened the connection.
    pub fn request(&self) -> &http::request::Parts {
        &self.request
    }

    /// Run `f` with the connection's items (typed values kept for the connection's lifetime).
    pub fn with_items<R>(&self, f: impl FnOnce(&mut http::Extensions) -> R) -> R {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut items)
    }

    /// Queue a serialized message for this connection, in its protocol.
    ///
    /// Never waits. A full queue closes the connection as a slow consumer (see
    /// [`Outbox`]); a closed connection drops the message. Both are reported as errors so the
    /// caller can count them; neither affects other connections.
    pub fn send(&self, message: &SerializedMessage) -> Result<(), SendError> {
        // Sends held back on this thread go first: this one was made after them.
        crate::lifetime::flush_staged();
        self.send_queued(message).map(drop)
    }

    /// Like [`HubConnection::send`], returning the bytes queued for this connection once
    /// the message is in (how far its writer is behind). For a lifetime manager's walk over
    /// an audience, which has already put it in order with what is staged.
    pub(crate) fn send_queued(&self, message: &SerializedMessage) -> Result<usize, SendError> {
        let frame = match message.frame(self.protocol) {
            Some(frame) => frame.clone(),
            None => message
                .transcode(self.protocol)
                .map_err(|e| SendError::Encode(e.to_string()))?,
        };
        let pushed = self.outbox.push(frame);
        self.pushed(pushed)
    }

    /// Bring what [`HubConnection::send`] touches first into cache, with plain loads only:
    /// see [`send_to_each`](crate::lifetime::memory).
    pub(crate) fn warm(&self) {
        // The protocol picks the frame; it may sit on another cache line than the outbox's
        // pointer.
        std::hint::black_box(self.protocol);
        self.outbox.warm();
    }

    /// Queue one framed message, already in this connection's protocol.
    pub fn send_frame(&self, frame: Bytes) -> Result<(), SendError> {
        self.queue_frame(frame).map(drop)
    }

    /// [`HubConnection::send_frame`], returning the bytes queued once the frame is in.
    fn queue_frame(&self, frame: Bytes) -> Result<usize, SendError> {
        // Sends held back on this thread go first: this one was made after them.
        crate::lifetime::flush_staged();
        let pushed = self.outbox.push(frame);
        self.pushed(pushed)
    }

    /// Queue a run of frames in this connection's protocol, in order, under one lock (a
    /// batch of messages to one of its groups); returns the bytes queued once they are in.
    pub(crate) fn queue_run(&self, run: &FrameRun) -> Result<usize, SendError> {
        let pushed = self.outbox.push_run(run);
        self.pushed(pushed)
    }

    fn pushed(&self, pushed: Result<usize, PushError>) -> Result<usize, SendError> {
        match pushed {
            Ok(queued) => Ok(queued),
            Err(PushError::Closed) => Err(SendError::Closed),
            Err(PushError::Full) => {
                tracing::warn!(
                    connection_id = %self.id,
                    "closing a slow consumer: its outbound buffer is full"
                );
                self.closed.cancel();
                Err(SendError::SlowConsumer)
            }
        }
    }

    /// Queue a frame that is not a trackable message (Ping, Ack): stateful reconnect does
    /// not number or replay it.
    pub(crate) fn send_untracked_frame(&self, frame: Bytes) -> Result<(), SendError> {
        crate::lifetime::flush_staged();
        self.outbox
            .push_untracked(frame)
            .map_err(|error| match error {
                PushError::Closed => SendError::Closed,
                PushError::Full => {
                    self.closed.cancel();
                    SendError::SlowConsumer
                }
            })
    }

    /// Ask the connection to end (ASP.NET Core's `Context.Abort()`): the client gets a Close
    /// message without `allowReconnect`.
    pub fn abort(&self) {
        self.closed.cancel();
    }

    /// Whether the connection is ending or has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Completes when the connection is ending or has ended.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// A token cancelled when the connection ends, for tasks that should stop with it.
    pub fn closed_token(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// The connection's token, for a child of it without a clone of the parent.
    pub(crate) fn closed_ref(&self) -> &CancellationToken {
        &self.closed
    }

    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// A fresh id for a server-to-client invocation that expects a result.
    pub fn next_invocation_id(&self) -> String {
        format!(
            "s{}",
            self.next_invocation_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Register a client-result invocation and send its frame. The receiver completes with
    /// the client's Completion; it fails (sender dropped) if the connection ends first.
    /// Refused at once when the connection already has the most client results waiting
    /// that [`HubOptions::max_pending_client_results`] allows.
    ///
    /// [`HubOptions::max_pending_client_results`]: crate::HubOptions::max_pending_client_results
    pub fn invoke(
        &self,
        invocation_id: String,
        message: &SerializedMessage,
    ) -> Result<oneshot::Receiver<Completion>, SendError> {
        let (tx, rx) = oneshot::channel();
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        {
            let mut pending = self.lock_pending();
            let max = self.limits.max_pending_results;
            if max > 0 && pending.len() >= max {
                return Err(SendError::TooManyPendingResults { max });
            }
            pending.insert(invocation_id.clone(), tx);
        }
        if let Err(error) = self.send(message) {
            self.lock_pending().remove(&invocation_id);
            return Err(error);
        }
        Ok(rx)
    }

    /// Forget a client-result invocation nobody waits for any more.
    pub fn cancel_invocation(&self, invocation_id: &str) {
        self.lock_pending().remove(invocation_id);
    }

    /// Route a Completion from the client to a waiting client-result invocation. Returns
    /// false when no invocation with that id is waiting.
    pub(crate) fn complete_invocation(&self, completion: Completion) -> bool {
        let sender = self.lock_pending().remove(&completion.invocation_id);
        match sender {
            Some(sender) => {
                let _ = sender.send(completion);
                true
            }
            None => false,
        }
    }

    /// Drop every waiting client-result invocation (the connection is gone).
    pub(crate) fn fail_pending_invocations(&self) {
        self.lock_pending().clear();
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Completion>>> {
        self.pending_results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a message could not be queued for a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closing or closed.
    #[error("the connection is closed")]
    Closed,
    /// The connection's outbound buffer was full; it is being closed.
    #[error("the connection's outbound buffer is full; it is being closed as a slow consumer")]
    SlowConsumer,
    /// The message could not be encoded in the connection's protocol.
    #[error("the message could not be encoded for this connection: {0}")]
    Encode(String),
    /// The connection already has the most client-result invocations waiting that the hub
    /// allows.
    #[error(
        "The client already has {max} client-result invocations waiting for an answer, the most allowed."
    )]
    TooManyPendingResults {
        /// The limit.
        max: usize,
    },
}
