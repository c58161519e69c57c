//! Property-style round trips with a seeded generator: random messages with random values are
//! written, cut into random pieces, parsed back, and transcoded between the two protocols.

mod common;

use bytes::BytesMut;
use common::*;
use serde_json::{Map, Number, Value};
use signalr_protocol::{
    Ack, Arguments, CompletionResult, HubMessage, Invocation, Protocol, RawValue, Sequence,
};

/// xorshift64*: small, deterministic, good enough to vary inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{1}", "\u{1e}", "é", "✓", "𝄞", "{",
            "]", "null",
        ];
        let len = self.below(12);
        (0..len)
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn value(&mut self, depth: u32) -> Value {
        let kinds = if depth >= 4 { 6 } else { 8 };
        match self.below(kinds) {
            0 => Value::Null,
            1 => Value::Bool(self.below(2) == 1),
            2 => Value::from(self.next() as i64 >> self.below(64)),
            3 => Value::from(self.next() >> self.below(64)),
            4 => Number::from_f64((self.next() as i64 >> 40) as f64 / 8.0)
                .map_or(Value::Null, Value::Number),
            5 => Value::String(self.string()),
            6 => Value::Array((0..self.below(5)).map(|_| self.value(depth + 1)).collect()),
            _ => {
                let mut map = Map::new();
                for _ in 0..self.below(5) {
                    map.insert(self.string(), self.value(depth + 1));
                }
                Value::Object(map)
            }
        }
    }

    fn raw(&mut self, protocol: Protocol) -> RawValue {
        let value = self.value(0);
        protocol.encode_value(&value).expect("encode")
    }

    fn id(&mut self) -> String {
        self.below(1000).to_string()
    }

    fn message(&mut self, protocol: Protocol) -> HubMessage {
        match self.below(9) {
            0 | 1 => {
                let invocation = Invocation {
                    // JSON does not carry headers out, so only MessagePack messages get them.
                    headers: if protocol == Protocol::MessagePack {
                        (0..self.below(3))
                            .map(|_| (format!("k{}", self.string()), format!("v{}", self.string())))
                            .collect()
                    } else {
                        Vec::new()
                    },
                    invocation_id: if self.below(2) == 0 {
                        Some(self.id())
                    } else {
                        None
                    },
                    target: format!("m{}", self.string()),
                    arguments: Arguments::Values(
                        (0..self.below(4)).map(|_| self.raw(protocol)).collect(),
                    ),
                    stream_ids: (0..self.below(3)).map(|_| self.id()).collect(),
                };
                if self.below(4) == 0 {
                    let mut invocation = invocation;
                    invocation.invocation_id = Some(self.id());
                    HubMessage::StreamInvocation(invocation)
                } else {
                    HubMessage::Invocation(invocation)
                }
            }
            2 => stream_item(&self.id(), self.raw(protocol)),
            3 => {
                let result = match self.below(3) {
                    0 => CompletionResult::Void,
                    1 => CompletionResult::Error(self.string()),
                    _ => CompletionResult::Value(self.raw(protocol)),
                };
                completion(&self.id(), result)
            }
            4 => cancel(&self.id()),
            5 => HubMessage::Ping,
            6 => {
                let error = if self.below(2) == 0 {
                    Some(self.string())
                } else {
                    None
                };
                close(error.as_deref(), self.below(2) == 0)
            }
            7 => HubMessage::Ack(Ack {
                sequence_id: self.next() >> self.below(64),
            }),
            _ => HubMessage::Sequence(Sequence {
                sequence_id: self.next() >> self.below(64),
            }),
        }
    }
}

#[test]
fn random_messages_survive_writing_and_chunked_parsing() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for protocol in Protocol::ALL {
        for _round in 0..60 {
            let messages: Vec<HubMessage> = (0..1 + rng.below(8))
                .map(|_| rng.message(protocol))
                .collect();
            let mut wire = BytesMut::new();
            for message in &messages {
                protocol.write_message(message, &mut wire).expect("write");
            }
            let mut buf = BytesMut::new();
            let mut parsed = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let take = (1 + rng.below(40) as usize).min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                parsed.extend(drain(protocol, &mut buf, 1 << 20).expect("parse"));
            }
            assert!(buf.is_empty());
            assert_eq!(parsed, messages);
        }
    }
}

#[test]
fn random_values_transcode_both_ways() {
    let mut rng = Rng(0xfeed_beef_0000_0042);
    for _ in 0..500 {
        let value = rng.value(0);
        let json = Protocol::Json.encode_value(&value).expect("encode");
        let mp = json.to_protocol(Protocol::MessagePack).expect("to msgpack");
        assert_eq!(mp.decode::<Value>().as_ref(), Ok(&value));
        let back = mp.to_protocol(Protocol::Json).expect("to json");
        assert_eq!(back.decode::<Value>().as_ref(), Ok(&value));

        let direct = Protocol::MessagePack.encode_value(&value).expect("encode");
        let json2 = direct.to_protocol(Protocol::Json).expect("to json");
        assert_eq!(json2.decode::<Value>().as_ref(), Ok(&value));
    }
}

#[test]
fn random_messages_cross_protocols() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for _ in 0..200 {
        // A message parsed from one protocol is written in the other and means the same.
        let source = if rng.below(2) == 0 {
            Protocol::Json
        } else {
            Protocol::MessagePack
        };
        let target = if source == Protocol::Json {
            Protocol::MessagePack
        } else {
            Protocol::Json
        };
        let message = rng.message(source);
        let frame = target.encode_message(&message).expect("write");
        let parsed = parse_one(target, &frame).expect("parse");
        assert_eq!(parsed.message_type(), message.message_type());
        let values = |m: &HubMessage| -> Vec<Value> {
            match m {
                HubMessage::Invocation(inv) | HubMessage::StreamInvocation(inv) => inv
                    .arguments
                    .clone()
                    .into_values()
                    .expect("values")
                    .iter()
                    .map(|v| v.decode::<Value>().expect("decode"))
                    .collect(),
                HubMessage::StreamItem(item) => vec![item.item.decode().expect("decode")],
                HubMessage::Completion(c) => match &c.result {
                    CompletionResult::Value(v) => vec![v.decode().expect("decode")],
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            }
        };
        assert_eq!(values(&parsed), values(&message));
    }
}
