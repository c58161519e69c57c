//! [`RedisHubLifetimeManager`]: the [`HubLifetimeManager`] that reaches connections on
//! other nodes through Redis.
//!
//! It wraps a [`MemoryLifetimeManager`] for this node's connections, groups and users, and
//! adds the Redis side: what to publish for each audience, what to do with what arrives,
//! group commands with acks for connections on other nodes, and client results across
//! nodes. Connections to Redis are in `link`; names and payloads in `channels` and
//! `envelope`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use redis::{PushInfo, PushKind, Value};
use signalr_server::lifetime::GroupChange;
use signalr_server::protocol::{Completion, CompletionResult, HubMessage, Protocol};
use signalr_server::{
    Audience, HubConnection, HubLifetimeManager, LifetimeError, LifetimeHealth,
    MemoryLifetimeManager, SerializedMessage,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::channels::{self, ChannelKind, Channels};
use crate::config::RedisConfig;
use crate::envelope::{self, ClientResultRoute, GroupAction, GroupCommand};
use crate::error::BackplaneError;
use crate::link::{Connector, Publish, PublishShared, Publisher};
use crate::stats::{BackplaneStats, Counters, LinkState};
use crate::subscription::{Confirmed, Subscriber};

/// The error a client-result call gets when the connection ends before answering, as
/// .NET words it.
const CONNECTION_DISCONNECTED: &str = "Connection disconnected.";

/// A [`HubLifetimeManager`] that scales a hub out across nodes through Redis pub/sub, on
/// the wire of ASP.NET Core's StackExchangeRedis backplane. See the [crate docs](crate).
///
/// Create it with [`connect`](Self::connect) and hand it to the hub builder's
/// `lifetime_manager`. Cloning the `Arc` shares one manager; one manager serves one hub.
pub struct RedisHubLifetimeManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisHubLifetimeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHubLifetimeManager")
            .field("server_name", &self.inner.server_name)
            .field("endpoint", &self.inner.endpoint)
            .field("stats", &self.inner.counters)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// This node's connections, groups and users; every local delivery goes through it.
    local: Arc<MemoryLifetimeManager>,
    channels: Channels,
    /// This node's name in ack and return channels and in group commands.
    server_name: String,
    endpoint: String,
    publisher: Publisher,
    subscriber: Arc<Subscriber>,
    /// Group commands this node sent, waiting for the owner's ack, by command id.
    acks: Mutex<HashMap<u32, oneshot::Sender<()>>>,
    next_ack_id: AtomicU32,
    /// Client-result invocations this node sent to other nodes, by invocation id.
    results: Mutex<HashMap<String, oneshot::Sender<Completion>>>,
    /// Group commands for local connections, applied in arrival order by one task
    /// (they subscribe, which needs awaiting; the push callback cannot).
    group_commands: mpsc::UnboundedSender<GroupCommand>,
    counters: Arc<Counters>,
    /// Whether both Redis connections are up, and since when.
    link: Arc<LinkState>,
    ack_timeout: Duration,
    shutdown: CancellationToken,
    publisher_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl RedisHubLifetimeManager {
    /// Connects to Redis (one publishing and one subscribing connection) and subscribes
    /// the hub's node-wide channels. Fails, naming the Redis endpoint, when Redis cannot be
    /// reached, refuses the password, or does not answer within the connect timeout; once
    /// started, losing Redis is survived (see the crate docs).
    pub async fn connect(config: RedisConfig) -> Result<Arc<Self>, BackplaneError> {
        let info = config.connection_info()?;
        let connector = Arc::new(Connector::new(info, &config));
        let endpoint = connector.endpoint().to_owned();
        let connect_error = |error: redis::RedisError| {
            BackplaneError::from_connect(&endpoint, &error, connector.connect_timeout())
        };

        let channels = Channels::new(config.channel_prefix_bytes(), config.hub_name_str());
        let server_name = config
            .configured_server_name()
            .map_or_else(channels::generate_server_name, str::to_owned);
        let counters = Arc::new(Counters::new(config.hub_name_str()));
        let link = Arc::new(LinkState::new(config.hub_name_str()));
        let local = Arc::new(MemoryLifetimeManager::new());
        let shutdown = CancellationToken::new();

        let (disconnect_tx, disconnect_rx) = mpsc::unbounded_channel();
        let publish_connection = connector
            .connect(None, disconnect_tx.clone())
            .await
            .map_err(connect_error)?;

        let (group_commands, group_command_rx) = mpsc::unbounded_channel();
        let confirmed = Arc::new(Confirmed::default());
        let (received_tx, received_rx) = mpsc::unbounded_channel();
        let received = Arc::new(Received {
            queue: received_tx,
            bytes: AtomicUsize::new(0),
            overflowing: AtomicBool::new(false),
            counters: counters.clone(),
        });
        let inner = Arc::new({
            let received = received.clone();
            let subscriber = Arc::new(Subscriber::new(
                connector.clone(),
                Arc::new(move |push| received.push(push)),
                counters.clone(),
                link.clone(),
                confirmed.clone(),
            ));
            let shared = Arc::new(PublishShared::new(
                local.clone(),
                counters.clone(),
                link.clone(),
                confirmed,
            ));
            let (publisher, publisher_task) = Publisher::start(
                connector.clone(),
                publish_connection,
                (disconnect_tx, disconnect_rx),
                shared,
                shutdown.clone(),
            );
            Inner {
                local,
                channels,
                server_name,
                endpoint: endpoint.clone(),
                publisher,
                subscriber,
                acks: Mutex::new(HashMap::new()),
                next_ack_id: AtomicU32::new(0),
                results: Mutex::new(HashMap::new()),
                group_commands,
                counters,
                link,
                ack_timeout: config.ack_timeout_value(),
                shutdown: shutdown.clone(),
                publisher_task: Mutex::new(Some(publisher_task)),
            }
        });

        let permanent = [
            inner.channels.all(),
            inner.channels.internal_groups(),
            inner.channels.ack(&inner.server_name),
            inner.channels.return_channel(&inner.server_name),
        ];
        inner
            .subscriber
            .start(&permanent)
            .await
            .map_err(connect_error)?;
        inner
            .subscriber
            .spawn_tasks(config.health_check_interval_value(), shutdown.clone());
        tokio::spawn(apply_group_commands(
            Arc::downgrade(&inner),
            group_command_rx,
        ));
        tokio::spawn(hand_over(
            Arc::downgrade(&inner),
            received,
            received_rx,
            shutdown.clone(),
        ));
        tracing::info!(
            endpoint = %inner.endpoint,
            hub = config.hub_name_str(),
            server_name = %inner.server_name,
            sharded = config.is_sharded(),
            "Redis backplane connected"
        );
        Ok(Arc::new(RedisHubLifetimeManager { inner }))
    }

    /// This node's server name (in its ack and return channel names).
    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    /// The channel names this manager uses.
    pub fn channels(&self) -> &Channels {
        &self.inner.channels
    }

    /// The local half: this node's connections, groups and users.
    pub fn local(&self) -> &MemoryLifetimeManager {
        &self.inner.local
    }

    /// The counters so far (also exported through the `metrics` crate).
    pub fn stats(&self) -> BackplaneStats {
        self.inner.counters.snapshot()
    }

    /// Whether both Redis connections are up (and every subscription in place).
    pub fn is_connected(&self) -> bool {
        self.inner.publisher.is_up() && self.inner.subscriber.is_live()
    }

    /// Whether both Redis connections are up, and since when that has been so (or not).
    pub fn connected_since(&self) -> (bool, std::time::SystemTime) {
        self.inner.link.connected()
    }
}

#[async_trait]
impl HubLifetimeManager for RedisHubLifetimeManager {
    async fn on_connected(&self, connection: &Arc<HubConnection>) -> Result<(), LifetimeError> {
        let inner = &self.inner;
        let ticket = {
            let mut subscriptions = inner.subscriber.lock();
            if !inner.local.add_connection(connection) {
                return Err(LifetimeError::Backplane(
                    format!(
                        "a connection with id '{}' is already registered",
                        connection.id()
                    )
                    .into(),
                ));
            }
            subscriptions.acquire(inner.channels.connection(connection.id()));
            if let Some(user) = connection.user_id() {
                subscriptions.acquire(inner.channels.user(user));
            }
            subscriptions.unlock()
        };
        // Live once Redis confirmed the subscriptions, so a message sent to this connection
        // from another node right after the handshake is not missed.
        inner.subscriber.settled(ticket).await;
        Ok(())
    }

    async fn on_disconnected(&self, connection: &Arc<HubConnection>) {
        let inner = &self.inner;
        let ticket = {
            let mut subscriptions = inner.subscriber.lock();
            if inner.local.connection(connection.id()).is_none() {
                return;
            }
            let groups = inner.local.remove_connection(connection);
            subscriptions.release(inner.channels.connection(connection.id()));
            if let Some(user) = connection.user_id() {
                subscriptions.release(inner.channels.user(user));
            }
            for group in groups {
                subscriptions.release(inner.channels.group(&group));
            }
            subscriptions.unlock()
        };
        inner.subscriber.settled(ticket).await;
    }

    async fn send(
        &self,
        audience: &Audience,
        message: &SerializedMessage,
    ) -> Result<(), LifetimeError> {
        let inner = &self.inner;
        let channels = &inner.channels;
        let mut batch = PublishBatch::new(inner.publisher.should_wait());
        match audience {
            Audience::All => inner.publish(&mut batch, channels.all(), message, &[], Audience::All),
            Audience::AllExcept(except) => inner.publish(
                &mut batch,
                channels.all(),
                message,
                except,
                Audience::AllExcept(except.clone()),
            ),
            Audience::Connection(id) => {
                if let Some(connection) = inner.local.connection(id) {
                    // A closed or slow connection is its own problem, not the sender's.
                    let _ = connection.send(message);
                    return Ok(());
                }
                inner.publish_connection(&mut batch, id, message);
            }
            Audience::Connections(ids) => {
                // One publish per id, local ones included (as .NET): every message to a
                // connection then takes the same path, in publish order.
                for id in ids {
                    inner.publish_connection(&mut batch, id, message);
                }
            }
            Audience::Group(group) => inner.publish(
                &mut batch,
                channels.group(group),
                message,
                &[],
                Audience::Group(group.clone()),
            ),
            Audience::GroupExcept(group, except) => inner.publish(
                &mut batch,
                channels.group(group),
                message,
                except,
                Audience::GroupExcept(group.clone(), except.clone()),
            ),
            Audience::Groups(groups) => {
                let payload = inner.envelope(message, &[]);
                for group in groups.iter().filter(|g| !g.is_empty()) {
                    inner.publish_payload(
                        &mut batch,
                        channels.group(group),
                        payload.clone(),
                        Some(Audience::Group(group.clone())),
                        message,
                    );
                }
            }
            Audience::User(user) => inner.publish(
                &mut batch,
                channels.user(user),
                message,
                &[],
                Audience::User(user.clone()),
            ),
            Audience::Users(users) => {
                let payload = inner.envelope(message, &[]);
                for user in users.iter().filter(|u| !u.is_empty()) {
                    inner.publish_payload(
                        &mut batch,
                        channels.user(user),
                        payload.clone(),
                        Some(Audience::User(user.clone())),
                        message,
                    );
                }
            }
        }
        batch.wait(&inner.endpoint).await
    }

    async fn flush(&self) {
        self.inner.publisher.flush().await;
    }

    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<(), LifetimeError> {
        match self
            .inner
            .change_local_group(GroupAction::Add, connection_id, group)
            .await
        {
            GroupChange::NotLocal => {
                self.inner
                    .remote_group_command(GroupAction::Add, connection_id, group)
                    .await
            }
            GroupChange::LimitReached { max_groups } => Err(
                signalr_server::lifetime::group_limit_error(connection_id, group, max_groups),
            ),
            _ => Ok(()),
        }
    }

    async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError> {
        match self
            .inner
            .change_local_group(GroupAction::Remove, connection_id, group)
            .await
        {
            GroupChange::NotLocal => {
                self.inner
                    .remote_group_command(GroupAction::Remove, connection_id, group)
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn invoke_connection(
        &self,
        connection_id: &str,
        invocation_id: &str,
        message: &SerializedMessage,
    ) -> Result<Completion, LifetimeError> {
        let inner = &self.inner;
        if inner.local.connection(connection_id).is_some() {
            return inner
                .local
                .invoke_connection(connection_id, invocation_id, message)
                .await;
        }
        let (sender, answer) = oneshot::channel();
        lock(&inner.results).insert(invocation_id.to_owned(), sender);
        // Forget the pending call however this future ends (answer, error, caller gone).
        let _pending = PendingResult {
            inner,
            invocation_id,
        };
        let payload = envelope::Invocation {
            excluded_connection_ids: Vec::new(),
            messages: frames(message),
            client_result: Some(ClientResultRoute {
                invocation_id: invocation_id.to_owned(),
                return_channel: inner.channels.envelope_return_channel(&inner.server_name),
            }),
        }
        .encode();
        let receivers = inner
            .publisher
            .publish_and_wait(inner.channels.connection(connection_id), payload, true)
            .await
            .map_err(|reason| {
                backplane_error(format!(
                    "the client-result invocation could not be published: {reason}"
                ))
            })?;
        if receivers < 1 {
            // Nobody subscribes to that connection's channel: no node has it (as .NET).
            return Err(LifetimeError::ConnectionNotFound(connection_id.to_owned()));
        }
        answer
            .await
            .map_err(|_| LifetimeError::ConnectionClosed(connection_id.to_owned()))
    }

    fn health(&self) -> LifetimeHealth {
        let (connected, since) = self.inner.link.connected();
        let detail = match (
            self.inner.publisher.is_up(),
            self.inner.subscriber.is_live(),
        ) {
            (true, true) => self.inner.endpoint.clone(),
            (false, true) => format!("{}: the publishing connection is down", self.inner.endpoint),
            (true, false) => {
                format!(
                    "{}: the subscription connection is down",
                    self.inner.endpoint
                )
            }
            (false, false) => format!("{}: both connections are down", self.inner.endpoint),
        };
        LifetimeHealth::backplane("redis", connected, Some(since)).with_detail(detail)
    }

    async fn close(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        let task = lock(&inner.publisher_task).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        inner.subscriber.stop();
        tracing::info!(endpoint = %inner.endpoint, server_name = %inner.server_name, "Redis backplane closed");
    }
}

impl Inner {
    /// The invocation envelope for `message`.
    fn envelope(&self, message: &SerializedMessage, except: &[String]) -> Bytes {
        envelope::Invocation {
            excluded_connection_ids: except.to_vec(),
            messages: frames(message),
            client_result: None,
        }
        .encode()
    }

    /// Publishes a hub message; this node's own connections get it when the publish comes
    /// back from Redis, or directly if it cannot be published.
    fn publish(
        &self,
        batch: &mut PublishBatch,
        channel: Bytes,
        message: &SerializedMessage,
        except: &[String],
        local_audience: Audience,
    ) {
        let payload = self.envelope(message, except);
        self.publish_payload(batch, channel, payload, Some(local_audience), message);
    }

    /// Queues one publish of a hub message; `local_audience` is who on this node gets it
    /// directly should the publish fail (`None`: nobody here).
    fn publish_payload(
        &self,
        batch: &mut PublishBatch,
        channel: Bytes,
        payload: Bytes,
        local_audience: Option<Audience>,
        message: &SerializedMessage,
    ) {
        let has_fallback = local_audience.is_some();
        let reply = batch.wait.then(|| {
            let (reply, answer) = oneshot::channel();
            batch.answers.push((answer, has_fallback));
            reply
        });
        self.publisher.publish(Publish {
            channel,
            payload,
            is_hub_message: true,
            fallback: local_audience.map(|audience| Box::new((audience, message.clone()))),
            reply,
            barrier: false,
        });
    }

    fn publish_connection(&self, batch: &mut PublishBatch, id: &str, message: &SerializedMessage) {
        let local = self
            .local
            .connection(id)
            .map(|_| Audience::Connection(id.to_owned()));
        let payload = self.envelope(message, &[]);
        self.publish_payload(batch, self.channels.connection(id), payload, local, message);
    }

    /// Applies a group change if the connection is local, subscribing or unsubscribing the
    /// group channel as the membership requires.
    async fn change_local_group(
        &self,
        action: GroupAction,
        connection_id: &str,
        group: &str,
    ) -> GroupChange {
        let (change, ticket) = {
            let mut subscriptions = self.subscriber.lock();
            let change = match action {
                GroupAction::Add => {
                    let change = self.local.add_local_to_group(connection_id, group);
                    if matches!(change, GroupChange::Changed { .. }) {
                        subscriptions.acquire(self.channels.group(group));
                    }
                    change
                }
                GroupAction::Remove => {
                    let change = self.local.remove_local_from_group(connection_id, group);
                    if matches!(change, GroupChange::Changed { .. }) {
                        subscriptions.release(self.channels.group(group));
                    }
                    change
                }
            };
            (change, subscriptions.unlock())
        };
        self.subscriber.settled(ticket).await;
        change
    }

    /// Asks the node owning `connection_id` to change its group membership, and waits for
    /// its ack (which it sends once the group subscription is live).
    async fn remote_group_command(
        &self,
        action: GroupAction,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError> {
        // .NET reads ids back as `int`: stay within 1..=i32::MAX.
        let id = self.next_ack_id.fetch_add(1, Ordering::Relaxed) % (i32::MAX as u32) + 1;
        let (sender, ack) = oneshot::channel();
        lock(&self.acks).insert(id, sender);
        let _pending = PendingAck { inner: self, id };
        let command = GroupCommand {
            id,
            server_name: self.server_name.clone(),
            action,
            group: group.to_owned(),
            connection_id: connection_id.to_owned(),
        };
        let verb = match action {
            GroupAction::Add => "adding connection",
            GroupAction::Remove => "removing connection",
        };
        self.publisher
            .publish_and_wait(self.channels.internal_groups(), command.encode(), false)
            .await
            .map_err(|reason| {
                backplane_error(format!(
                    "{verb} '{connection_id}' (group '{group}'): the group command could not be published: {reason}"
                ))
            })?;
        match tokio::time::timeout(self.ack_timeout, ack).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(LifetimeError::Timeout(format!(
                "no server acknowledged {verb} '{connection_id}' (group '{group}') within {:?}; \
                 the connection may not exist",
                self.ack_timeout
            ))),
        }
    }

    /// Applies a group command from another node to a local connection, then acks it.
    async fn apply_group_command(&self, command: GroupCommand) {
        let change = self
            .change_local_group(command.action, &command.connection_id, &command.group)
            .await;
        if change == GroupChange::NotLocal {
            // Disconnected since the command arrived: no ack, as on .NET.
            return;
        }
        if let GroupChange::LimitReached { max_groups } = change {
            // The ack carries no result on this wire (as on .NET), so the sender cannot be
            // told; acking spares it the ack timeout. Membership is unchanged.
            tracing::warn!(
                connection_id = %command.connection_id,
                group = %command.group,
                max_groups,
                from = %command.server_name,
                "a group add from another node was refused: the connection is in the most groups allowed"
            );
        }
        self.publisher.publish(Publish::control(
            self.channels.ack(&command.server_name),
            envelope::Ack { id: command.id }.encode(),
        ));
    }

    // -----------------------------------------------------------------------------------
    // Receiving (on the hand-over task: never wait here)
    // -----------------------------------------------------------------------------------

    fn on_message(self: &Arc<Self>, channel: &[u8], payload: Bytes) {
        let kind = self.channels.classify(channel);
        if kind == ChannelKind::Unknown {
            return;
        }
        self.counters.messages_received(1);
        let result = match kind {
            ChannelKind::All => self.deliver(&payload, |except| {
                if except.is_empty() {
                    Audience::All
                } else {
                    Audience::AllExcept(except)
                }
            }),
            ChannelKind::Group(group) => self.deliver(&payload, |except| {
                if except.is_empty() {
                    Audience::Group(group.to_owned())
                } else {
                    Audience::GroupExcept(group.to_owned(), except)
                }
            }),
            ChannelKind::User(user) => self.deliver(&payload, |_| Audience::User(user.to_owned())),
            ChannelKind::Connection(id) => self.on_connection_message(id, &payload),
            ChannelKind::InternalGroups => self.on_group_command(&payload),
            ChannelKind::Ack(server) if server == self.server_name => self.on_ack(&payload),
            ChannelKind::Return(server) if server == self.server_name => {
                self.on_completion(&payload)
            }
            _ => Ok(()),
        };
        if let Err(reason) = result {
            self.counters.decode_errors(1);
            tracing::warn!(
                channel = %String::from_utf8_lossy(channel),
                %reason,
                payload_len = payload.len(),
                "Redis backplane: skipped a payload it could not use"
            );
        }
    }

    fn deliver(
        &self,
        payload: &Bytes,
        audience: impl FnOnce(Vec<String>) -> Audience,
    ) -> Result<(), String> {
        let invocation = envelope::Invocation::decode(payload).map_err(|e| e.to_string())?;
        let message = serialized(&invocation)?;
        self.local
            .send_local(&audience(invocation.excluded_connection_ids), &message);
        Ok(())
    }

    fn on_connection_message(self: &Arc<Self>, id: &str, payload: &Bytes) -> Result<(), String> {
        let invocation = envelope::Invocation::decode(payload).map_err(|e| e.to_string())?;
        let message = serialized(&invocation)?;
        let Some(connection) = self.local.connection(id) else {
            return Ok(());
        };
        let Some(route) = invocation.client_result else {
            let _ = connection.send(&message);
            return Ok(());
        };
        // A client result asked by another node: forward the invocation, and send the
        // client's Completion (or a disconnect error) back to the origin's return channel.
        let return_channel = self.channels.prefixed(&route.return_channel);
        let invocation_id = route.invocation_id;
        match connection.invoke(invocation_id.clone(), &message) {
            Ok(answer) => {
                let inner = Arc::downgrade(self);
                tokio::spawn(async move {
                    // The answer, or the connection ending first (then no answer can come).
                    let answered = tokio::select! {
                        biased;
                        answer = answer => answer.ok(),
                        () = connection.closed() => None,
                    };
                    let completion = answered.unwrap_or_else(|| {
                        connection.cancel_invocation(&invocation_id);
                        Completion {
                            headers: Vec::new(),
                            invocation_id,
                            result: CompletionResult::Error(CONNECTION_DISCONNECTED.to_owned()),
                        }
                    });
                    if let Some(inner) = inner.upgrade() {
                        inner.return_completion(&connection, return_channel, completion);
                    }
                });
            }
            Err(_) => self.return_completion(
                &connection,
                return_channel,
                Completion {
                    headers: Vec::new(),
                    invocation_id,
                    result: CompletionResult::Error(CONNECTION_DISCONNECTED.to_owned()),
                },
            ),
        }
        Ok(())
    }

    /// Publishes a Completion, framed in the answering connection's protocol, as .NET does.
    fn return_completion(
        &self,
        connection: &HubConnection,
        channel: Bytes,
        completion: Completion,
    ) {
        let protocol = connection.protocol();
        let frame = match protocol.encode_message(&HubMessage::Completion(completion)) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(%error, "Redis backplane: could not encode a client result");
                return;
            }
        };
        let payload = envelope::ClientResultCompletion {
            protocol: protocol.name().to_owned(),
            completion: frame,
        }
        .encode();
        self.publisher.publish(Publish::control(channel, payload));
    }

    fn on_group_command(&self, payload: &Bytes) -> Result<(), String> {
        let command = GroupCommand::decode(payload).map_err(|e| e.to_string())?;
        if self.local.connection(&command.connection_id).is_some() {
            let _ = self.group_commands.send(command);
        }
        Ok(())
    }

    fn on_ack(&self, payload: &Bytes) -> Result<(), String> {
        let ack = envelope::Ack::decode(payload).map_err(|e| e.to_string())?;
        if let Some(waiting) = lock(&self.acks).remove(&ack.id) {
            let _ = waiting.send(());
        }
        Ok(())
    }

    fn on_completion(&self, payload: &Bytes) -> Result<(), String> {
        let returned =
            envelope::ClientResultCompletion::decode(payload).map_err(|e| e.to_string())?;
        let protocol = Protocol::from_name(&returned.protocol).ok_or_else(|| {
            format!(
                "client result in protocol '{}', which this server does not speak",
                returned.protocol
            )
        })?;
        let mut buf = BytesMut::from(&returned.completion[..]);
        let completion = match protocol.parse_message(&mut buf, usize::MAX) {
            Ok(Some(HubMessage::Completion(completion))) => completion,
            Ok(Some(other)) => {
                return Err(format!("client result holds a {other:?}, not a Completion"));
            }
            Ok(None) => return Err("client result frame is incomplete".to_owned()),
            Err(error) => return Err(format!("client result frame: {error}")),
        };
        if let Some(waiting) = lock(&self.results).remove(&completion.invocation_id) {
            let _ = waiting.send(completion);
        }
        Ok(())
    }
}

/// Bytes of received messages waiting for [`hand_over`] above which more are dropped
/// (counted, logged): a node that cannot keep up loses messages instead of memory without
/// bound. Redis closes a subscriber at half of this by default.
const MAX_RECEIVED_BACKLOG_BYTES: usize = 64 * 1024 * 1024;

/// Messages read from the subscription connection, on the Redis connections' own thread,
/// waiting for [`hand_over`] on the application's runtime. Handing them over there rather
/// than on the reading thread keeps the wake-ups of the receiving connections' tasks local
/// to the runtime (a broadcast wakes every connection of the node).
struct Received {
    queue: mpsc::UnboundedSender<(Bytes, Bytes)>,
    /// Channel and payload bytes in `queue`.
    bytes: AtomicUsize,
    /// Dropping messages since the backlog went over its bound (logged once per episode).
    overflowing: AtomicBool,
    counters: Arc<Counters>,
}

impl Received {
    /// The push callback of the subscription connection: never waits.
    fn push(&self, push: PushInfo) {
        if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
            return;
        }
        let mut data = push.data.into_iter();
        let (Some(channel), Some(payload)) = (
            data.next().and_then(into_bytes),
            data.next().and_then(into_bytes),
        ) else {
            self.counters.decode_errors(1);
            tracing::warn!("Redis backplane: a pub/sub message without channel or payload");
            return;
        };
        let size = channel.len() + payload.len();
        if self.bytes.load(Ordering::Relaxed) + size > MAX_RECEIVED_BACKLOG_BYTES {
            self.counters.dropped_messages(1);
            if !self.overflowing.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    limit = MAX_RECEIVED_BACKLOG_BYTES,
                    "Redis backplane: this node is not keeping up with the messages it receives; \
                     dropping them until its backlog has shrunk"
                );
            }
            return;
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        // Fails only once the manager is gone.
        let _ = self.queue.send((channel, payload));
    }
}

/// Hands received messages to this node's connections, in arrival order, on the
/// application's runtime.
async fn hand_over(
    inner: Weak<Inner>,
    received: Arc<Received>,
    mut queue: mpsc::UnboundedReceiver<(Bytes, Bytes)>,
    shutdown: CancellationToken,
) {
    const BATCH: usize = 64;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            count = queue.recv_many(&mut batch, BATCH) => if count == 0 {
                return;
            },
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // Sends to a group or to everyone that arrive together reach each member in one
        // push (nothing in here waits).
        let sends = signalr_server::lifetime::batch_sends();
        for (channel, payload) in batch.drain(..) {
            received
                .bytes
                .fetch_sub(channel.len() + payload.len(), Ordering::Relaxed);
            inner.on_message(&channel, payload);
        }
        drop(sends);
        if received.overflowing.load(Ordering::Relaxed)
            && received.bytes.load(Ordering::Relaxed) < MAX_RECEIVED_BACKLOG_BYTES / 2
        {
            received.overflowing.store(false, Ordering::Relaxed);
            tracing::warn!(
                "Redis backplane: this node has caught up with the messages it receives"
            );
        }
    }
}

fn into_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::from(bytes)),
        Value::SimpleString(text) => Some(Bytes::from(text)),
        _ => None,
    }
}

/// Applies group commands for local connections, one at a time, in arrival order.
async fn apply_group_commands(
    inner: Weak<Inner>,
    mut commands: mpsc::UnboundedReceiver<GroupCommand>,
) {
    while let Some(command) = commands.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.apply_group_command(command).await;
    }
}

/// The publishes of one `send`, all queued before any is awaited (so they share a
/// pipeline).
struct PublishBatch {
    /// Whether to wait for Redis's answers ([`Publisher::should_wait`]).
    wait: bool,
    /// Redis's answer for each publish, and whether a failure was made up for locally.
    answers: Vec<(oneshot::Receiver<Result<i64, String>>, bool)>,
}

impl PublishBatch {
    fn new(wait: bool) -> PublishBatch {
        PublishBatch {
            wait,
            answers: Vec::new(),
        }
    }

    /// When waiting, waits until Redis answered every publish. Either way a message sent
    /// after this returns is published after this one (one FIFO queue, one connection).
    /// A failed publish whose audience this node could serve
    /// directly (everyone, a group, a user) was delivered locally and counted as lost for
    /// other nodes; only a message that reached nobody (a connection elsewhere) is an error.
    async fn wait(self, endpoint: &str) -> Result<(), LifetimeError> {
        let mut unreached = None;
        for (answer, served_locally) in self.answers {
            let result = answer
                .await
                .unwrap_or_else(|_| Err("the backplane is closed".to_owned()));
            if let Err(reason) = result
                && !served_locally
            {
                unreached = Some(reason);
            }
        }
        match unreached {
            None => Ok(()),
            Some(reason) => Err(backplane_error(format!(
                "the message could not be published to Redis at {endpoint}: {reason}"
            ))),
        }
    }
}

/// The frames of a message, named as the envelope names them.
fn frames(message: &SerializedMessage) -> Vec<(String, Bytes)> {
    message
        .frames()
        .map(|(protocol, frame)| (protocol.name().to_owned(), frame.clone()))
        .collect()
}

/// The message in an envelope, in every protocol this server speaks that it carries.
fn serialized(invocation: &envelope::Invocation) -> Result<SerializedMessage, String> {
    let message =
        SerializedMessage::from_frames(invocation.messages.iter().filter_map(|(name, frame)| {
            Protocol::from_name(name).map(|protocol| (protocol, frame.clone()))
        }));
    if message.frames().next().is_none() {
        let names: Vec<&str> = invocation
            .messages
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        return Err(format!(
            "the invocation carries no protocol this server speaks (it has {names:?})"
        ));
    }
    Ok(message)
}

fn backplane_error(message: String) -> LifetimeError {
    LifetimeError::Backplane(message.into())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these maps are held, so a poisoned lock still guards valid data.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a pending ack however the waiting future ends.
struct PendingAck<'a> {
    inner: &'a Inner,
    id: u32,
}

impl Drop for PendingAck<'_> {
    fn drop(&mut self) {
        lock(&self.inner.acks).remove(&self.id);
    }
}

/// Removes a pending client result however the waiting future ends.
struct PendingResult<'a> {
    inner: &'a Inner,
    invocation_id: &'a str,
}

impl Drop for PendingResult<'_> {
    fn drop(&mut self) {
        lock(&self.inner.results).remove(self.invocation_id);
    }
}
