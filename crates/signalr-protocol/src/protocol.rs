//! The two hub protocols a connection can choose in its handshake, and the entry points that
//! read and write hub messages in either of them.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::{EncodeError, ProtocolError};
use crate::message::HubMessage;
use crate::raw::RawValue;
use crate::{json, msgpack};

/// A hub protocol, as named in the handshake's `protocol` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `"json"`: UTF-8 JSON objects, each followed by the record separator `0x1E`.
    Json,
    /// `"messagepack"`: MessagePack arrays, each preceded by a varint length.
    MessagePack,
}

/// How a transport must carry the bytes of a protocol.
///
/// Serialized as `"Text"` / `"Binary"`, the names used in the negotiate response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferFormat {
    /// UTF-8 text (WebSocket text frames; the only format Server-Sent Events can carry).
    Text,
    /// Arbitrary bytes (WebSocket binary frames).
    Binary,
}

const JSON_PING: &[u8] = b"{\"type\":6}\x1e";
const MSGPACK_PING: &[u8] = &[0x02, 0x91, 0x06];

impl Protocol {
    /// Every supported protocol.
    pub const ALL: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

    /// The handshake name: `"json"` or `"messagepack"`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// The protocol with this handshake name, compared ASCII case-insensitively (as .NET does).
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The transfer format the transport must provide for this protocol.
    pub fn transfer_format(self) -> TransferFormat {
        match self {
            Protocol::Json => TransferFormat::Text,
            Protocol::MessagePack => TransferFormat::Binary,
        }
    }

    /// Whether a handshake asking for this protocol `version` can be accepted.
    ///
    /// Version 2 adds the stateful-reconnect messages (Ack, Sequence); a server accepts any
    /// version up to its own, like .NET does.
    pub fn is_version_supported(self, version: u32) -> bool {
        version <= 2
    }

    /// Parse one complete message from the front of `buf`, removing its bytes from `buf`.
    ///
    /// `Ok(None)`: `buf` holds no complete message yet (it may hold part of one) and nothing was
    /// removed. A message larger than `max_message_size` is
    /// [`ProtocolError::MessageTooLarge`]: for JSON that is also the case when the bytes seen so
    /// far contain no record separator and exceed the limit; for MessagePack it is decided from
    /// the declared length alone, before the body arrives.
    ///
    /// Argument, item and result values are zero-copy slices of the received frame.
    pub fn parse_message(
        self,
        buf: &mut BytesMut,
        max_message_size: usize,
    ) -> Result<Option<HubMessage>, ProtocolError> {
        match self {
            Protocol::Json => json::parse_message(buf, max_message_size),
            Protocol::MessagePack => msgpack::parse_message(buf, max_message_size),
        }
    }

    /// Append one framed message to `out`: JSON text followed by `0x1E`, or a varint length
    /// followed by a MessagePack array.
    ///
    /// Values held in the other protocol's encoding are transcoded; that is correct but slower
    /// than writing values already in this protocol's encoding. On error, `out` is left as it was.
    pub fn write_message(
        self,
        message: &HubMessage,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let result = match self {
            Protocol::Json => json::write_message(message, out),
            Protocol::MessagePack => msgpack::write_message(message, out),
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// [`write_message`](Self::write_message) into a fresh buffer.
    pub fn encode_message(self, message: &HubMessage) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(64);
        self.write_message(message, &mut out)?;
        Ok(out.freeze())
    }

    /// Serialize an application value in this protocol's encoding (structs become JSON objects
    /// or MessagePack maps keyed by field name).
    pub fn encode_value<T: Serialize + ?Sized>(self, value: &T) -> Result<RawValue, EncodeError> {
        RawValue::encode(self, value)
    }

    /// The framed Ping message: `{"type":6}` + `0x1E`, or `02 91 06`.
    pub fn ping_frame(self) -> Bytes {
        match self {
            Protocol::Json => Bytes::from_static(JSON_PING),
            Protocol::MessagePack => Bytes::from_static(MSGPACK_PING),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_name(p.name()), Some(p));
            assert_eq!(Protocol::from_name(&p.name().to_uppercase()), Some(p));
        }
        assert_eq!(
            Protocol::from_name("MessagePack"),
            Some(Protocol::MessagePack)
        );
        assert_eq!(Protocol::from_name("xml"), None);
        assert_eq!(Protocol::from_name(""), None);
    }

    #[test]
    fn transfer_formats() {
        assert_eq!(Protocol::Json.transfer_format(), TransferFormat::Text);
        assert_eq!(
            Protocol::MessagePack.transfer_format(),
            TransferFormat::Binary
        );
        assert_eq!(
            serde_json::to_string(&TransferFormat::Binary)
                .ok()
                .as_deref(),
            Some("\"Binary\"")
        );
    }

    #[test]
    fn versions() {
        for p in Protocol::ALL {
            assert!(p.is_version_supported(0));
            assert!(p.is_version_supported(1));
            assert!(p.is_version_supported(2));
            assert!(!p.is_version_supported(3));
        }
    }

    #[test]
    fn ping_frames_are_exact() {
        assert_eq!(&Protocol::Json.ping_frame()[..], b"{\"type\":6}\x1e");
        assert_eq!(&Protocol::MessagePack.ping_frame()[..], &[2, 0x91, 6]);
        for p in Protocol::ALL {
            assert_eq!(p.encode_message(&HubMessage::Ping), Ok(p.ping_frame()));
        }
    }
}
