//! Golden frames shared by the integration tests: bytes as the official clients and .NET send
//! them, with the messages they stand for.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use signalr_protocol::{
    Ack, Arguments, CancelInvocation, Close, Completion, CompletionResult, HubMessage, Invocation,
    Protocol, ProtocolError, RawValue, Sequence, StreamItem,
};

/// One golden frame.
pub(crate) struct Golden {
    pub(crate) name: &'static str,
    pub(crate) protocol: Protocol,
    pub(crate) bytes: Vec<u8>,
    pub(crate) message: HubMessage,
    /// Whether writing `message` gives exactly `bytes` (false for accepted-but-not-emitted
    /// forms, e.g. reordered JSON properties or 5-element MessagePack invocations).
    pub(crate) canonical: bool,
}

pub(crate) fn json(text: &str) -> RawValue {
    RawValue::from_encoded(Protocol::Json, Bytes::copy_from_slice(text.as_bytes()))
}

pub(crate) fn mp(bytes: &[u8]) -> RawValue {
    RawValue::from_encoded(Protocol::MessagePack, Bytes::copy_from_slice(bytes))
}

pub(crate) fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad hex {h}")))
        .collect()
}

pub(crate) fn invocation(id: Option<&str>, target: &str, args: Vec<RawValue>) -> Invocation {
    Invocation {
        headers: Vec::new(),
        invocation_id: id.map(str::to_owned),
        target: target.to_owned(),
        arguments: Arguments::Values(args),
        stream_ids: Vec::new(),
    }
}

pub(crate) fn completion(id: &str, result: CompletionResult) -> HubMessage {
    HubMessage::Completion(Completion {
        headers: Vec::new(),
        invocation_id: id.to_owned(),
        result,
    })
}

pub(crate) fn stream_item(id: &str, item: RawValue) -> HubMessage {
    HubMessage::StreamItem(StreamItem {
        headers: Vec::new(),
        invocation_id: id.to_owned(),
        item,
    })
}

pub(crate) fn cancel(id: &str) -> HubMessage {
    HubMessage::CancelInvocation(CancelInvocation {
        headers: Vec::new(),
        invocation_id: id.to_owned(),
    })
}

pub(crate) fn close(error: Option<&str>, allow_reconnect: bool) -> HubMessage {
    HubMessage::Close(Close {
        error: error.map(str::to_owned),
        allow_reconnect,
    })
}

fn j(name: &'static str, text: &str, message: HubMessage, canonical: bool) -> Golden {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0x1e);
    Golden {
        name,
        protocol: Protocol::Json,
        bytes,
        message,
        canonical,
    }
}

fn m(name: &'static str, hex_text: &str, message: HubMessage, canonical: bool) -> Golden {
    Golden {
        name,
        protocol: Protocol::MessagePack,
        bytes: hex(hex_text),
        message,
        canonical,
    }
}

pub(crate) fn json_cases() -> Vec<Golden> {
    let mut upload = invocation(Some("1"), "Upload", vec![json("\"a\"")]);
    upload.stream_ids = vec!["2".to_owned(), "3".to_owned()];
    let mut with_headers = invocation(None, "a", vec![]);
    with_headers.headers = vec![
        ("k".to_owned(), "v".to_owned()),
        ("x".to_owned(), "y".to_owned()),
    ];
    vec![
        j(
            "invocation without id",
            r#"{"type":1,"target":"Send","arguments":["hello"]}"#,
            HubMessage::Invocation(invocation(None, "Send", vec![json("\"hello\"")])),
            true,
        ),
        j(
            "invocation with id",
            r#"{"type":1,"invocationId":"0","target":"SendMessage","arguments":["bob","hi"]}"#,
            HubMessage::Invocation(invocation(
                Some("0"),
                "SendMessage",
                vec![json("\"bob\""), json("\"hi\"")],
            )),
            true,
        ),
        j(
            "invocation, properties in client order",
            r#"{"arguments":["bob","hi"],"invocationId":"0","target":"SendMessage","type":1}"#,
            HubMessage::Invocation(invocation(
                Some("0"),
                "SendMessage",
                vec![json("\"bob\""), json("\"hi\"")],
            )),
            false,
        ),
        j(
            "invocation with stream ids",
            r#"{"type":1,"invocationId":"1","target":"Upload","arguments":["a"],"streamIds":["2","3"]}"#,
            HubMessage::Invocation(upload),
            true,
        ),
        j(
            "invocation with empty id and headers",
            r#"{"type":1,"invocationId":"","target":"a","arguments":[],"headers":{"k":"v","x":"y"}}"#,
            HubMessage::Invocation(with_headers),
            false,
        ),
        j(
            "invocation with whitespace, escapes and nested values",
            "{ \"type\" : 1 , \"target\" : \"a\\\"b\u{e9}\" , \"arguments\" : [ {\"x\": [1, 2.5, null]} , true ] }",
            HubMessage::Invocation(invocation(
                None,
                "a\"b\u{e9}",
                vec![json("{\"x\": [1, 2.5, null]}"), json("true")],
            )),
            false,
        ),
        j(
            "stream invocation",
            r#"{"type":4,"invocationId":"1","target":"Counter","arguments":[3]}"#,
            HubMessage::StreamInvocation(invocation(Some("1"), "Counter", vec![json("3")])),
            true,
        ),
        j(
            "stream item",
            r#"{"type":2,"invocationId":"1","item":0}"#,
            stream_item("1", json("0")),
            true,
        ),
        j(
            "null stream item",
            r#"{"type":2,"invocationId":"1","item":null}"#,
            stream_item("1", json("null")),
            true,
        ),
        j(
            "completion with null result",
            r#"{"type":3,"invocationId":"0","result":null}"#,
            completion("0", CompletionResult::Value(json("null"))),
            true,
        ),
        j(
            "completion with object result",
            r#"{"type":3,"invocationId":"0","result":{"a":[1,{"b":"c"}]}}"#,
            completion("0", CompletionResult::Value(json(r#"{"a":[1,{"b":"c"}]}"#))),
            true,
        ),
        j(
            "void completion",
            r#"{"type":3,"invocationId":"0"}"#,
            completion("0", CompletionResult::Void),
            true,
        ),
        j(
            "error completion",
            r#"{"type":3,"invocationId":"0","error":"An unexpected error occurred invoking 'SendMessage' on the server."}"#,
            completion(
                "0",
                CompletionResult::Error(
                    "An unexpected error occurred invoking 'SendMessage' on the server.".to_owned(),
                ),
            ),
            true,
        ),
        j(
            "completion with null error and a result",
            r#"{"type":3,"error":null,"invocationId":"0","result":1}"#,
            completion("0", CompletionResult::Value(json("1"))),
            false,
        ),
        j(
            "cancel invocation",
            r#"{"type":5,"invocationId":"1"}"#,
            cancel("1"),
            true,
        ),
        j("ping", r#"{"type":6}"#, HubMessage::Ping, true),
        j(
            "ping with unknown properties",
            r#"{"type":6,"future":{"a":[1,2,{"b":null}]},"headers":{"k":"v"}}"#,
            HubMessage::Ping,
            false,
        ),
        j("close", r#"{"type":7}"#, close(None, false), true),
        j(
            "close with error and allowReconnect",
            r#"{"type":7,"error":"Connection closed with an error.","allowReconnect":true}"#,
            close(Some("Connection closed with an error."), true),
            true,
        ),
        j(
            "close with error",
            r#"{"type":7,"error":"bye"}"#,
            close(Some("bye"), false),
            true,
        ),
        j(
            "close with allowReconnect false",
            r#"{"type":7,"allowReconnect":false}"#,
            close(None, false),
            false,
        ),
        j(
            "ack",
            r#"{"type":8,"sequenceId":12}"#,
            HubMessage::Ack(Ack { sequence_id: 12 }),
            true,
        ),
        j(
            "sequence",
            r#"{"type":9,"sequenceId":13}"#,
            HubMessage::Sequence(Sequence { sequence_id: 13 }),
            true,
        ),
    ]
}

pub(crate) fn msgpack_cases() -> Vec<Golden> {
    let mut add = invocation(Some("0"), "Add", vec![mp(&[1]), mp(&[2])]);
    add.headers = vec![("k".to_owned(), "v".to_owned())];
    let mut upload = invocation(Some("1"), "Up", vec![]);
    upload.stream_ids = vec!["2".to_owned()];
    vec![
        m(
            "completion with result",
            "09 95 03 80 A1 31 03 A2 68 69",
            completion("1", CompletionResult::Value(mp(&[0xa2, b'h', b'i']))),
            true,
        ),
        m(
            "completion with nil result",
            "07 95 03 80 A1 31 03 C0",
            completion("1", CompletionResult::Value(mp(&[0xc0]))),
            true,
        ),
        m(
            "void completion",
            "06 94 03 80 A1 37 02",
            completion("7", CompletionResult::Void),
            true,
        ),
        m(
            "error completion",
            "0B 95 03 80 A1 32 01 A4 62 6F 6F 6D",
            completion("2", CompletionResult::Error("boom".to_owned())),
            true,
        ),
        m(
            "invocation without id",
            "0E 96 01 80 C0 A4 52 65 63 76 91 A2 68 69 90",
            HubMessage::Invocation(invocation(None, "Recv", vec![mp(&[0xa2, b'h', b'i'])])),
            true,
        ),
        m(
            "invocation Send(hello)",
            "11 96 01 80 c0 a4 53 65 6e 64 91 a5 68 65 6c 6c 6f 90",
            HubMessage::Invocation(invocation(None, "Send", vec![mp(b"\xa5hello")])),
            true,
        ),
        m(
            "5-element invocation with headers",
            "10 95 01 81 A1 6B A1 76 A1 30 A3 41 64 64 92 01 02",
            HubMessage::Invocation(add.clone()),
            false,
        ),
        m(
            "6-element invocation with headers",
            "11 96 01 81 A1 6B A1 76 A1 30 A3 41 64 64 92 01 02 90",
            HubMessage::Invocation(add),
            true,
        ),
        m(
            "invocation with stream ids",
            "0C 96 01 80 A1 31 A2 55 70 90 91 A1 32",
            HubMessage::Invocation(upload),
            true,
        ),
        m(
            "invocation with empty-string id",
            "08 96 01 80 A0 A1 66 90 90",
            HubMessage::Invocation(invocation(None, "f", vec![])),
            false,
        ),
        m(
            "invocation with wide integer encodings",
            "0D 96 CC 01 80 C0 A1 66 DC 00 01 D0 FF 90",
            HubMessage::Invocation(invocation(None, "f", vec![mp(&[0xd0, 0xff])])),
            false,
        ),
        m(
            "stream invocation",
            "10 96 04 80 A1 31 A7 43 6F 75 6E 74 65 72 91 03 90",
            HubMessage::StreamInvocation(invocation(Some("1"), "Counter", vec![mp(&[3])])),
            true,
        ),
        m(
            "5-element stream invocation",
            "0F 95 04 80 A1 31 A7 43 6F 75 6E 74 65 72 91 03",
            HubMessage::StreamInvocation(invocation(Some("1"), "Counter", vec![mp(&[3])])),
            false,
        ),
        m(
            "stream item",
            "06 94 02 80 A1 33 05",
            stream_item("3", mp(&[5])),
            true,
        ),
        m(
            "stream item with a map",
            "0C 94 02 80 A1 33 82 A1 61 01 A1 62 C0",
            stream_item("3", mp(&hex("82 A1 61 01 A1 62 C0"))),
            true,
        ),
        m("cancel invocation", "05 93 05 80 A1 31", cancel("1"), true),
        m("ping", "02 91 06", HubMessage::Ping, true),
        m(
            "close without error, allowReconnect",
            "04 93 07 C0 C3",
            close(None, true),
            true,
        ),
        m(
            "close with error",
            "07 93 07 A3 62 79 65 C2",
            close(Some("bye"), false),
            true,
        ),
        m("2-element close", "03 92 07 C0", close(None, false), false),
        m(
            "ack",
            "05 92 08 CD 01 2C",
            HubMessage::Ack(Ack { sequence_id: 300 }),
            true,
        ),
        m(
            "ack with a 64-bit sequence id",
            "0B 92 08 CF 00 00 00 00 00 00 01 2C",
            HubMessage::Ack(Ack { sequence_id: 300 }),
            false,
        ),
        m(
            "sequence",
            "03 92 09 05",
            HubMessage::Sequence(Sequence { sequence_id: 5 }),
            true,
        ),
    ]
}

pub(crate) fn all_cases() -> Vec<Golden> {
    let mut cases = json_cases();
    cases.extend(msgpack_cases());
    cases
}

/// Parse every complete message in `buf`.
pub(crate) fn drain(
    protocol: Protocol,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Vec<HubMessage>, ProtocolError> {
    let mut out = Vec::new();
    while let Some(message) = protocol.parse_message(buf, max)? {
        out.push(message);
    }
    Ok(out)
}

/// Parse `bytes`, which must hold exactly one message.
pub(crate) fn parse_one(protocol: Protocol, bytes: &[u8]) -> Result<HubMessage, ProtocolError> {
    let mut buf = BytesMut::from(bytes);
    let message = protocol.parse_message(&mut buf, 1 << 20)?;
    assert!(buf.is_empty(), "bytes left after one message: {buf:?}");
    Ok(message.unwrap_or_else(|| panic!("incomplete: {bytes:02x?}")))
}
