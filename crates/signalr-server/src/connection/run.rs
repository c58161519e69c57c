//! The life of one hub connection: handshake, message loop, close.
//!
//! One task per connection runs [`run`]. It owns the inbound byte stream and parses it; hub
//! methods run as futures polled *inside* this task (no task per invocation), next to the
//! keep-alive timer and the client timeout, so a long-running method never stops pings or the
//! reading of Completions (client results work even with one invocation at a time). A method
//! is polled once as it starts; one that finishes then (most sends do) never joins the set of
//! running futures.
//!
//! Invocations start in arrival order; at most `max_parallel_invocations` run at once and the
//! rest wait in a short queue. When the queue is full, the task stops reading, and the
//! transport stops reading the socket: a client that floods a busy connection is pushed back
//! on rather than buffered.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use signalr_protocol::{
    Ack, Close, Completion, CompletionResult, HandshakeRequest, HandshakeResponse, HubMessage,
    Invocation, Protocol, Sequence, StreamItem, TransferFormat,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::HubConnection;
use crate::error::HubError;
use crate::hub::extract::{InvocationCancellation, InvocationParts};
use crate::hub::handler::MethodOutput;
use crate::hub::stream::{ItemStream, UploadItem, UploadReceiver};
use crate::hub::telemetry::HandshakeFailure::{self, Malformed, Timeout, Unsupported};
use crate::hub::{Context, HubCore, HubInner, Method, MethodKind};
use crate::transport::{
    ConnectionApp, Inbound, InboundReceiver, TransportConnection, TransportType,
};

/// Invocations waiting for a free slot before the connection stops reading.
const MAX_QUEUED_INVOCATIONS: usize = 32;

/// Most client bytes handled as one batch of sends ([`Dispatcher::parse_ready`]): what the
/// inbound queue holds when full, so that a flood's sends to a thousand groups meet several
/// times per batch (each member then gets its group's messages in one push). Under a flood
/// on one core a batch is ≈ 330 KB (what the socket task queued in its turn); 512 KB and
/// 2 MB measured the same.
const MAX_BATCHED_INPUT_BYTES: usize = 1024 * 1024;

/// Deliveries past which a batch takes no more chunks: the connections it sends to write
/// only after it, so a flood to large audiences is cut into batches of about the size one
/// chunk makes (one chunk of 64 KB to groups of a thousand is ≈ 500 k).
const MAX_BATCHED_DELIVERIES: usize = 256 * 1024;

impl<S: Send + Sync + 'static> ConnectionApp for HubInner<S> {
    fn run(self: Arc<Self>, connection: TransportConnection) -> BoxFuture<'static, ()> {
        Box::pin(run(self, connection))
    }
}

/// How the message loop ended.
enum Ending {
    /// The client sent Close or its transport went away: nothing more to send.
    ClientClosed,
    /// The server ends the connection with an error the client should see.
    Error {
        message: String,
        allow_reconnect: bool,
    },
    /// The application aborted the connection (`Context::abort`).
    Aborted,
    /// The connection was closed as a slow consumer; its outbox already holds the Close.
    SlowConsumer,
}

async fn run<S: Send + Sync + 'static>(hub: Arc<HubInner<S>>, transport: TransportConnection) {
    let TransportConnection {
        connection_id,
        request,
        transport: transport_type,
        mut inbound,
        outbox,
        identity,
        shutdown,
        stateful,
    } = transport;
    let supports_binary = match transport_type {
        TransportType::ServerSentEvents => false,
        TransportType::WebSockets | TransportType::LongPolling => true,
    };
    let options = &hub.core.options;
    let mut buf = BytesMut::new();

    let handshake = tokio::time::timeout(
        options.handshake_timeout,
        read_handshake(&mut inbound, &mut buf, options.max_receive_message_size),
    )
    .await;
    let handshake = match handshake {
        Ok(Ok(handshake)) => handshake,
        Ok(Err(None)) => {
            outbox.abandon();
            return;
        }
        Ok(Err(Some(error))) => return refuse_handshake(&hub, &outbox, Malformed, error),
        Err(_) => {
            return refuse_handshake(
                &hub,
                &outbox,
                Timeout,
                "Handshake was canceled: no handshake was received within the handshake timeout."
                    .to_owned(),
            );
        }
    };

    let protocol = match Protocol::from_name(&handshake.protocol) {
        Some(protocol) if options.protocols.contains(&protocol) => protocol,
        _ => {
            return refuse_handshake(
                &hub,
                &outbox,
                Unsupported,
                format!("The protocol '{}' is not supported.", handshake.protocol),
            );
        }
    };
    if !protocol.is_version_supported(handshake.version) {
        return refuse_handshake(
            &hub,
            &outbox,
            Unsupported,
            format!(
                "The server does not support version {} of the '{}' protocol.",
                handshake.version,
                protocol.name()
            ),
        );
    }
    if protocol.transfer_format() == TransferFormat::Binary && !supports_binary {
        return refuse_handshake(
            &hub,
            &outbox,
            Unsupported,
            format!(
                "Cannot use the '{}' protocol on the current transport. The transport does not support 'Binary' transfer format.",
                protocol.name()
            ),
        );
    }

    tracing::Span::current().record("protocol", protocol.name());
    outbox.set_binary(protocol.transfer_format() == TransferFormat::Binary);
    // Stateful reconnect needs both sides: negotiated, and a handshake of version 2 (which
    // means the client understands Ack and Sequence). Otherwise it is silently off.
    let stateful =
        stateful && transport_type == TransportType::WebSockets && handshake.version >= 2;
    if stateful {
        outbox.enable_replay(
            hub.core.stateful_reconnect_buffer_size,
            Box::new(move |sequence_id| {
                protocol
                    .encode_message(&HubMessage::Sequence(Sequence { sequence_id }))
                    .unwrap_or_default()
            }),
        );
    }
    let mut response = BytesMut::new();
    HandshakeResponse::default().write(&mut response);
    if outbox.push_untracked(response.freeze()).is_err() {
        return;
    }
    outbox.set_overflow_frame(overflow_frame(protocol));

    // The hub's provider wins; else the authenticated identity's user id.
    let user_id = match &hub.core.user_id_provider {
        Some(provider) => provider(&request),
        None => identity
            .as_ref()
            .and_then(|identity| identity.user_id.clone()),
    }
    .map(Arc::<str>::from);
    let connection = Arc::new(
        HubConnection::new(
            connection_id,
            user_id,
            protocol,
            transport_type,
            outbox.clone(),
            request,
        )
        .with_identity(identity)
        .with_limits(
            options.max_groups_per_connection,
            options.max_pending_client_results,
        ),
    );
    tracing::debug!(connection_id = %connection.id(), protocol = protocol.name(), "hub connection started");

    let metrics = &hub.core.metrics;
    metrics.connection_opened(transport_type, protocol);
    // Counted as closed however the rest ends.
    let _closed = scopeguard(|| metrics.connection_closed(transport_type, protocol));
    if let Err(error) = hub.core.manager.on_connected(&connection).await {
        tracing::warn!(connection_id = %connection.id(), %error, "lifetime manager refused the connection");
        finish(
            &connection,
            Ending::Error {
                message: "Connection closed with an error.".to_owned(),
                allow_reconnect: true,
            },
        );
        return;
    }

    let ending = match run_hook(&hub, &connection, hub.on_connected.as_ref()).await {
        Err(message) => Ending::Error {
            message,
            allow_reconnect: false,
        },
        Ok(()) => {
            let mut dispatcher = Dispatcher::new(&hub, &connection, stateful);
            dispatcher
                .run(&mut inbound, buf, transport_type, &shutdown)
                .await
        }
    };

    finish(&connection, ending);
    if connection.outbox().overflowed() {
        metrics.slow_consumer_closed();
    }
    connection.closed.cancel();
    connection.fail_pending_invocations();
    if let Err(message) = run_hook(&hub, &connection, hub.on_disconnected.as_ref()).await {
        tracing::debug!(connection_id = %connection.id(), %message, "on_disconnected failed");
    }
    hub.core.manager.on_disconnected(&connection).await;
    tracing::debug!(connection_id = %connection.id(), "hub connection ended");
}

/// Read until a complete handshake request. `Err(None)`: the transport went away first.
async fn read_handshake(
    inbound: &mut InboundReceiver,
    buf: &mut BytesMut,
    max_size: usize,
) -> Result<HandshakeRequest, Option<String>> {
    loop {
        match HandshakeRequest::parse(buf, max_size) {
            Ok(Some(request)) => return Ok(request),
            Ok(None) => {}
            Err(error) => {
                return Err(Some(format!(
                    "An unexpected error occurred during connection handshake. {error}"
                )));
            }
        }
        match inbound.recv().await {
            Some(Inbound::Data(chunk)) => buf.extend_from_slice(&chunk),
            // No transport can be replaced before the handshake; start over if one was.
            Some(Inbound::Resumed) => buf.clear(),
            Some(Inbound::Failed(error)) => return Err(Some(error.to_string())),
            None => return Err(None),
        }
    }
}

fn refuse_handshake<S>(
    hub: &HubInner<S>,
    outbox: &crate::transport::Outbox,
    failure: HandshakeFailure,
    error: String,
) {
    tracing::debug!(%error, "handshake refused");
    hub.core.metrics.handshake_failed(failure);
    let mut response = BytesMut::new();
    HandshakeResponse { error: Some(error) }.write(&mut response);
    outbox.close_with(Some(response.freeze()));
}

/// The Close message a slow consumer gets, encoded once per protocol and shared by every
/// connection (a copy per connection would cost every idle connection its bytes).
fn overflow_frame(protocol: Protocol) -> Bytes {
    static FRAMES: [std::sync::OnceLock<Bytes>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let slot = match protocol {
        Protocol::Json => &FRAMES[0],
        Protocol::MessagePack => &FRAMES[1],
    };
    slot.get_or_init(|| {
        close_frame(
            protocol,
            Some(
                "Connection closed with an error. The client did not read messages fast enough: its outbound buffer is full.",
            ),
            true,
        )
        .unwrap_or_default()
    })
    .clone()
}

fn close_frame(
    protocol: Protocol,
    error: Option<&str>,
    allow_reconnect: bool,
) -> Result<Bytes, signalr_protocol::EncodeError> {
    protocol.encode_message(&HubMessage::Close(Close {
        error: error.map(str::to_owned),
        allow_reconnect,
    }))
}

/// Send the Close message the ending calls for and close the outbox.
fn finish(connection: &HubConnection, ending: Ending) {
    let outbox = connection.outbox();
    let frame = match ending {
        Ending::ClientClosed | Ending::SlowConsumer => None,
        Ending::Aborted => close_frame(connection.protocol(), None, false).ok(),
        Ending::Error {
            message,
            allow_reconnect,
        } => {
            tracing::debug!(connection_id = %connection.id(), %message, "closing connection with an error");
            close_frame(connection.protocol(), Some(&message), allow_reconnect).ok()
        }
    };
    outbox.close_with(frame);
}

/// Run a lifecycle hook. `Err` carries the text for the client's Close message.
async fn run_hook<S>(
    hub: &HubInner<S>,
    connection: &Arc<HubConnection>,
    hook: Option<&crate::hub::handler::BoxedHandler<S>>,
) -> Result<(), String> {
    let Some(hook) = hook else { return Ok(()) };
    let parts = InvocationParts {
        state: &hub.state,
        core: &hub.core,
        connection,
        invocation_id: None,
        arguments: Vec::new().into_iter(),
        position: 0,
        uploads: Vec::new().into_iter(),
        cancellation: InvocationCancellation::Ready(connection.closed_token()),
    };
    let detailed = hub.core.options.detailed_errors;
    let generic = "Connection closed with an error.";
    let future = hook
        .call(parts)
        .map_err(|rejection| format!("{generic} {rejection}"))?;
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) if error.is_public() || detailed => Err(format!("{generic} {error}")),
        Ok(Err(_)) => Err(generic.to_owned()),
        Err(_) => {
            tracing::error!(connection_id = %connection.id(), "a hub lifecycle hook panicked");
            Err(generic.to_owned())
        }
    }
}

impl InboundSequence {
    /// Number a received message; `Ok(None)` drops it (a duplicate after a resume, or
    /// anything before the client's Sequence).
    fn filter(&mut self, message: HubMessage) -> Result<Option<HubMessage>, String> {
        if let HubMessage::Sequence(Sequence { sequence_id }) = message {
            if sequence_id > self.processed + 1 {
                return Err(format!(
                    "Sequence ID {sequence_id} is greater than the amount of messages received ({}).",
                    self.processed
                ));
            }
            self.seen = sequence_id.saturating_sub(1);
            self.awaiting_sequence = false;
            return Ok(None);
        }
        if self.awaiting_sequence {
            return Ok(None);
        }
        if message.is_trackable() {
            self.seen += 1;
            if self.seen <= self.processed {
                return Ok(None);
            }
            self.processed = self.seen;
        }
        Ok(Some(message))
    }
}

/// Items buffered per upload stream before the connection stops reading (ASP.NET Core's
/// `StreamBufferCapacity`).
const UPLOAD_BUFFER_CAPACITY: usize = 10;

/// An invocation accepted from the client, waiting for its turn.
struct Pending {
    invocation: Invocation,
    /// Receivers of its upload streams, created on arrival so items that come before the
    /// method starts are kept.
    uploads: Vec<UploadReceiver>,
    /// A StreamInvocation (server-to-client stream).
    streaming: bool,
}

/// What a finished task of the connection was.
enum Done {
    /// A hub method.
    Method,
    /// A server-to-client stream, with its invocation id.
    Stream(String),
}

/// The message loop of one connection.
struct Dispatcher<'a, S> {
    hub: &'a Arc<HubInner<S>>,
    connection: &'a Arc<HubConnection>,
    /// Invocations that arrived while all slots were busy, in order.
    queued: VecDeque<Pending>,
    /// Running hub methods and server-to-client streams, polled by this task. Each writes
    /// its own Completion when done. One set for both, because each set costs every
    /// connection an allocation up front.
    tasks: FuturesUnordered<BoxFuture<'static, Done>>,
    /// How many of `tasks` are methods: they count against `max_parallel_invocations`
    /// (streams do not).
    methods_running: usize,
    /// Cancellation of the running streams, by invocation id.
    stream_tokens: HashMap<String, CancellationToken>,
    /// Upload streams the client is sending, by stream id.
    uploads: HashMap<String, mpsc::Sender<UploadItem>>,
    /// An upload item waiting for room in its stream's buffer; while set, nothing more is
    /// parsed or read (ASP.NET Core stalls the connection the same way).
    blocked_upload: Option<(mpsc::Sender<UploadItem>, UploadItem)>,
    /// Stateful reconnect bookkeeping of what the client sends; `None` when off.
    sequence: Option<InboundSequence>,
}

/// The client's trackable messages, numbered as the client numbers them (stateful
/// reconnect), so a resumed client's resent messages are recognised and dropped.
#[derive(Debug, Default)]
struct InboundSequence {
    /// Id of the last trackable message processed.
    processed: u64,
    /// Id of the last trackable message seen since the last Sequence.
    seen: u64,
    /// Id last acknowledged to the client.
    acked: u64,
    /// After a resume, everything is ignored until the client's Sequence message.
    awaiting_sequence: bool,
}

impl<'a, S: Send + Sync + 'static> Dispatcher<'a, S> {
    fn new(hub: &'a Arc<HubInner<S>>, connection: &'a Arc<HubConnection>, stateful: bool) -> Self {
        Dispatcher {
            sequence: stateful.then(InboundSequence::default),
            hub,
            connection,
            queued: VecDeque::new(),
            tasks: FuturesUnordered::new(),
            methods_running: 0,
            stream_tokens: HashMap::new(),
            uploads: HashMap::new(),
            blocked_upload: None,
        }
    }

    async fn run(
        &mut self,
        inbound: &mut InboundReceiver,
        mut buf: BytesMut,
        transport_type: TransportType,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Ending {
        let core: &HubCore = &self.hub.core;
        let options = &core.options;
        let protocol = self.connection.protocol();

        // Long polling has its own liveness (the poll cadence): no pings, no client timeout.
        let pings = transport_type != TransportType::LongPolling;
        // Pings go only to a connection that was sent nothing for a whole interval (the
        // protocol's rule): a busy connection costs a timer wake-up per interval, not a write.
        let interval = options.keep_alive_interval;
        let keep_alive =
            tokio::time::sleep_until(keep_alive_deadline(Instant::now() + interval, interval));
        tokio::pin!(keep_alive);
        let client_timeout = tokio::time::sleep_until(far_future());
        tokio::pin!(client_timeout);
        // Stateful reconnect: acknowledge what was received about once a second, as the
        // .NET server does.
        let mut ack_timer = self.sequence.is_some().then(|| {
            let mut timer = tokio::time::interval(Duration::from_secs(1));
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer
        });
        // Armed by the client's first Ping, as in ASP.NET Core (old clients never ping).
        let mut timeout_armed = false;
        // Set while this sender is paced: its last batch's pushes, a frame or two each,
        // found most writers behind (`backlog`, "Pacing"). Boxed: most connections never
        // need it, and every byte of this future is held per connection.
        let mut pace: Option<Pin<Box<tokio::time::Sleep>>> = None;

        // The handshake may have arrived with messages right behind it.
        if let Some(ending) = self.parse_buffered(&mut buf, protocol, &mut timeout_armed) {
            return ending;
        }

        loop {
            if crate::backlog::take_far_behind() {
                // What this connection's invocations sent is far from written: let every
                // ready task (the writers among them) run before taking more.
                self.hub.core.metrics.sender_yielded();
                tokio::task::yield_now().await;
            }
            self.start_queued();
            if crate::backlog::is_far_behind() {
                // Invocations stopped starting for the writers (`start_queued`).
                continue;
            }

            tokio::select! {
                biased;
                () = self.connection.closed() => {
                    return if self.connection.outbox().overflowed() {
                        Ending::SlowConsumer
                    } else {
                        Ending::Aborted
                    };
                }
                () = shutdown.cancelled() => {
                    return Ending::Error {
                        message: "Server is shutting down.".to_owned(),
                        allow_reconnect: true,
                    };
                }
                Some(done) = self.tasks.next(), if !self.tasks.is_empty() => match done {
                    Done::Method => self.methods_running -= 1,
                    Done::Stream(id) => {
                        self.stream_tokens.remove(&id);
                    }
                },
                permit = reserve(&self.blocked_upload), if self.blocked_upload.is_some() => {
                    let blocked = self.blocked_upload.take();
                    match (permit, blocked) {
                        (Some(permit), Some((_, item))) => {
                            permit.send(item);
                        }
                        // The method dropped its stream: the rest of it is discarded.
                        _ => self.uploads.retain(|_, sender| !sender.is_closed()),
                    }
                    if let Some(ending) = self.parse_buffered(&mut buf, protocol, &mut timeout_armed) {
                        return ending;
                    }
                }
                () = sleep_out(&mut pace), if pace.is_some() => pace = None,
                chunk = inbound.recv(),
                    if self.queued.len() < MAX_QUEUED_INVOCATIONS
                        && self.blocked_upload.is_none()
                        && pace.is_none() =>
                {
                    match chunk {
                        None => return Ending::ClientClosed,
                        Some(Inbound::Failed(error)) => {
                            return Ending::Error {
                                message: format!("Connection closed with an error. {error}"),
                                allow_reconnect: true,
                            };
                        }
                        Some(Inbound::Resumed) => {
                            // Whatever the old transport cut off is void; the client starts
                            // again with a Sequence message.
                            buf.clear();
                            if let Some(sequence) = self.sequence.as_mut() {
                                sequence.awaiting_sequence = true;
                            }
                        }
                        Some(Inbound::Data(chunk)) => {
                            let was_armed = timeout_armed;
                            // Count only this batch's pushes.
                            let _ = crate::backlog::take_pushes();
                            if let Some(ending) = self.parse_ready(
                                chunk,
                                inbound,
                                &mut buf,
                                protocol,
                                &mut timeout_armed,
                            ) {
                                return ending;
                            }
                            if crate::backlog::take_pushes().pace() {
                                self.hub.core.metrics.sender_paced();
                                pace = Some(Box::pin(tokio::time::sleep(crate::backlog::PACE)));
                            }
                            if timeout_armed || was_armed {
                                client_timeout
                                    .as_mut()
                                    .reset(Instant::now() + options.client_timeout);
                            }
                        }
                    }
                }
                () = &mut keep_alive, if pings => {
                    let now = Instant::now();
                    let due = keep_alive_deadline(self.connection.outbox().last_write() + interval, interval);
                    if due > now {
                        keep_alive.as_mut().reset(due);
                    } else {
                        let _ = self.connection.send_untracked_frame(protocol.ping_frame());
                        keep_alive.as_mut().reset(keep_alive_deadline(now + interval, interval));
                    }
                }
                () = tick(&mut ack_timer), if ack_timer.is_some() => self.send_ack(protocol),
                () = &mut client_timeout, if timeout_armed && pings => {
                    return Ending::Error {
                        message: format!(
                            "Connection closed with an error. No message was received from the client within the client timeout of {:?}.",
                            options.client_timeout
                        ),
                        allow_reconnect: true,
                    };
                }
            }
        }
    }

    /// Parse and handle `chunk`, then the data chunks already queued behind it (up to
    /// [`MAX_BATCHED_INPUT_BYTES`] and [`MAX_BATCHED_DELIVERIES`]), as one batch of sends:
    /// when a client floods the connection with sends to more groups than one chunk comes
    /// back to, each member still gets its group's messages in one push. Stops early where
    /// reading would: when an upload stream's buffer is full or too many invocations wait.
    fn parse_ready(
        &mut self,
        chunk: Bytes,
        inbound: &mut InboundReceiver,
        buf: &mut BytesMut,
        protocol: Protocol,
        timeout_armed: &mut bool,
    ) -> Option<Ending> {
        let staged = crate::lifetime::batch_sends();
        let mut taken = chunk.len();
        buf.extend_from_slice(&chunk);
        drop(chunk);
        loop {
            if let Some(ending) = self.parse_buffered(buf, protocol, timeout_armed) {
                return Some(ending);
            }
            if taken >= MAX_BATCHED_INPUT_BYTES
                || staged.deliveries() >= MAX_BATCHED_DELIVERIES
                || self.queued.len() >= MAX_QUEUED_INVOCATIONS
                || self.blocked_upload.is_some()
            {
                return None;
            }
            let more = inbound.try_recv_data()?;
            taken += more.len();
            buf.extend_from_slice(&more);
        }
    }

    /// Parse and handle every complete message in `buf`, until an upload stream's buffer is
    /// full.
    fn parse_buffered(
        &mut self,
        buf: &mut BytesMut,
        protocol: Protocol,
        timeout_armed: &mut bool,
    ) -> Option<Ending> {
        let max = self.hub.core.options.max_receive_message_size;
        // Counted once per chunk, not per message.
        let mut parsed = 0;
        // The chunk's sends to groups and to everyone go out together when it is done
        // (nothing here waits: methods that do are polled once, then run as tasks).
        let staged = crate::lifetime::batch_sends();
        let ending = self.parse_messages(buf, protocol, timeout_armed, max, &mut parsed);
        drop(staged);
        self.hub.core.metrics.messages_received(parsed);
        ending
    }

    fn parse_messages(
        &mut self,
        buf: &mut BytesMut,
        protocol: Protocol,
        timeout_armed: &mut bool,
        max: usize,
        parsed: &mut u64,
    ) -> Option<Ending> {
        while self.blocked_upload.is_none() {
            match protocol.parse_message(buf, max) {
                Ok(Some(message)) => {
                    *parsed += 1;
                    if matches!(message, HubMessage::Ping) {
                        *timeout_armed = true;
                    }
                    let message = match self.sequence.as_mut() {
                        Some(sequence) => match sequence.filter(message) {
                            Ok(Some(message)) => message,
                            Ok(None) => continue,
                            Err(error) => {
                                return Some(Ending::Error {
                                    message: format!("Connection closed with an error. {error}"),
                                    allow_reconnect: false,
                                });
                            }
                        },
                        None => message,
                    };
                    if let Some(ending) = self.handle(message) {
                        return Some(ending);
                    }
                }
                Ok(None) => return None,
                Err(error) => {
                    tracing::debug!(connection_id = %self.connection.id(), %error, "invalid message from client");
                    // As in ASP.NET Core, a close the server did not mean as final lets the
                    // client reconnect (a fresh connection starts from a clean state).
                    return Some(Ending::Error {
                        message: format!("Connection closed with an error. {error}"),
                        allow_reconnect: true,
                    });
                }
            }
        }
        None
    }

    fn handle(&mut self, message: HubMessage) -> Option<Ending> {
        match message {
            HubMessage::Invocation(invocation) => self.accept(invocation, false),
            HubMessage::StreamInvocation(invocation) => self.accept(invocation, true),
            HubMessage::StreamItem(item) => {
                if let Some(sender) = self.uploads.get(&item.invocation_id) {
                    match sender.try_send(Ok(item.item)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(value)) => {
                            self.blocked_upload = Some((sender.clone(), value));
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.uploads.remove(&item.invocation_id);
                        }
                    }
                } else {
                    tracing::debug!(connection_id = %self.connection.id(), stream_id = %item.invocation_id, "item for an unknown stream ignored");
                }
            }
            HubMessage::Completion(completion) => {
                // An upload stream ends, or a client result comes back.
                if let Some(sender) = self.uploads.remove(&completion.invocation_id) {
                    if let CompletionResult::Error(error) = completion.result {
                        let _ = sender.try_send(Err(error));
                    }
                } else if !self.connection.complete_invocation(completion) {
                    tracing::debug!(connection_id = %self.connection.id(), "Completion for an unknown invocation ignored");
                }
            }
            HubMessage::CancelInvocation(cancel) => {
                if let Some(token) = self.stream_tokens.get(&cancel.invocation_id) {
                    token.cancel();
                }
            }
            HubMessage::Ack(ack) => self.connection.outbox().ack(ack.sequence_id),
            HubMessage::Ping | HubMessage::Sequence(_) => {}
            HubMessage::Close(_) => return Some(Ending::ClientClosed),
        }
        None
    }

    /// Take an invocation in: register its upload streams, then start it or queue it.
    fn accept(&mut self, invocation: Invocation, streaming: bool) {
        self.hub.core.metrics.invocation();
        let uploads = invocation
            .stream_ids
            .iter()
            .map(|id| {
                let (sender, receiver) = mpsc::channel(UPLOAD_BUFFER_CAPACITY);
                self.uploads.insert(id.clone(), sender);
                receiver
            })
            .collect();
        self.queued.push_back(Pending {
            invocation,
            uploads,
            streaming,
        });
        self.start_queued();
    }

    /// Start queued invocations in order while slots are free. Streams need no slot.
    /// Stops while a fan-out finds its members far behind: methods mostly finish as they
    /// start, and a chunk of invocations must not queue its whole audience's worth before
    /// the loop lets the writers run.
    fn start_queued(&mut self) {
        let max_parallel = self.hub.core.options.max_parallel_invocations;
        while let Some(front) = self.queued.front() {
            if crate::backlog::is_far_behind()
                || (!front.streaming && self.methods_running >= max_parallel)
            {
                break;
            }
            if let Some(pending) = self.queued.pop_front() {
                self.start(pending);
            }
        }
    }

    /// Acknowledge the client's trackable messages processed since the last Ack.
    fn send_ack(&mut self, protocol: Protocol) {
        let Some(sequence) = self.sequence.as_mut() else {
            return;
        };
        if sequence.processed == sequence.acked {
            return;
        }
        sequence.acked = sequence.processed;
        let ack = HubMessage::Ack(Ack {
            sequence_id: sequence.processed,
        });
        if let Ok(frame) = protocol.encode_message(&ack) {
            let _ = self.connection.send_untracked_frame(frame);
        }
    }

    fn lookup(&self, target: &str) -> Option<&Method<S>> {
        // Methods are keyed by their lower-case name; clients send the registered case, so
        // lower-case a copy on the stack rather than allocate one per invocation.
        let mut buf = [0u8; 64];
        match buf.get_mut(..target.len()) {
            Some(lower) => {
                lower.copy_from_slice(target.as_bytes());
                lower.make_ascii_lowercase();
                // ASCII lower-casing leaves UTF-8 valid.
                std::str::from_utf8(lower)
                    .ok()
                    .and_then(|lower| self.hub.methods.get(lower))
            }
            None => self.hub.methods.get(&target.to_ascii_lowercase()),
        }
    }

    fn complete(&self, invocation_id: String, result: CompletionResult) {
        send_completion(self.connection, invocation_id, result);
    }

    /// Bind an invocation's arguments and start it.
    fn start(&mut self, pending: Pending) {
        let Pending {
            invocation,
            uploads,
            streaming,
        } = pending;
        let Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
            ..
        } = invocation;
        let fail = |this: &mut Self, error: String| {
            this.hub.core.metrics.invocation_error();
            for id in &stream_ids {
                this.uploads.remove(id);
            }
            match &invocation_id {
                Some(id) => this.complete(id.clone(), CompletionResult::Error(error)),
                None => {
                    tracing::debug!(connection_id = %this.connection.id(), %error, "fire-and-forget invocation failed")
                }
            }
        };

        let Some(method) = self.lookup(&target) else {
            return fail(self, format!("Unknown hub method '{target}'"));
        };
        let name = method.name.clone();
        if let Some(policy) = &method.policy
            && !policy(&Context::new(self.connection.clone()))
        {
            tracing::debug!(connection_id = %self.connection.id(), method = %name, "invocation refused by the method's policy");
            return fail(
                self,
                format!("Failed to invoke '{name}' because user is unauthorized"),
            );
        }
        let (expected_arguments, expected_streams) = match &method.kind {
            MethodKind::Invoke(handler) => (handler.arguments(), handler.streams()),
            MethodKind::Stream(handler) => (handler.arguments(), handler.streams()),
        };
        match (&method.kind, streaming) {
            (MethodKind::Invoke(_), true) => {
                return fail(
                    self,
                    format!(
                        "The client attempted to invoke the non-streaming '{name}' method with a streaming invocation."
                    ),
                );
            }
            (MethodKind::Stream(_), false) => {
                return fail(
                    self,
                    format!(
                        "The client attempted to invoke the streaming '{name}' method with a non-streaming invocation."
                    ),
                );
            }
            _ => {}
        }
        if streaming {
            match &invocation_id {
                None => return fail(self, "A stream invocation needs an invocation id.".into()),
                Some(id) if self.stream_tokens.contains_key(id) => {
                    return fail(self, format!("Invocation ID '{id}' is already in use."));
                }
                Some(_) => {}
            }
        }

        let bind_error = |reason: &str| {
            format!("Failed to invoke '{name}' due to an error on the server. {reason}")
        };
        if stream_ids.len() != expected_streams {
            let reason = format!(
                "Client sent {} stream(s), Hub method expects {expected_streams}.",
                stream_ids.len()
            );
            return fail(self, bind_error(&reason));
        }
        let arguments = match arguments.into_values() {
            Ok(arguments) => arguments,
            Err(error) => return fail(self, bind_error(&error.to_string())),
        };
        if arguments.len() != expected_arguments {
            let reason = format!(
                "Invocation provides {} argument(s) but target expects {expected_arguments}.",
                arguments.len()
            );
            return fail(self, bind_error(&reason));
        }

        // A stream's token is needed now (CancelInvocation finds it by id); a method's only
        // if it asks for it, which most never do.
        let stream_token = matches!(method.kind, MethodKind::Stream(_))
            .then(|| self.connection.closed_ref().child_token());
        let cancellation = match &stream_token {
            Some(token) => InvocationCancellation::Ready(token.clone()),
            None => InvocationCancellation::OfConnection,
        };
        let parts = InvocationParts {
            state: &self.hub.state,
            core: &self.hub.core,
            connection: self.connection,
            invocation_id: invocation_id.as_deref(),
            arguments: arguments.into_iter(),
            position: 0,
            uploads: uploads.into_iter(),
            cancellation,
        };
        let connection = self.connection.clone();
        let detailed = self.hub.core.options.detailed_errors;
        match &method.kind {
            MethodKind::Invoke(handler) => match handler.call(parts) {
                Ok(mut future) => {
                    // Most methods finish without waiting (a send only queues frames): run
                    // them here, so the next invocation starts at once, rather than on the
                    // loop's next turn through the running set.
                    let core = &self.hub.core;
                    if let Some(output) = poll_once(&mut future) {
                        let result = method_result(output, core, &connection, &name, detailed);
                        let Some(invocation_id) = invocation_id else {
                            return;
                        };
                        if poll_once(&mut core.manager.flush()).is_some() {
                            return send_completion(&connection, invocation_id, result);
                        }
                        // The backplane has sends in flight: the Completion waits for them,
                        // holding the method's slot so that later invocations' sends stay
                        // behind it.
                        self.methods_running += 1;
                        let core = core.clone();
                        self.tasks.push(Box::pin(async move {
                            complete_after_flush(&core, &connection, invocation_id, result).await;
                            Done::Method
                        }));
                        return;
                    }
                    self.methods_running += 1;
                    let method = run_method(
                        future,
                        core.clone(),
                        connection,
                        name,
                        invocation_id,
                        detailed,
                    );
                    self.tasks.push(Box::pin(async move {
                        method.await;
                        Done::Method
                    }));
                }
                Err(rejection) => fail(self, bind_error(rejection.reason())),
            },
            MethodKind::Stream(handler) => match handler.call(parts) {
                Ok(future) => {
                    let id = invocation_id.unwrap_or_default();
                    let cancellation = stream_token.unwrap_or_default();
                    self.stream_tokens.insert(id.clone(), cancellation.clone());
                    let stream = run_stream(
                        future,
                        self.hub.core.clone(),
                        connection,
                        name,
                        id,
                        cancellation,
                        detailed,
                    );
                    self.tasks
                        .push(Box::pin(async move { Done::Stream(stream.await) }));
                }
                Err(rejection) => fail(self, bind_error(rejection.reason())),
            },
        }
    }
}

/// Ends when the pace set is over (never, without one).
async fn sleep_out(pace: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match pace {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The next tick of an optional timer (never, without one).
async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Wait for room in a blocked upload stream's buffer. `None`: the stream was dropped.
/// The future owns a clone of the sender, so it borrows nothing from the dispatcher.
fn reserve(
    blocked: &Option<(mpsc::Sender<UploadItem>, UploadItem)>,
) -> impl std::future::Future<Output = Option<mpsc::OwnedPermit<UploadItem>>> + 'static {
    let sender = blocked.as_ref().map(|(sender, _)| sender.clone());
    async move {
        match sender {
            Some(sender) => sender.reserve_owned().await.ok(),
            None => std::future::pending().await,
        }
    }
}

fn send_completion(connection: &HubConnection, invocation_id: String, result: CompletionResult) {
    let message = HubMessage::Completion(Completion {
        headers: Vec::new(),
        invocation_id,
        result,
    });
    match connection.protocol().encode_message(&message) {
        Ok(frame) => {
            let _ = connection.send_frame(frame);
        }
        Err(error) => {
            tracing::error!(connection_id = %connection.id(), %error, "could not encode a Completion");
        }
    }
}

/// Run a method to its end and send its Completion.
async fn run_method(
    future: BoxFuture<'static, MethodOutput>,
    core: Arc<HubCore>,
    connection: Arc<HubConnection>,
    name: Arc<str>,
    invocation_id: Option<String>,
    detailed: bool,
) {
    let output = AssertUnwindSafe(future).catch_unwind().await;
    let result = method_result(output, &core, &connection, &name, detailed);
    // Fire-and-forget invocations get no reply, not even an error.
    if let Some(invocation_id) = invocation_id {
        complete_after_flush(&core, &connection, invocation_id, result).await;
    }
}

/// Send a method's Completion once what it sent is out (the backplane's flush), so that a
/// caller holding its result knows the method's messages have left this node.
async fn complete_after_flush(
    core: &HubCore,
    connection: &HubConnection,
    invocation_id: String,
    result: CompletionResult,
) {
    core.manager.flush().await;
    send_completion(connection, invocation_id, result);
}

/// Poll a future once, as part of the current task's turn. The waker is a no-op: a future
/// that is not ready goes on to be polled by the running set (`FuturesUnordered` polls what
/// is pushed to it), which registers the task's own waker. A panic counts as the output.
fn poll_once<T>(future: &mut BoxFuture<'_, T>) -> Option<std::thread::Result<T>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
        Ok(std::task::Poll::Ready(output)) => Some(Ok(output)),
        Ok(std::task::Poll::Pending) => None,
        Err(panic) => Some(Err(panic)),
    }
}

/// The Completion result of a method's output; counts and logs failures.
fn method_result(
    output: std::thread::Result<MethodOutput>,
    core: &HubCore,
    connection: &HubConnection,
    name: &str,
    detailed: bool,
) -> CompletionResult {
    match output {
        Ok(Ok(None)) => CompletionResult::Void,
        Ok(Ok(Some(value))) => CompletionResult::Value(value),
        Ok(Err(error)) => {
            core.metrics.invocation_error();
            tracing::debug!(connection_id = %connection.id(), method = %name, %error, "hub method failed");
            CompletionResult::Error(error.invocation_error(name, detailed))
        }
        Err(_) => {
            core.metrics.invocation_error();
            tracing::error!(connection_id = %connection.id(), method = %name, "hub method panicked");
            CompletionResult::Error(format!(
                "An unexpected error occurred invoking '{name}' on the server."
            ))
        }
    }
}

/// Run a server-to-client stream: items as StreamItems, then a Completion. Pauses while the
/// connection's outbound queue is more than half full, so a fast stream goes at the pace of
/// the client rather than overflowing its queue. Returns the invocation id.
async fn run_stream(
    start: std::pin::Pin<Box<dyn std::future::Future<Output = ItemStream> + Send>>,
    core: Arc<HubCore>,
    connection: Arc<HubConnection>,
    name: Arc<str>,
    invocation_id: String,
    cancellation: CancellationToken,
    detailed: bool,
) -> String {
    let protocol = connection.protocol();
    let high_water = connection.outbox().max_buffered_bytes() / 2;
    let result = AssertUnwindSafe(async {
        let mut stream = tokio::select! {
            stream = start => stream,
            () = cancellation.cancelled() => return CompletionResult::Void,
        };
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = cancellation.cancelled() => return CompletionResult::Void,
            };
            match next {
                None => return CompletionResult::Void,
                Some(Err(error)) => {
                    tracing::debug!(connection_id = %connection.id(), method = %name, %error, "stream failed");
                    return CompletionResult::Error(error.stream_error(detailed));
                }
                Some(Ok(item)) => {
                    let message = HubMessage::StreamItem(StreamItem {
                        headers: Vec::new(),
                        invocation_id: invocation_id.clone(),
                        item,
                    });
                    match protocol.encode_message(&message) {
                        Ok(frame) => {
                            if connection.send_frame(frame).is_err() {
                                return CompletionResult::Void;
                            }
                        }
                        Err(error) => {
                            return CompletionResult::Error(
                                HubError::internal(error.to_string()).stream_error(detailed),
                            );
                        }
                    }
                    if connection.outbox().buffered_bytes() > high_water {
                        tokio::select! {
                            () = connection.outbox().wait_for_room(high_water) => {}
                            () = cancellation.cancelled() => return CompletionResult::Void,
                        }
                    }
                }
            }
        }
    })
    .catch_unwind()
    .await
    .unwrap_or_else(|_| {
        tracing::error!(connection_id = %connection.id(), method = %name, "stream panicked");
        CompletionResult::Error("An error occurred on the server while streaming results.".into())
    });
    if matches!(result, CompletionResult::Error(_)) {
        core.metrics.invocation_error();
    }
    // After a cancel the client no longer listens, but ASP.NET Core still completes the
    // stream; do the same so every stream ends with exactly one Completion.
    send_completion(&connection, invocation_id.clone(), result);
    invocation_id
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// When a keep-alive ping due at `due` goes: the next point of a grid shared by every
/// connection of the process (steps of an eighth of the interval, at most 1 s), so that the
/// pings due within one step go out in one wake-up of the runtime instead of one each (at
/// 10 k idle connections and 15 s, 667 wake-ups a second). ASP.NET Core checks every
/// connection's keep-alive on one 1-s heartbeat for the same reason. A ping goes at most one
/// step late, well inside a client's server timeout (twice the interval).
fn keep_alive_deadline(due: Instant, interval: Duration) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let step = (interval / 8).min(Duration::from_secs(1)).as_nanos().max(1);
    // A clock behind the origin (another runtime's paused test clock): no grid.
    let Some(since) = due.checked_duration_since(origin) else {
        return due;
    };
    u64::try_from(since.as_nanos().div_ceil(step) * step)
        .map_or(due, |nanos| origin + Duration::from_nanos(nanos))
}

fn far_future() -> Instant {
    // An unarmed timer; about 30 years away.
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_deadlines_fall_on_a_shared_grid_at_most_one_step_late() {
        let interval = Duration::from_secs(15);
        let step = Duration::from_secs(1);
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for ms in (0..3000).step_by(7) {
            let due = now + interval + Duration::from_millis(ms);
            let deadline = keep_alive_deadline(due, interval);
            assert!(deadline >= due && deadline - due < step, "{ms} ms");
            // Landing on the grid again changes nothing.
            assert_eq!(keep_alive_deadline(deadline, interval), deadline);
            seen.insert(deadline);
        }
        // 3 s of due times share three or four grid points.
        assert!((3..=4).contains(&seen.len()), "{} points", seen.len());
        // Short intervals get a finer grid: an eighth of 100 ms.
        let short = Duration::from_millis(100);
        let due = now + short;
        assert!(keep_alive_deadline(due, short) - due < short / 8);
    }
}
