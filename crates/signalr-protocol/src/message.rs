//! The nine hub message types, independent of any wire encoding.
//!
//! Values (arguments, stream items, results) are kept as [`RawValue`]s: the bytes they arrived
//! in, tagged with their encoding, so that a message can be forwarded or re-sent without
//! decoding what the application put in it.

use crate::error::DecodeError;
use crate::raw::RawValue;

/// Numeric message type ids, as they appear on the wire (`"type"` in JSON, the first array
/// element in MessagePack).
pub mod message_type {
    /// Invocation of a method, from either side.
    pub const INVOCATION: u8 = 1;
    /// One item of a stream.
    pub const STREAM_ITEM: u8 = 2;
    /// End of an invocation or stream.
    pub const COMPLETION: u8 = 3;
    /// Invocation asking for a server-to-client stream.
    pub const STREAM_INVOCATION: u8 = 4;
    /// Cancel a stream (or an invocation) by id.
    pub const CANCEL_INVOCATION: u8 = 5;
    /// Keep-alive.
    pub const PING: u8 = 6;
    /// Connection is closing, maybe with an error.
    pub const CLOSE: u8 = 7;
    /// Stateful reconnect: everything up to a sequence id was received.
    pub const ACK: u8 = 8;
    /// Stateful reconnect: the sequence id of the next message after a resume.
    pub const SEQUENCE: u8 = 9;
}

/// Message headers (types 1-5 only). Accepted on input; the server does not emit them to JSON
/// clients because the Java client rejects them.
pub type Headers = Vec<(String, String)>;

/// One hub message.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// Type 1: call a method; with an invocation id the caller expects a [`Completion`].
    Invocation(Invocation),
    /// Type 2: one item of a stream (either direction).
    StreamItem(StreamItem),
    /// Type 3: the end of an invocation or of a stream.
    Completion(Completion),
    /// Type 4: call a method that streams its results back.
    StreamInvocation(Invocation),
    /// Type 5: stop a stream.
    CancelInvocation(CancelInvocation),
    /// Type 6: keep-alive.
    Ping,
    /// Type 7: the sender is closing the connection.
    Close(Close),
    /// Type 8: stateful reconnect acknowledgement.
    Ack(Ack),
    /// Type 9: stateful reconnect sequence announcement.
    Sequence(Sequence),
}

impl HubMessage {
    /// The wire type id of this message.
    pub fn message_type(&self) -> u8 {
        match self {
            HubMessage::Invocation(_) => message_type::INVOCATION,
            HubMessage::StreamItem(_) => message_type::STREAM_ITEM,
            HubMessage::Completion(_) => message_type::COMPLETION,
            HubMessage::StreamInvocation(_) => message_type::STREAM_INVOCATION,
            HubMessage::CancelInvocation(_) => message_type::CANCEL_INVOCATION,
            HubMessage::Ping => message_type::PING,
            HubMessage::Close(_) => message_type::CLOSE,
            HubMessage::Ack(_) => message_type::ACK,
            HubMessage::Sequence(_) => message_type::SEQUENCE,
        }
    }

    /// Whether stateful reconnect numbers and buffers this message (types 1-5).
    pub fn is_trackable(&self) -> bool {
        (message_type::INVOCATION..=message_type::CANCEL_INVOCATION).contains(&self.message_type())
    }
}

/// Arguments of an [`Invocation`].
#[derive(Debug, Clone, PartialEq)]
pub enum Arguments {
    /// One raw value per argument (what the parsers produce).
    Values(Vec<RawValue>),
    /// The whole argument array, already encoded (what a sender produces from a tuple).
    /// It must be an array in the encoding of the protocol that writes it.
    Encoded(RawValue),
}

impl Default for Arguments {
    fn default() -> Self {
        Arguments::Values(Vec::new())
    }
}

/// Types 1 and 4: a method call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Invocation {
    /// Headers; ignored by the server.
    pub headers: Headers,
    /// Present when the caller waits for a result. `None` means fire-and-forget. An empty
    /// string on the wire parses as `None`.
    pub invocation_id: Option<String>,
    /// Method name.
    pub target: String,
    /// Arguments, without the ones replaced by upload streams.
    pub arguments: Arguments,
    /// Ids of client-to-server streams that feed the stream parameters.
    pub stream_ids: Vec<String>,
}

/// Type 2: one stream item.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamItem {
    /// Headers; ignored by the server.
    pub headers: Headers,
    /// The stream (invocation) the item belongs to.
    pub invocation_id: String,
    /// The item; JSON `null` / MessagePack nil is a valid item.
    pub item: RawValue,
}

/// How an invocation or stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionResult {
    /// A method without a return value (or the end of a stream).
    Void,
    /// A returned value (possibly null).
    Value(RawValue),
    /// A failure, as a message for the peer.
    Error(String),
}

/// Type 3: end of an invocation or stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Headers; ignored by the server.
    pub headers: Headers,
    /// The invocation or stream that ended.
    pub invocation_id: String,
    /// Result, error or nothing.
    pub result: CompletionResult,
}

/// Type 5: stop a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct CancelInvocation {
    /// Headers; ignored by the server.
    pub headers: Headers,
    /// The stream to stop.
    pub invocation_id: String,
}

/// Type 7: the connection is closing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Close {
    /// Why, when it was not a normal close.
    pub error: Option<String>,
    /// Whether the client should reconnect automatically.
    pub allow_reconnect: bool,
}

/// Type 8: every trackable message up to `sequence_id` was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Highest sequence id received.
    pub sequence_id: u64,
}

/// Type 9: the next trackable message carries `sequence_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    /// Sequence id of the next message.
    pub sequence_id: u64,
}

impl Arguments {
    /// The number of arguments. For [`Arguments::Encoded`] the array is scanned (not decoded).
    pub fn len(&self) -> Result<usize, DecodeError> {
        match self {
            Arguments::Values(values) => Ok(values.len()),
            Arguments::Encoded(array) => array.array_elements().map(|items| items.len()),
        }
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> Result<bool, DecodeError> {
        self.len().map(|n| n == 0)
    }

    /// One raw value per argument; [`Arguments::Encoded`] is split into zero-copy slices.
    pub fn into_values(self) -> Result<Vec<RawValue>, DecodeError> {
        match self {
            Arguments::Values(values) => Ok(values),
            Arguments::Encoded(array) => array.array_elements(),
        }
    }
}

impl From<Vec<RawValue>> for Arguments {
    fn from(values: Vec<RawValue>) -> Self {
        Arguments::Values(values)
    }
}
