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

    /// Append one framed Invocation of `target` whose arguments are serialized straight into
    /// `out`, with no intermediate value: what a server sends to many connections.
    /// `arguments` must serialize as a sequence (a tuple, slice or vector). The frame is the
    /// one [`write_message`](Self::write_message) writes for the same invocation with its
    /// arguments from [`encode_value`](Self::encode_value). On error, `out` is left as it was.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use signalr_protocol::Protocol;
    ///
    /// let mut out = BytesMut::new();
    /// Protocol::Json
    ///     .write_invocation(None, "newMessage", &("alice", "hi"), &mut out)
    ///     .unwrap();
    /// assert_eq!(
    ///     &out[..],
    ///     b"{\"type\":1,\"target\":\"newMessage\",\"arguments\":[\"alice\",\"hi\"]}\x1e"
    /// );
    /// ```
    pub fn write_invocation<A: Serialize + ?Sized>(
        self,
        invocation_id: Option<&str>,
        target: &str,
        arguments: &A,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let result = match self {
            Protocol::Json => json::write_invocation_of(invocation_id, target, arguments, out),
            Protocol::MessagePack => {
                msgpack::write_invocation_of(invocation_id, target, arguments, out)
            }
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

    /// The direct writer and the message writer must agree byte for byte, in both
    /// protocols, whatever the arguments: what recipients receive does not depend on the
    /// path that framed it.
    #[test]
    fn write_invocation_matches_write_message() {
        #[derive(Serialize)]
        struct Point {
            x: i32,
            label: &'static str,
        }
        let long = "é\u{1F600}\"\\".repeat(40);
        fn check<A: Serialize + ?Sized>(
            protocol: Protocol,
            id: Option<&str>,
            target: &str,
            args: &A,
        ) {
            let mut direct = BytesMut::from(&b"kept"[..]);
            protocol
                .write_invocation(id, target, args, &mut direct)
                .unwrap();
            let message = HubMessage::Invocation(crate::message::Invocation {
                invocation_id: id.map(str::to_owned),
                target: target.to_owned(),
                arguments: crate::message::Arguments::Encoded(protocol.encode_value(args).unwrap()),
                ..Default::default()
            });
            let mut expected = BytesMut::from(&b"kept"[..]);
            protocol.write_message(&message, &mut expected).unwrap();
            assert_eq!(direct, expected, "{protocol:?} {id:?} {target}");
        }
        for p in Protocol::ALL {
            check(p, None, "m", &("payload",));
            check(p, Some("42"), "Send", &("alice", 7, true, ()));
            check(p, Some(""), "empty id", &[(); 0]);
            check(p, None, "point", &[Point { x: -3, label: "a" }]);
            check(
                p,
                None,
                "long",
                &(long.as_str(), long.as_str(), long.as_str()),
            );
        }
    }

    #[test]
    fn a_failed_write_invocation_leaves_the_buffer_as_it_was() {
        struct Failing;
        impl Serialize for Failing {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        for p in Protocol::ALL {
            let mut out = BytesMut::from(&b"kept"[..]);
            assert!(
                p.write_invocation(None, "m", &(1, Failing), &mut out)
                    .is_err()
            );
            assert_eq!(&out[..], b"kept");
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
