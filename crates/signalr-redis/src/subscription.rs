//! The subscription connection and the reference-counted set of channels this node needs.
//!
//! The set (the *table*) is the source of truth, changed synchronously under a short lock
//! together with the local membership it follows. One task, the applier, turns changes
//! into Redis commands: everything changed since its last round goes out as one SUBSCRIBE
//! and one UNSUBSCRIBE (in chunks), so a thousand connections arriving at once cost a
//! few round trips, not a thousand. A caller that needs its channel live waits for the
//! round that carried its change ([`Subscriber::settled`]).
//!
//! After a reconnection every channel in the table is subscribed again, in chunks that
//! are in flight together, before the subscription is reported live; changes made
//! meanwhile are applied right after.
//!
//! Answers on this connection queue behind the pub/sub messages Redis sent before them,
//! so a busy node reads them late. Its commands are therefore timed *patiently*: a command
//! fails only when its answer is late and no message at all arrived meanwhile, which is
//! what a dead connection looks like; a connection that is merely backlogged is kept.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use redis::{PushInfo, RedisError};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::link::{Conn, Connector, PushHandler};
use crate::stats::{Counters, LinkState};

/// Most channels in one SUBSCRIBE or UNSUBSCRIBE.
const SUBSCRIBE_BATCH: usize = 512;
/// Chunks of SUBSCRIBE in flight together when resubscribing.
const RESUBSCRIBE_IN_FLIGHT: usize = 8;
/// A patient command still fails after this many response timeouts, however busy the
/// connection is.
const PATIENCE_LIMIT: u32 = 12;

/// The subscription connection and the channels this node needs.
pub(crate) struct Subscriber {
    table: Mutex<Table>,
    /// Wakes the applier after a change Redis has to hear about.
    changed: Arc<Notify>,
    /// Number of the latest change the applier has dealt with.
    applied: watch::Sender<u64>,
    /// Whether the connection is up and every channel in the table is subscribed (shared
    /// with the publishing side and the health report).
    link: Arc<LinkState>,
    connector: Arc<Connector>,
    on_push: PushHandler,
    /// Pushes received on the subscription connection: proof that it is being read.
    pushes: Arc<AtomicU64>,
    confirmed: Arc<Confirmed>,
    disconnect_tx: mpsc::UnboundedSender<u64>,
    disconnect_rx: Mutex<Option<mpsc::UnboundedReceiver<u64>>>,
    counters: Arc<Counters>,
    response_timeout: Duration,
}

struct Table {
    connection: Option<(Conn, u64)>,
    /// Channel → how many local reasons need it (the permanent channels, each local
    /// connection, member of a group, connection of a user).
    counts: HashMap<Bytes, usize>,
    /// Channels whose count went from or to zero since the applier last looked: to be
    /// subscribed or unsubscribed, whichever the count says then.
    dirty: HashSet<Bytes>,
    /// Number of the latest change in `dirty`.
    requested: u64,
}

/// Exclusive access to the subscription table. Lifetime managers hold it across a
/// membership change and the channel counts it implies, so the two always agree; it is a
/// plain lock, never held across an `await`.
pub(crate) struct Subscriptions<'a> {
    subscriber: &'a Subscriber,
    table: MutexGuard<'a, Table>,
    changed: bool,
}

/// The channels a resubscription in progress has confirmed so far. Their messages come
/// from Redis again although the subscription is not reported live yet, so the publishing
/// side must not make up for them locally (that would deliver them twice).
#[derive(Default)]
pub(crate) struct Confirmed(Mutex<HashSet<Bytes>>);

impl Confirmed {
    pub(crate) fn contains(&self, channel: &[u8]) -> bool {
        self.lock().contains(channel)
    }

    fn add(&self, channels: &[Bytes]) {
        self.lock().extend(channels.iter().cloned());
    }

    fn clear(&self) {
        // Frees the memory too: a resubscription may have held every channel of the node.
        *self.lock() = HashSet::new();
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<Bytes>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What to wait for so the changes made under a [`Subscriptions`] are live in Redis.
#[derive(Debug, Clone, Copy)]
#[must_use = "wait for it with Subscriber::settled"]
pub(crate) struct Ticket(u64);

impl Subscriber {
    pub(crate) fn new(
        connector: Arc<Connector>,
        on_push: PushHandler,
        counters: Arc<Counters>,
        link: Arc<LinkState>,
        confirmed: Arc<Confirmed>,
    ) -> Subscriber {
        let (disconnect_tx, disconnect_rx) = mpsc::unbounded_channel();
        let pushes = Arc::new(AtomicU64::new(0));
        let counted = pushes.clone();
        let on_push: PushHandler = Arc::new(move |info: PushInfo| {
            counted.fetch_add(1, Ordering::Relaxed);
            on_push(info);
        });
        Subscriber {
            table: Mutex::new(Table {
                connection: None,
                counts: HashMap::new(),
                dirty: HashSet::new(),
                requested: 0,
            }),
            changed: Arc::new(Notify::new()),
            applied: watch::Sender::new(0),
            link,
            response_timeout: connector.response_timeout(),
            connector,
            on_push,
            pushes,
            confirmed,
            disconnect_tx,
            disconnect_rx: Mutex::new(Some(disconnect_rx)),
            counters,
        }
    }

    /// Whether the subscription connection is up with every channel subscribed.
    pub(crate) fn is_live(&self) -> bool {
        self.link.subscribed()
    }

    /// Connects and subscribes the channels the node always needs; fails if Redis cannot
    /// be reached.
    pub(crate) async fn start(&self, permanent: &[Bytes]) -> Result<(), RedisError> {
        let (mut conn, generation) = self
            .connector
            .connect(Some(self.on_push.clone()), self.disconnect_tx.clone())
            .await?;
        self.patiently(conn.subscribe(permanent)).await?;
        let mut table = self.lock_table();
        for channel in permanent {
            *table.counts.entry(channel.clone()).or_insert(0) += 1;
        }
        table.connection = Some((conn, generation));
        self.link.set_subscribed(true);
        Ok(())
    }

    /// Locks the subscription table.
    pub(crate) fn lock(&self) -> Subscriptions<'_> {
        Subscriptions {
            subscriber: self,
            table: self.lock_table(),
            changed: false,
        }
    }

    /// Waits until the changes behind `ticket` are live in Redis (or were dealt with while
    /// Redis is away: they are subscribed when the connection is rebuilt).
    pub(crate) async fn settled(&self, ticket: Ticket) {
        let mut applied = self.applied.subscribe();
        // The sender lives as long as `self`, so this only ends when the change is applied.
        let _ = applied.wait_for(|&done| done >= ticket.0).await;
    }

    /// Drops the connection (no more messages arrive).
    pub(crate) fn stop(&self) {
        self.lock_table().connection = None;
        self.link.set_subscribed(false);
    }

    fn lock_table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a command on the subscription connection (see [`patiently`]).
    async fn patiently<T>(
        &self,
        command: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        patiently(self.response_timeout, &self.pushes, command).await
    }

    /// Starts the applier and the supervisor, which watches the connection and rebuilds it
    /// (with every subscription) when it is lost. In sharded mode the cluster client
    /// reconnects its nodes and resubscribes by itself; the supervisor only logs the losses
    /// there.
    pub(crate) fn spawn_tasks(
        self: &Arc<Self>,
        health_check_interval: Duration,
        shutdown: CancellationToken,
    ) {
        tokio::spawn(apply(
            Arc::downgrade(self),
            self.changed.clone(),
            shutdown.clone(),
        ));
        let Some(mut disconnects) = self
            .disconnect_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let this = Arc::downgrade(self);
        if self.connector.is_sharded() {
            let endpoint = self.connector.endpoint().to_owned();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        notice = disconnects.recv() => {
                            if notice.is_none() {
                                break;
                            }
                            tracing::warn!(
                                seed = %endpoint,
                                "Redis backplane: a cluster node connection closed; the cluster \
                                 client reconnects and resubscribes its shard channels"
                            );
                        }
                    }
                }
            });
            return;
        }
        tokio::spawn(async move {
            loop {
                let reported = tokio::select! {
                    () = shutdown.cancelled() => break,
                    generation = disconnects.recv() => match generation {
                        Some(generation) => Some(generation),
                        None => break,
                    },
                    () = tokio::time::sleep(health_check_interval) => None,
                };
                let Some(subscriber) = this.upgrade() else {
                    break;
                };
                if subscriber.is_healthy(reported).await {
                    continue;
                }
                subscriber.reconnect(&shutdown).await;
            }
            if let Some(subscriber) = this.upgrade() {
                subscriber.stop();
            }
        });
    }

    /// After a disconnect notice (`reported`, stale ones ignored) or a timer tick: is the
    /// current connection still good?
    async fn is_healthy(&self, reported: Option<u64>) -> bool {
        let current = self.lock_table().connection.clone();
        let Some((mut conn, generation)) = current else {
            return false;
        };
        match reported {
            Some(reported) if reported != generation => true,
            Some(_) => false,
            None => match self.patiently(conn.ping()).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, "Redis backplane: the subscription connection failed its health check");
                    false
                }
            },
        }
    }

    async fn reconnect(&self, shutdown: &CancellationToken) {
        {
            self.lock_table().connection = None;
            self.link.set_subscribed(false);
        }
        let since = Instant::now();
        tracing::error!(
            endpoint = %self.connector.endpoint(),
            "Redis backplane: the subscription connection is lost; messages other nodes publish \
             meanwhile do not reach this node's connections"
        );
        loop {
            let Some((conn, generation)) = self
                .connector
                .connect_until_up(
                    Some(self.on_push.clone()),
                    &self.disconnect_tx,
                    shutdown,
                    "subscribe",
                )
                .await
            else {
                return;
            };
            // Everything in the table now; later changes stay dirty and are applied once
            // the connection is in place.
            let channels: Vec<Bytes> = {
                let mut table = self.lock_table();
                table.dirty.clear();
                table.counts.keys().cloned().collect()
            };
            match self.resubscribe(&conn, &channels).await {
                Ok(()) => {
                    self.lock_table().connection = Some((conn, generation));
                    self.link.set_subscribed(true);
                    self.confirmed.clear();
                    self.counters.reconnects(1);
                    self.changed.notify_one();
                    tracing::warn!(
                        endpoint = %self.connector.endpoint(),
                        down_for = ?since.elapsed(),
                        channels = channels.len(),
                        "Redis backplane: the subscription connection is back, every channel resubscribed"
                    );
                    return;
                }
                Err(error) => {
                    self.confirmed.clear();
                    // The channels cleared from `dirty` are still in the table; the next
                    // attempt takes them all again.
                    tracing::warn!(%error, channels = channels.len(), "Redis backplane: resubscribing failed; reconnecting again");
                }
            }
        }
    }

    /// Subscribes `channels` in chunks, [`RESUBSCRIBE_IN_FLIGHT`] of them at a time.
    async fn resubscribe(&self, conn: &Conn, channels: &[Bytes]) -> Result<(), RedisError> {
        use futures::StreamExt;
        let mut chunks = channels.chunks(SUBSCRIBE_BATCH);
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            while in_flight.len() < RESUBSCRIBE_IN_FLIGHT {
                let Some(chunk) = chunks.next() else { break };
                let mut conn = conn.clone();
                in_flight.push(async move {
                    self.patiently(conn.subscribe(chunk)).await?;
                    self.confirmed.add(chunk);
                    Ok::<(), RedisError>(())
                });
            }
            match in_flight.next().await {
                Some(result) => result?,
                None => return Ok(()),
            }
        }
    }

    /// One applier round: sends what changed since the last one.
    async fn apply_round(&self) {
        let (connection, subscribe, unsubscribe, requested) = {
            let mut table = self.lock_table();
            let requested = table.requested;
            let Some(connection) = table.connection.clone() else {
                // Redis is away or being resubscribed: the changes stay dirty for the
                // reconnection; callers need not wait for it.
                drop(table);
                self.applied.send_replace(requested);
                return;
            };
            let (subscribe, unsubscribe): (Vec<Bytes>, Vec<Bytes>) = {
                let Table { dirty, counts, .. } = &mut *table;
                dirty.drain().partition(|c| counts.contains_key(c))
            };
            (connection, subscribe, unsubscribe, requested)
        };
        let (mut conn, generation) = connection;
        let commands = (subscribe.chunks(SUBSCRIBE_BATCH).map(|chunk| (true, chunk))).chain(
            unsubscribe
                .chunks(SUBSCRIBE_BATCH)
                .map(|chunk| (false, chunk)),
        );
        let mut result = Ok(());
        for (subscribing, chunk) in commands {
            result = if subscribing {
                self.patiently(conn.subscribe(chunk)).await
            } else {
                self.patiently(conn.unsubscribe(chunk)).await
            };
            if result.is_err() {
                break;
            }
        }
        if let Err(error) = result {
            tracing::warn!(
                %error,
                subscribe = subscribe.len(),
                unsubscribe = unsubscribe.len(),
                "Redis backplane: (un)subscribing failed; the subscription connection will be rebuilt"
            );
            if !self.connector.is_sharded() {
                // The supervisor rebuilds the connection from the table, which is right.
                let _ = self.disconnect_tx.send(generation);
            }
        }
        self.applied.send_replace(requested);
    }
}

/// Awaits `command`, an exchange on the subscription connection. It fails when its answer
/// is `timeout` late while no push arrived either (`pushes` did not move), or when it is
/// very late ([`PATIENCE_LIMIT`] timeouts) regardless.
async fn patiently<T>(
    timeout: Duration,
    pushes: &AtomicU64,
    command: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    let started = Instant::now();
    let mut seen = pushes.load(Ordering::Relaxed);
    tokio::pin!(command);
    loop {
        match tokio::time::timeout(timeout, &mut command).await {
            Ok(result) => return result,
            Err(_) => {
                let now = pushes.load(Ordering::Relaxed);
                if now == seen || started.elapsed() >= timeout * PATIENCE_LIMIT {
                    return Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "Redis did not answer on the subscription connection within {:?}",
                            started.elapsed()
                        ),
                    )));
                }
                seen = now;
            }
        }
    }
}

/// The applier: one round per wake-up, until shutdown or the subscriber is gone.
async fn apply(
    subscriber: std::sync::Weak<Subscriber>,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = changed.notified() => {}
        }
        let Some(this) = subscriber.upgrade() else {
            return;
        };
        this.apply_round().await;
    }
}

impl Subscriptions<'_> {
    /// One more local reason to receive `channel`; the first one subscribes it.
    pub(crate) fn acquire(&mut self, channel: Bytes) {
        let count = self.table.counts.entry(channel.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.mark(channel);
        }
    }

    /// One reason fewer; the last one unsubscribes it.
    pub(crate) fn release(&mut self, channel: Bytes) {
        let Some(count) = self.table.counts.get_mut(&channel) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.table.counts.remove(&channel);
            self.mark(channel);
        }
    }

    fn mark(&mut self, channel: Bytes) {
        self.table.dirty.insert(channel);
        self.table.requested += 1;
        self.changed = true;
    }

    /// Unlocks the table; the ticket says when its changes are live. Channels counted up
    /// without a change (already subscribed, or being subscribed) wait for the latest
    /// round too, so nobody goes ahead of a SUBSCRIBE still on its way.
    pub(crate) fn unlock(self) -> Ticket {
        let ticket = Ticket(self.table.requested);
        let changed = self.changed;
        let subscriber = self.subscriber;
        drop(self.table);
        if changed {
            subscriber.changed.notify_one();
        }
        ticket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer that comes after `after`, while a push arrives every `push_every` (never
    /// when `None`).
    async fn late_answer(after: Duration, push_every: Option<Duration>) -> Result<(), RedisError> {
        let pushes = Arc::new(AtomicU64::new(0));
        let pusher = push_every.map(|every| {
            let pushes = pushes.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    pushes.fetch_add(1, Ordering::Relaxed);
                }
            })
        });
        let answer = async move {
            tokio::time::sleep(after).await;
            Ok(())
        };
        let result = patiently(Duration::from_secs(5), &pushes, answer).await;
        if let Some(pusher) = pusher {
            pusher.abort();
        }
        result
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlogged_connection_is_waited_for() {
        // 20 s late, four timeouts, but messages kept arriving: a busy node, not a dead link.
        late_answer(Duration::from_secs(20), Some(Duration::from_millis(500)))
            .await
            .expect("waited for while pushes arrive");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out() {
        let error = late_answer(Duration::from_secs(20), None)
            .await
            .expect_err("no answer and no pushes for a timeout");
        assert!(error.is_timeout(), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn patience_has_a_limit() {
        let started = Instant::now();
        late_answer(Duration::from_secs(3600), Some(Duration::from_millis(500)))
            .await
            .expect_err("an answer an hour late fails even on a busy connection");
        assert!(started.elapsed() <= Duration::from_secs(5) * (PATIENCE_LIMIT + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_is_taken() {
        late_answer(Duration::from_secs(1), None)
            .await
            .expect("answered within the timeout");
    }
}
