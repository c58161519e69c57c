//! The properties the fuzz targets check, one function per target, each taking the raw fuzz
//! input. Shared by the libFuzzer targets in `fuzz/` (which include this file by path) and by
//! `tests/fuzz_regressions.rs`, which replays the committed seeds and regression inputs through
//! the same functions, so a fixed crash stays fixed under a plain `cargo test`.
//!
//! Every function panics (and so makes the fuzzer report a crash) when a property fails; any
//! input that is merely malformed must come back as an error from the parsers, never a panic.

#![allow(dead_code)]

use bytes::BytesMut;
use signalr_protocol::framing::{RECORD_SEPARATOR, binary, text};
use signalr_protocol::{
    Arguments, Completion, CompletionResult, HandshakeRequest, HandshakeResponse, HubMessage,
    NegotiateError, NegotiateRedirect, NegotiateResponse, Protocol, ProtocolError, RawValue,
    TransferFormat, TransportType,
};

/// The server's default maximum message size (32 KiB, as ASP.NET Core).
pub(crate) const DEFAULT_MAX: usize = 32 * 1024;

/// A limit small enough that the fuzzer's inputs cross it all the time.
pub(crate) const SMALL_MAX: usize = 48;

/// What parsing a buffer until it runs dry produced.
#[derive(Debug, PartialEq)]
pub(crate) struct Drained {
    /// Every parse result, in order: messages and the errors of skipped messages, ending with
    /// the fatal error if there was one.
    pub(crate) steps: Vec<Result<HubMessage, ProtocolError>>,
    /// Bytes left in the buffer (an incomplete message, or what followed a fatal error).
    pub(crate) rest: usize,
}

/// Errors after which the connection is closed: the stream cannot be resynchronized.
fn is_fatal(err: &ProtocolError) -> bool {
    matches!(
        err,
        ProtocolError::MessageTooLarge { .. } | ProtocolError::InvalidFrame(_)
    )
}

/// Parses `buf` until it holds no complete message or a fatal error occurs, checking the
/// buffer contract of `parse_message` on every call. Results are appended to `steps`; returns
/// whether a fatal error ended it.
fn drain_into(
    protocol: Protocol,
    buf: &mut BytesMut,
    max: usize,
    steps: &mut Vec<Result<HubMessage, ProtocolError>>,
) -> bool {
    loop {
        let before = buf.len();
        match protocol.parse_message(buf, max) {
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) must leave the buffer alone");
                return false;
            }
            Ok(Some(message)) => {
                assert!(
                    buf.len() < before,
                    "a parsed message must consume its bytes"
                );
                steps.push(Ok(message));
            }
            Err(err) if is_fatal(&err) => {
                steps.push(Err(err));
                return true;
            }
            Err(err) => {
                // Documented: every other error is reported after the offending message was
                // removed, so a caller can skip it and go on.
                assert!(
                    buf.len() < before,
                    "a non-fatal error must remove the bad message: {err}"
                );
                steps.push(Err(err));
            }
        }
    }
}

/// Parses the whole of `bytes` as one buffer.
pub(crate) fn drain(protocol: Protocol, bytes: &[u8], max: usize) -> Drained {
    let mut buf = BytesMut::from(bytes);
    let mut steps = Vec::new();
    drain_into(protocol, &mut buf, max, &mut steps);
    Drained {
        steps,
        rest: buf.len(),
    }
}

/// Feeds `bytes` in chunks of the given lengths (cycled; 0 counts as 1), parsing after each
/// chunk, as a server does with WebSocket frames or long-polling/SSE POST bodies.
pub(crate) fn drain_chunked(
    protocol: Protocol,
    bytes: &[u8],
    chunk_lengths: &[u8],
    max: usize,
) -> Drained {
    let mut buf = BytesMut::new();
    let mut steps = Vec::new();
    let mut offset = 0;
    let mut lengths = chunk_lengths.iter().cycle();
    while offset < bytes.len() {
        let len = usize::from(lengths.next().copied().unwrap_or(0)).max(1);
        let end = (offset + len).min(bytes.len());
        buf.extend_from_slice(&bytes[offset..end]);
        offset = end;
        if drain_into(protocol, &mut buf, max, &mut steps) {
            // The connection is gone; whatever else arrives is never parsed.
            return Drained {
                steps,
                rest: buf.len() + bytes.len() - offset,
            };
        }
    }
    Drained {
        steps,
        rest: buf.len(),
    }
}

/// Target `json_messages`.
pub(crate) fn json_messages(data: &[u8]) {
    hub_messages(Protocol::Json, data);
}

/// Target `msgpack_messages`.
pub(crate) fn msgpack_messages(data: &[u8]) {
    hub_messages(Protocol::MessagePack, data);
}

fn hub_messages(protocol: Protocol, data: &[u8]) {
    let large = drain(protocol, data, DEFAULT_MAX);
    for message in large.steps.iter().flatten() {
        check_message(protocol, message);
    }
    // A smaller limit changes nothing but where MessageTooLarge stops the stream.
    let small = drain(protocol, data, SMALL_MAX);
    for (i, step) in small.steps.iter().enumerate() {
        if let Err(ProtocolError::MessageTooLarge { max }) = step {
            assert_eq!(*max, SMALL_MAX);
            return;
        }
        assert_eq!(
            Some(step),
            large.steps.get(i),
            "step {i} with a small limit"
        );
    }
    assert_eq!(small, large, "no message reached the small limit");
}

/// Properties of one message parsed in `protocol`.
pub(crate) fn check_message(protocol: Protocol, message: &HubMessage) {
    let other = match protocol {
        Protocol::Json => Protocol::MessagePack,
        Protocol::MessagePack => Protocol::Json,
    };

    // Writing in the protocol it came in cannot fail (values are copied verbatim), and the
    // frame parses back to the same message.
    let frame = protocol
        .encode_message(message)
        .unwrap_or_else(|err| panic!("re-encoding {message:?} failed: {err}"));
    let mut expected = message.clone();
    if protocol == Protocol::Json {
        clear_headers(&mut expected);
    }
    let reparsed = parse_exactly_one(protocol, &frame);
    assert_eq!(reparsed, expected, "round trip through {protocol}");
    assert_eq!(
        protocol.encode_message(&reparsed).as_ref(),
        Ok(&frame),
        "writing is deterministic"
    );

    for value in values(message) {
        check_value(value);
    }

    // Written in the other protocol (values transcoded), the message must still be valid.
    if let Ok(frame) = other.encode_message(message) {
        let transcoded = parse_exactly_one(other, &frame);
        assert_eq!(transcoded.message_type(), message.message_type());
        let mut expected = message.clone();
        let mut got = transcoded.clone();
        clear_headers(&mut expected);
        clear_headers(&mut got);
        strip_values(&mut expected);
        strip_values(&mut got);
        assert_eq!(
            got, expected,
            "everything but values survives {protocol} -> {other}"
        );
        for (original, copy) in values(message).into_iter().zip(values(&transcoded)) {
            assert_same_value(original, copy);
        }
    }
}

fn parse_exactly_one(protocol: Protocol, frame: &[u8]) -> HubMessage {
    let mut buf = BytesMut::from(frame);
    let message = match protocol.parse_message(&mut buf, usize::MAX) {
        Ok(Some(message)) => message,
        other => panic!(
            "a written {protocol} frame does not parse: {other:?}\n{:?}",
            String::from_utf8_lossy(frame)
        ),
    };
    assert!(buf.is_empty(), "a written frame holds exactly one message");
    message
}

fn clear_headers(message: &mut HubMessage) {
    match message {
        HubMessage::Invocation(m) | HubMessage::StreamInvocation(m) => m.headers.clear(),
        HubMessage::StreamItem(m) => m.headers.clear(),
        HubMessage::Completion(m) => m.headers.clear(),
        HubMessage::CancelInvocation(m) => m.headers.clear(),
        HubMessage::Ping | HubMessage::Close(_) | HubMessage::Ack(_) | HubMessage::Sequence(_) => {}
    }
}

/// Replaces every value by JSON null, to compare the rest of two messages.
fn strip_values(message: &mut HubMessage) {
    let null = RawValue::null(Protocol::Json);
    match message {
        HubMessage::Invocation(m) | HubMessage::StreamInvocation(m) => {
            if let Arguments::Values(values) = &mut m.arguments {
                values.iter_mut().for_each(|v| *v = null.clone());
            }
        }
        HubMessage::StreamItem(m) => m.item = null,
        HubMessage::Completion(m) => {
            if let CompletionResult::Value(v) = &mut m.result {
                *v = null;
            }
        }
        _ => {}
    }
}

fn values(message: &HubMessage) -> Vec<&RawValue> {
    match message {
        HubMessage::Invocation(m) | HubMessage::StreamInvocation(m) => match &m.arguments {
            Arguments::Values(values) => values.iter().collect(),
            Arguments::Encoded(array) => vec![array],
        },
        HubMessage::StreamItem(m) => vec![&m.item],
        HubMessage::Completion(Completion {
            result: CompletionResult::Value(v),
            ..
        }) => vec![v],
        _ => Vec::new(),
    }
}

/// What the hub does with an argument: decode it generically, split it if it is an array,
/// and transcode it for connections of the other protocol.
fn check_value(value: &RawValue) {
    let _ = value.decode::<serde_json::Value>();
    let _ = value.is_null();
    if let Ok(items) = value.array_elements() {
        for item in &items {
            assert_eq!(item.protocol(), value.protocol());
            let _ = item.decode::<serde_json::Value>();
        }
    }
    let other = match value.protocol() {
        Protocol::Json => Protocol::MessagePack,
        Protocol::MessagePack => Protocol::Json,
    };
    if let Ok(transcoded) = value.to_protocol(other) {
        assert_eq!(transcoded.protocol(), other);
        let back = transcoded
            .to_protocol(value.protocol())
            .unwrap_or_else(|err| panic!("{value:?} -> {transcoded:?} does not come back: {err}"));
        if value.protocol() == Protocol::Json {
            assert_same_value(value, &back);
        } else {
            // Binary and timestamps turn into strings; the JSON text must be valid JSON.
            serde_json::from_slice::<serde_json::Value>(transcoded.as_bytes()).unwrap_or_else(
                |err| panic!("{value:?} became invalid JSON {transcoded:?}: {err}"),
            );
        }
    }
}

/// Two encodings of what must be the same value: equal once both are JSON trees.
fn assert_same_value(a: &RawValue, b: &RawValue) {
    let as_json = |v: &RawValue| {
        v.to_protocol(Protocol::Json)
            .ok()
            .and_then(|j| serde_json::from_slice::<serde_json::Value>(j.as_bytes()).ok())
    };
    if let Some(left) = as_json(a) {
        assert_eq!(Some(left), as_json(b), "{a:?} and {b:?} differ");
    }
}

/// Target `handshake`: the request and the response parsers, on the same bytes.
pub(crate) fn handshake(data: &[u8]) {
    for max in [DEFAULT_MAX, SMALL_MAX] {
        let mut buf = BytesMut::from(data);
        let result = HandshakeRequest::parse(&mut buf, max);
        check_record_consumption(data, &buf, &result, max);
        if let Ok(Some(request)) = &result {
            let mut out = BytesMut::new();
            request.write(&mut out);
            let mut again = out.clone();
            assert_eq!(
                HandshakeRequest::parse(&mut again, usize::MAX),
                Ok(Some(request.clone())),
                "{:?}",
                String::from_utf8_lossy(&out)
            );
            assert!(again.is_empty());
            let _ = Protocol::from_name(&request.protocol)
                .map(|p| p.is_version_supported(request.version));
        }
        check_prefixes_are_incomplete(data, max, |buf| {
            HandshakeRequest::parse(buf, max).map(|r| r.is_some())
        });
    }

    let mut buf = BytesMut::from(data);
    let result = HandshakeResponse::parse(&mut buf);
    check_record_consumption(data, &buf, &result, usize::MAX);
    if let Ok(Some(response)) = &result {
        let mut out = BytesMut::new();
        response.write(&mut out);
        let mut again = out.clone();
        assert_eq!(
            HandshakeResponse::parse(&mut again),
            Ok(Some(response.clone()))
        );
        assert!(again.is_empty());
    }
    check_prefixes_are_incomplete(data, usize::MAX, |buf| {
        HandshakeResponse::parse(buf).map(|r| r.is_some())
    });
}

/// A handshake parser consumes exactly the first record (separator included) when it finds
/// one, nothing when it does not.
fn check_record_consumption<T: std::fmt::Debug>(
    data: &[u8],
    buf: &BytesMut,
    result: &Result<Option<T>, ProtocolError>,
    max: usize,
) {
    let record_end = text::find_record_end(data);
    match result {
        Ok(None) => {
            assert_eq!(buf.len(), data.len(), "incomplete input is left alone");
            assert!(record_end.is_none() || record_end > Some(max));
            assert!(data.len() <= max);
        }
        Err(ProtocolError::MessageTooLarge { .. }) => {
            assert!(data.len() > max);
            assert!(record_end.is_none_or(|end| end > max));
        }
        Ok(Some(_)) | Err(_) => {
            let end = record_end.expect("a parsed record has a separator");
            assert!(end <= max);
            assert_eq!(&data[end + 1..], &buf[..], "exactly one record is consumed");
        }
    }
}

/// Every prefix ending before the first separator is incomplete, not an error.
fn check_prefixes_are_incomplete(
    data: &[u8],
    max: usize,
    parse: impl Fn(&mut BytesMut) -> Result<bool, ProtocolError>,
) {
    let end = text::find_record_end(data).unwrap_or(data.len());
    for cut in [end / 2, end.saturating_sub(1), end] {
        if cut > max {
            continue;
        }
        let mut buf = BytesMut::from(&data[..cut]);
        assert_eq!(parse(&mut buf), Ok(false), "prefix of {cut} bytes");
        assert_eq!(buf.len(), cut);
    }
}

/// Target `framing`: the two framings on their own, then whole-buffer against chunked parsing
/// in both protocols.
///
/// Input layout: byte 0 picks the message size limit, bytes 1 to 3 are the chunk lengths
/// (cycled), the rest is the byte stream.
pub(crate) fn framing(data: &[u8]) {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let (chunk_lengths, stream) = rest.split_at(rest.len().min(3));

    // Varint length prefix: whatever it reads, the shortest encoding of that length reads back
    // the same and is no longer than what was read.
    match binary::read_length_prefix(stream) {
        Ok(Some((len, prefix_len))) => {
            assert!((1..=binary::MAX_PREFIX_LEN).contains(&prefix_len));
            assert!(len <= binary::MAX_PAYLOAD_LEN);
            assert!(stream[..prefix_len - 1].iter().all(|b| b & 0x80 != 0));
            assert_eq!(stream[prefix_len - 1] & 0x80, 0);
            let mut out = BytesMut::new();
            binary::write_length_prefix(len, &mut out);
            assert!(out.len() <= prefix_len);
            assert_eq!(binary::read_length_prefix(&out), Ok(Some((len, out.len()))));
            if stream[prefix_len - 1] != 0 || prefix_len == 1 {
                assert_eq!(
                    &out[..],
                    &stream[..prefix_len],
                    "shortest form is canonical"
                );
            }
        }
        Ok(None) => {
            assert!(stream.len() < binary::MAX_PREFIX_LEN);
            assert!(stream.iter().all(|b| b & 0x80 != 0));
        }
        Err(_) => assert!(stream.len() >= binary::MAX_PREFIX_LEN),
    }
    if let Some(bytes) = stream.get(..4) {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
            & binary::MAX_PAYLOAD_LEN;
        let mut out = BytesMut::new();
        binary::write_length_prefix(len, &mut out);
        out.extend_from_slice(b"tail");
        assert_eq!(
            binary::read_length_prefix(&out),
            Ok(Some((len, out.len() - 4)))
        );
    }

    // Text records.
    let end = text::find_record_end(stream);
    assert_eq!(end, stream.iter().position(|&b| b == RECORD_SEPARATOR));
    if let Some(end) = end {
        let mut out = BytesMut::new();
        text::write_record(&stream[..end], &mut out);
        assert_eq!(text::find_record_end(&out), Some(end));
        assert_eq!(&out[..=end], &stream[..=end]);
    }

    // Chunked input: the messages must not depend on where the stream was cut.
    let max = match limit % 4 {
        0 => DEFAULT_MAX,
        1 => SMALL_MAX,
        2 => 7,
        _ => usize::MAX,
    };
    for protocol in Protocol::ALL {
        let whole = drain(protocol, stream, max);
        let chunked = drain_chunked(protocol, stream, chunk_lengths, max);
        assert_eq!(
            chunked, whole,
            "{protocol}, chunks {chunk_lengths:?}, limit {max}"
        );
    }
}

/// Target `negotiate`: the negotiate bodies as a client or proxy deserializes them, and the
/// query string as the server reads `negotiateVersion`, `id` and `access_token` from it.
pub(crate) fn negotiate(data: &[u8]) {
    json_round_trip::<NegotiateResponse>(data);
    json_round_trip::<NegotiateRedirect>(data);
    json_round_trip::<NegotiateError>(data);
    json_round_trip::<TransportType>(data);
    json_round_trip::<TransferFormat>(data);
    if let Ok(response) = serde_json::from_slice::<NegotiateResponse>(data) {
        for transport in &response.available_transports {
            let _ = transport.transport.transfer_formats();
            let _ = transport.transport.name();
        }
    }

    // The query string, as the server's `query_param` reads it: form-urlencoded pairs, names
    // matched ASCII case-insensitively, first match wins.
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let again: Vec<(String, String)> = form_urlencoded::parse(encoded.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(again, pairs, "query pairs survive re-encoding");
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    // Version selection as the negotiate handler does it.
    if let Some(raw) = param("negotiateVersion")
        && let Ok(v) = raw.parse::<i64>()
        && v >= 0
    {
        assert!(v.min(1) <= 1);
    }
    let _ = param("id");
    let _ = param("access_token");

    // The same query behind a request path, through the URI parser the server uses.
    let mut uri = b"/hub/negotiate?".to_vec();
    uri.extend_from_slice(data);
    if let Ok(uri) = http::Uri::try_from(uri) {
        let query = uri.query().unwrap_or("");
        assert!(data.starts_with(query.as_bytes()), "{query:?}");
        let _ = form_urlencoded::parse(query.as_bytes()).count();
    }
}

fn json_round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&value).expect("serializing a parsed value");
        let back: T = serde_json::from_slice(&text).expect("parsing what was written");
        assert_eq!(back, value);
    }
}
