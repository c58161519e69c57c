//! Connections to Redis, and the node's publishing side.
//!
//! [`Connector`] opens connections: a RESP3 multiplexed connection for classic pub/sub, or a
//! cluster connection for sharded pub/sub, with `TCP_NODELAY` on and pushes (pub/sub
//! messages, disconnect notices) handed to a callback on the connection's read task.
//!
//! [`Publisher`] is a queue drained by one task that sends everything queued as one
//! pipeline, without waiting for the answers to the pipelines before it (a few at a time),
//! so publishing never costs a round trip per message, a publish does not wait behind an
//! earlier one's round trip, and publish order is kept. It owns its connection and its
//! reconnection; while Redis is away it fails queued publishes at once (local fallback,
//! counted) instead of letting them wait.
//!
//! [`Conn`] also carries the subscription commands that `subscription` sends.
//!
//! The subscription connection reads on a thread of its own ([`ReaderThread`]): a node busy
//! writing to thousands of sockets gives a task of the main runtime a turn only after every
//! other ready task, and meanwhile Redis buffers the node's pushes until its pub/sub
//! output-buffer limit (32 MB by default) makes it close the connection, losing whatever it
//! held. On its own thread the connection is read as soon as data arrives; the push callback
//! it is given queues the backlog, if any, on the node's side (see `manager`).
//!
//! This module does not decode payloads or know about hub connections; the callbacks and
//! fallbacks it is given do.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, PushInfo, PushKind, RedisError};
use signalr_server::{Audience, MemoryLifetimeManager, SerializedMessage};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::RedisConfig;
use crate::stats::{Counters, LinkState};
use crate::subscription::Confirmed;

/// Called on the connection's read task for every push; must not block.
pub(crate) type PushHandler = Arc<dyn Fn(PushInfo) + Send + Sync>;

/// Most publishes in one pipeline.
const PUBLISH_BATCH: usize = 1024;

/// Most pipelines sent and not yet answered. More than one, so a publish does not wait for
/// the round trip of the pipeline before it; a few, so that under load publishes still
/// gather into big pipelines rather than one per message.
const PIPELINES_IN_FLIGHT: usize = 4;

/// Bytes of publishes queued or awaiting Redis's answer above which senders wait for their
/// own publishes to be answered. Below it a send returns once its publish is queued, so a
/// loop of sends is not held to one Redis round trip each; above it senders are slowed to
/// Redis's pace instead of growing the queue.
const MAX_UNANSWERED_BYTES: usize = 1024 * 1024;

/// A current-thread runtime on a thread of its own that runs the subscription connection's
/// read task (see the module documentation). Dropping it stops the thread, which closes the
/// connections it reads.
struct ReaderThread {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl ReaderThread {
    fn start() -> std::io::Result<ReaderThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("redis-subscriber".to_owned())
            .spawn(move || {
                // Runs the spawned connection tasks until the owner is dropped; dropping
                // the runtime here (outside any async context) ends them.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(ReaderThread {
            handle,
            stop: Some(stop),
        })
    }
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Opens connections to the configured Redis.
pub(crate) struct Connector {
    info: ConnectionInfo,
    endpoint: String,
    sharded: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
    reconnect_delays: (Duration, Duration),
    /// Numbers connections, so a disconnect notice from a connection that was already
    /// replaced is recognised as stale.
    generation: AtomicU64,
    /// Where connections with pushes (the subscription) are read; `None` if the thread could
    /// not be started, then they are read on the caller's runtime.
    reader: Option<ReaderThread>,
}

/// An open connection; cheap to clone (clones share the socket).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Connector {
    pub(crate) fn new(info: ConnectionInfo, config: &RedisConfig) -> Connector {
        Connector {
            endpoint: info.addr().to_string(),
            info,
            sharded: config.is_sharded(),
            connect_timeout: config.connect_timeout_value(),
            response_timeout: config.response_timeout_value(),
            reconnect_delays: config.reconnect_delays(),
            generation: AtomicU64::new(0),
            reader: ReaderThread::start()
                .inspect_err(|error| {
                    tracing::warn!(%error, "Redis backplane: no thread of its own for the subscription connection; it is read on the application's runtime");
                })
                .ok(),
        }
    }

    /// `host:port` of the configured Redis, for logs and errors.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn is_sharded(&self) -> bool {
        self.sharded
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Opens one connection. Pushes go to `on_push`; when the connection closes,
    /// `on_disconnect` gets its generation number (returned with the connection).
    pub(crate) async fn connect(
        &self,
        on_push: Option<PushHandler>,
        on_disconnect: mpsc::UnboundedSender<u64>,
    ) -> Result<(Conn, u64), RedisError> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        // The subscription connection (the one with pushes) times its commands itself,
        // allowing for a backlog of pushes ahead of an answer (see `subscription`).
        let with_pushes = on_push.is_some();
        let push = move |info: PushInfo| {
            if info.kind == PushKind::Disconnection {
                let _ = on_disconnect.send(generation);
            } else if let Some(handler) = &on_push {
                handler(info);
            }
            Ok::<(), ()>(())
        };
        let (info, sharded) = (self.info.clone(), self.sharded);
        let (connect_timeout, response_timeout) = (self.connect_timeout, self.response_timeout);
        let open = async move {
            if sharded {
                let client = ClusterClientBuilder::new(vec![info])
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .tcp_settings(TcpSettings::default().set_nodelay(true))
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    .push_sender(push)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            } else {
                let client = Client::open(info)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout((!with_pushes).then_some(response_timeout))
                    .set_push_sender(push);
                Ok(Conn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
        };
        // The client's own timeouts cover each step; this bounds the whole handshake.
        let bounded = async move {
            match tokio::time::timeout(connect_timeout + Duration::from_millis(500), open).await {
                Ok(result) => result,
                Err(_) => Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting took longer than {connect_timeout:?}"),
                ))),
            }
        };
        let opened = match (&self.reader, with_pushes) {
            // The connection's read task is spawned where it is opened.
            (Some(reader), true) => reader.handle.spawn(bounded).await.unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::other(
                    "the subscription connection's thread has stopped",
                )))
            }),
            _ => bounded.await,
        };
        opened.map(|conn| (conn, generation))
    }

    /// Connects, retrying with exponential backoff until it works or `shutdown` fires.
    pub(crate) async fn connect_until_up(
        &self,
        on_push: Option<PushHandler>,
        on_disconnect: &mpsc::UnboundedSender<u64>,
        shutdown: &CancellationToken,
        role: &'static str,
    ) -> Option<(Conn, u64)> {
        let (min, max) = self.reconnect_delays;
        let mut delay = min;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.connect(on_push.clone(), on_disconnect.clone()).await {
                Ok(connected) => return Some(connected),
                Err(error) => {
                    // One line every 32 attempts keeps a long outage visible without flooding.
                    if attempts % 32 == 1 {
                        tracing::warn!(endpoint = %self.endpoint, role, attempts, %error, "Redis backplane: still reconnecting");
                    } else {
                        tracing::debug!(endpoint = %self.endpoint, role, attempts, %error, "Redis backplane: reconnect attempt failed");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(max);
        }
    }
}

impl Conn {
    /// Publishes every `(channel, payload)`, all in flight at once; one result per item
    /// (the receiver count Redis reports, or the error). Takes a clone of the connection,
    /// so several of these can wait for their answers side by side.
    async fn publish(self, batch: Vec<(Bytes, Bytes)>) -> Vec<Result<i64, RedisError>> {
        match self {
            Conn::Single(mut conn) => {
                let mut pipe = redis::pipe();
                // Redis writes pending output to the client queued last first. A PUBLISH
                // queues the subscribers, then the publisher's answer, so the answer would go
                // out first and every subscriber would wait one more write for its message
                // (about 20 us p50 on the benchmark machine; BENCHMARKS.md, W3). A PING first
                // queues this connection before any subscriber: messages first, answers after.
                pipe.cmd("PING").ignore();
                for (channel, payload) in &batch {
                    pipe.cmd("PUBLISH").arg(&channel[..]).arg(&payload[..]);
                }
                match pipe.query_async::<Vec<i64>>(&mut conn).await {
                    Ok(counts) if counts.len() == batch.len() => {
                        counts.into_iter().map(Ok).collect()
                    }
                    Ok(counts) => {
                        let error = RedisError::from((
                            redis::ErrorKind::UnexpectedReturnType,
                            "PUBLISH pipeline answered the wrong number of replies",
                            format!("{} for {}", counts.len(), batch.len()),
                        ));
                        batch.iter().map(|_| Err(error.clone())).collect()
                    }
                    Err(error) => batch.iter().map(|_| Err(error.clone())).collect(),
                }
            }
            Conn::Cluster(conn) => {
                // Each shard channel routes to its own node: one request per item, all
                // queued before any reply is awaited.
                let requests = batch.iter().map(|(channel, payload)| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("SPUBLISH")
                            .arg(&channel[..])
                            .arg(&payload[..])
                            .query_async::<i64>(&mut conn)
                            .await
                    }
                });
                futures::future::join_all(requests).await
            }
        }
    }

    /// One SUBSCRIBE of `channels` (SSUBSCRIBE each, sharded); `subscription` keeps them to
    /// a chunk.
    pub(crate) async fn subscribe(&mut self, channels: &[Bytes]) -> Result<(), RedisError> {
        match self {
            Conn::Single(conn) => {
                let names: Vec<&[u8]> = channels.iter().map(|c| &c[..]).collect();
                conn.subscribe(names).await
            }
            Conn::Cluster(conn) => {
                // SSUBSCRIBE of several channels needs them in one slot; one at a time.
                let requests = channels.iter().map(|channel| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(&channel[..]).await }
                });
                futures::future::join_all(requests)
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }

    pub(crate) async fn unsubscribe(&mut self, channels: &[Bytes]) -> Result<(), RedisError> {
        match self {
            Conn::Single(conn) => {
                let names: Vec<&[u8]> = channels.iter().map(|c| &c[..]).collect();
                conn.unsubscribe(names).await
            }
            Conn::Cluster(conn) => {
                for channel in channels {
                    conn.sunsubscribe(&channel[..]).await?;
                }
                Ok(())
            }
        }
    }

    pub(crate) async fn ping(&mut self) -> Result<(), RedisError> {
        match self {
            Conn::Single(conn) => redis::cmd("PING").query_async::<()>(conn).await,
            Conn::Cluster(conn) => redis::cmd("PING").query_async::<()>(conn).await,
        }
    }
}

/// Whether an error means the connection itself is gone (as opposed to one bad command).
pub(crate) fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

// ---------------------------------------------------------------------------------------
// Publishing
// ---------------------------------------------------------------------------------------

/// What to do locally when a hub message could not be published: deliver it to this
/// node's connections of the audience directly, since its echo from Redis will not come.
pub(crate) type Fallback = Box<(Audience, SerializedMessage)>;

/// One payload to publish.
pub(crate) struct Publish {
    pub(crate) channel: Bytes,
    pub(crate) payload: Bytes,
    /// A hub message (counted as lost when the publish fails), as opposed to a group
    /// command, ack or client result.
    pub(crate) is_hub_message: bool,
    /// Local delivery when the message will not come back from Redis.
    pub(crate) fallback: Option<Fallback>,
    /// Told the receiver count, or why the publish failed, for callers that wait.
    pub(crate) reply: Option<oneshot::Sender<Result<i64, String>>>,
    /// Not a publish: a marker answered once everything queued before it is answered
    /// ([`Publisher::flush`]).
    pub(crate) barrier: bool,
}

impl Publish {
    /// What the publish weighs against [`MAX_UNANSWERED_BYTES`]: never 0 for a publish, so
    /// a flood of empty payloads is bounded too; 0 for a barrier, which Redis never sees.
    fn weight(&self) -> usize {
        if self.barrier {
            return 0;
        }
        self.channel.len() + self.payload.len() + 1
    }

    pub(crate) fn control(channel: Bytes, payload: Bytes) -> Publish {
        Publish {
            channel,
            payload,
            is_hub_message: false,
            fallback: None,
            reply: None,
            barrier: false,
        }
    }
}

/// What the publishing side shares between its handle and its task.
pub(crate) struct PublishShared {
    pub(crate) local: Arc<MemoryLifetimeManager>,
    pub(crate) counters: Arc<Counters>,
    /// Whether the publishing connection is up, and whether the subscription connection
    /// is live (see [`Subscriber::is_live`]): when it is not, this node's own publishes
    /// will not come back to it.
    pub(crate) link: Arc<LinkState>,
    /// Channels already back while the subscription is being rebuilt.
    confirmed: Arc<Confirmed>,
    /// Bytes of the publishes queued or awaiting Redis's answer.
    unanswered_bytes: AtomicUsize,
}

impl PublishShared {
    pub(crate) fn new(
        local: Arc<MemoryLifetimeManager>,
        counters: Arc<Counters>,
        link: Arc<LinkState>,
        confirmed: Arc<Confirmed>,
    ) -> PublishShared {
        PublishShared {
            local,
            counters,
            link,
            confirmed,
            unanswered_bytes: AtomicUsize::new(0),
        }
    }

    fn deliver_fallback(&self, fallback: Option<Fallback>) {
        if let Some(fallback) = fallback {
            let (audience, message) = *fallback;
            self.local.send_local(&audience, &message);
        }
    }

    fn answered(&self, item: &Publish) {
        self.unanswered_bytes
            .fetch_sub(item.weight(), Ordering::AcqRel);
    }

    fn succeeded(&self, item: Publish, receivers: i64) {
        self.answered(&item);
        if item.barrier {
            if let Some(reply) = item.reply {
                let _ = reply.send(Ok(0));
            }
            return;
        }
        self.counters.publishes(1);
        if !self.link.subscribed() && !self.confirmed.contains(&item.channel) {
            // Published, but this node is not subscribed to it right now: its own
            // connections would miss it.
            self.deliver_fallback(item.fallback);
        }
        if let Some(reply) = item.reply {
            let _ = reply.send(Ok(receivers));
        }
    }

    /// A publish failed: count it, serve local connections when Redis surely did not take
    /// it, tell a waiting caller.
    fn failed(&self, item: Publish, reason: &str, outcome: Failure) {
        self.answered(&item);
        if item.barrier {
            if let Some(reply) = item.reply {
                let _ = reply.send(Err(reason.to_owned()));
            }
            return;
        }
        self.counters.publish_errors(1);
        if item.is_hub_message {
            self.counters.lost_messages(1);
        }
        match outcome {
            Failure::NotPublished => self.deliver_fallback(item.fallback),
            // Redis may have published it and may still deliver it to this node: serving
            // the local audience too could deliver it twice. At most once, as everywhere
            // else on the backplane.
            Failure::Unknown => {}
        }
        if let Some(reply) = item.reply {
            let _ = reply.send(Err(reason.to_owned()));
        }
    }
}

/// How a publish failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Redis did not take it, as far as this node can tell: no connection, the backplane
    /// closed, an error reply, or the connection broke (almost always because Redis went
    /// away, taking the subscriptions that would have delivered it with it).
    NotPublished,
    /// Sent on a working connection, but the answer did not come in time: Redis may
    /// well have published it.
    Unknown,
}

impl Failure {
    fn of(error: &RedisError) -> Failure {
        if error.is_timeout() {
            Failure::Unknown
        } else {
            Failure::NotPublished
        }
    }
}

/// The handle to the publishing task.
#[derive(Clone)]
pub(crate) struct Publisher {
    queue: mpsc::UnboundedSender<Publish>,
    shared: Arc<PublishShared>,
}

impl Publisher {
    /// Starts the publishing task on an open connection.
    pub(crate) fn start(
        connector: Arc<Connector>,
        connection: (Conn, u64),
        disconnects: (mpsc::UnboundedSender<u64>, mpsc::UnboundedReceiver<u64>),
        shared: Arc<PublishShared>,
        shutdown: CancellationToken,
    ) -> (Publisher, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let task = PublishTask {
            connector,
            connection: Some(connection),
            queue: receiver,
            disconnect_tx: disconnects.0,
            disconnect_rx: disconnects.1,
            shared: shared.clone(),
            shutdown,
            outage: None,
            timing_out_since: None,
            timeouts_logged: None,
        };
        let handle = tokio::spawn(task.run());
        (Publisher { queue, shared }, handle)
    }

    /// Queues a publish; never waits. The queue is unbounded on purpose: a bound would
    /// have to drop or block, and the task drains it in whole batches, so it only grows
    /// while Redis is slower than the senders.
    pub(crate) fn publish(&self, item: Publish) {
        self.shared
            .unanswered_bytes
            .fetch_add(item.weight(), Ordering::AcqRel);
        if let Err(mpsc::error::SendError(item)) = self.queue.send(item) {
            self.shared
                .failed(item, "the backplane is closed", Failure::NotPublished);
        }
    }

    /// Publishes and waits for Redis's receiver count.
    pub(crate) async fn publish_and_wait(
        &self,
        channel: Bytes,
        payload: Bytes,
        is_hub_message: bool,
    ) -> Result<i64, String> {
        let (reply, answer) = oneshot::channel();
        self.publish(Publish {
            channel,
            payload,
            is_hub_message,
            fallback: None,
            reply: Some(reply),
            barrier: false,
        });
        answer
            .await
            .unwrap_or_else(|_| Err("the backplane is closed".to_owned()))
    }

    /// Whether a sender should wait for Redis's answer to what it publishes now: when the
    /// publishing connection is down (the answer, an error, comes at once and the caller
    /// learns that its message reached nobody), or when more than [`MAX_UNANSWERED_BYTES`]
    /// are queued (backpressure). Otherwise sends return once queued; the queue is FIFO
    /// over one connection, so messages still reach Redis in the order they were sent, and
    /// a publish that fails later is counted as lost and logged, never silently dropped.
    pub(crate) fn should_wait(&self) -> bool {
        !self.shared.link.publishing()
            || self.shared.unanswered_bytes.load(Ordering::Relaxed) > MAX_UNANSWERED_BYTES
    }

    /// Waits until everything queued before the call is answered by Redis (published or
    /// failed). Returns at once when nothing is outstanding.
    pub(crate) async fn flush(&self) {
        if self.shared.unanswered_bytes.load(Ordering::Acquire) == 0 {
            return;
        }
        let (reply, answer) = oneshot::channel();
        self.publish(Publish {
            channel: Bytes::new(),
            payload: Bytes::new(),
            is_hub_message: false,
            fallback: None,
            reply: Some(reply),
            barrier: true,
        });
        let _ = answer.await;
    }

    /// Whether the publishing connection is up.
    pub(crate) fn is_up(&self) -> bool {
        self.shared.link.publishing()
    }
}

struct Outage {
    since: Instant,
    failed: u64,
}

type Reconnecting = Pin<Box<dyn Future<Output = Option<(Conn, u64)>> + Send>>;

struct PublishTask {
    connector: Arc<Connector>,
    /// The connection and its generation; `None` while Redis is away.
    connection: Option<(Conn, u64)>,
    queue: mpsc::UnboundedReceiver<Publish>,
    disconnect_tx: mpsc::UnboundedSender<u64>,
    disconnect_rx: mpsc::UnboundedReceiver<u64>,
    shared: Arc<PublishShared>,
    shutdown: CancellationToken,
    outage: Option<Outage>,
    /// Since when publishes have been timing out with no answer in between.
    timing_out_since: Option<Instant>,
    /// When timeouts were last logged (at most one line a second).
    timeouts_logged: Option<Instant>,
}

/// A pipeline sent to Redis (or failed before it could be), waiting for its answers.
type InFlight = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// The answers to one pipeline, with what it carried.
struct Answered {
    items: Vec<Publish>,
    /// Flush markers queued among `items`, answered once the pipeline is.
    barriers: Vec<Publish>,
    /// The connection it went out on; `None` when it was not sent (Redis unavailable, or
    /// only barriers).
    generation: Option<u64>,
    results: Vec<Result<i64, RedisError>>,
}

impl PublishTask {
    async fn run(mut self) {
        let mut reconnecting: Option<Reconnecting> = None;
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        loop {
            tokio::select! {
                biased;
                Some(generation) = self.disconnect_rx.recv() => {
                    if self.connection.as_ref().is_some_and(|(_, current)| *current == generation)
                        && !self.connector.is_sharded()
                    {
                        reconnecting = Some(self.connection_lost("the connection was closed"));
                    }
                }
                Some(connected) = async { reconnecting.as_mut().expect("guarded").await }, if reconnecting.is_some() => {
                    reconnecting = None;
                    self.connection_restored(connected);
                }
                Some(answered) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(lost) = self.answered(answered) {
                        reconnecting = Some(lost);
                    }
                }
                item = self.queue.recv(), if in_flight.len() < PIPELINES_IN_FLIGHT => {
                    let Some(item) = item else { break };
                    let pipeline = self.send_batch(item).await;
                    in_flight.push_back(pipeline);
                }
                () = self.shutdown.cancelled() => {
                    // Flush what is queued (bounded by the response timeout), then stop.
                    if let Ok(item) = self.queue.try_recv() {
                        let pipeline = self.send_batch(item).await;
                        in_flight.push_back(pipeline);
                    }
                    while let Some(answered) = in_flight.next().await {
                        self.answered(answered);
                    }
                    break;
                }
            }
        }
        // The queue closed: settle what is still in flight.
        while let Some(answered) = in_flight.next().await {
            self.answered(answered);
        }
        self.queue.close();
        while let Ok(item) = self.queue.try_recv() {
            self.shared
                .failed(item, "the backplane is closed", Failure::NotPublished);
        }
    }

    /// Sends `first` and whatever else is queued (up to [`PUBLISH_BATCH`]) as one pipeline,
    /// without waiting for Redis's answers: they come from the returned future. By the time
    /// this returns the pipeline is queued on the connection (or first in line for room in
    /// its queue), so pipelines reach Redis in the order they were sent, whether or not
    /// earlier ones have been answered.
    async fn send_batch(&mut self, first: Publish) -> InFlight {
        let mut items = vec![first];
        while items.len() < PUBLISH_BATCH {
            match self.queue.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        // Barriers are answered with the pipeline they sit in: pipelines are answered in
        // the order they were sent, so everything before a barrier is answered by then.
        let (barriers, items): (Vec<Publish>, Vec<Publish>) =
            items.into_iter().partition(|item| item.barrier);
        let Some((conn, generation)) = self.connection.as_ref().filter(|_| !items.is_empty())
        else {
            // Nothing to send, or nowhere to send it: settled in turn like any pipeline.
            return Box::pin(std::future::ready(Answered {
                items,
                barriers,
                generation: None,
                results: Vec::new(),
            }));
        };
        let generation = Some(*generation);
        let batch: Vec<(Bytes, Bytes)> = items
            .iter()
            .map(|item| (item.channel.clone(), item.payload.clone()))
            .collect();
        let publishing = conn.clone().publish(batch);
        let mut pipeline: InFlight = Box::pin(async move {
            Answered {
                results: publishing.await,
                items,
                barriers,
                generation,
            }
        });
        // The first poll hands the pipeline to the connection (its queue is first come,
        // first served when full), which fixes its place in the order.
        if let Poll::Ready(answered) = futures::poll!(pipeline.as_mut()) {
            pipeline = Box::pin(std::future::ready(answered));
        }
        pipeline
    }

    /// Settles a pipeline's publishes and barriers. Returns a reconnection to start when
    /// the connection it went out on turned out to be gone (and is still the current one).
    fn answered(&mut self, answered: Answered) -> Option<Reconnecting> {
        let Answered {
            items,
            barriers,
            generation,
            results,
        } = answered;
        let lost = match generation {
            Some(generation) => self.settle(items, results, generation),
            None => {
                self.fail_all(items, "Redis is unavailable");
                None
            }
        };
        for barrier in barriers {
            self.shared.succeeded(barrier, 0);
        }
        lost
    }

    /// Counts and answers the publishes of one pipeline that went out on connection
    /// `generation`.
    fn settle(
        &mut self,
        items: Vec<Publish>,
        results: Vec<Result<i64, RedisError>>,
        generation: u64,
    ) -> Option<Reconnecting> {
        let mut lost_connection = None;
        let mut timed_out = 0usize;
        for (item, result) in items.into_iter().zip(results) {
            match result {
                Ok(receivers) => {
                    self.timing_out_since = None;
                    self.shared.succeeded(item, receivers);
                }
                Err(error) => {
                    if self.is_connection_lost(&error) {
                        lost_connection.get_or_insert_with(|| error.to_string());
                    } else if error.is_timeout() {
                        timed_out += 1;
                    } else {
                        tracing::warn!(%error, "Redis backplane: publish failed");
                    }
                    self.fail_one(item, &error.to_string(), Failure::of(&error));
                }
            }
        }
        // Pipelines sent before a connection was replaced answer with its errors after it
        // was; only the current connection is rebuilt.
        let current = self
            .connection
            .as_ref()
            .is_some_and(|(_, current)| *current == generation);
        if let Some(reason) = lost_connection.as_ref().filter(|_| current) {
            tracing::warn!(
                reason,
                "Redis backplane: publishing failed; the connection is rebuilt"
            );
        } else if timed_out > 0
            && self
                .timeouts_logged
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.timeouts_logged = Some(Instant::now());
            tracing::warn!(
                timed_out,
                waited = ?self.connector.response_timeout,
                "Redis backplane: publishes timed out; their messages may or may not have \
                 been delivered and are counted as lost"
            );
        }
        match lost_connection {
            // The cluster client reconnects its nodes by itself.
            Some(reason) if current && !self.connector.is_sharded() => {
                Some(self.connection_lost(&reason))
            }
            _ => None,
        }
    }

    /// Whether `error` means the connection must be rebuilt. A timeout alone does not: the
    /// connection stays in step (a late answer is matched and dropped), and a node that is
    /// merely slow to read its answers would otherwise turn a busy moment into an outage.
    /// Timeouts with no answer in between for two response timeouts do.
    fn is_connection_lost(&mut self, error: &RedisError) -> bool {
        if error.is_timeout() {
            let since = *self.timing_out_since.get_or_insert_with(Instant::now);
            return since.elapsed() >= self.connector.response_timeout * 2;
        }
        is_connection_error(error)
    }

    fn fail_one(&mut self, item: Publish, reason: &str, outcome: Failure) {
        if let Some(outage) = &mut self.outage {
            outage.failed += 1;
        }
        self.shared.failed(item, reason, outcome);
    }

    fn fail_all(&mut self, items: Vec<Publish>, reason: &str) {
        for item in items {
            self.fail_one(item, reason, Failure::NotPublished);
        }
    }

    fn connection_lost(&mut self, reason: &str) -> Reconnecting {
        self.connection = None;
        self.shared.link.set_publishing(false);
        self.outage = Some(Outage {
            since: Instant::now(),
            failed: 0,
        });
        tracing::error!(
            endpoint = %self.connector.endpoint(),
            reason,
            "Redis backplane: the publishing connection is lost; local connections are still served, \
             messages for other nodes are counted as lost until it is back"
        );
        let connector = self.connector.clone();
        let disconnects = self.disconnect_tx.clone();
        let shutdown = self.shutdown.clone();
        Box::pin(async move {
            connector
                .connect_until_up(None, &disconnects, &shutdown, "publish")
                .await
        })
    }

    fn connection_restored(&mut self, connected: (Conn, u64)) {
        self.connection = Some(connected);
        self.timing_out_since = None;
        self.shared.link.set_publishing(true);
        self.shared.counters.reconnects(1);
        let (down_for, failed) = self
            .outage
            .take()
            .map_or((Duration::ZERO, 0), |o| (o.since.elapsed(), o.failed));
        tracing::warn!(
            endpoint = %self.connector.endpoint(),
            ?down_for,
            failed_publishes = failed,
            "Redis backplane: the publishing connection is back"
        );
    }
}
