//! Redis backplane for signalr-rs: lets hub servers on many nodes reach each other's
//! connections through Redis pub/sub, on the same wire as ASP.NET Core's
//! `Microsoft.AspNetCore.SignalR.StackExchangeRedis`, so Rust and .NET nodes can serve one
//! hub side by side.
//!
//! # Usage
//!
//! Connect a [`RedisHubLifetimeManager`] and give it to the hub. Every node of the hub
//! does the same with the same Redis, hub name and channel prefix:
//!
//! ```
//! use std::time::Duration;
//! use signalr_redis::{RedisConfig, RedisHubLifetimeManager};
//! use signalr_server::protocol::Protocol;
//! use signalr_server::testing::TestClient;
//! use signalr_server::{Audience, Hub, HubLifetimeManager, SerializedMessage};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let redis = signalr_redis::testing::RedisServer::builder().password("secret").start();
//! # let url = redis.url();
//! // url is e.g. "redis://:secret@127.0.0.1:6379"
//! let config = RedisConfig::new(url).hub_name("MyApp.Hubs.ChatHub");
//! let node_a = RedisHubLifetimeManager::connect(config.clone()).await?;
//! let node_b = RedisHubLifetimeManager::connect(config).await?;
//!
//! // In an application: Hub::builder().lifetime_manager(node_a.clone()) ... .build()
//! let _hub = Hub::builder().lifetime_manager(node_a.clone()).build();
//!
//! // A connection on node B, reached from node A.
//! let mut bob = TestClient::new("bob-connection", Some("bob"), Protocol::Json);
//! node_b.on_connected(bob.connection()).await?;
//! let hello = SerializedMessage::invocation("hello", &("from A",), &Protocol::ALL)?;
//! node_a.send(&Audience::User("bob".into()), &hello).await?;
//! let received = bob.expect_invocation("hello").await;
//! assert_eq!(received.target, "hello");
//! // Sends return once queued for Redis; flush waits until Redis answered them.
//! node_a.flush().await;
//! assert_eq!(node_a.stats().publishes, 1);
//! # Ok(())
//! # }
//! ```
//!
//! [`RedisHubLifetimeManager::connect`] fails at once, naming the Redis endpoint, when
//! Redis is unreachable, refuses the password or does not answer in time
//! ([`BackplaneError`]). Once started, a node survives Redis going away (below).
//!
//! # How it works
//!
//! Nothing is stored in Redis. Every send becomes one `PUBLISH` to a channel named after
//! the hub and the target; each node `SUBSCRIBE`s to the channels its local connections
//! need and delivers what arrives to them. A message is serialized once per hub protocol
//! by the publisher and travels as already-framed bytes, so a receiving node writes them to
//! its clients without decoding anything.
//!
//! ## Channels
//!
//! Built by [`channels::Channels`]. `{hub}` is the hub's full name (the .NET hub class's
//! `Namespace.TypeName`), `{prefix}` the optional `ChannelPrefix`, raw bytes with no
//! separator (StackExchange.Redis semantics). Names and ids are not escaped.
//!
//! | Channel | Carries | Subscribed by |
//! |---|---|---|
//! | `{prefix}{hub}:all` | invocations for every connection | every node |
//! | `{prefix}{hub}:group:{group}` | invocations for a group | nodes with a local member |
//! | `{prefix}{hub}:user:{user}` | invocations for a user's connections | nodes with a connection of that user |
//! | `{prefix}{hub}:connection:{id}` | invocations for one connection | the node that owns it |
//! | `{prefix}{hub}:internal:groups` | group commands | every node |
//! | `{prefix}{hub}:internal:ack:{server}` | acks of `server`'s group commands | that server |
//! | `{prefix}{hub}:internal:return:{server}` | client results for `server` | that server |
//!
//! `{server}` is a per-hub, per-process name, `{machine}_{32 hex digits}`
//! ([`channels::generate_server_name`]).
//!
//! ## Envelopes
//!
//! Every payload is a MessagePack array, written in the compact forms MessagePack-CSharp
//! uses and read leniently (any integer width, `bin` or `str` blobs, trailing elements
//! ignored); see [`envelope`].
//!
//! | Payload | Elements |
//! |---|---|
//! | [`envelope::Invocation`] | `[ [excluded connection ids: str...], {protocol: str => frame: bin} ]` |
//! | client-result [`envelope::Invocation`] | `[ [], {protocol => frame}, invocation id: str, "{hub}:internal:return:{server}": str ]` |
//! | [`envelope::GroupCommand`] | `[ id: int, server: str, action: int (1 add, 2 remove), group: str, connection id: str ]` |
//! | [`envelope::Ack`] | `[ id: int ]` |
//! | [`envelope::ClientResultCompletion`] | `[ protocol: str, completion frame: bin ]` |
//!
//! A .NET receiver picks the frame for its client's protocol and drops the client if the
//! publisher did not include that protocol, so publishers must include every protocol
//! any node's clients use.
//!
//! ## Sending and receiving
//!
//! Each node has one publishing connection and one subscribing connection (RESP3,
//! `TCP_NODELAY`), whatever the number of clients; per client there is nothing in Redis
//! but channel subscriptions. The subscribing connection follows the node's needs:
//! `all`, `internal:groups` and the node's own ack and return channels always;
//! `connection:{id}` from a connection's start to its end; `group:{name}` and
//! `user:{id}` reference-counted, subscribed with the first local member and
//! unsubscribed after the last. A connection is registered only once its channel
//! subscription is confirmed, so a .NET node can reach it at once.
//!
//! | Audience | Published as |
//! |---|---|
//! | all, all except | one publish to `all` (excluded ids in the envelope) |
//! | group, group except, groups | one publish per group |
//! | user, users | one publish per user |
//! | connection | written directly when local, else one publish to its channel |
//! | connections | one publish per id, local ones included |
//!
//! As on .NET, a node receives its own publishes and delivers to its local connections
//! from there. That keeps one order for everyone: every connection of a channel, here or
//! elsewhere, sees its messages in Redis's order. Publishing is pipelined: one task
//! drains a FIFO queue and sends everything queued as one pipeline, up to four pipelines
//! awaiting their answers at once, on one connection, so a node's messages reach Redis in
//! the order they were sent and none waits for an earlier one's round trip.
//!
//! `send` returns once the publish is queued, not when Redis answers: a loop of sends (one
//! connection's invocations, a `HubContext` notifying many users) runs at Redis's pace
//! rather than one round trip per message (measured: 5 k to 133 k messages/s to connections
//! on another node, BENCHMARKS.md W4). Two exceptions wait for Redis's answer: while the
//! publishing connection is known to be down, so a message that reached nobody is an error
//! to its sender; and while more than 1 MiB of publishes is unanswered, so senders slow to
//! Redis's pace instead of growing the queue. A publish that fails after `send` returned is
//! counted as lost (`signalr_backplane_lost_messages_total`) and logged.
//! [`flush`](signalr_server::HubLifetimeManager::flush) waits until everything queued is
//! answered: a message sent from any node after it is delivered after those. The hub
//! flushes before it sends an invocation's Completion, so a client holding a result knows
//! what the method sent is on its way.
//!
//! The connections to Redis are read on a thread of the manager's own, so a node busy with
//! its clients still reads its subscription as fast as Redis sends (Redis closes a
//! subscriber that falls 32 MB behind, by default). Incoming messages wait there in a queue
//! for one task of the application's runtime, which decodes each envelope and queues the
//! frames for local connections; that never waits (a connection's outbound queue is
//! bounded in bytes and a slow client is closed, never waited for). The queue holds up to
//! 64 MiB: a node that falls further behind drops what arrives, counts it
//! (`signalr_backplane_dropped_messages_total`), logs it and keeps its subscription, so
//! what comes after is delivered. Frames are forwarded as they
//! came; a client whose protocol is missing from a .NET node's envelope gets the message
//! transcoded from another protocol instead of being dropped. A payload that cannot be
//! decoded is logged, counted and skipped.
//!
//! ## Groups and client results across nodes
//!
//! Adding or removing a connection held by another node publishes a group command on
//! `internal:groups`; the owner applies it, subscribes the group channel if needed, then
//! acks on the sender's `internal:ack:{server}`. No ack within the ack timeout (30 s by
//! default, [`RedisConfig::ack_timeout`]) is a timeout error naming the connection.
//!
//! A client result asked of a connection on another node is published to its connection
//! channel as the 4-element invocation with this node's return channel; no receiver means
//! the connection does not exist. The owner forwards it, then publishes the client's
//! Completion framed in the client's protocol (or `"Connection disconnected."` when the
//! connection ends first); the origin parses it in whatever protocol it came in.
//!
//! ## When Redis goes away
//!
//! * Local connections keep being served. A publish that fails (Redis down, or the
//!   publishing connection being rebuilt) is delivered directly to this node's
//!   connections of its audience and counted as lost for the other nodes
//!   ([`BackplaneStats::lost_messages`], `signalr_backplane_lost_messages_total`). A
//!   message for a connection on another node fails with an error. While the
//!   subscription is down, successful publishes are also delivered locally, since their
//!   echo cannot come back (except on channels a resubscription in progress has already
//!   restored: their echo does come back).
//! * A publish whose answer does not come within the response timeout
//!   ([`RedisConfig::response_timeout`]) may still have been published, so it is counted
//!   as lost but not delivered locally: delivery stays at most once. Timeouts alone do not
//!   rebuild the connection unless nothing at all is answered for two response timeouts.
//! * Both connections reconnect with exponential backoff (50 ms up to 500 ms by default,
//!   [`RedisConfig::reconnect_delay`]). The subscribing connection subscribes every channel
//!   in its table again (512 to a SUBSCRIBE, 8 of those in flight) before it reports itself
//!   live. The subscription is checked with `PING`
//!   ([`RedisConfig::health_check_interval`]) to catch dead TCP connections; answers there
//!   queue behind the messages Redis already sent, so a late answer counts as a failure
//!   only when no message arrived meanwhile either (or after 12 response timeouts).
//!
//! ## Subscribing
//!
//! The node subscribes one channel per local connection, per user with a local
//! connection and per group with a local member, and unsubscribes them when the last
//! reason goes. Changes made while a SUBSCRIBE is on its way are gathered and sent
//! together in the next one, so connections arriving together share round trips to
//! Redis. A connection is registered (and a group join acknowledged) once Redis has
//! confirmed its channels.
//! * The loss and the recovery are logged (error, then warning with the outage's length),
//!   and reconnections are counted.
//! * What other nodes publish while this node's subscription is down is lost for its
//!   connections, and group commands sent meanwhile time out: as on .NET, there is no
//!   replay (see redis-backplane.md §6 for what could be added without breaking .NET
//!   peers).
//!
//! ## Sharded mode (Redis Cluster)
//!
//! With [`RedisConfig::sharded`], the manager uses the cluster client with
//! `SSUBSCRIBE`/`SPUBLISH` (Redis 7+): each channel lives on the shard owning its slot
//! instead of being broadcast to every cluster node, so throughput grows with shards.
//! The cluster client reconnects to nodes and resubscribes shard channels itself. .NET
//! nodes do not speak sharded pub/sub, so this is for clusters of signalr-rs nodes only;
//! the default classic mode works against a cluster through any one node.
//!
//! ## Metrics
//!
//! Counters, labelled `hub`, through the `metrics` crate and [`RedisHubLifetimeManager::stats`]:
//! `signalr_backplane_publishes_total`, `signalr_backplane_publish_errors_total`,
//! `signalr_backplane_messages_received_total`, `signalr_backplane_reconnects_total`,
//! `signalr_backplane_lost_messages_total`, `signalr_backplane_decode_errors_total`,
//! `signalr_backplane_dropped_messages_total`;
//! and the gauge `signalr_backplane_connected` (1 while both Redis connections are up).
//! The handles are registered when the manager connects: install the `metrics` recorder
//! (e.g. `signalr_server::observability::install_prometheus`) before that. Give the hub
//! the same name (`HubBuilder::name`) to line its `hub` label up with the hub's own
//! `signalr_*` metrics.
//!
//! ## Health
//!
//! The manager's [`health`](signalr_server::HubLifetimeManager::health) says whether
//! both connections are up and since when ([`RedisHubLifetimeManager::connected_since`]);
//! the `/healthz` route of `signalr_server::observability` answers `503` while they are
//! not.
//!
//! # Layout
//!
//! * [`RedisHubLifetimeManager`], [`RedisConfig`], [`BackplaneError`], [`BackplaneStats`].
//! * `link` (private): the two Redis connections, their reconnection, the publish queue
//!   and the subscription table.
//! * [`channels`]: channel names for one hub, classification of incoming channel names,
//!   server names.
//! * [`envelope`]: the four payloads, encoders and decoders; [`envelope::DecodeError`].
//! * `testing` (feature `test-util`): a harness running real `redis-server` processes,
//!   single node or cluster, for tests.

pub mod channels;
mod config;
pub mod envelope;
mod error;
mod link;
mod manager;
mod msgpack;
mod stats;
mod subscription;
#[cfg(feature = "test-util")]
pub mod testing;

pub use config::{DEFAULT_HUB_NAME, RedisConfig};
pub use error::BackplaneError;
pub use manager::RedisHubLifetimeManager;
pub use stats::BackplaneStats;
