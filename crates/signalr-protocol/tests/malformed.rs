//! Malformed and hostile input: each case is a specific typed error, never a panic, a hang or
//! a large allocation.

mod common;

use bytes::BytesMut;
use common::*;
use signalr_protocol::{HubMessage, Protocol, ProtocolError};

const MAX: usize = 32 * 1024;

fn parse(protocol: Protocol, bytes: &[u8]) -> Result<Option<HubMessage>, ProtocolError> {
    let mut buf = BytesMut::from(bytes);
    protocol.parse_message(&mut buf, MAX)
}

fn parse_json(text: &str) -> Result<Option<HubMessage>, ProtocolError> {
    let mut buf = BytesMut::from(text.as_bytes());
    buf.extend_from_slice(&[0x1e]);
    // A generous limit, so that the nesting tests reach the parser.
    Protocol::Json.parse_message(&mut buf, 1 << 20)
}

fn parse_mp(body: &[u8]) -> Result<Option<HubMessage>, ProtocolError> {
    let mut buf = BytesMut::new();
    signalr_protocol::framing::binary::write_length_prefix(body.len(), &mut buf);
    buf.extend_from_slice(body);
    Protocol::MessagePack.parse_message(&mut buf, 1 << 20)
}

fn missing(message_type: u8, field: &'static str) -> ProtocolError {
    ProtocolError::MissingField {
        message_type,
        field,
    }
}

fn invalid_field(result: Result<Option<HubMessage>, ProtocolError>, name: &str) {
    match result {
        Err(ProtocolError::InvalidField { field, .. }) if field == name => {}
        other => panic!("expected an invalid '{name}', got {other:?}"),
    }
}

fn invalid_json(result: Result<Option<HubMessage>, ProtocolError>) {
    assert!(
        matches!(result, Err(ProtocolError::InvalidJson(_))),
        "expected invalid JSON, got {result:?}"
    );
}

fn invalid_msgpack(result: Result<Option<HubMessage>, ProtocolError>) {
    assert!(
        matches!(result, Err(ProtocolError::InvalidMessagePack(_))),
        "expected invalid MessagePack, got {result:?}"
    );
}

#[test]
fn json_syntax_errors() {
    invalid_json(parse_json(r#"{"type":1,"target":"a","arguments":[}"#));
    invalid_json(parse_json(r#"{"type":1"#));
    invalid_json(parse_json(r#"{"type":6,}"#));
    invalid_json(parse_json(r#"{"type":6} trailing"#));
    invalid_json(parse_json(r#"{"type":6,"type":6}"#));
    invalid_json(parse_json(""));
    invalid_json(parse_json("   "));
    invalid_json(parse(
        Protocol::Json,
        b"{\"type\":1,\"target\":\"\xff\",\"arguments\":[]}\x1e",
    ));
    let err = parse_json("{\"type\":").expect_err("invalid");
    assert!(
        err.to_string().starts_with("Invalid JSON hub message: "),
        "{err}"
    );
}

#[test]
fn json_that_is_not_an_object() {
    for text in ["[1]", "1", "\"x\"", "null", "true"] {
        invalid_json(parse_json(text));
    }
}

#[test]
fn json_type_problems() {
    assert_eq!(parse_json(r#"{"target":"a"}"#), Err(missing(0, "type")));
    for bad in [
        r#""1""#,
        "1.5",
        "1.0",
        "1e0",
        "null",
        "[1]",
        "{}",
        "true",
        "99999999999999999999",
    ] {
        invalid_field(parse_json(&format!(r#"{{"type":{bad}}}"#)), "type");
    }
    assert_eq!(
        parse_json(r#"{"type":42}"#),
        Err(ProtocolError::UnknownMessageType(42))
    );
    assert_eq!(
        parse_json(r#"{"type":0}"#),
        Err(ProtocolError::UnknownMessageType(0))
    );
    assert_eq!(
        parse_json(r#"{"type":-3}"#),
        Err(ProtocolError::UnknownMessageType(-3))
    );
}

#[test]
fn an_unknown_type_is_consumed_so_the_next_message_parses() {
    let mut buf = BytesMut::from(&b"{\"type\":42,\"x\":1}\x1e{\"type\":6}\x1e"[..]);
    assert_eq!(
        Protocol::Json.parse_message(&mut buf, MAX),
        Err(ProtocolError::UnknownMessageType(42))
    );
    assert_eq!(
        Protocol::Json.parse_message(&mut buf, MAX),
        Ok(Some(HubMessage::Ping))
    );
    let mut buf = BytesMut::from(&hex("02 91 2A 02 91 06")[..]);
    assert_eq!(
        Protocol::MessagePack.parse_message(&mut buf, MAX),
        Err(ProtocolError::UnknownMessageType(42))
    );
    assert_eq!(
        Protocol::MessagePack.parse_message(&mut buf, MAX),
        Ok(Some(HubMessage::Ping))
    );
}

#[test]
fn json_missing_and_mistyped_properties() {
    assert_eq!(
        parse_json(r#"{"type":1,"arguments":[]}"#),
        Err(missing(1, "target"))
    );
    assert_eq!(
        parse_json(r#"{"type":1,"target":null,"arguments":[]}"#),
        Err(missing(1, "target"))
    );
    invalid_field(
        parse_json(r#"{"type":1,"target":5,"arguments":[]}"#),
        "target",
    );
    assert_eq!(
        parse_json(r#"{"type":1,"target":"a"}"#),
        Err(missing(1, "arguments"))
    );
    for bad in ["{}", "\"x\"", "1", "null", "true", "{\"a\":[1]}"] {
        invalid_field(
            parse_json(&format!(r#"{{"type":1,"target":"a","arguments":{bad}}}"#)),
            "arguments",
        );
    }
    invalid_field(
        parse_json(r#"{"type":1,"target":"a","arguments":[],"streamIds":[1]}"#),
        "streamIds",
    );
    invalid_field(
        parse_json(r#"{"type":1,"invocationId":7,"target":"a","arguments":[]}"#),
        "invocationId",
    );
    assert_eq!(
        parse_json(r#"{"type":4,"target":"a","arguments":[]}"#),
        Err(missing(4, "invocationId"))
    );
    assert_eq!(
        parse_json(r#"{"type":4,"invocationId":"","target":"a","arguments":[]}"#),
        Err(missing(4, "invocationId"))
    );
    assert_eq!(
        parse_json(r#"{"type":2,"invocationId":"1"}"#),
        Err(missing(2, "item"))
    );
    assert_eq!(
        parse_json(r#"{"type":2,"item":1}"#),
        Err(missing(2, "invocationId"))
    );
    assert_eq!(parse_json(r#"{"type":3}"#), Err(missing(3, "invocationId")));
    assert_eq!(parse_json(r#"{"type":5}"#), Err(missing(5, "invocationId")));
    invalid_field(
        parse_json(r#"{"type":3,"invocationId":"1","result":1,"error":"e"}"#),
        "result",
    );
    invalid_field(
        parse_json(r#"{"type":3,"invocationId":"1","error":1}"#),
        "error",
    );
    invalid_field(
        parse_json(r#"{"type":7,"allowReconnect":"yes"}"#),
        "allowReconnect",
    );
    invalid_field(parse_json(r#"{"type":7,"error":{}}"#), "error");
    assert_eq!(parse_json(r#"{"type":8}"#), Err(missing(8, "sequenceId")));
    for bad in ["-1", "1.5", "\"1\"", "null"] {
        invalid_field(
            parse_json(&format!(r#"{{"type":9,"sequenceId":{bad}}}"#)),
            "sequenceId",
        );
    }
}

#[test]
fn json_headers_that_are_not_strings_are_ignored() {
    let parsed = parse_json(r#"{"type":1,"target":"a","arguments":[],"headers":{"k":1}}"#);
    assert_eq!(
        parsed,
        Ok(Some(HubMessage::Invocation(invocation(None, "a", vec![]))))
    );
    let parsed = parse_json(r#"{"type":5,"invocationId":"1","headers":[1]}"#);
    assert_eq!(parsed, Ok(Some(cancel("1"))));
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let deep = "[".repeat(10_000);
    invalid_json(parse_json(&deep));
    let balanced = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    invalid_json(parse_json(&balanced));
    invalid_json(parse_json(&format!(
        r#"{{"type":1,"target":"a","arguments":{balanced}}}"#
    )));
    invalid_json(parse_json(&format!(
        r#"{{"type":2,"invocationId":"1","item":{}}}"#,
        "{\"a\":".repeat(10_000)
    )));
    invalid_json(parse_json(&format!(r#"{{"type":6,"unknown":{balanced}}}"#)));
    // Brackets inside strings do not count.
    let in_string = format!(r#"{{"type":2,"invocationId":"1","item":"{deep}"}}"#);
    assert!(matches!(
        parse_json(&in_string),
        Ok(Some(HubMessage::StreamItem(_)))
    ));
    // Up to the limit is fine (the message object is the first level).
    let ok = format!(
        r#"{{"type":2,"invocationId":"1","item":{}{}}}"#,
        "[".repeat(127),
        "]".repeat(127)
    );
    assert!(matches!(
        parse_json(&ok),
        Ok(Some(HubMessage::StreamItem(_)))
    ));
    let too_deep = format!(
        r#"{{"type":2,"invocationId":"1","item":{}{}}}"#,
        "[".repeat(128),
        "]".repeat(128)
    );
    invalid_json(parse_json(&too_deep));
    // Many brackets, little depth: accepted.
    let flat = format!(
        r#"{{"type":1,"target":"a","arguments":[{}[]]}}"#,
        "[],{},".repeat(200)
    );
    assert!(matches!(
        parse_json(&flat),
        Ok(Some(HubMessage::Invocation(_)))
    ));
}

#[test]
fn json_that_is_not_utf8_is_an_error() {
    for bad in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80"] {
        let mut message = br#"{"type":1,"target":"a","arguments":[""#.to_vec();
        message.extend_from_slice(bad);
        message.extend_from_slice(br#""]}"#);
        message.push(0x1e);
        let parsed = Protocol::Json.parse_message(&mut BytesMut::from(&message[..]), MAX);
        invalid_json(parsed);
    }
}

#[test]
fn json_size_limits() {
    // Exactly at the limit (payload without the separator) is accepted.
    let padding = " ".repeat(100 - r#"{"type":6}"#.len());
    let text = format!(r#"{{"type":6}}{padding}"#);
    assert_eq!(text.len(), 100);
    let mut buf = BytesMut::from(format!("{text}\x1e").as_bytes());
    assert_eq!(
        Protocol::Json.parse_message(&mut buf, 100),
        Ok(Some(HubMessage::Ping))
    );
    let mut buf = BytesMut::from(format!("{text} \x1e").as_bytes());
    assert_eq!(
        Protocol::Json.parse_message(&mut buf, 100),
        Err(ProtocolError::MessageTooLarge { max: 100 })
    );
    // No separator yet: up to the limit is incomplete, one byte more is too large.
    let mut buf = BytesMut::from(&[b' '; 100][..]);
    assert_eq!(Protocol::Json.parse_message(&mut buf, 100), Ok(None));
    buf.extend_from_slice(b" ");
    assert_eq!(
        Protocol::Json.parse_message(&mut buf, 100),
        Err(ProtocolError::MessageTooLarge { max: 100 })
    );
}

#[test]
fn messagepack_framing_errors() {
    for prefix in [
        hex("80 80 80 80 80 01"),
        hex("80 80 80 80 08"),
        hex("FF FF FF FF FF"),
    ] {
        assert!(
            matches!(
                parse(Protocol::MessagePack, &prefix),
                Err(ProtocolError::InvalidFrame(_))
            ),
            "{prefix:02x?}"
        );
    }
    assert!(matches!(
        parse(Protocol::MessagePack, &[0x00]),
        Err(ProtocolError::InvalidFrame(_))
    ));
}

#[test]
fn messagepack_size_limits() {
    // Only the prefix has arrived, declaring more than the limit.
    let mut buf = BytesMut::from(&hex("FF FF 03")[..]);
    assert_eq!(
        Protocol::MessagePack.parse_message(&mut buf, MAX),
        Err(ProtocolError::MessageTooLarge { max: MAX })
    );
    let mut buf = BytesMut::from(&hex("FF FF FF FF 07")[..]);
    assert_eq!(
        Protocol::MessagePack.parse_message(&mut buf, MAX),
        Err(ProtocolError::MessageTooLarge { max: MAX })
    );
    // Exactly the limit is fine.
    let mut buf = BytesMut::from(&hex("03 92 09 05")[..]);
    assert!(matches!(
        Protocol::MessagePack.parse_message(&mut buf, 3),
        Ok(Some(HubMessage::Sequence(_)))
    ));
    let mut buf = BytesMut::from(&hex("03 92 09 05")[..]);
    assert_eq!(
        Protocol::MessagePack.parse_message(&mut buf, 2),
        Err(ProtocolError::MessageTooLarge { max: 2 })
    );
}

#[test]
fn messagepack_structure_errors() {
    // Not an array.
    invalid_msgpack(parse_mp(&hex("06")));
    invalid_msgpack(parse_mp(&hex("81 01 02")));
    // Empty array.
    invalid_msgpack(parse_mp(&hex("90")));
    // Truncated: the array declares more elements than the frame holds.
    invalid_msgpack(parse_mp(&hex("96 01 80 C0")));
    // Truncated string.
    invalid_msgpack(parse_mp(&hex("96 01 80 C0 A5 61 62")));
    // Trailing bytes after the array.
    invalid_msgpack(parse_mp(&hex("91 06 C0")));
    // Reserved marker as a value.
    invalid_msgpack(parse_mp(&hex("94 02 80 A1 31 C1")));
    // Declared lengths far beyond the frame fail without allocating.
    invalid_msgpack(parse_mp(&hex("DD FF FF FF FF")));
    invalid_msgpack(parse_mp(&hex("96 01 80 C0 A1 61 DD FF FF FF FF 90")));
    invalid_msgpack(parse_mp(&hex("96 01 80 C0 DB FF FF FF FF")));
    invalid_msgpack(parse_mp(&hex("96 01 DF FF FF FF FF C0 A1 61 90 90")));
    invalid_msgpack(parse_mp(&hex("94 02 80 A1 31 DD FF FF FF FF")));
    invalid_msgpack(parse_mp(&hex("94 02 80 A1 31 C6 FF FF FF FF")));
    invalid_msgpack(parse_mp(&hex("94 02 80 A1 31 C9 FF FF FF FF 01")));
    invalid_msgpack(parse_mp(&hex("94 02 80 A1 31 DF 7F FF FF FF")));
    invalid_msgpack(parse_mp(&hex("94 02 80 A1 31 CB 00 00")));
}

#[test]
fn messagepack_missing_elements() {
    assert_eq!(parse_mp(&hex("93 01 80 C0")), Err(missing(1, "target")));
    assert_eq!(
        parse_mp(&hex("94 01 80 C0 A1 61")),
        Err(missing(1, "arguments"))
    );
    assert_eq!(parse_mp(&hex("91 01")), Err(missing(1, "headers")));
    assert_eq!(parse_mp(&hex("93 02 80 A1 31")), Err(missing(2, "item")));
    assert_eq!(
        parse_mp(&hex("93 03 80 A1 31")),
        Err(missing(3, "resultKind"))
    );
    assert_eq!(
        parse_mp(&hex("94 03 80 A1 31 03")),
        Err(missing(3, "result"))
    );
    assert_eq!(
        parse_mp(&hex("94 03 80 A1 31 01")),
        Err(missing(3, "error"))
    );
    assert_eq!(parse_mp(&hex("92 05 80")), Err(missing(5, "invocationId")));
    assert_eq!(parse_mp(&hex("91 07")), Err(missing(7, "error")));
    assert_eq!(parse_mp(&hex("91 08")), Err(missing(8, "sequenceId")));
    assert_eq!(
        parse_mp(&hex("95 04 80 C0 A1 61 90")),
        Err(missing(4, "invocationId"))
    );
    assert_eq!(
        parse_mp(&hex("94 02 80 C0 01")),
        Err(missing(2, "invocationId"))
    );
}

#[test]
fn messagepack_wrong_element_types() {
    invalid_field(parse_mp(&hex("91 A1 31")), "type");
    invalid_field(parse_mp(&hex("91 CA 00 00 00 00")), "type");
    invalid_field(parse_mp(&hex("96 01 90 C0 A1 61 90 90")), "headers");
    invalid_field(
        parse_mp(&hex("96 01 81 01 A1 76 C0 A1 61 90 90")),
        "headers",
    );
    invalid_field(parse_mp(&hex("96 01 80 05 A1 61 90 90")), "invocationId");
    invalid_field(parse_mp(&hex("96 01 80 C0 05 90 90")), "target");
    invalid_field(parse_mp(&hex("96 01 80 C0 A1 61 80 90")), "arguments");
    invalid_field(parse_mp(&hex("96 01 80 C0 A1 61 90 91 01")), "streamIds");
    invalid_field(parse_mp(&hex("96 01 80 C0 A1 61 90 05")), "streamIds");
    invalid_field(parse_mp(&hex("96 01 80 C0 A2 C3 28 90 90")), "target");
    invalid_field(parse_mp(&hex("94 03 80 A1 31 04")), "resultKind");
    invalid_field(parse_mp(&hex("94 03 80 A1 31 C0")), "resultKind");
    invalid_field(parse_mp(&hex("93 07 C0 01")), "allowReconnect");
    invalid_field(parse_mp(&hex("93 07 01 C2")), "error");
    invalid_field(parse_mp(&hex("92 08 FF")), "sequenceId");
    invalid_field(parse_mp(&hex("92 09 A1 31")), "sequenceId");
    assert_eq!(
        parse_mp(&hex("91 D0 FF")),
        Err(ProtocolError::UnknownMessageType(-1))
    );
    assert_eq!(
        parse_mp(&hex("91 CF FF FF FF FF FF FF FF FF")),
        Err(ProtocolError::UnknownMessageType(i64::MAX))
    );
}

#[test]
fn messagepack_lenient_forms() {
    // Nil headers and nil stream ids are read as empty.
    assert_eq!(
        parse_mp(&hex("96 01 C0 C0 A1 61 90 C0")),
        Ok(Some(HubMessage::Invocation(invocation(None, "a", vec![]))))
    );
    // Extra trailing elements from a future version are skipped.
    assert_eq!(
        parse_mp(&hex("93 06 A1 78 92 01 02")),
        Ok(Some(HubMessage::Ping))
    );
    // Nil allowReconnect means false.
    assert_eq!(parse_mp(&hex("93 07 C0 C0")), Ok(Some(close(None, false))));
}

#[test]
fn deeply_nested_messagepack_is_an_error() {
    let mut body = hex("94 02 80 A1 31");
    body.extend(std::iter::repeat_n(0x91, 10_000));
    body.push(0x90);
    invalid_msgpack(parse_mp(&body));

    let mut body = hex("96 01 80 C0 A1 61 91");
    body.extend(std::iter::repeat_n(0x81, 5_000).flat_map(|m| [m, 0xA1, 0x6B]));
    body.push(0xC0);
    body.push(0x90);
    invalid_msgpack(parse_mp(&body));

    // Just within the limit: the message array is level 1, the item level 2.
    let mut body = hex("94 02 80 A1 31");
    body.extend(std::iter::repeat_n(0x91, 126));
    body.push(0x90);
    assert!(matches!(
        parse_mp(&body),
        Ok(Some(HubMessage::StreamItem(_)))
    ));
    let mut body = hex("94 02 80 A1 31");
    body.extend(std::iter::repeat_n(0x91, 127));
    body.push(0x90);
    invalid_msgpack(parse_mp(&body));
}

#[test]
fn every_prefix_of_every_golden_body_is_an_error_or_incomplete_never_a_panic() {
    // Re-frame every truncation of every MessagePack golden body with a consistent length, so
    // the parser sees a complete but cut-off message.
    for case in msgpack_cases() {
        let body = &case.bytes[1..];
        for cut in 0..body.len() {
            let result = parse_mp(&body[..cut]);
            assert!(result.is_err(), "{} cut at {cut}: {result:?}", case.name);
        }
    }
    for case in json_cases() {
        let text = &case.bytes[..case.bytes.len() - 1];
        for cut in 0..text.len() {
            let mut bytes = text[..cut].to_vec();
            bytes.push(0x1e);
            let result = parse(Protocol::Json, &bytes);
            assert!(result.is_err(), "{} cut at {cut}: {result:?}", case.name);
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // Flip every byte of every golden frame to every value that matters to the decoders.
    let interesting: Vec<u8> = vec![
        0x00, 0x01, 0x05, 0x09, 0x0f, 0x1e, 0x22, 0x5b, 0x7b, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0,
        0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc7, 0xc9, 0xca, 0xcb, 0xcc, 0xcf, 0xd0, 0xd3, 0xd4,
        0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff,
    ];
    for case in all_cases() {
        for i in 0..case.bytes.len() {
            for &b in &interesting {
                let mut bytes = case.bytes.clone();
                bytes[i] = b;
                let mut buf = BytesMut::from(&bytes[..]);
                // Any outcome but a panic is fine; drain until nothing more can be read.
                while let Ok(Some(_)) = case.protocol.parse_message(&mut buf, MAX) {}
            }
        }
    }
}
