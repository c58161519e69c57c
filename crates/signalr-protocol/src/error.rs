//! Error types: what can go wrong reading the wire ([`ProtocolError`]), writing it
//! ([`EncodeError`]) and turning a [`RawValue`](crate::RawValue) into an application type
//! ([`DecodeError`]).
//!
//! Every Display text is a complete English sentence, because these texts end up in front of
//! people: a protocol error closes the connection with its text, and a decode error becomes the
//! argument-binding error a client sees.

use std::fmt;

/// Malformed or unacceptable input on a hub connection.
///
/// All variants except [`ProtocolError::MessageTooLarge`] and [`ProtocolError::InvalidFrame`]
/// are reported after the offending message has been removed from the input buffer, so a caller
/// that wants to skip a bad message (for instance an unknown message type) can keep parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A message (or the part of it received so far) is larger than the configured limit.
    #[error("The maximum message size of {max}B was exceeded.")]
    MessageTooLarge {
        /// The configured limit, in bytes.
        max: usize,
    },
    /// The text of a JSON message could not be parsed, or is not a JSON object.
    #[error("Invalid JSON hub message: {0}")]
    InvalidJson(String),
    /// The body of a MessagePack message is not valid MessagePack, or has the wrong shape.
    #[error("Invalid MessagePack hub message: {0}")]
    InvalidMessagePack(String),
    /// A property the message type requires is absent.
    ///
    /// `message_type` is 0 when the `type` property itself is missing.
    #[error("{}", missing_field_text(*message_type, field))]
    MissingField {
        /// Wire type id of the message, or 0 if it is not known.
        message_type: u8,
        /// Wire name of the property.
        field: &'static str,
    },
    /// A property is present but its value is not acceptable.
    #[error("Invalid property '{field}': {reason}")]
    InvalidField {
        /// Wire name of the property.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The `type` of a message is not one of the known hub message types.
    #[error("Unknown hub message type {0}.")]
    UnknownMessageType(i64),
    /// The framing around messages is broken (bad length prefix, empty frame).
    #[error("Invalid message frame: {0}")]
    InvalidFrame(String),
    /// The handshake request or response is malformed.
    #[error("Invalid handshake message: {0}")]
    InvalidHandshake(String),
}

fn missing_field_text(message_type: u8, field: &str) -> String {
    if message_type == 0 {
        format!("Missing required property '{field}' in a hub message.")
    } else {
        format!("Missing required property '{field}' in a message of type {message_type}.")
    }
}

/// A message or value could not be serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    message: String,
}

impl EncodeError {
    /// An encode error with a custom description.
    pub fn new(message: impl fmt::Display) -> Self {
        EncodeError {
            message: message.to_string(),
        }
    }

    /// The description, without the leading "Failed to encode" text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failed to encode a hub protocol value: {}", self.message)
    }
}

impl std::error::Error for EncodeError {}

impl From<serde_json::Error> for EncodeError {
    fn from(err: serde_json::Error) -> Self {
        EncodeError::new(err)
    }
}

impl From<rmp_serde::encode::Error> for EncodeError {
    fn from(err: rmp_serde::encode::Error) -> Self {
        EncodeError::new(err)
    }
}

impl From<std::io::Error> for EncodeError {
    fn from(err: std::io::Error) -> Self {
        EncodeError::new(err)
    }
}

impl From<DecodeError> for EncodeError {
    fn from(err: DecodeError) -> Self {
        EncodeError {
            message: err.message,
        }
    }
}

impl serde::ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError::new(msg)
    }
}

/// A raw value could not be turned into the requested type.
///
/// The Display text is meant to be shown to the peer as the reason an invocation's arguments
/// could not be bound, e.g. "invalid type: string \"x\", expected u32 at line 1 column 3".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    message: String,
}

impl DecodeError {
    /// A decode error with a custom description.
    pub fn new(message: impl fmt::Display) -> Self {
        DecodeError {
            message: message.to_string(),
        }
    }

    /// The description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

impl From<serde_json::Error> for DecodeError {
    fn from(err: serde_json::Error) -> Self {
        DecodeError::new(err)
    }
}

impl From<rmp_serde::decode::Error> for DecodeError {
    fn from(err: rmp_serde::decode::Error) -> Self {
        DecodeError::new(err)
    }
}

impl serde::de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError::new(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_texts_are_sentences() {
        assert_eq!(
            ProtocolError::MessageTooLarge { max: 32768 }.to_string(),
            "The maximum message size of 32768B was exceeded."
        );
        assert_eq!(
            ProtocolError::MissingField {
                message_type: 1,
                field: "target"
            }
            .to_string(),
            "Missing required property 'target' in a message of type 1."
        );
        assert_eq!(
            ProtocolError::MissingField {
                message_type: 0,
                field: "type"
            }
            .to_string(),
            "Missing required property 'type' in a hub message."
        );
        assert_eq!(
            ProtocolError::UnknownMessageType(42).to_string(),
            "Unknown hub message type 42."
        );
        assert_eq!(
            EncodeError::new("boom").to_string(),
            "Failed to encode a hub protocol value: boom"
        );
        assert_eq!(DecodeError::new("bad").to_string(), "bad");
    }
}
