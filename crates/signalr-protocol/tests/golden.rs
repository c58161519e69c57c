//! Golden bytes in both directions for every message type in both hub protocols.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use signalr_protocol::{
    Arguments, CompletionResult, HubMessage, Protocol, RawValue, framing::RECORD_SEPARATOR,
    message_type,
};

#[test]
fn golden_frames_parse_to_their_messages() {
    for case in all_cases() {
        let parsed = parse_one(case.protocol, &case.bytes)
            .unwrap_or_else(|err| panic!("{}: {err}", case.name));
        assert_eq!(parsed, case.message, "{}", case.name);
    }
}

#[test]
fn messages_write_to_their_golden_frames() {
    for case in all_cases().into_iter().filter(|c| c.canonical) {
        let written = case
            .protocol
            .encode_message(&case.message)
            .unwrap_or_else(|err| panic!("{}: {err}", case.name));
        assert_eq!(
            written[..],
            case.bytes[..],
            "{}: wrote {:?}",
            case.name,
            String::from_utf8_lossy(&written)
        );
    }
}

#[test]
fn every_message_type_has_a_canonical_golden_frame_in_both_protocols() {
    for protocol in Protocol::ALL {
        let types: std::collections::BTreeSet<u8> = all_cases()
            .into_iter()
            .filter(|c| c.protocol == protocol && c.canonical)
            .map(|c| c.message.message_type())
            .collect();
        assert_eq!(
            types.into_iter().collect::<Vec<_>>(),
            (1..=9).collect::<Vec<u8>>()
        );
    }
}

#[test]
fn parsed_messages_write_back_to_equal_messages() {
    for case in all_cases() {
        let written = case
            .protocol
            .encode_message(&case.message)
            .unwrap_or_else(|err| panic!("{}: {err}", case.name));
        let reparsed =
            parse_one(case.protocol, &written).unwrap_or_else(|err| panic!("{}: {err}", case.name));
        let mut expected = case.message.clone();
        // JSON never carries headers out.
        if case.protocol == Protocol::Json
            && let HubMessage::Invocation(inv) = &mut expected
        {
            inv.headers.clear();
        }
        assert_eq!(reparsed, expected, "{}", case.name);
    }
}

#[test]
fn json_invocation_is_byte_exact() {
    let message = HubMessage::Invocation(invocation(
        None,
        "Send",
        vec![Protocol::Json.encode_value("hello").expect("encode")],
    ));
    let frame = Protocol::Json.encode_message(&message).expect("encode");
    assert_eq!(
        &frame[..],
        b"{\"type\":1,\"target\":\"Send\",\"arguments\":[\"hello\"]}\x1e"
    );
    assert_eq!(frame.len(), 49);
}

#[test]
fn json_strings_are_read_with_and_without_escapes() {
    // Clients other than ours may escape any character; the target and id are unescaped
    // whichever way they were written. Whitespace between tokens is not part of a value.
    let cases: [(&str, Option<&str>, &str); 6] = [
        (r#"{"type":1,"target":"Send","arguments":[]}"#, None, "Send"),
        (
            r#"{"type":1,"target":"Send\u0041","arguments":[]}"#,
            None,
            "SendA",
        ),
        (
            r#"{"type":1,"invocationId":"7\"","target":"a\\b","arguments":[]}"#,
            Some("7\""),
            "a\\b",
        ),
        (
            r#"{"type":1,"invocationId":"\u00e9","target":"é","arguments":[]}"#,
            Some("é"),
            "é",
        ),
        (
            r#"{"type":1,"invocationId":"","target":"\/","arguments":[]}"#,
            None,
            "/",
        ),
        (
            "{ \"type\" :\t1 ,\n \"invocationId\" : \"7\" , \"target\" : \"Send\" , \"arguments\" : [ ] }",
            Some("7"),
            "Send",
        ),
    ];
    for (text, id, target) in cases {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(RECORD_SEPARATOR);
        match parse_one(Protocol::Json, &bytes).unwrap_or_else(|err| panic!("{text}: {err}")) {
            HubMessage::Invocation(inv) => {
                assert_eq!(inv.invocation_id.as_deref(), id, "{text}");
                assert_eq!(inv.target, target, "{text}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn json_never_writes_headers_and_skips_empty_ids() {
    let mut inv = invocation(Some(""), "a", vec![]);
    inv.headers = vec![("k".to_owned(), "v".to_owned())];
    let frame = Protocol::Json
        .encode_message(&HubMessage::Invocation(inv))
        .expect("encode");
    assert_eq!(
        &frame[..],
        b"{\"type\":1,\"target\":\"a\",\"arguments\":[]}\x1e"
    );
    let frame = Protocol::Json
        .encode_message(&stream_item("1", json("null")))
        .expect("encode");
    assert_eq!(
        &frame[..],
        b"{\"type\":2,\"invocationId\":\"1\",\"item\":null}\x1e"
    );
}

#[test]
fn messagepack_writes_headers() {
    let mut inv = invocation(None, "a", vec![]);
    inv.headers = vec![("k".to_owned(), "v".to_owned())];
    let frame = Protocol::MessagePack
        .encode_message(&HubMessage::Invocation(inv))
        .expect("encode");
    assert_eq!(frame[..], hex("0C 96 01 81 A1 6B A1 76 C0 A1 61 90 90")[..]);
}

#[test]
fn encoded_arguments_are_spliced_verbatim() {
    let args = Protocol::Json
        .encode_value(&("alice", "hello world"))
        .expect("encode");
    let mut inv = invocation(None, "broadcastMessage", vec![]);
    inv.arguments = Arguments::Encoded(args);
    let frame = Protocol::Json
        .encode_message(&HubMessage::Invocation(inv.clone()))
        .expect("encode");
    assert_eq!(
        &frame[..],
        b"{\"type\":1,\"target\":\"broadcastMessage\",\"arguments\":[\"alice\",\"hello world\"]}\x1e"
    );

    // The same encoded arguments transcode to MessagePack.
    let frame = Protocol::MessagePack
        .encode_message(&HubMessage::Invocation(inv))
        .expect("encode");
    let expected = {
        let mut body = hex("96 01 80 C0 B0");
        body.extend_from_slice(b"broadcastMessage");
        body.extend_from_slice(&[0x92, 0xa5]);
        body.extend_from_slice(b"alice");
        body.push(0xab);
        body.extend_from_slice(b"hello world");
        body.push(0x90);
        let mut framed = vec![body.len() as u8];
        framed.extend_from_slice(&body);
        framed
    };
    assert_eq!(frame[..], expected[..]);

    let mp_args = Protocol::MessagePack.encode_value(&(1, 2)).expect("encode");
    let mut inv = invocation(Some("0"), "Add", vec![]);
    inv.arguments = Arguments::Encoded(mp_args);
    let frame = Protocol::MessagePack
        .encode_message(&HubMessage::Invocation(inv.clone()))
        .expect("encode");
    assert_eq!(
        frame[..],
        hex("0D 96 01 80 A1 30 A3 41 64 64 92 01 02 90")[..]
    );
    assert_eq!(inv.arguments.len(), Ok(2));
    assert_eq!(inv.arguments.is_empty(), Ok(false));
    let values = inv.arguments.into_values().expect("split");
    assert_eq!(values, vec![mp(&[1]), mp(&[2])]);
}

#[test]
fn values_in_the_other_encoding_are_transcoded() {
    let json_item = stream_item("1", json(r#"{"a":[1,"x",null,true,1.5]}"#));
    let frame = Protocol::MessagePack
        .encode_message(&json_item)
        .expect("encode");
    let parsed = parse_one(Protocol::MessagePack, &frame).expect("parse");
    let HubMessage::StreamItem(item) = parsed else {
        panic!("expected a stream item, got {parsed:?}")
    };
    assert_eq!(
        item.item.to_protocol(Protocol::Json).expect("to json"),
        json(r#"{"a":[1,"x",null,true,1.5]}"#)
    );

    let mp_result = completion("1", CompletionResult::Value(mp(&hex("92 A1 61 C3"))));
    let frame = Protocol::Json.encode_message(&mp_result).expect("encode");
    assert_eq!(
        &frame[..],
        b"{\"type\":3,\"invocationId\":\"1\",\"result\":[\"a\",true]}\x1e"
    );
}

#[test]
fn write_errors_leave_the_buffer_unchanged() {
    let bad = stream_item(
        "1",
        RawValue::from_encoded(Protocol::MessagePack, Bytes::from_static(&[0xc1])),
    );
    let mut out = BytesMut::from(&b"prefix"[..]);
    assert!(Protocol::Json.write_message(&bad, &mut out).is_err());
    assert_eq!(&out[..], b"prefix");
    let bad = stream_item("1", json("[1,"));
    assert!(Protocol::MessagePack.write_message(&bad, &mut out).is_err());
    assert_eq!(&out[..], b"prefix");
}

#[test]
fn write_message_appends() {
    let mut out = BytesMut::new();
    for protocol in Protocol::ALL {
        out.clear();
        protocol
            .write_message(&HubMessage::Ping, &mut out)
            .expect("write");
        protocol
            .write_message(&close(None, false), &mut out)
            .expect("write");
        let messages = drain(protocol, &mut out, 1024).expect("parse");
        assert_eq!(messages, vec![HubMessage::Ping, close(None, false)]);
    }
}

#[test]
fn long_messagepack_messages_get_multi_byte_prefixes() {
    for len in [100usize, 130, 20_000, 70_000] {
        let text = "x".repeat(len);
        let message = completion("1", CompletionResult::Error(text.clone()));
        let frame = Protocol::MessagePack
            .encode_message(&message)
            .expect("encode");
        let (payload_len, prefix_len) =
            signalr_protocol::framing::binary::read_length_prefix(&frame)
                .expect("prefix")
                .expect("complete prefix");
        assert_eq!(prefix_len + payload_len, frame.len());
        assert_eq!(parse_one(Protocol::MessagePack, &frame), Ok(message));
        let json_frame = Protocol::Json
            .encode_message(&completion("1", CompletionResult::Error(text)))
            .expect("encode");
        assert_eq!(json_frame.last(), Some(&RECORD_SEPARATOR));
    }
}

#[test]
fn message_type_ids() {
    assert_eq!(HubMessage::Ping.message_type(), message_type::PING);
    assert!(!HubMessage::Ping.is_trackable());
    assert!(cancel("1").is_trackable());
}
