//! The life of one hub connection: handshake, message loop, close.
//!
//! One task per connection runs [`run`]. It owns the inbound byte stream and parses it; hub
//! methods run as futures polled *inside* this task (no task per invocation), next to the
//! keep-alive timer and the client timeout, so a long-running method never stops pings or the
//! reading of Completions (client results work even with one invocation at a time).
//!
//! Invocations start in arrival order; at most `max_parallel_invocations` run at once and the
//! rest wait in a short queue. When the queue is full, the task stops reading, and the
//! transport stops reading the socket: a client that floods a busy connection is pushed back
//! on rather than buffered.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use signalr_protocol::{
    Close, Completion, CompletionResult, HandshakeRequest, HandshakeResponse, HubMessage,
    Invocation, Protocol, TransferFormat,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::HubConnection;
use crate::hub::extract::InvocationParts;
use crate::hub::{HubCore, HubInner};
use crate::transport::{ConnectionApp, TransportConnection, TransportError, TransportType};

/// Invocations waiting for a free slot before the connection stops reading.
const MAX_QUEUED_INVOCATIONS: usize = 32;

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
        Ok(Err(Some(error))) => return refuse_handshake(&outbox, &connection_id, error),
        Err(_) => {
            return refuse_handshake(
                &outbox,
                &connection_id,
                "Handshake was canceled: no handshake was received within the handshake timeout."
                    .to_owned(),
            );
        }
    };

    let protocol = match Protocol::from_name(&handshake.protocol) {
        Some(protocol) if options.protocols.contains(&protocol) => protocol,
        _ => {
            return refuse_handshake(
                &outbox,
                &connection_id,
                format!("The protocol '{}' is not supported.", handshake.protocol),
            );
        }
    };
    if !protocol.is_version_supported(handshake.version) {
        return refuse_handshake(
            &outbox,
            &connection_id,
            format!(
                "The server does not support version {} of the '{}' protocol.",
                handshake.version,
                protocol.name()
            ),
        );
    }
    if protocol.transfer_format() == TransferFormat::Binary && !supports_binary {
        return refuse_handshake(
            &outbox,
            &connection_id,
            format!(
                "Cannot use the '{}' protocol on the current transport. The transport does not support 'Binary' transfer format.",
                protocol.name()
            ),
        );
    }

    outbox.set_binary(protocol.transfer_format() == TransferFormat::Binary);
    let mut response = BytesMut::new();
    HandshakeResponse::default().write(&mut response);
    if outbox.push(response.freeze()).is_err() {
        return;
    }
    if let Ok(frame) = close_frame(
        protocol,
        Some(
            "Connection closed with an error. The client did not read messages fast enough: its outbound buffer is full.",
        ),
        true,
    ) {
        outbox.set_overflow_frame(frame);
    }

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
        .with_identity(identity),
    );
    tracing::debug!(connection_id = %connection.id(), protocol = protocol.name(), "hub connection started");

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
            let mut dispatcher = Dispatcher {
                hub: &hub,
                connection: &connection,
                queued: VecDeque::new(),
                running: FuturesUnordered::new(),
            };
            dispatcher
                .run(&mut inbound, buf, transport_type, &shutdown)
                .await
        }
    };

    finish(&connection, ending);
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
    inbound: &mut mpsc::Receiver<Result<Bytes, TransportError>>,
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
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(error)) => return Err(Some(error.to_string())),
            None => return Err(None),
        }
    }
}

fn refuse_handshake(outbox: &crate::transport::Outbox, connection_id: &str, error: String) {
    tracing::debug!(%connection_id, %error, "handshake refused");
    let mut response = BytesMut::new();
    HandshakeResponse { error: Some(error) }.write(&mut response);
    outbox.close_with(Some(response.freeze()));
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

/// The message loop of one connection.
struct Dispatcher<'a, S> {
    hub: &'a Arc<HubInner<S>>,
    connection: &'a Arc<HubConnection>,
    /// Invocations that arrived while all slots were busy, in order.
    queued: VecDeque<Invocation>,
    /// Running hub methods. Each writes its own Completion when done.
    running: FuturesUnordered<BoxFuture<'static, ()>>,
}

impl<S: Send + Sync + 'static> Dispatcher<'_, S> {
    async fn run(
        &mut self,
        inbound: &mut mpsc::Receiver<Result<Bytes, TransportError>>,
        mut buf: BytesMut,
        transport_type: TransportType,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Ending {
        let core: &HubCore = &self.hub.core;
        let options = &core.options;
        let protocol = self.connection.protocol();
        let max_parallel = options.max_parallel_invocations;

        // Long polling has its own liveness (the poll cadence): no pings, no client timeout.
        let pings = transport_type != TransportType::LongPolling;
        let mut keep_alive = tokio::time::interval_at(
            Instant::now() + options.keep_alive_interval,
            options.keep_alive_interval,
        );
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let client_timeout = tokio::time::sleep_until(far_future());
        tokio::pin!(client_timeout);
        // Armed by the client's first Ping, as in ASP.NET Core (old clients never ping).
        let mut timeout_armed = false;

        // The handshake may have arrived with messages right behind it.
        if let Some(ending) = self.parse_buffered(&mut buf, protocol, &mut timeout_armed) {
            return ending;
        }

        loop {
            while self.running.len() < max_parallel {
                let Some(invocation) = self.queued.pop_front() else {
                    break;
                };
                self.start(invocation);
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
                Some(()) = self.running.next(), if !self.running.is_empty() => {}
                chunk = inbound.recv(), if self.queued.len() < MAX_QUEUED_INVOCATIONS => {
                    match chunk {
                        None => return Ending::ClientClosed,
                        Some(Err(error)) => {
                            return Ending::Error {
                                message: format!("Connection closed with an error. {error}"),
                                allow_reconnect: true,
                            };
                        }
                        Some(Ok(chunk)) => {
                            buf.extend_from_slice(&chunk);
                            if timeout_armed {
                                client_timeout
                                    .as_mut()
                                    .reset(Instant::now() + options.client_timeout);
                            }
                            let was_armed = timeout_armed;
                            if let Some(ending) =
                                self.parse_buffered(&mut buf, protocol, &mut timeout_armed)
                            {
                                return ending;
                            }
                            if timeout_armed && !was_armed {
                                client_timeout
                                    .as_mut()
                                    .reset(Instant::now() + options.client_timeout);
                            }
                        }
                    }
                }
                _ = keep_alive.tick(), if pings => {
                    let _ = self.connection.send_frame(protocol.ping_frame());
                }
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

    /// Parse and handle every complete message in `buf`.
    fn parse_buffered(
        &mut self,
        buf: &mut BytesMut,
        protocol: Protocol,
        timeout_armed: &mut bool,
    ) -> Option<Ending> {
        let max = self.hub.core.options.max_receive_message_size;
        loop {
            match protocol.parse_message(buf, max) {
                Ok(Some(message)) => {
                    if matches!(message, HubMessage::Ping) {
                        *timeout_armed = true;
                    }
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
    }

    fn handle(&mut self, message: HubMessage) -> Option<Ending> {
        match message {
            HubMessage::Invocation(invocation) => {
                let max_parallel = self.hub.core.options.max_parallel_invocations;
                if self.queued.is_empty() && self.running.len() < max_parallel {
                    self.start(invocation);
                } else {
                    self.queued.push_back(invocation);
                }
            }
            HubMessage::StreamInvocation(invocation) => {
                let error = match self.lookup(&invocation.target) {
                    Some(method) => format!(
                        "The client attempted to invoke the non-streaming '{}' method with a streaming invocation.",
                        method.name
                    ),
                    None => format!("Unknown hub method '{}'", invocation.target),
                };
                if let Some(id) = invocation.invocation_id {
                    self.complete(id, CompletionResult::Error(error));
                }
            }
            HubMessage::Completion(completion) => {
                if !self.connection.complete_invocation(completion) {
                    tracing::debug!(connection_id = %self.connection.id(), "Completion for an unknown invocation ignored");
                }
            }
            HubMessage::StreamItem(item) => {
                tracing::debug!(connection_id = %self.connection.id(), invocation_id = %item.invocation_id, "stream item for an unknown stream ignored");
            }
            HubMessage::CancelInvocation(_) | HubMessage::Ping => {}
            HubMessage::Ack(_) | HubMessage::Sequence(_) => {}
            HubMessage::Close(_) => return Some(Ending::ClientClosed),
        }
        None
    }

    fn lookup(&self, target: &str) -> Option<&crate::hub::Method<S>> {
        // Exact-case lookups (the common case) allocate nothing.
        self.hub
            .methods
            .get(target)
            .or_else(|| self.hub.methods.get(&target.to_ascii_lowercase()))
    }

    fn complete(&self, invocation_id: String, result: CompletionResult) {
        let message = HubMessage::Completion(Completion {
            headers: Vec::new(),
            invocation_id,
            result,
        });
        match self.connection.protocol().encode_message(&message) {
            Ok(frame) => {
                let _ = self.connection.send_frame(frame);
            }
            Err(error) => {
                tracing::error!(connection_id = %self.connection.id(), %error, "could not encode a Completion");
            }
        }
    }

    /// Start an invocation now: bind its arguments and push its future.
    fn start(&mut self, invocation: Invocation) {
        let Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
            ..
        } = invocation;
        let Some(method) = self.lookup(&target) else {
            tracing::debug!(connection_id = %self.connection.id(), %target, "unknown hub method");
            if let Some(id) = invocation_id {
                self.complete(
                    id,
                    CompletionResult::Error(format!("Unknown hub method '{target}'")),
                );
            }
            return;
        };
        let name = method.name.clone();
        let handler = method.handler.clone();
        let bind_error = |reason: &str| {
            format!("Failed to invoke '{name}' due to an error on the server. {reason}")
        };

        if !stream_ids.is_empty() {
            if let Some(id) = invocation_id {
                let reason = format!(
                    "Client sent {} stream(s), Hub method expects 0.",
                    stream_ids.len()
                );
                self.complete(id, CompletionResult::Error(bind_error(&reason)));
            }
            return;
        }
        let arguments = match arguments.into_values() {
            Ok(arguments) => arguments,
            Err(error) => {
                if let Some(id) = invocation_id {
                    self.complete(id, CompletionResult::Error(bind_error(&error.to_string())));
                }
                return;
            }
        };
        let expected = handler.arguments();
        if arguments.len() != expected {
            if let Some(id) = invocation_id {
                let reason = format!(
                    "Invocation provides {} argument(s) but target expects {expected}.",
                    arguments.len()
                );
                self.complete(id, CompletionResult::Error(bind_error(&reason)));
            }
            return;
        }

        let parts = InvocationParts {
            state: &self.hub.state,
            core: &self.hub.core,
            connection: self.connection,
            invocation_id: invocation_id.as_deref(),
            arguments: arguments.into_iter(),
            position: 0,
        };
        let future = match handler.call(parts) {
            Ok(future) => future,
            Err(rejection) => {
                if let Some(id) = invocation_id {
                    self.complete(id, CompletionResult::Error(bind_error(rejection.reason())));
                }
                return;
            }
        };

        let connection = self.connection.clone();
        let detailed = self.hub.core.options.detailed_errors;
        self.running.push(Box::pin(async move {
            let output = AssertUnwindSafe(future).catch_unwind().await;
            let result = match output {
                Ok(Ok(None)) => CompletionResult::Void,
                Ok(Ok(Some(value))) => CompletionResult::Value(value),
                Ok(Err(error)) => {
                    tracing::debug!(connection_id = %connection.id(), method = %name, %error, "hub method failed");
                    CompletionResult::Error(error.invocation_error(&name, detailed))
                }
                Err(_) => {
                    tracing::error!(connection_id = %connection.id(), method = %name, "hub method panicked");
                    CompletionResult::Error(format!(
                        "An unexpected error occurred invoking '{name}' on the server."
                    ))
                }
            };
            // Fire-and-forget invocations get no reply, not even an error.
            let Some(invocation_id) = invocation_id else { return };
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
        }));
    }
}

fn far_future() -> Instant {
    // An unarmed timer; about 30 years away.
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}
