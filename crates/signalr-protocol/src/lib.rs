//! The ASP.NET Core SignalR wire protocol, with no IO: hub messages, the handshake, message
//! framing, the JSON and MessagePack hub protocols, and the negotiate response bodies.
//!
//! A server feeds the bytes it receives into a [`bytes::BytesMut`] and calls
//! [`Protocol::parse_message`] until it returns `Ok(None)`; partial messages stay in the buffer
//! until the rest arrives. Outgoing messages are written with [`Protocol::write_message`].
//! Application values travel as [`RawValue`]s, still in their wire encoding, so a message can be
//! forwarded without decoding what is inside it; [`RawValue::decode`] and
//! [`Protocol::encode_value`] convert to and from Rust types with serde.
//!
//! ```
//! use bytes::BytesMut;
//! use signalr_protocol::{Completion, CompletionResult, HubMessage, Protocol};
//!
//! let mut input = BytesMut::from(
//!     &b"{\"type\":1,\"invocationId\":\"0\",\"target\":\"Add\",\"arguments\":[1,2]}\x1e"[..],
//! );
//! let Some(HubMessage::Invocation(call)) = Protocol::Json.parse_message(&mut input, 32 * 1024)?
//! else {
//!     return Err("expected an invocation".into());
//! };
//! assert_eq!(call.target, "Add");
//! let invocation_id = call.invocation_id.ok_or("expected an invocation id")?;
//! let args = call.arguments.into_values()?;
//! let sum = args[0].decode::<i64>()? + args[1].decode::<i64>()?;
//!
//! let reply = HubMessage::Completion(Completion {
//!     headers: Vec::new(),
//!     invocation_id,
//!     result: CompletionResult::Value(Protocol::Json.encode_value(&sum)?),
//! });
//! let frame = Protocol::Json.encode_message(&reply)?;
//! assert_eq!(&frame[..], b"{\"type\":3,\"invocationId\":\"0\",\"result\":3}\x1e");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod framing;
pub mod handshake;
pub mod message;
pub mod negotiate;
pub mod protocol;
pub mod raw;

mod error;
mod json;
mod msgpack;

pub use error::{DecodeError, EncodeError, ProtocolError};
pub use handshake::{HandshakeRequest, HandshakeResponse};
pub use message::*;
pub use negotiate::*;
pub use protocol::{Protocol, TransferFormat};
pub use raw::RawValue;
