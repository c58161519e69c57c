//! What the load generator says on a WebSocket, and how it reads what comes back cheaply.
//!
//! Two families: SignalR (handshake, then JSON or MessagePack hub messages, built with
//! `signalr-protocol`) and Socket.IO (engine.io v4 over a WebSocket, for the peer servers).
//! Receivers never parse an envelope: [`Wire::scan`] splits a WebSocket message into hub
//! messages (record separators or varint prefixes) and looks for the send stamp in each
//! (see [`crate::stamp`]).

use bytes::{Bytes, BytesMut};
use signalr_protocol::framing::{RECORD_SEPARATOR, binary};
use signalr_protocol::{Arguments, HandshakeRequest, HubMessage, Invocation, Protocol};
use tokio_tungstenite::tungstenite::Message;

use crate::stamp::{self, Stamp};

/// The protocol family and hub protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// ASP.NET Core SignalR with this hub protocol.
    SignalR(Protocol),
    /// Socket.IO v5 over engine.io v4, WebSocket only (`transports: ['websocket']`).
    SocketIo,
}

/// What one received WebSocket message held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Messages carrying a send stamp.
    pub deliveries: u32,
    /// SignalR Ping messages, or engine.io pings (which must be answered with a pong).
    pub pings: u32,
    /// A SignalR Close message or an engine.io close / Socket.IO disconnect, as received.
    pub close: Option<String>,
    /// Anything else (completions, acks, handshake leftovers).
    pub other: u32,
}

impl Wire {
    /// The WebSocket message type of this wire's frames.
    pub fn message(self, bytes: Bytes) -> Message {
        match self {
            Wire::SignalR(Protocol::MessagePack) => Message::Binary(bytes),
            Wire::SignalR(Protocol::Json) | Wire::SocketIo => match String::from_utf8(bytes.into())
            {
                Ok(text) => Message::text(text),
                Err(error) => Message::Binary(Bytes::from(error.into_bytes())),
            },
        }
    }

    /// The SignalR handshake request (nothing for Socket.IO, whose client speaks second).
    pub fn handshake(self) -> Option<Bytes> {
        match self {
            Wire::SignalR(protocol) => {
                let mut out = BytesMut::new();
                HandshakeRequest {
                    protocol: protocol.name().to_owned(),
                    version: 1,
                }
                .write(&mut out);
                Some(out.freeze())
            }
            Wire::SocketIo => None,
        }
    }

    /// A hub invocation of `target` with string arguments (SignalR), or a Socket.IO event
    /// named `target` whose data is the last argument. `id` asks for a completion / ack.
    pub fn invocation(self, id: Option<&str>, target: &str, arguments: &[&str]) -> Bytes {
        match self {
            Wire::SignalR(protocol) => {
                let values = arguments
                    .iter()
                    .map(|argument| protocol.encode_value(argument))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_default();
                let message = HubMessage::Invocation(Invocation {
                    invocation_id: id.map(str::to_owned),
                    target: target.to_owned(),
                    arguments: Arguments::Values(values),
                    ..Invocation::default()
                });
                protocol.encode_message(&message).unwrap_or_default()
            }
            Wire::SocketIo => {
                let mut array = vec![serde_json::Value::from(target)];
                array.extend(arguments.iter().map(|a| serde_json::Value::from(*a)));
                let body = serde_json::Value::Array(array).to_string();
                Bytes::from(format!("42{}{body}", id.unwrap_or("")))
            }
        }
    }

    /// A keep-alive Ping (SignalR). Socket.IO clients only answer the server's pings.
    pub fn ping(self) -> Option<Bytes> {
        match self {
            Wire::SignalR(protocol) => Some(protocol.ping_frame()),
            Wire::SocketIo => None,
        }
    }

    /// Count what one WebSocket message holds, calling `on_stamp` for every stamp found.
    pub fn scan(self, data: &[u8], mut on_stamp: impl FnMut(Stamp)) -> Scan {
        let mut scan = Scan::default();
        match self {
            Wire::SignalR(Protocol::Json) => {
                let (mut start, mut hint) = (0, 0);
                let ends = memchr::memchr_iter(RECORD_SEPARATOR, data).chain([data.len()]);
                for end in ends {
                    let record = &data[start..end];
                    start = end + 1;
                    if record.is_empty() {
                        continue;
                    }
                    if let Some(stamp) = stamp::find_near(record, &mut hint) {
                        scan.deliveries += 1;
                        on_stamp(stamp);
                    } else if contains(record, b"\"type\":6") {
                        scan.pings += 1;
                    } else if contains(record, b"\"type\":7") {
                        scan.close = Some(String::from_utf8_lossy(record).into_owned());
                    } else {
                        scan.other += 1;
                    }
                }
            }
            Wire::SignalR(Protocol::MessagePack) => {
                let (mut rest, mut hint) = (data, 0);
                while !rest.is_empty() {
                    let Ok(Some((len, prefix))) = binary::read_length_prefix(rest) else {
                        scan.other += 1;
                        break;
                    };
                    let end = (prefix + len).min(rest.len());
                    let payload = &rest[prefix..end];
                    rest = &rest[end..];
                    // [type, ...] as a fixarray: 0x9N then the type as a positive fixint.
                    let kind = match payload {
                        [0x91..=0x9f, kind, ..] => *kind,
                        _ => 0,
                    };
                    if let Some(stamp) = stamp::find_near(payload, &mut hint) {
                        scan.deliveries += 1;
                        on_stamp(stamp);
                    } else if kind == 6 {
                        scan.pings += 1;
                    } else if kind == 7 {
                        scan.close = Some(String::from_utf8_lossy(payload).into_owned());
                    } else {
                        scan.other += 1;
                    }
                }
            }
            Wire::SocketIo => match data {
                b"2" => scan.pings += 1,
                [b'4', b'2', ..] => match stamp::find(data) {
                    Some(stamp) => {
                        scan.deliveries += 1;
                        on_stamp(stamp);
                    }
                    None => scan.other += 1,
                },
                b"1" | [b'4', b'1', ..] => {
                    scan.close = Some(String::from_utf8_lossy(data).into_owned());
                }
                _ => scan.other += 1,
            },
        }
        scan
    }

    /// The answer to a server ping, if this wire answers pings (engine.io does).
    pub fn pong(self) -> Option<Bytes> {
        match self {
            Wire::SocketIo => Some(Bytes::from_static(b"3")),
            Wire::SignalR(_) => None,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamps(wire: Wire, data: &[u8]) -> (Scan, Vec<Stamp>) {
        let mut found = Vec::new();
        let scan = wire.scan(data, |s| found.push(s));
        (scan, found)
    }

    #[test]
    fn json_batches_are_split_and_classified() {
        let wire = Wire::SignalR(Protocol::Json);
        let a = wire.invocation(None, "m", &[&stamp::payload(1, 10, 30)]);
        let b = wire.invocation(None, "m", &[&stamp::payload(1, 11, 30)]);
        let mut data = Vec::new();
        data.extend_from_slice(&a);
        data.extend_from_slice(&b);
        data.extend_from_slice(&wire.ping().unwrap());
        data.extend_from_slice(b"{\"type\":7,\"error\":\"slow\",\"allowReconnect\":true}\x1e");
        let (scan, found) = stamps(wire, &data);
        assert_eq!(scan.deliveries, 2);
        assert_eq!(scan.pings, 1);
        assert!(scan.close.unwrap().contains("slow"));
        assert_eq!(found[1].sent_micros, 11);
    }

    #[test]
    fn messagepack_batches_are_split_and_classified() {
        let wire = Wire::SignalR(Protocol::MessagePack);
        let mut data = Vec::new();
        for i in 0..3 {
            data.extend_from_slice(&wire.invocation(None, "m", &[&stamp::payload(2, i, 64)]));
        }
        data.extend_from_slice(&wire.ping().unwrap());
        let close = HubMessage::Close(signalr_protocol::Close {
            error: Some("full".into()),
            allow_reconnect: true,
        });
        data.extend_from_slice(&Protocol::MessagePack.encode_message(&close).unwrap());
        let (scan, found) = stamps(wire, &data);
        assert_eq!(scan.deliveries, 3);
        assert_eq!(scan.pings, 1);
        assert!(scan.close.is_some());
        assert_eq!(found.iter().map(|s| s.sent_micros).sum::<u64>(), 3);
    }

    #[test]
    fn socket_io_frames() {
        let wire = Wire::SocketIo;
        let event = wire.invocation(None, "bcast", &["@1,2;xx"]);
        assert_eq!(&event[..], b"42[\"bcast\",\"@1,2;xx\"]");
        assert_eq!(
            &wire.invocation(Some("7"), "join", &["r"])[..],
            b"427[\"join\",\"r\"]"
        );
        let (scan, found) = stamps(wire, b"42[\"m\",\"@1,2;xx\"]");
        assert_eq!((scan.deliveries, found.len()), (1, 1));
        assert_eq!(stamps(wire, b"2").0.pings, 1);
        assert!(stamps(wire, b"1").0.close.is_some());
    }
}
