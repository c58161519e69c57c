//! The JSON hub protocol: one UTF-8 JSON object per message, each followed by the record
//! separator.
//!
//! The reader accepts properties in any order, ignores unknown ones, and keeps argument, item
//! and result values as slices of the received text. The writer emits exactly the properties
//! the official clients expect, in a fixed order, and never `headers` (the Java client rejects
//! them).

use std::fmt;
use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue as JsonRaw;

use crate::error::{EncodeError, ProtocolError};
use crate::framing::{RECORD_SEPARATOR, text};
use crate::message::{
    Ack, Arguments, CancelInvocation, Close, Completion, CompletionResult, Headers, HubMessage,
    Invocation, Sequence, StreamItem, message_type,
};
use crate::protocol::Protocol;
use crate::raw::{MAX_DEPTH, RawValue};

pub(crate) fn parse_message(
    buf: &mut BytesMut,
    max_message_size: usize,
) -> Result<Option<HubMessage>, ProtocolError> {
    // Looking only as far as one byte past the limit keeps repeated calls on a slowly filling
    // buffer from rescanning an ever longer prefix.
    let window = buf.len().min(max_message_size.saturating_add(1));
    let Some(end) = text::find_record_end(&buf[..window]) else {
        if buf.len() > max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                max: max_message_size,
            });
        }
        return Ok(None);
    };
    let mut frame = buf.split_to(end + 1);
    // Dropping the separator here, not by slicing the frozen bytes, saves a count on the
    // shared buffer for every message.
    frame.truncate(end);
    parse_payload(frame.freeze()).map(Some)
}

/// The properties of any hub message, captured without interpreting them, so that each can be
/// checked against the message type and reported with a precise error.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a JsonRaw>,
    #[serde(rename = "invocationId", default, borrow, deserialize_with = "present")]
    invocation_id: Option<&'a JsonRaw>,
    #[serde(default, borrow, deserialize_with = "present")]
    target: Option<&'a JsonRaw>,
    #[serde(default, borrow, deserialize_with = "present_arguments")]
    arguments: Option<ArgumentsField<'a>>,
    #[serde(rename = "streamIds", default, borrow, deserialize_with = "present")]
    stream_ids: Option<&'a JsonRaw>,
    #[serde(default, borrow, deserialize_with = "present")]
    headers: Option<&'a JsonRaw>,
    #[serde(default, borrow, deserialize_with = "present")]
    item: Option<&'a JsonRaw>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a JsonRaw>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a JsonRaw>,
    #[serde(
        rename = "allowReconnect",
        default,
        borrow,
        deserialize_with = "present"
    )]
    allow_reconnect: Option<&'a JsonRaw>,
    #[serde(rename = "sequenceId", default, borrow, deserialize_with = "present")]
    sequence_id: Option<&'a JsonRaw>,
}

/// `Some` for every present property, `null` included: a plain `Option<&RawValue>` would turn
/// `"result":null` into `None`, losing the difference between a null result and no result.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de JsonRaw>, D::Error> {
    <&'de JsonRaw>::deserialize(d).map(Some)
}

fn present_arguments<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<ArgumentsField<'de>>, D::Error> {
    ArgumentsField::deserialize(d).map(Some)
}

/// The `arguments` property, split into elements in the same pass that validates it.
enum ArgumentsField<'a> {
    Array(Vec<&'a JsonRaw>),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for ArgumentsField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArgumentsVisitor(PhantomData))
    }
}

struct ArgumentsVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ArgumentsVisitor<'a> {
    type Value = ArgumentsField<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(64));
        while let Some(item) = seq.next_element::<&'de JsonRaw>()? {
            items.push(item);
        }
        Ok(ArgumentsField::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(ArgumentsField::Other("an object"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(ArgumentsField::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(ArgumentsField::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(ArgumentsField::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(ArgumentsField::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(ArgumentsField::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(ArgumentsField::Other("null"))
    }
}

/// Headers in their original order; anything that is not an object of strings is ignored.
struct HeadersField(Headers);

impl<'de> Deserialize<'de> for HeadersField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;
        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = HeadersField;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeadersField, A::Error> {
                let mut headers = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    headers.push(entry);
                }
                Ok(HeadersField(headers))
            }
        }
        d.deserialize_map(HeadersVisitor)
    }
}

fn parse_payload(payload: Bytes) -> Result<HubMessage, ProtocolError> {
    let text: &[u8] = &payload;
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            return Err(ProtocolError::InvalidJson(
                "a hub message must be a JSON object".to_owned(),
            ));
        }
        None => {
            return Err(ProtocolError::InvalidJson(
                "the message is empty".to_owned(),
            ));
        }
    }
    check_depth(text)?;
    // One check of the whole message: parsed from bytes, serde_json checked every key and
    // every captured value on its own, and the calls cost more than the bytes.
    let text = std::str::from_utf8(text)
        .map_err(|err| ProtocolError::InvalidJson(format!("the message is not UTF-8: {err}")))?;
    let fields: Fields<'_> =
        serde_json::from_str(text).map_err(|err| ProtocolError::InvalidJson(err.to_string()))?;
    let value = |raw: &JsonRaw| {
        RawValue::from_encoded(Protocol::Json, payload.slice_ref(raw.get().as_bytes()))
    };

    let kind = fields.kind.ok_or(ProtocolError::MissingField {
        message_type: 0,
        field: "type",
    })?;
    // The captured value is valid JSON, so a JSON integer is exactly what `i64`'s own parser
    // reads (no sign `+`, no leading zeros); a float, a string or an out-of-range number fails
    // both ways, and no second parser is built for one small number.
    let kind: i64 = kind
        .get()
        .parse()
        .map_err(|_| ProtocolError::InvalidField {
            field: "type",
            reason: format!("expected an integer, found {}", describe(kind)),
        })?;
    let Some(ty) = u8::try_from(kind).ok().filter(|t| (1..=9).contains(t)) else {
        return Err(ProtocolError::UnknownMessageType(kind));
    };

    let message = match ty {
        message_type::INVOCATION | message_type::STREAM_INVOCATION => {
            let invocation_id =
                optional_string(fields.invocation_id, "invocationId")?.filter(|id| !id.is_empty());
            if ty == message_type::STREAM_INVOCATION && invocation_id.is_none() {
                return Err(ProtocolError::MissingField {
                    message_type: ty,
                    field: "invocationId",
                });
            }
            let target = required_string(fields.target, ty, "target")?;
            let arguments = match fields.arguments {
                Some(ArgumentsField::Array(items)) => {
                    Arguments::Values(items.into_iter().map(value).collect())
                }
                Some(ArgumentsField::Other(found)) => {
                    return Err(ProtocolError::InvalidField {
                        field: "arguments",
                        reason: format!("expected an array, found {found}"),
                    });
                }
                None => {
                    return Err(ProtocolError::MissingField {
                        message_type: ty,
                        field: "arguments",
                    });
                }
            };
            let invocation = Invocation {
                headers: headers(fields.headers),
                invocation_id,
                target,
                arguments,
                stream_ids: stream_ids(fields.stream_ids)?,
            };
            if ty == message_type::INVOCATION {
                HubMessage::Invocation(invocation)
            } else {
                HubMessage::StreamInvocation(invocation)
            }
        }
        message_type::STREAM_ITEM => {
            let invocation_id = required_string(fields.invocation_id, ty, "invocationId")?;
            let item = fields.item.ok_or(ProtocolError::MissingField {
                message_type: ty,
                field: "item",
            })?;
            HubMessage::StreamItem(StreamItem {
                headers: headers(fields.headers),
                invocation_id,
                item: value(item),
            })
        }
        message_type::COMPLETION => {
            let invocation_id = required_string(fields.invocation_id, ty, "invocationId")?;
            let error = optional_string(fields.error, "error")?;
            let result = match (fields.result, error) {
                (Some(_), Some(_)) => {
                    return Err(ProtocolError::InvalidField {
                        field: "result",
                        reason: "a completion message cannot have both 'result' and 'error'"
                            .to_owned(),
                    });
                }
                (Some(result), None) => CompletionResult::Value(value(result)),
                (None, Some(error)) => CompletionResult::Error(error),
                (None, None) => CompletionResult::Void,
            };
            HubMessage::Completion(Completion {
                headers: headers(fields.headers),
                invocation_id,
                result,
            })
        }
        message_type::CANCEL_INVOCATION => HubMessage::CancelInvocation(CancelInvocation {
            headers: headers(fields.headers),
            invocation_id: required_string(fields.invocation_id, ty, "invocationId")?,
        }),
        message_type::PING => HubMessage::Ping,
        message_type::CLOSE => HubMessage::Close(Close {
            error: optional_string(fields.error, "error")?,
            allow_reconnect: optional_bool(fields.allow_reconnect, "allowReconnect")?,
        }),
        message_type::ACK => HubMessage::Ack(Ack {
            sequence_id: sequence_id(fields.sequence_id, ty)?,
        }),
        _ => HubMessage::Sequence(Sequence {
            sequence_id: sequence_id(fields.sequence_id, ty)?,
        }),
    };
    Ok(message)
}

/// Rejects nesting deeper than the limit before any recursive parsing happens. Values are
/// captured by serde_json without recursion (and so without its depth limit); this keeps
/// every accepted value decodable and transcodable later.
fn check_depth(text: &[u8]) -> Result<(), ProtocolError> {
    // Every level needs its own bracket, so a message with few of them (short, or long
    // with flat arguments) cannot be too deep; counting them is much cheaper than the walk.
    if text.len() <= MAX_DEPTH || memchr::memchr2_iter(b'[', b'{', text).count() <= MAX_DEPTH {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ProtocolError::InvalidJson(format!(
                        "the message is nested more than {MAX_DEPTH} levels deep"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn describe(raw: &JsonRaw) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a non-integer number",
    }
}

/// A string property; `null` counts as absent.
fn optional_string(
    raw: Option<&JsonRaw>,
    field: &'static str,
) -> Result<Option<String>, ProtocolError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        // A captured string is valid JSON: without a backslash its text is its value. Method
        // names and ids almost never hold escapes, and a second serde_json pass over them was
        // a few per cent of a flood's core.
        Some(raw) if let Some(text) = unescaped_string(raw.get()) => Ok(Some(text.to_owned())),
        Some(raw) => {
            serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|_| ProtocolError::InvalidField {
                    field,
                    reason: format!("expected a string, found {}", describe(raw)),
                })
        }
    }
}

/// The contents of a JSON string token that holds no escape sequence.
fn unescaped_string(token: &str) -> Option<&str> {
    let text = token.strip_prefix('"')?.strip_suffix('"')?;
    (!text.contains('\\')).then_some(text)
}

fn required_string(
    raw: Option<&JsonRaw>,
    message_type: u8,
    field: &'static str,
) -> Result<String, ProtocolError> {
    optional_string(raw, field)?.ok_or(ProtocolError::MissingField {
        message_type,
        field,
    })
}

fn optional_bool(raw: Option<&JsonRaw>, field: &'static str) -> Result<bool, ProtocolError> {
    match raw.map(JsonRaw::get) {
        None | Some("null") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ProtocolError::InvalidField {
            field,
            reason: format!("expected a boolean, found {}", describe_opt(raw)),
        }),
    }
}

fn describe_opt(raw: Option<&JsonRaw>) -> &'static str {
    raw.map_or("nothing", describe)
}

fn sequence_id(raw: Option<&JsonRaw>, message_type: u8) -> Result<u64, ProtocolError> {
    let raw = raw.ok_or(ProtocolError::MissingField {
        message_type,
        field: "sequenceId",
    })?;
    serde_json::from_str(raw.get()).map_err(|_| ProtocolError::InvalidField {
        field: "sequenceId",
        reason: format!("expected a non-negative integer, found {}", raw.get()),
    })
}

fn stream_ids(raw: Option<&JsonRaw>) -> Result<Vec<String>, ProtocolError> {
    match raw {
        None => Ok(Vec::new()),
        Some(raw) if raw.get() == "null" => Ok(Vec::new()),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| ProtocolError::InvalidField {
            field: "streamIds",
            reason: "expected an array of strings".to_owned(),
        }),
    }
}

fn headers(raw: Option<&JsonRaw>) -> Headers {
    raw.and_then(|raw| serde_json::from_str::<HeadersField>(raw.get()).ok())
        .map(|h| h.0)
        .unwrap_or_default()
}

pub(crate) fn write_message(message: &HubMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
    match message {
        HubMessage::Invocation(invocation) => {
            write_invocation(message_type::INVOCATION, invocation, out)?;
        }
        HubMessage::StreamInvocation(invocation) => {
            write_invocation(message_type::STREAM_INVOCATION, invocation, out)?;
        }
        HubMessage::StreamItem(item) => {
            out.extend_from_slice(b"{\"type\":2,\"invocationId\":");
            write_str(&item.invocation_id, out)?;
            out.extend_from_slice(b",\"item\":");
            write_value(&item.item, out)?;
            out.put_u8(b'}');
        }
        HubMessage::Completion(completion) => {
            out.extend_from_slice(b"{\"type\":3,\"invocationId\":");
            write_str(&completion.invocation_id, out)?;
            match &completion.result {
                CompletionResult::Void => {}
                CompletionResult::Value(value) => {
                    out.extend_from_slice(b",\"result\":");
                    write_value(value, out)?;
                }
                CompletionResult::Error(error) => {
                    out.extend_from_slice(b",\"error\":");
                    write_str(error, out)?;
                }
            }
            out.put_u8(b'}');
        }
        HubMessage::CancelInvocation(cancel) => {
            out.extend_from_slice(b"{\"type\":5,\"invocationId\":");
            write_str(&cancel.invocation_id, out)?;
            out.put_u8(b'}');
        }
        HubMessage::Ping => out.extend_from_slice(b"{\"type\":6}"),
        HubMessage::Close(close) => {
            out.extend_from_slice(b"{\"type\":7");
            if let Some(error) = &close.error {
                out.extend_from_slice(b",\"error\":");
                write_str(error, out)?;
            }
            if close.allow_reconnect {
                out.extend_from_slice(b",\"allowReconnect\":true");
            }
            out.put_u8(b'}');
        }
        HubMessage::Ack(ack) => write_sequence_message(message_type::ACK, ack.sequence_id, out),
        HubMessage::Sequence(sequence) => {
            write_sequence_message(message_type::SEQUENCE, sequence.sequence_id, out);
        }
    }
    out.put_u8(RECORD_SEPARATOR);
    Ok(())
}

fn write_invocation(
    ty: u8,
    invocation: &Invocation,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    write_invocation_head(
        ty,
        invocation.invocation_id.as_deref(),
        &invocation.target,
        out,
    )?;
    match &invocation.arguments {
        Arguments::Values(values) => {
            out.put_u8(b'[');
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                write_value(value, out)?;
            }
            out.put_u8(b']');
        }
        Arguments::Encoded(array) => write_value(array, out)?,
    }
    if !invocation.stream_ids.is_empty() {
        out.extend_from_slice(b",\"streamIds\":[");
        for (i, id) in invocation.stream_ids.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            write_str(id, out)?;
        }
        out.put_u8(b']');
    }
    out.put_u8(b'}');
    Ok(())
}

/// An invocation up to its arguments' value: type, id, target and the `arguments` key.
fn write_invocation_head(
    ty: u8,
    invocation_id: Option<&str>,
    target: &str,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    out.extend_from_slice(b"{\"type\":");
    out.put_u8(b'0' + ty);
    // An empty id means "no id" to every reader, and the JavaScript client rejects it.
    if let Some(id) = invocation_id.filter(|id| !id.is_empty()) {
        out.extend_from_slice(b",\"invocationId\":");
        write_str(id, out)?;
    }
    out.extend_from_slice(b",\"target\":");
    write_str(target, out)?;
    out.extend_from_slice(b",\"arguments\":");
    Ok(())
}

/// A framed Invocation whose arguments are serialized straight into `out`.
pub(crate) fn write_invocation_of<A: serde::Serialize + ?Sized>(
    invocation_id: Option<&str>,
    target: &str,
    arguments: &A,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    write_invocation_head(message_type::INVOCATION, invocation_id, target, out)?;
    serde_json::to_writer(out.writer(), arguments)?;
    out.put_u8(b'}');
    out.put_u8(RECORD_SEPARATOR);
    Ok(())
}

fn write_sequence_message(ty: u8, sequence_id: u64, out: &mut BytesMut) {
    out.extend_from_slice(b"{\"type\":");
    out.put_u8(b'0' + ty);
    out.extend_from_slice(b",\"sequenceId\":");
    let mut digits = [0u8; 20];
    let mut n = sequence_id;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.put_u8(b'}');
}

fn write_str(s: &str, out: &mut BytesMut) -> Result<(), EncodeError> {
    serde_json::to_writer(out.writer(), s)?;
    Ok(())
}

fn write_value(value: &RawValue, out: &mut BytesMut) -> Result<(), EncodeError> {
    if value.protocol() == Protocol::Json {
        out.extend_from_slice(value.as_bytes());
    } else {
        out.extend_from_slice(value.to_protocol(Protocol::Json)?.as_bytes());
    }
    Ok(())
}
