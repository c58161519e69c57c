//! Redis backplane for signalr-rs: lets hub servers on many nodes reach each other's
//! connections through Redis pub/sub, on the same wire as ASP.NET Core's
//! `Microsoft.AspNetCore.SignalR.StackExchangeRedis`, so Rust and .NET nodes can serve one
//! hub side by side.
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
//! # Layout
//!
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
#[cfg(feature = "test-util")]
pub mod testing;

pub use config::{DEFAULT_HUB_NAME, RedisConfig};
pub use error::BackplaneError;
pub use manager::RedisHubLifetimeManager;
pub use stats::BackplaneStats;
